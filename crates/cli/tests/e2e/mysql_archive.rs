//! The binlog archive and the restore to a point against a real MySQL 9 server
//! (`coffer_testkit::MysqlServer`, gtid_mode ON): `coffer archive` stores every transaction
//! once, as `<server_uuid>:1..N`, in segments MySQL's own `mysqlbinlog` reads; it resumes
//! after a server restart without loss or duplicate; binlogs purged while it was stopped are
//! a named Purged gap; and a RestoreSession replays the archive (MySQL's `mysqlbinlog` piped
//! into a fresh MySQL) exactly up to `latest`, a GTID, or a time.
//!
//! The AppBinding and Secret of a MySQL server are built here (`mysql_appbinding`,
//! `mysql_secret`): common.rs's take a `&MariaDb`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use coffer_api::gtid::{Domain, GtidState};
use coffer_testkit::{mysql::prelude::Queryable, MysqlServer};

use crate::{
    archive::{
        assert_chained, gap_reasons, gtids, logs, segments, start_archive, status, stop,
        wait_streaming, wait_until,
    },
    common::*,
};

const MYSQLBINLOG: &str = "/opt/coffer-mysql/bin/mysqlbinlog";

fn archive_yaml(name: &str) -> String {
    format!(
        "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {{name: {name}}}\n\
         spec:\n  appBinding: {{name: db}}\n  repository: {{name: repo}}\n  flushInterval: 1s\n"
    )
}

/// The repository, the server's AppBinding `db`, a BackupConfiguration `bc` of it (coffer's
/// native dump of database `app`, which records MySQL's GTID set) and the archive `shop`.
fn setup(cf: &Coffer, db: &MysqlServer) -> std::path::PathBuf {
    let repo = cf.path("repo");
    let r = cf.apply(
        "m.yaml",
        &[
            secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
            local_repo("repo", &repo, "repo-secret"),
            db_secret("db-secret", db),
            appbinding("db", db, "db-secret"),
            backup_config_with(
                "bc",
                "repo",
                "db",
                &[("method", "native"), ("databases", "app")],
                5,
            ),
            archive_yaml("shop"),
        ]
        .join("---\n"),
    );
    assert!(r.ok, "{r}");
    repo
}

/// `@@GLOBAL.gtid_executed` (MySQL writes long sets over several lines).
fn executed(db: &MysqlServer) -> GtidState {
    let rows = db.query_strings("SELECT @@GLOBAL.gtid_executed").unwrap();
    let text = rows[0][0].clone().unwrap_or_default().replace('\n', "");
    text.parse()
        .unwrap_or_else(|e| panic!("gtid_executed `{text}`: {e}"))
}

fn server_uuid(db: &MysqlServer) -> String {
    db.query_strings("SELECT @@server_uuid").unwrap()[0][0]
        .clone()
        .unwrap()
}

fn last_gtid(cf: &Coffer) -> GtidState {
    status(cf, "shop")["lastArchivedGtid"]
        .as_str()
        .unwrap_or("")
        .replace('\n', "")
        .parse()
        .unwrap()
}

/// One row per transaction, its key the commit order: row `i` is the load's i-th.
const SCHEMA: &str = "CREATE DATABASE app; \
    CREATE TABLE app.t (seq INT PRIMARY KEY, v VARCHAR(64), ts DATETIME(6) NOT NULL \
    DEFAULT NOW(6)) ENGINE=InnoDB";

fn insert(db: &MysqlServer, rows: std::ops::RangeInclusive<u32>) {
    let mut c = db.conn().unwrap();
    for i in rows {
        c.query_drop(format!(
            "INSERT INTO app.t (seq, v) VALUES ({i}, 'row {i}')"
        ))
        .unwrap();
    }
}

/// The transactions' GTIDs `uuid:from..=to`, as the archive's index writes them.
fn range(uuid: &str, from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|k| format!("{uuid}:{k}")).collect()
}

/// Runs the archive until it holds the server's `gtid_executed`, then stops it cleanly.
fn archive_until_caught_up(cf: &Coffer, db: &MysqlServer, write: impl FnOnce()) {
    let child = start_archive(cf, "shop");
    wait_streaming(cf, "shop");
    write();
    let end = executed(db);
    wait_until(Duration::from_secs(90), "the archive caught up", || {
        last_gtid(cf) == end
    });
    let code = stop(child, libc::SIGINT);
    assert!(code.success(), "coffer archive exited {code}\n{}", logs(cf));
}

