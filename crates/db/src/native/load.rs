//! The native parallel load: tables created without their secondary indexes, data loaded
//! with LOAD DATA over N connections (no unique or foreign-key checks, binlog off unless
//! asked), every file's checksum and row count compared with the manifest, then indexes,
//! views, routines, triggers and events — each with the session context it was created in.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    sync::{Arc, Condvar, Mutex},
};

use mysql::{prelude::Queryable, Conn, LocalInfileHandler};
use sha2::{Digest, Sha256};
use std::hash::Hasher as _;
use twox_hash::XxHash3_64;

use super::{
    quote,
    schema::{DataFile, Definition, Manifest, Position, Schema, Sequence, Table},
    shadow::{Shadows, Swap},
};
use crate::{
    conn::{classify, connect, ClientFiles, ConnSpec},
    DbError,
};

use super::MANIFEST_FORMAT;

/// Pieces per LOAD DATA statement: at most 64 MiB with coffer's 1 MiB pieces, so a table
/// dumped as one chunk (no integer key to split it by) still loads in bounded transactions.
const PIECES_PER_LOAD: usize = 64;

/// How often a load that lost a deadlock or timed out on a lock runs before it fails.
const LOAD_ATTEMPTS: u32 = 5;

/// Reads one snapshot file into a writer; returns the bytes written.
pub type Fetch = Arc<dyn Fn(&str, &mut dyn Write) -> std::io::Result<u64> + Send + Sync>;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub connections: usize,
    /// Restore only these databases (empty: all).
    pub databases: Vec<String>,
    /// Restore only these `db.table`s (empty: all).
    pub tables: Vec<String>,
    /// Rename databases on the way in: old -> new.
    pub rename: BTreeMap<String, String>,
    /// Write the load to the binary log (off by default: it is a restore, not a change).
    pub binlog: bool,
    pub users: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
    pub position: Position,
}

fn fail(spec: &ConnSpec, reason: String) -> DbError {
    DbError::Load {
        target: spec.label.clone(),
        reason,
    }
}

fn exec(spec: &ConnSpec, c: &mut Conn, sql: &str, what: &str) -> Result<(), DbError> {
    c.query_drop(sql).map_err(|e| match classify(spec, &e) {
        // The server echoes the statement, and a users-and-grants one holds password hashes.
        DbError::Query { reason, .. } => {
            fail(spec, format!("{what}: {}", crate::redact::sql(&reason)))
        }
        other => other,
    })
}

/// The load's sql_mode: strict, so that a value the server cannot take is an error, not a
/// NULL or a zero with a warning; zero keys stay zero (an AUTO_INCREMENT column may hold 0);
/// a date the source stored under ALLOW_INVALID_DATES (2020-02-30) loads as it was. LOAD
/// DATA LOCAL ignores strictness (it cannot stop the client's stream), so every load also
/// fails on any warning: see [`load_file`].
const LOAD_SQL_MODE: &str =
    "STRICT_ALL_TABLES,ALLOW_INVALID_DATES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

fn session(spec: &ConnSpec, files: &ClientFiles, binlog: bool) -> Result<Conn, DbError> {
    let mut c = connect(spec, files)?;
    exec(
        spec,
        &mut c,
        &format!(
            "SET SESSION foreign_key_checks = 0, SESSION unique_checks = 0, SESSION time_zone = '+00:00', \
             SESSION sql_mode = '{LOAD_SQL_MODE}'"
        ),
        "session setup",
    )?;
    if !binlog {
        // Needs SUPER or BINLOG ADMIN; without it the load is logged, which is only slower.
        if let Err(e) = c.query_drop("SET SESSION sql_log_bin = 0") {
            tracing::warn!("binary logging stays on for the load: {e}");
        }
    }
    Ok(c)
}

fn wanted(opts: &LoadOptions, db: &str, table: &str) -> bool {
    (opts.databases.is_empty() || opts.databases.iter().any(|d| d == db))
        && (opts.tables.is_empty() || opts.tables.iter().any(|t| t == &format!("{db}.{table}")))
}

fn rename_refs(text: &str, from: &str, to: &str) -> String {
    if from == to {
        text.to_string()
    } else {
        text.replace(&format!("{}.", quote(from)), &format!("{}.", quote(to)))
    }
}

fn load_statement(db: &str, t: &Table, path: &str) -> String {
    let mut cols = Vec::new();
    let mut sets = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let (col, set) = super::types::load_target(i, c);
        cols.push(col);
        sets.extend(set);
    }
    // History rows carry their own period start and end (MariaDB 10.11 and later).
    let history = if t.history {
        "SET STATEMENT system_versioning_insert_history = ON FOR "
    } else {
        ""
    };
    let mut s = format!(
        "{history}LOAD DATA LOCAL INFILE {} INTO TABLE {}.{} CHARACTER SET binary ({})",
        super::sql_string(path),
        quote(db),
        quote(&t.name),
        cols.join(", ")
    );
    if !sets.is_empty() {
        s.push_str(" SET ");
        s.push_str(&sets.join(", "));
    }
    s
}

/// The checksum a manifest recorded for a file, computed again over what is loaded.
#[derive(Clone)]
enum Checksum {
    Xxh3(Box<XxHash3_64>),
    Sha256(Sha256),
}

