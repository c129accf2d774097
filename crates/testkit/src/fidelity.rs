//! A schema that exercises everything a faithful backup must keep.
//!
//! [`load`] creates one database with:
//!
//! | table | what it covers |
//! | --- | --- |
//! | `texts` | utf8mb4 incl. 4-byte characters (😀, 𝄞), many scripts, quotes, backslashes, `\r \n \t \x1a \0`, a latin1 column, empty strings, NULLs, a ~60 KB TEXT |
//! | `blobs` | every byte value 0..=255, `0x00 0x5C 0x27 0x22 \r \n 0x1A`, invalid UTF-8, BINARY padding, empty vs NULL, a 1 MiB blob |
//! | `json_docs` | JSON objects/arrays/scalars with escapes and 4-byte characters, JSON `null` vs SQL NULL |
//! | `temporal` | DATETIME(6), DATETIME, TIMESTAMP, TIMESTAMP(6), DATE, TIME(6), YEAR at their limits, zero dates, `ON UPDATE CURRENT_TIMESTAMP` |
//! | `numbers` | DECIMAL(65,30) extremes, DOUBLE (0.1, 5e-324, 1.7976931348623157e308), every integer type at its limits, BIT(1/7/64), BOOLEAN |
//! | `enums_sets` | ENUM and SET incl. the empty member and non-ASCII members (BMP only: MariaDB keeps ENUM/SET member names in utf8mb3, so SHOW CREATE TABLE — and every logical dump — turns a 4-byte member into `?`) |
//! | `floats` | **the only table with FLOAT columns** (0.1, 1e-38, 3.4e38, ...); compare with [`crate::verify::float_values`] |
//! | `no_pk` | no primary key, duplicate rows (incl. all-NULL duplicates) |
//! | `composite_pk` | three-column primary key, unique and secondary indexes |
//! | `fk_parent`, `fk_child` | a foreign key (ON DELETE CASCADE); the child sorts first by name |
//! | `audit_log` | filled only by a trigger on `fk_child` (restoring triggers before data would duplicate rows) |
//! | `auto_inc` | AUTO_INCREMENT with a gap (counter 11, max id 8) and a row with id 0 (needs NO_AUTO_VALUE_ON_ZERO to restore) |
//! | `bulk` | [`BULK_ROWS`] rows |
//! | `generated_cols` | VIRTUAL and STORED generated columns, an index on a generated column |
//! | `odd name-1` | identifiers needing quotes: space, dash, reserved words, a backtick, non-ASCII |
//! | `aria_tbl`, `myisam_tbl` | non-InnoDB engines |
//! | `empty_tbl` | no rows |
//!
//! Comments and ENUM/SET members use only BMP characters: MariaDB stores them as
//! utf8mb3 and would show a 4-byte character as `?`.
//!
//! Plus views `v_child_parent`, `v_bulk_summary` and `v_a_top` (a view on a view that
//! sorts before it), triggers `trg_auto_inc_trim` and `trg_child_audit`, procedure
//! `p_add_child`, function `f_label` and event `ev_nightly` (DISABLEd, starts in 2030).
//!
//! Everything is deterministic: loading into two servers gives equal
//! [`crate::verify`] results.

use crate::mariadb::{ident, sql_string};
use anyhow::{Context, Result};
use mysql::prelude::Queryable;
use mysql::{Conn, Value};

/// Rows in the `bulk` table.
pub const BULK_ROWS: u32 = 2000;

/// Tables [`load`] creates that have FLOAT columns (compared by
/// [`crate::verify::float_values`] instead of checksums).
pub const FLOAT_TABLES: &[&str] = &["floats"];

/// The session sql_mode the schema is created with (MariaDB 10.11's default), so
/// zero dates load and routines record the same sql_mode on every server.
const SQL_MODE: &str =
    "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION";

