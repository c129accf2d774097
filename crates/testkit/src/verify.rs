//! Compare a source server with a restored one.
//!
//! Typical use:
//!
//! ```ignore
//! let before = verify::checksums_without_float_tables(&mut src, &["shop"])?;
//! let after = verify::checksums_without_float_tables(&mut dst, &["shop"])?;
//! if let Some(diff) = verify::diff(&before, &after) { panic!("restore differs:\n{diff}") }
//! ```

use crate::mariadb::{ident, query_strings, sql_string};
use anyhow::{anyhow, Context, Result};
use mysql::prelude::Queryable;
use mysql::{Conn, Row};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Databases that are the server's own, never user data.
pub const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "mysql", "sys"];

/// `CHECKSUM TABLE ... EXTENDED` of every base table (and system-versioned table) in
/// `dbs`, keyed `"db.table"`; `None` where the server returns NULL.
pub fn checksums(conn: &mut Conn, dbs: &[&str]) -> Result<BTreeMap<String, Option<u64>>> {
    checksums_filtered(conn, dbs, false)
}

/// Like [`checksums`], but without tables that have FLOAT columns (a logical dump
/// prints FLOATs in a rounded decimal form, so their bits, and so the checksum, may
/// change; compare those with [`float_values`]).
pub fn checksums_without_float_tables(
    conn: &mut Conn,
    dbs: &[&str],
) -> Result<BTreeMap<String, Option<u64>>> {
    checksums_filtered(conn, dbs, true)
}

fn checksums_filtered(
    conn: &mut Conn,
    dbs: &[&str],
    skip_float_tables: bool,
) -> Result<BTreeMap<String, Option<u64>>> {
    let mut out = BTreeMap::new();
    for db in dbs {
        let float_tables = if skip_float_tables {
            tables_with_float_columns(conn, db)?
        } else {
            Vec::new()
        };
        for table in base_tables(conn, db)? {
            if float_tables.contains(&table) {
                continue;
            }
            let sql = format!("CHECKSUM TABLE {}.{} EXTENDED", ident(db), ident(&table));
            let row: Option<(String, Option<u64>)> = conn
                .query_first(&sql)
                .with_context(|| format!("SQL failed: {sql}"))?;
            let (_, sum) = row.ok_or_else(|| anyhow!("{sql} returned no row"))?;
            out.insert(format!("{db}.{table}"), sum);
        }
    }
    Ok(out)
}

/// Every database except [`SYSTEM_DATABASES`], sorted.
pub fn user_databases(conn: &mut Conn) -> Result<Vec<String>> {
    let mut dbs: Vec<String> = conn
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        .context("list databases")?;
    dbs.retain(|d| !SYSTEM_DATABASES.contains(&d.as_str()));
    dbs.sort();
    Ok(dbs)
}

/// The definitions of every table, view, trigger, procedure, function, event and
/// sequence in `db`, keyed `"KIND db.name"` with KIND one of `table`, `view`,
/// `trigger`, `procedure`, `function`, `event`, `sequence`.
///
/// Values are the `SHOW CREATE ...` statement followed by the context the object was
/// created in and that a faithful restore must keep (`sql_mode`, `time_zone`,
/// `character_set_client`, `collation_connection`, database collation), one
/// `name=value` line each. Only columns that legitimately differ between servers
/// (a trigger's `Created` time) are left out; nothing is rewritten — tables keep
/// their `AUTO_INCREMENT=` counter, objects their DEFINER.
pub fn show_creates(conn: &mut Conn, db: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let q = sql_string(db);
    let d = ident(db);

    let tables: Vec<(String, String)> = conn.query(format!(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {q}"
    ))?;
    for (name, ty) in tables {
        let (kind, what) = match ty.as_str() {
            "VIEW" => ("view", "VIEW"),
            "SEQUENCE" => ("sequence", "SEQUENCE"),
            _ => ("table", "TABLE"),
        };
        let sql = format!("SHOW CREATE {what} {d}.{}", ident(&name));
        // SHOW CREATE SEQUENCE names its column `Create Table`.
        let column = if what == "SEQUENCE" { "TABLE" } else { what };
        let text = show_create(conn, &sql, &format!("Create {}", title(column)))?;
        out.insert(format!("{kind} {db}.{name}"), text);
    }

    let triggers: Vec<String> = conn.query(format!(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {q}"
    ))?;
    for name in triggers {
        let sql = format!("SHOW CREATE TRIGGER {d}.{}", ident(&name));
        let text = show_create(conn, &sql, "SQL Original Statement")?;
        out.insert(format!("trigger {db}.{name}"), text);
    }

    let routines: Vec<(String, String)> = conn.query(format!(
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES \
         WHERE ROUTINE_SCHEMA = {q} AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')"
    ))?;
    for (name, ty) in routines {
        let sql = format!("SHOW CREATE {ty} {d}.{}", ident(&name));
        let text = show_create(conn, &sql, &format!("Create {}", title(&ty)))?;
        out.insert(format!("{} {db}.{name}", ty.to_lowercase()), text);
    }

    let events: Vec<String> = conn.query(format!(
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {q}"
    ))?;
    for name in events {
        let sql = format!("SHOW CREATE EVENT {d}.{}", ident(&name));
        let text = show_create(conn, &sql, "Create Event")?;
        out.insert(format!("event {db}.{name}"), text);
    }
    Ok(out)
}