/// `restic dump` of segment `seq` of archive `default/shop` (from whichever snapshot holds
/// it, compacted or not) piped into MySQL's own `mysqlbinlog`: its output.
fn restic_dump_mysqlbinlog(repo: &Path, seq: u64) -> String {
    let snaps = restic_snapshots(repo.to_str().unwrap(), &[]);
    let holds = |s: &serde_json::Value| {
        s["tags"].as_array().is_some_and(|tags| {
            tags.iter().filter_map(|t| t.as_str()).any(|t| {
                t.strip_prefix("segments=")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .is_some_and(|(a, b)| (a..=b).contains(&seq))
            })
        })
    };
    let id = snaps
        .iter()
        .find(|s| holds(s))
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no snapshot holds segment {seq}: {snaps:?}"))
        .to_string();
    let path = format!("/coffer-binlog/default/shop/{seq:020}.binlog");
    let mut dump = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(["--no-cache", "dump", &id, &path])
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("restic is installed");
    let out = Command::new(MYSQLBINLOG)
        .args(["--no-defaults", "-v", "-"])
        .stdin(dump.stdout.take().unwrap())
        .output()
        .expect("MySQL's mysqlbinlog is installed (scripts/install-mysql.sh)");
    assert!(dump.wait().unwrap().success(), "restic dump {id} {path}");
    assert!(
        out.status.success(),
        "mysqlbinlog: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GTIDs MySQL's mysqlbinlog prints (`SET @@SESSION.GTID_NEXT= 'uuid:k'`), in order.
fn gtid_next(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once("GTID_NEXT= '"))
        .filter_map(|(_, rest)| rest.split_once('\''))
        .map(|(g, _)| g.to_string())
        .filter(|g| g != "AUTOMATIC")
        .collect()
}

/// The archive's status names exactly one gap, for `reason`: in `gaps`, in its GapDetected
/// condition, in `describe`, and between two recoverable windows. The status.
fn assert_named_gap(cf: &Coffer, reason: &str) -> serde_json::Value {
    let st = status(cf, "shop");
    assert_eq!(gap_reasons(&st), [reason], "{st}");
    let c = condition_of(&st, "GapDetected");
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&"True".into(), &reason.into()),
        "{st}"
    );
    assert_eq!(
        st["recoverableWindows"].as_array().unwrap().len(),
        2,
        "{st}"
    );
    let d = cf.ok(&["describe", "archive", "shop"]).stdout;
    assert!(d.contains(reason), "{d}");
    st
}

