//! A throwaway Prometheus Pushgateway.

use crate::{http, process};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A Prometheus Pushgateway on 127.0.0.1 and a free port, without persistence and
/// with the admin API enabled (`PUT /api/v1/admin/wipe`). Killed on `Drop`.
pub struct Pushgateway {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// `$COFFER_PUSHGATEWAY`, else `prometheus-pushgateway` or `pushgateway` on PATH.
fn binary() -> Option<PathBuf> {
    crate::find_executable(
        "COFFER_PUSHGATEWAY",
        &["prometheus-pushgateway", "pushgateway"],
        &["/usr/bin/prometheus-pushgateway"],
    )
}

impl Pushgateway {
    pub fn start() -> Result<Pushgateway> {
        let bin = binary().ok_or_else(|| {
            anyhow!("prometheus-pushgateway not found (apt-get install prometheus-pushgateway, or set COFFER_PUSHGATEWAY)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("coffer-pushgateway-")
            .tempdir()
            .context("create a temporary directory for the Pushgateway")?;
        let log = dir.path().join("pushgateway.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let port = crate::free_port();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-admin-api")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = process::spawn(cmd, "prometheus-pushgateway")?;
        let mut pg = Pushgateway {
            child: Some(child),
            port,
            log,
            dir: Some(dir),
        };
        let addr = pg.addr();
        let child = pg.child.as_mut().expect("just started");
        let ready = process::wait_until(child, "prometheus-pushgateway", READY_TIMEOUT, || {
            match http::request(addr, "GET", "/-/ready", &[], b"") {
                Ok(r) if r.status == 200 => Ok(Some(())),
                Ok(r) => Err(anyhow!(
                    "GET /-/ready answered {}: {}",
                    r.status,
                    r.body.trim()
                )),
                Err(e) => Err(e),
            }
        });
        if let Err(e) = ready {
            return Err(anyhow!(
                "{e:#}\n--- {} (tail) ---\n{}",
                pg.log.display(),
                pg.log_tail()
            ));
        }
        Ok(pg)
    }

    /// `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the log.
    pub fn dir(&self) -> &Path {
        self.log.parent().expect("log has a parent")
    }

    /// Process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The body of `GET /metrics` (the Pushgateway's own metrics plus everything pushed).
    pub fn metrics_text(&self) -> Result<String> {
        let r = http::request(self.addr(), "GET", "/metrics", &[], b"")?;
        if r.status != 200 {
            bail!(
                "GET {}/metrics answered {}: {}",
                self.url(),
                r.status,
                r.body
            );
        }
        Ok(r.body)
    }

    /// Deletes every pushed metric group (admin API wipe).
    pub fn wipe(&self) -> Result<()> {
        let r = http::request(self.addr(), "PUT", "/api/v1/admin/wipe", &[], b"")?;
        if !(200..300).contains(&r.status) {
            bail!(
                "PUT {}/api/v1/admin/wipe answered {}: {}",
                self.url(),
                r.status,
                r.body
            );
        }
        Ok(())
    }

    /// The last lines of the Pushgateway's log (stdout and stderr).
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log, 40)
    }

    /// The log file (stdout and stderr of the process).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the process (SIGTERM, SIGKILL after 10 s). No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, Duration::from_secs(10));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        self.stop();
        if crate::mariadb::keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "coffer-testkit: kept Pushgateway directory {}",
                    dir.keep().display()
                );
            }
        }
    }
}
