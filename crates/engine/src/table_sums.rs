//! Per-table row counts and `CHECKSUM TABLE` values recorded by a backup at exactly its
//! consistent point, and compared by the restore verification (issue #13).
//!
//! Recorded only when the BackupConfiguration has `spec.verification` (it costs one more read
//! of every table), into a small JSON file inside the snapshot, after the data in path order:
//! `/coffer/9-table-sums.json` (native), `/dumpfile.sql.table-sums.json` (mysqldump),
//! `/xtrabackup.stream.table-sums.json` (mariabackup). The snapshot's `paths` stay what they
//! were, so Stash and restic see the same snapshot with one more file.
//!
//! The sums are read in a transaction whose snapshot is the backup's own point:
//! - native: one more connection of the dump's snapshot (started under the same global read
//!   lock as the dump's connections);
//! - mysqldump: coffer takes FTWRL and starts its snapshot before mysqldump starts, and holds
//!   the lock until mysqldump's output shows that its own snapshot started (no commit could
//!   land in between); where both print binlog positions they must be equal;
//! - mariabackup: a snapshot started when mariabackup logs `BACKUP STAGE BLOCK_COMMIT`, kept
//!   only if its binlog position equals the one mariabackup recorded (the `binlog=` tag).
//!
//! Whenever the point cannot be confirmed, or reading the sums fails, the file says why and
//! holds no tables: the backup itself still succeeds (its data is good), and the verification
//! reports that the sums were not compared. Sums that might not match the backup's point are
//! never recorded.
//!
//! Only InnoDB tables are summed: a non-transactional table is read outside any snapshot, so it
//! is recorded as present only. After a logical restore (native, mysqldump) a table with a
//! FLOAT or DOUBLE column is compared by row count only: the text form of such values need
//! not give back the same bits, so CHECKSUM TABLE may differ while the data is as dumped.

use std::{
    collections::BTreeSet,
    io::Read,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
};

use coffer_db::{mysql_prelude::Queryable, MysqlConn};
use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;
pub const NATIVE_PATH: &str = "/coffer/9-table-sums.json";

/// Where a snapshot whose data is at `main` keeps its sums (sorting after it).
pub fn path_for(main: &str) -> String {
    if main == coffer_db::native::DIR {
        NATIVE_PATH.to_string()
    } else {
        format!("{main}.table-sums.json")
    }
}

/// What a backup recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableSums {
    pub format: u32,
    /// `native`, `mysqldump` or `mariabackup`.
    pub method: String,
    /// The binlog position of the snapshot the sums were read in, where the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<String>,
    /// Why no sums were recorded (then `tables` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_recorded: Option<String>,
    #[serde(default)]
    pub tables: Vec<TableSum>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSum {
    pub database: String,
    pub table: String,
    pub engine: String,
    /// `None` for a table recorded as present only (not transactional).
    pub rows: Option<u64>,
    pub checksum: Option<u64>,
    /// Has a FLOAT or DOUBLE column.
    #[serde(default)]
    pub floating: bool,
}

impl TableSums {
    fn not_recorded(method: &str, why: String) -> TableSums {
        TableSums {
            format: FORMAT,
            method: method.into(),
            not_recorded: Some(why),
            ..Default::default()
        }
    }
}

/// Which tables a backup holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// `None`: every user database.
    pub databases: Option<Vec<String>>,
    /// Only these tables (of the one database in `databases`).
    pub tables: Option<Vec<String>>,
    pub ignore_tables: BTreeSet<String>,
    pub ignore_databases: BTreeSet<String>,
}

impl Scope {
    pub fn databases(dbs: &[String]) -> Scope {
        Scope {
            databases: (!dbs.is_empty()).then(|| dbs.to_vec()),
            ..Default::default()
        }
    }

    pub fn includes(&self, db: &str, table: &str) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|d| d.iter().any(|x| x == db))
            && self
                .tables
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| x == table))
            && !self.ignore_databases.contains(db)
            && !self.ignore_tables.contains(&format!("{db}.{table}"))
    }
}

