//! From a Repository's remote backend and its storage Secret to an object store, with the
//! Secret keys Stash uses for each backend.

use std::sync::Arc;

use coffer_api::{repository::Backend, secret::Secret};
use coffer_repo::{
    AzureConfig, B2Config, CloudStore, GcsConfig, ObjectStore, RestConfig, RestStore, S3Config,
    StoreError, SwiftConfig,
};

/// The storage Secret and how to name it in messages.
pub struct Keys<'a> {
    pub secret: &'a Secret,
}

impl Keys<'_> {
    fn get(&self, k: &str) -> Option<String> {
        self.secret.get(k).filter(|v| !v.is_empty())
    }

    fn required(&self, k: &str, backend: &str) -> Result<String, BuildError> {
        self.get(k).ok_or_else(|| {
            BuildError::Secret(format!(
                "has no {k}, which a{} {backend} repository needs",
                if backend.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "n"
                } else {
                    ""
                }
            ))
        })
    }
}

#[derive(Debug)]
pub enum BuildError {
    /// The storage Secret lacks a key or holds a bad value.
    Secret(String),
    /// The Repository's spec asks for something coffer cannot do.
    Spec(String),
    /// The store refused its configuration.
    Store(StoreError),
}

/// A remote store and Stash's task variables for it.
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub provider: &'static str,
    pub bucket: String,
    pub prefix: String,
}

/// The store for a Repository's remote backend; `None` when it has none (local, or unset).
pub fn remote(backend: &Backend, keys: &Keys) -> Result<Option<Remote>, BuildError> {
    let built = |store: Result<CloudStore, StoreError>,
                 provider: &'static str,
                 bucket: &str,
                 prefix: &Option<String>| {
        Ok(Some(Remote {
            store: Arc::new(store.map_err(BuildError::Store)?),
            provider,
            bucket: bucket.to_string(),
            prefix: prefix.clone().unwrap_or_default(),
        }))
    };
    if let Some(s3) = &backend.s3 {
        let endpoint = if s3.endpoint.contains("://") {
            s3.endpoint.clone()
        } else {
            format!("https://{}", s3.endpoint)
        };
        let cfg = S3Config {
            endpoint,
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone().unwrap_or_default(),
            region: s3.region.clone().unwrap_or_default(),
            access_key_id: keys.required("AWS_ACCESS_KEY_ID", "S3")?,
            secret_access_key: keys.required("AWS_SECRET_ACCESS_KEY", "S3")?,
            session_token: keys.get("AWS_SESSION_TOKEN"),
        };
        return built(CloudStore::s3(&cfg), "s3", &s3.bucket, &s3.prefix);
    }
    if let Some(az) = &backend.azure {
        let cfg = azure_config(az, keys)?;
        return built(CloudStore::azure(&cfg), "azure", &az.container, &az.prefix);
    }
    if let Some(g) = &backend.gcs {
        let cfg = gcs_config(g, keys)?;
        return built(CloudStore::gcs(&cfg), "gcs", &g.bucket, &g.prefix);
    }
    if let Some(b2) = &backend.b2 {
        let cfg = b2_config(b2, keys)?;
        return built(CloudStore::b2(&cfg), "b2", &b2.bucket, &b2.prefix);
    }
    if let Some(sw) = &backend.swift {
        let cfg = swift_config(sw, keys)?;
        return built(CloudStore::swift(&cfg), "swift", &sw.container, &sw.prefix);
    }
    if let Some(r) = &backend.rest {
        let cfg = rest_config(r, keys)?;
        let store = RestStore::new(&cfg).map_err(BuildError::Store)?;
        let (host, path) = split_url(&r.url);
        return Ok(Some(Remote {
            store: Arc::new(store),
            provider: "rest",
            bucket: host,
            prefix: path,
        }));
    }
    Ok(None)
}

pub fn azure_config(
    az: &coffer_api::repository::AzureSpec,
    keys: &Keys,
) -> Result<AzureConfig, BuildError> {
    let account_key = keys.get("AZURE_ACCOUNT_KEY");
    let sas_token = keys.get("AZURE_ACCOUNT_SAS");
    if account_key.is_none() && sas_token.is_none() {
        return Err(BuildError::Secret(
            "has neither AZURE_ACCOUNT_KEY nor AZURE_ACCOUNT_SAS, one of which an azure \
             repository needs"
                .into(),
        ));
    }
    Ok(AzureConfig {
        endpoint: az.endpoint.clone().filter(|e| !e.is_empty()),
        container: az.container.clone(),
        prefix: az.prefix.clone().unwrap_or_default(),
        account_name: keys.required("AZURE_ACCOUNT_NAME", "azure")?,
        account_key,
        sas_token,
    })
}

