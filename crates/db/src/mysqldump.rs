//! The compatible logical source: `mysqldump` streamed straight into the repository.

use std::{
    io::Read,
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{
    client::Clients,
    conn::{ClientFiles, ConnSpec},
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    DbError,
};

/// The flags that make the compatible dump consistent and complete by default. They come
/// before the user's `args`, so a user can still turn one off (`--skip-...`).
pub const DEFAULT_FLAGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    // LOCK TABLES around a table's rows fails the restore of a table whose DEFAULT calls
    // NEXTVAL (the sequence is not among the locked tables: MariaDB error 1100).
    "--skip-add-locks",
    // Grants restored into the mysql schema take effect without a restart.
    "--flush-privileges",
    // MySQL 5.7's client defaults to 3-byte utf8, which would mangle 4-byte characters.
    "--default-character-set=utf8mb4",
];

const TRAILER: &[u8] = b"-- Dump completed";

/// The start of the dump kept for its binlog coordinates: `--master-data` writes them right
/// after the header comments, before any database (about 1.5 KiB in).
const HEAD: usize = 16 << 10;
/// The end kept for the trailer and the GTID state `--master-data` writes after the last
/// database (a few hundred bytes before the end).
const TAIL: usize = 4 << 10;

/// Called once with the dump's position when the dump has ended complete.
pub type OnPosition = Box<dyn FnOnce(crate::native::Position) + Send>;

/// What the start of a dump shows about mysqldump's snapshot: called once with the binlog
/// position mysqldump printed (with `--master-data`) as soon as a line proves that its
/// transaction has started, or when the dump ends complete. Dropped without a call when the
/// dump fails or its start shows no such line.
pub type OnSnapshot = Box<dyn FnOnce(Option<(String, u64)>) + Send>;

/// Whether the complete lines of `head` prove that mysqldump has started its consistent
/// snapshot (`Some`, with its CHANGE MASTER position where it printed one). mysqldump writes
/// its header comments (`-- MariaDB dump`, `-- Host:`, `-- Server version`) and `/*!...*/`
/// settings before it starts the transaction; anything else comes after: the CHANGE MASTER
/// line, `-- Current Database:`, `-- Table structure ...`, a statement. A comment that
/// announces the position (`-- Alternately, following is the position ...`) waits for the
/// CHANGE MASTER line after it.
pub fn snapshot_started(head: &[u8]) -> Option<Option<(String, u64)>> {
    let complete = &head[..head.iter().rposition(|b| *b == b'\n')? + 1];
    for line in complete.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        let header = line.is_empty()
            || line == "--"
            || line.starts_with("/*")
            || [
                "-- MariaDB dump",
                "-- MySQL dump",
                "-- Host:",
                "-- ---",
                "-- Server version",
            ]
            .iter()
            .any(|h| line.starts_with(h));
        if header {
            continue;
        }
        if line.contains("CHANGE MASTER TO") || line.contains("CHANGE REPLICATION SOURCE TO") {
            return Some(change_master_position(line.as_bytes()));
        }
        if line.starts_with("--") && line.to_ascii_lowercase().contains("position") {
            continue;
        }
        return Some(None);
    }
    None
}

/// The first `CHANGE MASTER TO MASTER_LOG_FILE='f', MASTER_LOG_POS=n;` line (commented with
/// `--master-data=2`), or MySQL 8.0.23+'s `CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='f',
/// SOURCE_LOG_POS=n;`. The first: it comes before any database, so no routine's body can
/// stand in for it.
pub fn change_master_position(head: &[u8]) -> Option<(String, u64)> {
    const FORMS: [(&str, &str); 2] = [
        ("CHANGE MASTER TO MASTER_LOG_FILE='", ", MASTER_LOG_POS="),
        (
            "CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='",
            ", SOURCE_LOG_POS=",
        ),
    ];
    head.split(|b| *b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let line = line.strip_prefix("-- ").unwrap_or(line);
        FORMS.iter().find_map(|(start, pos_key)| {
            let (file, rest) = line.strip_prefix(start)?.split_once('\'')?;
            let pos = rest.strip_prefix(pos_key)?.strip_suffix(';')?;
            Some((file.to_string(), pos.trim().parse().ok()?))
        })
    })
}

