//! A throwaway single-node Garage (S3-compatible object store).

use crate::{http, process};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const REGION: &str = "garage";
const DEFAULT_BUCKET: &str = "coffer-test";

/// The Garage binary: `$COFFER_GARAGE`, else `~/.cargo/bin/garage` (where
/// `scripts/install-deps.sh` builds it), else `garage` on `PATH`. `None` if none of
/// these is an executable file.
pub fn garage_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COFFER_GARAGE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(candidate) = cargo_home.map(|c| c.join("bin").join("garage")) {
        if crate::is_executable(&candidate) {
            return Some(candidate);
        }
    }
    crate::find_executable("COFFER_GARAGE", &["garage"], &[])
}

/// A single-node Garage server (`server --single-node --default-bucket`, sqlite
/// metadata) with its S3 API, RPC and admin API on free ports of 127.0.0.1, region
/// `"garage"`, one bucket ([`bucket`](Self::bucket)) and one key with read/write/owner
/// access to it. Stopped (SIGTERM, SIGKILL after 10 s) and its directory removed on
/// `Drop`.
pub struct Garage {
    child: Option<Child>,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    admin_port: u16,
    admin_token: String,
    access_key: String,
    secret_key: String,
    dir: Option<tempfile::TempDir>,
}

impl Garage {
    pub fn start() -> Result<Garage> {
        let bin = garage_binary().ok_or_else(|| {
            anyhow!("garage not found (run scripts/install-deps.sh, or set COFFER_GARAGE)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("coffer-garage-")
            .tempdir()
            .context("create a temporary directory for Garage")?;
        let root = dir.path();
        let (s3_port, rpc_port, admin_port) =
            (crate::free_port(), crate::free_port(), crate::free_port());
        let admin_token = crate::random_hex(16);
        let config = root.join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin_token}"
"#,
            meta = root.join("meta").display(),
            data = root.join("data").display(),
            rpc_secret = crate::random_hex(32),
        );
        std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;

        let access_key = format!("GK{}", crate::random_hex(12));
        let secret_key = crate::random_hex(32);
        let log = root.join("garage.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("GARAGE_DEFAULT_BUCKET", DEFAULT_BUCKET)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("COFFER_GARAGE_LOG").unwrap_or_else(|_| "garage=info".into()),
            )
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = process::spawn(cmd, "garage server")?;
        let mut garage = Garage {
            child: Some(child),
            bin,
            config,
            log,
            s3_port,
            admin_port,
            admin_token,
            access_key,
            secret_key,
            dir: Some(dir),
        };
        if let Err(e) = garage.wait_ready() {
            return Err(anyhow!(
                "{e:#}\n--- {} (tail) ---\n{}",
                garage.log.display(),
                garage.log_tail()
            ));
        }
        Ok(garage)
    }

    /// `"http://127.0.0.1:PORT"` (S3 API; path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Always `"garage"`.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The bucket created at startup (the key has read, write and owner on it).
    pub fn bucket(&self) -> &str {
        DEFAULT_BUCKET
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Admin API endpoint (`"http://127.0.0.1:PORT"`, bearer token [`admin_token`](Self::admin_token)).
    pub fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The configuration file, for running `garage -c PATH ...` yourself.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Creates a bucket and gives the default key read, write and owner access to it.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        self.cli(&["bucket", "create", name])?;
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.access_key,
        ])?;
        Ok(())
    }

    /// Runs `garage -c CONFIG ARGS...` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {} {}", self.bin.display(), args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "garage {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log, 40)
    }

    /// Process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s). No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, Duration::from_secs(10));
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let s3 = SocketAddr::from((Ipv4Addr::LOCALHOST, self.s3_port));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, self.admin_port));
        let auth = format!("Bearer {}", self.admin_token);
        let bucket_path = format!("/v2/GetBucketInfo?globalAlias={DEFAULT_BUCKET}");
        let access_key = self.access_key.clone();
        let child = self.child.as_mut().expect("started");
        process::wait_until(child, "garage server", READY_TIMEOUT, || {
            // The S3 API answers (any HTTP status; anonymous requests are refused).
            http::request(s3, "GET", "/", &[], b"").context("S3 API")?;
            let health = http::request(admin, "GET", "/health", &[], b"").context("admin API")?;
            if health.status != 200 {
                bail!(
                    "GET /health answered {}: {}",
                    health.status,
                    health.body.trim()
                );
            }
            let info = http::request(admin, "GET", &bucket_path, &[("Authorization", &auth)], b"")?;
            if info.status != 200 || !info.body.contains(access_key.as_str()) {
                bail!(
                    "default bucket/key not there yet ({}): {}",
                    info.status,
                    info.body.trim()
                );
            }
            Ok(Some(()))
        })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coffer-testkit: Garage log (tail) ---\n{}\n---",
                self.log_tail()
            );
        }
        self.stop();
        if crate::mariadb::keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "coffer-testkit: kept Garage directory {}",
                    dir.keep().display()
                );
            }
        }
    }
}