/// A GCS bucket. Without `GOOGLE_SERVICE_ACCOUNT_JSON_KEY` requests go unsigned, which only
/// makes sense against an emulator, so the key may be left out only with an endpoint.
pub fn gcs_config(
    g: &coffer_api::repository::GcsSpec,
    keys: &Keys,
) -> Result<GcsConfig, BuildError> {
    let endpoint = g.endpoint.clone().filter(|e| !e.is_empty());
    let json = keys.get("GOOGLE_SERVICE_ACCOUNT_JSON_KEY");
    if json.is_none() && endpoint.is_none() {
        return Err(BuildError::Secret(
            "has no GOOGLE_SERVICE_ACCOUNT_JSON_KEY, which a gcs repository needs (the \
             service account's key file, as JSON)"
                .into(),
        ));
    }
    Ok(GcsConfig {
        endpoint,
        bucket: g.bucket.clone(),
        prefix: g.prefix.clone().unwrap_or_default(),
        service_account_json: json,
    })
}

/// A B2 bucket. OpenDAL addresses it by id as well as by name; Stash's Secret has only the
/// name, so the id is `B2_BUCKET_ID` when the Secret has it (coffer's key), and otherwise
/// looked up with the application key.
pub fn b2_config(b2: &coffer_api::repository::B2Spec, keys: &Keys) -> Result<B2Config, BuildError> {
    b2_config_at(coffer_repo::cloud::B2_API, b2, keys)
}

fn b2_config_at(
    api: &str,
    b2: &coffer_api::repository::B2Spec,
    keys: &Keys,
) -> Result<B2Config, BuildError> {
    let account_id = keys.required("B2_ACCOUNT_ID", "b2")?;
    let account_key = keys.required("B2_ACCOUNT_KEY", "b2")?;
    let bucket_id = match keys.get("B2_BUCKET_ID") {
        Some(id) => id,
        None => coffer_repo::cloud::b2_bucket_id(api, &account_id, &account_key, &b2.bucket)
            .map_err(BuildError::Store)?,
    };
    Ok(B2Config {
        bucket: b2.bucket.clone(),
        bucket_id,
        prefix: b2.prefix.clone().unwrap_or_default(),
        account_id,
        account_key,
    })
}

/// Keystone keys, with which OpenDAL's Swift service cannot log in and coffer does not.
const SWIFT_KEYSTONE_KEYS: &[&str] = &[
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_APPLICATION_CREDENTIAL_NAME",
];

/// A Swift container, reached with a storage URL and token: given (`OS_STORAGE_URL`,
/// `OS_AUTH_TOKEN`), or from a v1 login (`ST_AUTH`, `ST_USER`, `ST_KEY`). Keystone logins are
/// refused naming the keys.
pub fn swift_config(
    sw: &coffer_api::repository::SwiftSpec,
    keys: &Keys,
) -> Result<SwiftConfig, BuildError> {
    let (storage_url, token) = match (keys.get("OS_STORAGE_URL"), keys.get("OS_AUTH_TOKEN")) {
        (Some(url), Some(token)) => (url, token),
        _ => match (keys.get("ST_AUTH"), keys.get("ST_USER"), keys.get("ST_KEY")) {
            (Some(auth), Some(user), Some(key)) => {
                coffer_repo::cloud::swift_v1_login(&auth, &user, &key).map_err(BuildError::Store)?
            }
            _ => {
                let login: Vec<&str> = SWIFT_KEYSTONE_KEYS
                    .iter()
                    .copied()
                    .filter(|k| keys.get(k).is_some())
                    .collect();
                let why = if login.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it has {}: coffer does not log in to Swift with Keystone)",
                        login.join(", ")
                    )
                };
                return Err(BuildError::Secret(format!(
                    "has neither OS_STORAGE_URL and OS_AUTH_TOKEN nor ST_AUTH, ST_USER and \
                     ST_KEY, one of which a swift repository needs{why}: put a storage URL and \
                     a token (e.g. from `swift auth`) under OS_STORAGE_URL and OS_AUTH_TOKEN"
                )));
            }
        },
    };
    Ok(SwiftConfig {
        storage_url,
        token,
        container: sw.container.clone(),
        prefix: sw.prefix.clone().unwrap_or_default(),
    })
}

pub fn rest_config(
    r: &coffer_api::repository::RestSpec,
    keys: &Keys,
) -> Result<RestConfig, BuildError> {
    let url = r.url.trim().to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BuildError::Spec(format!(
            "spec.backend.rest.url `{url}` must be an http:// or https:// URL"
        )));
    }
    if url.split("://").nth(1).is_some_and(|rest| {
        rest.split('/')
            .next()
            .is_some_and(|authority| authority.contains('@'))
    }) {
        return Err(BuildError::Spec(
            "spec.backend.rest.url must not hold credentials: put them in the storage Secret \
             under REST_SERVER_USERNAME and REST_SERVER_PASSWORD"
                .into(),
        ));
    }
    let username = keys.get("REST_SERVER_USERNAME");
    let password = keys.get("REST_SERVER_PASSWORD");
    if password.is_some() && username.is_none() {
        return Err(BuildError::Secret(
            "has REST_SERVER_PASSWORD but no REST_SERVER_USERNAME".into(),
        ));
    }
    Ok(RestConfig {
        url,
        username,
        password,
        ca_cert_pem: keys
            .secret
            .get_bytes("CA_CERT_DATA")
            .filter(|v| !v.is_empty()),
    })
}

