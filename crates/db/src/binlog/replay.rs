//! Replaying archived segments into a server, up to an exact transaction (pitr.md §2, §4).
//!
//! Both ways cut each segment with its index: a segment's head (`\xfebin`, the format
//! description, the artificial Rotate) is always kept, then only the bytes between the end of
//! the last transaction the base already holds and the end of the stop transaction. The
//! server never sees a transaction outside the plan, whatever the replay tool's own
//! position options would do.
//!
//! - [`Trim`]: the cut, as a `Write` adapter the repository streams a segment into.
//! - [`pipe_segment`]: the portable way, `mariadb-binlog - | mariadb` (MySQL archives:
//!   MySQL's `mysqlbinlog - | mysql`), for any target.
//! - [`RelayServer`]: the fast way when coffer owns the data directory: a private `mariadbd`
//!   on it whose SQL thread applies the segments placed as relay logs. MariaDB only.

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use coffer_api::gtid::{Flavour, GtidState};
use mysql::prelude::Queryable;

use super::event::HEADER_LEN;
use crate::{
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    DbError, LoadSink,
};

/// Which bytes of a segment to keep after its head: `[from, to)` (offsets in the segment;
/// `from` none: from the first event after the head; `to` none: to the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// Passes a segment's head and the [`Cut`]'s range to `inner`, drops the rest.
pub struct Trim<W: Write> {
    inner: W,
    cut: Cut,
    /// Bytes seen so far.
    pos: u64,
    /// The head while its length is not known yet.
    head: Vec<u8>,
    head_len: Option<u64>,
}