/// The tables a mysqldump run with `args` dumps with their rows, or why that cannot be told.
pub fn mysqldump_scope(args: &[String]) -> Result<Scope, String> {
    let mut all = false;
    let mut databases_flag = false;
    let mut tables_flag = false;
    let mut positional = Vec::new();
    let mut scope = Scope::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value_of = |v: Option<String>| v.or_else(|| it.next().cloned());
        match name {
            "-A" | "--all-databases" => all = true,
            "-B" | "--databases" => databases_flag = true,
            "--tables" => tables_flag = true,
            "--ignore-table" => {
                if let Some(v) = value_of(value) {
                    scope.ignore_tables.insert(v);
                }
            }
            "--ignore-database" => {
                if let Some(v) = value_of(value) {
                    scope.ignore_databases.insert(v);
                }
            }
            "-d" | "--no-data" | "--where" | "-w" | "--no-data-med" => {
                return Err(format!(
                    "mysqldump's `{name}` leaves rows out of the dump, so its tables cannot be \
                     compared with the source's"
                ))
            }
            n if n.starts_with("-w") => {
                return Err(
                    "mysqldump's `-w` (--where) leaves rows out of the dump, so its tables \
                     cannot be compared with the source's"
                        .into(),
                )
            }
            n if n.starts_with('-') => {}
            _ => positional.push(a.clone()),
        }
    }
    if all {
        return Ok(scope);
    }
    if databases_flag && !tables_flag {
        scope.databases = Some(positional);
        return Ok(scope);
    }
    let mut p = positional.into_iter();
    let Some(db) = p.next() else {
        return Err("mysqldump's arguments name no database".into());
    };
    scope.databases = Some(vec![db]);
    let tables: Vec<String> = p.collect();
    if !tables.is_empty() {
        scope.tables = Some(tables);
    }
    Ok(scope)
}

fn quote(id: &str) -> String {
    format!("`{}`", id.replace('`', "``"))
}

/// ER_TABLE_DEF_CHANGED: the table was created (or rebuilt) after the snapshot.
const TABLE_DEF_CHANGED: u16 = 1412;

fn server_code(e: &coffer_db::MysqlError) -> Option<u16> {
    match e {
        coffer_db::MysqlError::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

/// Starts the snapshot the sums are read in on `c`; returns its binlog position where the
/// server writes a binlog.
pub fn begin(c: &mut MysqlConn) -> Result<Option<String>, String> {
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .and_then(|_| c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT"))
        .map_err(|e| format!("cannot start a consistent snapshot: {e}"))?;
    snapshot_binlog(c)
}

/// `Binlog_snapshot_file:Binlog_snapshot_position` of the transaction on `c`.
pub fn snapshot_binlog(c: &mut MysqlConn) -> Result<Option<String>, String> {
    let rows: Vec<(String, String)> = c
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .map_err(|e| format!("cannot read the snapshot's binlog position: {e}"))?;
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Ok(
        match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
            (Some(f), Some(p)) => Some(format!("{f}:{p}")),
            _ => None,
        },
    )
}

/// Counts and sums every table of `scope` in the snapshot open on `c`; stops early (Err) when
/// `cancel` is set.
pub fn measure(
    c: &mut MysqlConn,
    scope: &Scope,
    cancel: &AtomicBool,
) -> Result<Vec<TableSum>, String> {
    let listed: Vec<(String, String, Option<String>)> = c
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql','information_schema','performance_schema','sys') ORDER BY 1, 2",
        )
        .map_err(|e| format!("cannot list the tables: {e}"))?;
    let floating: BTreeSet<(String, String)> = c
        .query::<(String, String), _>(
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME FROM information_schema.COLUMNS \
             WHERE DATA_TYPE IN ('float','double')",
        )
        .map_err(|e| format!("cannot list FLOAT/DOUBLE columns: {e}"))?
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for (db, table, engine) in listed {
        if !scope.includes(&db, &table) {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err("the backup ended first".into());
        }
        let engine = engine.unwrap_or_default();
        let floating = floating.contains(&(db.clone(), table.clone()));
        let mut sum = TableSum {
            database: db.clone(),
            table: table.clone(),
            engine: engine.clone(),
            rows: None,
            checksum: None,
            floating,
        };
        if engine.eq_ignore_ascii_case("InnoDB") {
            match read_table(c, &db, &table) {
                Ok((rows, checksum)) => {
                    sum.rows = Some(rows);
                    sum.checksum = checksum;
                }
                // Made after the snapshot: not in the backup either.
                Err(e) if server_code(&e) == Some(TABLE_DEF_CHANGED) => continue,
                Err(e) => return Err(format!("table {db}.{table}: {e}")),
            }
        }
        out.push(sum);
    }
    Ok(out)
}

/// Row count and `CHECKSUM TABLE ... EXTENDED` of one table.
fn read_table(
    c: &mut MysqlConn,
    db: &str,
    table: &str,
) -> Result<(u64, Option<u64>), coffer_db::MysqlError> {
    let q = format!("{}.{}", quote(db), quote(table));
    let rows: Option<u64> = c.query_first(format!("SELECT COUNT(*) FROM {q}"))?;
    let sum: Option<(String, Option<u64>)> =
        c.query_first(format!("CHECKSUM TABLE {q} EXTENDED"))?;
    Ok((rows.unwrap_or(0), sum.and_then(|s| s.1)))
}

/// How the tables of a snapshot compared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compared {
    /// Row count and CHECKSUM TABLE both as recorded.
    pub by_checksum: usize,
    /// Row count as recorded; the checksum not compared (FLOAT/DOUBLE after a logical
    /// restore, or no checksum recorded).
    pub by_rows: Vec<String>,
    /// Present (not transactional: nothing else was recorded).
    pub present: Vec<String>,
}

