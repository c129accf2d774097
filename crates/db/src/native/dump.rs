//! The native dump: N connections share one consistent snapshot (a brief global read lock
//! while every connection starts `WITH CONSISTENT SNAPSHOT` and the binlog position is read),
//! tables are split into primary-key ranges, and each chunk is produced only when the
//! repository reads its file — so memory stays flat and at most as many chunks are in
//! flight as the repository reads at once.

use std::{
    hash::Hasher as _,
    io::{BufRead, BufReader, Read},
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
};

use mysql::{prelude::Queryable, Conn, Value};
use twox_hash::XxHash3_64;

use super::{
    quote,
    schema::{Column, DataFile, Database, Definition, Manifest, Position, Schema, Table},
    MANIFEST_PATH, SCHEMA_PATH,
};
use crate::{
    conn::{classify, connect, ClientFiles, ConnSpec},
    DbError,
};

#[derive(Debug, Clone)]
pub struct NativeDumpOptions {
    pub connections: usize,
    /// Target size of one chunk of a table, in bytes of table data.
    pub chunk_bytes: u64,
    /// Databases to dump; empty means every user database.
    pub databases: Vec<String>,
    pub users: bool,
}

impl Default for NativeDumpOptions {
    fn default() -> Self {
        NativeDumpOptions {
            connections: 2,
            chunk_bytes: 64 << 20,
            databases: Vec::new(),
            users: false,
        }
    }
}

const SYSTEM: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// One chunk of one table.
#[derive(Debug, Clone)]
struct Chunk {
    path: String,
    database: String,
    table: String,
    select: String,
}

/// Connections inside the snapshot, lent to chunk readers one at a time.
struct Pool {
    conns: Mutex<Vec<Conn>>,
    ready: Condvar,
}

impl Pool {
    fn take(&self) -> Conn {
        let mut g = self.conns.lock().unwrap();
        loop {
            if let Some(c) = g.pop() {
                return c;
            }
            g = self.ready.wait(g).unwrap();
        }
    }
    fn give(&self, c: Conn) {
        self.conns.lock().unwrap().push(c);
        self.ready.notify_one();
    }
}

/// Shared progress: finished files and the first failure.
#[derive(Default)]
struct Progress {
    files: Vec<DataFile>,
    failure: Option<String>,
}

struct Shared {
    pool: Pool,
    progress: Mutex<Progress>,
    done: Condvar,
    total: usize,
    target: String,
}

/// A prepared native dump: the snapshot is open on every connection.
pub struct NativeDump {
    shared: Arc<Shared>,
    chunks: Vec<Chunk>,
    schema: Schema,
    position: Position,
    started: String,
}

fn q(spec: &ConnSpec, c: &mut Conn, sql: &str) -> Result<(), DbError> {
    c.query_drop(sql).map_err(|e| classify(spec, &e))
}

fn rows(spec: &ConnSpec, c: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>, DbError> {
    let out: Vec<mysql::Row> = c.query(sql).map_err(|e| classify(spec, &e))?;
    Ok(out
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(true).trim_matches('\'').to_string()),
                })
                .collect()
        })
        .collect())
}

fn now() -> String {
    // Kept dependency-free: seconds since the epoch are enough for the manifest.
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.to_string()
}

/// Removes secondary index clauses from a CREATE TABLE, returning them separately.
fn split_indexes(create: &str) -> (String, Vec<String>) {
    let mut keep = Vec::new();
    let mut deferred = Vec::new();
    for line in create.lines() {
        let t = line.trim_start();
        let is_index = t.starts_with("KEY ")
            || t.starts_with("UNIQUE KEY ")
            || t.starts_with("FULLTEXT KEY ")
            || t.starts_with("SPATIAL KEY ");
        if is_index && line.starts_with("  ") {
            deferred.push(t.trim_end_matches(',').to_string());
        } else {
            keep.push(line.to_string());
        }
    }
    // The line before the closing `)` must not end with a comma any more.
    if let Some(i) = keep.iter().position(|l| l.starts_with(')')) {
        if i > 0 {
            let prev = keep[i - 1].trim_end_matches(',').to_string();
            keep[i - 1] = prev;
        }
    }
    (keep.join("\n"), deferred)
}