impl<W: Write> Trim<W> {
    pub fn new(inner: W, cut: Cut) -> Self {
        Trim {
            inner,
            cut,
            pos: 0,
            head: Vec::new(),
            head_len: None,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The head's length once the magic, the format description and the Rotate were seen.
    fn find_head(&self) -> Option<u64> {
        let size_at = |off: usize| -> Option<u64> {
            let b = self.head.get(off + 9..off + 13)?;
            Some(u64::from(u32::from_le_bytes(b.try_into().ok()?)))
        };
        let fde = size_at(4)?;
        let rotate_at = 4 + fde as usize;
        let rotate = size_at(rotate_at)?;
        let len = 4 + fde + rotate;
        // The whole head is buffered before any of it is passed on.
        if rotate < HEADER_LEN as u64 || (self.head.len() as u64) < len {
            return None;
        }
        Some(len)
    }

    fn emit_range(&mut self, start: u64, b: &[u8]) -> io::Result<()> {
        // `b` holds the segment's bytes [start, start + len).
        let head = self.head_len.unwrap_or(0);
        let from = self.cut.from.unwrap_or(head).max(head);
        let to = self.cut.to.unwrap_or(u64::MAX);
        let end = start + b.len() as u64;
        let (lo, hi) = (start.max(from), end.min(to));
        if lo < hi {
            self.inner
                .write_all(&b[(lo - start) as usize..(hi - start) as usize])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Trim<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.head_len.is_none() {
            self.head.extend_from_slice(b);
            self.pos += b.len() as u64;
            let Some(len) = self.find_head() else {
                if self.head.len() > 1 << 20 {
                    return Err(io::Error::other(
                        "the segment does not start with a format description and a Rotate",
                    ));
                }
                return Ok(b.len());
            };
            self.head_len = Some(len);
            let buffered = std::mem::take(&mut self.head);
            self.inner.write_all(&buffered[..len as usize])?;
            self.emit_range(len, &buffered[len as usize..])?;
            return Ok(b.len());
        }
        let start = self.pos;
        self.pos += b.len() as u64;
        self.emit_range(start, b)?;
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The program that decodes a segment into SQL, and which server family's binlogs it reads.
#[derive(Debug, Clone)]
pub struct BinlogTool {
    pub path: PathBuf,
    pub flavour: Flavour,
    /// MySQL: leave the transactions' `SET GTID_NEXT` out (`--skip-gtids`), for a target
    /// whose `gtid_mode` is not ON (it refuses them).
    pub skip_gtids: bool,
}

/// Where `scripts/install-mysql.sh` puts MySQL's `mysqlbinlog` (a wrapper running it
/// through its own libraries).
pub const MYSQL_PREFIX_BINLOG: &str = "/opt/coffer-mysql/bin/mysqlbinlog";

/// The decoder for segments of `flavour`:
/// - MariaDB: `COFFER_MARIADB_BINLOG`, else `mariadb-binlog` (or `mysqlbinlog`) on PATH;
/// - MySQL: `COFFER_MYSQLBINLOG`, else [`MYSQL_PREFIX_BINLOG`], else `mysqlbinlog` on PATH.
///
/// Each family's decoder misreads the other's events (MariaDB's GTID events are 162, MySQL's
/// 33; Debian's `/usr/bin/mysqlbinlog` is MariaDB's), so the program found is asked who it is
/// and refused when it is the other family's.
pub fn binlog_tool(flavour: Flavour) -> Result<BinlogTool, DbError> {
    let (env, found) = match flavour {
        Flavour::MariaDb => (
            "COFFER_MARIADB_BINLOG",
            on_path(&["mariadb-binlog", "mysqlbinlog"]),
        ),
        Flavour::MySql => (
            "COFFER_MYSQLBINLOG",
            Some(PathBuf::from(MYSQL_PREFIX_BINLOG))
                .filter(|p| p.is_file())
                .or_else(|| on_path(&["mysqlbinlog"])),
        ),
    };
    let path = match std::env::var_os(env).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => found.ok_or_else(|| {
            DbError::Local(match flavour {
                Flavour::MariaDb => "mariadb-binlog is not on PATH: a point-in-time restore \
                    replays the archive with it; install the MariaDB client (Debian: apt-get \
                    install mariadb-client) or set COFFER_MARIADB_BINLOG"
                    .into(),
                Flavour::MySql => format!(
                    "MySQL's mysqlbinlog is neither at {MYSQL_PREFIX_BINLOG} nor on PATH: a \
                     point-in-time restore of a MySQL archive replays it with MySQL's own \
                     mysqlbinlog; install it (scripts/install-mysql.sh, or the MySQL client \
                     package) or set COFFER_MYSQLBINLOG"
                ),
            })
        })?,
    };
    let help = Command::new(&path)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| DbError::Local(format!("cannot run {} --help: {e}", path.display())))?;
    let help = String::from_utf8_lossy(&help.stdout);
    if !help.contains("binary log") {
        return Err(DbError::Local(format!(
            "{} --help does not describe a binlog decoder (it printed {} bytes): set {env} to \
             {flavour}'s",
            path.display(),
            help.len()
        )));
    }
    let family = tool_flavour(&help);
    if family != flavour {
        return Err(DbError::Local(format!(
            "{} is {family}'s binlog decoder, but the archive holds {flavour} binlogs, which \
             it cannot decode; set {env} to {flavour}'s {}",
            path.display(),
            match flavour {
                Flavour::MariaDb => "mariadb-binlog",
                Flavour::MySql => "mysqlbinlog (e.g. /opt/coffer-mysql/bin/mysqlbinlog)",
            }
        )));
    }
    Ok(BinlogTool {
        path,
        flavour,
        skip_gtids: false,
    })
}

/// Whose `mysqlbinlog` printed this `--help`: MariaDB's names MariaDB in its description
/// ("Dumps a MariaDB binary log", its option groups); MySQL's never does. (`--version` is
/// no help: MariaDB's says only "Ver 3.5".)
pub fn tool_flavour(help: &str) -> Flavour {
    if help.contains("MariaDB") {
        Flavour::MariaDb
    } else {
        Flavour::MySql
    }
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    names
        .iter()
        .find_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
}

/// Replays one segment through the binlog decoder into the client behind `sink`: `feed`
/// writes the segment (a thread streams it into the decoder's stdin, cut by `cut`), the
/// decoded SQL goes to `sink`. Nothing is staged on disk.
///
/// MariaDB: `--skip-gtid-strict-mode`, the continuity was checked on the index (pitr.md §2;
/// 10.11's default strict mode refuses replays across files). MySQL's `mysqlbinlog` has no
/// such check (and no such option); its output sets `GTID_NEXT` per transaction, so the
/// target records the replayed GTIDs in its own `gtid_executed`.
pub fn pipe_segment(
    tool: &BinlogTool,
    sink: &mut LoadSink,
    cut: Cut,
    feed: impl FnOnce(&mut dyn Write) -> io::Result<u64> + Send + 'static,
) -> Result<u64, DbError> {
    let name = match tool.flavour {
        Flavour::MariaDb => "mariadb-binlog",
        Flavour::MySql => "mysqlbinlog",
    };
    let mut cmd = Command::new(&tool.path);
    cmd.arg("--no-defaults");
    match tool.flavour {
        Flavour::MariaDb => {
            cmd.arg("--skip-gtid-strict-mode");
        }
        Flavour::MySql if tool.skip_gtids => {
            cmd.arg("--skip-gtids");
        }
        Flavour::MySql => {}
    }
    cmd.arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_bound(cmd)
        .map_err(|e| DbError::Local(format!("cannot start {}: {e}", tool.path.display())))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = StderrTail::start(name, child.stderr.take().expect("piped"));
    let feeder = std::thread::Builder::new()
        .name("segment-feed".into())
        .spawn(move || {
            let mut t = Trim::new(stdin, cut);
            let r = feed(&mut t);
            drop(t.into_inner());
            r
        })
        .map_err(|e| DbError::Local(format!("cannot start a thread: {e}")))?;
    let copied = io::copy(&mut stdout, sink);
    drop(stdout);
    let fed = feeder
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the segment feeder panicked")));
    let status = child
        .wait()
        .map_err(|e| DbError::Local(format!("cannot wait for {name}: {e}")))?;
    let said = stderr.finish();
    let fail = |reason: String| DbError::Local(format!("replaying a segment failed: {reason}"));
    if !status.success() {
        return Err(fail(format!("{name} {}: {said}", describe_exit(status))));
    }
    fed.map_err(|e| fail(format!("reading the segment: {e}")))?;
    copied.map_err(|e| fail(format!("the client stopped taking the replayed SQL: {e}")))
}

/// A private `mariadbd` on a prepared data directory: no network, its own socket, a
/// server_id different from every source's (pitr.md §4 trap 4: with the source's id the SQL
/// thread skips every event yet advances `gtid_slave_pos`), binlog off, a temporary account
/// created by `--init-file` (the restored accounts' passwords are not coffer's to know) and
/// dropped before it stops.
pub struct RelayServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    datadir: PathBuf,
    password: String,
    conn: Option<mysql::Conn>,
    label: String,
}

/// How the SQL thread applies.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    pub server_id: u32,
    pub parallel_threads: u32,
}

pub const RELAY_BASE: &str = "coffer-relay";
const USER: &str = "coffer_replay";

impl RelayServer {
    /// The relay log file `n` (1-based) in `datadir`: where a segment is placed before
    /// [`start`](Self::start).
    pub fn relay_path(datadir: &Path, n: usize) -> PathBuf {
        datadir.join(format!("{RELAY_BASE}.{n:06}"))
    }

