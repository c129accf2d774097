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
//! | `modern_types` | MariaDB's UUID, INET4, INET6 (incl. all-zero and all-ones values, NULLs), an index on a UUID |
//! | `more_types` | SERIAL, TINY/MEDIUM/LONGTEXT, MEDIUMBLOB, NATIONAL VARCHAR, ascii, utf16, ucs2 and cp1251 columns, NUMERIC, REAL, DOUBLE PRECISION, ZEROFILL, DATETIME(3), TIME, YEAR(4) |
//! | `spatial` | every geometry type, SRIDs, extreme coordinates, an empty collection, a SPATIAL index |
//! | `fulltext_docs` | two FULLTEXT indexes |
//! | `defaults_checks` | DEFAULT expressions, column and table CHECK constraints, an INVISIBLE column, column and table comments |
//! | `latin1_tbl` | a latin1 (german2) table with a latin1_bin column and non-UTF-8 bytes |
//! | `partitioned` | RANGE partitions with HASH subpartitions |
//! | `merge_a`, `merge_b`, `merged` | a MRG_MyISAM table over two MyISAM tables (its rows are theirs) |
//! | `versioned`, `versioned_period`, `versioned_aria` | system-versioned history (fixed clocks): hidden period columns; an explicit INVISIBLE period with SYSTEM_TIME partitions; Aria with a column WITHOUT SYSTEM VERSIONING |
//! | `seq_nocache`, `seq_cycle`, `seq_user` | sequences (one without cache, one cycling with a cache and a comment, past its first cycle) and a table whose key defaults to NEXTVAL |
//! | `<db>_ext` | a second database (latin1) with a MyISAM table and `v_ext`, a view on `v_bulk_summary`; `v_cross` in `db` reads `v_ext` (views on views across databases) |
//!
//! Comments and ENUM/SET members use only BMP characters: MariaDB stores them as
//! utf8mb3 and would show a 4-byte character as `?`.
//!
//! Plus views `v_child_parent`, `v_bulk_summary` and `v_a_top` (a view on a view that
//! sorts before it), triggers `trg_auto_inc_trim` and `trg_child_audit`, procedure
//! `p_add_child`, function `f_label`, procedure `p_definer` (DEFINER `fidelity_definer`),
//! event `ev_nightly` (DISABLEd, starts in 2030) and event `ev_kolkata` (made in time zone
//! +05:30). [`create_accounts`] adds roles, users, default roles and grants on routines.
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

/// The database [`load`] creates beside `db`, for views that cross databases.
pub fn ext_database(db: &str) -> String {
    format!("{db}_ext")
}

/// The databases [`load`] creates for `db`.
pub fn databases(db: &str) -> Vec<String> {
    vec![db.to_string(), ext_database(db)]
}

/// Sequences [`load`] creates, with the values their next NEXTVAL gives on the source
/// (`seq_nocache` has no cache, so a faithful restore gives the same).
pub const SEQUENCES: &[&str] = &["seq_cycle", "seq_nocache"];

/// Accounts made by [`create_accounts`]: `(user, host)`; roles have an empty host.
pub const ACCOUNTS: &[(&str, &str)] = &[
    ("fidelity_reader", ""),
    ("fidelity_writer", ""),
    ("fidelity_app", "%"),
    ("fidelity_ro", "localhost"),
    ("fidelity_definer", "%"),
];