/// Capture: every transaction once, as `uuid:1..N`, ending at the server's gtid_executed;
/// each segment read by MySQL's mysqlbinlog names exactly its GTIDs; a server restart in the
/// middle of the load loses and repeats nothing; binlogs purged while the archive was
/// stopped are a Purged gap in the status and its GapDetected condition.
#[test]
fn a_mysql_archive_holds_every_gtid_once_across_a_restart_and_names_a_purged_gap() {
    let mut db = MysqlServer::start().unwrap();
    assert!(executed(&db).0.is_empty(), "a fresh server");
    let uuid = server_uuid(&db);
    let cf = Coffer::new();
    let repo = setup(&cf, &db);

    let child = start_archive(&cf, "shop");
    wait_streaming(&cf, "shop");
    // Two DDL transactions, then one row per transaction.
    db.exec(SCHEMA).unwrap();
    insert(&db, 1..=40);
    // The server goes away mid-load and comes back on the same data directory (a new
    // binlog file); the archive reconnects from its last archived GTID.
    db.restart().unwrap();
    insert(&db, 41..=80);
    let end = executed(&db);
    wait_until(
        Duration::from_secs(120),
        "the archive caught up after the restart",
        || last_gtid(&cf) == end,
    );
    let code = stop(child, libc::SIGINT);
    assert!(
        code.success(),
        "coffer archive exited {code}\n{}",
        logs(&cf)
    );

    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    assert!(
        segs[0].0.start_state.0.is_empty(),
        "the archive of an empty server starts at the empty state: {:?}",
        segs[0].0
    );
    let n = end.0[&Domain::MySql(uuid.parse().unwrap())].seq;
    assert_eq!(n, 82, "2 DDL and 80 rows: {end}");
    assert_eq!(
        gtids(&segs),
        range(&uuid, 1, n),
        "every transaction once, in order"
    );
    assert_eq!(segs.last().unwrap().0.end_state, end);
    assert_eq!(end.to_string(), format!("{uuid}:1-{n}"));
    let files: std::collections::BTreeSet<&str> =
        segs.iter().map(|s| s.0.source_file.as_str()).collect();
    assert!(
        files.len() >= 2,
        "the restart opened a new binlog file: {files:?}"
    );
    let st = status(&cf, "shop");
    assert!(st["gaps"].is_null(), "{st}");

    // MySQL's own mysqlbinlog reads every stored segment, and names exactly its GTIDs.
    for (m, _) in &segs {
        let text = restic_dump_mysqlbinlog(&repo, m.seq);
        let want: Vec<String> = m.transactions.iter().map(|t| t.gtid.to_string()).collect();
        assert_eq!(gtid_next(&text), want, "segment {}:\n{text}", m.seq);
    }

    // The gap: written while the archive is stopped, then purged from the server.
    insert(&db, 81..=90);
    db.exec("FLUSH BINARY LOGS").unwrap();
    let rows = db.query_strings("SHOW BINARY LOGS").unwrap();
    let newest = rows.last().unwrap()[0].clone().unwrap();
    db.exec(&format!("PURGE BINARY LOGS TO '{newest}'"))
        .unwrap();
    assert_eq!(db.query_strings("SHOW BINARY LOGS").unwrap().len(), 1);
    archive_until_caught_up(&cf, &db, || insert(&db, 91..=100));
    let st = assert_named_gap(&cf, "Purged");
    // After the gap the archive holds what the server still has, once, in order.
    let segs = segments(&repo, "shop");
    let after: Vec<String> = gtids(&segs).into_iter().skip(n as usize).collect();
    assert_eq!(after, range(&uuid, n + 11, n + 20), "{st}");
}

/// A fresh MySQL server to restore into, with its AppBinding `t-<name>`.
fn mysql_target(cf: &Coffer, name: &str) -> (MysqlServer, String) {
    let target = MysqlServer::start().unwrap();
    // The native load of the base needs LOAD DATA LOCAL, which MySQL 8+ turns off.
    target.exec("SET GLOBAL local_infile = ON").unwrap();
    let ab = target_binding(cf, name, &target);
    (target, ab)
}

