//! The MySQL family's other half: Oracle MySQL 9 (scripts/install-mysql.sh) as the source and
//! the target of coffer's logical paths, through the real binary. The native dump and load,
//! the mysqldump path with MySQL's own mysqldump, and the refusal of a physical backup, which
//! mariabackup cannot take of MySQL.

use std::collections::BTreeMap;

use coffer_testkit::{verify, MysqlServer};

use crate::common::*;

/// Types MySQL 9 has, with rows that reach their edges: 4-byte UTF-8, NUL bytes in blobs,
/// JSON, fractional seconds, expression defaults, invisible and generated columns, a table
/// without a primary key, a foreign key, and a view, triggers, a procedure, a function and
/// a (disabled) event over them.
const SCHEMA: &str = r#"
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_0900_ai_ci;
USE shop;
CREATE TABLE kinds (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, i INT, bi BIGINT,
  dec1 DECIMAL(30,10), dec2 DECIMAL(65,30),
  f FLOAT, dbl DOUBLE, b BIT(12),
  vc VARCHAR(200), tx TEXT, lt LONGTEXT, ch CHAR(10) CHARACTER SET latin1,
  bl BLOB, vb VARBINARY(32), bn BINARY(4),
  j JSON,
  dt DATETIME(6), ts TIMESTAMP(3) NULL, d DATE, tm TIME(4), y YEAR,
  e ENUM('small','médium','大'), s SET('a','b','c'),
  g GEOMETRY,
  created DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  token VARCHAR(36) DEFAULT (UUID()),
  hidden INT INVISIBLE,
  total DECIMAL(40,10) AS (dec1 * 2) STORED,
  vlen INT AS (CHAR_LENGTH(vc)) VIRTUAL,
  KEY vc_k (vc),
  KEY total_k (total),
  KEY fn_k ((bi DIV 2)),
  CONSTRAINT positive_si CHECK (si >= 0)
);
INSERT INTO kinds (ti, si, mi, i, bi, dec1, dec2, f, dbl, b, vc, tx, lt, ch, bl, vb, bn, j, dt, ts, d, tm, y, e, s, g, token, hidden) VALUES
 (-128, 65535, -8388608, -2147483648, -9223372036854775808, -12345678901234567890.0123456789,
  0.000000000000000000000000000001, 3.40282e38, 1.7976931348623157e308, b'101010101010',
  'ASCII', 'text', REPEAT('long ', 1000), 'latin', X'00010200FF00', X'00', X'00000000',
  '{"a": [1, 2.5, "x"], "b": null, "c": {"d": true}}', '2024-02-29 23:59:59.999999',
  '2030-06-15 12:00:00.123', '1000-01-01', '-838:59:59.0000', 1901, 'small', 'a,c',
  ST_GeomFromText('POINT(1 2)'), 'fixed-token', 7),
 (127, 0, 8388607, 2147483647, 9223372036854775807, 0, -1.5, -1.17549435e-38, -2.2250738585072014e-308,
  b'0', 'Grüße, 日本語, emoji 😀🎉', 'tab\there\nnewline\\backslash ''quote''', '', 'é',
  X'', X'FFFEFD', X'7F000001', '[]', '1970-01-01 00:00:01.000001', NULL, '9999-12-31',
  '838:59:59.0000', 2155, 'médium', '', ST_GeomFromText('LINESTRING(0 0, 1 1, 2 3)'), NULL, NULL),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, '大', 'a,b,c', NULL, 'null-row', NULL),
 (0, 1, 0, 0, 0, 0.1, 0.1, 0.1, 0.1, b'111111111111', 'NULL', '\\N', 'N', 'N', X'5C4E', X'0A0D09', X'2C2C2C2C',
  '"just a string with \\u0000 and ☃"', '2000-01-01 00:00:00', '2000-01-01 00:00:00', '2000-01-01',
  '00:00:00', 2000, 'small', 'b', NULL, 'backslash-n', -1);
SET SESSION cte_max_recursion_depth = 10000;
INSERT INTO kinds (i, vc, bl, j)
  WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 3000)
  SELECT k, CONCAT('row-', k, '-ü'), UNHEX(REPEAT(LPAD(HEX(k % 256), 2, '0'), 40)),
         JSON_OBJECT('k', k, 'sq', k * k) FROM n;
CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL UNIQUE);
CREATE TABLE child (
  id INT PRIMARY KEY AUTO_INCREMENT, parent_id INT NOT NULL, note VARCHAR(40),
  CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE
);
INSERT INTO parent VALUES (1, 'one'), (2, 'two'), (3, 'drei');
INSERT INTO child (parent_id, note) VALUES (1, 'a'), (1, 'b'), (2, 'c'), (3, 'ç');
CREATE TABLE nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, 'ÿ');
CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(80), at DATETIME(6));
CREATE VIEW kinds_view AS SELECT id, vc, total, JSON_EXTRACT(j, '$.a') AS ja FROM kinds WHERE id < 100;
CREATE VIEW parent_children AS SELECT p.name, COUNT(c.id) AS n FROM parent p LEFT JOIN child c ON c.parent_id = p.id GROUP BY p.name;
CREATE DATABASE `other-db`;
CREATE TABLE `other-db`.`t-1` (id INT PRIMARY KEY, v VARCHAR(10));
INSERT INTO `other-db`.`t-1` VALUES (1, 'x');
"#;

/// Stored programs, one statement each: sent with others in one multi-statement string,
/// MySQL would keep the `;` that ends each in its stored text.
const PROGRAMS: [&str; 6] = [
    "CREATE TRIGGER shop.child_ins AFTER INSERT ON shop.child FOR EACH ROW \
     INSERT INTO shop.audit (what, at) VALUES (CONCAT('child ', NEW.id), NOW(6))",
    "CREATE TRIGGER shop.parent_upd BEFORE UPDATE ON shop.parent FOR EACH ROW \
     SET NEW.name = LOWER(NEW.name)",
    "CREATE PROCEDURE shop.add_child(IN p INT, IN n VARCHAR(40)) \
     BEGIN INSERT INTO shop.child (parent_id, note) VALUES (p, n); END",
    "CREATE FUNCTION shop.double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    "CREATE EVENT shop.nightly ON SCHEDULE EVERY 1 DAY STARTS '2099-01-01 00:00:00' DISABLE \
     DO DELETE FROM shop.audit WHERE at < NOW() - INTERVAL 30 DAY",
    "CALL shop.add_child(2, 'via procedure')",
];

/// A role with grants, an account that has it as its default role, and a locked account
/// with a table grant, TLS requirement and password policy.
const ACCOUNTS: &str = "CREATE ROLE shop_writer; \
    GRANT SELECT, INSERT, UPDATE ON shop.* TO shop_writer; \
    CREATE USER shop_app@'%' IDENTIFIED BY 'app-pass-1'; \
    GRANT shop_writer TO shop_app@'%'; \
    ALTER USER shop_app@'%' DEFAULT ROLE shop_writer; \
    CREATE USER auditor@'10.0.%' IDENTIFIED BY 'aud-pass' REQUIRE SSL \
      PASSWORD EXPIRE INTERVAL 90 DAY ACCOUNT LOCK; \
    GRANT SELECT (id, what) ON shop.audit TO auditor@'10.0.%'";

const DATABASES: [&str; 2] = ["shop", "other-db"];

/// A MySQL server with the schema loaded, then made quiet (nothing else writes to it).
fn source() -> MysqlServer {
    let src = MysqlServer::start().unwrap();
    src.exec(SCHEMA).unwrap();
    for p in PROGRAMS {
        src.exec(p).unwrap();
    }
    src
}

/// A fresh MySQL to restore into, as MySQL configures itself: `local_infile` off.
fn target() -> MysqlServer {
    MysqlServer::start().unwrap()
}

fn one(db: &MysqlServer, sql: &str) -> String {
    let rows = db.query_strings(sql).unwrap();
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone().unwrap_or_default()
}

/// The binlog file:pos and the GTID set of a quiet server.
fn position(db: &MysqlServer) -> (String, String) {
    let s = db.query_strings("SHOW BINARY LOG STATUS").unwrap();
    let binlog = format!("{}:{}", s[0][0].clone().unwrap(), s[0][1].clone().unwrap());
    let gtid: String = one(db, "SELECT @@gtid_executed")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (binlog, gtid)
}