/// The GTID set of MySQL's `SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '<set>';` (MySQL 5.7:
/// `SET @@GLOBAL.GTID_PURGED='<set>';`), which MySQL's mysqldump writes before any database
/// when the server has GTIDs: `@@gtid_executed` at the dump's snapshot. The set may span
/// lines (one per server UUID); it is returned without them. The first: no routine's body
/// comes before it.
pub fn gtid_purged(head: &[u8]) -> Option<String> {
    const START: &[u8] = b"SET @@GLOBAL.GTID_PURGED=";
    let at = head.windows(START.len()).position(|w| w == START)?;
    // Only at the start of a line: not text inside another statement.
    if at > 0 && head[at - 1] != b'\n' {
        return None;
    }
    let rest = &head[at + START.len()..];
    // Up to the statement's end: what follows may be any bytes (a BLOB's), cut anywhere.
    let end = rest.windows(2).position(|w| w == b"';")? + 2;
    let rest = std::str::from_utf8(&rest[..end]).ok()?;
    let rest = rest.strip_prefix("/*!80000 '+'*/ ").unwrap_or(rest);
    let (set, _) = rest.strip_prefix('\'')?.split_once("';")?;
    let set: String = set.chars().filter(|c| !c.is_whitespace()).collect();
    let valid = set
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-:,_".contains(&b));
    valid.then_some(set)
}

/// The GTID state of the last `SET GLOBAL gtid_slave_pos='...';` line (commented with
/// `--master-data=2`): MariaDB's mysqldump writes it after every database, so the last one is
/// its own and not text from a routine's body. `BINLOG_GTID_POS` of the coordinates above.
pub fn deferred_gtid(tail: &[u8]) -> Option<String> {
    const START: &str = "SET GLOBAL gtid_slave_pos='";
    tail.split(|b| *b == b'\n').rev().find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let rest = line
            .strip_prefix("-- ")
            .unwrap_or(line)
            .strip_prefix(START)?;
        Some(rest.strip_suffix("';")?.to_string())
    })
}

/// mysqldump's output as a stream. Reading it to the end succeeds only when mysqldump exited
/// 0 and its output ends with the `-- Dump completed` line; otherwise the last read fails, so
/// whatever consumes it (the repository) never commits a truncated dump.
pub struct DumpStream {
    child: Child,
    stdout: ChildStdout,
    stderr: StderrTail,
    head: Vec<u8>,
    tail: Vec<u8>,
    on_position: Option<OnPosition>,
    on_snapshot: Option<OnSnapshot>,
    bytes: Arc<AtomicU64>,
    finished: bool,
    target: String,
    _files: Arc<ClientFiles>,
}