/// The rows of app.t as `seq` values, in order.
fn seqs(db: &MysqlServer) -> Vec<u32> {
    db.query_strings("SELECT seq, v FROM app.t ORDER BY seq")
        .unwrap()
        .into_iter()
        .map(|r| {
            let seq: u32 = r[0].as_deref().unwrap().parse().unwrap();
            assert_eq!(r[1].as_deref(), Some(format!("row {seq}").as_str()));
            seq
        })
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The schema of `db` created without the binlog, the repository and archive of [`setup`],
/// the archive of rows 1..=`rows` (none: the server's GTID state stays empty), and then
/// coffer's native base backup, which records the server's GTID state (`gtid=`, empty or
/// `uuid:1-rows`): the repository, the base snapshot's id and the server's UUID.
fn native_base(cf: &Coffer, db: &MysqlServer, rows: u32) -> (std::path::PathBuf, String, String) {
    db.exec(&format!("SET SESSION sql_log_bin = 0; {SCHEMA}"))
        .unwrap();
    assert!(executed(db).0.is_empty(), "{}", executed(db));
    let uuid = server_uuid(db);
    let repo = setup(cf, db);
    if rows > 0 {
        archive_until_caught_up(cf, db, || insert(db, 1..=rows));
    }
    let state = executed(db).to_string();
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "the native base backup of MySQL: {run}");
    let bs = cf.last_session(&run);
    let id = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{bs:#}"))
        .to_string();
    let tags = snapshot_tags(&repo, &id);
    assert_eq!(tag_value(&tags, "app"), Some("default/db"), "{tags:?}");
    // The one snapshot that is not the archive's.
    let snaps: Vec<serde_json::Value> = restic_snapshots(repo.to_str().unwrap(), &[])
        .into_iter()
        .filter(|s| s["hostname"] != "coffer-binlog")
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let base = snaps[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        tag_value(&snapshot_tags(&repo, &base), "gtid"),
        Some(state.as_str())
    );
    (repo, base, uuid)
}

/// Restore to a point of a MySQL archive: a native base backup of the server before any row
/// (its GTID state empty, its schema created without the binlog), the archive from there, and
/// RestoreSessions into fresh MySQL servers replaying it with MySQL's mysqlbinlog: `latest`
/// has every row, a GTID `uuid:k` exactly rows 1..=k, a time exactly the rows committed up
/// to it; the restored server's gtid_executed is the reached state.
#[test]
fn a_mysql_archive_restores_to_latest_a_gtid_and_a_time() {
    let db = MysqlServer::start().unwrap();
    let cf = Coffer::new();
    let (_, base, uuid) = native_base(&cf, &db, 0);

    let mut mid = 0;
    archive_until_caught_up(&cf, &db, || {
        insert(&db, 1..=60);
        // Rows 1..=60 are committed by `mid`; the rest two seconds later at the earliest.
        mid = now();
        while now() < mid + 2 {
            std::thread::sleep(Duration::from_millis(100));
        }
        insert(&db, 61..=120);
    });
    let end = executed(&db);
    assert_eq!(end.to_string(), format!("{uuid}:1-120"));
    let all: Vec<u32> = (1..=120).collect();
    assert_eq!(seqs(&db), all);

    let restore = |name: &str, point: &str| {
        let (t, ab) = mysql_target(&cf, name);
        let rs = pitr_restore(&cf, name, &ab, "shop", point);
        assert_eq!(phase(&rs), "Succeeded", "{rs:#}\n{}", logs(&cf));
        (t, rs)
    };

    let (t, rs) = restore("latest", "latest: true");
    assert_eq!(seqs(&t), all);
    let st = &rs["status"]["pointInTime"];
    assert_eq!(st["reachedGtid"], end.to_string(), "{st:#}");
    assert!(
        st["baseSnapshot"]
            .as_str()
            .is_some_and(|s| base.starts_with(s) || s.starts_with(&base)),
        "{st:#}"
    );
    assert!(executed(&t).covers(&end), "{}", executed(&t));

    let k = 77;
    let (t, rs) = restore("gtid", &format!("gtid: \"{uuid}:{k}\""));
    assert_eq!(seqs(&t), (1..=k).collect::<Vec<_>>());
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        format!("{uuid}:1-{k}")
    );
    let (t, _) = restore(
        "gtid-ex",
        &format!("gtid: \"{uuid}:{k}\", inclusive: false"),
    );
    assert_eq!(seqs(&t), (1..k).collect::<Vec<_>>());

    let (t, rs) = restore(
        "mid",
        &format!("time: \"{}\"", coffer_control::pitr::rfc3339(mid as i64)),
    );
    assert_eq!(seqs(&t), (1..=60).collect::<Vec<_>>());
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        format!("{uuid}:1-60")
    );
}

/// The archive of rows 1..=20 (`uuid:1-20`) with a native base backup at row 5, stopped;
/// then `RESET BINARY LOGS AND GTIDS` (MySQL 8.4+'s RESET MASTER) and new writes, which MySQL
/// numbers `uuid:1..` again: the archive, started again, finds the server's history behind
/// what it archived — a Diverged gap — and archives the new history after it, once.
#[test]
fn reset_binary_logs_and_gtids_is_a_diverged_gap() {
    let db = MysqlServer::start().unwrap();
    let cf = Coffer::new();
    let (repo, _, uuid) = native_base(&cf, &db, 5);
    archive_until_caught_up(&cf, &db, || insert(&db, 6..=20));
    assert_eq!(last_gtid(&cf).to_string(), format!("{uuid}:1-20"));

    db.exec("RESET BINARY LOGS AND GTIDS").unwrap();
    insert(&db, 21..=25);
    archive_until_caught_up(&cf, &db, || insert(&db, 26..=27));
    assert_eq!(executed(&db).to_string(), format!("{uuid}:1-7"));
    let st = assert_named_gap(&cf, "Diverged");
    assert_eq!(st["gaps"][0]["sourceUuid"], uuid, "{st}");
    let message = st["gaps"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("starts without it") && message.contains("RESET BINARY LOGS AND GTIDS"),
        "{st}"
    );
    // The new history, after the gap: every transaction once, numbered from 1 again.
    let segs = segments(&repo, "shop");
    let gap_at = st["gaps"][0]["beforeSegment"].as_u64().unwrap();
    let (before, after): (Vec<_>, Vec<_>) = segs.into_iter().partition(|(m, _)| m.seq < gap_at);
    // Rows 1..=5 are in the base backup: retention dropped their segment.
    assert_eq!(gtids(&before), range(&uuid, 6, 20), "{st}");
    assert_eq!(gtids(&after), range(&uuid, 1, 7), "{st}");
}

