//! How to reach one server, and connecting to it with the checks a backup needs first.

use std::{
    ffi::CString,
    fmt,
    io::Write,
    net::ToSocketAddrs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::DbError;

/// TLS material for a connection, as PEM bytes.
#[derive(Clone, Default)]
pub struct TlsSpec {
    /// CA bundle to verify the server against; when set, verification is required.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for servers that require X509 authentication.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Encrypt but do not verify the server (AppBinding `insecureSkipTLSVerify`).
    pub skip_verify: bool,
}

/// Everything needed to connect to one server. The password never appears in Debug output.
#[derive(Clone)]
pub struct ConnSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub tls: Option<TlsSpec>,
    /// What to call the server in messages, e.g. `AppBinding demo/mysql`.
    pub label: String,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl ConnSpec {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Fails when the host name does not resolve, saying so.
    pub fn resolve(&self) -> Result<(), DbError> {
        let resolved = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|mut a| a.next().is_some())
            .unwrap_or(false);
        match resolved {
            true => Ok(()),
            false => Err(DbError::Connect {
                target: self.label.clone(),
                address: self.address(),
                reason: format!(
                    "the host name `{}` does not resolve; on one machine an AppBinding's \
                     clientConfig.service.name must be a resolvable host name (or use \
                     clientConfig.url)",
                    self.host
                ),
            }),
        }
    }
}

