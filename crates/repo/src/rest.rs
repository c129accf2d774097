//! A repository on a server speaking restic's REST protocol (restic's rest-server, rustic's
//! rustic_server, Stash's `rest` backend).
//!
//! OpenDAL has no service for this protocol, so coffer speaks it itself over reqwest. The
//! protocol is small: `POST /?create=true` makes a repository, `GET /<type>/` lists (version 2
//! answers names with sizes), and `HEAD`/`GET`/`POST`/`DELETE /<type>/<name>` handle one
//! file; `data` files are addressed flat (`/data/<id>`), the server fans them out.

use std::{io::Read, thread, time::Duration};

use bytes::Bytes;
use reqwest::{blocking::Client, Method, StatusCode};

use crate::store::{ObjectStore, StoreError, StoreResult};

/// Where a REST repository lives and how to log in to it.
#[derive(Clone)]
pub struct RestConfig {
    /// The repository's URL, without credentials.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A private CA's certificate(s), PEM (Stash's `CA_CERT_DATA`).
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub struct RestStore {
    client: Client,
    base: String,
    username: Option<String>,
    password: Option<String>,
}

const V2: &str = "application/vnd.x.restic.rest.v2";
const ATTEMPTS: u32 = 4;

/// restic's REST path for a repository key: data files are flat.
fn rest_path(key: &str) -> String {
    match key.strip_prefix("data/") {
        Some(rest) => format!("data/{}", rest.rsplit('/').next().unwrap_or(rest)),
        None => key.to_string(),
    }
}

/// The repository key of a file the server listed in `dir`.
fn key_of(dir: &str, name: &str) -> String {
    if dir == "data" && name.len() >= 2 {
        format!("data/{}/{name}", &name[..2])
    } else {
        format!("{dir}/{name}")
    }
}

/// A body read from the parts without copying them into one buffer.
struct Parts {
    parts: Vec<Bytes>,
    at: usize,
}

impl Read for Parts {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(p) = self.parts.get_mut(self.at) {
            if p.is_empty() {
                self.at += 1;
                continue;
            }
            let n = buf.len().min(p.len());
            buf[..n].copy_from_slice(&p[..n]);
            *p = p.slice(n..);
            return Ok(n);
        }
        Ok(0)
    }
}

enum Failure {
    Status(StatusCode, String),
    Transport(reqwest::Error),
}