/// Creates (or replaces) roles `fidelity_reader` and `fidelity_writer` (which holds the
/// reader), user `fidelity_app`@`%` (password `password`) holding the writer as its default
/// role, `fidelity_ro`@`localhost` holding the reader WITH ADMIN OPTION, a column grant,
/// grants on a procedure and a function, a grant to PUBLIC, and the definer of
/// `p_definer` — over the objects [`load`] made in `db`.
pub fn create_accounts(conn: &mut Conn, db: &str, password: &str) -> Result<()> {
    let d = ident(db);
    let pw = sql_string(password);
    for sql in [
        "CREATE OR REPLACE ROLE fidelity_reader".to_string(),
        "CREATE OR REPLACE ROLE fidelity_writer".to_string(),
        format!("CREATE OR REPLACE USER 'fidelity_app'@'%' IDENTIFIED BY {pw}"),
        format!("CREATE OR REPLACE USER 'fidelity_ro'@'localhost' IDENTIFIED BY {pw} WITH MAX_QUERIES_PER_HOUR 500"),
        "CREATE OR REPLACE USER 'fidelity_definer'@'%' ACCOUNT LOCK".to_string(),
        format!("GRANT SELECT ON {d}.* TO fidelity_reader"),
        format!("GRANT SELECT (id, label), UPDATE (label) ON {d}.texts TO fidelity_reader"),
        format!("GRANT EXECUTE ON FUNCTION {d}.f_label TO fidelity_reader"),
        "GRANT fidelity_reader TO fidelity_writer".to_string(),
        format!("GRANT INSERT, UPDATE, DELETE ON {d}.* TO fidelity_writer"),
        format!("GRANT EXECUTE ON PROCEDURE {d}.p_add_child TO fidelity_writer"),
        "GRANT fidelity_writer TO 'fidelity_app'@'%'".to_string(),
        "SET DEFAULT ROLE fidelity_writer FOR 'fidelity_app'@'%'".to_string(),
        "GRANT fidelity_reader TO 'fidelity_ro'@'localhost' WITH ADMIN OPTION".to_string(),
        format!("GRANT SELECT, INSERT ON {d}.auto_inc TO 'fidelity_definer'@'%'"),
        format!("GRANT SELECT ON {d}.enums_sets TO PUBLIC"),
    ] {
        run(conn, &sql)?;
    }
    Ok(())
}

