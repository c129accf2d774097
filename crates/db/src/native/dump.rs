//! The native dump: N connections share one consistent snapshot (a brief global read lock
//! while every connection starts `WITH CONSISTENT SNAPSHOT` and the binlog position is read),
//! and tables are split into primary-key chunks, one query each. A worker per connection
//! streams a chunk's rows into pieces: files small enough that the repository stores each
//! whole, without the byte-by-byte scan of content-defined chunking, with boundaries chosen
//! by the rows' content so that an unchanged stretch of a table makes the same pieces from
//! one backup to the next. The repository takes the pieces in snapshot order as the workers
//! make them; a worker runs at most a few pieces ahead, so memory stays flat.

use std::{
    collections::VecDeque,
    hash::Hasher as _,
    io::{BufRead, Read},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
};

use mysql::{prelude::Queryable, Conn, Value};
use twox_hash::XxHash3_64;

use super::{
    quote,
    schema::{Column, DataFile, Database, Definition, Manifest, Position, Schema, Sequence, Table},
    types, MANIFEST_PATH, SCHEMA_PATH,
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
    /// The largest piece, in bytes: the repository's largest file stored without
    /// content-defined chunking (its minimum chunk size).
    pub piece_bytes: usize,
    /// One more connection in the snapshot, for the caller ([`NativeDump::take_extra`]):
    /// the per-table checksums a restore verification compares are read there.
    pub extra_connection: bool,
}