/// Every account but the server's own, keyed `user@host`: SHOW CREATE USER (hashes as hex)
/// and the sorted lines of SHOW GRANTS.
fn accounts(db: &MysqlServer) -> BTreeMap<String, Vec<String>> {
    use coffer_testkit::mysql::prelude::Queryable;
    let mut c = db.conn().unwrap();
    c.query_drop("SET SESSION print_identified_with_as_hex = ON")
        .unwrap();
    let users: Vec<(String, String)> = c
        .query(
            "SELECT User, Host FROM mysql.user WHERE User NOT IN \
             ('root', 'mysql.sys', 'mysql.session', 'mysql.infoschema')",
        )
        .unwrap();
    users
        .into_iter()
        .map(|(u, h)| {
            let who = format!("'{u}'@'{h}'");
            let create: Option<String> = c.query_first(format!("SHOW CREATE USER {who}")).unwrap();
            let mut lines: Vec<String> = c.query(format!("SHOW GRANTS FOR {who}")).unwrap();
            lines.sort();
            lines.insert(0, create.unwrap());
            (format!("{u}@{h}"), lines)
        })
        .collect()
}

/// Row counts of every base table, keyed `db.table`.
fn row_counts(db: &MysqlServer) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in DATABASES {
        let tables = db
            .query_strings(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{d}' \
                 AND TABLE_TYPE = 'BASE TABLE'"
            ))
            .unwrap();
        for t in tables {
            let t = t[0].clone().unwrap();
            out.insert(
                format!("{d}.{t}"),
                one(db, &format!("SELECT COUNT(*) FROM `{d}`.`{t}`")),
            );
        }
    }
    out
}

/// Every value of every column of `db.table`, in primary-key order, as hex; a FLOAT column
/// as printed (`CAST(f AS CHAR)`) when `floats_as_printed`, else by its DOUBLE form.
fn column_values(
    db: &MysqlServer,
    table: &str,
    floats_as_printed: bool,
) -> BTreeMap<String, Vec<Vec<Option<String>>>> {
    let (schema, t) = table.split_once('.').unwrap();
    let cols = db
        .query_strings(&format!(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = '{t}' ORDER BY ORDINAL_POSITION"
        ))
        .unwrap();
    cols.into_iter()
        .map(|c| {
            let (c, ty) = (c[0].clone().unwrap(), c[1].clone().unwrap());
            let expr = match ty.as_str() {
                "float" if floats_as_printed => format!("CAST(`{c}` AS CHAR)"),
                "float" => format!("CAST(`{c}` AS DOUBLE)"),
                _ => format!("HEX(`{c}`)"),
            };
            let sql = format!("SELECT {expr} FROM `{schema}`.`{t}` ORDER BY `id`");
            (c, db.query_strings(&sql).unwrap())
        })
        .collect()
}