/// Stash's task variables for a REST backend: the URL's host and its path.
fn split_url(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    match rest.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (rest.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_api::repository::{B2Spec, GcsSpec, RestSpec, SwiftSpec};

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        for (k, v) in pairs {
            s.string_data.insert(k.to_string(), v.to_string());
        }
        s
    }

    fn err(r: Result<impl std::fmt::Debug, BuildError>) -> String {
        match r {
            Err(BuildError::Secret(m) | BuildError::Spec(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn b2_maps_stash_keys_and_looks_the_bucket_id_up_unless_given() {
        let spec = B2Spec {
            bucket: "bk".into(),
            prefix: Some("db".into()),
            max_connections: None,
        };
        let s = secret(&[
            ("B2_ACCOUNT_ID", "id"),
            ("B2_ACCOUNT_KEY", "key"),
            ("B2_BUCKET_ID", "bid"),
        ]);
        let keys = Keys { secret: &s };
        let c = b2_config(&spec, &keys).unwrap();
        assert_eq!(
            (
                c.account_id.as_str(),
                c.account_key.as_str(),
                c.bucket_id.as_str(),
                c.prefix.as_str()
            ),
            ("id", "key", "bid", "db")
        );
        // Without B2_BUCKET_ID the id is looked up: here the API is unreachable, and the
        // refusal says so.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let s = secret(&[("B2_ACCOUNT_ID", "id"), ("B2_ACCOUNT_KEY", "key")]);
        let keys = Keys { secret: &s };
        match b2_config_at(&dead, &spec, &keys) {
            Err(BuildError::Store(e)) => {
                assert!(e.to_string().contains("cannot reach the B2 API"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let s = secret(&[("B2_ACCOUNT_KEY", "key")]);
        let keys = Keys { secret: &s };
        assert_eq!(
            err(b2_config(&spec, &keys)),
            "has no B2_ACCOUNT_ID, which a b2 repository needs"
        );
    }

    #[test]
    fn swift_takes_a_storage_url_and_token_and_refuses_logins_by_name() {
        let spec = SwiftSpec {
            container: "c".into(),
            prefix: None,
        };
        let s = secret(&[
            ("OS_STORAGE_URL", "https://swift/v1/AUTH_x"),
            ("OS_AUTH_TOKEN", "t"),
        ]);
        let keys = Keys { secret: &s };
        let c = swift_config(&spec, &keys).unwrap();
        assert_eq!(c.storage_url, "https://swift/v1/AUTH_x");
        assert_eq!(c.token, "t");
        let s = secret(&[
            ("OS_AUTH_URL", "https://keystone/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
        ]);
        let keys = Keys { secret: &s };
        let m = err(swift_config(&spec, &keys));
        assert!(m.contains("OS_AUTH_URL, OS_USERNAME, OS_PASSWORD"), "{m}");
        assert!(m.contains("does not log in to Swift with Keystone"), "{m}");
        assert!(!m.contains("https://keystone"), "values stay out: {m}");
        // v1 auth logs in at ST_AUTH: here nothing listens, and the refusal says where.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/auth/v1.0", l.local_addr().unwrap())
        };
        let s = secret(&[("ST_AUTH", &dead), ("ST_USER", "u"), ("ST_KEY", "k")]);
        let keys = Keys { secret: &s };
        match swift_config(&spec, &keys) {
            Err(BuildError::Store(e)) => assert!(e.to_string().contains("ST_AUTH"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gcs_needs_a_key_unless_an_emulator_endpoint_is_given() {
        let mut spec = GcsSpec {
            bucket: "b".into(),
            ..Default::default()
        };
        let s = secret(&[("GOOGLE_PROJECT_ID", "p")]);
        let keys = Keys { secret: &s };
        assert!(err(gcs_config(&spec, &keys)).contains("GOOGLE_SERVICE_ACCOUNT_JSON_KEY"));
        spec.endpoint = Some("http://127.0.0.1:9023".into());
        assert_eq!(gcs_config(&spec, &keys).unwrap().service_account_json, None);
        let s = secret(&[("GOOGLE_SERVICE_ACCOUNT_JSON_KEY", "{\"type\":\"x\"}")]);
        let keys = Keys { secret: &s };
        assert_eq!(
            gcs_config(&spec, &keys)
                .unwrap()
                .service_account_json
                .as_deref(),
            Some("{\"type\":\"x\"}")
        );
    }

    #[test]
    fn rest_keeps_credentials_out_of_the_url() {
        let s = secret(&[("REST_SERVER_USERNAME", "u"), ("REST_SERVER_PASSWORD", "p")]);
        let keys = Keys { secret: &s };
        let spec = RestSpec {
            url: "https://u:p@host:8000/repo".into(),
        };
        assert!(err(rest_config(&spec, &keys)).contains("must not hold credentials"));
        let spec = RestSpec {
            url: "https://host:8000/repo".into(),
        };
        let c = rest_config(&spec, &keys).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(
            split_url("https://host:8000/a/b"),
            ("host:8000".into(), "/a/b".into())
        );
    }
}
