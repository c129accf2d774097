//! Throwaway MariaDB servers.

use crate::process;
use crate::tls::{ensure_crypto_provider, TlsMaterial};
use anyhow::{anyhow, bail, Context, Result};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, SslOpts};
use std::ffi::OsString;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(30);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);
const LOG_TAIL_LINES: usize = 40;
/// Server settings that also shape the files mariadb-install-db creates.
const SIZE_ARGS: [&str; 2] = [
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=48M",
];
/// Bump when the template's contents change, so stale cached templates are not used.
const TEMPLATE_FORMAT: u32 = 1;

/// Options for [`MariaDb::start_with`].
#[derive(Default, Clone, Debug)]
pub struct MariaDbOptions {
    /// Generate certificates ([`MariaDb::tls`]) and start the server with
    /// `--ssl-ca/--ssl-cert/--ssl-key`; [`MariaDb::conn`] then uses TLS and verifies
    /// the server against the CA.
    pub tls: bool,
    /// Start with `--require-secure-transport=ON` (TCP clients must use TLS; the
    /// Unix socket still works without it).
    pub require_secure_transport: bool,
    /// Appended to the `mariadbd` command line after the harness's own options, so
    /// they override them (e.g. `--log-bin=mysql-bin`, `--server-id=2`).
    pub extra_args: Vec<String>,
}

impl MariaDbOptions {
    /// A binlog source for replication and point-in-time tests: `log_bin`,
    /// `binlog_format=ROW`, and this `server_id` and `gtid_domain_id`.
    pub fn binlog(mut self, server_id: u32, gtid_domain_id: u32) -> Self {
        self.extra_args.extend([
            "--log-bin=mysql-bin".to_string(),
            "--binlog-format=ROW".to_string(),
            format!("--server-id={server_id}"),
            format!("--gtid-domain-id={gtid_domain_id}"),
        ]);
        self
    }

    /// Replicated transactions are written to this server's binlog too.
    pub fn log_slave_updates(mut self) -> Self {
        self.extra_args.push("--log-slave-updates=ON".to_string());
        self
    }
}

/// A MariaDB server of its own: fresh datadir in a temporary directory, bound to
/// 127.0.0.1 on a free port, socket in the same temporary directory. Stopped
/// (SIGTERM, then SIGKILL after 30 s) and its directory removed on `Drop`.
///
/// Set `COFFER_TESTKIT_KEEP=1` to keep the directory of every instance (its path is
/// printed when the instance is dropped).
///
/// Accounts: `root@localhost` and `root@'%'` (ALL PRIVILEGES WITH GRANT OPTION) with a
/// random password ([`root_password`](Self::root_password)); no other root or
/// anonymous accounts, so TCP logins as root always use `root@'%'`.
pub struct MariaDb {
    child: Option<Child>,
    port: u16,
    password: String,
    datadir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    defaults_file: PathBuf,
    args: Vec<OsString>,
    tls: Option<TlsMaterial>,
    // Last, so that the directory outlives the server in drop order.
    dir: Option<tempfile::TempDir>,
}

impl MariaDb {
    /// Starts a plain (no TLS) server.
    pub fn start() -> Result<MariaDb> {
        Self::start_with(MariaDbOptions::default())
    }

