//! `coffer archive` (the binlog archive runner) against real MariaDB servers and a Galera
//! cluster: every committed transaction lands in the repository's segments exactly once
//! (checked by GTID and by replaying the segments with `mariadb-binlog` into a fresh server
//! and comparing CHECKSUM TABLE), the status says where the archive is, each way the
//! server's history can break is a named gap in the status, `describe` and /metrics, and a
//! Galera archive moves to another node when the one it reads dies.

use std::{
    io::Write,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use coffer_api::gtid::{Domain, GtidState, SegmentMeta};
use coffer_engine::archive::SegmentStore;
use coffer_repo::{LocalStore, Repo};
use coffer_testkit::{GaleraCluster, GaleraOptions, MariaDb, MariaDbOptions};
use mysql::prelude::Queryable;

use crate::common::*;

pub(crate) const SOURCE_ID: u32 = 11;

pub(crate) fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(url: &str) -> Option<String> {
    use std::io::Read;
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

pub(crate) fn binlog_source() -> MariaDb {
    MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap()
}

fn gtid_pos(rows: Vec<Vec<Option<String>>>) -> GtidState {
    rows[0][0].clone().unwrap_or_default().parse().unwrap()
}

pub(crate) fn pos(db: &MariaDb) -> GtidState {
    gtid_pos(db.query_strings("SELECT @@gtid_binlog_pos").unwrap())
}

fn archive_yaml(name: &str, ab: &str, repo: &str) -> String {
    format!(
        "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {{name: {name}}}\n\
         spec:\n  appBinding: {{name: {ab}}}\n  repository: {{name: {repo}}}\n  flushInterval: 1s\n"
    )
}

/// A home with a repository, a standalone server's AppBinding and an archive `shop`.
pub(crate) fn setup(cf: &Coffer, db: &MariaDb) -> std::path::PathBuf {
    let repo = cf.path("repo");
    let r = cf.apply(
        "m.yaml",
        &[
            secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
            local_repo("repo", &repo, "repo-secret"),
            db_secret("db-secret", db),
            appbinding("db", db, "db-secret"),
            archive_yaml("shop", "db", "repo"),
        ]
        .join("---\n"),
    );
    assert!(r.ok, "{r}");
    repo
}

/// `coffer archive shop` in the background, its log in the work directory.
pub(crate) fn start_archive(cf: &Coffer, name: &str) -> Child {
    let n = std::fs::read_dir(cf.work.path()).unwrap().count();
    let log = std::fs::File::create(cf.path(&format!("archive-{name}-{n}.log"))).unwrap();
    cf.cmd()
        .args(["archive", name])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub(crate) fn logs(cf: &Coffer) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(cf.work.path()).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            out.push_str(&format!(
                "--- {}\n{}\n",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            ));
        }
    }
    out
}