/// Creates database `db` (which must not exist) with the fidelity schema and data.
/// Uses the connection's session but restores its `sql_mode` and `time_zone`.
pub fn load(conn: &mut Conn, db: &str) -> Result<()> {
    let saved: Option<(String, String)> = conn
        .query_first("SELECT @@SESSION.sql_mode, @@SESSION.time_zone")
        .context("read session settings")?;
    conn.query_drop(format!(
        "SET SESSION sql_mode = {}, SESSION time_zone = '+00:00'",
        sql_string(SQL_MODE)
    ))?;
    let result = load_inner(conn, db);
    if let Some((mode, tz)) = saved {
        let _ = conn.query_drop(format!(
            "SET SESSION sql_mode = {}, SESSION time_zone = {}",
            sql_string(&mode),
            sql_string(&tz)
        ));
    }
    result.with_context(|| format!("load the fidelity schema into `{db}`"))
}

/// Creates (or replaces) `'coffer_app'@'%'` identified by `password`, with SELECT and
/// INSERT on `db`.*.
pub fn create_app_user(conn: &mut Conn, db: &str, password: &str) -> Result<()> {
    conn.query_drop(format!(
        "CREATE OR REPLACE USER 'coffer_app'@'%' IDENTIFIED BY {}; \
         GRANT SELECT, INSERT ON {}.* TO 'coffer_app'@'%'",
        sql_string(password),
        ident(db)
    ))
    .context("create user coffer_app")
}

fn run(conn: &mut Conn, sql: &str) -> Result<()> {
    conn.query_drop(sql)
        .with_context(|| format!("SQL failed: {sql}"))
}

fn insert(conn: &mut Conn, sql: &str, rows: Vec<Vec<Value>>) -> Result<()> {
    let stmt = conn.prep(sql).with_context(|| format!("prepare: {sql}"))?;
    for row in rows {
        conn.exec_drop(&stmt, row)
            .with_context(|| format!("SQL failed: {sql}"))?;
    }
    conn.close(stmt)?;
    Ok(())
}

fn s(v: &str) -> Value {
    Value::Bytes(v.as_bytes().to_vec())
}