impl Default for NativeDumpOptions {
    fn default() -> Self {
        NativeDumpOptions {
            connections: 2,
            chunk_bytes: 64 << 20,
            databases: Vec::new(),
            users: false,
            piece_bytes: 1 << 20,
            extra_connection: false,
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

/// What the workers and the repository's reading share.
#[derive(Default)]
struct State {
    /// Per chunk: pieces made and not yet taken, oldest first.
    queues: Vec<VecDeque<Vec<u8>>>,
    /// Per chunk: its record once its worker has made every piece.
    done: Vec<Option<DataFile>>,
    /// Bytes of the pieces in all queues.
    buffered: usize,
    /// The chunk the repository takes pieces from now.
    reading: usize,
    failure: Option<String>,
    /// The repository stopped taking pieces (the backup failed elsewhere).
    abandoned: bool,
}

struct Shared {
    pool: Pool,
    state: Mutex<State>,
    changed: Condvar,
    target: String,
    /// The next chunk no worker has started.
    next: AtomicUsize,
    /// Emptied piece buffers, back from the repository: without them every piece would be a
    /// fresh allocation, faulted in page by page.
    spare: Mutex<Vec<Vec<u8>>>,
    limits: PieceLimits,
}

/// A prepared native dump: the snapshot is open on every connection.
pub struct NativeDump {
    shared: Arc<Shared>,
    chunks: Vec<Chunk>,
    schema: Schema,
    position: Position,
    started: String,
    extra: Option<Conn>,
}

fn q(spec: &ConnSpec, c: &mut Conn, sql: &str) -> Result<(), DbError> {
    c.query_drop(sql).map_err(|e| classify(spec, &e))
}

fn rows(spec: &ConnSpec, c: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>, DbError> {
    let out: Vec<mysql::Row> = c.query(sql).map_err(|e| classify(spec, &e))?;
    Ok(strings(out))
}

/// Every value of `rows` as text, `None` for NULL.
fn strings(rows: Vec<mysql::Row>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
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
        .collect()
}

fn now() -> String {
    // Kept dependency-free: seconds since the epoch are enough for the manifest.
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.to_string()
}

/// The quoted identifier a line of SHOW CREATE TABLE starts with (after its indent), e.g.
/// "`a``b`".
fn leading_ident(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t.strip_prefix('`')?;
    let mut i = 0;
    let b = rest.as_bytes();
    while i < b.len() {
        if b[i] == b'`' {
            if b.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(&t[..i + 2]);
        }
        i += 1;
    }
    None
}

/// Removes secondary index clauses from a CREATE TABLE, returning them separately. The
/// first index on an AUTO_INCREMENT column stays: the server refuses such a column without
/// one (a table of SERIAL columns has no primary key, only a UNIQUE KEY).
fn split_indexes(create: &str) -> (String, Vec<String>) {
    let auto_col = create
        .lines()
        .filter(|l| l.starts_with("  `") && l.contains(" AUTO_INCREMENT"))
        .find_map(leading_ident);
    let mut auto_keyed = create.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("PRIMARY KEY (") && auto_col.is_some_and(|c| t[13..].starts_with(c))
    });
    let mut keep = Vec::new();
    let mut deferred = Vec::new();
    for line in create.lines() {
        let t = line.trim_start();
        let is_index = t.starts_with("KEY ")
            || t.starts_with("UNIQUE KEY ")
            || t.starts_with("FULLTEXT KEY ")
            || t.starts_with("SPATIAL KEY ");
        let on_auto = !t.starts_with("FULLTEXT") && !t.starts_with("SPATIAL") && {
            let cols = t.find(" (").map(|i| &t[i + 2..]).unwrap_or("");
            auto_col.is_some_and(|c| cols.starts_with(c))
        };
        // The auto column's index stays until it has one.
        let needed = on_auto && !auto_keyed;
        if is_index && line.starts_with("  ") && !needed {
            deferred.push(t.trim_end_matches(',').to_string());
        } else {
            auto_keyed |= is_index && on_auto;
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

/// The columns a table's data files hold, from `COLUMN_NAME, DATA_TYPE, COLUMN_TYPE,
/// GENERATION_EXPRESSION` rows: every stored column, generated ones left out (the server
/// computes them again). Fails on a type the native format does not carry exactly. A
/// system-versioned table (`history`) also keeps its period's start and end.
fn stored_columns(
    db: &str,
    table: &str,
    cols: &[Vec<Option<String>>],
    history: bool,
) -> Result<Vec<Column>, String> {
    let mut out = Vec::new();
    let mut period = 0;
    for r in cols {
        let name = r[0].clone().unwrap_or_default();
        let data_type = r[1].clone().unwrap_or_default().to_ascii_lowercase();
        let column_type = r[2].clone().unwrap_or_default();
        // MariaDB leaves GENERATION_EXPRESSION NULL on ordinary columns, MySQL empty; MySQL's
        // expression defaults (EXTRA `DEFAULT_GENERATED`) are ordinary columns.
        let generated = r[3].as_deref().unwrap_or("");
        let row_period = matches!(generated, "ROW START" | "ROW END");
        if !generated.is_empty() && !row_period {
            continue;
        }
        if row_period {
            period += 1;
            if data_type != "timestamp" {
                return Err(format!(
                    "`{db}`.`{table}` is versioned by transaction id (`{name}` is {column_type}); \
                     its history cannot be loaded back — back it up with method `mysqldump` or physically"
                ));
            }
        }
        if types::codec(&data_type).is_none() {
            return Err(format!(
                "`{db}`.`{table}`.`{name}` has type {column_type}, which the native dump does not \
                 know how to copy exactly — back this table up with method `mysqldump` or physically"
            ));
        }
        out.push(Column { name, data_type });
    }
    if history && period == 0 {
        // WITH SYSTEM VERSIONING without a PERIOD: the period's columns are hidden, and
        // named so.
        for name in ["row_start", "row_end"] {
            out.push(Column {
                name: name.into(),
                data_type: "timestamp".into(),
            });
        }
    }
    Ok(out)
}

/// A sequence's definition and its state in the snapshot.
fn read_sequence(
    spec: &ConnSpec,
    c: &mut Conn,
    fq: &str,
    name: String,
) -> Result<Sequence, DbError> {
    let create = rows(spec, c, &format!("SHOW CREATE SEQUENCE {fq}"))?
        .into_iter()
        .next()
        .and_then(|r| r.get(1).cloned().flatten())
        .unwrap_or_default();
    let state = rows(
        spec,
        c,
        &format!("SELECT next_not_cached_value, cycle_count FROM {fq}"),
    )?
    .into_iter()
    .next()
    .unwrap_or_default();
    let (Some(Some(next_value)), Some(Some(cycle_count))) =
        (state.first().cloned(), state.get(1).cloned())
    else {
        return Err(DbError::Dump {
            target: spec.label.clone(),
            reason: format!("sequence {fq} has no state row"),
        });
    };
    Ok(Sequence {
        name,
        create,
        next_value,
        cycle_count,
    })
}

/// `CREATE USER`/`CREATE ROLE`, `GRANT` and `SET DEFAULT ROLE` statements for every account
/// but the server's own, every account and role before any grant (a grant of a role needs
/// both ends). MariaDB's roles are rows of `mysql.user` with `is_role`; SHOW CREATE USER
/// refuses them.
fn read_accounts(spec: &ConnSpec, c: &mut Conn, mariadb: bool) -> Result<Vec<String>, DbError> {
    if !mariadb {
        return read_mysql_accounts(spec, c);
    }
    let accounts = rows(
        spec,
        c,
        &format!("SELECT User, Host, is_role FROM mysql.user WHERE User NOT IN {OWN} ORDER BY User, Host"),
    )?;
    let mut creates = Vec::new();
    let mut grants = Vec::new();
    for a in accounts {
        let user = a[0].as_deref().unwrap_or("");
        let is_role = a[2].as_deref() == Some("Y");
        let who = if is_role {
            super::sql_string(user)
        } else {
            format!(
                "{}@{}",
                super::sql_string(user),
                super::sql_string(a[1].as_deref().unwrap_or(""))
            )
        };
        if is_role {
            creates.push(format!("CREATE OR REPLACE ROLE {}", quote(user)));
        } else if let Some(s) = rows(spec, c, &format!("SHOW CREATE USER {who}"))?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
        {
            creates.push(s.replacen("CREATE USER", "CREATE OR REPLACE USER", 1));
        }
        for g in rows(spec, c, &format!("SHOW GRANTS FOR {who}"))? {
            if let Some(s) = g.into_iter().next().flatten() {
                grants.push(s);
            }
        }
    }
    // MariaDB 10.11's PUBLIC: what every account may do.
    let public = !rows(
        spec,
        c,
        "SELECT 1 FROM mysql.user WHERE User = 'PUBLIC' AND is_role = 'Y'",
    )?
    .is_empty();
    if public {
        for g in rows(spec, c, "SHOW GRANTS FOR PUBLIC")? {
            if let Some(s) = g.into_iter().next().flatten() {
                grants.push(s);
            }
        }
    }
    creates.extend(grants);
    Ok(creates)
}

const OWN: &str =
    "('', 'root', 'mariadb.sys', 'mysql.sys', 'mysql.session', 'mysql.infoschema', 'PUBLIC')";

/// MySQL's accounts (its roles are accounts too, locked ones). MySQL has no `CREATE OR
/// REPLACE USER`, and may not drop an account that is the definer of a view or routine, so
/// an account is created if missing and then altered to the snapshot's (authentication,
/// TLS, locking, password policy), its privileges revoked and granted again. A `DEFAULT
/// ROLE` clause needs its roles to exist, and so is applied last, after the grants, as its
/// own `ALTER USER ... DEFAULT ROLE`. Hashes are read as hex: MySQL's binary salts are not
/// text.
fn read_mysql_accounts(spec: &ConnSpec, c: &mut Conn) -> Result<Vec<String>, DbError> {
    // MySQL 8.0.17 and later; older servers print hashes that are text anyway.
    let _ = c.query_drop("SET SESSION print_identified_with_as_hex = ON");
    let accounts = rows(
        spec,
        c,
        &format!("SELECT User, Host FROM mysql.user WHERE User NOT IN {OWN} ORDER BY User, Host"),
    )?;
    let (mut creates, mut grants, mut defaults) = (Vec::new(), Vec::new(), Vec::new());
    for a in accounts {
        let who = format!(
            "{}@{}",
            super::sql_string(a[0].as_deref().unwrap_or("")),
            super::sql_string(a[1].as_deref().unwrap_or(""))
        );
        let Some(create) = rows(spec, c, &format!("SHOW CREATE USER {who}"))?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
        else {
            continue;
        };
        let (create, roles) = split_default_role(&create);
        let Some(rest) = create.strip_prefix("CREATE USER ") else {
            return Err(DbError::Dump {
                target: spec.label.clone(),
                reason: format!("SHOW CREATE USER {who} did not start with CREATE USER"),
            });
        };
        creates.push(format!("CREATE USER IF NOT EXISTS {rest}"));
        creates.push(format!("ALTER USER {rest}"));
        creates.push(format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {who}"));
        for g in rows(spec, c, &format!("SHOW GRANTS FOR {who}"))? {
            if let Some(s) = g.into_iter().next().flatten() {
                grants.push(s);
            }
        }
        if let Some(roles) = roles {
            defaults.push(format!("ALTER USER {who} DEFAULT ROLE {roles}"));
        }
    }
    creates.extend(grants);
    creates.extend(defaults);
    Ok(creates)
}

/// MySQL's `SHOW CREATE USER` text without its ` DEFAULT ROLE <list>` clause, and the list:
/// backquoted `user`@`host` pairs separated by commas (a backquote inside a name is
/// doubled), so a name cannot end the clause early.
fn split_default_role(create: &str) -> (String, Option<String>) {
    const KEY: &str = " DEFAULT ROLE ";
    // The clause comes after the account and its authentication: the first KEY outside
    // quotes. Hex hashes and plugin names never hold it, and names are backquoted.
    let bytes = create.as_bytes();
    let (mut i, mut quote) = (0, None::<u8>);
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => {
                if bytes.get(i + 1) == Some(&q) {
                    i += 1;
                } else {
                    quote = None;
                }
            }
            Some(_) => {}
            None if b == b'`' || b == b'\'' => quote = Some(b),
            None if create[i..].starts_with(KEY) => {
                let list_start = i + KEY.len();
                let mut j = list_start;
                let mut q = false;
                while j < bytes.len() {
                    match bytes[j] {
                        b'`' if q && bytes.get(j + 1) == Some(&b'`') => j += 1,
                        b'`' => q = !q,
                        b' ' if !q => break,
                        _ => {}
                    }
                    j += 1;
                }
                let list = create[list_start..j].to_string();
                return (format!("{}{}", &create[..i], &create[j..]), Some(list));
            }
            None => {}
        }
        i += 1;
    }
    (create.to_string(), None)
}

/// The binlog file and position (`SHOW MASTER STATUS`'s rows). MySQL renamed the statement
/// `SHOW BINARY LOG STATUS` in 8.2 and removed the old name in 8.4; MySQL before 8.2 knows
/// only the old one, so on MySQL the new name is tried first.
fn binlog_status(
    spec: &ConnSpec,
    c: &mut Conn,
    mariadb: bool,
) -> Result<Vec<Vec<Option<String>>>, DbError> {
    if !mariadb {
        match c.query::<mysql::Row, _>("SHOW BINARY LOG STATUS") {
            Ok(r) => return Ok(strings(r)),
            // 1064: a syntax error, the server is older than 8.2.
            Err(mysql::Error::MySqlError(e)) if e.code == 1064 => {}
            Err(e) => return Err(classify(spec, &e)),
        }
    }
    rows(spec, c, "SHOW MASTER STATUS")
}

impl NativeDump {
    /// Opens the snapshot on `opts.connections` connections and reads the schema.
    pub fn prepare(
        spec: &ConnSpec,
        files: &ClientFiles,
        opts: &NativeDumpOptions,
    ) -> Result<NativeDump, DbError> {
        let n = opts.connections.max(1);
        let mut lock = crate::conn::connect_control(spec, files)?;
        // Bounded: every writer on the source waits while the FTWRL does.
        crate::global_lock::flush_tables_with_read_lock(
            spec,
            files,
            &mut lock,
            crate::global_lock::FTWRL_WAIT,
        )?;
        let mut conns = Vec::new();
        for _ in 0..n + usize::from(opts.extra_connection) {
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
        let version = rows(spec, &mut lock, "SELECT VERSION()")?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        if let Some(r) = binlog_status(spec, &mut lock, mariadb)?.into_iter().next() {
            position.binlog_file = r.first().cloned().flatten();
            position.binlog_position = r.get(1).cloned().flatten().and_then(|p| p.parse().ok());
        }
        let gtid_sql = if mariadb {
            "SELECT @@gtid_binlog_pos, 'ON'"
        } else {
            "SELECT @@gtid_executed, @@gtid_mode"
        };
        // An empty state, read under the lock, is a state where the server has GTIDs (MariaDB
        // always; MySQL with gtid_mode ON): it has not binlogged a transaction yet, and the
        // backup is the base of every later one. MySQL without GTIDs has no state at all.
        position.gtid = rows(spec, &mut lock, gtid_sql)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|mut r| {
                let on = r.get(1).cloned().flatten().is_some_and(|m| m == "ON");
                r.swap_remove(0).filter(|g| on || !g.is_empty())
            });
        q(spec, &mut lock, "UNLOCK TABLES")?;
        drop(lock);
        let extra = if opts.extra_connection {
            conns.pop()
        } else {
            None
        };

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
                "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(DATA_LENGTH, 0), COALESCE(AVG_ROW_LENGTH, 0), COALESCE(ENGINE, '') \
                 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {sq} ORDER BY TABLE_NAME"
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
                match ttype.as_str() {
                    "VIEW" => {
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
                    "SEQUENCE" => {
                        d.sequences.push(read_sequence(spec, c, &fq, name)?);
                        continue;
                    }
                    "SYSTEM VIEW" => continue,
                    "BASE TABLE" | "SYSTEM VERSIONED" => {}
                    other => {
                        return Err(DbError::Dump {
                            target: spec.label.clone(),
                            reason: format!(
                                "`{db}`.`{name}` is a {other}, which the native dump does not know how to keep — \
                                 back it up with method `mysqldump`"
                            ),
                        })
                    }
                }
                let r = rows(spec, c, &format!("SHOW CREATE TABLE {fq}"))?;
                let create = r
                    .into_iter()
                    .next()
                    .and_then(|r| r.get(1).cloned().flatten())
                    .unwrap_or_default();
                let in_fk = fk_tables.iter().any(|(s, t)| s == db && t == &name);
                // A MERGE or FEDERATED table's rows belong to other tables (dumped on their
                // own) or another server: loading them through it would add them again.
                let rows_elsewhere = matches!(
                    t[4].as_deref().unwrap_or("").to_ascii_uppercase().as_str(),
                    "MRG_MYISAM" | "FEDERATED"
                );
                let (create, deferred) = if in_fk || rows_elsewhere {
                    (create, Vec::new())
                } else {
                    split_indexes(&create)
                };
                let cols = rows(
                    spec,
                    c,
                    &format!(
                        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, GENERATION_EXPRESSION FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = {sq} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                        super::sql_string(&name)
                    ),
                )?;
                let history = ttype == "SYSTEM VERSIONED";
                let columns =
                    stored_columns(db, &name, &cols, history).map_err(|reason| DbError::Dump {
                        target: spec.label.clone(),
                        reason,
                    })?;
                // History rows are kept: every version of every row, FOR SYSTEM_TIME ALL.
                let from = if history {
                    format!("{fq} FOR SYSTEM_TIME ALL")
                } else {
                    fq.clone()
                };
                // Chunks are ranges of the primary key's leading column when it is an integer,
                // alone or followed by others: such a range is one stretch of the clustered
                // index, read in key order.
                let lead: Option<String> = rows(spec, c, &format!(
                    "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {sq} \
                     AND TABLE_NAME = {} AND INDEX_NAME = 'PRIMARY' AND SEQ_IN_INDEX = 1",
                    super::sql_string(&name)
                ))?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten());
                let int_lead = lead.filter(|l| {
                    cols.iter().any(|r| {
                        r[0].as_deref() == Some(l.as_str())
                            && matches!(
                                r[1].as_deref(),
                                Some("tinyint" | "smallint" | "mediumint" | "int" | "bigint")
                            )
                    })
                });
                let exprs: Vec<String> = columns.iter().map(types::select_expr).collect();
                let base = format!("SELECT {} FROM {from}", exprs.join(", "));
                let mut selects = Vec::new();
                if let Some(lead) = int_lead.as_ref().filter(|_| !rows_elsewhere) {
                    let pkc = quote(lead);
                    let mm = rows(
                        spec,
                        c,
                        &format!("SELECT MIN({pkc}), MAX({pkc}) FROM {from}"),
                    )?;
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
                if selects.is_empty() && !rows_elsewhere {
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
                    history,
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
            let mariadb = version.to_ascii_lowercase().contains("mariadb");
            schema.users = read_accounts(spec, c, mariadb)?;
        }
        // Data connections read raw stored bytes: no character set conversion on the way out.
        for c in conns.iter_mut() {
            q(spec, c, "SET NAMES binary")?;
        }
        let width = chunks.len().to_string().len().max(6);
        for (i, ch) in chunks.iter_mut().enumerate() {
            ch.path = format!("{}/1-{i:0width$}", super::DIR);
        }
        let total = chunks.len();
        Ok(NativeDump {
            shared: Arc::new(Shared {
                pool: Pool {
                    conns: Mutex::new(conns),
                    ready: Condvar::new(),
                },
                state: Mutex::new(State {
                    queues: vec![VecDeque::new(); total],
                    done: vec![None; total],
                    ..Default::default()
                }),
                changed: Condvar::new(),
                target: spec.label.clone(),
                next: AtomicUsize::new(0),
                spare: Mutex::new(Vec::new()),
                limits: PieceLimits::new(opts.piece_bytes),
            }),
            chunks,
            schema,
            position,
            started: now(),
            extra,
        })
    }

    /// The extra connection of [`NativeDumpOptions::extra_connection`], inside the same
    /// snapshot as the dump's (its transaction started under the same global read lock).
    pub fn take_extra(&mut self) -> Option<Conn> {
        self.extra.take()
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

    /// The snapshot's files, in path order: the schema, each chunk's pieces as the workers make
    /// them (one worker per connection starts now), then the manifest.
    pub fn stream(self) -> DumpStream {
        let connections = self.shared.pool.conns.lock().unwrap().len();
        let chunks = Arc::new(self.chunks);
        for _ in 0..connections {
            let (shared, chunks) = (self.shared.clone(), chunks.clone());
            let spawned = std::thread::Builder::new()
                .name("coffer-dump".into())
                .spawn(move || work(&shared, &chunks));
            if let Err(e) = spawned {
                self.shared.fail(format!("cannot start a dump thread: {e}"));
            }
        }
        let schema = serde_json::to_vec_pretty(&self.schema).expect("schema serialises");
        DumpStream {
            shared: self.shared,
            chunks,
            schema: Some(schema),
            piece: 0,
            manifest: Some(Manifest {
                format: super::MANIFEST_FORMAT,
                server_version: self.schema.server_version,
                position: self.position,
                started: self.started,
                finished: String::new(),
                connections,
                files: Vec::new(),
            }),
        }
    }
}

/// One file of the snapshot: its path, its bytes, and its length when known up front.
pub struct DumpFile {
    pub path: String,
    pub reader: Box<dyn BufRead + Send>,
    pub size: Option<u64>,
}

/// The snapshot's files as the dump makes them; see [`NativeDump::stream`].
pub struct DumpStream {
    shared: Arc<Shared>,
    chunks: Arc<Vec<Chunk>>,
    schema: Option<Vec<u8>>,
    /// The number of the next piece of the chunk being read (`State::reading`).
    piece: usize,
    manifest: Option<Manifest>,
}

fn piece_path(chunk: &Chunk, n: usize) -> String {
    format!("{}/{n:08}.tsv", chunk.path)
}

impl Iterator for DumpStream {
    type Item = DumpFile;

    fn next(&mut self) -> Option<DumpFile> {
        if let Some(schema) = self.schema.take() {
            return Some(in_memory(SCHEMA_PATH, schema));
        }
        let mut st = self.shared.state.lock().unwrap();
        while st.reading < self.chunks.len() {
            let current = st.reading;
            let chunk = &self.chunks[current];
            if let Some(failure) = st.failure.clone() {
                // A file that fails when read fails the backup: no snapshot is written.
                st.reading = self.chunks.len();
                self.manifest = None;
                return Some(DumpFile {
                    path: piece_path(chunk, self.piece),
                    reader: Box::new(Failed(DbError::Dump {
                        target: self.shared.target.clone(),
                        reason: failure,
                    })),
                    size: None,
                });
            }
            if let Some(piece) = st.queues[current].pop_front() {
                st.buffered -= piece.len();
                self.shared.changed.notify_all();
                let path = piece_path(chunk, self.piece);
                self.piece += 1;
                let size = Some(piece.len() as u64);
                return Some(DumpFile {
                    path,
                    reader: Box::new(PieceReader {
                        shared: self.shared.clone(),
                        buf: piece,
                        pos: 0,
                    }),
                    size,
                });
            }
            if st.done[current].is_some() {
                st.reading += 1;
                self.piece = 0;
                self.shared.changed.notify_all();
                continue;
            }
            st = self.shared.changed.wait(st).unwrap();
        }
        let mut m = self.manifest.take()?;
        m.files = st.done.iter().flatten().cloned().collect();
        m.finished = now();
        let total_rows: u64 = m.files.iter().map(|f| f.rows).sum();
        tracing::info!("native dump: {} chunks, {total_rows} rows", m.files.len());
        Some(in_memory(
            MANIFEST_PATH,
            serde_json::to_vec_pretty(&m).expect("manifest serialises"),
        ))
    }
}

impl Drop for DumpStream {
    fn drop(&mut self) {
        // Workers waiting to hand over a piece stop instead of waiting for ever.
        self.shared.state.lock().unwrap().abandoned = true;
        self.shared.changed.notify_all();
    }
}

fn in_memory(path: &str, data: Vec<u8>) -> DumpFile {
    let size = Some(data.len() as u64);
    DumpFile {
        path: path.to_string(),
        reader: Box::new(std::io::Cursor::new(data)),
        size,
    }
}

/// The reader of a file the dump could not make.
struct Failed(DbError);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.to_string()))
    }
}

impl BufRead for Failed {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Err(std::io::Error::other(self.0.to_string()))
    }
    fn consume(&mut self, _: usize) {}
}

/// One piece, read by the repository; its buffer goes back to the workers afterwards.
struct PieceReader {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for PieceReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.buf[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

impl Drop for PieceReader {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // A buffer that grew past a piece's size is not kept: memory stays what pieces need.
        if buf.capacity() > self.shared.limits.capacity() {
            return;
        }
        buf.clear();
        let mut spare = self.shared.spare.lock().unwrap();
        if spare.len() < SPARE_PIECES {
            spare.push(buf);
        }
    }
}

impl Shared {
    fn fail(&self, why: String) {
        let mut st = self.state.lock().unwrap();
        st.failure.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Hands a piece of `chunk` over, waiting while the bytes in waiting are at their limit.
    fn hand_over(&self, chunk: usize, piece: Vec<u8>) -> Result<(), String> {
        let mut st = self.state.lock().unwrap();
        loop {
            if st.abandoned {
                return Err("the repository stopped reading".into());
            }
            if let Some(f) = &st.failure {
                return Err(f.clone());
            }
            let next_up = chunk == st.reading && st.queues[chunk].len() < AHEAD_PIECES;
            if next_up || st.buffered + piece.len() <= WAITING_PIECES * self.limits.max {
                break;
            }
            st = self.changed.wait(st).unwrap();
        }
        st.buffered += piece.len();
        st.queues[chunk].push_back(piece);
        self.changed.notify_all();
        Ok(())
    }

    fn fresh_piece(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.limits.capacity()))
    }
}

/// How many pieces' worth of bytes may wait for the repository, whatever the number of
/// connections. The repository takes chunks in order, so the workers on later chunks run ahead into this
/// budget and stop at it; what they made is ready the moment the repository gets there.
/// Measured on two cores, 32 pieces ahead for the second worker was 3 % faster than 8.
const WAITING_PIECES: usize = 40;

/// The chunk the repository reads may always have this many pieces waiting, so that it
/// never waits on workers that have used up the budget on later chunks. Pieces are at most
/// `PieceLimits::capacity` bytes, so this is bounded in bytes too.
const AHEAD_PIECES: usize = 8;

/// Emptied buffers kept for reuse: enough for every piece in waiting.
const SPARE_PIECES: usize = WAITING_PIECES + AHEAD_PIECES;

/// One connection's worker: takes the next chunk and makes its pieces, until none is left or
/// the dump has failed.
fn work(shared: &Shared, chunks: &[Chunk]) {
    let mut conn = shared.pool.take();
    loop {
        {
            let st = shared.state.lock().unwrap();
            if st.failure.is_some() || st.abandoned {
                break;
            }
        }
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        let Some(chunk) = chunks.get(i) else {
            break;
        };
        let mut sink = |piece| shared.hand_over(i, piece);
        let fresh = || shared.fresh_piece();
        let out = PieceWriter::new(shared.limits, &mut sink, &fresh);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            produce(&mut conn, chunk, out)
        }))
        .unwrap_or_else(|_| Err(format!("the dump of {} panicked", chunk.path)));
        match res {
            Ok(f) => {
                shared.state.lock().unwrap().done[i] = Some(f);
                shared.changed.notify_all();
            }
            Err(e) => {
                shared.fail(e);
                break;
            }
        }
    }
    shared.pool.give(conn);
}