/// SIGINT (or SIGTERM), then the exit status.
pub(crate) fn stop(mut child: Child, sig: i32) -> ExitStatus {
    unsafe { libc::kill(child.id() as i32, sig) };
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("coffer archive did not stop within 60 s of signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn status(cf: &Coffer, name: &str) -> serde_json::Value {
    cf.get_json("archive", name)["status"].clone()
}

fn last_gtid(cf: &Coffer, name: &str) -> GtidState {
    status(cf, name)["lastArchivedGtid"]
        .as_str()
        .unwrap_or("")
        .parse()
        .unwrap()
}

pub(crate) fn wait_streaming(cf: &Coffer, name: &str) {
    wait_until(Duration::from_secs(60), "the archive streams", || {
        status(cf, name)["phase"] == "Streaming"
    });
}

/// Every segment of `default/<name>`, in order, with its bytes.
pub(crate) fn segments(repo: &Path, name: &str) -> Vec<(SegmentMeta, Vec<u8>)> {
    let r = Repo::open(Arc::new(LocalStore::new(repo)), REPO_PASSWORD).unwrap();
    let store = SegmentStore::new(r, &format!("default/{name}"));
    store
        .list()
        .unwrap()
        .iter()
        .map(|s| {
            let meta = store.meta(s.meta.seq).unwrap();
            let mut bytes = Vec::new();
            store.read(s.meta.seq, &mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, meta.bytes, "segment {}", meta.seq);
            (meta, bytes)
        })
        .collect()
}

/// The archived GTIDs, in order.
pub(crate) fn gtids(segs: &[(SegmentMeta, Vec<u8>)]) -> Vec<String> {
    segs.iter()
        .flat_map(|(m, _)| m.transactions.iter().map(|t| t.gtid.to_string()))
        .collect()
}

/// Segments chain: each starts where the previous ended, numbered without holes.
pub(crate) fn assert_chained(segs: &[(SegmentMeta, Vec<u8>)]) {
    for pair in segs.windows(2) {
        assert_eq!(pair[0].0.seq + 1, pair[1].0.seq);
        assert_eq!(
            pair[0].0.end_state, pair[1].0.start_state,
            "segment {} does not continue {}",
            pair[1].0.seq, pair[0].0.seq
        );
    }
}

pub(crate) const SCHEMA: &str = "CREATE DATABASE app; \
    CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB; \
    CREATE TABLE app.u (id INT PRIMARY KEY AUTO_INCREMENT, t_id INT, big TEXT) ENGINE=InnoDB";

/// Single- and multi-statement transactions, updates, deletes and one large transaction.
pub(crate) fn load(db: &MariaDb, from: i32, n: i32) {
    let mut c = db.conn().unwrap();
    for i in from..from + n {
        let sql = match i % 40 {
            7 => "UPDATE app.t SET v = CONCAT(v, 'x') WHERE id % 7 = 0".to_string(),
            13 => format!("DELETE FROM app.t WHERE id = {}", i - 3),
            _ => format!(
                "START TRANSACTION; INSERT INTO app.t VALUES ({i}, 'row {i}'); \
                 INSERT INTO app.u (t_id, big) VALUES ({i}, REPEAT('b', {i})); COMMIT"
            ),
        };
        c.query_drop(sql).unwrap();
        if i == from + n / 2 {
            c.query_drop(
                "INSERT INTO app.u (t_id, big) SELECT seq, REPEAT(CHAR(65 + seq % 26), 300) \
                 FROM app.seq_1_to_5000",
            )
            .unwrap();
        }
    }
}

/// Replays the segments with `mariadb-binlog | mariadb` into `target`.
fn replay(segs: &[(SegmentMeta, Vec<u8>)], target: &MariaDb, dir: &Path) {
    let mut files = Vec::new();
    for (m, bytes) in segs {
        let p = dir.join(format!("seg-{:06}.bin", m.seq));
        std::fs::write(&p, bytes).unwrap();
        files.push(p);
    }
    let cnf = dir.join("client.cnf");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&cnf)
            .unwrap();
        write!(
            f,
            "[client]\nuser=root\npassword={}\nhost=127.0.0.1\nport={}\nprotocol=tcp\n",
            target.root_password(),
            target.port()
        )
        .unwrap();
    }
    // Continuity was checked by GTID above; mariadb-binlog's own strict check trips over
    // segment boundaries (pitr.md §2).
    let dump = Command::new("mariadb-binlog")
        .arg("--skip-gtid-strict-mode")
        .args(&files)
        .output()
        .expect("run mariadb-binlog");
    assert!(
        dump.status.success(),
        "mariadb-binlog failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut client = Command::new("mariadb")
        .arg(format!("--defaults-file={}", cnf.display()))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mariadb");
    client
        .stdin
        .take()
        .unwrap()
        .write_all(&dump.stdout)
        .unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn checksums(db: &MariaDb) -> Vec<Vec<Option<String>>> {
    db.query_strings("CHECKSUM TABLE app.t, app.u EXTENDED")
        .unwrap()
}

/// (a) Every committed transaction is in the stored segments, once, in order; replayed into
/// a fresh server they give the source's tables; the status names the last GTID.
#[test]
fn the_archive_holds_every_committed_transaction_and_says_where_it_is() {
    let db = binlog_source();
    let cf = Coffer::new();
    let repo = setup(&cf, &db);
    let start = pos(&db);
    let child = start_archive(&cf, "shop");
    wait_streaming(&cf, "shop");
    // The load runs while the archive streams (it is another process).
    db.exec(SCHEMA).unwrap();
    load(&db, 0, 150);
    let end = pos(&db);
    wait_until(
        Duration::from_secs(60),
        "the status names the server's last GTID",
        || last_gtid(&cf, "shop") == end,
    );
    let code = stop(child, libc::SIGINT);
    assert!(
        code.success(),
        "coffer archive exited {code}\n{}",
        logs(&cf)
    );
    let st = status(&cf, "shop");
    assert_eq!(st["lastArchivedGtid"], end.to_string());
    assert!(st["lastEventTime"].as_str().is_some(), "{st}");
    assert!(st["segmentCount"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(
        st["recoverableWindows"].as_array().unwrap().len(),
        1,
        "{st}"
    );
    assert!(st["gaps"].is_null(), "{st}");
    let table = cf.ok(&["get", "archive", "shop"]).stdout;
    assert!(table.contains(&end.to_string()), "{table}");

    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    assert_eq!(
        segs[0].0.start_state, start,
        "an empty archive starts at the server's position"
    );
    let want: Vec<String> = (start.0.get(&Domain::MariaDb(0)).map_or(0, |g| g.seq) + 1
        ..=end.0[&Domain::MariaDb(0)].seq)
        .map(|s| format!("0-{SOURCE_ID}-{s}"))
        .collect();
    assert_eq!(gtids(&segs), want, "every transaction once, in order");
    assert_eq!(
        st["archivedBytes"].as_u64().unwrap(),
        segs.iter().map(|s| s.0.bytes).sum::<u64>()
    );

    let target = MariaDb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    replay(&segs, &target, dir.path());
    assert_eq!(checksums(&target), checksums(&db));
}

/// A server that never binlogged a transaction (empty GTID state; its data loaded without
/// the binlog), a base backup of it holding that empty state, then the archive: it starts
/// at the empty state, archives every later transaction once, in order, and a restore to
/// `latest` from that base gives the source's rows (the reported "an archive of a server
/// with an empty GTID state streams nothing").
#[test]
fn an_archive_of_a_server_with_an_empty_gtid_state_streams_what_comes_next() {
    let db = binlog_source();
    // What a fresh server looks like, whatever the test kit's set-up wrote.
    db.exec("RESET MASTER").unwrap();
    db.exec(&format!("SET SESSION sql_log_bin = 0; {SCHEMA}"))
        .unwrap();
    assert!(pos(&db).0.is_empty(), "{}", pos(&db));
    let cf = Coffer::new();
    let repo = setup(&cf, &db);
    base_backup(&cf);
    let child = start_archive(&cf, "shop");
    wait_streaming(&cf, "shop");
    load(&db, 0, 20);
    let end = pos(&db);
    wait_until(
        Duration::from_secs(60),
        "the archive has the server's transactions",
        || last_gtid(&cf, "shop") == end,
    );
    let code = stop(child, libc::SIGINT);
    assert!(code.success(), "{code}\n{}", logs(&cf));
    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    assert!(segs[0].0.start_state.0.is_empty(), "{:?}", segs[0].0);
    let want: Vec<String> = (1..=end.0[&Domain::MariaDb(0)].seq)
        .map(|s| format!("0-{SOURCE_ID}-{s}"))
        .collect();
    assert_eq!(gtids(&segs), want, "every transaction once, in order");
    let st = status(&cf, "shop");
    assert!(st["gaps"].is_null(), "{st}");
    let (t, ab) = restore_target(&cf, "latest");
    let rs = pitr_restore(&cf, "latest", &ab, "shop", "latest: true");
    let want = Point {
        gtid: end,
        rows: table_rows(&db, TABLES),
    };
    assert_restored_to(&rs, &want, &t);

    // The server purges the binlogs since the empty state: a new archive cannot start at
    // the empty base any more, and must not pretend to (it starts at the server's position).
    load(&db, 20, 3);
    purge_all_but_current(&db);
    let oldest = pos(&db);
    load(&db, 23, 3);
    let r = cf.apply("shop2.yaml", &archive_yaml("shop2", "db", "repo"));
    assert!(r.ok, "{r}");
    let child = start_archive(&cf, "shop2");
    wait_streaming(&cf, "shop2");
    load(&db, 26, 3);
    let end = pos(&db);
    wait_until(Duration::from_secs(60), "shop2 caught up", || {
        last_gtid(&cf, "shop2") == end
    });
    let code = stop(child, libc::SIGINT);
    assert!(code.success(), "{code}\n{}", logs(&cf));
    // MariaDB refuses the empty connect state once binlogs are purged (it does not stream
    // from the oldest binlog left as if it were the beginning): the archive starts where
    // the server's oldest binlog does, and says so.
    let segs = segments(&repo, "shop2");
    let first = &segs[0].0;
    assert_eq!(first.start_state, oldest, "{first:?}");
    let mut at = first.start_state.clone();
    for t in &first.transactions {
        assert!(
            at.0.get(&t.gtid.domain).map_or(1, |g| g.seq + 1) == t.gtid.seq,
            "segment 0 starts at `{}` but holds {:?}\n{}",
            first.start_state,
            first
                .transactions
                .iter()
                .map(|t| t.gtid.to_string())
                .collect::<Vec<_>>(),
            logs(&cf)
        );
        at.advance(t.gtid);
    }
}

/// (d) A restarted server is resumed from the last archived GTID: no gap, no duplicate.
#[test]
fn a_restarted_server_is_resumed_without_a_gap() {
    let mut db = binlog_source();
    let cf = Coffer::new();
    let repo = setup(&cf, &db);
    let start = pos(&db);
    let child = start_archive(&cf, "shop");
    wait_streaming(&cf, "shop");
    db.exec(SCHEMA).unwrap();
    load(&db, 0, 30);
    db.restart().unwrap();
    load(&db, 30, 30);
    let end = pos(&db);
    wait_until(
        Duration::from_secs(90),
        "the archive caught up after the restart",
        || last_gtid(&cf, "shop") == end,
    );
    let code = stop(child, libc::SIGTERM);
    assert!(code.success(), "{code}\n{}", logs(&cf));
    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    let want: Vec<String> = (start.0.get(&Domain::MariaDb(0)).map_or(0, |g| g.seq) + 1
        ..=end.0[&Domain::MariaDb(0)].seq)
        .map(|s| format!("0-{SOURCE_ID}-{s}"))
        .collect();
    assert_eq!(gtids(&segs), want);
    let st = status(&cf, "shop");
    assert!(st["gaps"].is_null(), "{st}");
    assert_eq!(st["recoverableWindows"].as_array().unwrap().len(), 1);
    let files: std::collections::BTreeSet<&str> =
        segs.iter().map(|s| s.0.source_file.as_str()).collect();
    assert!(
        files.len() >= 2,
        "the restart opened a new binlog file: {files:?}"
    );
}

fn purge_all_but_current(db: &MariaDb) {
    db.exec("FLUSH BINARY LOGS").unwrap();
    let current = db.query_strings("SHOW MASTER STATUS").unwrap()[0][0]
        .clone()
        .unwrap();
    // A file can be purged only once crash recovery no longer needs it.
    wait_until(Duration::from_secs(30), "old binlogs are purged", || {
        db.exec(&format!("PURGE BINARY LOGS TO '{current}'"))
            .unwrap();
        db.query_strings("SHOW BINARY LOGS").unwrap().len() == 1
    });
}

pub(crate) fn gap_reasons(st: &serde_json::Value) -> Vec<String> {
    st["gaps"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|x| x["reason"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn gap_condition(st: &serde_json::Value) -> (String, String) {
    let c = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "GapDetected"))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
    )
}

/// Runs the archive while `write` writes, until it has stored everything up to the
/// server's position (an archive with nothing stored yet has no last GTID to compare).
fn archive_while(cf: &Coffer, db: &MariaDb, write: impl FnOnce()) {
    let child = start_archive(cf, "shop");
    wait_streaming(cf, "shop");
    write();
    let end = pos(db);
    wait_until(Duration::from_secs(60), "the archive caught up", || {
        last_gtid(cf, "shop") == end
    });
    let code = stop(child, libc::SIGINT);
    assert!(code.success(), "{code}\n{}", logs(cf));
}

const TABLES: &[&str] = &["app.t", "app.u"];

/// A native base backup of AppBinding `db`, taken before the archive first runs: an empty
/// archive starts at its GTID state, so restores from it can reach every archived point.
fn base_backup(cf: &Coffer) {
    let bc = backup_config_with("bc", "repo", "db", &[("method", "native")], 5);
    let r = cf.apply("bc.yaml", &bc);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
}

/// The gap tests' first run: the schema, a base backup, then the archive while 6 rows are
/// loaded, a point taken, and `then` more rows loaded. Returns that point.
fn first_run(cf: &Coffer, db: &MariaDb, then: i32) -> Point {
    db.exec(SCHEMA).unwrap();
    base_backup(cf);
    let mut mid = None;
    archive_while(cf, db, || {
        load(db, 0, 6);
        mid = Some(point(db));
        load(db, 6, then);
    });
    mid.unwrap()
}

/// The source at one point: its GTID position and every row of the load's tables.
struct Point {
    gtid: GtidState,
    rows: Vec<Vec<Vec<Option<String>>>>,
}

fn point(db: &MariaDb) -> Point {
    Point {
        gtid: pos(db),
        rows: table_rows(db, TABLES),
    }
}

/// The last GTID of `domain` in a state, as a restore target names it.
fn gtid_of(state: &GtidState, domain: u32) -> String {
    state.0[&Domain::MariaDb(domain)].to_string()
}

/// A restore across the archive's gap: refused before anything is written, the error naming
/// the gap by its reason.
fn assert_refused_across(rs: &serde_json::Value, reasons: &[String], target: &MariaDb) {
    assert_eq!(phase(rs), "Failed", "{rs:#}");
    let e = error(rs);
    assert!(
        reasons
            .iter()
            .any(|r| e.contains(&format!("would cross a {r} gap"))),
        "the error names one of the gaps {reasons:?}: {e}"
    );
    let dbs = target.query_strings("SHOW DATABASES LIKE 'app'").unwrap();
    assert!(dbs.is_empty(), "a refused restore wrote nothing");
}

/// A restore up to a point before the gap: succeeded, at exactly that point, with exactly
/// the rows the source had then.
fn assert_restored_to(rs: &serde_json::Value, want: &Point, target: &MariaDb) {
    assert_eq!(phase(rs), "Succeeded", "{rs:#}");
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        want.gtid.to_string(),
        "{rs:#}"
    );
    let got = table_rows(target, TABLES);
    for (i, t) in TABLES.iter().enumerate() {
        assert_eq!(got[i].len(), want.rows[i].len(), "{t}: row count");
        for (g, w) in got[i].iter().zip(&want.rows[i]) {
            assert_eq!(g, w, "{t}: row");
        }
    }
}

/// (b) Binlogs purged while the archive was stopped (the test purges; coffer never does):
/// a Purged gap in the status, in `describe` and in /metrics' source (the status).
#[test]
fn binlogs_purged_while_stopped_are_a_purged_gap() {
    let db = binlog_source();
    let cf = Coffer::new();
    let _repo = setup(&cf, &db);
    let mid = first_run(&cf, &db, 4);
    let before_gap = point(&db);
    load(&db, 10, 10);
    purge_all_but_current(&db);
    load(&db, 20, 10);
    // This time `coffer server` runs the archive; /metrics shows the gap.
    let port = coffer_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(cf.path("server.log")).unwrap();
    let server = cf
        .cmd()
        .args([
            "server",
            "--metrics-address",
            &addr,
            "--shutdown-grace",
            "30s",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let end = pos(&db);
    wait_until(
        Duration::from_secs(90),
        "the server's archive caught up",
        || last_gtid(&cf, "shop") == end,
    );
    let mut metrics = String::new();
    wait_until(Duration::from_secs(30), "/metrics shows the gap", || {
        metrics = http_get(&format!("http://{addr}/metrics")).unwrap_or_default();
        metrics
            .lines()
            .any(|l| l.starts_with("coffer_binlog_archive_gaps{") && l.ends_with(" 1"))
    });
    assert!(
        metrics.contains("coffer_binlog_archive_lag_seconds{")
            && metrics.contains("coffer_binlog_archive_recoverable_end_timestamp_seconds{")
            && metrics.contains("coffer_binlog_archive_archived_bytes{"),
        "{metrics}"
    );
    let code = stop(server, libc::SIGTERM);
    assert!(code.success(), "{code}\n{}", logs(&cf));
    let st = status(&cf, "shop");
    assert_eq!(
        st["phase"], "Pending",
        "the server stopped its runner cleanly: {st}"
    );
    assert_eq!(gap_reasons(&st), ["Purged"], "{st}");
    assert_eq!(gap_condition(&st), ("True".into(), "Purged".into()), "{st}");
    assert_eq!(
        st["recoverableWindows"].as_array().unwrap().len(),
        2,
        "{st}"
    );
    let d = cf.ok(&["describe", "archive", "shop"]).stdout;
    assert!(d.contains("Purged"), "{d}");
    // The window after the gap ends at the server's position.
    let end = pos(&db);
    assert_eq!(last_gtid(&cf, "shop"), end);

    // Restores from the base backup, which lies before the gap: to a GTID after it, refused
    // (naming it); to a GTID before it, exactly that point; `latest` stops before it.
    let (t, ab) = restore_target(&cf, "across");
    let across = format!("gtid: \"{}\"", gtid_of(&end, 0));
    let rs = pitr_restore(&cf, "across", &ab, "shop", &across);
    assert_refused_across(&rs, &["Purged".into()], &t);
    let before = format!("gtid: \"{}\"", gtid_of(&mid.gtid, 0));
    let rs = pitr_restore(&cf, "before", &ab, "shop", &before);
    assert_restored_to(&rs, &mid, &t);
    let (t, ab) = restore_target(&cf, "latest");
    let rs = pitr_restore(&cf, "latest", &ab, "shop", "latest: true");
    assert_restored_to(&rs, &before_gap, &t);
    let note = rs["status"]["pointInTime"]["note"].as_str().unwrap_or("");
    assert!(
        note.contains("Purged"),
        "`latest` says it stopped before the gap: {rs:#}"
    );
}

/// (b) RESET MASTER: the server's history went back; a Diverged gap.
#[test]
fn reset_master_is_a_diverged_gap() {
    let db = binlog_source();
    let cf = Coffer::new();
    let _repo = setup(&cf, &db);
    let mid = first_run(&cf, &db, 4);
    db.exec("RESET MASTER").unwrap();
    // The transactions after the reset commit in a later second than those before it, so a
    // time target can lie after the gap only.
    let t0 = now();
    wait_until(Duration::from_secs(3), "the next second", || now() > t0);
    archive_while(&cf, &db, || load(&db, 10, 3));
    let st = status(&cf, "shop");
    let reasons = gap_reasons(&st);
    assert!(reasons.contains(&"Diverged".to_string()), "{st}");
    assert_eq!(gap_condition(&st).0, "True", "{st}");
    let d = cf.ok(&["describe", "archive", "shop"]).stdout;
    assert!(d.contains("Diverged"), "{d}");

    // The GTIDs after the reset repeat earlier numbers: the target after the gap is a time.
    let (t, ab) = restore_target(&cf, "across");
    let across = format!("time: \"{}\"", coffer_control::pitr::rfc3339(now() as i64));
    let rs = pitr_restore(&cf, "across", &ab, "shop", &across);
    assert_refused_across(&rs, &reasons, &t);
    let before = format!("gtid: \"{}\"", gtid_of(&mid.gtid, 0));
    let rs = pitr_restore(&cf, "before", &ab, "shop", &before);
    assert_restored_to(&rs, &mid, &t);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// (b) The AppBinding now points at another server with its own GTID history (another
/// domain): an UnknownDomain gap, and the archive follows the new server.
#[test]
fn a_server_with_another_history_is_a_named_gap() {
    let db = binlog_source();
    let other = MariaDb::start_with(MariaDbOptions::default().binlog(12, 7)).unwrap();
    let cf = Coffer::new();
    let _repo = setup(&cf, &db);
    let mid = first_run(&cf, &db, 2);
    other.exec(SCHEMA).unwrap();
    load(&other, 0, 5);
    let r = cf.apply(
        "other.yaml",
        &[
            db_secret("db-secret", &other),
            appbinding("db", &other, "db-secret"),
        ]
        .join("---\n"),
    );
    assert!(r.ok, "{r}");
    archive_while(&cf, &other, || load(&other, 5, 5));
    let st = status(&cf, "shop");
    let reasons = gap_reasons(&st);
    assert!(
        reasons.contains(&"UnknownDomain".to_string()) || reasons.contains(&"Diverged".to_string()),
        "{st}"
    );
    assert_eq!(gap_condition(&st).0, "True", "{st}");

    // From the first server's base backup: the other server's last GTID is across the gap
    // (refused, naming it); a GTID of the first server before it restores exactly.
    let (t, ab) = restore_target(&cf, "across");
    let across = format!("gtid: \"{}\"", gtid_of(&pos(&other), 7));
    let rs = pitr_restore(&cf, "across", &ab, "shop", &across);
    assert_refused_across(&rs, &reasons, &t);
    let before = format!("gtid: \"{}\"", gtid_of(&mid.gtid, 0));
    let rs = pitr_restore(&cf, "before", &ab, "shop", &before);
    assert_restored_to(&rs, &mid, &t);
}

/// (c) Galera: the archive reads node 1; node 1 is SIGKILLed during a write load; the
/// archive continues from another node, and the segments hold every GTID once, in order; a
/// point-in-time restore (the SST base, then the replay) to a GTID after the move has
/// exactly the cluster's rows at that GTID.
#[test]
fn a_galera_archive_moves_to_another_node_without_loss_or_duplicate() {
    let cluster = GaleraCluster::start(GaleraOptions {
        nodes: 3,
        binlog: true,
        ..Default::default()
    })
    .unwrap();
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let n1 = cluster.node(0);
    let ab = format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: db}}\n\
         spec:\n  type: kubedb.com/perconaxtradb\n  clientConfig: {{url: \"mysql://127.0.0.1:{}/\"}}\n  \
         secret: {{name: db-secret}}\n  parameters: {{group: {}, address: \"{}\"}}\n",
        n1.port(),
        cluster.group(),
        cluster.address()
    );
    let r = cf.apply(
        "m.yaml",
        &[
            secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
            local_repo("repo", &repo, "repo-secret"),
            secret(
                "db-secret",
                &[("username", "root"), ("password", cluster.root_password())],
            ),
            ab,
            archive_yaml("shop", "db", "repo"),
        ]
        .join("---\n"),
    );
    assert!(r.ok, "{r}");
    n1.exec(SCHEMA).unwrap();
    let node_pos = |i: usize| {
        gtid_pos(
            cluster
                .node(i)
                .query_strings("SELECT @@gtid_binlog_pos")
                .unwrap(),
        )
    };
    let start = node_pos(0);
    // A base backup of the cluster's AppBinding (a Galera SST through garbd: its parameters
    // name a cluster), before the archive runs.
    base_backup(&cf);
    assert_eq!(node_pos(0), start, "nothing wrote during the backup");
    // Row `i` is the cluster's i-th transaction of the load (one writer, one row per
    // transaction): its id is its commit order. Each row's GTID, as its node reported it.
    let gtid_of_row = std::sync::Mutex::new(std::collections::BTreeMap::<i32, String>::new());
    let insert = |node: usize, i: i32| {
        let mut c = cluster.node(node).conn().unwrap();
        c.query_drop(format!("INSERT INTO app.t VALUES ({i}, 'row {i}')"))
            .unwrap();
        let g: String = c.query_first("SELECT @@last_gtid").unwrap().unwrap();
        gtid_of_row.lock().unwrap().insert(i, g);
    };
    let child = start_archive(&cf, "shop");
    wait_streaming(&cf, "shop");
    for i in 0..40 {
        insert(i as usize % 3, i);
    }
    wait_until(
        Duration::from_secs(60),
        "node 1's transactions are archived",
        || last_gtid(&cf, "shop").covers(&node_pos(0)),
    );
    // Kill the node being read in the middle of a write load that goes on through the
    // others.
    let half = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            for i in 40..160 {
                if i == 80 {
                    half.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                insert(1 + i as usize % 2, i);
            }
        });
        wait_until(Duration::from_secs(60), "half the load is written", || {
            half.load(std::sync::atomic::Ordering::SeqCst)
        });
        n1.kill();
        h.join().unwrap();
    });
    // Node 1 may have sent all of that before it died: more writes after its death.
    for i in 160..200 {
        insert(1 + i as usize % 2, i);
    }
    let end = node_pos(1);
    let node1 = format!("127.0.0.1:{} ", n1.port());
    wait_until(
        Duration::from_secs(120),
        "the archive continued from another node",
        || {
            let st = status(&cf, "shop");
            last_gtid(&cf, "shop") == end
                && st["phase"] == "Streaming"
                && !st["source"].as_str().unwrap_or("").starts_with(&node1)
        },
    );
    let code = stop(child, libc::SIGINT);
    assert!(code.success(), "{code}\n{}", logs(&cf));
    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    let seqs: Vec<u64> = segs
        .iter()
        .flat_map(|(m, _)| {
            m.transactions
                .iter()
                .filter(|t| t.gtid.domain == Domain::MariaDb(100))
                .map(|t| t.gtid.seq)
        })
        .collect();
    let (s0, s1) = (
        start.0[&Domain::MariaDb(100)].seq,
        end.0[&Domain::MariaDb(100)].seq,
    );
    assert_eq!(
        seqs,
        (s0 + 1..=s1).collect::<Vec<_>>(),
        "every GTID once, in order"
    );
    let servers: std::collections::BTreeSet<String> =
        segs.iter().map(|s| s.0.source_address.clone()).collect();
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let per_seg: Vec<(u64, String, usize)> = segs
        .iter()
        .map(|s| (s.0.seq, s.0.source_address.clone(), s.0.transactions.len()))
        .collect();
    assert!(
        servers.len() >= 2,
        "read from two nodes: {per_seg:?}, nodes at {ports:?}\n{}",
        logs(&cf)
    );
    assert!(status(&cf, "shop")["gaps"].is_null());
    let rows = cluster
        .node(1)
        .query_strings("SELECT COUNT(*) FROM app.t")
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("200"));

    // Each row's GTID is the next of domain 100: the ids are the commit order.
    let gtid_of_row = gtid_of_row.into_inner().unwrap();
    let by_row: Vec<u64> = (0..200)
        .map(|i| {
            gtid_of_row[&i]
                .parse::<coffer_api::gtid::Gtid>()
                .unwrap()
                .seq
        })
        .collect();
    assert_eq!(by_row, (s0 + 1..=s1).collect::<Vec<_>>(), "{gtid_of_row:?}");
    // Point-in-time restore: the cluster's base backup (a Galera SST: the AppBinding is a
    // cluster's) into a new data directory, then the segments of both nodes replayed up to
    // row 180's GTID (after the move to another node). The cluster had exactly rows 0..=180
    // then; the restored server's rows are compared with the cluster's one by one.
    let at = &gtid_of_row[&180];
    let datadir = cf.path("restored/data");
    let params = format!(
        ", params: [{{name: dataDir, value: \"{}\"}}]",
        datadir.display()
    );
    let m = pitr_session(
        "galera",
        "db",
        &format!("gtid: \"{at}\", archive: shop"),
        &params,
    );
    let f = cf.file("galera.yaml", &m);
    let _ = cf.run(&["restore", "-f", f.to_str().unwrap(), "--wait"]);
    let rs = cf.get_json("restoresession", "galera");
    assert_eq!(
        phase(&rs),
        "Succeeded",
        "{rs:#}\n{:#?}\n{}",
        restic_snapshots(repo.to_str().unwrap(), &[]),
        logs(&cf)
    );
    let st = &rs["status"]["pointInTime"];
    assert!(
        st["reachedGtid"]
            .as_str()
            .unwrap_or("")
            .contains(at.as_str()),
        "{st:#}"
    );
    let port = coffer_testkit::free_port();
    let _server = crate::physical::start_on(&datadir, port);
    let mut c = crate::physical::connect(port, cluster.root_password());
    let want = cluster
        .node(1)
        .query_strings("SELECT * FROM app.t WHERE id <= 180 ORDER BY id")
        .unwrap();
    assert_eq!(want.len(), 181);
    let got: Vec<Vec<Option<String>>> = c
        .query_map(
            "SELECT id, v FROM app.t ORDER BY id",
            |(id, v): (i64, String)| vec![Some(id.to_string()), Some(v)],
        )
        .unwrap();
    assert_eq!(got.len(), want.len(), "no missing and no extra row");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "row");
    }
}