impl NativeDump {
    /// Opens the snapshot on `opts.connections` connections and reads the schema.
    pub fn prepare(
        spec: &ConnSpec,
        files: &ClientFiles,
        opts: &NativeDumpOptions,
    ) -> Result<NativeDump, DbError> {
        let n = opts.connections.max(1);
        let mut lock = connect(spec, files)?;
        q(spec, &mut lock, "FLUSH TABLES WITH READ LOCK").map_err(|e| match e {
            DbError::Query { target, reason } => DbError::Query {
                target,
                reason: format!("{reason} — the native dump needs the RELOAD privilege for its brief global read lock"),
            },
            other => other,
        })?;
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut c = connect(spec, files)?;
            q(
                spec,
                &mut c,
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            )?;
            q(
                spec,
                &mut c,
                "SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 3600",
            )?;
            q(spec, &mut c, "START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
            conns.push(c);
        }
        let mut position = Position::default();
        if let Some(r) = rows(spec, &mut lock, "SHOW MASTER STATUS")?
            .into_iter()
            .next()
        {
            position.binlog_file = r.first().cloned().flatten();
            position.binlog_position = r.get(1).cloned().flatten().and_then(|p| p.parse().ok());
        }
        let version = rows(spec, &mut lock, "SELECT VERSION()")?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        let gtid_sql = if version.to_ascii_lowercase().contains("mariadb") {
            "SELECT @@gtid_binlog_pos"
        } else {
            "SELECT @@gtid_executed"
        };
        position.gtid = rows(spec, &mut lock, gtid_sql)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.into_iter().next().flatten())
            .filter(|g| !g.is_empty());
        q(spec, &mut lock, "UNLOCK TABLES")?;
        drop(lock);