    /// Starts a server with the given options.
    pub fn start_with(opts: MariaDbOptions) -> Result<MariaDb> {
        let dir = tempfile::Builder::new()
            .prefix("coffer-mariadb-")
            .tempdir()
            .context("create a temporary directory for MariaDB")?;
        let root = dir.path().to_path_buf();
        let datadir = root.join("data");
        let socket = root.join("mysqld.sock");
        let error_log = root.join("error.log");
        let pid_file = root.join("mysqld.pid");
        let defaults_file = root.join("client.cnf");
        let tmpdir = root.join("tmp");
        if socket.as_os_str().len() > 100 {
            bail!(
                "MariaDB socket path {} is too long for a Unix socket; set TMPDIR to a shorter directory",
                socket.display()
            );
        }

        match pristine_datadir() {
            Some(template) => copy_dir(template?, &datadir)
                .context("copy the pristine MariaDB datadir template")?,
            None => install_db(&datadir, &root.join("install.log"))?,
        }

        std::fs::create_dir_all(&tmpdir).with_context(|| format!("create {}", tmpdir.display()))?;
        let tls = if opts.tls {
            Some(TlsMaterial::generate(&root.join("tls"))?)
        } else {
            None
        };

        let port = crate::free_port();
        let mut args: Vec<OsString> = vec![
            "--no-defaults".into(),
            arg("--datadir=", &datadir),
            arg("--socket=", &socket),
            format!("--port={port}").into(),
            format!("--bind-address={HOST}").into(),
            arg("--pid-file=", &pid_file),
            arg("--log-error=", &error_log),
            // A private tmpdir: servers sharing /tmp can collide on temporary-table
            // file names (seen with concurrent mariadb-install-db bootstraps).
            arg("--tmpdir=", &tmpdir),
        ];
        if is_root() {
            args.push("--user=root".into());
        }
        args.extend(SIZE_ARGS.iter().map(OsString::from));
        args.extend(
            [
                "--skip-name-resolve",
                "--event-scheduler=ON",
                "--max-allowed-packet=256M",
            ]
            .iter()
            .map(OsString::from),
        );
        if let Some(tls) = &tls {
            args.push(arg("--ssl-ca=", &tls.ca_path));
            args.push(arg("--ssl-cert=", &tls.server_cert_path));
            args.push(arg("--ssl-key=", &tls.server_key_path));
        }
        if opts.require_secure_transport {
            args.push("--require-secure-transport=ON".into());
        }
        args.extend(opts.extra_args.iter().map(OsString::from));

        let password = crate::random_hex(16);
        let mut db = MariaDb {
            child: None,
            port,
            password,
            datadir,
            socket,
            error_log,
            defaults_file,
            args,
            tls,
            dir: Some(dir),
        };
        // Another process may grab the port between free_port() and the server's
        // bind(); pick a new one then (restart() keeps the port, as documented).
        let mut attempts = 0;
        while let Err(e) = db.spawn_and_wait() {
            attempts += 1;
            if attempts >= 3 || !db.log_tail().contains("Address already in use") {
                return Err(e);
            }
            db.port = crate::free_port();
            let port_arg = OsString::from(format!("--port={}", db.port));
            for a in db
                .args
                .iter_mut()
                .filter(|a| a.to_string_lossy().starts_with("--port="))
            {
                *a = port_arg.clone();
            }
            let _ = std::fs::remove_file(&db.error_log);
        }
        db.secure_accounts()
            .map_err(|e| db.failure(e.context("set up root accounts")))?;
        db.write_defaults_file()?;
        // Prove the path every test uses: root over TCP (and TLS when enabled).
        db.conn()
            .map_err(|e| e.context("server started, but root cannot log in over TCP"))?;
        Ok(db)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Password of `root@localhost` and `root@'%'`.
    pub fn root_password(&self) -> &str {
        &self.password
    }

    /// Makes [`conn`](Self::conn), [`opts`](Self::opts) and the
    /// [`defaults_file`](Self::defaults_file) use another root password, without
    /// touching the server: for after a restore that brought another server's `mysql`
    /// schema (and so its root password) into this one.
    pub fn use_root_password(&mut self, password: &str) -> Result<()> {
        self.password = password.to_string();
        self.write_defaults_file()
    }

    /// `"mysql://127.0.0.1:PORT/"` (no credentials).
    pub fn url(&self) -> String {
        format!("mysql://{HOST}:{}/", self.port)
    }

    /// Connection options for root over TCP, with TLS and CA verification when the
    /// server has TLS. Adjust (user, db_name, ...) and pass to `mysql::Conn::new`.
    pub fn opts(&self) -> OptsBuilder {
        let mut builder = OptsBuilder::new()
            .ip_or_hostname(Some(HOST))
            .tcp_port(self.port)
            .user(Some("root"))
            .pass(Some(self.password.clone()))
            // The mysql crate otherwise switches loopback TCP connections to the
            // server's Unix socket, silently bypassing TLS.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)));
        if let Some(tls) = &self.tls {
            ensure_crypto_provider();
            builder =
                builder.ssl_opts(SslOpts::default().with_root_cert_path(Some(tls.ca_path.clone())));
        }
        builder
    }

    /// A new connection as root over TCP (TLS + CA verification when the server has TLS).
    pub fn conn(&self) -> Result<Conn> {
        Conn::new(self.opts()).map_err(|e| {
            anyhow!(
                "connect to MariaDB at {HOST}:{} as root: {e}\n--- error log tail ---\n{}",
                self.port,
                self.log_tail()
            )
        })
    }

    /// A new connection over TCP as another user (TLS + CA verification when the
    /// server has TLS), e.g. to check that restored grants work.
    pub fn conn_as(&self, user: &str, password: &str) -> Result<Conn> {
        Conn::new(self.opts().user(Some(user)).pass(Some(password)))
            .with_context(|| format!("connect to MariaDB at {HOST}:{} as {user}", self.port))
    }

    /// Runs SQL (several `;`-separated statements are fine) as root on a new connection.
    /// Every statement's error is reported, not only the first one's.
    pub fn exec(&self, sql: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let run = |conn: &mut Conn| -> mysql::Result<()> {
            let mut result = conn.query_iter(sql)?;
            while let Some(set) = result.iter() {
                for row in set {
                    row?;
                }
            }
            Ok(())
        };
        run(&mut conn).with_context(|| format!("SQL failed: {}", abbreviate(sql)))
    }

    /// Runs a query as root and returns every row of every result set as text
    /// (`None` for NULL).
    pub fn query_strings(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut conn = self.conn()?;
        query_strings(&mut conn, sql).with_context(|| format!("SQL failed: {}", abbreviate(sql)))
    }

    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The server's Unix socket (outside the datadir, so file-level copies of the
    /// datadir never see it).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server's error log.
    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// An option file with a `[client]` group (user, password, host, port,
    /// protocol=TCP and ssl-ca when TLS) for the `mariadb`/`mariadb-dump` CLIs:
    /// pass it as `--defaults-extra-file=PATH`.
    pub fn defaults_file(&self) -> &Path {
        &self.defaults_file
    }

    /// The temporary directory holding datadir, socket, logs and TLS files.
    pub fn dir(&self) -> &Path {
        self.datadir.parent().expect("datadir has a parent")
    }

    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// Process id of the running server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Clean shutdown: SIGTERM, wait up to 30 s, then SIGKILL. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, STOP_GRACE);
        }
    }

    /// SIGKILL, for crash/fault tests. No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child);
        }
    }

    /// Stops the server (if running) and starts it again on the same datadir and port.
    /// Waits for it to accept connections; does not log in, so it also works after a
    /// restore replaced the `mysql` schema (and so the root password).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// The last ~40 lines of the error log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.error_log, LOG_TAIL_LINES)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let mut cmd = Command::new(mariadbd()?);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = process::spawn(cmd, "mariadbd")?;
        let child = self.child.insert(child);
        let port = self.port;
        let what = format!("mariadbd on {HOST}:{port}");
        let ready = process::wait_until(child, &what, READY_TIMEOUT, || probe_handshake(port));
        if let Err(e) = ready {
            let e = self.failure(e);
            self.kill();
            return Err(e);
        }
        Ok(())
    }

    /// Sets the root password and replaces install-db's extra root accounts by
    /// `root@'%'`, over the Unix socket (root@localhost has no password yet).
    fn secure_accounts(&self) -> Result<()> {
        let opts = OptsBuilder::new()
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .user(Some("root"));
        let mut conn = Conn::new(opts).context("connect as root over the Unix socket")?;
        let extra: Vec<(String, String)> = conn.query(
            "SELECT User, Host FROM mysql.user \
             WHERE (User = 'root' AND Host <> 'localhost') OR User = ''",
        )?;
        for (user, host) in extra {
            conn.query_drop(format!(
                "DROP USER {}@{}",
                sql_string(&user),
                sql_string(&host)
            ))?;
        }
        let pw = sql_string(&self.password);
        conn.query_drop(format!(
            "ALTER USER root@localhost IDENTIFIED BY {pw}; \
             CREATE USER root@'%' IDENTIFIED BY {pw}; \
             GRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION; \
             GRANT PROXY ON ''@'%' TO root@'%' WITH GRANT OPTION; \
             FLUSH PRIVILEGES"
        ))?;
        Ok(())
    }

    fn write_defaults_file(&self) -> Result<()> {
        let mut text = format!(
            "[client]\nuser=root\npassword={}\nhost={HOST}\nport={}\nprotocol=TCP\n",
            self.password, self.port
        );
        if let Some(tls) = &self.tls {
            text.push_str(&format!(
                "ssl-ca={}\nssl-verify-server-cert\n",
                tls.ca_path.display()
            ));
        }
        std::fs::write(&self.defaults_file, text)
            .with_context(|| format!("write {}", self.defaults_file.display()))
    }

    /// Adds the command line and the error-log tail to a startup error.
    fn failure(&self, e: anyhow::Error) -> anyhow::Error {
        let cmdline: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        anyhow!(
            "{e:#}\ncommand: mariadbd {}\n--- {} (tail) ---\n{}",
            cmdline.join(" "),
            self.error_log.display(),
            self.log_tail()
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coffer-testkit: MariaDB {HOST}:{} error log (tail) ---\n{}\n---",
                self.port,
                self.log_tail()
            );
        }
        self.stop();
        if keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "coffer-testkit: kept MariaDB directory {}",
                    dir.keep().display()
                );
            }
        }
    }
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("port", &self.port)
            .field("datadir", &self.datadir)
            .field("tls", &self.tls.is_some())
            .field("pid", &self.pid())
            .finish()
    }
}

