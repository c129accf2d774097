//! Throwaway MySQL (Oracle MySQL 9) servers, for the MySQL side of coffer.
//!
//! The binaries come from `scripts/install-mysql.sh`, which unpacks Debian sid's MySQL
//! packages and their libraries into a private prefix (`/opt/coffer-mysql`) and writes
//! wrappers (`PREFIX/bin/mysqld`, `mysqlbinlog`, `mysql`) that run them through that
//! prefix's own loader. Everything else mirrors [`MariaDb`](crate::MariaDb): temporary
//! directory, free loopback port, socket beside the datadir, parent-death signal, error
//! log tail in failures, stop on drop.
//!
//! Every server is a GTID binlog source (`gtid_mode=ON`, `log_bin=mysql-bin`, ROW,
//! `binlog_checksum=CRC32`, `server_id=1` unless overridden), and its binlog starts
//! clean: the harness's own account set-up is not logged, so `@@gtid_executed` is empty
//! when [`MysqlServer::start`] returns.

use crate::mariadb::{
    abbreviate, arg, is_root, keep_dirs, probe_handshake, query_strings, sql_string,
};
use crate::process;
use anyhow::{anyhow, bail, Context, Result};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(30);
const INIT_TIMEOUT: Duration = Duration::from_secs(180);
const LOG_TAIL_LINES: usize = 40;
const SIZE_ARGS: [&str; 1] = ["--innodb-buffer-pool-size=64M"];

/// Options for [`MysqlServer::start_with`].
#[derive(Default, Clone, Debug)]
pub struct MysqlOptions {
    /// Appended to the `mysqld` command line after the harness's own options, so they
    /// override them (e.g. `--server-id=2`, `--gtid-mode=OFF`).
    pub extra_args: Vec<String>,
}

/// A MySQL server of its own: fresh datadir (`mysqld --initialize-insecure`) in a
/// temporary directory, bound to 127.0.0.1 on a free port, socket in the same
/// directory. Stopped (SIGTERM, then SIGKILL after 30 s) and its directory removed on
/// `Drop`; `COFFER_TESTKIT_KEEP=1` keeps the directory.
///
/// Accounts: `root@localhost` and `root@'%'` (ALL PRIVILEGES WITH GRANT OPTION) with a
/// random password ([`root_password`](Self::root_password)), authenticated with MySQL
/// 9's default `caching_sha2_password`.
///
/// The accessors have the same names and meaning as [`MariaDb`](crate::MariaDb)'s, so
/// helpers that build AppBindings and Secrets from `host()`, `port()` and
/// `root_password()` work for both.
pub struct MysqlServer {
    child: Option<Child>,
    mysqld: PathBuf,
    port: u16,
    password: String,
    datadir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    defaults_file: PathBuf,
    args: Vec<OsString>,
    // Last, so that the directory outlives the server in drop order.
    dir: Option<tempfile::TempDir>,
}

impl MysqlServer {
    /// Where `scripts/install-mysql.sh` installs by default.
    pub const DEFAULT_PREFIX: &'static str = "/opt/coffer-mysql";

