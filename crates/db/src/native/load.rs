//! The native parallel load: tables created without their secondary indexes, data loaded
//! with LOAD DATA over N connections (no unique or foreign-key checks, binlog off unless
//! asked), every file's checksum and row count compared with the manifest, then indexes,
//! views, routines, triggers and events — each with the session context it was created in.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex},
};

use mysql::{prelude::Queryable, Conn, LocalInfileHandler};
use sha2::{Digest, Sha256};

use super::{
    quote,
    schema::{DataFile, Definition, Manifest, Position, Schema, Table},
};
use crate::{
    conn::{classify, connect, ClientFiles, ConnSpec},
    DbError,
};

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
        DbError::Query { reason, .. } => fail(spec, format!("{what}: {reason}")),
        other => other,
    })
}

fn session(spec: &ConnSpec, files: &ClientFiles, binlog: bool) -> Result<Conn, DbError> {
    let mut c = connect(spec, files)?;
    exec(
        spec,
        &mut c,
        "SET SESSION foreign_key_checks = 0, SESSION unique_checks = 0, SESSION time_zone = '+00:00', \
         SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
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
        if c.data_type == "bit" {
            cols.push(format!("@c{i}"));
            sets.push(format!("{} = CAST(@c{i} AS UNSIGNED)", quote(&c.name)));
        } else {
            cols.push(quote(&c.name));
        }
    }
    let mut s = format!(
        "LOAD DATA LOCAL INFILE {} INTO TABLE {}.{} CHARACTER SET binary ({})",
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

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
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
    let digest: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (d, fetch2, path) = (digest.clone(), fetch.clone(), f.path.clone());
    c.set_local_infile_handler(Some(LocalInfileHandler::new(move |_, w| {
        let mut hw = HashingWriter {
            inner: w,
            hasher: Sha256::new(),
        };
        fetch2(&path, &mut hw)?;
        *d.lock().unwrap() = Some(
            hw.hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
        Ok(())
    })));
    let sql = load_statement(db, t, &f.path);
    c.query_drop(&sql).map_err(|e| {
        fail(
            spec,
            format!("loading {} into `{db}`.`{}`: {e}", f.path, t.name),
        )
    })?;
    let rows = c.affected_rows();
    let got = digest.lock().unwrap().clone().unwrap_or_default();
    if got != f.sha256 {
        return Err(fail(
            spec,
            format!(
                "{} does not match its checksum in the manifest (got {got}, expected {})",
                f.path, f.sha256
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

/// Runs definitions that depend on each other (views on views) until all exist or no
/// progress is made.
fn create_definitions(
    spec: &ConnSpec,
    c: &mut Conn,
    db: &str,
    defs: &[(String, Definition)],
) -> Result<(), DbError> {
    let mut pending: Vec<&(String, Definition)> = defs.iter().collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_err = None;
        for item in &pending {
            let (text, d) = item;
            let mut ctx = Vec::new();
            if let Some(m) = &d.sql_mode {
                ctx.push(format!("SESSION sql_mode = {}", super::sql_string(m)));
            }
            if let Some(cs) = &d.character_set_client {
                ctx.push(format!(
                    "SESSION character_set_client = {}",
                    super::sql_string(cs)
                ));
            }
            if let Some(cc) = &d.collation_connection {
                ctx.push(format!(
                    "SESSION collation_connection = {}",
                    super::sql_string(cc)
                ));
            }
            if !ctx.is_empty() {
                exec(
                    spec,
                    c,
                    &format!("SET {}", ctx.join(", ")),
                    "definition context",
                )?;
            }
            exec(spec, c, &format!("USE {}", quote(db)), "use database")?;
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
        "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', SESSION time_zone = '+00:00', NAMES utf8mb4",
        "session reset",
    )
}

/// Restores a native snapshot. `fetch` streams a snapshot file by path.
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
    let mut main = session(spec, files, opts.binlog)?;
    exec(spec, &mut main, "SET NAMES utf8mb4", "session setup")?;
    let mut report = LoadReport {
        position: manifest.position.clone(),
        ..Default::default()
    };
    // 1. Databases and tables, without secondary indexes.
    let mut work: Vec<(String, Table, DataFile)> = Vec::new();
    let mut tables: Vec<(String, Table)> = Vec::new();
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
        exec(
            spec,
            &mut main,
            &format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {}",
                quote(&db),
                d.charset,
                d.collation
            ),
            "create database",
        )?;
        exec(
            spec,
            &mut main,
            &format!("USE {}", quote(&db)),
            "use database",
        )?;
        for t in chosen {
            exec(
                spec,
                &mut main,
                &format!("DROP TABLE IF EXISTS {}.{}", quote(&db), quote(&t.name)),
                "drop table",
            )?;
            exec(
                spec,
                &mut main,
                &t.create,
                &format!("create table `{db}`.`{}`", t.name),
            )?;
            tables.push((db.clone(), t.clone()));
            for f in manifest
                .files
                .iter()
                .filter(|f| f.database == d.name && f.table == t.name)
            {
                work.push((db.clone(), t.clone(), f.clone()));
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
    // 2. Data over N connections.
    // Workers pop from the end: the largest files go first.
    work.sort_by_key(|w| w.2.bytes);
    let queue = Arc::new(Mutex::new(work));
    let totals = Arc::new(Mutex::new((0u64, 0u64)));
    let n = opts.connections.max(1);
    let errors: Arc<Mutex<Option<DbError>>> = Arc::new(Mutex::new(None));
    std::thread::scope(|s| {
        for _ in 0..n {
            let (queue, totals, errors, fetch) =
                (queue.clone(), totals.clone(), errors.clone(), fetch.clone());
            s.spawn(move || {
                let mut c = match session(spec, files, opts.binlog) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                loop {
                    if errors.lock().unwrap().is_some() {
                        return;
                    }
                    let Some((db, t, f)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    match load_file(spec, &mut c, &fetch, &db, &t, &f) {
                        Ok(rows) => {
                            let mut g = totals.lock().unwrap();
                            g.0 += rows;
                            g.1 += f.bytes;
                        }
                        Err(e) => {
                            errors.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = errors.lock().unwrap().take() {
        return Err(e);
    }
    let (rows, bytes) = *totals.lock().unwrap();
    report.rows = rows;
    report.bytes = bytes;
    // 3. Secondary indexes, one ALTER per table, over N connections.
    let alters: Vec<(String, String)> = tables
        .iter()
        .filter(|(_, t)| !t.deferred_indexes.is_empty())
        .map(|(db, t)| {
            let adds: Vec<String> = t
                .deferred_indexes
                .iter()
                .map(|i| format!("ADD {i}"))
                .collect();
            (
                format!("indexes of `{db}`.`{}`", t.name),
                format!(
                    "ALTER TABLE {}.{} {}",
                    quote(db),
                    quote(&t.name),
                    adds.join(", ")
                ),
            )
        })
        .collect();
    let queue = Arc::new(Mutex::new(alters));
    std::thread::scope(|s| {
        for _ in 0..n {
            let (queue, errors) = (queue.clone(), errors.clone());
            s.spawn(move || {
                let mut c = match session(spec, files, opts.binlog) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                while let Some((what, sql)) = queue.lock().unwrap().pop() {
                    if let Err(e) = exec(spec, &mut c, &sql, &what) {
                        errors.lock().unwrap().get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = errors.lock().unwrap().take() {
        return Err(e);
    }
    // 4. Views, routines, triggers, events — after the data, so triggers do not fire on it.
    for d in &schema.databases {
        if !(opts.databases.is_empty() || opts.databases.contains(&d.name))
            || !opts.tables.is_empty()
        {
            continue;
        }
        let db = target_db(&d.name);
        let views: Vec<(String, Definition)> = d
            .views
            .iter()
            .map(|v| (rename_refs(&v.create, &d.name, &db), v.clone()))
            .collect();
        create_definitions(spec, &mut main, &db, &views)?;
        let progs: Vec<(String, Definition)> = d
            .programs
            .iter()
            .map(|p| (rename_refs(&p.create, &d.name, &db), p.clone()))
            .collect();
        create_definitions(spec, &mut main, &db, &progs)?;
    }
    if opts.users {
        for stmt in &schema.users {
            exec(spec, &mut main, stmt, "users and grants")?;
        }
        exec(spec, &mut main, "FLUSH PRIVILEGES", "flush privileges")?;
    }
    Ok(report)
}