/// Column types and object kinds beyond the basics: MariaDB's own types, spatial and
/// fulltext indexes, system-versioned history, partitions, sequences, invisible columns,
/// DEFAULT expressions, CHECK constraints, comments, per-table character sets, a routine
/// with a definer and views across databases.
fn load_more(conn: &mut Conn, db: &str) -> Result<()> {
    let d = ident(db);
    let ext = ident(&ext_database(db));

    // ---------------------------------------------------------------- modern_types
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.modern_types (
               id INT NOT NULL PRIMARY KEY,
               u UUID NULL,
               i4 INET4 NULL,
               i6 INET6 NULL,
               u_nn UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
               KEY idx_u (u)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.modern_types (id, u, i4, i6, u_nn) VALUES
             (1, '123e4567-e89b-12d3-a456-426655440000', '10.0.0.1', '2001:db8::ff00:42:8329', 'f47ac10b-58cc-4372-a567-0e02b2c3d479'),
             (2, '00000000-0000-0000-0000-000000000000', '0.0.0.0', '::', '00000000-0000-0000-0000-000000000001'),
             (3, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffffffff-ffff-ffff-ffff-ffffffffffff'),
             (4, NULL, NULL, NULL, DEFAULT),
             (5, '6ccd780c-baba-1026-9564-5b8c656024db', '192.168.255.1', '::ffff:192.0.2.128', 'a3bb189e-8bf9-4888-9912-ace4e6543002')"
        ),
    )?;

    // ---------------------------------------------------------------- more_types
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.more_types (
               id SERIAL,
               tt TINYTEXT NULL,
               mt MEDIUMTEXT NULL,
               lt LONGTEXT NULL,
               mb MEDIUMBLOB NULL,
               nv NATIONAL VARCHAR(20) NULL,
               asc_c VARCHAR(20) CHARACTER SET ascii COLLATE ascii_bin NULL,
               u16 VARCHAR(20) CHARACTER SET utf16 NULL,
               u2 CHAR(4) CHARACTER SET ucs2 NULL,
               cp CHAR(10) CHARACTER SET cp1251 NULL,
               num NUMERIC(10,3) NULL,
               re REAL NULL,
               dp DOUBLE PRECISION NULL,
               integ INTEGER UNSIGNED ZEROFILL NULL,
               dt3 DATETIME(3) NULL,
               t0 TIME NULL,
               y4 YEAR(4) NULL
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.more_types (tt, mt, lt, mb, nv, asc_c, u16, u2, cp, num, re, dp, integ, dt3, t0, y4) VALUES
             ('tiny ✓', REPEAT('medium😀', 3000), REPEAT('long\\t\\n', 10000), REPEAT(x'00ff5c0a', 20000),
              'ñandú', 'plain ascii', 'utf16 😀 𝄞', 'ü✓', 'Привет', -1234567.891, -0.0, 1e-300, 42,
              '2024-02-29 23:59:59.999', '-12:34:56', 1901),
             (NULL, '', '', '', NULL, '', '', '', '', 0, 0, 0, 0, NULL, '00:00:00', 2155)"
        ),
    )?;

    // ---------------------------------------------------------------- spatial
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.spatial (
               id INT NOT NULL PRIMARY KEY,
               g GEOMETRY NOT NULL,
               pt POINT NULL,
               ls LINESTRING NULL,
               pg POLYGON NULL,
               mpt MULTIPOINT NULL,
               mls MULTILINESTRING NULL,
               mpg MULTIPOLYGON NULL,
               gc GEOMETRYCOLLECTION NULL,
               SPATIAL KEY sp_g (g)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.spatial VALUES
             (1, ST_GeomFromText('POINT(1 2)', 3857), ST_GeomFromText('POINT(1.5 -2.25)', 4326),
              ST_GeomFromText('LINESTRING(0 0, 1 1, 2 0.5)'),
              ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))'),
              ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), ST_GeomFromText('MULTILINESTRING((0 0,1 1),(2 2,3 3))'),
              ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)),((5 5,6 5,6 6,5 5)))'),
              ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1 1))')),
             (2, ST_GeomFromText('LINESTRING(-1e300 1e-300, 0.1 0.2)', 4326), NULL, NULL, NULL, NULL, NULL, NULL,
              ST_GeomFromText('GEOMETRYCOLLECTION EMPTY')),
             (3, ST_GeomFromText('POINT(0.30000000000000004 -0)'), ST_GeomFromText('POINT(5e-324 1.7976931348623157e308)'),
              NULL, NULL, NULL, NULL, NULL, NULL)"
        ),
    )?;

    // ---------------------------------------------------------------- fulltext_docs
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.fulltext_docs (
               id INT NOT NULL PRIMARY KEY,
               title VARCHAR(200) NOT NULL,
               body TEXT NOT NULL,
               FULLTEXT KEY ft_title (title),
               FULLTEXT KEY ft_both (title, body)
             ) ENGINE=InnoDB"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.fulltext_docs VALUES
             (1, 'backup and restore', 'every byte comes back'),
             (2, 'sequences', 'NEXTVAL continues where the source stood'),
             (3, 'ünïcode', 'mixed 😀 text')"
        ),
    )?;

    // ---------------------------------------------------------------- defaults_checks
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.defaults_checks (
               id INT NOT NULL PRIMARY KEY COMMENT 'the key ✓',
               qty INT NOT NULL DEFAULT (1 + 1) CHECK (qty >= 0),
               lo INT NOT NULL DEFAULT 0,
               hi INT NOT NULL DEFAULT 10,
               label VARCHAR(40) NOT NULL DEFAULT (CONCAT('item-', 'x')) COMMENT 'expression default',
               created DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
               secret VARCHAR(20) INVISIBLE NULL DEFAULT 'hidden' COMMENT 'invisible column',
               CONSTRAINT chk_range CHECK (lo <= hi)
             ) ENGINE=InnoDB COMMENT='DEFAULT expressions, CHECK constraints, an invisible column'"
        ),
    )?;
    run(
        conn,
        &format!(
            "INSERT INTO {d}.defaults_checks (id, qty, lo, hi, label, created, secret) VALUES
             (1, 0, -5, 5, 'one', '2001-01-01 00:00:00.000001', 'seen'),
             (2, 7, 3, 3, '', '2020-02-02 02:02:02.020202', NULL);
             INSERT INTO {d}.defaults_checks (id, created) VALUES (3, '2030-03-03 03:03:03')"
        ),
    )?;

    // ---------------------------------------------------------------- latin1_tbl
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.latin1_tbl (
               id INT NOT NULL PRIMARY KEY,
               v VARCHAR(40) NOT NULL,
               bin_v VARCHAR(40) CHARACTER SET latin1 COLLATE latin1_bin NULL
             ) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_german2_ci;
             INSERT INTO {d}.latin1_tbl VALUES (1, 'Grüße', 'ÆØÅ'), (2, x'a4e9ff', x'00')"
        ),
    )?;

    // ---------------------------------------------------------------- MERGE
    // Its rows are those of merge_a and merge_b: a restore must not load them twice.
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.merge_a (id INT NOT NULL, v VARCHAR(10) NULL, KEY (id)) ENGINE=MyISAM;
             CREATE TABLE {d}.merge_b (id INT NOT NULL, v VARCHAR(10) NULL, KEY (id)) ENGINE=MyISAM;
             INSERT INTO {d}.merge_a VALUES (1, 'a'), (2, 'b');
             INSERT INTO {d}.merge_b VALUES (3, 'c');
             CREATE TABLE {d}.merged (id INT NOT NULL, v VARCHAR(10) NULL, KEY (id))
               ENGINE=MRG_MyISAM UNION=({d}.merge_a, {d}.merge_b) INSERT_METHOD=LAST"
        ),
    )?;

    // ---------------------------------------------------------------- partitioned
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.partitioned (
               id INT NOT NULL,
               region TINYINT NOT NULL,
               v VARCHAR(20) NULL,
               PRIMARY KEY (id, region)
             ) ENGINE=InnoDB
             PARTITION BY RANGE (id) SUBPARTITION BY HASH (region) SUBPARTITIONS 2 (
               PARTITION p_low VALUES LESS THAN (100) COMMENT 'low ids',
               PARTITION p_mid VALUES LESS THAN (1000),
               PARTITION p_max VALUES LESS THAN MAXVALUE
             );
             INSERT INTO {d}.partitioned VALUES (1, 1, 'a'), (99, 2, 'b'), (100, 1, 'c'), (5000, 3, NULL), (-7, 0, 'neg')"
        ),
    )?;

    // ---------------------------------------------------------------- system versioning
    // Fixed clocks, so history is the same on every server.
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.versioned (
               id INT NOT NULL PRIMARY KEY,
               v VARCHAR(20) NULL
             ) ENGINE=InnoDB WITH SYSTEM VERSIONING;
             SET @@timestamp = 1700000000.123456;
             INSERT INTO {d}.versioned VALUES (1, 'first'), (2, 'second'), (3, 'third');
             SET @@timestamp = 1700000100.654321;
             UPDATE {d}.versioned SET v = 'first, changed' WHERE id = 1;
             DELETE FROM {d}.versioned WHERE id = 3;
             SET @@timestamp = 1700000200;
             UPDATE {d}.versioned SET v = CONCAT(v, '!');
             SET @@timestamp = DEFAULT"
        ),
    )?;
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.versioned_period (
               id INT NOT NULL,
               v INT NOT NULL,
               valid_from TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
               valid_to TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE,
               PERIOD FOR SYSTEM_TIME (valid_from, valid_to),
               PRIMARY KEY (id, valid_to)
             ) ENGINE=InnoDB WITH SYSTEM VERSIONING
             PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT);
             SET @@timestamp = 1600000000.5;
             INSERT INTO {d}.versioned_period (id, v) VALUES (10, 1), (20, 2);
             SET @@timestamp = 1600000001.25;
             UPDATE {d}.versioned_period SET v = v + 100;
             SET @@timestamp = 1600000002;
             DELETE FROM {d}.versioned_period WHERE id = 20;
             SET @@timestamp = DEFAULT"
        ),
    )?;
    // Unversioned columns in a versioned table, and an engine other than InnoDB.
    run(
        conn,
        &format!(
            "CREATE TABLE {d}.versioned_aria (
               id INT NOT NULL PRIMARY KEY,
               tracked INT NULL,
               untracked INT NULL WITHOUT SYSTEM VERSIONING
             ) ENGINE=Aria WITH SYSTEM VERSIONING;
             SET @@timestamp = 1500000000;
             INSERT INTO {d}.versioned_aria VALUES (1, 1, 1);
             SET @@timestamp = 1500000001;
             UPDATE {d}.versioned_aria SET untracked = 2;
             UPDATE {d}.versioned_aria SET tracked = 2;
             SET @@timestamp = DEFAULT"
        ),
    )?;

    // ---------------------------------------------------------------- sequences
    run(
        conn,
        &format!(
            "CREATE SEQUENCE {d}.seq_nocache NOCACHE;
             CREATE SEQUENCE {d}.seq_cycle START WITH 100 MINVALUE 10 MAXVALUE 1000 INCREMENT BY 5 CACHE 10 CYCLE
               COMMENT 'cycles';
             CREATE TABLE {d}.seq_user (
               id INT NOT NULL PRIMARY KEY DEFAULT NEXTVAL({d}.seq_nocache),
               v VARCHAR(10) NULL
             ) ENGINE=InnoDB;
             INSERT INTO {d}.seq_user (v) VALUES ('a'), ('b'), ('c');
             DO NEXTVAL({d}.seq_cycle), NEXTVAL({d}.seq_cycle)"
        ),
    )?;
    // Round the cycle once: its cycle_count must come back too.
    run(
        conn,
        &format!(
            "DO SETVAL({d}.seq_cycle, 1000, 1); DO NEXTVAL({d}.seq_cycle), NEXTVAL({d}.seq_cycle)"
        ),
    )?;

    // ---------------------------------------------------------------- routine with a definer
    run(
        conn,
        &format!(
            "CREATE DEFINER = 'fidelity_definer'@'%' PROCEDURE {d}.p_definer(OUT n INT)
               SQL SECURITY DEFINER
               COMMENT 'runs as its definer'
             SELECT COUNT(*) INTO n FROM auto_inc"
        ),
    )?;

    // An event remembers the session time zone it was made in.
    run(
        conn,
        &format!(
            "SET SESSION time_zone = '+05:30';
             CREATE EVENT {d}.ev_kolkata ON SCHEDULE AT '2031-06-01 09:00:00' ON COMPLETION PRESERVE DISABLE
               DO DELETE FROM {d}.audit_log WHERE id < 0;
             SET SESSION time_zone = '+00:00'"
        ),
    )?;

    // ---------------------------------------------------------------- across databases
    run(
        conn,
        &format!(
            "CREATE DATABASE {ext} CHARACTER SET latin1 COLLATE latin1_swedish_ci;
             CREATE TABLE {ext}.ext_base (id INT NOT NULL PRIMARY KEY, bucket INT NOT NULL) ENGINE=MyISAM;
             INSERT INTO {ext}.ext_base VALUES (1, 0), (2, 3), (3, 7);
             CREATE VIEW {ext}.v_ext AS
               SELECT b.id, s.n FROM {ext}.ext_base b JOIN {d}.v_bulk_summary s ON s.bucket = b.bucket;
             CREATE VIEW {d}.v_cross AS SELECT id, n FROM {ext}.v_ext WHERE n > 0"
        ),
    )?;
    Ok(())
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
    load_more(conn, db)
}