/// The archive of rows 1..=20 (`uuid:1-20`) with a native base backup at row 5, stopped;
/// then the AppBinding points at another MySQL server with its own history: the archive, started
/// again, finds its UUID unknown there (the runner's check says UnknownDomain) and archives
/// the other server's history after it. The segments record no server UUID, so the timeline
/// cannot tell this from a reset: both are the archived source vanishing, a Diverged gap
/// whose message names both causes. From the base, a restore to the other server's last GTID
/// crosses the gap and is refused, naming it; one to `uuid:12` has exactly rows 1..=12;
/// `latest` stops before the gap, saying so.
#[test]
fn another_mysql_server_is_a_diverged_gap() {
    let db = MysqlServer::start().unwrap();
    let other = MysqlServer::start().unwrap();
    let cf = Coffer::new();
    // The base at `uuid:1-5`: on the first run only (a base at the empty state would lie
    // on both runs, which both start empty, and is not used).
    let (_, _, uuid) = native_base(&cf, &db, 5);
    archive_until_caught_up(&cf, &db, || insert(&db, 6..=20));

    other.exec(SCHEMA).unwrap();
    insert(&other, 1..=5);
    let r = cf.apply(
        "other.yaml",
        &[
            db_secret("db-secret", &other),
            appbinding("db", &other, "db-secret"),
        ]
        .join("---\n"),
    );
    assert!(r.ok, "{r}");
    archive_until_caught_up(&cf, &other, || insert(&other, 6..=8));
    let st = assert_named_gap(&cf, "Diverged");
    assert_eq!(st["gaps"][0]["sourceUuid"], uuid, "{st}");
    let message = st["gaps"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("starts without it") && message.contains("another server"),
        "{st}"
    );
    let end = executed(&other);
    assert_eq!(last_gtid(&cf), end);

    let (t, ab) = mysql_target(&cf, "across");
    let other_uuid = server_uuid(&other);
    let across = format!("gtid: \"{other_uuid}:10\"");
    let rs = pitr_restore(&cf, "across", &ab, "shop", &across);
    assert_eq!(phase(&rs), "Failed", "{rs:#}");
    let e = error(&rs);
    assert!(e.contains("would cross a Diverged gap"), "{e}");
    let dbs = t.query_strings("SHOW DATABASES LIKE 'app'").unwrap();
    assert!(dbs.is_empty(), "a refused restore wrote nothing");

    let rs = pitr_restore(&cf, "before", &ab, "shop", &format!("gtid: \"{uuid}:12\""));
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}\n{}", logs(&cf));
    assert_eq!(seqs(&t), (1..=12).collect::<Vec<_>>());
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        format!("{uuid}:1-12")
    );

    let (t, ab) = mysql_target(&cf, "latest");
    let rs = pitr_restore(&cf, "latest", &ab, "shop", "latest: true");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}\n{}", logs(&cf));
    assert_eq!(seqs(&t), (1..=20).collect::<Vec<_>>());
    let pit = &rs["status"]["pointInTime"];
    assert_eq!(pit["reachedGtid"], format!("{uuid}:1-20"), "{pit:#}");
    assert!(
        pit["note"].as_str().unwrap_or("").contains("Diverged"),
        "`latest` says it stopped before the gap: {pit:#}"
    );
}
