//! How to reach one server, and connecting to it with the checks a backup needs first.

use std::{
    fmt,
    io::Write,
    net::ToSocketAddrs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
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

/// The files a client needs — an option file with the credentials and the TLS PEMs — in a
/// private directory (0700, files 0600) removed on drop. The password reaches mysqldump and
/// mysql only through this file, never through argv or the environment.
pub struct ClientFiles {
    dir: tempfile::TempDir,
    pub defaults_file: PathBuf,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
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
        let dir = tempfile::Builder::new()
            .prefix("coffer-client-")
            .tempdir()
            .map_err(io)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(io)?;
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
                let p = dir.path().join("ca.pem");
                write_private(&p, pem).map_err(io)?;
                cnf.push_str(&format!("ssl-ca={}\n", option_value(&p.to_string_lossy())));
                ca = Some(p);
            }
            if let (Some(c), Some(k)) = (&tls.client_cert_pem, &tls.client_key_pem) {
                let cp = dir.path().join("client-cert.pem");
                let kp = dir.path().join("client-key.pem");
                write_private(&cp, c).map_err(io)?;
                write_private(&kp, k).map_err(io)?;
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
        let defaults_file = dir.path().join("client.cnf");
        write_private(&defaults_file, cnf.as_bytes()).map_err(io)?;
        Ok(ClientFiles {
            dir,
            defaults_file,
            ca,
            cert,
            key,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argument that must come first on a client's command line.
    pub fn defaults_arg(&self) -> String {
        format!("--defaults-file={}", self.defaults_file.display())
    }
}

/// Facts about a server we connected to.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub is_mariadb: bool,
}

/// Opens a native connection (for checks and for the native dump), with the same TLS rules as
/// the clients: a CA means the server must verify.
pub fn connect(spec: &ConnSpec, files: &ClientFiles) -> Result<mysql::Conn, DbError> {
    spec.resolve()?;
    let mut b = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(spec.host.clone()))
        .tcp_port(spec.port)
        .user(Some(spec.user.clone()))
        .pass(Some(spec.password.clone()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)));
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
        match connect(spec, files) {
            Ok(mut c) => {
                let version: String = c
                    .query_first("SELECT VERSION()")
                    .map_err(|e| classify(spec, &e))?
                    .unwrap_or_default();
                let is_mariadb = version.to_ascii_lowercase().contains("mariadb");
                return Ok(ServerInfo {
                    version,
                    is_mariadb,
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
    use std::os::unix::fs::PermissionsExt;

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
        assert_eq!(mode(f.dir()), 0o700);
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
        let dir = f.dir().to_path_buf();
        drop(f);
        assert!(!dir.exists(), "removed on drop");
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