/// Where a chunk's rows are cut into pieces. A cut comes after a row whose hash falls under a
/// threshold proportional to the row's length, once the piece holds `min` bytes; a piece never
/// passes `max` (a row that would take it past starts the next). Content decides the cuts, so
/// a change to one row changes one piece or two, not every piece after it. A row longer than
/// `max` is cut into pieces of `max` bytes and ends its last piece: LOAD DATA reads the pieces
/// of a chunk as one stream, and memory holds pieces, never a whole escaped row.
#[derive(Debug, Clone, Copy)]
struct PieceLimits {
    min: usize,
    max: usize,
    /// Cut after a row of `n` bytes when its hash is below `n * per_byte`.
    per_byte: u64,
}

impl PieceLimits {
    fn new(max: usize) -> PieceLimits {
        let max = max.max(4096);
        // Pieces average about 5/8 of the limit: few are cut short by it.
        let mean_past_min = (max / 4) as u64;
        PieceLimits {
            min: max / 2,
            max,
            per_byte: u64::MAX / mean_past_min,
        }
    }

    /// The most a piece's buffer ever holds: a piece, and one escaped segment past it.
    fn capacity(&self) -> usize {
        self.max + 2 * SEGMENT
    }

    fn cut_after(&self, row: &[u8]) -> bool {
        // The row's first bytes (its leading columns, usually the key) decide; rows alike in
        // them are held apart by the minimum size.
        let h = XxHash3_64::oneshot(&row[..row.len().min(32)]);
        h < self.per_byte.saturating_mul(row.len() as u64)
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

/// The bytes of a long value escaped at a time: at most twice this past a piece's limit.
const SEGMENT: usize = 32 << 10;

/// The producing side of a chunk: rows go into the current piece, which is checksummed and
/// handed over when it is cut.
struct PieceWriter<'a> {
    limits: PieceLimits,
    /// Takes a finished piece (for the dump: into the chunk's queue for the repository).
    sink: &'a mut dyn FnMut(Vec<u8>) -> Result<(), String>,
    /// An empty buffer for the next piece.
    fresh: &'a dyn Fn() -> Vec<u8>,
    piece: Vec<u8>,
    hasher: XxHash3_64,
    bytes: u64,
    pieces: u32,
    /// Where the current row starts in `piece`; `None` once it was cut across pieces.
    row: Option<usize>,
}

impl<'a> PieceWriter<'a> {
    fn new(
        limits: PieceLimits,
        sink: &'a mut dyn FnMut(Vec<u8>) -> Result<(), String>,
        fresh: &'a dyn Fn() -> Vec<u8>,
    ) -> PieceWriter<'a> {
        PieceWriter {
            limits,
            sink,
            fresh,
            piece: fresh(),
            hasher: XxHash3_64::new(),
            bytes: 0,
            pieces: 0,
            row: None,
        }
    }