impl DumpStream {
    /// Starts mysqldump with the default flags followed by `args` (Stash's task param, e.g.
    /// `--all-databases` or `--databases a b`).
    pub fn start(
        clients: &Clients,
        spec: &ConnSpec,
        files: Arc<ClientFiles>,
        args: &[String],
    ) -> Result<DumpStream, DbError> {
        let mut cmd = Command::new(&clients.dump);
        cmd.arg(files.defaults_arg())
            .args(DEFAULT_FLAGS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("MYSQL_PWD");
        files.pass_to(&mut cmd);
        let mut child = spawn_bound(cmd).map_err(|e| {
            DbError::Local(format!(
                "cannot start {}: {e} (install the MariaDB or MySQL client)",
                clients.dump.display()
            ))
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = StderrTail::start("mysqldump", child.stderr.take().expect("piped stderr"));
        Ok(DumpStream {
            child,
            stdout,
            stderr,
            head: Vec::new(),
            tail: Vec::with_capacity(2 * TAIL),
            on_position: None,
            on_snapshot: None,
            bytes: Arc::new(AtomicU64::new(0)),
            finished: false,
            target: spec.label.clone(),
            _files: files,
        })
    }

    /// A live count of the bytes read so far.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    /// Reads the binlog position the dump was taken at from its own text (run it with
    /// `--master-data`): `f` gets it once the dump has ended complete, before the stream's
    /// last read returns.
    pub fn on_position(&mut self, f: OnPosition) {
        self.on_position = Some(f);
    }

    /// `f` learns when mysqldump's snapshot has started (see [`OnSnapshot`]).
    pub fn on_snapshot(&mut self, f: OnSnapshot) {
        self.on_snapshot = Some(f);
    }

    fn remember(&mut self, data: &[u8]) {
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            if self.on_snapshot.is_some() {
                if let Some(pos) = snapshot_started(&self.head) {
                    if let Some(f) = self.on_snapshot.take() {
                        f(pos);
                    }
                }
            }
        } else if let Some(f) = self.on_snapshot.take() {
            // Its start showed nothing: whoever waits is told by the callback's drop.
            drop(f);
        }
        // Only the last bytes matter for the trailer and the GTID state.
        self.tail
            .extend_from_slice(&data[data.len().saturating_sub(TAIL)..]);
        if self.tail.len() > TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
    }

    fn finish(&mut self) -> Result<(), DbError> {
        self.finished = true;
        let status = self
            .child
            .wait()
            .map_err(|e| DbError::Local(format!("cannot wait for mysqldump: {e}")))?;
        let stderr = self.stderr.finish();
        if !status.success() {
            return Err(DbError::Dump {
                target: self.target.clone(),
                reason: format!(
                    "mysqldump {}{}",
                    describe_exit(status),
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                ),
            });
        }
        if !self.tail.windows(TRAILER.len()).any(|w| w == TRAILER) {
            return Err(DbError::Dump {
                target: self.target.clone(),
                reason: "mysqldump's output ended without its `-- Dump completed` line: the dump \
                         is truncated"
                    .into(),
            });
        }
        if let Some(f) = self.on_snapshot.take() {
            // A dump that ended complete had its snapshot before its end.
            f(change_master_position(&self.head));
        }
        if let Some(f) = self.on_position.take() {
            let (binlog_file, binlog_position) = change_master_position(&self.head).unzip();
            f(crate::native::Position {
                binlog_file,
                binlog_position,
                // MariaDB's after the last database, MySQL's before the first.
                gtid: deferred_gtid(&self.tail).or_else(|| gtid_purged(&self.head)),
            });
        }
        Ok(())
    }
}

impl Read for DumpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n > 0 {
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.remember(&buf[..n]);
            return Ok(n);
        }
        self.finish().map_err(std::io::Error::other)?;
        Ok(0)
    }
}

impl Drop for DumpStream {
    fn drop(&mut self) {
        if !self.finished {
            terminate(&mut self.child);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, os::unix::fs::PermissionsExt, sync::Arc};

    use super::*;
    use crate::conn::ClientFlavor;

    fn fake_dump(body: &str) -> (tempfile::TempDir, Clients) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fake-dump");
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Clients {
            dump: p.clone(),
            client: p,
            flavor: ClientFlavor::MariaDb,
        };
        (dir, c)
    }

    fn read_all(body: &str) -> Result<Vec<u8>, std::io::Error> {
        let (_d, clients) = fake_dump(body);
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: "p".into(),
            tls: None,
            label: "AppBinding t/db".into(),
        };
        let files = Arc::new(ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap());
        // Another test thread may fork while our script is still open for writing; its
        // child holds the descriptor until it execs, and starting the script fails with
        // ETXTBSY meanwhile.
        let mut s = (0..50)
            .find_map(
                |_| match DumpStream::start(&clients, &spec, files.clone(), &[]) {
                    Err(e) if e.to_string().contains("Text file busy") => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    other => Some(other),
                },
            )
            .expect("the fake dump stays busy")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_complete_dump_reads_to_the_end() {
        let out =
            read_all("echo 'CREATE TABLE t (a INT);'; echo '-- Dump completed on 2026-01-01'")
                .unwrap();
        assert!(out.ends_with(b"-- Dump completed on 2026-01-01\n"));
    }