impl Checksum {
    fn for_file(f: &DataFile) -> Option<(Checksum, &str)> {
        if !f.xxh3.is_empty() {
            Some((Checksum::Xxh3(Box::default()), &f.xxh3))
        } else if !f.sha256.is_empty() {
            Some((Checksum::Sha256(Sha256::new()), &f.sha256))
        } else {
            None
        }
    }
    fn update(&mut self, buf: &[u8]) {
        match self {
            Checksum::Xxh3(h) => h.write(buf),
            Checksum::Sha256(h) => h.update(buf),
        }
    }
    fn hex(self) -> String {
        match self {
            Checksum::Xxh3(h) => format!("{:016x}", h.finish()),
            Checksum::Sha256(h) => h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    sum: Checksum,
    /// The last byte written.
    last: u8,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        if n > 0 {
            self.last = buf[n - 1];
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Loads one data file; verifies its checksum and row count against the manifest.
fn load_file(
    spec: &ConnSpec,
    c: &mut Conn,
    fetch: &Fetch,
    db: &str,
    t: &Table,
    f: &DataFile,
) -> Result<u64, DbError> {
    let Some((fresh, expected)) = Checksum::for_file(f) else {
        return Err(fail(
            spec,
            format!(
                "the manifest lists no checksum for {}: the snapshot was not written by coffer's native dump",
                f.path
            ),
        ));
    };
    let expected = expected.to_string();
    // What the LOAD DATA statements stream: a format-1 chunk's one file, or a format-2 chunk's
    // pieces in order, about `PIECES_PER_LOAD` per statement so that no transaction grows with
    // the table. A statement ends after a piece that ends a row: one ending in a raw newline
    // (values are escaped, so a raw newline only ends a row); a long row spans many pieces.
    let paths: Arc<Vec<String>> = Arc::new(match f.pieces {
        Some(n) => (0..n).map(|i| format!("{}/{i:08}.tsv", f.path)).collect(),
        None => vec![f.path.clone()],
    });
    // One checksum runs across the statements of a chunk, in order.
    let sum = Arc::new(Mutex::new(fresh));
    let next = Arc::new(Mutex::new(0usize));
    let sql = load_statement(db, t, &f.path);
    let mut rows = 0;
    while *next.lock().unwrap() < paths.len() {
        let before = sum.lock().unwrap().clone();
        let first = *next.lock().unwrap();
        let (s2, n2, p2, fetch2) = (sum.clone(), next.clone(), paths.clone(), fetch.clone());
        c.set_local_infile_handler(Some(LocalInfileHandler::new(move |_, w| {
            let mut hw = HashingWriter {
                inner: w,
                sum: s2.lock().unwrap().clone(),
                last: b'\n',
            };
            let mut i = *n2.lock().unwrap();
            let start = i;
            while i < p2.len() {
                fetch2(&p2[i], &mut hw)?;
                i += 1;
                if i - start >= PIECES_PER_LOAD && hw.last == b'\n' {
                    break;
                }
            }
            *n2.lock().unwrap() = i;
            *s2.lock().unwrap() = hw.sum;
            Ok(())
        })));
        let mut attempt = 1;
        loop {
            match c.query_drop(&sql) {
                Ok(()) => break,
                // Loads into one table from several connections can deadlock: MariaDB takes a
                // table lock for a bulk insert into an empty table. InnoDB has rolled the
                // statement back whole, so it runs again, its checksum from where it started.
                Err(mysql::Error::MySqlError(e))
                    if (e.code == 1213 || e.code == 1205) && attempt < LOAD_ATTEMPTS =>
                {
                    tracing::warn!(
                        "loading {} into `{db}`.`{}` (attempt {attempt}): {}; trying again",
                        f.path,
                        t.name,
                        e.message
                    );
                    *sum.lock().unwrap() = before.clone();
                    *next.lock().unwrap() = first;
                    std::thread::sleep(std::time::Duration::from_millis(100 * attempt as u64));
                    attempt += 1;
                }
                Err(e) => {
                    // A piece the repository could not read arrives as the I/O error of the
                    // LOCAL INFILE stream; its own message is the one worth showing.
                    let why = match e {
                        mysql::Error::IoError(io) => io.to_string(),
                        other => other.to_string(),
                    };
                    return Err(fail(
                        spec,
                        format!("loading {} into `{db}`.`{}`: {why}", f.path, t.name),
                    ));
                }
            }
        }
        rows += c.affected_rows();
        if *next.lock().unwrap() == first {
            return Err(fail(
                spec,
                format!(
                    "loading {} into `{db}`.`{}`: the server read no data",
                    f.path, t.name
                ),
            ));
        }
        let count = c.warnings();
        if count > 0 {
            return Err(fail(
                spec,
                format!(
                    "loading {} into `{db}`.`{}` did not store every value as dumped ({}) — \
                     the table is incomplete; restore into a server that takes these values \
                     (same or newer version, same character sets)",
                    f.path,
                    t.name,
                    warnings(c, count)
                ),
            ));
        }
    }
    let got = sum.lock().unwrap().clone().hex();
    if got != expected {
        return Err(fail(
            spec,
            format!(
                "{} does not match its checksum in the manifest (got {got}, expected {expected}); the snapshot's copy of `{db}`.`{}` is damaged — restore from an intact snapshot",
                f.path, t.name
            ),
        ));
    }
    if rows != f.rows {
        return Err(fail(spec, format!(
            "{} loaded {rows} rows into `{db}`.`{}`, the manifest says {} (duplicate keys in the target?)",
            f.path, t.name, f.rows
        )));
    }
    Ok(rows)
}

/// The character sets and collations the target server knows. A snapshot's names go into
/// SQL unquoted, so only these are let through: a crafted snapshot cannot add SQL of its own.
struct Names {
    charsets: BTreeSet<String>,
    collations: BTreeSet<String>,
}

impl Names {
    fn read(spec: &ConnSpec, c: &mut Conn) -> Result<Names, DbError> {
        let mut list = |sql: &str| -> Result<BTreeSet<String>, DbError> {
            let names: Vec<String> = c.query(sql).map_err(|e| classify(spec, &e))?;
            Ok(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
        };
        Ok(Names {
            charsets: list("SELECT CHARACTER_SET_NAME FROM information_schema.CHARACTER_SETS")?,
            collations: list("SELECT COLLATION_NAME FROM information_schema.COLLATIONS")?,
        })
    }

    /// `name` if it is a character set (`collation` false) or collation the server knows;
    /// `what` says where the snapshot named it.
    fn check<'a>(&self, name: &'a str, collation: bool, what: &str) -> Result<&'a str, String> {
        let known = if collation {
            &self.collations
        } else {
            &self.charsets
        };
        let lower = name.to_ascii_lowercase();
        // `utf8` is `utf8mb3` since MariaDB 10.6: snapshots of older servers use the old name.
        let alias = lower
            .strip_prefix("utf8")
            .filter(|rest| rest.is_empty() || rest.starts_with('_'))
            .map(|rest| format!("utf8mb3{rest}"));
        let plain =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain && (known.contains(&lower) || alias.is_some_and(|a| known.contains(&a))) {
            Ok(name)
        } else {
            let kind = if collation {
                "collation"
            } else {
                "character set"
            };
            Err(format!(
                "{what} names the {kind} {name:?}, which the target server does not know; \
                 restore to a server that has it"
            ))
        }
    }
}

/// The first warnings of the last statement, one line: each names the column and row.
fn warnings(c: &mut Conn, count: u16) -> String {
    let shown: Result<Vec<(String, u32, String)>, _> = c.query("SHOW WARNINGS LIMIT 3");
    let first = match shown {
        Ok(w) => w
            .into_iter()
            .map(|(level, code, msg)| format!("{level} {code}: {msg}"))
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("SHOW WARNINGS failed: {e}"),
    };
    format!("{count} warning(s): {first}")
}

/// Runs definitions that depend on each other (views on views, in any database) until all
/// exist or no progress is made. Each item: the database it goes into, its text, its record.
fn create_definitions(
    spec: &ConnSpec,
    c: &mut Conn,
    defs: &[(String, String, Definition)],
) -> Result<(), DbError> {
    let names = Names::read(spec, c)?;
    // A restore over a database that has them already replaces them.
    for (db, _, d) in defs {
        let kind = match d.kind.as_str() {
            "view" => "VIEW",
            "procedure" => "PROCEDURE",
            "function" => "FUNCTION",
            "trigger" => "TRIGGER",
            "event" => "EVENT",
            other => {
                return Err(fail(
                    spec,
                    format!(
                        "the snapshot holds a definition of unknown kind `{other}` (`{db}`.`{}`)",
                        d.name
                    ),
                ))
            }
        };
        exec(
            spec,
            c,
            &format!("DROP {kind} IF EXISTS {}.{}", quote(db), quote(&d.name)),
            &format!("replace {} `{db}`.`{}`", d.kind, d.name),
        )?;
    }
    let mut pending: Vec<&(String, String, Definition)> = defs.iter().collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_err = None;
        for item in &pending {
            let (db, text, d) = item;
            let what = format!("the {} `{db}`.`{}` in the snapshot", d.kind, d.name);
            // Quoting is only safe under a known client character set: the database is chosen
            // before the definition's own character set applies.
            exec(spec, c, "SET NAMES utf8mb4", "definition context")?;
            exec(spec, c, &format!("USE {}", quote(db)), "use database")?;
            let mut ctx = Vec::new();
            if let Some(m) = &d.sql_mode {
                ctx.push(format!("SESSION sql_mode = {}", super::sql_string(m)));
            }
            if let Some(cs) = &d.character_set_client {
                let cs = names.check(cs, false, &what).map_err(|r| fail(spec, r))?;
                ctx.push(format!("SESSION character_set_client = {cs}"));
            }
            if let Some(cc) = &d.collation_connection {
                let cc = names.check(cc, true, &what).map_err(|r| fail(spec, r))?;
                ctx.push(format!("SESSION collation_connection = {cc}"));
            }
            // An event keeps the time zone it was created in.
            if let Some(tz) = &d.time_zone {
                ctx.push(format!("SESSION time_zone = {}", super::sql_string(tz)));
            }
            if !ctx.is_empty() {
                exec(
                    spec,
                    c,
                    &format!("SET {}", ctx.join(", ")),
                    "definition context",
                )?;
            }
            match c.query_drop(text) {
                Ok(()) => {}
                Err(e) => {
                    last_err = Some(format!("{} `{db}`.`{}`: {e}", d.kind, d.name));
                    failed.push(*item);
                }
            }
        }
        if failed.len() == pending.len() {
            return Err(fail(spec, last_err.unwrap_or_default()));
        }
        pending = failed;
    }
    exec(
        spec,
        c,
        &format!(
            "SET SESSION sql_mode = '{LOAD_SQL_MODE}', SESSION time_zone = '+00:00', NAMES utf8mb4"
        ),
        "session reset",
    )
}

/// Creates (or replaces) a database's sequences and sets each where the source's stood:
/// before the tables, whose DEFAULT NEXTVAL(...) needs them.
fn create_sequences(
    spec: &ConnSpec,
    c: &mut Conn,
    db: &str,
    sequences: &[&Sequence],
) -> Result<(), DbError> {
    for s in sequences {
        let what = format!("sequence `{db}`.`{}`", s.name);
        let create = s
            .create
            .replacen("CREATE SEQUENCE", "CREATE OR REPLACE SEQUENCE", 1);
        exec(spec, c, &format!("USE {}", quote(db)), "use database")?;
        exec(spec, c, &create, &what)?;
        // The numbers come from our own snapshot file, but are checked: they go into SQL.
        let number = |v: &str| {
            !v.is_empty()
                && v.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
        };
        if !number(&s.next_value) || !number(&s.cycle_count) {
            return Err(fail(
                spec,
                format!(
                    "{what}: the snapshot's state ({}, {}) is not a number",
                    s.next_value, s.cycle_count
                ),
            ));
        }
        exec(
            spec,
            c,
            &format!(
                "DO SETVAL({}.{}, {}, 0, {})",
                quote(db),
                quote(&s.name),
                s.next_value,
                s.cycle_count
            ),
            &what,
        )?;
    }
    Ok(())
}

enum Job {
    Load(Box<(String, Table, DataFile)>),
    Index { what: String, sql: String },
}

enum Next {
    Run(Job),
    /// Nothing can start now; a running load may make something ready.
    Wait,
    Done,
}

type TableKey = (String, String);

fn key(db: &str, table: &str) -> TableKey {
    (db.to_string(), table.to_string())
}

/// Whether a CREATE TABLE declares an AUTO_INCREMENT column. With InnoDB's default
/// `innodb_autoinc_lock_mode` (1), a LOAD DATA into such a table holds a table-level lock
/// until it ends, so two loads into one such table only queue behind each other.
fn has_auto_increment(create: &str) -> bool {
    create
        .lines()
        .any(|l| l.starts_with("  `") && l.contains(" AUTO_INCREMENT"))
}

/// What the load connections do next: a table's index build as soon as its data is all in,
/// otherwise the next data file of the largest table not already loading (tables with an
/// AUTO_INCREMENT column take one load at a time), so index builds of early tables overlap the
/// loading of later ones.
struct Plan {
    /// Sorted so that the next file to load is last.
    files: Vec<(String, Table, DataFile)>,
    remaining: BTreeMap<TableKey, usize>,
    indexes: BTreeMap<TableKey, String>,
    ready: Vec<Job>,
    /// Tables a connection is loading now.
    loading: BTreeMap<TableKey, usize>,
    one_at_a_time: std::collections::BTreeSet<TableKey>,
}

impl Plan {
    fn new(mut files: Vec<(String, Table, DataFile)>, tables: &[(String, Table)]) -> Plan {
        let mut remaining = BTreeMap::new();
        let mut size: BTreeMap<TableKey, u64> = BTreeMap::new();
        for (db, t, f) in &files {
            *remaining.entry(key(db, &t.name)).or_insert(0) += 1;
            *size.entry(key(db, &t.name)).or_insert(0) += f.bytes;
        }
        let mut indexes = BTreeMap::new();
        let mut ready = Vec::new();
        for (db, t) in tables
            .iter()
            .filter(|(_, t)| !t.deferred_indexes.is_empty())
        {
            let adds: Vec<String> = t
                .deferred_indexes
                .iter()
                .map(|i| format!("ADD {i}"))
                .collect();
            let sql = format!(
                "ALTER TABLE {}.{} {}",
                quote(db),
                quote(&t.name),
                adds.join(", ")
            );
            if remaining.contains_key(&key(db, &t.name)) {
                indexes.insert(key(db, &t.name), sql);
            } else {
                ready.push(Job::Index {
                    what: format!("indexes of `{db}`.`{}`", t.name),
                    sql,
                });
            }
        }
        let one_at_a_time = tables
            .iter()
            .filter(|(_, t)| has_auto_increment(&t.create))
            .map(|(db, t)| key(db, &t.name))
            .collect();
        // Largest tables first (their index builds take longest), a table's files in order.
        files.sort_by_cached_key(|(db, t, f)| {
            let k = key(db, &t.name);
            (size[&k], k, std::cmp::Reverse(f.path.clone()))
        });
        Plan {
            files,
            remaining,
            indexes,
            ready,
            loading: BTreeMap::new(),
            one_at_a_time,
        }
    }

    fn next(&mut self) -> Next {
        if let Some(j) = self.ready.pop() {
            return Next::Run(j);
        }
        // A table no connection is loading yet comes first; then one that takes more loads.
        let pick = self
            .files
            .iter()
            .rposition(|(db, t, _)| !self.loading.contains_key(&key(db, &t.name)))
            .or_else(|| {
                self.files
                    .iter()
                    .rposition(|(db, t, _)| !self.one_at_a_time.contains(&key(db, &t.name)))
            });
        match pick {
            Some(i) => {
                let (db, t, f) = self.files.remove(i);
                *self.loading.entry(key(&db, &t.name)).or_insert(0) += 1;
                Next::Run(Job::Load(Box::new((db, t, f))))
            }
            None if self.files.is_empty() && self.loading.is_empty() => Next::Done,
            None => Next::Wait,
        }
    }

    fn loaded(&mut self, db: &str, table: &str) {
        let k = key(db, table);
        if let Some(n) = self.loading.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.loading.remove(&k);
            }
        }
        if let Some(n) = self.remaining.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                if let Some(sql) = self.indexes.remove(&k) {
                    self.ready.push(Job::Index {
                        what: format!("indexes of `{db}`.`{table}`"),
                        sql,
                    });
                }
            }
        }
    }
}