/// The files a client needs — an option file with the credentials and the TLS PEMs — as
/// anonymous in-memory files (memfd, 0600) that exist only while this value and the children it
/// was passed to live: nothing with a secret is ever written to disk, so even a SIGKILLed agent
/// leaves none behind. Each is named by a `/dev/fd/N` path; this process opens them through
/// that path (the native connection's TLS files), and a child sees them only when
/// [`ClientFiles::pass_to`] was applied to its command (they are close-on-exec otherwise, so
/// no other child inherits them). The password reaches mysqldump and mysql only through this
/// file, never through argv or the environment.
pub struct ClientFiles {
    fds: Vec<OwnedFd>,
    pub defaults_file: PathBuf,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// An anonymous, close-on-exec, 0600 in-memory file holding `data`, and its `/dev/fd` path.
fn private_memfd(name: &str, data: &[u8]) -> std::io::Result<(OwnedFd, PathBuf)> {
    let cname = CString::new(name).map_err(std::io::Error::other)?;
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A memfd starts world-writable, and the clients ignore world-writable option files.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut f = std::fs::File::from(fd);
    f.write_all(data)?;
    let fd = OwnedFd::from(f);
    let path = PathBuf::from(format!("/dev/fd/{}", fd.as_raw_fd()));
    Ok((fd, path))
}

/// Escapes a value for a MySQL option file (double-quoted, backslash escapes).
fn option_value(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Which client programs are installed: MariaDB's and MySQL's spell TLS options differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFlavor {
    MariaDb,
    MySql,
}

impl ClientFiles {
    pub fn new(spec: &ConnSpec, flavor: ClientFlavor) -> Result<ClientFiles, DbError> {
        let io =
            |e: std::io::Error| DbError::Local(format!("cannot write client option file: {e}"));
        let mut fds = Vec::new();
        let mut file = |name: &str, data: &[u8]| -> Result<PathBuf, DbError> {
            let (fd, path) = private_memfd(name, data).map_err(io)?;
            fds.push(fd);
            Ok(path)
        };
        let mut ca = None;
        let mut cert = None;
        let mut key = None;
        let mut cnf = String::from("[client]\n");
        cnf.push_str(&format!("user={}\n", option_value(&spec.user)));
        cnf.push_str(&format!("password={}\n", option_value(&spec.password)));
        cnf.push_str(&format!("host={}\n", option_value(&spec.host)));
        cnf.push_str(&format!("port={}\n", spec.port));
        cnf.push_str("protocol=TCP\n");
        if let Some(tls) = &spec.tls {
            if let Some(pem) = &tls.ca_pem {
                let p = file("coffer-ca.pem", pem)?;
                cnf.push_str(&format!("ssl-ca={}\n", option_value(&p.to_string_lossy())));
                ca = Some(p);
            }
            if let (Some(c), Some(k)) = (&tls.client_cert_pem, &tls.client_key_pem) {
                let cp = file("coffer-client-cert.pem", c)?;
                let kp = file("coffer-client-key.pem", k)?;
                cnf.push_str(&format!(
                    "ssl-cert={}\n",
                    option_value(&cp.to_string_lossy())
                ));
                cnf.push_str(&format!(
                    "ssl-key={}\n",
                    option_value(&kp.to_string_lossy())
                ));
                cert = Some(cp);
                key = Some(kp);
            }
            let verify = ca.is_some() && !tls.skip_verify;
            match flavor {
                ClientFlavor::MariaDb => {
                    cnf.push_str("ssl\n");
                    if verify {
                        cnf.push_str("ssl-verify-server-cert\n");
                    }
                }
                ClientFlavor::MySql => {
                    cnf.push_str(if verify {
                        "ssl-mode=VERIFY_IDENTITY\n"
                    } else {
                        "ssl-mode=REQUIRED\n"
                    });
                }
            }
        }
        // Large rows (BLOBs, long INSERTs) must not fail on the client's packet limit.
        cnf.push_str("\n[mysqldump]\nmax-allowed-packet=1G\n");
        cnf.push_str("\n[mysql]\nmax-allowed-packet=1G\n");
        let defaults_file = file("coffer-client.cnf", cnf.as_bytes())?;
        Ok(ClientFiles {
            fds,
            defaults_file,
            ca,
            cert,
            key,
        })
    }

    /// The argument that must come first on a client's command line; the command also needs
    /// [`ClientFiles::pass_to`].
    pub fn defaults_arg(&self) -> String {
        format!("--defaults-file={}", self.defaults_file.display())
    }

    /// Lets this one child inherit the files (as the same fd numbers its `/dev/fd` paths name).
    /// The flag is cleared in the child between fork and exec, so children started at the same
    /// time by other threads never see them. `self` must outlive the spawn.
    pub fn pass_to(&self, cmd: &mut Command) {
        let fds: Vec<RawFd> = self.fds.iter().map(|f| f.as_raw_fd()).collect();
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// Facts about a server we connected to.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub is_mariadb: bool,
    /// The server writes a binlog (`@@log_bin`): a backup can record its position.
    pub log_bin: bool,
}

/// How long a connection waits on the network. Every connection has TCP keepalive: probes
/// after 60 s of silence, every 10 s, 6 of them, so a dead server or a cut network is found
/// within about two minutes while a statement runs with nothing on the wire; a live server that
/// is merely slow answers the probes, so they never end a long statement. Data a dead server
/// never acknowledges is bounded by TCP_USER_TIMEOUT on control connections and by the kernel's
/// retransmission limit (about 15 minutes) on data ones. The read and write timeouts are what
/// bound a live server that stops answering.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
    unacknowledged: Option<Duration>,
}

/// Data connections: the native dump's chunk queries and the native load's LOAD DATA and index
/// builds can run for many minutes (hours on large tables) with nothing on the wire, so no read
/// timeout — a dead peer is found by keepalive, a stuck server by the session's timeOut. A write
/// blocks only while the server reads nothing at all; 30 minutes is far beyond any stall of a
/// working server. No TCP_USER_TIMEOUT: since Linux 5.11 it also ends a connection whose
/// receiver keeps its window closed that long, which a busy server loading data may do.
const DATA: Timeouts = Timeouts {
    read: None,
    write: Some(Duration::from_secs(30 * 60)),
    unacknowledged: None,
};

/// Control connections (version, checks, the global read lock, cluster state): short
/// statements, so a server that has not answered in 5 minutes is stuck, and one that has not
/// acknowledged our data in 2 is gone.
const CONTROL: Timeouts = Timeouts {
    read: Some(Duration::from_secs(5 * 60)),
    write: Some(Duration::from_secs(5 * 60)),
    unacknowledged: Some(Duration::from_secs(2 * 60)),
};

/// The first contact (`ping`): a server that does not greet us and answer `SELECT VERSION()`
/// within 10 s is not there yet — or is not a MySQL server (an AppBinding pointing at another
/// service's port would otherwise hang the session forever).
const PING: Timeouts = Timeouts {
    read: Some(Duration::from_secs(10)),
    write: Some(Duration::from_secs(10)),
    unacknowledged: Some(Duration::from_secs(10)),
};

/// Opens a native connection for streaming data (the native dump and load), with the same TLS
/// rules as the clients: a CA means the server must verify.
pub fn connect(spec: &ConnSpec, files: &ClientFiles) -> Result<mysql::Conn, DbError> {
    connect_with(spec, files, DATA)
}

/// Opens a native connection for short control statements (checks, locks, status).
pub fn connect_control(spec: &ConnSpec, files: &ClientFiles) -> Result<mysql::Conn, DbError> {
    connect_with(spec, files, CONTROL)
}

/// Opens a connection for a replication stream: the server sends a heartbeat at least every
/// heartbeat period, so a read that waits `read_timeout` (at least twice that period) without
/// a byte means the stream is dead.
pub fn connect_replication(
    spec: &ConnSpec,
    files: &ClientFiles,
    read_timeout: Duration,
) -> Result<mysql::Conn, DbError> {
    connect_with(
        spec,
        files,
        Timeouts {
            read: Some(read_timeout),
            ..CONTROL
        },
    )
}

fn connect_with(spec: &ConnSpec, files: &ClientFiles, t: Timeouts) -> Result<mysql::Conn, DbError> {
    spec.resolve()?;
    let mut b = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(spec.host.clone()))
        .tcp_port(spec.port)
        .user(Some(spec.user.clone()))
        .pass(Some(spec.password.clone()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .read_timeout(t.read)
        .write_timeout(t.write)
        .tcp_keepalive_time_ms(Some(60_000))
        .tcp_keepalive_probe_interval_secs(Some(10))
        .tcp_keepalive_probe_count(Some(6))
        .tcp_user_timeout_ms(t.unacknowledged.map(|d| d.as_millis() as u32));
    if let Some(tls) = &spec.tls {
        let mut ssl = mysql::SslOpts::default();
        if let Some(ca) = &files.ca {
            ssl = ssl.with_root_cert_path(Some(ca.clone()));
        }
        if let (Some(c), Some(k)) = (&files.cert, &files.key) {
            ssl = ssl.with_client_identity(Some(mysql::ClientIdentity::new(c.clone(), k.clone())));
        }
        if tls.skip_verify || files.ca.is_none() {
            ssl = ssl.with_danger_accept_invalid_certs(true);
        }
        b = b.ssl_opts(Some(ssl));
    }
    mysql::Conn::new(b).map_err(|e| classify(spec, &e))
}

/// Connects and reads the server version; retries while the server refuses connections, up
/// to `wait` (a server that is starting), but fails at once on a refused password or a
/// certificate that does not verify — waiting cannot fix those.
pub fn ping(spec: &ConnSpec, files: &ClientFiles, wait: Duration) -> Result<ServerInfo, DbError> {
    use mysql::prelude::Queryable;
    let deadline = Instant::now() + wait;
    loop {
        match connect_with(spec, files, PING) {
            Ok(mut c) => {
                let (version, log_bin): (String, Option<i64>) = c
                    .query_first("SELECT VERSION(), @@log_bin")
                    .map_err(|e| classify(spec, &e))?
                    .unwrap_or_default();
                let is_mariadb = version.to_ascii_lowercase().contains("mariadb");
                return Ok(ServerInfo {
                    version,
                    is_mariadb,
                    log_bin: log_bin == Some(1),
                });
            }
            Err(e @ DbError::Connect { .. }) if Instant::now() < deadline => {
                tracing::debug!("database not reachable yet: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Turns a driver error into what failed and what to do.
pub fn classify(spec: &ConnSpec, e: &mysql::Error) -> DbError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if let mysql::Error::MySqlError(me) = e {
        if me.code == 1045 || me.code == 1698 {
            return DbError::Auth {
                target: spec.label.clone(),
                address: spec.address(),
                user: spec.user.clone(),
                reason: me.message.clone(),
            };
        }
        if me.code == 3159 || lower.contains("secure transport") {
            return DbError::Tls {
                target: spec.label.clone(),
                address: spec.address(),
                reason: format!(
                    "{} — the server requires TLS: give the AppBinding a CA \
                     (clientConfig.caBundle or CA_CERT_DATA in its Secret)",
                    me.message
                ),
            };
        }
    }
    if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("ssl")
        || lower.contains("handshake")
    {
        return DbError::Tls {
            target: spec.label.clone(),
            address: spec.address(),
            reason: format!(
                "{text} — the server's certificate does not verify against the AppBinding's \
                 CA (or does not name host `{}`)",
                spec.host
            ),
        };
    }
    // A read or write timeout (EAGAIN from a socket with a timeout, or ETIMEDOUT).
    let timed_out = lower.contains("os error 11") || lower.contains("timed out");
    if timed_out && matches!(e, mysql::Error::IoError(_) | mysql::Error::CodecError(_)) {
        return DbError::Connect {
            target: spec.label.clone(),
            address: spec.address(),
            reason: format!(
                "{text}: the server did not answer in time — is a MySQL/MariaDB server \
                 running there, and is it responsive?"
            ),
        };
    }
    if matches!(e, mysql::Error::IoError(_) | mysql::Error::DriverError(_)) {
        return DbError::Connect {
            target: spec.label.clone(),
            address: spec.address(),
            reason: format!("{text} — is the server running and listening there?"),
        };
    }
    DbError::Query {
        target: spec.label.clone(),
        reason: text,
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt, path::Path};

    use super::*;

    #[test]
    fn client_files_are_private_and_keep_the_password_out_of_argv() {
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "backup".into(),
            password: "p\"a\\ss word".into(),
            tls: Some(TlsSpec {
                ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
                ..Default::default()
            }),
            label: "AppBinding t/db".into(),
        };
        let f = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert!(
            f.defaults_file.starts_with("/dev/fd"),
            "no file on disk: {:?}",
            f.defaults_file
        );
        assert_eq!(mode(&f.defaults_file), 0o600);
        assert_eq!(mode(f.ca.as_ref().unwrap()), 0o600);
        let cnf = std::fs::read_to_string(&f.defaults_file).unwrap();
        assert!(cnf.contains(r#"password="p\"a\\ss word""#), "{cnf}");
        assert!(cnf.contains("ssl-verify-server-cert"), "{cnf}");
        assert!(
            !f.defaults_arg().contains("p\"a"),
            "the password is never an argument"
        );
        assert!(
            !format!("{spec:?}").contains("ss word"),
            "Debug hides the password"
        );
    }

    /// Only the child the files were passed to inherits them; a sibling started meanwhile does
    /// not, and the child reads the option file through the path in its argument.
    #[test]
    fn client_files_reach_only_the_child_they_are_passed_to() {
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "backup".into(),
            password: "s3cret-for-one-child".into(),
            tls: None,
            label: "AppBinding t/db".into(),
        };
        let f = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
        let path = f.defaults_file.display().to_string();
        let mut child = Command::new("cat");
        child.arg(&path);
        f.pass_to(&mut child);
        let out = child.output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("s3cret-for-one-child"),
            "{out:?}"
        );
        let sibling = Command::new("ls")
            .args(["-l", "/proc/self/fd/"])
            .output()
            .unwrap();
        let fds = String::from_utf8_lossy(&sibling.stdout);
        assert!(!fds.contains("memfd:coffer"), "{fds}");
    }

    /// A listener that accepts and never speaks (a hung server, or another service's port)
    /// fails the ping within its timeout instead of hanging the session.
    #[test]
    fn a_silent_server_fails_the_ping_instead_of_hanging() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _keep = std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(60));
            drop(held);
        });
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port,
            user: "u".into(),
            password: "p".into(),
            tls: None,
            label: "AppBinding t/silent".into(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
            let _ = tx.send(ping(&spec, &files, Duration::ZERO).map(|_| ()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ping still waits for a server that never answers");
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("cannot connect") && e.contains("AppBinding t/silent"),
            "{e}"
        );
    }

    #[test]
    fn an_unresolvable_service_name_says_so() {
        let spec = ConnSpec {
            host: "no-such-service.invalid".into(),
            port: 3306,
            user: "u".into(),
            password: String::new(),
            tls: None,
            label: "AppBinding t/db".into(),
        };
        let e = spec.resolve().unwrap_err().to_string();
        assert!(
            e.contains("`no-such-service.invalid` does not resolve"),
            "{e}"
        );
        assert!(e.contains("AppBinding t/db"), "{e}");
    }
}