    /// The `mysqld` to run: `COFFER_MYSQLD` if set, else `/opt/coffer-mysql/bin/mysqld`
    /// (the wrapper `scripts/install-mysql.sh` writes). Errors when it is not there.
    pub fn binary() -> Result<PathBuf> {
        let bin = std::env::var_os("COFFER_MYSQLD")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(Self::DEFAULT_PREFIX).join("bin/mysqld"));
        if crate::is_executable(&bin) {
            Ok(bin)
        } else {
            Err(anyhow!(
                "MySQL server {} not found or not executable: run scripts/install-mysql.sh \
                 (or set COFFER_MYSQLD to a mysqld)",
                bin.display()
            ))
        }
    }

    /// Starts a server with the default options.
    pub fn start() -> Result<MysqlServer> {
        Self::start_with(MysqlOptions::default())
    }

    /// Starts a server with the given options.
    pub fn start_with(opts: MysqlOptions) -> Result<MysqlServer> {
        let mysqld = Self::binary()?;
        let dir = tempfile::Builder::new()
            .prefix("coffer-mysql-")
            .tempdir()
            .context("create a temporary directory for MySQL")?;
        let root = dir.path().to_path_buf();
        let datadir = root.join("data");
        let socket = root.join("mysqld.sock");
        let tmpdir = root.join("tmp");
        // mysqld refuses to start when secure_file_priv names a missing directory, and
        // its compiled-in default (/var/lib/mysql-files) does not exist here.
        let files = root.join("files");
        if socket.as_os_str().len() > 100 {
            bail!(
                "MySQL socket path {} is too long for a Unix socket; set TMPDIR to a shorter directory",
                socket.display()
            );
        }
        for d in [&tmpdir, &files] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }

        let mut common: Vec<OsString> = vec!["--no-defaults".into()];
        common.extend(share_args(&mysqld));
        common.push(arg("--datadir=", &datadir));
        common.push(arg("--tmpdir=", &tmpdir));
        if is_root() {
            common.push("--user=root".into());
        }
        common.extend(SIZE_ARGS.iter().map(OsString::from));
        initialize(&mysqld, &common, &root.join("init.log"))?;

        let port = crate::free_port();
        let error_log = root.join("error.log");
        let mut args = common;
        args.extend([
            arg("--socket=", &socket),
            format!("--port={port}").into(),
            format!("--bind-address={HOST}").into(),
            arg("--pid-file=", &root.join("mysqld.pid")),
            arg("--log-error=", &error_log),
            arg("--secure-file-priv=", &files),
        ]);
        args.extend(
            [
                // No X Protocol listener: it would take a second port (33060) that
                // concurrent servers would fight over.
                "--mysqlx=OFF",
                "--skip-name-resolve",
                "--max-allowed-packet=256M",
                "--gtid-mode=ON",
                "--enforce-gtid-consistency=ON",
                // Named explicitly: a bare --log-bin names the files after the host.
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--binlog-checksum=CRC32",
                "--server-id=1",
            ]
            .iter()
            .map(OsString::from),
        );
        args.extend(opts.extra_args.iter().map(OsString::from));

        let mut db = MysqlServer {
            child: None,
            mysqld,
            port,
            password: crate::random_hex(16),
            datadir,
            socket,
            error_log,
            defaults_file: root.join("client.cnf"),
            args,
            dir: Some(dir),
        };
        // Another process may grab the port between free_port() and mysqld's bind().
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

    /// `"mysql://127.0.0.1:PORT/"` (no credentials).
    pub fn url(&self) -> String {
        format!("mysql://{HOST}:{}/", self.port)
    }

    /// Connection options for root over TCP (no TLS). Adjust and pass to
    /// `mysql::Conn::new`.
    pub fn opts(&self) -> OptsBuilder {
        OptsBuilder::new()
            .ip_or_hostname(Some(HOST))
            .tcp_port(self.port)
            .user(Some("root"))
            .pass(Some(self.password.clone()))
            // The mysql crate otherwise switches loopback TCP connections to the
            // server's Unix socket.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
    }

    /// A new connection as root over TCP.
    pub fn conn(&self) -> Result<Conn> {
        Conn::new(self.opts()).map_err(|e| {
            anyhow!(
                "connect to MySQL at {HOST}:{} as root: {e}\n--- error log tail ---\n{}",
                self.port,
                self.log_tail()
            )
        })
    }

    /// Runs SQL (several `;`-separated statements are fine) as root on a new connection.
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

    /// The server's Unix socket (outside the datadir).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// An option file with a `[client]` group (user, password, host, port,
    /// protocol=TCP) for the `mysql`/`mysqlbinlog` CLIs: `--defaults-extra-file=PATH`.
    pub fn defaults_file(&self) -> &Path {
        &self.defaults_file
    }

    /// The temporary directory holding datadir, socket and logs.
    pub fn dir(&self) -> &Path {
        self.datadir.parent().expect("datadir has a parent")
    }

    /// The `mysqld` wrapper this server runs; `mysqlbinlog` and `mysql` wrappers sit
    /// beside it when it came from `scripts/install-mysql.sh`.
    pub fn mysqld(&self) -> &Path {
        &self.mysqld
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

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

    /// SIGKILL, for crash tests. No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child);
        }
    }

    /// Stops the server (if running) and starts it again on the same datadir and port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// The last ~40 lines of the error log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.error_log, LOG_TAIL_LINES)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        // The wrapper execs the loader, so the child's pid (and process group) is
        // mysqld's own, and SIGTERM reaches it directly.
        let mut cmd = Command::new(&self.mysqld);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = process::spawn(cmd, "mysqld")?;
        let child = self.child.insert(child);
        let port = self.port;
        let what = format!("mysqld on {HOST}:{port}");
        let ready = process::wait_until(child, &what, READY_TIMEOUT, || {
            match probe_handshake(port) {
                // Until root@'%' exists, MySQL answers a TCP connection from 127.0.0.1
                // with error 1130 instead of a greeting (--skip-name-resolve: 127.0.0.1
                // is not "localhost", and --initialize creates only root@localhost).
                // That answer, too, means the server is up.
                Err(e) if e.to_string().contains("is not allowed to connect") => Ok(Some(())),
                other => other,
            }
        });
        if let Err(e) = ready {
            let e = self.failure(e);
            self.kill();
            return Err(e);
        }
        Ok(())
    }

    /// Sets root's password and adds root@'%', over the Unix socket (root@localhost has
    /// no password after --initialize-insecure). With sql_log_bin off, so none of it
    /// reaches the binlog or @@gtid_executed: tests count their own transactions.
    fn secure_accounts(&self) -> Result<()> {
        let opts = OptsBuilder::new()
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .user(Some("root"));
        let mut conn = Conn::new(opts).context("connect as root over the Unix socket")?;
        let pw = sql_string(&self.password);
        conn.query_drop(format!(
            "SET SESSION sql_log_bin = 0; \
             ALTER USER root@localhost IDENTIFIED BY {pw}; \
             CREATE USER root@'%' IDENTIFIED BY {pw}; \
             GRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION; \
             GRANT PROXY ON ''@'' TO root@'%' WITH GRANT OPTION"
        ))?;
        Ok(())
    }

    fn write_defaults_file(&self) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = format!(
            "[client]\nuser=root\npassword={}\nhost={HOST}\nport={}\nprotocol=TCP\n",
            self.password, self.port
        );
        // It holds the password: 0600.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.defaults_file)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("write {}", self.defaults_file.display()))
    }

    fn failure(&self, e: anyhow::Error) -> anyhow::Error {
        let cmdline: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        anyhow!(
            "{e:#}\ncommand: {} {}\n--- {} (tail) ---\n{}",
            self.mysqld.display(),
            cmdline.join(" "),
            self.error_log.display(),
            self.log_tail()
        )
    }
}