/// What the restored server holds for one table: `None` when it lacks it.
pub type Restored = Option<(u64, Option<u64>)>;

/// Judges one recorded table against the restored one; `logical` restores compare
/// FLOAT/DOUBLE tables by row count only.
pub fn judge(
    rec: &TableSum,
    restored: Restored,
    logical: bool,
    out: &mut Compared,
) -> Result<(), String> {
    let name = format!("{}.{}", rec.database, rec.table);
    let Some((rows, sum)) = restored else {
        return Err(format!(
            "table {name}: recorded by the backup but not in the restored server"
        ));
    };
    let Some(want_rows) = rec.rows else {
        out.present.push(name);
        return Ok(());
    };
    if rows != want_rows {
        return Err(format!(
            "table {name}: {rows} rows restored, the backup recorded {want_rows}"
        ));
    }
    match rec.checksum {
        Some(want) if !(logical && rec.floating) => {
            let got = sum.map(|s| s.to_string()).unwrap_or_else(|| "NULL".into());
            if sum != Some(want) {
                return Err(format!(
                    "table {name}: CHECKSUM TABLE of the restored table is {got}, the backup \
                     recorded {want}"
                ));
            }
            out.by_checksum += 1;
        }
        _ => out.by_rows.push(name),
    }
    Ok(())
}

/// Compares every recorded table with the restored server on `c`.
pub fn check(c: &mut MysqlConn, rec: &TableSums, logical: bool) -> Result<Compared, String> {
    let mut out = Compared::default();
    for t in &rec.tables {
        let present: Option<String> = c
            .exec_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.database, &t.table),
            )
            .map_err(|e| format!("cannot list the restored tables: {e}"))?;
        let restored = match present {
            None => None,
            Some(_) => Some(read_table(c, &t.database, &t.table).map_err(|e| {
                format!("table {}.{}: cannot be read back: {e}", t.database, t.table)
            })?),
        };
        judge(t, restored, logical, &mut out)?;
    }
    Ok(out)
}

/// The sums a snapshot recorded: `Ok(None)` when it has none (taken without
/// spec.verification, or by an older coffer).
pub fn read(
    repo: &coffer_repo::Repo,
    snapshot: &str,
    main: &str,
) -> Result<Option<TableSums>, String> {
    let path = path_for(main);
    let mut buf = Vec::new();
    match repo.dump(snapshot, &path, &mut buf) {
        Ok(_) => serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| format!("{path} in the snapshot is not readable: {e}")),
        Err(coffer_repo::RepoError::NoSuchFile { .. }) => Ok(None),
        Err(e) => Err(format!("cannot read {path} from the snapshot: {e}")),
    }
}

/// The `ChecksumsCompared` condition of a verification.
pub const CHECKSUMS_COMPARED: &str = "ChecksumsCompared";