impl RestStore {
    pub fn new(cfg: &RestConfig) -> StoreResult<Self> {
        let base = format!("{}/", cfg.url.trim_end_matches('/'));
        let mut b = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(300));
        if let Some(pem) = &cfg.ca_cert_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| StoreError::Remote {
                    location: format!("rest:{}", cfg.url),
                    message: format!(
                        "CA_CERT_DATA in the storage Secret is not a PEM certificate: {e}"
                    ),
                })?;
            if certs.is_empty() {
                return Err(StoreError::Remote {
                    location: format!("rest:{}", cfg.url),
                    message: "CA_CERT_DATA in the storage Secret holds no PEM certificate".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| StoreError::Remote {
            location: format!("rest:{}", cfg.url),
            message: if cfg.ca_cert_pem.is_some() {
                format!(
                    "cannot set up the HTTP client with CA_CERT_DATA from the storage Secret \
                     (is it a PEM certificate?): {e}"
                )
            } else {
                format!("cannot set up the HTTP client: {e}")
            },
        })?;
        Ok(Self {
            client,
            base,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
        })
    }

    /// One request, retried on transport failures and server errors (the file names are
    /// content hashes, so repeating an upload is harmless).
    fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[Bytes]>,
    ) -> Result<reqwest::blocking::Response, Failure> {
        let url = format!("{}{}", self.base, path);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(100 << (2 * attempt)));
            }
            let mut rq = self.client.request(method.clone(), &url);
            if let Some(u) = &self.username {
                rq = rq.basic_auth(u, self.password.as_ref());
            }
            for (k, v) in headers {
                rq = rq.header(*k, v);
            }
            if let Some(parts) = body {
                let len = parts.iter().map(|p| p.len() as u64).sum();
                let reader = Parts {
                    parts: parts.to_vec(),
                    at: 0,
                };
                rq = rq
                    .header("Content-Type", "application/octet-stream")
                    .body(reqwest::blocking::Body::sized(reader, len));
            }
            match rq.send() {
                Ok(r) if r.status().is_server_error() => {
                    let st = r.status();
                    last = Some(Failure::Status(st, r.text().unwrap_or_default()));
                    // Some servers (rustic_server) answer a read of a missing file, or a
                    // write of an existing one, with a server error: ask what is there
                    // rather than retrying what cannot succeed.
                    if body.is_some() || method == Method::GET {
                        match self.probe(path) {
                            Some(false) if method == Method::GET => {
                                return Err(Failure::Status(StatusCode::NOT_FOUND, String::new()))
                            }
                            Some(true) if body.is_some() => {
                                return Err(Failure::Status(StatusCode::CONFLICT, String::new()))
                            }
                            _ => {}
                        }
                    }
                }
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let st = r.status();
                    return Err(Failure::Status(st, r.text().unwrap_or_default()));
                }
                Err(e) => last = Some(Failure::Transport(e)),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Whether the file at `path` exists, if the server can tell.
    fn probe(&self, path: &str) -> Option<bool> {
        let mut rq = self
            .client
            .request(Method::HEAD, format!("{}{}", self.base, path));
        if let Some(u) = &self.username {
            rq = rq.basic_auth(u, self.password.as_ref());
        }
        match rq.send().ok()?.status() {
            StatusCode::NOT_FOUND => Some(false),
            st if st.is_success() => Some(true),
            _ => None,
        }
    }

    fn err(&self, what: &str, key: &str, f: Failure) -> StoreError {
        let location = self.location();
        let message = match f {
            Failure::Status(StatusCode::NOT_FOUND, _) => {
                return StoreError::NotFound {
                    location,
                    key: key.to_string(),
                }
            }
            Failure::Status(st, body)
                if st == StatusCode::UNAUTHORIZED
                    || (st == StatusCode::FORBIDDEN
                        && body.to_ascii_lowercase().contains("authenticat")) =>
            {
                format!(
                    "cannot {what} `{key}`: the REST server refused the credentials: check \
                     REST_SERVER_USERNAME and REST_SERVER_PASSWORD in the storage Secret"
                )
            }
            Failure::Status(StatusCode::CONFLICT, _) => format!(
                "cannot {what} `{key}`: the REST server already has a file by that name and \
                 will not replace it (left by an interrupted upload? `coffer check` tells)"
            ),
            Failure::Status(StatusCode::FORBIDDEN, _) => format!(
                "cannot {what} `{key}`: the REST server forbids it (an append-only server, or \
                 a user without access to this path: check spec.backend.rest.url and the \
                 server's configuration)"
            ),
            Failure::Status(st, body) => {
                let body = body.trim();
                let body: String = body.chars().take(200).collect();
                format!("cannot {what} `{key}`: the REST server answered {st}: {body}")
            }
            Failure::Transport(e) => {
                let full = format!("{e:?}").to_ascii_lowercase();
                if full.contains("certificate") || full.contains("tls") || full.contains("ssl") {
                    format!(
                        "cannot {what} `{key}`: TLS with the REST server failed ({e}): if it \
                         uses a private CA, put that CA's certificate under CA_CERT_DATA in \
                         the storage Secret"
                    )
                } else if e.is_timeout() {
                    format!(
                        "cannot {what} `{key}`: the REST server at {} did not answer in time",
                        self.base
                    )
                } else {
                    format!(
                        "cannot {what} `{key}`: cannot reach the REST server at {} (is it \
                         running and the address right?)",
                        self.base
                    )
                }
            }
        };
        StoreError::Remote { location, message }
    }

    fn head(&self, key: &str) -> StoreResult<bool> {
        match self.send(Method::HEAD, &rest_path(key), &[], None) {
            Ok(_) => Ok(true),
            Err(Failure::Status(StatusCode::NOT_FOUND, _)) => Ok(false),
            Err(f) => Err(self.err("check", key, f)),
        }
    }

    fn body(&self, key: &str, r: reqwest::blocking::Response) -> StoreResult<Bytes> {
        r.bytes()
            .map_err(|e| self.err("read", key, Failure::Transport(e)))
    }
}