/// Every sequence's row (`next_not_cached_value`, ..., `cycle_count`) in `db`, keyed
/// `"db.name"`: where a NEXTVAL on a restored sequence starts.
pub fn sequences(conn: &mut Conn, db: &str) -> Result<BTreeMap<String, Vec<Option<String>>>> {
    let names: Vec<String> = conn.query(format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'SEQUENCE'",
        sql_string(db)
    ))?;
    let mut out = BTreeMap::new();
    for name in names {
        let sql = format!("SELECT * FROM {}.{}", ident(db), ident(&name));
        let row = query_strings(conn, &sql)
            .with_context(|| format!("SQL failed: {sql}"))?
            .into_iter()
            .next()
            .unwrap_or_default();
        out.insert(format!("{db}.{name}"), row);
    }
    Ok(out)
}

/// Every account and role but the server's own (`root`, `mariadb.sys`, ...), and PUBLIC,
/// keyed `user@host` (a role: its name): `SHOW CREATE USER` (accounts only) and the sorted
/// lines of `SHOW GRANTS`, which include role grants and `SET DEFAULT ROLE`.
pub fn accounts(conn: &mut Conn) -> Result<BTreeMap<String, Vec<String>>> {
    let rows: Vec<(String, String, String)> = conn
        .query(
            "SELECT User, Host, is_role FROM mysql.user \
             WHERE User NOT IN ('', 'root', 'mariadb.sys', 'mysql.sys', 'mysql.session', 'mysql.infoschema')",
        )
        .context("list accounts")?;
    let mut out = BTreeMap::new();
    for (user, host, is_role) in rows {
        let role = is_role == "Y";
        let who = if role {
            if user == "PUBLIC" {
                user.clone()
            } else {
                sql_string(&user)
            }
        } else {
            format!("{}@{}", sql_string(&user), sql_string(&host))
        };
        let mut lines = Vec::new();
        if !role {
            let sql = format!("SHOW CREATE USER {who}");
            let create: Option<String> = conn
                .query_first(&sql)
                .with_context(|| format!("SQL failed: {sql}"))?;
            lines.push(create.unwrap_or_default());
        }
        let sql = format!("SHOW GRANTS FOR {who}");
        let mut grants: Vec<String> = conn
            .query(&sql)
            .with_context(|| format!("SQL failed: {sql}"))?;
        grants.sort();
        lines.extend(grants);
        let key = if role { user } else { format!("{user}@{host}") };
        out.insert(key, lines);
    }
    Ok(out)
}