/// What the shadows hold once every file is loaded and checked.
struct Staged {
    report: LoadReport,
    /// Target databases to create if missing: (name, character set, collation).
    databases: Vec<(String, String, String)>,
    /// Per target database, the sequences to set as in the snapshot.
    sequences: Vec<(String, Vec<Sequence>)>,
    /// `(target database, table)`s loaded into the shadows.
    tables: Vec<(String, String)>,
}

/// Creates the chosen tables in shadow databases, loads their data and builds their indexes
/// there, checking every file against the manifest. Touches nothing of the target's own.
#[allow(clippy::too_many_arguments)]
fn stage(
    spec: &ConnSpec,
    files: &ClientFiles,
    schema: &Schema,
    manifest: &Manifest,
    fetch: &Fetch,
    opts: &LoadOptions,
    main: &mut Conn,
    shadows: &mut Shadows,
) -> Result<Staged, DbError> {
    let target_db = |db: &str| {
        opts.rename
            .get(db)
            .cloned()
            .unwrap_or_else(|| db.to_string())
    };
    let names = Names::read(spec, main)?;
    let mut report = LoadReport {
        position: manifest.position.clone(),
        ..Default::default()
    };
    // 1. Databases and tables, without secondary indexes, in the shadows.
    let mut work: Vec<(String, Table, DataFile)> = Vec::new();
    let mut tables: Vec<(String, Table)> = Vec::new();
    let mut databases = Vec::new();
    let mut sequences = Vec::new();
    let mut swapped = Vec::new();
    for d in &schema.databases {
        let chosen: Vec<&Table> = d
            .tables
            .iter()
            .filter(|t| wanted(opts, &d.name, &t.name))
            .collect();
        if chosen.is_empty()
            && !(opts.tables.is_empty()
                && (opts.databases.is_empty() || opts.databases.contains(&d.name)))
        {
            continue;
        }
        let db = target_db(&d.name);
        let what = format!("the database `{}` in the snapshot", d.name);
        let charset = names
            .check(&d.charset, false, &what)
            .map_err(|r| fail(spec, r))?;
        let collation = names
            .check(&d.collation, true, &what)
            .map_err(|r| fail(spec, r))?;
        databases.push((db.clone(), charset.to_string(), collation.to_string()));
        let chosen_sequences: Vec<&Sequence> = d
            .sequences
            .iter()
            .filter(|s| wanted(opts, &d.name, &s.name))
            .collect();
        if !chosen_sequences.is_empty() {
            // A table's DEFAULT NEXTVAL(...) names its sequence in the target database, where
            // it must exist when the shadow table is created: a missing one is added now, and
            // all are set as in the snapshot once the tables are in place.
            exec(
                spec,
                main,
                &format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {charset} COLLATE {collation}",
                    quote(&db)
                ),
                "create database",
            )?;
            for s in &chosen_sequences {
                exec(spec, main, &format!("USE {}", quote(&db)), "use database")?;
                exec(
                    spec,
                    main,
                    &s.create
                        .replacen("CREATE SEQUENCE", "CREATE SEQUENCE IF NOT EXISTS", 1),
                    &format!("sequence `{db}`.`{}`", s.name),
                )?;
            }
            sequences.push((db.clone(), chosen_sequences.into_iter().cloned().collect()));
        }
        if chosen.is_empty() {
            continue;
        }
        let shadow = shadows.of(&db);
        exec(
            spec,
            main,
            &format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {charset} COLLATE {collation}",
                quote(&shadow),
            ),
            "create the shadow database",
        )?;
        exec(
            spec,
            main,
            &format!("USE {}", quote(&shadow)),
            "use database",
        )?;
        for t in chosen {
            exec(
                spec,
                main,
                &t.create,
                &format!("create table `{db}`.`{}`", t.name),
            )?;
            tables.push((shadow.clone(), t.clone()));
            swapped.push((db.clone(), t.name.clone()));
            for f in manifest
                .files
                .iter()
                .filter(|f| f.database == d.name && f.table == t.name)
            {
                work.push((shadow.clone(), t.clone(), f.clone()));
            }
        }
    }
    if schema.databases.is_empty() || (tables.is_empty() && !opts.tables.is_empty()) {
        return Err(fail(
            spec,
            format!(
                "nothing in the snapshot matches databases {:?} / tables {:?}",
                opts.databases, opts.tables
            ),
        ));
    }
    report.tables = tables.len();
    // 2. Data, then each table's secondary indexes as soon as its last file is in, over N
    //    connections: index builds overlap the loading of other tables.
    let plan = Mutex::new(Plan::new(work, &tables));
    let changed = Condvar::new();
    let totals = Mutex::new((0u64, 0u64));
    let errors: Mutex<Option<DbError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.connections.max(1) {
            let (plan, changed, totals, errors, fetch) =
                (&plan, &changed, &totals, &errors, &fetch);
            s.spawn(move || {
                let give_up = |e: DbError| {
                    errors.lock().unwrap().get_or_insert(e);
                    changed.notify_all();
                };
                let mut c = match session(spec, files, opts.binlog) {
                    Ok(c) => c,
                    Err(e) => return give_up(e),
                };
                loop {
                    let job = {
                        let mut p = plan.lock().unwrap();
                        loop {
                            if errors.lock().unwrap().is_some() {
                                return;
                            }
                            match p.next() {
                                Next::Run(job) => break job,
                                Next::Done => return,
                                Next::Wait => p = changed.wait(p).unwrap(),
                            }
                        }
                    };
                    let res = match job {
                        Job::Load(load) => {
                            let (db, t, f) = *load;
                            let res = load_file(spec, &mut c, fetch, &db, &t, &f);
                            if let Ok(rows) = res {
                                let mut g = totals.lock().unwrap();
                                g.0 += rows;
                                g.1 += f.bytes;
                            }
                            plan.lock().unwrap().loaded(&db, &t.name);
                            changed.notify_all();
                            res.map(|_| ())
                        }
                        Job::Index { what, sql } => exec(spec, &mut c, &sql, &what),
                    };
                    if let Err(e) = res {
                        return give_up(e);
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap() {
        return Err(e);
    }
    let (rows, bytes) = totals.into_inner().unwrap();
    report.rows = rows;
    report.bytes = bytes;
    Ok(Staged {
        report,
        databases,
        sequences,
        tables: swapped,
    })
}

/// Restores a native snapshot. `fetch` streams a snapshot file by path.
///
/// The tables are loaded into shadow databases and replace the target's only when every file
/// matched the manifest: a restore that fails before that leaves the target as it was.
/// Every chunk loads with `LOAD DATA LOCAL INFILE`, which a server with `local_infile` off
/// refuses (MySQL 8.0 and later are so by default). Said before anything is changed, with
/// what to do, instead of as the first chunk's error after the schema was staged.
fn local_infile_on(spec: &ConnSpec, c: &mut Conn) -> Result<(), DbError> {
    let on: Option<i64> = c
        .query_first("SELECT @@GLOBAL.local_infile")
        .map_err(|e| classify(spec, &e))?;
    if on == Some(0) {
        return Err(fail(
            spec,
            "the server has local_infile OFF, and the native restore loads every table with \
             LOAD DATA LOCAL INFILE (MySQL 8.0 and later turn it off by default): turn it on \
             for the restore (SET PERSIST local_infile = ON, or start the server with \
             --local-infile=ON), or restore a snapshot taken with mysqldump"
                .into(),
        ));
    }
    Ok(())
}

pub fn load(
    spec: &ConnSpec,
    files: &ClientFiles,
    schema: &Schema,
    manifest: &Manifest,
    fetch: Fetch,
    opts: &LoadOptions,
) -> Result<LoadReport, DbError> {
    let target_db = |db: &str| {
        opts.rename
            .get(db)
            .cloned()
            .unwrap_or_else(|| db.to_string())
    };
    if manifest.format > MANIFEST_FORMAT {
        return Err(fail(
            spec,
            format!(
                "the snapshot's manifest has format {}, and this coffer reads up to {MANIFEST_FORMAT}: \
                 restore it with a newer coffer",
                manifest.format
            ),
        ));
    }
    let mut main = session(spec, files, opts.binlog)?;
    exec(spec, &mut main, "SET NAMES utf8mb4", "session setup")?;
    local_infile_on(spec, &mut main)?;
    let mut shadows = Shadows::begin(spec, &mut main)?;
    let staged = stage(
        spec,
        files,
        schema,
        manifest,
        &fetch,
        opts,
        &mut main,
        &mut shadows,
    )
    .and_then(|staged| {
        // 3. The target databases, then every table into place at once.
        for (db, charset, collation) in &staged.databases {
            exec(
                spec,
                &mut main,
                &format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {charset} COLLATE {collation}",
                    quote(db)
                ),
                "create database",
            )?;
        }
        Ok(staged)
    });
    let staged = match staged {
        Ok(s) => match shadows.swap(spec, &mut main, &s.tables) {
            Ok(()) => Ok(s),
            Err(Swap::Before(e)) => Err(e),
            Err(Swap::After(e)) => return Err(shadows.failed(spec, e, true)),
        },
        Err(e) => Err(e),
    };
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            shadows.discard(&mut main);
            return Err(shadows.failed(spec, e, false));
        }
    };
    for (db, sequences) in &staged.sequences {
        let sequences: Vec<&Sequence> = sequences.iter().collect();
        create_sequences(spec, &mut main, db, &sequences)
            .map_err(|e| shadows.failed(spec, e, true))?;
    }
    let report = staged.report;
    // 4. Views, routines, triggers, events — after the data, so triggers do not fire on it.
    //    Views first, all databases together: a view may read one in another database.
    let mut views = Vec::new();
    let mut progs = Vec::new();
    for d in &schema.databases {
        if !(opts.databases.is_empty() || opts.databases.contains(&d.name))
            || !opts.tables.is_empty()
        {
            continue;
        }
        let db = target_db(&d.name);
        for v in &d.views {
            views.push((db.clone(), rename_refs(&v.create, &d.name, &db), v.clone()));
        }
        for p in &d.programs {
            progs.push((db.clone(), rename_refs(&p.create, &d.name, &db), p.clone()));
        }
    }
    // One pass over both: a view may call a stored function.
    views.extend(progs);
    create_definitions(spec, &mut main, &views)?;
    if opts.users {
        for stmt in &schema.users {
            exec(spec, &mut main, stmt, "users and grants")?;
        }
        exec(spec, &mut main, "FLUSH PRIVILEGES", "flush privileges")?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, auto_increment: bool, indexed: bool) -> Table {
        let extra = if auto_increment {
            " AUTO_INCREMENT"
        } else {
            ""
        };
        Table {
            name: name.into(),
            create: format!(
                "CREATE TABLE `{name}` (\n  `id` int(11) NOT NULL{extra},\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=5"
            ),
            deferred_indexes: if indexed { vec!["KEY `k` (`k`)".into()] } else { vec![] },
            columns: vec![],
            history: false,
        }
    }

    fn file(t: &str, n: usize, bytes: u64) -> DataFile {
        DataFile {
            path: format!("/coffer/1-{t}-{n}.tsv"),
            table: t.into(),
            bytes,
            ..Default::default()
        }
    }

    fn plan(tables: &[(Table, usize, u64)]) -> Plan {
        let mut files = Vec::new();
        let mut ts = Vec::new();
        for (t, n, bytes) in tables {
            ts.push(("db".to_string(), t.clone()));
            for i in 0..*n {
                files.push(("db".to_string(), t.clone(), file(&t.name, i, *bytes)));
            }
        }
        Plan::new(files, &ts)
    }

    fn loading(n: Next) -> (String, String) {
        match n {
            Next::Run(Job::Load(l)) => (l.1.name.clone(), l.2.path.clone()),
            Next::Run(Job::Index { what, .. }) => panic!("expected a load, got {what}"),
            Next::Wait => panic!("expected a load, got Wait"),
            Next::Done => panic!("expected a load, got Done"),
        }
    }

    #[test]
    fn auto_increment_is_seen_on_columns_only() {
        assert!(has_auto_increment(&table("a", true, false).create));
        assert!(!has_auto_increment(&table("a", false, false).create));
    }

    #[test]
    fn tables_with_auto_increment_take_one_load_at_a_time() {
        let mut p = plan(&[
            (table("big", true, true), 2, 100),
            (table("small", true, true), 1, 10),
        ]);
        // Largest table first, its files in order; then another table, not the busy one.
        assert_eq!(
            loading(p.next()),
            ("big".into(), "/coffer/1-big-0.tsv".into())
        );
        assert_eq!(loading(p.next()).0, "small");
        assert!(matches!(p.next(), Next::Wait));
        p.loaded("db", "big");
        assert_eq!(
            loading(p.next()),
            ("big".into(), "/coffer/1-big-1.tsv".into())
        );
        assert!(matches!(p.next(), Next::Wait));
        // The last file of a table makes its index build the next job.
        p.loaded("db", "small");
        match p.next() {
            Next::Run(Job::Index { sql, .. }) => {
                assert_eq!(sql, "ALTER TABLE `db`.`small` ADD KEY `k` (`k`)")
            }
            _ => panic!("expected the index build of `small`"),
        }
        assert!(matches!(p.next(), Next::Wait), "a load is still running");
        p.loaded("db", "big");
        assert!(matches!(p.next(), Next::Run(Job::Index { .. })));
        assert!(matches!(p.next(), Next::Done));
    }

    #[test]
    fn tables_without_auto_increment_take_parallel_loads() {
        let mut p = plan(&[(table("t", false, false), 3, 100)]);
        for i in 0..3 {
            assert_eq!(loading(p.next()).1, format!("/coffer/1-t-{i}.tsv"));
        }
        assert!(matches!(p.next(), Next::Wait));
        for _ in 0..3 {
            p.loaded("db", "t");
        }
        assert!(matches!(p.next(), Next::Done), "no indexes to build");
    }

    #[test]
    fn only_charset_names_the_server_knows_go_into_sql() {
        let names = Names {
            charsets: ["utf8mb4", "utf8mb3", "latin1", "gbk"]
                .map(String::from)
                .into(),
            collations: ["utf8mb4_bin", "utf8mb3_general_ci"]
                .map(String::from)
                .into(),
        };
        let what = "the view `d`.`v` in the snapshot";
        assert_eq!(names.check("latin1", false, what), Ok("latin1"));
        assert_eq!(names.check("GBK", false, what), Ok("GBK"));
        assert_eq!(names.check("utf8mb4_bin", true, what), Ok("utf8mb4_bin"));
        // Older servers' `utf8` is today's `utf8mb3`.
        assert_eq!(names.check("utf8", false, what), Ok("utf8"));
        assert_eq!(
            names.check("utf8_general_ci", true, what),
            Ok("utf8_general_ci")
        );
        for bad in [
            "",
            "latin2",
            "utf8mb4_bin",
            "utf8x",
            "latin1; DROP DATABASE d",
            "latin1 COLLATE latin1_bin",
            "`latin1`",
            "'latin1'",
        ] {
            let e = names.check(bad, false, what).unwrap_err();
            assert!(e.starts_with(what) && e.contains("character set"), "{e}");
        }
        assert!(
            names.check("latin1", true, what).is_err(),
            "a charset is no collation"
        );
    }

    #[test]
    fn manifests_of_either_checksum_are_verified() {
        let old = DataFile {
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            ..Default::default()
        };
        let (mut sum, want) = Checksum::for_file(&old).unwrap();
        sum.update(b"abc");
        assert_eq!(sum.hex(), want);
        let new = DataFile {
            xxh3: "78af5f94892f3950".into(),
            sha256: "ignored when xxh3 is there".into(),
            ..Default::default()
        };
        let (mut sum, want) = Checksum::for_file(&new).unwrap();
        sum.update(b"abc");
        assert_eq!(sum.hex(), want);
        assert!(Checksum::for_file(&DataFile::default()).is_none());
    }

    /// Loads `data` as the one file of table `t` in database `db` on a fresh server; the
    /// server and the result.
    fn load_one(
        t: Table,
        data: &'static [u8],
    ) -> (coffer_testkit::MariaDb, Result<LoadReport, DbError>) {
        let server = coffer_testkit::MariaDb::start().unwrap();
        let spec = ConnSpec {
            host: server.host().to_string(),
            port: server.port(),
            user: "root".into(),
            password: server.root_password().to_string(),
            tls: None,
            label: "test".into(),
        };
        let files = ClientFiles::new(&spec, crate::conn::ClientFlavor::MariaDb).unwrap();
        let mut sum = XxHash3_64::new();
        sum.write(data);
        let schema = Schema {
            format: 1,
            databases: vec![crate::native::schema::Database {
                name: "db".into(),
                charset: "utf8mb4".into(),
                collation: "utf8mb4_general_ci".into(),
                tables: vec![t.clone()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let manifest = Manifest {
            format: 2,
            files: vec![DataFile {
                path: "/coffer/1-000000".into(),
                database: "db".into(),
                table: t.name.clone(),
                rows: data.iter().filter(|b| **b == b'\n').count() as u64,
                bytes: data.len() as u64,
                xxh3: format!("{:016x}", sum.finish()),
                pieces: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        };
        let fetch: Fetch = Arc::new(move |_, w| {
            w.write_all(data)?;
            Ok(data.len() as u64)
        });
        let opts = LoadOptions {
            connections: 1,
            ..Default::default()
        };
        let res = load(&spec, &files, &schema, &manifest, fetch, &opts);
        (server, res)
    }

    fn columns(cols: &[(&str, &str)]) -> Vec<crate::native::schema::Column> {
        cols.iter()
            .map(|(n, t)| crate::native::schema::Column {
                name: n.to_string(),
                data_type: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_value_the_server_cannot_store_fails_the_load_and_names_it() {
        let t = Table {
            name: "t".into(),
            create:
                "CREATE TABLE `t` (`id` int NOT NULL PRIMARY KEY, `n` int NOT NULL, `s` varchar(3))"
                    .into(),
            columns: columns(&[("id", "int"), ("n", "int"), ("s", "varchar")]),
            ..Default::default()
        };
        // Not a number, and a string too long: the server would store 0 and a cut string.
        let (_server, res) = load_one(t, b"1\tabc\txyz\n2\t5\ttoo long\n");
        let e = res.expect_err("a lossy load must fail").to_string();
        assert!(e.contains("into `db`.`t`"), "{e}");
        assert!(
            e.contains("Incorrect integer value: 'abc' for column `db`.`t`.`n` at row 1"),
            "{e}"
        );
        assert!(e.contains("Data truncated for column 's' at row 2"), "{e}");
    }

    #[test]
    fn uuid_and_inet_values_load_as_dumped() {
        let t = Table {
            name: "m".into(),
            create:
                "CREATE TABLE `m` (`id` int NOT NULL PRIMARY KEY, `u` uuid, `i4` inet4, `i6` inet6)"
                    .into(),
            columns: columns(&[
                ("id", "int"),
                ("u", "uuid"),
                ("i4", "inet4"),
                ("i6", "inet6"),
            ]),
            ..Default::default()
        };
        let (server, res) = load_one(
            t,
            b"1\t123e4567-e89b-12d3-a456-426655440000\t10.0.0.1\t2001:db8::1\n2\t\\N\t\\N\t\\N\n",
        );
        res.unwrap();
        assert_eq!(
            server
                .query_strings("SELECT CONCAT_WS(' ', id, u, i4, i6) FROM db.m ORDER BY id")
                .unwrap(),
            vec![
                vec![Some(
                    "1 123e4567-e89b-12d3-a456-426655440000 10.0.0.1 2001:db8::1".into()
                )],
                vec![Some("2".into())]
            ]
        );
    }
}