impl ObjectStore for RestStore {
    fn location(&self) -> String {
        format!("rest:{}", self.base.trim_end_matches('/'))
    }

    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
        let dir = dir.trim_matches('/');
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
            size: u64,
        }
        let r = match self.send(
            Method::GET,
            &format!("{dir}/"),
            &[("Accept", V2.into())],
            None,
        ) {
            Ok(r) => r,
            Err(Failure::Status(StatusCode::NOT_FOUND, _)) => return Ok(Vec::new()),
            Err(f) => return Err(self.err("list", dir, f)),
        };
        let body = self.body(dir, r)?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&body).map_err(|e| StoreError::Remote {
                location: self.location(),
                message: format!(
                    "cannot list `{dir}`: the server's answer is not a restic REST v2 listing \
                     ({e}); is spec.backend.rest.url a restic REST server?"
                ),
            })?;
        Ok(entries
            .into_iter()
            .map(|e| (key_of(dir, &e.name), e.size))
            .collect())
    }

    fn read(&self, key: &str) -> StoreResult<Bytes> {
        let r = self
            .send(Method::GET, &rest_path(key), &[], None)
            .map_err(|f| self.err("read", key, f))?;
        self.body(key, r)
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let r = self
            .send(Method::GET, &rest_path(key), &[("Range", range)], None)
            .map_err(|f| self.err("read", key, f))?;
        let partial = r.status() == StatusCode::PARTIAL_CONTENT;
        let b = self.body(key, r)?;
        if partial {
            return Ok(b);
        }
        // A server that ignores Range sends the whole file.
        let end = (offset + len) as usize;
        if b.len() < end {
            return Err(StoreError::Remote {
                location: self.location(),
                message: format!(
                    "cannot read `{key}`: the file is {} bytes, shorter than expected",
                    b.len()
                ),
            });
        }
        Ok(b.slice(offset as usize..end))
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        self.send(Method::POST, &rest_path(key), &[], Some(parts))
            .map(|_| ())
            .map_err(|f| self.err("write", key, f))
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        // The protocol has no conditional write. restic's rest-server refuses to replace a
        // file (403); elsewhere the read-back in `InitClaim` catches a lost race.
        if self.head(key)? {
            return Ok(false);
        }
        match self.send(Method::POST, &rest_path(key), &[], Some(parts)) {
            Ok(_) => Ok(true),
            Err(Failure::Status(StatusCode::CONFLICT, _)) => Ok(false),
            Err(Failure::Status(StatusCode::FORBIDDEN, _)) if self.head(key)? => Ok(false),
            Err(f) => Err(self.err("write", key, f)),
        }
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        match self.send(Method::DELETE, &rest_path(key), &[], None) {
            Ok(_) | Err(Failure::Status(StatusCode::NOT_FOUND, _)) => Ok(()),
            Err(f) => Err(self.err("delete", key, f)),
        }
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        self.head(key)
    }

    fn create(&self) -> StoreResult<()> {
        // `POST /?create=true` makes the repository's directories; a server that already has
        // them answers success as well.
        self.send(Method::POST, "?create=true", &[], Some(&[]))
            .map(|_| ())
            .map_err(|f| self.err("create", "", f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_flat_on_the_wire_and_fanned_out_in_keys() {
        let id = "ab".to_string() + &"0".repeat(62);
        assert_eq!(rest_path(&format!("data/ab/{id}")), format!("data/{id}"));
        assert_eq!(rest_path("keys/k1"), "keys/k1");
        assert_eq!(rest_path("config"), "config");
        assert_eq!(key_of("data", &id), format!("data/ab/{id}"));
        assert_eq!(key_of("locks", "l1"), "locks/l1");
    }

    #[test]
    fn parts_are_read_in_order_without_joining_them() {
        let mut r = Parts {
            parts: vec![
                Bytes::from_static(b"ab"),
                Bytes::new(),
                Bytes::from_static(b"cde"),
            ],
            at: 0,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn a_bad_ca_is_refused_naming_the_key() {
        let e = RestStore::new(&RestConfig {
            url: "https://h/r".into(),
            username: None,
            password: None,
            ca_cert_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".to_vec(),
            ),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("CA_CERT_DATA"), "{e}");
    }
}