    /// Writes the relay log index naming files `1..=count` (placed with
    /// [`relay_path`](Self::relay_path)).
    pub fn write_index(datadir: &Path, count: usize) -> io::Result<()> {
        let mut text = String::new();
        for n in 1..=count {
            text.push_str(&format!("./{RELAY_BASE}.{n:06}\n"));
        }
        std::fs::write(datadir.join(format!("{RELAY_BASE}.index")), text)
    }

    pub fn start(datadir: &Path, opts: RelayOptions, label: &str) -> Result<RelayServer, DbError> {
        let fail = |reason: String| DbError::Physical {
            target: label.to_string(),
            reason,
        };
        let mariadbd = match std::env::var_os("COFFER_MARIADBD") {
            Some(p) => PathBuf::from(p),
            None => on_path(&["mariadbd", "mysqld"]).ok_or_else(|| {
                fail(
                    "mariadbd is not installed here: the relay-log replay runs it on the \
                      restored data directory"
                        .into(),
                )
            })?,
        };
        let dir = tempfile::Builder::new()
            .prefix("coffer-replay-")
            .tempdir_in(short_tmp())
            .map_err(|e| fail(format!("cannot create a temporary directory: {e}")))?;
        let password = random_hex(24);
        let init = dir.path().join("init.sql");
        write_private(
            &init,
            &format!(
                "CREATE OR REPLACE USER {USER}@localhost IDENTIFIED BY '{password}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO {USER}@localhost;\n"
            ),
        )
        .map_err(|e| fail(format!("cannot write {}: {e}", init.display())))?;
        let socket = dir.path().join("s");
        let mut cmd = Command::new(&mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--init-file={}", init.display()))
            .arg("--skip-networking")
            .arg("--skip-slave-start")
            .arg("--wsrep-on=OFF")
            .arg("--event-scheduler=OFF")
            .arg(format!("--server-id={}", opts.server_id))
            .arg(format!("--relay-log={RELAY_BASE}"))
            .arg(format!("--relay-log-index={RELAY_BASE}.index"))
            .arg("--relay-log-purge=0")
            .arg("--slave-parallel-mode=optimistic")
            .arg(format!(
                "--slave-parallel-threads={}",
                opts.parallel_threads
            ))
            // The server is private and its data directory is staging: a crash discards it
            // (the target is replaced only after a clean finish), so neither the redo log's
            // flush at every commit nor the doublewrite buffer protects anything here
            // (measured: about a quarter of the replay time, scripts/bench-replay.sh).
            .arg("--innodb-flush-log-at-trx-commit=0")
            .arg("--innodb-doublewrite=0")
            .arg("--max-allowed-packet=1G")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--user=root");
        }
        let child = spawn_bound(cmd)
            .map_err(|e| fail(format!("cannot start {}: {e}", mariadbd.display())))?;
        let mut s = RelayServer {
            child: Some(child),
            dir,
            datadir: datadir.to_path_buf(),
            password,
            conn: None,
            label: label.to_string(),
        };
        let t = Instant::now();
        let conn = loop {
            let opts = mysql::OptsBuilder::new()
                .socket(Some(socket.display().to_string()))
                .user(Some(USER))
                .pass(Some(s.password.clone()))
                .prefer_socket(true);
            match mysql::Conn::new(opts) {
                Ok(c) => break c,
                Err(e) => {
                    let exited = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    if let Some(status) = exited {
                        return Err(s.failed(format!(
                            "mariadbd on {} {}",
                            datadir.display(),
                            describe_exit(status)
                        )));
                    }
                    if t.elapsed() > Duration::from_secs(300) {
                        return Err(s.failed(format!(
                            "mariadbd on {} did not accept connections in 300 s: {e}",
                            datadir.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        s.conn = Some(conn);
        Ok(s)
    }

    /// The server's error log tail, for a message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn failed(&self, reason: String) -> DbError {
        DbError::Physical {
            target: self.label.clone(),
            reason: format!("{reason}; its error log ends with:\n{}", self.log_tail()),
        }
    }

    fn q(&mut self, sql: &str) -> Result<(), DbError> {
        let r = self.conn.as_mut().expect("connected").query_drop(sql);
        r.map_err(|e| self.failed(format!("`{}` failed: {e}", first_words(sql))))
    }

    fn status(&mut self) -> Result<SlaveStatus, DbError> {
        let r = self
            .conn
            .as_mut()
            .expect("connected")
            .query_first::<mysql::Row, _>("SHOW SLAVE STATUS");
        let row = r
            .map_err(|e| self.failed(format!("SHOW SLAVE STATUS failed: {e}")))?
            .ok_or_else(|| self.failed("SHOW SLAVE STATUS is empty".into()))?;
        let get = |name: &str| -> String {
            row.columns_ref()
                .iter()
                .position(|c| c.name_str() == name)
                .and_then(|i| row.as_ref(i))
                .map(|v| match v {
                    mysql::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    mysql::Value::Int(i) => i.to_string(),
                    mysql::Value::UInt(u) => u.to_string(),
                    mysql::Value::NULL => String::new(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        Ok(SlaveStatus {
            sql_running: get("Slave_SQL_Running"),
            errno: get("Last_SQL_Errno").parse().unwrap_or(0),
            error: get("Last_SQL_Error"),
            master_file: get("Relay_Master_Log_File"),
            master_pos: get("Exec_Master_Log_Pos").parse().unwrap_or(0),
        })
    }

    fn gtid_slave_pos(&mut self) -> Result<GtidState, DbError> {
        let r = self
            .conn
            .as_mut()
            .expect("connected")
            .query_first::<Option<String>, _>("SELECT @@GLOBAL.gtid_slave_pos");
        let text = r
            .map_err(|e| self.failed(format!("reading gtid_slave_pos failed: {e}")))?
            .flatten()
            .unwrap_or_default();
        text.parse()
            .map_err(|e| self.failed(format!("gtid_slave_pos `{text}`: {e}")))
    }

    /// Applies the relay logs placed as files `1..=count` with the SQL thread alone
    /// (`MASTER_USE_GTID=no`, positioned by file: pitr.md §4 traps 2 and 3), until the
    /// source position `until` (file, end of the stop transaction); waits until the thread
    /// stopped there, checks it stopped without error with `stop` in `gtid_slave_pos`, then
    /// records `reached` as `gtid_slave_pos` and removes the replica configuration.
    pub fn apply(
        &mut self,
        until: Option<(&str, u64)>,
        stop: &GtidState,
        reached: &GtidState,
    ) -> Result<(), DbError> {
        super::require_mariadb("the relay-log replay", stop)?;
        super::require_mariadb("the relay-log replay", reached)?;
        self.q(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='none', \
             MASTER_USE_GTID=no, RELAY_LOG_FILE='{RELAY_BASE}.000001', RELAY_LOG_POS=4"
        ))?;
        match until {
            Some((file, pos)) => self.q(&format!(
                "START SLAVE SQL_THREAD UNTIL MASTER_LOG_FILE='{}', MASTER_LOG_POS={pos}",
                file.replace('\'', "''")
            ))?,
            None => self.q("START SLAVE SQL_THREAD")?,
        }
        let t = Instant::now();
        let mut last_progress = (String::new(), 0u64, Instant::now());
        loop {
            let st = self.status()?;
            if st.errno != 0 {
                let _ = self.q("STOP SLAVE");
                return Err(self.failed(format!(
                    "the SQL thread stopped with error {} at {}:{}: {}",
                    st.errno, st.master_file, st.master_pos, st.error
                )));
            }
            let pos = self.gtid_slave_pos()?;
            let done = pos.covers(stop);
            if st.sql_running != "Yes" || done {
                if !done {
                    return Err(self.failed(format!(
                        "the SQL thread stopped at {}:{} with gtid_slave_pos `{pos}`, before \
                         the target `{stop}`",
                        st.master_file, st.master_pos
                    )));
                }
                break;
            }
            if (st.master_file.clone(), st.master_pos) != (last_progress.0.clone(), last_progress.1)
            {
                last_progress = (st.master_file.clone(), st.master_pos, Instant::now());
            } else if last_progress.2.elapsed() > Duration::from_secs(600) {
                let _ = self.q("STOP SLAVE");
                return Err(self.failed(format!(
                    "the SQL thread made no progress for 10 minutes at {}:{} (gtid_slave_pos \
                     `{pos}`, target `{stop}`)",
                    st.master_file, st.master_pos
                )));
            }
            std::thread::sleep(Duration::from_millis(if t.elapsed().as_secs() < 5 {
                50
            } else {
                250
            }));
        }
        // Stopped by UNTIL, or caught up without it: stop it for the settings below.
        self.q("STOP SLAVE")?;
        let pos = self.gtid_slave_pos()?;
        // Nothing beyond the target was applied in any replayed domain.
        for (d, g) in &stop.0 {
            if pos.0.get(d) != Some(g) {
                return Err(self.failed(format!(
                    "after the replay gtid_slave_pos is `{pos}`, not the target {g} in domain {d}"
                )));
            }
        }
        self.q("RESET SLAVE ALL")?;
        self.q(&format!("SET GLOBAL gtid_slave_pos = '{reached}'"))?;
        Ok(())
    }

    /// Drops the temporary account and shuts the server down cleanly (the data directory is
    /// then ready for its real server).
    pub fn shutdown(mut self) -> Result<(), DbError> {
        self.q(&format!("DROP USER IF EXISTS {USER}@localhost"))?;
        let _ = self
            .conn
            .as_mut()
            .expect("connected")
            .query_drop("SHUTDOWN");
        self.conn = None;
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    return Err(self.failed(format!("mariadbd {}", describe_exit(status))))
                }
                Ok(None) if t.elapsed() < Duration::from_secs(300) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    terminate(&mut child);
                    return Err(self.failed("mariadbd did not shut down in 300 s".into()));
                }
            }
        }
        // Leftovers of the replica configuration, if RESET SLAVE ALL kept any.
        for f in std::fs::read_dir(&self.datadir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(RELAY_BASE) || name == "master.info" || name == "relay-log.info" {
                let _ = std::fs::remove_file(f.path());
            }
        }
        Ok(())
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        self.conn = None;
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

struct SlaveStatus {
    sql_running: String,
    errno: u32,
    error: String,
    master_file: String,
    master_pos: u64,
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A directory short enough for a Unix socket path.
fn short_tmp() -> PathBuf {
    let scratch = crate::process::scratch_dir();
    if scratch.as_os_str().len() < 60 {
        scratch
    } else {
        PathBuf::from("/tmp")
    }
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // Never reached on Linux; the account lives only while the private server runs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        return format!("{t:x}{}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(size: u32, fill: u8) -> Vec<u8> {
        let mut e = vec![fill; size as usize];
        e[9..13].copy_from_slice(&size.to_le_bytes());
        e
    }

    #[test]
    fn a_binlog_decoder_is_known_by_its_help() {
        let cases = [
            // Debian's /usr/bin/mysqlbinlog is MariaDB's, and its --version says only "3.5".
            (
                "mysqlbinlog Ver 3.5 for debian-linux-gnu at x86_64\nCopyright (c) 2000, 2018, \
                 Oracle, MariaDB Corporation Ab and others.\n\nDumps a MariaDB binary log",
                Flavour::MariaDb,
            ),
            (
                "mysqlbinlog  Ver 9.7.4-2 for Linux on x86_64 ((Debian))\nCopyright (c) 2000, \
                 2026, Oracle and/or its affiliates.\n\nDumps a MySQL binary log",
                Flavour::MySql,
            ),
            ("", Flavour::MySql),
        ];
        for (help, want) in cases {
            assert_eq!(tool_flavour(help), want, "{help}");
        }
    }

    #[test]
    fn trim_keeps_the_head_and_the_range_whatever_the_write_sizes() {
        let mut seg = b"\xfebin".to_vec();
        seg.extend(ev(100, 1)); // FDE
        seg.extend(ev(47, 2)); // Rotate
        let head = seg.len();
        for i in 0..10 {
            seg.extend(ev(30, 10 + i));
        }
        let cut = Cut {
            from: Some(head as u64 + 60),
            to: Some(head as u64 + 150),
        };
        let mut want = seg[..head].to_vec();
        want.extend_from_slice(&seg[head + 60..head + 150]);
        for chunk in [1, 7, 23, 151, 10_000] {
            let mut t = Trim::new(Vec::new(), cut);
            for c in seg.chunks(chunk) {
                t.write_all(c).unwrap();
            }
            assert_eq!(t.into_inner(), want, "chunk {chunk}");
        }
        let mut t = Trim::new(Vec::new(), Cut::default());
        t.write_all(&seg).unwrap();
        assert_eq!(t.into_inner(), seg);
    }
}