/// "TABLE" -> "Table".
fn title(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Runs a SHOW CREATE statement and renders the statement column plus the context
/// columns that exist in its result.
fn show_create(conn: &mut Conn, sql: &str, statement_column: &str) -> Result<String> {
    const CONTEXT: [(&str, &str); 5] = [
        ("sql_mode", "sql_mode"),
        ("time_zone", "time_zone"),
        ("character_set_client", "character_set_client"),
        ("collation_connection", "collation_connection"),
        ("Database Collation", "database_collation"),
    ];
    let row: Row = conn
        .query_first(sql)
        .with_context(|| format!("SQL failed: {sql}"))?
        .ok_or_else(|| anyhow!("{sql} returned no row"))?;
    let get = |name: &str| -> Option<Option<String>> {
        let idx = row
            .columns_ref()
            .iter()
            .position(|c| c.name_str().eq_ignore_ascii_case(name))?;
        let value = row.as_ref(idx)?.clone();
        Some(crate::mariadb::value_to_string(value))
    };
    let statement = get(statement_column)
        .ok_or_else(|| anyhow!("{sql}: no column {statement_column:?}"))?
        .ok_or_else(|| {
            anyhow!("{sql}: {statement_column} is NULL (missing privileges to see the body?)")
        })?;
    let mut text = statement;
    for (column, label) in CONTEXT {
        if let Some(value) = get(column) {
            text.push_str(&format!(
                "\n{label}={}",
                value.unwrap_or_else(|| "NULL".into())
            ));
        }
    }
    Ok(text)
}

/// `CAST(col AS CHAR)` of every FLOAT column in `db`, keyed `"db.table.col"`, rows
/// ordered by the primary key (or by all columns when there is none).
pub fn float_values(conn: &mut Conn, db: &str) -> Result<BTreeMap<String, Vec<Option<String>>>> {
    let mut out = BTreeMap::new();
    let q = sql_string(db);
    let columns: Vec<(String, String)> = conn.query(format!(
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {q} AND DATA_TYPE = 'float' \
           AND TABLE_NAME IN (SELECT TABLE_NAME FROM information_schema.TABLES \
                              WHERE TABLE_SCHEMA = {q} AND TABLE_TYPE <> 'VIEW') \
         ORDER BY TABLE_NAME, ORDINAL_POSITION"
    ))?;
    for (table, column) in columns {
        let order = order_by(conn, db, &table)?;
        let sql = format!(
            "SELECT CAST({} AS CHAR) FROM {}.{} ORDER BY {order}",
            ident(&column),
            ident(db),
            ident(&table)
        );
        let values = query_strings(conn, &sql)
            .with_context(|| format!("SQL failed: {sql}"))?
            .into_iter()
            .map(|mut row| row.pop().flatten())
            .collect();
        out.insert(format!("{db}.{table}.{column}"), values);
    }
    Ok(out)
}

/// Describes how two maps differ (missing keys and differing values), or `None` if
/// they are equal. Handy for assertion messages that stay readable.
pub fn diff<K: Ord + Debug, V: PartialEq + Debug>(
    left: &BTreeMap<K, V>,
    right: &BTreeMap<K, V>,
) -> Option<String> {
    let mut lines = Vec::new();
    for (k, v) in left {
        match right.get(k) {
            None => lines.push(format!("only in left:  {k:?}")),
            Some(w) if w != v => lines.push(format!(
                "differs:       {k:?}\n  left:  {v:?}\n  right: {w:?}"
            )),
            Some(_) => {}
        }
    }
    for k in right.keys() {
        if !left.contains_key(k) {
            lines.push(format!("only in right: {k:?}"));
        }
    }
    if lines.is_empty() {
        None
    } else {
        Some(lines.join("\n"))
    }
}

fn base_tables(conn: &mut Conn, db: &str) -> Result<Vec<String>> {
    conn.query(format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = {} AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
         ORDER BY TABLE_NAME",
        sql_string(db)
    ))
    .with_context(|| format!("list tables of {db}"))
}

fn tables_with_float_columns(conn: &mut Conn, db: &str) -> Result<Vec<String>> {
    conn.query(format!(
        "SELECT DISTINCT TABLE_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {} AND DATA_TYPE = 'float'",
        sql_string(db)
    ))
    .with_context(|| format!("list FLOAT columns of {db}"))
}

/// `ORDER BY` list: the primary key columns, else every column.
fn order_by(conn: &mut Conn, db: &str, table: &str) -> Result<String> {
    let pk: Vec<String> = conn.query(format!(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
        sql_string(db),
        sql_string(table)
    ))?;
    let cols = if pk.is_empty() {
        conn.query(format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            sql_string(db),
            sql_string(table)
        ))?
    } else {
        pk
    };
    Ok(cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "))
}