impl Drop for MysqlServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coffer-testkit: MySQL {HOST}:{} error log (tail) ---\n{}\n---",
                self.port,
                self.log_tail()
            );
        }
        self.stop();
        if keep_dirs() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "coffer-testkit: kept MySQL directory {}",
                    dir.keep().display()
                );
            }
        }
    }
}

impl std::fmt::Debug for MysqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlServer")
            .field("port", &self.port)
            .field("datadir", &self.datadir)
            .field("pid", &self.pid())
            .finish()
    }
}

/// `--basedir`, `--lc-messages-dir` and `--plugin-dir` inside the install prefix when
/// `mysqld` is an install-mysql.sh wrapper (`PREFIX/bin/mysqld`). Explicit, because
/// the host's `/usr/share/mysql` belongs to MariaDB, whose errmsg.sys MySQL cannot read;
/// (mysqld would derive the same paths from its own location, but a copied or moved
/// wrapper must not silently fall back to the host's files.)
fn share_args(mysqld: &Path) -> Vec<OsString> {
    let Some(prefix) = mysqld.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let usr = prefix.join("usr");
    let messages = usr.join("share/mysql");
    if !messages.join("english/errmsg.sys").is_file() {
        return Vec::new();
    }
    vec![
        arg("--basedir=", &usr),
        arg("--lc-messages-dir=", &messages),
        arg("--plugin-dir=", &usr.join("lib/mysql/plugin")),
    ]
}

/// `mysqld --initialize-insecure`: a new datadir with root@localhost and no password.
fn initialize(mysqld: &Path, common: &[OsString], log: &Path) -> Result<()> {
    let mut cmd = Command::new(mysqld);
    cmd.args(&common[..1]) // --no-defaults must come first
        .arg("--initialize-insecure")
        .args(&common[1..])
        .arg(arg("--log-error=", log))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = process::spawn(cmd, "mysqld --initialize-insecure")?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > INIT_TIMEOUT {
            process::kill(&mut child);
            bail!(
                "mysqld --initialize-insecure took over {}s\n--- {} ---\n{}",
                INIT_TIMEOUT.as_secs(),
                log.display(),
                crate::file_tail(log, LOG_TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "mysqld --initialize-insecure failed ({status})\n--- {} ---\n{}",
            log.display(),
            crate::file_tail(log, LOG_TAIL_LINES)
        );
    }
    Ok(())
}