    #[test]
    fn a_killed_dump_fails_the_last_read() {
        let e = read_all("echo 'CREATE TABLE t (a INT);'; echo '-- Dump completed'; kill -KILL $$")
            .unwrap_err();
        assert!(e.to_string().contains("killed by signal 9"), "{e}");
    }

    #[test]
    fn a_failed_dump_reports_its_stderr() {
        let e = read_all(
            "echo 'INSERT'; echo 'mysqldump: Got error: 2013: Lost connection' >&2; exit 2",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("exited with status 2") && m.contains("Lost connection"),
            "{m}"
        );
    }

    /// The start and end of what MariaDB 10.11's mariadb-dump writes with `--master-data=2`.
    const HEAD_TEXT: &str = "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n--\n\
        -- Server version\t10.11.19-MariaDB-log\n\
        /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n--\n\
        -- Alternately, following is the position of the binary logging from SHOW MASTER STATUS at point of backup.\n\
        --\n-- CHANGE MASTER TO MASTER_LOG_FILE='bin.000001', MASTER_LOG_POS=774;\n\
        -- A corresponding to the above master-data CHANGE-MASTER settings to the slave gtid state is printed as comments later in the file.\n";
    const TAIL_TEXT: &str = "UNLOCK TABLES;\n\
        -- The deferred gtid setting for slave corresponding to the master-data CHANGE-MASTER follows\n\
        -- Preferably use GTID to start replication from GTID position:\n\n\
        -- SET GLOBAL gtid_slave_pos='0-1-42,100-21-7';\n\
        /*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2026-12-01  9:42:16\n";

    #[test]
    fn the_position_is_read_from_the_dumps_own_lines() {
        assert_eq!(
            change_master_position(HEAD_TEXT.as_bytes()),
            Some(("bin.000001".into(), 774))
        );
        assert_eq!(
            deferred_gtid(TAIL_TEXT.as_bytes()).as_deref(),
            Some("0-1-42,100-21-7")
        );
        // --master-data=1 writes them uncommented; a server without GTIDs writes ''.
        assert_eq!(
            change_master_position(b"CHANGE MASTER TO MASTER_LOG_FILE='b.9', MASTER_LOG_POS=4;\n"),
            Some(("b.9".into(), 4))
        );
        assert_eq!(
            deferred_gtid(b"SET GLOBAL gtid_slave_pos='';\n").as_deref(),
            Some("")
        );
        // A routine's body earlier in the dump does not stand in for the real line.
        let tail = format!("-- SET GLOBAL gtid_slave_pos='9-9-9';\nEND ;;\n{TAIL_TEXT}");
        assert_eq!(
            deferred_gtid(tail.as_bytes()).as_deref(),
            Some("0-1-42,100-21-7")
        );
        assert_eq!(change_master_position(b"-- nothing here\n"), None);
        assert_eq!(gtid_purged(HEAD_TEXT.as_bytes()), None);
        assert_eq!(deferred_gtid(b"-- Dump completed\n"), None);
    }

    /// The start of what MySQL 9.7's mysqldump writes with `--master-data=2` on a server with
    /// GTIDs of two server UUIDs.
    const MYSQL_HEAD_TEXT: &str = "-- MySQL dump 10.13  Distrib 9.7.4, for Linux (x86_64)\n--\n\
        -- Host: 127.0.0.1    Database: \n\
        -- ------------------------------------------------------\n\
        -- Server version\t9.7.4-2\n\n\
        /*!50503 SET NAMES utf8mb4 */;\n\
        SET @MYSQLDUMP_TEMP_LOG_BIN = @@SESSION.SQL_LOG_BIN;\n\
        SET @@SESSION.SQL_LOG_BIN= 0;\n\n\
        --\n-- GTID state at the beginning of the backup \n--\n\n\
        SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n\
        614b6cfc-eda3-11f1-b504-02fc00000001:1-8';\n\n\
        --\n-- Position to start replication or point-in-time recovery from\n--\n\n\
        -- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='mysql-bin.000002', SOURCE_LOG_POS=2175;\n\n\
        --\n-- Current Database: `t`\n--\n";

