//! Test harness for coffer's integration tests.
//!
//! Everything here starts *real* servers — MariaDB, Garage (S3) and the Prometheus
//! Pushgateway — bound to `127.0.0.1` on free ports, each in its own temporary
//! directory, and stops them and removes the directory on `Drop`. Nothing reads or
//! writes `/etc/mysql`, the default MariaDB socket or any system service.
//!
//! Children are started in their own process group and with `PR_SET_PDEATHSIG =
//! SIGKILL` (tied to a dedicated long-lived spawner thread), so they die with the test
//! process even when it is killed or aborts without running destructors.
//!
//! * [`MariaDb`] — a throwaway MariaDB server (optionally with TLS).
//! * [`MysqlServer`] — a throwaway MySQL 9 server (GTID binlog source), from the prefix
//!   `scripts/install-mysql.sh` installs.
//! * [`Garage`] — a single-node Garage S3 server with a default bucket and key.
//! * [`ObjectServer`] — Azurite (Azure Blob), a GCS emulator, rustic_server (restic REST).
//! * [`Pushgateway`] — a Prometheus Pushgateway.
//! * [`KubeApi`] — an in-memory stand-in for the Kubernetes API an agent in a Job uses.
//! * [`fidelity`] — a schema that exercises everything a faithful backup must keep.
//! * [`verify`] — checksums and definitions to compare a source and a restored server.
//!
//! ```ignore
//! use coffer_testkit::{fidelity, verify, MariaDb};
//!
//! let src = MariaDb::start()?;
//! let mut conn = src.conn()?;
//! fidelity::load(&mut conn, "shop")?;
//! let before = verify::checksums_without_float_tables(&mut conn, &["shop"])?;
//! // ... back up `src`, restore into `dst = MariaDb::start()?` ...
//! let after = verify::checksums_without_float_tables(&mut dst.conn()?, &["shop"])?;
//! assert!(verify::diff(&before, &after).is_none());
//! ```
//!
//! Environment variables:
//!
//! | variable | effect |
//! | --- | --- |
//! | `COFFER_MARIADBD`, `COFFER_MARIADB_INSTALL_DB` | paths of `mariadbd` / `mariadb-install-db` (default: `PATH`, then `/usr/sbin`, `/usr/bin`) |
//! | `COFFER_MYSQLD` | path of `mysqld` (default: `/opt/coffer-mysql/bin/mysqld`, the wrapper `scripts/install-mysql.sh` writes) |
//! | `COFFER_GARAGE` | path of `garage` (default: `~/.cargo/bin/garage`, then `PATH`) |
//! | `COFFER_PUSHGATEWAY` | path of the Pushgateway (default: `prometheus-pushgateway` on `PATH`) |
//! | `COFFER_GARAGE_LOG` | `RUST_LOG` for Garage servers (default `garage=info`) |
//! | `COFFER_TESTKIT_KEEP=1` | keep every server's temporary directory (printed on drop) |
//! | `COFFER_TESTKIT_NO_TEMPLATE=1` | run `mariadb-install-db` for every MariaDB instead of copying the cached pristine datadir |

mod garage;
mod http;
mod mariadb;
// Not `mysql`: that would shadow the `mysql` crate re-exported below.
mod mysql_server;
mod objstores;
mod process;
mod pushgateway;
mod tls;

pub mod fidelity;
pub mod galera;
pub mod kubeapi;
pub mod restic;
pub mod verify;

pub use galera::{start_restored, GaleraCluster, GaleraNode, GaleraOptions};
pub use garage::{garage_binary, Garage};
pub use kubeapi::KubeApi;
pub use mariadb::{MariaDb, MariaDbOptions};
pub use mysql_server::{MysqlOptions, MysqlServer};
pub use objstores::{Azurite, GcsEmulator, ObjectServer, RestServer, AZURITE_ACCOUNT, AZURITE_KEY};
pub use pushgateway::Pushgateway;
pub use tls::TlsMaterial;

/// The `mysql` crate this harness uses, for tests that need its types.
pub use mysql;

/// What a test needs to point coffer at a server of either family: where it listens and
/// root's password. [`MariaDb`] and [`MysqlServer`] both are one, so helpers that build
/// AppBindings and Secrets take `&impl DbServer` instead of one of them.
pub trait DbServer {
    /// Always `"127.0.0.1"`.
    fn host(&self) -> &str;
    fn port(&self) -> u16;
    /// Password of root (`root@localhost` and `root@'%'`).
    fn root_password(&self) -> &str;
    /// `"mysql://127.0.0.1:PORT/"` (no credentials).
    fn url(&self) -> String {
        format!("mysql://{}:{}/", self.host(), self.port())
    }
    /// The AppBinding `spec.type` of this family (`kubedb.com/mariadb`, `kubedb.com/mysql`).
    fn app_type(&self) -> &'static str;
}

impl DbServer for MariaDb {
    fn host(&self) -> &str {
        MariaDb::host(self)
    }
    fn port(&self) -> u16 {
        MariaDb::port(self)
    }
    fn root_password(&self) -> &str {
        MariaDb::root_password(self)
    }
    fn app_type(&self) -> &'static str {
        "kubedb.com/mariadb"
    }
}

impl DbServer for MysqlServer {
    fn host(&self) -> &str {
        MysqlServer::host(self)
    }
    fn port(&self) -> u16 {
        MysqlServer::port(self)
    }
    fn root_password(&self) -> &str {
        MysqlServer::root_password(self)
    }
    fn app_type(&self) -> &'static str {
        "kubedb.com/mysql"
    }
}

use std::collections::HashSet;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Binds `127.0.0.1:0`, reads the port the kernel chose and releases it. A port is
/// never returned twice in one process, so several servers started by one test binary
/// do not race for the same port. (Another process can still take the port before the
/// caller binds it; the servers report that clearly as "address in use".)
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("free_port: cannot bind 127.0.0.1:0 — is the loopback interface up?");
        let port = listener
            .local_addr()
            .expect("free_port: local_addr of a bound listener")
            .port();
        drop(listener);
        let mut set = handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("free_port: the kernel kept returning ports this process already handed out");
}

/// `n` random bytes from the kernel, hex-encoded (`2n` lowercase hex characters).
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("cannot read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last `lines` lines of a (log) file, reading at most its last 256 KiB.
/// Never fails: a missing or unreadable file yields a one-line explanation instead.
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    use std::io::{Seek, SeekFrom};
    const MAX: u64 = 256 * 1024;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot open {}: {e}>", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX {
        let _ = file.seek(SeekFrom::Start(len - MAX));
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.read_to_end(&mut bytes) {
        return format!("<cannot read {}: {e}>", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Finds an executable: the environment variable `env` if set (an explicit path),
/// else the first of `names` found on `PATH`, else the first existing `fallbacks`.
pub(crate) fn find_executable(env: &str, names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    fallbacks
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