pub(crate) fn keep_dirs() -> bool {
    std::env::var_os("COFFER_TESTKIT_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs a query and returns all rows of all result sets as text.
pub(crate) fn query_strings(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    let mut result = conn.query_iter(sql)?;
    while let Some(set) = result.iter() {
        for row in set {
            let row = row?;
            out.push(row.unwrap().into_iter().map(value_to_string).collect());
        }
    }
    Ok(out)
}

/// Text form of a value as the server would print it (text protocol values are
/// already bytes; the other variants come from the binary protocol).
pub(crate) fn value_to_string(v: mysql::Value) -> Option<String> {
    use mysql::Value;
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// A single-quoted SQL string literal (valid with and without NO_BACKSLASH_ESCAPES
/// as long as `s` has no backslash; backslashes are escaped for the default mode).
pub(crate) fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A backquoted SQL identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub(crate) fn abbreviate(sql: &str) -> String {
    const MAX: usize = 300;
    if sql.len() <= MAX {
        return sql.to_string();
    }
    let mut end = MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &sql[..end], sql.len())
}

pub(crate) fn arg(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str());
    s
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mariadbd() -> Result<PathBuf> {
    crate::find_executable(
        "COFFER_MARIADBD",
        &["mariadbd", "mysqld"],
        &[
            "/usr/sbin/mariadbd",
            "/usr/local/sbin/mariadbd",
            "/usr/sbin/mysqld",
        ],
    )
    .ok_or_else(|| anyhow!("mariadbd not found (PATH, /usr/sbin; or set COFFER_MARIADBD)"))
}

fn install_db_binary() -> Result<PathBuf> {
    crate::find_executable(
        "COFFER_MARIADB_INSTALL_DB",
        &["mariadb-install-db", "mysql_install_db"],
        &[
            "/usr/bin/mariadb-install-db",
            "/usr/local/bin/mariadb-install-db",
        ],
    )
    .ok_or_else(|| anyhow!("mariadb-install-db not found (or set COFFER_MARIADB_INSTALL_DB)"))
}

/// Whether the server answers on the port with a MySQL protocol greeting.
pub(crate) fn probe_handshake(port: u16) -> Result<Option<()>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(anyhow!("connect to {addr}: {e}")),
    };
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .with_context(|| format!("read greeting from {addr}"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len.min(4096)];
    stream.read_exact(&mut payload)?;
    match payload.first() {
        Some(10) => Ok(Some(())),
        Some(0xff) => {
            let msg = String::from_utf8_lossy(payload.get(3..).unwrap_or(&[])).into_owned();
            Err(anyhow!("server refused the connection: {msg}"))
        }
        other => Err(anyhow!("unexpected greeting byte {other:?} from {addr}")),
    }
}

/// Runs mariadb-install-db into `datadir` (which must not exist yet), with a private
/// tmpdir next to it: concurrent bootstraps sharing /tmp fail now and then with
/// "Unknown table 'mysql.tmp_user_sys'" (their temporary tables collide).
fn install_db(datadir: &Path, log: &Path) -> Result<()> {
    let bin = install_db_binary()?;
    let tmpdir = datadir
        .parent()
        .ok_or_else(|| anyhow!("datadir {} has no parent", datadir.display()))?
        .join("tmp");
    std::fs::create_dir_all(&tmpdir).with_context(|| format!("create {}", tmpdir.display()))?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--no-defaults")
        .arg(arg("--datadir=", datadir))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg(arg("--tmpdir=", &tmpdir))
        .args(SIZE_ARGS);
    if is_root() {
        cmd.arg("--user=root");
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut child = process::spawn(cmd, "mariadb-install-db")?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > INSTALL_TIMEOUT {
            process::kill(&mut child);
            bail!(
                "mariadb-install-db took over {}s\n--- {} ---\n{}",
                INSTALL_TIMEOUT.as_secs(),
                log.display(),
                crate::file_tail(log, LOG_TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "mariadb-install-db failed ({status})\n--- {} ---\n{}",
            log.display(),
            crate::file_tail(log, LOG_TAIL_LINES)
        );
    }
    Ok(())
}

/// A datadir freshly initialised by mariadb-install-db, built once and cached under
/// the system temp directory (shared by all test processes on the machine, keyed by
/// the MariaDB binaries and the harness's install options). `None` when disabled
/// with `COFFER_TESTKIT_NO_TEMPLATE=1`.
fn pristine_datadir() -> Option<Result<&'static Path>> {
    if std::env::var_os("COFFER_TESTKIT_NO_TEMPLATE").is_some_and(|v| !v.is_empty() && v != "0") {
        return None;
    }
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let result = TEMPLATE.get_or_init(|| build_template().map_err(|e| format!("{e:#}")));
    Some(match result {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(anyhow!("{e}")),
    })
}

fn build_template() -> Result<PathBuf> {
    let key = template_key()?;
    let tmp = std::env::temp_dir();
    let final_dir = tmp.join(format!("coffer-testkit-mariadb-{key}"));
    let data = final_dir.join("data");
    let marker = final_dir.join("complete");
    if marker.exists() {
        return Ok(data);
    }
    let build = tempfile::Builder::new()
        .prefix(&format!(".coffer-testkit-mariadb-{key}-"))
        .tempdir_in(&tmp)
        .context("create a directory for the MariaDB template")?;
    install_db(
        &build.path().join("data"),
        &build.path().join("install.log"),
    )?;
    std::fs::write(build.path().join("complete"), b"ok\n")?;
    if final_dir.exists() && !marker.exists() {
        // Left over from something other than this code (which renames atomically).
        let _ = std::fs::remove_dir_all(&final_dir);
    }
    let build_path = build.keep();
    if let Err(e) = std::fs::rename(&build_path, &final_dir) {
        let _ = std::fs::remove_dir_all(&build_path);
        if !marker.exists() {
            return Err(anyhow!(e).context(format!("install template {}", final_dir.display())));
        }
        // Another process won the race; use its template.
    }
    Ok(data)
}

/// Identifies the MariaDB installation and the harness's install options.
fn template_key() -> Result<String> {
    let mut text = format!("format={TEMPLATE_FORMAT};root={};", is_root());
    text.push_str(&SIZE_ARGS.join(","));
    for bin in [mariadbd()?, install_db_binary()?] {
        let meta = std::fs::metadata(&bin).with_context(|| format!("stat {}", bin.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.push_str(&format!(";{}:{}:{mtime}", bin.display(), meta.len()));
    }
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("create {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}