/// Compares what snapshot `snapshot` (data at `main`) recorded with the restored server on
/// `c`: `Ok((compared, reason, message))`, where a snapshot without sums is not compared
/// (and does not fail the verification); `Err` names the first table that differs.
pub fn verify(
    repo: &coffer_repo::Repo,
    snapshot: &str,
    main: &str,
    logical: bool,
    c: &mut MysqlConn,
) -> Result<(bool, &'static str, String), String> {
    let rec = match read(repo, snapshot, main)? {
        None => {
            return Ok((
                false,
                "NotRecorded",
                "not compared: the backup recorded no table checksums (it ran without \
                 spec.verification, or by an older coffer)"
                    .into(),
            ))
        }
        Some(r) => r,
    };
    if let Some(why) = &rec.not_recorded {
        return Ok((
            false,
            "NotRecorded",
            format!("not compared: the backup recorded no table checksums: {why}"),
        ));
    }
    let compared = check(c, &rec, logical)?;
    Ok((true, "Succeeded", describe(&rec, &compared)))
}

/// The message of a comparison that passed.
pub fn describe(rec: &TableSums, c: &Compared) -> String {
    let mut m = format!(
        "{} table(s) compared by row count and checksum with what the backup recorded{}",
        c.by_checksum,
        rec.binlog
            .as_deref()
            .map(|b| format!(" at binlog {b}"))
            .unwrap_or_default()
    );
    if !c.by_rows.is_empty() {
        m.push_str(&format!(
            "; {} by row count only (FLOAT/DOUBLE columns: their text form need not restore \
             the same bits): {}",
            c.by_rows.len(),
            c.by_rows.join(", ")
        ));
    }
    if !c.present.is_empty() {
        m.push_str(&format!(
            "; {} present only (not transactional, read outside the snapshot): {}",
            c.present.len(),
            c.present.join(", ")
        ));
    }
    m
}

// ---- recording -------------------------------------------------------------------------

/// The sums file of a snapshot as a source file whose content comes when the sums are done:
/// it sorts after the data, so the repository reads it once the data is in, and waits then.
/// Dropping it (the backup failed) tells the measuring side to stop.
pub struct Pending {
    rx: mpsc::Receiver<TableSums>,
    method: &'static str,
    /// Applied to the sums once they are there (mariabackup: its recorded position, known
    /// only at the end of its stream, must equal the snapshot's).
    finish: Option<Box<dyn FnOnce(TableSums) -> TableSums + Send>>,
    cancel: Arc<AtomicBool>,
    out: Option<std::io::Cursor<Vec<u8>>>,
}

/// The sending side of [`Pending`].
pub struct Recorder {
    tx: mpsc::Sender<TableSums>,
    pub cancel: Arc<AtomicBool>,
    method: &'static str,
}

impl Recorder {
    pub fn send(self, sums: TableSums) {
        let _ = self.tx.send(sums);
    }

    pub fn fail(self, why: String) {
        let m = self.method;
        self.send(TableSums::not_recorded(m, why));
    }
}

pub fn pending(method: &'static str) -> (Recorder, Pending) {
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (
        Recorder {
            tx,
            cancel: cancel.clone(),
            method,
        },
        Pending {
            rx,
            method,
            finish: None,
            cancel,
            out: None,
        },
    )
}

impl Pending {
    pub fn finish_with(mut self, f: impl FnOnce(TableSums) -> TableSums + Send + 'static) -> Self {
        self.finish = Some(Box::new(f));
        self
    }

    pub fn into_source(self, path: String) -> coffer_repo::SourceFile {
        coffer_repo::SourceFile::new(path, self)
    }
}