/// Every table of the schema has the same CHECKSUM TABLE and row count on `dst` as on
/// `src`, and every definition (tables, views, triggers, routines, the event) is the same.
/// A logical dump prints FLOAT rounded to 6 digits (mysqldump's own behaviour): with
/// `exact_floats` false, the table with a FLOAT column is compared column by column
/// instead, its FLOAT as printed.
fn assert_restored(src: &MysqlServer, dst: &MysqlServer, exact_floats: bool) {
    let (mut s, mut d) = (src.conn().unwrap(), dst.conn().unwrap());
    assert_eq!(
        verify::user_databases(&mut s).unwrap(),
        verify::user_databases(&mut d).unwrap()
    );
    let (want, got) = if exact_floats {
        (
            verify::checksums(&mut s, &DATABASES).unwrap(),
            verify::checksums(&mut d, &DATABASES).unwrap(),
        )
    } else {
        let (want, got) = (
            column_values(src, "shop.kinds", true),
            column_values(dst, "shop.kinds", true),
        );
        assert!(want.len() > 30, "{:?}", want.keys());
        if let Some(diff) = verify::diff(&want, &got) {
            panic!("shop.kinds differs after the restore:\n{diff}");
        }
        (
            verify::checksums_without_float_tables(&mut s, &DATABASES).unwrap(),
            verify::checksums_without_float_tables(&mut d, &DATABASES).unwrap(),
        )
    };
    assert_eq!(want.len(), if exact_floats { 6 } else { 5 }, "{want:?}");
    assert!(want.values().all(|v| v.is_some()), "{want:?}");
    if let Some(diff) = verify::diff(&want, &got) {
        panic!(
            "CHECKSUM TABLE differs after the restore:\n{diff}\ncolumns that differ: {:?}",
            differing_columns(src, dst, &want, &got)
        );
    }
    let counts = row_counts(src);
    assert_eq!(counts["shop.kinds"], "3004");
    assert_eq!(counts["shop.audit"], "1", "the trigger ran on the source");
    assert_eq!(counts, row_counts(dst));
    for db in DATABASES {
        let (ws, gs) = (
            verify::show_creates(&mut s, db).unwrap(),
            verify::show_creates(&mut d, db).unwrap(),
        );
        if db == "shop" {
            for k in [
                "view shop.kinds_view",
                "view shop.parent_children",
                "trigger shop.child_ins",
                "trigger shop.parent_upd",
                "procedure shop.add_child",
                "function shop.double_it",
                "event shop.nightly",
            ] {
                assert!(ws.contains_key(k), "the source lacks {k}: {:?}", ws.keys());
            }
        }
        if let Some(diff) = verify::diff(&ws, &gs) {
            panic!("{db}: definitions differ after the restore:\n{diff}");
        }
    }
    // Not just text: the restored definitions work.
    assert_eq!(one(dst, "SELECT shop.double_it(21)"), "42");
    assert_eq!(
        one(dst, "SELECT n FROM shop.parent_children WHERE name = 'two'"),
        "2"
    );
    dst.exec("CALL shop.add_child(3, 'after restore')").unwrap();
    assert_eq!(
        one(dst, "SELECT COUNT(*) FROM shop.audit"),
        "2",
        "the restored trigger runs"
    );
    let vlen = "SELECT vlen FROM shop.kinds WHERE vc LIKE 'Grüße%'";
    assert_eq!(one(src, vlen), "20");
    assert_eq!(one(dst, vlen), "20", "the virtual column is computed again");
    assert_eq!(
        one(
            dst,
            "SELECT hidden FROM shop.kinds WHERE token = 'fixed-token'"
        ),
        "7",
        "invisible column kept"
    );
}

/// For a failure message: the columns of the tables whose checksums differ whose values
/// differ, with the first differing value.
fn differing_columns(
    src: &MysqlServer,
    dst: &MysqlServer,
    want: &BTreeMap<String, Option<u64>>,
    got: &BTreeMap<String, Option<u64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (table, sum) in want {
        if got.get(table) == Some(sum) || !table.starts_with("shop.kinds") {
            continue;
        }
        let (a, b) = (
            column_values(src, table, false),
            column_values(dst, table, false),
        );
        for (c, values) in a {
            let first = values.iter().zip(&b[&c]).find(|(x, y)| x != y);
            if let Some(first) = first {
                out.push(format!("{table}.{c}: first {first:?}"));
            }
        }
    }
    out
}

fn manifests(src: &MysqlServer, dst: &MysqlServer, cf: &Coffer, params: &[(&str, &str)]) {
    let m = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", src),
        db_secret("dst-auth", dst),
        appbinding("src", src, "src-auth"),
        appbinding("dst", dst, "dst-auth"),
        backup_config_with("bc", "repo", "src", params, 5),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &m);
    assert!(r.ok, "{r}");
}