    #[test]
    fn mysqls_dump_names_its_position_and_gtid_set_at_its_start() {
        assert_eq!(
            change_master_position(MYSQL_HEAD_TEXT.as_bytes()),
            Some(("mysql-bin.000002".into(), 2175))
        );
        assert_eq!(
            gtid_purged(MYSQL_HEAD_TEXT.as_bytes()).as_deref(),
            Some(
                "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,614b6cfc-eda3-11f1-b504-02fc00000001:1-8"
            )
        );
        // MySQL 5.7's form.
        assert_eq!(
            gtid_purged(b"SET @@GLOBAL.GTID_PURGED='3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5';\n")
                .as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
        );
        // Not at a line's start, or not a set: nothing.
        assert_eq!(gtid_purged(b"x SET @@GLOBAL.GTID_PURGED='a:1';\n"), None);
        assert_eq!(gtid_purged(b"SET @@GLOBAL.GTID_PURGED='a b\\'c';\n"), None);
    }

    #[test]
    fn the_snapshot_is_proven_started_by_the_first_line_after_the_header() {
        // The header alone proves nothing, nor does an incomplete line.
        let header = "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n--\n\
            -- Host: 127.0.0.1    Database: \n\
            -- ------------------------------------------------------\n\
            -- Server version\t10.11.19-MariaDB-log\n\n\
            /*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n";
        assert_eq!(snapshot_started(header.as_bytes()), None);
        assert_eq!(
            snapshot_started(format!("{header}-- Current Data").as_bytes()),
            None
        );
        // With --master-data: the announcing comment waits for the position itself.
        let announced = format!(
            "{header}--\n-- Alternately, following is the position of the binary logging \
             from SHOW MASTER STATUS at point of backup.\n--\n"
        );
        assert_eq!(snapshot_started(announced.as_bytes()), None);
        assert_eq!(
            snapshot_started(HEAD_TEXT.as_bytes()),
            Some(Some(("bin.000001".into(), 774)))
        );
        // Without it: the first database or statement.
        for next in [
            "--\n-- Current Database: `app`\n",
            "--\n-- Table structure for table `t`\n",
            "CREATE DATABASE app;\n",
        ] {
            assert_eq!(
                snapshot_started(format!("{header}{next}").as_bytes()),
                Some(None),
                "{next}"
            );
        }
    }

    #[test]
    fn a_complete_dump_reports_its_position_before_its_end() {
        let (_d, clients) = fake_dump(&format!(
            "printf '%s' \"{HEAD_TEXT}\"; head -c 3000000 /dev/zero | tr '\\0' x; echo; printf '%s' \"{TAIL_TEXT}\""
        ));
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: "p".into(),
            tls: None,
            label: "AppBinding t/db".into(),
        };
        let files = Arc::new(ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap());
        let mut s = loop {
            match DumpStream::start(&clients, &spec, files.clone(), &[]) {
                Err(e) if e.to_string().contains("Text file busy") => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => break other.unwrap(),
            }
        };
        let got = Arc::new(std::sync::Mutex::new(None));
        let g = got.clone();
        s.on_position(Box::new(move |p| *g.lock().unwrap() = Some(p)));
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.len() > 3_000_000);
        let p = got.lock().unwrap().clone().expect("reported");
        assert_eq!(p.binlog_file.as_deref(), Some("bin.000001"));
        assert_eq!(p.binlog_position, Some(774));
        assert_eq!(p.gtid.as_deref(), Some("0-1-42,100-21-7"));
    }

    #[test]
    fn a_dump_without_its_trailer_is_truncated() {
        let e = read_all("echo 'INSERT INTO t VALUES (1)'").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