impl Read for Pending {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.out.is_none() {
            let mut sums = self.rx.recv().unwrap_or_else(|_| {
                TableSums::not_recorded(
                    self.method,
                    "the checksum side ended without a result".into(),
                )
            });
            if let Some(f) = self.finish.take() {
                sums = f(sums);
            }
            match &sums.not_recorded {
                Some(why) => tracing::warn!(
                    "table checksums not recorded (the backup itself is not affected): {why}"
                ),
                None => tracing::info!(
                    "recorded row counts and checksums of {} table(s){}",
                    sums.tables.len(),
                    sums.binlog
                        .as_deref()
                        .map(|b| format!(" at binlog {b}"))
                        .unwrap_or_default()
                ),
            }
            let json = serde_json::to_vec_pretty(&sums).map_err(std::io::Error::other)?;
            self.out = Some(std::io::Cursor::new(json));
        }
        self.out.as_mut().expect("set above").read(buf)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Measures on `c` (whose snapshot is open) on a thread of its own and sends the result.
pub fn measure_in_background(
    mut c: MysqlConn,
    binlog: Option<String>,
    scope: Scope,
    rec: Recorder,
) {
    let spawned = std::thread::Builder::new()
        .name("coffer-table-sums".into())
        .spawn(move || {
            let method = rec.method;
            match measure(&mut c, &scope, &rec.cancel) {
                Ok(tables) => rec.send(TableSums {
                    format: FORMAT,
                    method: method.into(),
                    binlog,
                    not_recorded: None,
                    tables,
                }),
                Err(e) => rec.fail(format!("reading the table checksums failed: {e}")),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the checksum thread: {e}");
    }
}

/// mariabackup: keeps the sums only if the snapshot's position equals the one mariabackup
/// recorded (`recorded`, from its `binlog=` tag).
pub fn confirm_point(mut sums: TableSums, recorded: Option<&str>, who: &str) -> TableSums {
    if sums.not_recorded.is_some() {
        return sums;
    }
    let why = match (sums.binlog.as_deref(), recorded) {
        (Some(a), Some(b)) if a == b => return sums,
        (Some(a), Some(b)) => format!(
            "the checksums' snapshot is at binlog {a} but {who} recorded {b}: a commit came \
             between them, so the sums would not match the backup"
        ),
        (None, _) | (_, None) => format!(
            "the point of the checksums' snapshot cannot be confirmed against {who}'s without \
             a binary log on the source"
        ),
    };
    sums.tables.clear();
    sums.not_recorded = Some(why);
    sums
}

/// How long coffer holds its global read lock for mysqldump to show its snapshot: every
/// writer on the source waits as long.
const DUMP_HOLD: std::time::Duration = coffer_db::global_lock::FTWRL_WAIT;

/// mysqldump, before it starts: coffer's snapshot under its global read lock, released by
/// [`follow_mysqldump`]. `Err` when no sums can be recorded (the backup goes on).
pub fn before_mysqldump(
    spec: &coffer_db::ConnSpec,
    files: &coffer_db::ClientFiles,
    args: &[String],
) -> Result<(MysqlConn, Option<String>, Scope), String> {
    let scope = mysqldump_scope(args)?;
    let mut c = coffer_db::connect(spec, files).map_err(|e| e.to_string())?;
    coffer_db::global_lock::flush_tables_with_read_lock(spec, files, &mut c, DUMP_HOLD)
        .map_err(|e| format!("cannot take the global read lock: {e}"))?;
    // The lock goes with the connection if this fails.
    let binlog = begin(&mut c)?;
    Ok((c, binlog, scope))
}

/// mysqldump, once started: the lock is released when its output shows its snapshot (or
/// after [`DUMP_HOLD`]), the points are compared, and the sums read in coffer's snapshot.
pub fn follow_mysqldump(
    prepared: Result<(MysqlConn, Option<String>, Scope), String>,
    dump: &mut coffer_db::DumpStream,
) -> Pending {
    let (rec, pending) = pending("mysqldump");
    let (mut c, binlog, scope) = match prepared {
        Ok(p) => p,
        Err(why) => {
            rec.fail(why);
            return pending;
        }
    };
    let (seen_tx, seen_rx) = mpsc::channel();
    dump.on_snapshot(Box::new(move |pos| {
        let _ = seen_tx.send(pos);
    }));
    let spawned = std::thread::Builder::new()
        .name("coffer-table-sums".into())
        .spawn(move || {
            let seen = seen_rx.recv_timeout(DUMP_HOLD);
            // Released in every case, first: writers wait while it is held.
            let unlocked = c.query_drop("UNLOCK TABLES");
            let theirs = match seen {
                Ok(pos) => pos.map(|(f, p)| format!("{f}:{p}")),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return rec.fail(format!(
                        "mysqldump's output did not show its snapshot within {}s, so coffer released its lock without knowing the dump's point",
                        DUMP_HOLD.as_secs()
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return rec.fail("the dump ended before it showed its snapshot".into())
                }
            };
            if let Err(e) = unlocked {
                return rec.fail(format!("cannot release the global read lock: {e}"));
            }
            match (&binlog, &theirs) {
                (Some(ours), Some(theirs)) if ours != theirs => {
                    return rec.fail(format!(
                        "the checksums' snapshot is at binlog {ours} but mysqldump's at {theirs}: the sums would not match the dump"
                    ))
                }
                _ => {}
            }
            let method = rec.method;
            match measure(&mut c, &scope, &rec.cancel) {
                Ok(tables) => rec.send(TableSums {
                    format: FORMAT,
                    method: method.into(),
                    binlog: theirs.or(binlog),
                    not_recorded: None,
                    tables,
                }),
                Err(e) => rec.fail(format!("reading the table checksums failed: {e}")),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the checksum thread: {e}");
    }
    pending
}

/// What mariabackup 10.11 logs once commits are blocked (until `Finishing BACKUP STAGE
/// BLOCK_COMMIT`).
const BLOCK_COMMIT_HELD: &str = "Acquired locks for BACKUP STAGE BLOCK_COMMIT";

/// A connection waiting for mariabackup's `BACKUP STAGE BLOCK_COMMIT`; said so if it never
/// came.
struct Armed(Option<(MysqlConn, Recorder)>);

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some((_, rec)) = self.0.take() {
            rec.fail(
                "mariabackup's log did not say `Acquired locks for BACKUP STAGE BLOCK_COMMIT`, \
                 the only moment a snapshot can be taken at its point"
                    .into(),
            );
        }
    }
}

/// mariabackup: the line watcher that starts the snapshot while commits are blocked, and the
/// sums file, which keeps the sums only if mariabackup's recorded position (sent on
/// `recorded` when its stream ends) equals the snapshot's.
pub fn for_mariabackup(
    spec: &coffer_db::ConnSpec,
    files: &coffer_db::ClientFiles,
    recorded: mpsc::Receiver<Option<String>>,
) -> (Option<coffer_db::process::LineWatch>, Pending) {
    let (rec, pending) = pending("mariabackup");
    let pending = pending.finish_with(move |s| {
        let theirs = recorded.recv().ok().flatten();
        confirm_point(s, theirs.as_deref(), "mariabackup")
    });
    // Connected beforehand: the window while commits are blocked is short.
    let c = match coffer_db::connect(spec, files) {
        Ok(c) => c,
        Err(e) => {
            rec.fail(format!("cannot connect for the checksums: {e}"));
            return (None, pending);
        }
    };
    let mut armed = Armed(Some((c, rec)));
    let watch: coffer_db::process::LineWatch = Box::new(move |line: &str| {
        // mariabackup logs `Starting BACKUP STAGE BLOCK_COMMIT` before it has the lock (a
        // snapshot taken then missed commits still landing) and this line once it holds it.
        if !line.contains(BLOCK_COMMIT_HELD) {
            return;
        }
        if let Some((mut c, rec)) = armed.0.take() {
            match begin(&mut c) {
                Ok(binlog) => measure_in_background(c, binlog, Scope::default(), rec),
                Err(e) => rec.fail(e),
            }
        }
    });
    (Some(watch), pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn mysqldumps_arguments_say_which_tables_it_dumps() {
        let all = mysqldump_scope(&args("--master-data=2 --all-databases")).unwrap();
        assert!(all.includes("app", "t") && all.includes("other", "x"));
        let dbs = mysqldump_scope(&args("--databases app shop --quick")).unwrap();
        assert!(dbs.includes("app", "t") && dbs.includes("shop", "x"));
        assert!(!dbs.includes("other", "t"));
        let one = mysqldump_scope(&args("app t1 t2")).unwrap();
        assert!(one.includes("app", "t1") && one.includes("app", "t2"));
        assert!(!one.includes("app", "t3") && !one.includes("shop", "t1"));
        let tables = mysqldump_scope(&args("--databases app --tables t1")).unwrap();
        assert!(tables.includes("app", "t1") && !tables.includes("app", "t2"));
        let ignored =
            mysqldump_scope(&args("-A --ignore-table=app.log --ignore-database shop")).unwrap();
        assert!(ignored.includes("app", "t"));
        assert!(!ignored.includes("app", "log") && !ignored.includes("shop", "t"));
        for lossy in ["--databases app --no-data", "-A --where=id<5", "-A -wid<5"] {
            let e = mysqldump_scope(&args(lossy)).unwrap_err();
            assert!(e.contains("leaves rows out"), "{lossy}: {e}");
        }
        assert!(mysqldump_scope(&args("--single-transaction")).is_err());
    }

    fn sum(t: &str, rows: Option<u64>, checksum: Option<u64>, floating: bool) -> TableSum {
        TableSum {
            database: "app".into(),
            table: t.into(),
            engine: "InnoDB".into(),
            rows,
            checksum,
            floating,
        }
    }

    #[test]
    fn a_table_is_judged_by_what_was_recorded_for_it() {
        let mut c = Compared::default();
        judge(
            &sum("t", Some(3), Some(42), false),
            Some((3, Some(42))),
            true,
            &mut c,
        )
        .unwrap();
        // FLOAT/DOUBLE: rows only after a logical restore, the checksum after a physical one.
        judge(
            &sum("f", Some(2), Some(7), true),
            Some((2, Some(8))),
            true,
            &mut c,
        )
        .unwrap();
        let e = judge(
            &sum("f", Some(2), Some(7), true),
            Some((2, Some(8))),
            false,
            &mut c,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "table app.f: CHECKSUM TABLE of the restored table is 8, the backup recorded 7"
        );
        judge(&sum("m", None, None, false), Some((5, None)), true, &mut c).unwrap();
        assert_eq!(
            c,
            Compared {
                by_checksum: 1,
                by_rows: vec!["app.f".into()],
                present: vec!["app.m".into()],
            }
        );
        let e = judge(
            &sum("t", Some(3), Some(42), false),
            Some((2, Some(42))),
            true,
            &mut c,
        )
        .unwrap_err();
        assert_eq!(e, "table app.t: 2 rows restored, the backup recorded 3");
        let e = judge(&sum("t", Some(3), Some(42), false), None, true, &mut c).unwrap_err();
        assert_eq!(
            e,
            "table app.t: recorded by the backup but not in the restored server"
        );
        let e = judge(
            &sum("t", Some(3), Some(42), false),
            Some((3, None)),
            true,
            &mut c,
        )
        .unwrap_err();
        assert!(e.contains("is NULL, the backup recorded 42"), "{e}");
    }

    #[test]
    fn sums_are_kept_only_at_the_backups_own_point() {
        let sums = TableSums {
            format: FORMAT,
            method: "mariabackup".into(),
            binlog: Some("bin.000001:964".into()),
            not_recorded: None,
            tables: vec![sum("t", Some(1), Some(1), false)],
        };
        let kept = confirm_point(sums.clone(), Some("bin.000001:964"), "mariabackup");
        assert_eq!(kept, sums);
        let moved = confirm_point(sums.clone(), Some("bin.000001:1200"), "mariabackup");
        assert!(moved.tables.is_empty());
        assert!(moved
            .not_recorded
            .unwrap()
            .contains("recorded bin.000001:1200"),);
        let unknown = confirm_point(sums, None, "mariabackup");
        assert!(unknown.tables.is_empty() && unknown.not_recorded.is_some());
    }

    #[test]
    fn each_path_keeps_its_sums_after_its_data() {
        assert_eq!(path_for("/coffer"), "/coffer/9-table-sums.json");
        assert!(coffer_db::native::MANIFEST_PATH < NATIVE_PATH);
        for main in ["/dumpfile.sql", "/xtrabackup.stream"] {
            assert!(main < path_for(main).as_str());
        }
    }

    #[test]
    fn the_sums_file_waits_for_its_content() {
        let (rec, waiting) = pending("native");
        let t = std::thread::spawn(move || {
            let mut s = String::new();
            let mut p = waiting;
            p.read_to_string(&mut s).unwrap();
            s
        });
        rec.fail("no".into());
        let got: TableSums = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!(got.not_recorded.as_deref(), Some("no"));
        // A recorder gone without a word is said so.
        let (rec, mut p) = pending("native");
        drop(rec);
        let mut s = String::new();
        p.read_to_string(&mut s).unwrap();
        assert!(s.contains("ended without a result"), "{s}");
    }
}
