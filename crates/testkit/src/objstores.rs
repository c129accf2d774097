//! Object-store servers other than S3, each on a free port of 127.0.0.1 with its data in a
//! temporary directory: Azurite (Azure Blob), gcp-storage-emulator (Google Cloud Storage) and
//! rustic_server (restic's REST protocol). `scripts/install-deps.sh` installs them under
//! `/opt/coffer-*`. Each can be stopped and started again on the same port and data, to test
//! a server that disappears in the middle of a backup.

use crate::{http, process};
use anyhow::{anyhow, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Azurite,
    Gcs,
    Rest,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Azurite => "azurite-blob",
            Kind::Gcs => "gcp-storage-emulator",
            Kind::Rest => "rustic-server",
        }
    }

    fn binary(self) -> Option<PathBuf> {
        let (env, default) = match self {
            Kind::Azurite => ("COFFER_AZURITE", "/opt/coffer-azurite/bin/azurite-blob"),
            Kind::Gcs => (
                "COFFER_GCS_EMULATOR",
                "/opt/coffer-gcs-emulator/bin/gcp-storage-emulator",
            ),
            Kind::Rest => (
                "COFFER_RUSTIC_SERVER",
                "/opt/coffer-rustic-server/bin/rustic-server",
            ),
        };
        crate::find_executable(env, &[self.name()], &[default])
    }
}

/// One emulator or server process with its port and data directory.
pub struct ObjectServer {
    kind: Kind,
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// REST: the user and password in the server's .htpasswd.
    user: Option<(String, String)>,
    /// REST over TLS: the CA and the server's certificate (for 127.0.0.1).
    tls: Option<crate::TlsMaterial>,
}

pub type Azurite = ObjectServer;
pub type GcsEmulator = ObjectServer;
pub type RestServer = ObjectServer;

impl ObjectServer {
    /// Azurite's Blob service, with the development account.
    pub fn azurite() -> Result<Self> {
        Self::new(Kind::Azurite)
    }

    /// gcp-storage-emulator, with the bucket [`bucket`](Self::bucket).
    pub fn gcs() -> Result<Self> {
        Self::new(Kind::Gcs)
    }

    /// rustic_server with basic authentication ([`user`](Self::user)).
    pub fn rest() -> Result<Self> {
        Self::new(Kind::Rest)
    }

    /// rustic_server with basic authentication, over TLS with a certificate of a private CA
    /// ([`tls`](Self::tls)).
    pub fn rest_tls() -> Result<Self> {
        Self::build(Kind::Rest, true)
    }

    /// REST over TLS: the certificates.
    pub fn tls(&self) -> Option<&crate::TlsMaterial> {
        self.tls.as_ref()
    }

    fn new(kind: Kind) -> Result<Self> {
        Self::build(kind, false)
    }