/// The id of the snapshot the session of `run` made.
fn snapshot_of(cf: &Coffer, run: &Run) -> String {
    let bs = cf.last_session(run);
    assert_eq!(phase(&bs), "Succeeded", "{bs:#}");
    bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The native dump of a MySQL 9 server and its load into another: every table's checksum
/// and row count, every definition; the snapshot records the binlog position and the GTID
/// set (`uuid:1-N`) of its consistent point.
#[test]
fn a_native_backup_of_mysql_restores_into_a_fresh_mysql() {
    let src = source();
    src.exec(ACCOUNTS).unwrap();
    let dst = target();
    let before = position(&src);
    let uuid = one(&src, "SELECT @@server_uuid");
    assert!(
        before.1.starts_with(&format!("{uuid}:1-")),
        "the schema's transactions: {before:?}"
    );
    let cf = Coffer::new();
    manifests(
        &src,
        &dst,
        &cf,
        &[
            ("method", "native"),
            ("connections", "2"),
            ("users", "true"),
        ],
    );
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let id = snapshot_of(&cf, &run);
    assert_eq!(position(&src), before, "nothing wrote during the backup");
    let tags = snapshot_tags(&cf.path("repo"), &id);
    assert_eq!(tag_value(&tags, "app"), Some("default/src"), "{tags:?}");
    assert_eq!(tag_value(&tags, "method"), Some("native"), "{tags:?}");
    assert_eq!(
        tag_value(&tags, "binlog"),
        Some(before.0.as_str()),
        "{tags:?}"
    );
    assert_eq!(
        tag_value(&tags, "gtid"),
        Some(before.1.as_str()),
        "{tags:?}"
    );
    assert!(
        tag_value(&tags, "server-version").is_some_and(|v| v.starts_with("9.")),
        "{tags:?}"
    );

    // MySQL 8+ turns LOAD DATA LOCAL off: the native load says so before it changes anything.
    assert_eq!(one(&dst, "SELECT @@GLOBAL.local_infile"), "0");
    let rs = crate::native::native_restore("refused", "dst", &[]);
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r0.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(!r.ok, "{r}");
    let rs = cf.get_json("restoresession", "refused");
    assert_eq!(phase(&rs), "Failed", "{rs:#}");
    let reason = error(&rs);
    for want in [
        "AppBinding default/dst",
        "local_infile",
        "SET PERSIST local_infile = ON",
    ] {
        assert!(reason.contains(want), "{want:?} missing: {reason}");
    }
    assert!(
        dst.query_strings("SHOW DATABASES LIKE 'shop%'")
            .unwrap()
            .is_empty(),
        "the refused restore changed the target"
    );
    // What the message says to do, and the restore goes through.
    dst.exec("SET PERSIST local_infile = ON").unwrap();
    let rs = crate::native::native_restore("full", "dst", &[("users", "true")]);
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let rs = cf.get_json("restoresession", "full");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_restored(&src, &dst, true);

    // Accounts and roles come back with their grants, hashes and default role, and work.
    let (want, got) = (accounts(&src), accounts(&dst));
    assert_eq!(want.len(), 3, "{want:?}");
    if let Some(diff) = verify::diff(&want, &got) {
        panic!("accounts differ after the restore:\n{diff}");
    }
    let mut app = coffer_testkit::mysql::Conn::new(
        dst.opts().user(Some("shop_app")).pass(Some("app-pass-1")),
    )
    .unwrap();
    use coffer_testkit::mysql::prelude::Queryable;
    let role: Option<String> = app.query_first("SELECT CURRENT_ROLE()").unwrap();
    assert_eq!(role.as_deref(), Some("`shop_writer`@`%`"));
    let n: Option<u64> = app.query_first("SELECT COUNT(*) FROM shop.kinds").unwrap();
    assert_eq!(n, Some(3004), "the role's grants are live");
    drop(app);

    // Again over what is there now, with an account changed meanwhile: the snapshot's wins.
    dst.exec(
        "ALTER USER shop_app@'%' IDENTIFIED BY 'changed'; \
         GRANT DELETE ON shop.* TO shop_app@'%'; DELETE FROM shop.parent WHERE id = 3",
    )
    .unwrap();
    let rs = crate::native::native_restore("again", "dst", &[("users", "true")]);
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r2.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    if let Some(diff) = verify::diff(&want, &accounts(&dst)) {
        panic!("accounts differ after the second restore:\n{diff}");
    }
    assert_eq!(
        verify::checksums(&mut src.conn().unwrap(), &DATABASES).unwrap(),
        verify::checksums(&mut dst.conn().unwrap(), &DATABASES).unwrap()
    );
}

/// `coffer`, with MySQL's client programs (scripts/install-mysql.sh's wrappers) first on PATH.
fn with_mysql_clients(cf: &Coffer, args: &[&str]) -> Run {
    let bin = MysqlServer::binary()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    Run::from(cf.cmd().env("PATH", path).args(args).output().unwrap())
}

/// The compatible logical path of a MySQL 9 source: refused with only MariaDB's mariadb-dump
/// around (saying what to install or set), dumped by MySQL's own mysqldump once it is on
/// PATH, recording the binlog position and GTID set it is consistent at, and restored into a
/// fresh MySQL with every value, count and definition equal, the source's GTID set carried
/// over as the dump's GTID_PURGED.
#[test]
fn a_mysqldump_backup_of_mysql_uses_mysqls_mysqldump_and_restores() {
    let src = source();
    let dst = target();
    let cf = Coffer::new();
    manifests(&src, &dst, &cf, &[("args", "--databases shop other-db")]);

    // The machine's PATH has MariaDB's programs only (its `mysqldump` is mariadb-dump).
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(!run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Failed", "{bs:#}");
    let version = one(&src, "SELECT VERSION()");
    let log = format!("{}\n{}", run.stderr, error(&bs));
    for want in [
        "AppBinding default/src".to_string(),
        format!("MySQL {version}"),
        "COFFER_MYSQLDUMP".into(),
        "mariadb-dump".into(),
    ] {
        assert!(log.contains(&want), "{want:?} missing:\n{log}");
    }
    let repo = cf.path("repo");
    let snaps = if repo.join("config").exists() {
        restic_snapshots(repo.to_str().unwrap(), &[])
    } else {
        Vec::new()
    };
    assert!(snaps.is_empty(), "a refused backup wrote {snaps:?}");

    let before = position(&src);
    let run = with_mysql_clients(&cf, &["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(position(&src), before, "nothing wrote during the backup");
    let id = snapshot_of(&cf, &run);
    let tags = snapshot_tags(&repo, &id);
    assert_eq!(tag_value(&tags, "method"), Some("mysqldump"), "{tags:?}");
    // The position mysqldump wrote (--master-data=2, which coffer adds): its snapshot's.
    assert_eq!(
        tag_value(&tags, "binlog"),
        Some(before.0.as_str()),
        "{tags:?}"
    );
    assert_eq!(
        tag_value(&tags, "gtid"),
        Some(before.1.as_str()),
        "{tags:?}"
    );
    let dump = restic(repo.to_str().unwrap(), &["dump", "latest", "/dumpfile.sql"]);
    assert!(dump.ok, "{dump}");
    assert!(
        dump.stdout.starts_with("-- MySQL dump"),
        "MySQL's mysqldump wrote it"
    );
    let gtid = before.1;
    assert!(
        dump.stdout.contains(&format!(
            "SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '{gtid}';"
        )),
        "the dump carries the source's GTID set {gtid}"
    );

    let rs = restore_session("r", "repo", "dst", &id[..8]);
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let rs = cf.get_json("restoresession", "r");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    // mysqldump's GTID_PURGED: the target has executed the source's transactions.
    assert_eq!(position(&dst).1, gtid);
    assert_restored(&src, &dst, false);
}

/// mariabackup cannot copy a MySQL server: a physical backup of one is refused before
/// anything is dumped, naming the AppBinding, the server's version and what to use instead.
#[test]
fn a_physical_backup_of_mysql_is_refused_up_front() {
    let src = source();
    let cf = Coffer::new();
    manifests(&src, &src, &cf, &[("method", "physical")]);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(!run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Failed", "{bs:#}");
    let reason = error(&bs);
    let version = one(&src, "SELECT VERSION()");
    for want in [
        "AppBinding default/src".to_string(),
        format!("MySQL {version}"),
        "mariabackup".into(),
        "method: native".into(),
    ] {
        assert!(reason.contains(&want), "{want:?} missing: {reason}\n{run}");
    }
    // Refused up front: mariabackup never ran, so nothing of its own reports.
    assert!(!run.stderr.contains("mariabackup:"), "{run}");
    let repo = cf.path("repo");
    if repo.join("config").exists() {
        let snaps = restic_snapshots(repo.to_str().unwrap(), &[]);
        assert!(snaps.is_empty(), "{snaps:?}");
    }
}