fn b(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

fn i(v: i64) -> Value {
    Value::Int(v)
}

const NULL: Value = Value::NULL;

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn load_inner(conn: &mut Conn, db: &str) -> Result<()> {
    let d = ident(db);
    run(
        conn,
        &format!("CREATE DATABASE {d} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
    )?;

    // ---------------------------------------------------------------- texts
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.texts (
               id INT NOT NULL PRIMARY KEY,
               label VARCHAR(32) NOT NULL,
               s VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
               t TEXT NULL,
               c CHAR(8) NULL,
               latin VARCHAR(64) CHARACTER SET latin1 COLLATE latin1_swedish_ci NULL,
               KEY idx_s (s(32))
             ) ENGINE=InnoDB COMMENT='4-byte characters, quotes and control bytes ✓'"
        ),
    )?;
    let long_text = "ab😀".repeat(10_000);
    let long_s = "𝄞".repeat(255);
    insert(
        conn,
        &format!("INSERT INTO {d}.texts (id, label, s, t, c, latin) VALUES (?, ?, ?, ?, ?, ?)"),
        vec![
            vec![
                i(1),
                s("emoji"),
                s("😀🎉👍🏽 ok"),
                s("𝄞 musical symbol G clef"),
                s("😀"),
                s("café"),
            ],
            vec![
                i(2),
                s("scripts"),
                s("Ελληνικά русский 中文 日本語 한국어 العربية עברית"),
                s("हिन्दी ไทย ქართული Ɛʋɛ"),
                s("ü"),
                s("naïve ÆØÅ ß"),
            ],
            vec![
                i(3),
                s("quotes"),
                s("it's \"quoted\" `back` \\ slash \\' \\\\"),
                s("tab\there\nnewline\r\ncrlf \x1a sub \0 nul end"),
                s("'\"\\"),
                s("O'Brien \\"),
            ],
            vec![i(4), s("empty"), s(""), s(""), s(""), s("")],
            vec![i(5), s("nulls"), NULL, NULL, NULL, NULL],
            vec![
                i(6),
                s("long"),
                s(&long_s),
                s(&long_text),
                s("12345678"),
                s(&"x".repeat(64)),
            ],
            vec![
                i(7),
                s("edges"),
                s("trailing spaces   "),
                s("   leading spaces"),
                s("c  "),
                s("ends with backslash\\"),
            ],
            vec![
                i(8),
                s("sql-ish"),
                s("'; DROP TABLE texts; --"),
                s("/* comment */ -- not a comment\n# hash ; semi;"),
                NULL,
                s("%_ wildcards"),
            ],
        ],
    )?;

    // ---------------------------------------------------------------- blobs
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.blobs (
               id INT NOT NULL PRIMARY KEY,
               b LONGBLOB NULL,
               vb VARBINARY(300) NULL,
               fixed BINARY(8) NULL,
               tb TINYBLOB NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut reversed = all_bytes.clone();
    reversed.reverse();
    let tricky = b"\x00\x5c\x27\x22\r\n\x1a\x00\x5c\x5c\x27\x27%_\x00".to_vec();
    insert(
        conn,
        &format!("INSERT INTO {d}.blobs (id, b, vb, fixed, tb) VALUES (?, ?, ?, ?, ?)"),
        vec![
            vec![
                i(1),
                b(&all_bytes),
                b(&reversed),
                b(b"\x00\x5c\x27\x22\r\n\x1a\x00"),
                b(b"\xff\xfe\x00\x00"),
            ],
            vec![
                i(2),
                b(&tricky),
                b(b"\xc3\x28\xe2\x82\xed\xa0\x80\xf0\x9f\x98"),
                b(b"\x01"),
                b(b""),
            ],
            vec![i(3), b(b""), b(b""), b(b""), NULL],
            vec![i(4), NULL, NULL, NULL, NULL],
            vec![
                i(5),
                b(&pseudo_random(1024 * 1024 + 7, 0x00c0_ffee)),
                b(&pseudo_random(300, 42)),
                b(b"\xff\xff\xff\xff\xff\xff\xff\xff"),
                b(&pseudo_random(255, 7)),
            ],
        ],
    )?;

    // ---------------------------------------------------------------- json_docs
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.json_docs (
               id INT NOT NULL PRIMARY KEY,
               doc JSON NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    insert(
        conn,
        &format!("INSERT INTO {d}.json_docs (id, doc) VALUES (?, ?)"),
        vec![
            vec![
                i(1),
                s(
                    r#"{"a": 1, "b": [true, false, null], "nested": {"emoji": "😀", "esc": "quote \" backslash \\ newline \n tab \t", "u": "\u00e9\ud834\udd1e"}}"#,
                ),
            ],
            vec![
                i(2),
                s(r#"[1, 2.5, -3e10, 12345678901234567890, "𝄞", {}, []]"#),
            ],
            vec![i(3), s(r#""just a string""#)],
            vec![i(4), s("null")],
            vec![i(5), NULL],
            vec![i(6), s("{}")],
        ],
    )?;

    // ---------------------------------------------------------------- temporal
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.temporal (
               id INT NOT NULL PRIMARY KEY,
               dt6 DATETIME(6) NULL,
               dt DATETIME NULL,
               ts TIMESTAMP NULL DEFAULT NULL,
               ts6 TIMESTAMP(6) NULL DEFAULT NULL,
               d DATE NULL,
               tm TIME(6) NULL,
               y YEAR NULL,
               updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.temporal (id, dt6, dt, ts, ts6, d, tm, y, updated) VALUES
             (1, '1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 00:00:01',
                 '1970-01-01 00:00:01.000001', '1000-01-01', '-838:59:59.000000', 1901, '2001-02-03 04:05:06'),
             (2, '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 03:14:07',
                 '2038-01-19 03:14:07.999999', '9999-12-31', '838:59:59.000000', 2155, '2020-02-29 12:00:00'),
             (3, '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56', '2024-02-29 12:34:56',
                 '2024-02-29 12:34:56.654321', '2024-02-29', '00:00:00.000001', 2000, '2024-02-29 12:34:56'),
             (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2010-10-10 10:10:10'),
             (5, '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00', NULL, NULL, '0000-00-00',
                 '-00:00:00.000001', 0, '1999-12-31 23:59:59')"
        ),
    )?;

    // ---------------------------------------------------------------- numbers
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.numbers (
               id INT NOT NULL PRIMARY KEY,
               dec65 DECIMAL(65,30) NULL,
               dec_small DECIMAL(5,2) NULL,
               dbl DOUBLE NULL,
               ti TINYINT NULL,
               tu TINYINT UNSIGNED NULL,
               si SMALLINT NULL,
               mi MEDIUMINT NULL,
               i INT NULL,
               iu INT UNSIGNED NULL,
               bi BIGINT NULL,
               bu BIGINT UNSIGNED NULL,
               bit1 BIT(1) NULL,
               bit7 BIT(7) NULL,
               bit64 BIT(64) NULL,
               flag BOOLEAN NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    let nines = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    run(
        conn,
        &format!(
            "INSERT INTO {d}.numbers VALUES
             (1, {nines}, 999.99, 1.7976931348623157e308, 127, 255, 32767, 8388607, 2147483647,
                 4294967295, 9223372036854775807, 18446744073709551615, b'1', b'1111111',
                 b'1111111111111111111111111111111111111111111111111111111111111111', TRUE),
             (2, -{nines}, -999.99, -1.7976931348623157e308, -128, 0, -32768, -8388608, -2147483648,
                 0, -9223372036854775808, 0, b'0', b'0000000', b'0', FALSE),
             (3, 0.000000000000000000000000000001, 0.01, 2.2250738585072014e-308, 0, 1, 0, 0, 0,
                 1, 0, 1, b'1', b'1010101',
                 b'1000000000000000000000000000000000000000000000000000000000000001', 2),
             (4, -0.000000000000000000000000000001, -0.01, 5e-324, -1, 128, -1, -1, -1,
                 2147483648, -1, 9223372036854775808, b'0', b'0000001', b'0111111111111111111111111111111111111111111111111111111111111110', -1),
             (5, 12345678901234567890.123456789012345678901234567890, 3.14, 0.1, 1, 2, 3, 4, 5,
                 6, 7, 8, b'1', b'1000000', b'10101010', 0),
             (6, 0, 0, 0.30000000000000004, 42, 42, 42, 42, 42, 42, 42, 42, b'0', b'0', b'0', NULL),
             (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             (8, 1, 1, 123456789.12345679, 1, 1, 1, 1, 1, 1, 1, 1, NULL, NULL, NULL, NULL)"
        ),
    )?;

    // ---------------------------------------------------------------- enums_sets
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.enums_sets (
               id INT NOT NULL PRIMARY KEY,
               e ENUM('small','medium','large','x-large','ünïcode','') NULL,
               st SET('read','write','admin','ñandú') NULL,
               e_nn ENUM('a','b') NOT NULL DEFAULT 'b'
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.enums_sets (id, e, st, e_nn) VALUES
             (1, 'small', 'read', 'a'),
             (2, 'ünïcode', 'read,write,admin,ñandú', 'b'),
             (3, '', '', 'a'),
             (4, NULL, NULL, 'b'),
             (5, 'x-large', 'admin,write', 'a')"
        ),
    )?;

    // ---------------------------------------------------------------- floats
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.floats (
               id INT NOT NULL PRIMARY KEY,
               f FLOAT NULL,
               fu FLOAT UNSIGNED NULL,
               f_prec FLOAT(7,4) NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.floats (id, f, fu, f_prec) VALUES
             (1, 0.1, 0.1, 123.4567),
             (2, 1e-38, 1e-38, -999.9999),
             (3, 3.4e38, 3.4e38, 0),
             (4, -3.4e38, 0, 0.0001),
             (5, 1.17549435e-38, 1.17549435e-38, 1.5),
             (6, 123456.789, 16777217, -1.25),
             (7, NULL, NULL, NULL),
             (8, 3.14159265358979, 2.718281828459045, 3.1416)"
        ),
    )?;

    // ---------------------------------------------------------------- no_pk
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.no_pk (a INT NULL, b VARCHAR(20) NULL, c BLOB NULL) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.no_pk (a, b, c) VALUES
             (1, 'dup', x'00'), (1, 'dup', x'00'), (2, NULL, NULL), (2, NULL, NULL),
             (NULL, NULL, NULL), (NULL, NULL, NULL), (3, 'three', ''), (1, 'dup', x'00')"
        ),
    )?;

    // ---------------------------------------------------------------- composite_pk
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.composite_pk (
               tenant_id INT NOT NULL,
               item_id BIGINT NOT NULL,
               version SMALLINT UNSIGNED NOT NULL,
               payload VARCHAR(100) NULL,
               PRIMARY KEY (tenant_id, item_id, version),
               UNIQUE KEY uq_payload (tenant_id, payload),
               KEY idx_item (item_id)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.composite_pk (tenant_id, item_id, version, payload)
             WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 60)
             SELECT n % 3, 9000000000 + n DIV 3, n % 4,
                    IF(n % 7 = 0, NULL, CONCAT('payload ', n, ' ✓'))
             FROM seq"
        ),
    )?;

    // ---------------------------------------------------------------- foreign keys
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.fk_parent (
               id INT NOT NULL PRIMARY KEY,
               name VARCHAR(50) NOT NULL,
               UNIQUE KEY uq_name (name)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.fk_child (
               id INT NOT NULL PRIMARY KEY,
               parent_id INT NULL,
               note VARCHAR(50) NULL,
               KEY idx_parent (parent_id),
               CONSTRAINT fk_child_parent FOREIGN KEY (parent_id) REFERENCES {d}.fk_parent (id)
                 ON DELETE CASCADE ON UPDATE RESTRICT
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.audit_log (
               id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
               child_id INT NOT NULL,
               note VARCHAR(100) NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE TRIGGER {d}.trg_child_audit AFTER INSERT ON {d}.fk_child FOR EACH ROW
             INSERT INTO audit_log (child_id, note) VALUES (NEW.id, CONCAT('inserted: ', COALESCE(NEW.note, '∅')))"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.fk_parent (id, name) VALUES (1, 'alpha'), (2, 'beta 😀'), (3, 'gamma');
             INSERT INTO {d}.fk_child (id, parent_id, note) VALUES
               (1, 1, 'first'), (2, 1, NULL), (3, 2, 'third'), (4, NULL, 'orphan allowed')"
        ),
    )?;

    // ---------------------------------------------------------------- auto_inc
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.auto_inc (
               id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
               v VARCHAR(50) NOT NULL,
               created DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00'
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE TRIGGER {d}.trg_auto_inc_trim BEFORE INSERT ON {d}.auto_inc FOR EACH ROW
             SET NEW.v = TRIM(NEW.v)"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.auto_inc (v) VALUES ('  one'), ('two  '), ('three'), ('four'), ('five'),
               ('six'), ('seven'), ('eight'), ('nine'), ('ten');
             DELETE FROM {d}.auto_inc WHERE id IN (9, 10);
             SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO');
             INSERT INTO {d}.auto_inc (id, v, created) VALUES (0, 'zero id', '2000-01-02 00:00:00');
             SET SESSION sql_mode = {}",
            sql_string(SQL_MODE)
        ),
    )?;

    // ---------------------------------------------------------------- bulk
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.bulk (
               id INT NOT NULL PRIMARY KEY,
               k INT NOT NULL,
               label VARCHAR(64) NOT NULL,
               amount DECIMAL(12,2) NOT NULL,
               created DATETIME(3) NOT NULL,
               flag TINYINT(1) NOT NULL,
               note TEXT NULL,
               KEY idx_k (k)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "SET STATEMENT max_recursive_iterations = 1000000 FOR
             INSERT INTO {d}.bulk (id, k, label, amount, created, flag, note)
             WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {BULK_ROWS})
             SELECT n, (n * 7919) % 1000,
                    CONCAT('row-', n, IF(n % 10 = 0, ' 😀', '')),
                    (n * 1234.56) % 100000 - 50000,
                    TIMESTAMPADD(SECOND, n * 37, '2020-01-01 00:00:00') + INTERVAL (n % 1000) * 1000 MICROSECOND,
                    n % 2,
                    IF(n % 3 = 0, NULL, REPEAT(CHAR(65 + n % 26), n % 50))
             FROM seq"
        ),
    )?;

    // ---------------------------------------------------------------- generated_cols
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.generated_cols (
               id INT NOT NULL PRIMARY KEY,
               a INT NOT NULL,
               b INT AS (a * 2) VIRTUAL,
               c VARCHAR(30) AS (CONCAT('v-', a)) STORED,
               KEY idx_c (c)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!("INSERT INTO {d}.generated_cols (id, a) VALUES (1, 10), (2, -5), (3, 0)"),
    )?;

    // ---------------------------------------------------------------- odd names
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.`odd name-1` (
               `select` INT NOT NULL PRIMARY KEY,
               `from` VARCHAR(20) NULL,
               `back``tick` INT NULL,
               `ünïcödé` VARCHAR(10) NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.`odd name-1` (`select`, `from`, `back``tick`, `ünïcödé`) VALUES
             (1, 'where', 2, 'ö'), (2, NULL, NULL, NULL)"
        ),
    )?;

    // ---------------------------------------------------------------- other engines
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.aria_tbl (id INT NOT NULL PRIMARY KEY, v VARCHAR(50) NULL) ENGINE=Aria;
             INSERT INTO {d}.aria_tbl VALUES (1, 'aria one'), (2, 'ärïä'), (3, NULL);
             CREATE TABLE {d}.myisam_tbl (id INT NOT NULL PRIMARY KEY, v VARCHAR(50) NULL, t TEXT NULL) ENGINE=MyISAM;
             INSERT INTO {d}.myisam_tbl VALUES (1, 'myisam one', 'x'), (2, 'mÿïsäm', NULL), (3, NULL, '');
             CREATE TABLE {d}.empty_tbl (id INT NOT NULL PRIMARY KEY, v VARCHAR(10) NULL) ENGINE=InnoDB"
        ),
    )?;

    // ---------------------------------------------------------------- views
    run(
        conn,
        &format!(
            "CREATE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW {d}.v_child_parent AS
             SELECT c.id, c.note, p.name AS parent_name
             FROM {d}.fk_child c LEFT JOIN {d}.fk_parent p ON p.id = c.parent_id"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE VIEW {d}.v_bulk_summary AS
             SELECT k % 10 AS bucket, COUNT(*) AS n, SUM(amount) AS total
             FROM {d}.bulk GROUP BY k % 10"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE VIEW {d}.v_a_top (bucket, n) AS
             SELECT bucket, n FROM {d}.v_bulk_summary WHERE n > 0 ORDER BY n DESC LIMIT 3"
        ),
    )?;

    // ---------------------------------------------------------------- routines
    run(
        conn,
        &format!(
            "CREATE PROCEDURE {d}.p_add_child(IN p_parent INT, IN p_note VARCHAR(50), OUT p_id INT)
               MODIFIES SQL DATA
               COMMENT 'adds a child row; ✓ ñ'
             BEGIN
               DECLARE next_id INT;
               SELECT COALESCE(MAX(id), 0) + 1 INTO next_id FROM fk_child;
               INSERT INTO fk_child (id, parent_id, note) VALUES (next_id, p_parent, p_note);
               SET p_id = next_id; -- trailing comment
             END"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE FUNCTION {d}.f_label(p_id INT) RETURNS VARCHAR(120) CHARSET utf8mb4
               DETERMINISTIC READS SQL DATA
               RETURN CONCAT('label 𝄞 ', p_id, ': ',
                             COALESCE((SELECT label FROM bulk WHERE id = p_id), '?'))"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE EVENT {d}.ev_nightly
               ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00'
               ON COMPLETION PRESERVE DISABLE
               COMMENT 'never fires in tests'
               DO DELETE FROM audit_log WHERE id < 0"
        ),
    )?;
    Ok(())
}