    fn build(kind: Kind, tls: bool) -> Result<Self> {
        let bin = kind
            .binary()
            .ok_or_else(|| anyhow!("{} not found (run scripts/install-deps.sh)", kind.name()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("coffer-{}-", kind.name()))
            .tempdir()
            .context("create a temporary directory")?;
        let log = dir.path().join("server.log");
        let mut s = ObjectServer {
            kind,
            bin,
            child: None,
            port: crate::free_port(),
            log,
            dir: Some(dir),
            user: None,
            tls: None,
        };
        if tls {
            s.tls = Some(crate::TlsMaterial::generate(&s.root().join("tls"))?);
        }
        if kind == Kind::Rest {
            let (u, p) = ("coffer".to_string(), crate::random_hex(12));
            let out = Command::new(&s.bin)
                .args(["auth", "add", "-u", &u, "-p", &p, "-f"])
                .arg(s.root().join(".htpasswd"))
                .output()
                .context("rustic-server auth add")?;
            if !out.status.success() {
                return Err(anyhow!(
                    "rustic-server auth add failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // Per-repository ACLs are on by default; the user may change its repositories.
            std::fs::write(
                s.root().join("acl.toml"),
                format!("[default]\n{u} = \"Modify\"\n[coffer-test]\n{u} = \"Modify\"\n"),
            )?;
            s.user = Some((u, p));
        }
        s.start()?;
        if kind == Kind::Gcs {
            s.create_bucket(s.bucket())?;
        }
        Ok(s)
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().expect("directory kept until drop").path()
    }

    /// Starts the server (again) on its port and data.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let root = self.root().to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.bin);
        match self.kind {
            Kind::Azurite => {
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port, "--location"])
                    .arg(root.join("data"))
                    .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"]);
            }
            Kind::Gcs => {
                cmd.args(["start", "--host", "127.0.0.1", "--port", &port])
                    .env("STORAGE_BASE", &root)
                    .env("STORAGE_DIR", "gcs");
            }
            Kind::Rest => {
                cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--path"])
                    .arg(root.join("data"))
                    .arg("--htpasswd-file")
                    .arg(root.join(".htpasswd"))
                    .arg("--private-repos")
                    .arg("--acl-path")
                    .arg(root.join("acl.toml"));
                if let Some(t) = &self.tls {
                    cmd.arg("--tls")
                        .arg("--tls-cert")
                        .arg(&t.server_cert_path)
                        .arg("--tls-key")
                        .arg(&t.server_key_path);
                }
            }
        }
        // rustic_server 0.4 shuts itself down 3 s after start when `CI` is set (its own test
        // mode), which is exactly where the suite runs: the servers never see it.
        cmd.env_remove("CI")
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(process::spawn(cmd, self.kind.name())?);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let name = self.kind.name();
        let child = self.child.as_mut().expect("just started");
        let tls = self.tls.is_some();
        let r = process::wait_until(child, name, READY_TIMEOUT, || {
            if tls {
                // Listening is enough: plain HTTP cannot speak to a TLS port.
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            } else {
                http::request(addr, "GET", "/", &[], b"")?;
            }
            Ok(Some(()))
        });
        r.map_err(|e| anyhow!("{e:#}\n--- {name} log (tail) ---\n{}", self.log_tail()))
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s). Its data stays: Azurite keeps its
    /// metadata in memory between autosaves, so a SIGKILL could lose a container it made.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, Duration::from_secs(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Azure: the Blob service URL of the development account; GCS: the JSON API's base;
    /// REST: the server's root.
    pub fn endpoint(&self) -> String {
        match self.kind {
            Kind::Azurite => format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port),
            Kind::Rest if self.tls.is_some() => format!("https://127.0.0.1:{}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// GCS: the bucket created at start.
    pub fn bucket(&self) -> &str {
        "coffer-test"
    }

    /// REST: the user and password the server accepts.
    pub fn user(&self) -> (&str, &str) {
        let (u, p) = self.user.as_ref().expect("a REST server has a user");
        (u, p)
    }

    /// GCS: creates a bucket (the emulator needs no credentials).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let body = format!("{{\"name\":\"{name}\"}}");
        let r = http::request(
            addr,
            "POST",
            "/storage/v1/b?project=coffer",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )?;
        if !(200..300).contains(&r.status) {
            return Err(anyhow!("create bucket {name}: {} {}", r.status, r.body));
        }
        Ok(())
    }

    /// GCS: the names of the objects under `prefix` (anonymous, as the emulator allows).
    pub fn gcs_objects(&self, prefix: &str) -> Result<Vec<String>> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let path = format!("/storage/v1/b/{}/o?prefix={prefix}", self.bucket());
        let r = http::request(addr, "GET", &path, &[], b"")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .with_context(|| format!("list objects: {} {}", r.status, r.body))?;
        Ok(v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Azure: creates a container, signing the request with the development key (through
    /// Node.js, which Azurite runs on, so the harness needs no HMAC of its own).
    pub fn create_container(&self, name: &str) -> Result<()> {
        const SCRIPT: &str = r#"
const crypto = require('crypto'), http = require('http');
const [port, account, key, container] = process.argv.slice(1);
const date = new Date().toUTCString(), version = '2021-08-06';
const path = `/${account}/${container}`;
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  `x-ms-date:${date}`, `x-ms-version:${version}`,
  `/${account}${path}\nrestype:container`].join('\n');
const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(toSign).digest('base64');
const req = http.request({host: '127.0.0.1', port, method: 'PUT', path: `${path}?restype=container`,
  headers: {'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
            Authorization: `SharedKey ${account}:${sig}`}}, res => {
  let b = ''; res.on('data', d => b += d);
  res.on('end', () => { if (res.statusCode >= 300) { console.error(res.statusCode, b); process.exit(1); } });
});
req.on('error', e => { console.error(e.message); process.exit(1); });
req.end();
"#;
        let node = crate::find_executable("COFFER_NODE", &["node", "nodejs"], &[])
            .ok_or_else(|| anyhow!("node not found (Azurite needs Node.js)"))?;
        let out = Command::new(node)
            .args(["-e", SCRIPT])
            .args([&self.port.to_string(), AZURITE_ACCOUNT, AZURITE_KEY, name])
            .output()
            .context("run node to create an Azure container")?;
        if !out.status.success() {
            return Err(anyhow!(
                "create container {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log, 40)
    }
}

impl Drop for ObjectServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coffer-testkit: {} log (tail) ---\n{}\n---",
                self.kind.name(),
                self.log_tail()
            );
        }
        self.stop();
        if crate::mariadb::keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!("coffer-testkit: kept {}", dir.keep().display());
            }
        }
    }
}