    fn start_row(&mut self) {
        self.row = Some(self.piece.len());
    }

    /// Appends bytes of the current row, escaped for LOAD DATA or (`escape` false) as they
    /// are, handing pieces over as they fill.
    fn put(&mut self, v: &[u8], escape: bool) -> Result<(), String> {
        if self.piece.len() + 2 * v.len() <= self.limits.max {
            if escape {
                escape_into(&mut self.piece, v);
            } else {
                self.piece.extend_from_slice(v);
            }
            return Ok(());
        }
        for segment in v.chunks(SEGMENT) {
            if escape {
                escape_into(&mut self.piece, segment);
            } else {
                self.piece.extend_from_slice(segment);
            }
            self.overflow()?;
        }
        Ok(())
    }

    /// Keeps the piece within the limit: a row that took it past starts the next piece; a row
    /// longer than a piece fills pieces of the limit's size.
    fn overflow(&mut self) -> Result<(), String> {
        if self.piece.len() <= self.limits.max {
            return Ok(());
        }
        if let Some(start) = self.row.filter(|s| *s > 0) {
            let mut next = (self.fresh)();
            next.extend_from_slice(&self.piece[start..]);
            self.piece.truncate(start);
            self.hand_over(next)?;
            self.row = Some(0);
        }
        while self.piece.len() > self.limits.max {
            let mut next = (self.fresh)();
            next.extend_from_slice(&self.piece[self.limits.max..]);
            self.piece.truncate(self.limits.max);
            self.hand_over(next)?;
            self.row = None;
        }
        Ok(())
    }