        // Definitions, read inside the snapshot on the first connection.
        let c = &mut conns[0];
        q(spec, c, "SET NAMES utf8mb4")?;
        let dbs: Vec<String> = rows(
            spec,
            c,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .filter(|d| !SYSTEM.contains(&d.as_str()))
        .filter(|d| opts.databases.is_empty() || opts.databases.contains(d))
        .collect();
        for want in &opts.databases {
            if !dbs.contains(want) {
                return Err(DbError::Query {
                    target: spec.label.clone(),
                    reason: format!("database `{want}` does not exist"),
                });
            }
        }
        let mut schema = Schema {
            format: 1,
            server_version: version.clone(),
            ..Default::default()
        };
        let mut chunks = Vec::new();
        // Tables in a foreign-key relationship keep their indexes in the CREATE: a constraint
        // needs its index to exist.
        let fk_tables: Vec<(String, String)> = rows(
            spec,
            c,
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS \
             UNION SELECT UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS",
        )?
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
        .collect();
        for db in &dbs {
            let sq = super::sql_string(db);
            let cs = rows(spec, c, &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {sq}"
            ))?;
            let (charset, collation) = cs
                .into_iter()
                .next()
                .map(|r| {
                    (
                        r[0].clone().unwrap_or_default(),
                        r[1].clone().unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            let mut d = Database {
                name: db.clone(),
                charset,
                collation,
                ..Default::default()
            };
            let tables = rows(spec, c, &format!(
                "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(DATA_LENGTH, 0), COALESCE(AVG_ROW_LENGTH, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {sq} ORDER BY TABLE_NAME"
            ))?;
            for t in tables {
                let name = t[0].clone().unwrap_or_default();
                let ttype = t[1].clone().unwrap_or_default();
                let data_len: u64 = t[2].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                let avg_row: u64 = t[3]
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or(200);
                let fq = format!("{}.{}", quote(db), quote(&name));
                if ttype == "VIEW" {
                    let r = rows(spec, c, &format!("SHOW CREATE VIEW {fq}"))?;
                    let r = r.into_iter().next().unwrap_or_default();
                    d.views.push(Definition {
                        kind: "view".into(),
                        name,
                        create: r.get(1).cloned().flatten().unwrap_or_default(),
                        sql_mode: None,
                        character_set_client: r.get(2).cloned().flatten(),
                        collation_connection: r.get(3).cloned().flatten(),
                        time_zone: None,
                    });
                    continue;
                }
                if ttype == "SEQUENCE" || ttype == "SYSTEM VIEW" {
                    continue;
                }
                let r = rows(spec, c, &format!("SHOW CREATE TABLE {fq}"))?;
                let create = r
                    .into_iter()
                    .next()
                    .and_then(|r| r.get(1).cloned().flatten())
                    .unwrap_or_default();
                let in_fk = fk_tables.iter().any(|(s, t)| s == db && t == &name);
                let (create, deferred) = if in_fk {
                    (create, Vec::new())
                } else {
                    split_indexes(&create)
                };
                let cols = rows(spec, c, &format!(
                    "SELECT COLUMN_NAME, DATA_TYPE, EXTRA, COLUMN_KEY FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = {sq} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    super::sql_string(&name)
                ))?;
                let columns: Vec<Column> = cols
                    .iter()
                    .filter(|r| {
                        !r[2]
                            .as_deref()
                            .unwrap_or("")
                            .to_ascii_uppercase()
                            .contains("GENERATED")
                            && !r[2]
                                .as_deref()
                                .unwrap_or("")
                                .to_ascii_uppercase()
                                .contains("PERSISTENT")
                    })
                    .map(|r| Column {
                        name: r[0].clone().unwrap_or_default(),
                        data_type: r[1].clone().unwrap_or_default().to_ascii_lowercase(),
                    })
                    .collect();
                let pk: Vec<&Vec<Option<String>>> = cols
                    .iter()
                    .filter(|r| r[3].as_deref() == Some("PRI"))
                    .collect();
                let exprs: Vec<String> = columns
                    .iter()
                    .map(|col| match col.data_type.as_str() {
                        // The text protocol rounds FLOAT to 6 digits; its DOUBLE form round-trips.
                        "float" => format!("CAST({} AS DOUBLE)", quote(&col.name)),
                        "bit" => format!("CAST({} AS UNSIGNED)", quote(&col.name)),
                        _ => quote(&col.name),
                    })
                    .collect();
                let base = format!("SELECT {} FROM {fq}", exprs.join(", "));
                let int_pk = pk.len() == 1
                    && matches!(
                        pk[0][1].as_deref(),
                        Some("tinyint" | "smallint" | "mediumint" | "int" | "bigint")
                    );
                let mut selects = Vec::new();
                if int_pk {
                    let pkc = quote(pk[0][0].as_deref().unwrap_or(""));
                    let mm = rows(spec, c, &format!("SELECT MIN({pkc}), MAX({pkc}) FROM {fq}"))?;
                    let lo: Option<i128> = mm
                        .first()
                        .and_then(|r| r[0].as_deref())
                        .and_then(|v| v.parse().ok());
                    let hi: Option<i128> = mm
                        .first()
                        .and_then(|r| r[1].as_deref())
                        .and_then(|v| v.parse().ok());
                    // Statistics lag behind fresh data: the key span is a second estimate.
                    let span = lo
                        .zip(hi)
                        .map(|(l, h)| (h - l + 1).max(0) as u64)
                        .unwrap_or(0);
                    let pieces = (data_len.max(span.saturating_mul(avg_row))
                        / opts.chunk_bytes.max(1))
                    .max(1);
                    if let (Some(lo), Some(hi), true) = (lo, hi, pieces > 1) {
                        let step = ((hi - lo) / pieces as i128).max(1);
                        let mut a = lo;
                        while a <= hi {
                            let b = a + step;
                            if b > hi {
                                selects.push(format!("{base} WHERE {pkc} >= {a}"));
                            } else {
                                selects.push(format!("{base} WHERE {pkc} >= {a} AND {pkc} < {b}"));
                            }
                            a = b;
                        }
                    }
                }
                if selects.is_empty() {
                    selects.push(base);
                }
                for s in selects {
                    chunks.push(Chunk {
                        path: String::new(),
                        database: db.clone(),
                        table: name.clone(),
                        select: s,
                    });
                }
                d.tables.push(Table {
                    name,
                    create,
                    deferred_indexes: deferred,
                    columns,
                });
            }
            for (kind, list_sql, show) in [
                ("procedure", format!("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {sq} AND ROUTINE_TYPE = 'PROCEDURE'"), "SHOW CREATE PROCEDURE"),
                ("function", format!("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {sq} AND ROUTINE_TYPE = 'FUNCTION'"), "SHOW CREATE FUNCTION"),
                ("trigger", format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {sq} ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER"), "SHOW CREATE TRIGGER"),
                ("event", format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {sq}"), "SHOW CREATE EVENT"),
            ] {
                for r in rows(spec, c, &list_sql)? {
                    let name = r[0].clone().unwrap_or_default();
                    let s = rows(spec, c, &format!("{show} {}.{}", quote(db), quote(&name)))?;
                    let s = s.into_iter().next().unwrap_or_default();
                    // SHOW CREATE PROCEDURE/FUNCTION/TRIGGER: name, sql_mode, create, client, collation;
                    // SHOW CREATE EVENT: name, sql_mode, time_zone, create, client, collation.
                    let (create_i, cs_i) = if kind == "event" { (3, 4) } else { (2, 3) };
                    d.programs.push(Definition {
                        kind: kind.into(),
                        name,
                        create: s.get(create_i).cloned().flatten().unwrap_or_default(),
                        sql_mode: s.get(1).cloned().flatten(),
                        character_set_client: s.get(cs_i).cloned().flatten(),
                        collation_connection: s.get(cs_i + 1).cloned().flatten(),
                        time_zone: if kind == "event" {
                            s.get(2).cloned().flatten()
                        } else {
                            None
                        },
                    });
                }
            }
            schema.databases.push(d);
        }
        if opts.users {
            let users = rows(spec, c, "SELECT User, Host FROM mysql.user WHERE User NOT IN ('', 'root', 'mariadb.sys', 'mysql.sys', 'mysql.session', 'mysql.infoschema', 'PUBLIC')")?;
            for u in users {
                let who = format!(
                    "{}@{}",
                    super::sql_string(u[0].as_deref().unwrap_or("")),
                    super::sql_string(u[1].as_deref().unwrap_or(""))
                );
                if let Some(r) = rows(spec, c, &format!("SHOW CREATE USER {who}"))?
                    .into_iter()
                    .next()
                {
                    if let Some(s) = r.into_iter().next().flatten() {
                        schema
                            .users
                            .push(s.replacen("CREATE USER", "CREATE OR REPLACE USER", 1));
                    }
                }
                for g in rows(spec, c, &format!("SHOW GRANTS FOR {who}"))? {
                    if let Some(s) = g.into_iter().next().flatten() {
                        schema.users.push(s);
                    }
                }
            }
        }
        // Data connections read raw stored bytes: no character set conversion on the way out.
        for c in conns.iter_mut() {
            q(spec, c, "SET NAMES binary")?;
        }
        for (i, ch) in chunks.iter_mut().enumerate() {
            ch.path = format!("/coffer/1-{i:06}.tsv");
        }
        let total = chunks.len();
        Ok(NativeDump {
            shared: Arc::new(Shared {
                pool: Pool {
                    conns: Mutex::new(conns),
                    ready: Condvar::new(),
                },
                progress: Mutex::new(Progress::default()),
                done: Condvar::new(),
                total,
                target: spec.label.clone(),
            }),
            chunks,
            schema,
            position,
            started: now(),
        })
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The snapshot's files, in order: schema, data chunks (produced on first read), manifest
    /// (produced when every chunk is done).
    pub fn files(self) -> Vec<(String, Box<dyn BufRead + Send>)> {
        let mut out: Vec<(String, Box<dyn BufRead + Send>)> = Vec::new();
        let schema = serde_json::to_vec_pretty(&self.schema).expect("schema serialises");
        out.push((SCHEMA_PATH.into(), Box::new(std::io::Cursor::new(schema))));
        let connections = self.shared.pool.conns.lock().unwrap().len();
        for ch in self.chunks {
            out.push((
                ch.path.clone(),
                Box::new(ChunkReader::new(self.shared.clone(), ch)),
            ));
        }
        out.push((
            MANIFEST_PATH.into(),
            Box::new(BufReader::new(ManifestReader {
                shared: self.shared,
                base: Manifest {
                    format: 1,
                    server_version: self.schema.server_version,
                    position: self.position,
                    started: self.started,
                    finished: String::new(),
                    connections,
                    files: Vec::new(),
                },
                body: None,
            })),
        ));
        out
    }
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0)
}

/// Escapes one value for LOAD DATA's default format (tab-separated, backslash escapes).
/// Most values hold nothing to escape, so whole blocks are tested at once (the test has no
/// early exit and vectorises) and copied in one piece.
fn escape_into(out: &mut Vec<u8>, v: &[u8]) {
    const BLOCK: usize = 32;
    let mut copied = 0;
    for (n, block) in v.chunks(BLOCK).enumerate() {
        if !block.iter().fold(false, |any, &b| any | needs_escape(b)) {
            continue;
        }
        let base = n * BLOCK;
        for (j, &b) in block.iter().enumerate() {
            if needs_escape(b) {
                out.extend_from_slice(&v[copied..base + j]);
                out.extend_from_slice(match b {
                    b'\\' => b"\\\\",
                    b'\t' => b"\\t",
                    b'\n' => b"\\n",
                    b'\r' => b"\\r",
                    _ => b"\\0",
                });
                copied = base + j + 1;
            }
        }
    }
    out.extend_from_slice(&v[copied..]);
}

/// Rows travel from a chunk's thread to the repository in blocks of about this size, through
/// a channel of two: memory per chunk in flight stays under a megabyte, and no pipe copies.
const BLOCK_BYTES: usize = 256 << 10;

/// A block with room for the row that takes it past `BLOCK_BYTES`.
fn empty_block() -> Vec<u8> {
    Vec::with_capacity(BLOCK_BYTES + (64 << 10))
}

/// A chunk's rows as a LOAD DATA file, produced by a thread on a pooled connection when the
/// repository first reads it.
struct ChunkReader {
    shared: Arc<Shared>,
    chunk: Option<Chunk>,
    blocks: Option<Receiver<Vec<u8>>>,
    /// Emptied blocks go back to the producer, which would otherwise allocate (and fault in)
    /// a fresh quarter megabyte for every block.
    spent: Option<SyncSender<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl ChunkReader {
    fn new(shared: Arc<Shared>, chunk: Chunk) -> Self {
        ChunkReader {
            shared,
            chunk: Some(chunk),
            blocks: None,
            spent: None,
            current: Vec::new(),
            pos: 0,
            thread: None,
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        let chunk = self.chunk.take().expect("started once");
        let (tx, rx) = sync_channel(2);
        let (spent_tx, spent_rx) = sync_channel(4);
        let shared = self.shared.clone();
        self.blocks = Some(rx);
        self.spent = Some(spent_tx);
        self.thread = Some(
            std::thread::Builder::new()
                .name("coffer-chunk".into())
                .spawn(move || {
                    let mut conn = shared.pool.take();
                    let out = BlockWriter {
                        tx,
                        spent: spent_rx,
                        buf: empty_block(),
                        hasher: XxHash3_64::new(),
                        bytes: 0,
                    };
                    let res = produce(&mut conn, &chunk, out);
                    shared.pool.give(conn);
                    let mut p = shared.progress.lock().unwrap();
                    match res {
                        Ok(f) => p.files.push(f),
                        Err(e) => {
                            p.failure.get_or_insert_with(|| e.clone());
                            shared.done.notify_all();
                            return Err(e);
                        }
                    }
                    shared.done.notify_all();
                    Ok(())
                })?,
        );
        Ok(())
    }

    /// Waits for the producing thread and turns its failure into the stream's error.
    fn finish(&mut self) -> std::io::Result<()> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        let reason = match t.join() {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "a dump thread panicked".into(),
        };
        Err(std::io::Error::other(DbError::Dump {
            target: self.shared.target.clone(),
            reason,
        }))
    }
}

/// The producing side of a chunk: fills blocks, checksums them, hands them over.
struct BlockWriter {
    tx: SyncSender<Vec<u8>>,
    spent: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    hasher: XxHash3_64,
    bytes: u64,
}

impl BlockWriter {
    fn send(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hasher.write(&self.buf);
        self.bytes += self.buf.len() as u64;
        let next = match self.spent.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => empty_block(),
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(full)
            .map_err(|_| "the repository stopped reading".to_string())
    }
}

fn produce(conn: &mut Conn, chunk: &Chunk, mut out: BlockWriter) -> Result<DataFile, String> {
    let mut rows = 0u64;
    let mut result = conn
        .query_iter(&chunk.select)
        .map_err(|e| format!("`{}`.`{}`: {e}", chunk.database, chunk.table))?;
    while let Some(set) = result.iter() {
        for row in set {
            let row = row.map_err(|e| format!("`{}`.`{}`: {e}", chunk.database, chunk.table))?;
            let line = &mut out.buf;
            for i in 0..row.len() {
                if i > 0 {
                    line.push(b'\t');
                }
                match row.as_ref(i) {
                    Some(Value::NULL) | None => line.extend_from_slice(b"\\N"),
                    Some(Value::Bytes(b)) => escape_into(line, b),
                    Some(other) => {
                        escape_into(line, other.as_sql(true).trim_matches('\'').as_bytes())
                    }
                }
            }
            line.push(b'\n');
            rows += 1;
            if out.buf.len() >= BLOCK_BYTES {
                out.send()?;
            }
        }
    }
    out.send()?;
    Ok(DataFile {
        path: chunk.path.clone(),
        database: chunk.database.clone(),
        table: chunk.table.clone(),
        rows,
        bytes: out.bytes,
        xxh3: format!("{:016x}", out.hasher.finish()),
        ..Default::default()
    })
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.blocks.is_none() && self.chunk.is_some() {
            self.start()?;
        }
        while self.pos == self.current.len() {
            let Some(rx) = self.blocks.as_ref() else {
                return Ok(&[]);
            };
            match rx.recv() {
                Ok(next) => {
                    let spent = std::mem::replace(&mut self.current, next);
                    self.pos = 0;
                    if let Some(s) = &self.spent {
                        let _ = s.try_send(spent);
                    }
                }
                Err(_) => {
                    // The producer is done (or failed): the stream ends here.
                    self.blocks = None;
                    self.spent = None;
                    self.current = Vec::new();
                    self.pos = 0;
                    self.finish()?;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.current.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The manifest: written last, once every chunk has finished (or one has failed).
struct ManifestReader {
    shared: Arc<Shared>,
    base: Manifest,
    body: Option<std::io::Cursor<Vec<u8>>>,
}

impl Read for ManifestReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.body.is_none() {
            let mut p = self.shared.progress.lock().unwrap();
            while p.files.len() < self.shared.total && p.failure.is_none() {
                p = self.shared.done.wait(p).unwrap();
            }
            if let Some(f) = &p.failure {
                return Err(std::io::Error::other(DbError::Dump {
                    target: self.shared.target.clone(),
                    reason: f.clone(),
                }));
            }
            let mut m = self.base.clone();
            m.files = p.files.clone();
            m.files.sort_by(|a, b| a.path.cmp(&b.path));
            m.finished = now();
            let total_rows: u64 = m.files.iter().map(|f| f.rows).sum();
            tracing::info!("native dump: {} files, {total_rows} rows", m.files.len());
            self.body = Some(std::io::Cursor::new(
                serde_json::to_vec_pretty(&m).expect("manifest serialises"),
            ));
        }
        self.body.as_mut().expect("set").read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_indexes_are_split_off() {
        let create = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `a` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `ka` (`a`),\n  UNIQUE KEY `ub` (`a`,`id`)\n) ENGINE=InnoDB";
        let (c, d) = split_indexes(create);
        assert_eq!(c, "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `a` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB");
        assert_eq!(d, vec!["KEY `ka` (`a`)", "UNIQUE KEY `ub` (`a`,`id`)"]);
    }

    #[test]
    fn values_escape_for_load_data() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a\tb\nc\\d\0e\rf");
        assert_eq!(out, b"a\\tb\\nc\\\\d\\0e\\rf");
    }

    #[test]
    fn escaping_is_the_same_across_block_boundaries() {
        // Specials at the edges of the 32-byte blocks, in long and short values.
        for len in [0, 1, 31, 32, 33, 64, 100] {
            for at in [0, 30, 31, 32, 33, 63, 64, 99] {
                let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if at < len {
                    v[at] = b'\t';
                    v[len - 1] = 0;
                }
                let mut want = Vec::new();
                for &b in &v {
                    match b {
                        b'\t' => want.extend_from_slice(b"\\t"),
                        0 => want.extend_from_slice(b"\\0"),
                        _ => want.push(b),
                    }
                }
                let mut out = b"x".to_vec();
                escape_into(&mut out, &v);
                assert_eq!(&out[1..], &want[..], "len {len}, special at {at}");
            }
        }
    }
}