    /// The current row is complete: cut after it if its content says so, or if it was cut
    /// across pieces (so the rows after it are cut as they would be without it).
    fn end_row(&mut self) -> Result<(), String> {
        self.put(b"\n", false)?;
        let cut = match self.row {
            None => true,
            Some(start) => {
                self.piece.len() >= self.limits.min && self.limits.cut_after(&self.piece[start..])
            }
        };
        if cut {
            let next = (self.fresh)();
            self.hand_over(next)?;
        }
        Ok(())
    }

    fn hand_over(&mut self, next: Vec<u8>) -> Result<(), String> {
        let piece = std::mem::replace(&mut self.piece, next);
        if piece.is_empty() {
            return Ok(());
        }
        self.hasher.write(&piece);
        self.bytes += piece.len() as u64;
        self.pieces += 1;
        (self.sink)(piece)
    }

    /// Hands over the last piece; returns (bytes, pieces, checksum) of the whole chunk.
    fn finish(mut self) -> Result<(u64, u32, String), String> {
        self.hand_over(Vec::new())?;
        Ok((
            self.bytes,
            self.pieces,
            format!("{:016x}", self.hasher.finish()),
        ))
    }
}

fn produce(conn: &mut Conn, chunk: &Chunk, mut out: PieceWriter) -> Result<DataFile, String> {
    let mut rows = 0u64;
    let mut result = conn
        .query_iter(&chunk.select)
        .map_err(|e| format!("`{}`.`{}`: {e}", chunk.database, chunk.table))?;
    while let Some(set) = result.iter() {
        for row in set {
            let row = row.map_err(|e| format!("`{}`.`{}`: {e}", chunk.database, chunk.table))?;
            out.start_row();
            for i in 0..row.len() {
                if i > 0 {
                    out.put(b"\t", false)?;
                }
                match row.as_ref(i) {
                    Some(Value::NULL) | None => out.put(b"\\N", false)?,
                    Some(Value::Bytes(b)) => out.put(b, true)?,
                    Some(other) => {
                        out.put(other.as_sql(true).trim_matches('\'').as_bytes(), true)?
                    }
                }
            }
            rows += 1;
            out.end_row()?;
        }
    }
    let (bytes, pieces, xxh3) = out.finish()?;
    Ok(DataFile {
        path: chunk.path.clone(),
        database: chunk.database.clone(),
        table: chunk.table.clone(),
        rows,
        bytes,
        xxh3,
        pieces: Some(pieces),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysqls_default_role_clause_is_taken_out_whole() {
        let create = "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x2441 \
                      DEFAULT ROLE `r_writer`@`%`,`odd`` DEFAULT ROLE x`@`%` REQUIRE NONE \
                      PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK";
        let (rest, roles) = split_default_role(create);
        assert_eq!(
            rest,
            "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x2441 \
             REQUIRE NONE PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK"
        );
        assert_eq!(
            roles.as_deref(),
            Some("`r_writer`@`%`,`odd`` DEFAULT ROLE x`@`%`")
        );
        // A name that looks like the clause is not it.
        let create = "CREATE USER ` DEFAULT ROLE `@`%` IDENTIFIED WITH 'x' REQUIRE NONE";
        assert_eq!(split_default_role(create), (create.to_string(), None));
    }
    #[test]
    fn an_auto_increment_column_keeps_its_first_index() {
        let create = "CREATE TABLE `t` (\n  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  KEY `ka` (`a`),\n  UNIQUE KEY `id` (`id`),\n  KEY `id2` (`id`,`a`)\n) ENGINE=InnoDB";
        let (c, d) = split_indexes(create);
        assert_eq!(c, "CREATE TABLE `t` (\n  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  UNIQUE KEY `id` (`id`)\n) ENGINE=InnoDB");
        assert_eq!(d, vec!["KEY `ka` (`a`)", "KEY `id2` (`id`,`a`)"]);
        // With the primary key on it, every other index waits.
        let create = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`),\n  KEY `k` (`id`)\n) ENGINE=InnoDB";
        assert_eq!(split_indexes(create).1, vec!["KEY `k` (`id`)"]);
        assert_eq!(leading_ident("  `a``b` int"), Some("`a``b`"));
    }

    #[test]
    fn secondary_indexes_are_split_off() {
        let create = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `a` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `ka` (`a`),\n  UNIQUE KEY `ub` (`a`,`id`)\n) ENGINE=InnoDB";
        let (c, d) = split_indexes(create);
        assert_eq!(c, "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `a` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB");
        assert_eq!(d, vec!["KEY `ka` (`a`)", "UNIQUE KEY `ub` (`a`,`id`)"]);
    }

    fn col_row(name: &str, t: &str, ct: &str, gen: Option<&str>) -> Vec<Option<String>> {
        vec![
            Some(name.into()),
            Some(t.into()),
            Some(ct.into()),
            gen.map(str::to_string),
        ]
    }

    #[test]
    fn an_unknown_column_type_fails_the_dump_and_names_the_column() {
        let cols = vec![
            col_row("id", "int", "int(11)", None),
            col_row("v", "VECTOR", "vector(3)", None),
        ];
        let e = stored_columns("db", "t", &cols, false).unwrap_err();
        assert!(e.contains("`db`.`t`.`v` has type vector(3)"), "{e}");
    }

    #[test]
    fn stored_columns_skip_generated_ones_and_keep_the_history_period() {
        let cols = vec![
            col_row("id", "int", "int(11)", None),
            // MySQL: an ordinary column has an empty expression, also one with an
            // expression default (EXTRA `DEFAULT_GENERATED`).
            col_row("d", "datetime", "datetime", Some("")),
            col_row("g", "int", "int(11)", Some("`id` * 2")),
            col_row("u", "uuid", "uuid", None),
            col_row("s", "timestamp", "timestamp(6)", Some("ROW START")),
            col_row("e", "timestamp", "timestamp(6)", Some("ROW END")),
        ];
        let names = |c: Vec<Column>| c.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(stored_columns("db", "t", &cols, true).unwrap()),
            ["id", "d", "u", "s", "e"]
        );
        // WITH SYSTEM VERSIONING without a PERIOD: the hidden columns are named so.
        assert_eq!(
            names(stored_columns("db", "t", &cols[..2], true).unwrap()),
            ["id", "d", "row_start", "row_end"]
        );
        assert_eq!(
            names(stored_columns("db", "t", &cols[..2], false).unwrap()),
            ["id", "d"]
        );
        // Versioned by transaction id: its history cannot be written back.
        let trx = vec![
            col_row("id", "int", "int(11)", None),
            col_row("s", "bigint", "bigint(20) unsigned", Some("ROW START")),
            col_row("e", "bigint", "bigint(20) unsigned", Some("ROW END")),
        ];
        assert!(stored_columns("db", "t", &trx, true)
            .unwrap_err()
            .contains("versioned by transaction id"));
    }

    /// Cuts `rows` into pieces as a dump does.
    fn pieces_of(rows: &[Vec<u8>], limits: PieceLimits) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut sink = |p: Vec<u8>| {
            out.push(p);
            Ok(())
        };
        let fresh = Vec::new;
        let mut w = PieceWriter::new(limits, &mut sink, &fresh);
        for r in rows {
            w.start_row();
            w.put(&r[..r.len() - 1], false).unwrap();
            w.end_row().unwrap();
        }
        let (bytes, n, _) = w.finish().unwrap();
        assert_eq!(bytes, rows.iter().map(|r| r.len() as u64).sum::<u64>());
        assert_eq!(n as usize, out.len());
        out
    }

    fn row(i: u32, pad: usize) -> Vec<u8> {
        format!("{i}\t{}\t{}\n", i % 977, "x".repeat(pad)).into_bytes()
    }

    #[test]
    fn pieces_stay_under_the_limit_and_survive_a_changed_row() {
        let limits = PieceLimits::new(64 << 10);
        let rows: Vec<Vec<u8>> = (0..20_000)
            .map(|i| row(i, 40 + (i as usize % 7) * 10))
            .collect();
        let before = pieces_of(&rows, limits);
        assert_eq!(
            before.concat(),
            rows.concat(),
            "pieces are the rows, in order"
        );
        assert!(before.len() > 10, "{} pieces", before.len());
        for p in &before {
            assert!(p.len() <= limits.max, "a piece of {} bytes", p.len());
            assert!(p.ends_with(b"\n"), "pieces end at row boundaries");
        }
        // Content decides the cuts: most pieces are past the minimum, few hit the limit.
        let at_limit = before.iter().filter(|p| p.len() + 200 > limits.max).count();
        assert!(
            at_limit * 4 < before.len(),
            "{at_limit} of {} at the limit",
            before.len()
        );

        // One row grows in the middle: the pieces before it and from a little after it on
        // are the same as before, so they deduplicate.
        let mut changed = rows.clone();
        changed[10_000] = row(10_000, 300);
        let after = pieces_of(&changed, limits);
        let same = after.iter().filter(|p| before.contains(p)).count();
        assert!(
            same + 3 >= before.len().max(after.len()),
            "{same} of {} pieces unchanged",
            after.len()
        );
    }

    #[test]
    fn a_row_longer_than_the_limit_fills_pieces_of_its_own() {
        let limits = PieceLimits::new(4096);
        let rows = vec![row(1, 10), row(2, 9000), row(3, 10)];
        let pieces = pieces_of(&rows, limits);
        // The rows around it are pieces as before; the long row fills whole pieces and ends
        // its last one.
        assert_eq!(
            pieces.len(),
            5,
            "{:?}",
            pieces.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(pieces[0], rows[0]);
        assert_eq!(pieces[4], rows[2]);
        assert_eq!(pieces[1..4].concat(), rows[1]);
        assert_eq!((pieces[1].len(), pieces[2].len()), (4096, 4096));
    }

    #[test]
    fn a_long_value_is_escaped_straight_into_pieces() {
        let limits = PieceLimits::new(4096);
        let mut out = Vec::new();
        let mut sink = |p: Vec<u8>| {
            out.push(p);
            Ok(())
        };
        let fresh = Vec::new;
        let mut w = PieceWriter::new(limits, &mut sink, &fresh);
        // 200 KiB of bytes that escape to twice their size, then a short row.
        let value: Vec<u8> = (0..200 << 10)
            .map(|i| [b'\t', b'a', 0, b'\n'][i % 4])
            .collect();
        let mut want = b"1\t".to_vec();
        escape_into(&mut want, &value);
        want.extend_from_slice(b"\n2\tb\n");
        for (id, v) in [(&b"1"[..], &value[..]), (b"2", b"b")] {
            w.start_row();
            w.put(id, true).unwrap();
            w.put(b"\t", false).unwrap();
            w.put(v, true).unwrap();
            w.end_row().unwrap();
        }
        let (bytes, _, _) = w.finish().unwrap();
        assert_eq!(bytes, want.len() as u64);
        assert_eq!(out.concat(), want);
        assert!(out.iter().all(|p| p.len() <= limits.max));
        assert_eq!(
            out.last().unwrap(),
            b"2\tb\n",
            "the long row ends its last piece"
        );
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
