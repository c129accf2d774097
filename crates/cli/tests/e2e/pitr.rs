//! Restore to a point (issue #12): a base backup, the binlog archive's segments, and a
//! RestoreSession with `spec.target.pointInTime` that replays exactly up to its target —
//! `latest`, a time, a GTID (inclusive or not) — and refuses to cross a gap, naming it.
//!
//! Until `coffer archive NAME` runs archives, the test fills the archive's store itself by
//! driving the capture (coffer_db::binlog) into the store's sink, as the runner will.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_api::gtid::{Domain, GtidState};
use coffer_db::{
    binlog::{self, SegmentPolicy, SegmentWriter, StreamOptions},
    ClientFiles, ClientFlavor, ConnSpec,
};
use coffer_engine::archive::{RepoSink, SegmentStore};
use coffer_testkit::{MariaDb, MariaDbOptions};

use crate::common::*;

const SOURCE_ID: u32 = 11;
const SCHEMA: &str = "CREATE DATABASE app; \
    CREATE TABLE app.t (seq INT PRIMARY KEY, ts DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB";

fn gtid_pos(db: &MariaDb) -> GtidState {
    let rows = db.query_strings("SELECT @@gtid_binlog_pos").unwrap();
    rows[0][0].clone().unwrap_or_default().parse().unwrap()
}

/// One row per transaction, in commit order; returns each row's GTID.
fn insert(db: &MariaDb, rows: std::ops::RangeInclusive<u32>) -> Vec<String> {
    use coffer_testkit::mysql::prelude::Queryable;
    let mut c = db.conn().unwrap();
    rows.map(|i| {
        c.query_drop(format!("INSERT INTO app.t (seq) VALUES ({i})"))
            .unwrap();
        c.query_first::<String, _>("SELECT @@last_gtid")
            .unwrap()
            .unwrap()
    })
    .collect()
}

fn open_store(cf: &Coffer, archive: &str) -> SegmentStore {
    let store = std::sync::Arc::new(coffer_repo::LocalStore::new(cf.path("repo")));
    let repo = coffer_repo::Repo::open(store, REPO_PASSWORD).unwrap();
    SegmentStore::new(repo, archive)
}

/// Archives the source's binlog from `from` until it covers `until`, into the store, as
/// segments of at most `max_bytes`; returns the next segment number.
fn archive(
    src: &MariaDb,
    store: SegmentStore,
    first_seq: u64,
    from: &GtidState,
    until: &GtidState,
) -> u64 {
    let spec = ConnSpec {
        host: src.host().into(),
        port: src.port(),
        user: "root".into(),
        password: src.root_password().into(),
        tls: None,
        label: "AppBinding default/src".into(),
    };
    let until = until.clone();
    let from = from.clone();
    // The runner's shape: the capture on its own thread, writing into the repository.
    std::thread::spawn(move || {
        let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
        let name = store.archive().to_string();
        let mut w = SegmentWriter::new(
            &name,
            first_seq,
            from.clone(),
            SegmentPolicy {
                flush_interval: Duration::from_secs(3600),
                max_bytes: 8 << 10,
            },
            RepoSink::new(store),
        );
        let mut src = binlog::open(
            &spec,
            &files,
            StreamOptions {
                server_id: binlog::archive_server_id("default", "arch"),
                heartbeat: Duration::from_millis(200),
            },
            &from,
        )
        .unwrap();
        binlog::capture(&mut src, &mut w, |s| s.covers(&until)).unwrap();
        w.next_seq()
    })
    .join()
    .unwrap()
}

fn archive_manifest(name: &str) -> String {
    format!(
        "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {{name: {name}}}\n\
         spec:\n  appBinding: {{name: src}}\n  repository: {{name: repo}}\n  paused: true\n"
    )
}

/// Restores `point` of `archive` into a fresh server through a RestoreSession `name`;
/// returns the server and the session.
fn restore_into_new(
    cf: &Coffer,
    name: &str,
    archive: &str,
    point: &str,
) -> (MariaDb, serde_json::Value) {
    let (target, ab) = restore_target(cf, name);
    let rs = pitr_restore(cf, name, &ab, archive, point);
    (target, rs)
}

/// `(count, max(seq))` of app.t.
fn rows(c: &mut coffer_testkit::mysql::Conn) -> (u64, u64) {
    use coffer_testkit::mysql::prelude::Queryable;
    c.query_first::<(u64, Option<u64>), _>("SELECT COUNT(*), MAX(seq) FROM app.t")
        .unwrap()
        .map(|(n, m)| (n, m.unwrap_or(0)))
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .unwrap()
        .to_string()
}

/// Applies the repository, the source's AppBinding, BackupConfiguration `bc` with `method`
/// and the given archive manifests.
fn apply_source(cf: &Coffer, src: &MariaDb, method: &str, archives: &[String]) {
    let mut manifests = vec![
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", src),
        appbinding("src", src, "src-auth"),
        backup_config_with("bc", "repo", "src", &[("method", method)], 5),
    ];
    manifests.extend_from_slice(archives);
    let applied = cf.apply("m.yaml", &manifests.join("---\n"));
    assert!(applied.ok, "{applied}");
}

#[test]
fn a_native_base_and_the_archive_restore_to_latest_a_time_and_a_gtid_and_refuse_a_gap() {
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap();
    src.exec(SCHEMA).unwrap();
    let start = gtid_pos(&src);
    insert(&src, 1..=100);
    let cf = Coffer::new();
    apply_source(
        &cf,
        &src,
        "native",
        &[archive_manifest("arch"), archive_manifest("gappy")],
    );
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let mut gtids = insert(&src, 101..=250);
    // Rows 1..=250 are committed by `mid`; the rest two seconds later at the earliest.
    let mid = now();
    while now() < mid + 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    gtids.extend(insert(&src, 251..=400));
    let end = gtid_pos(&src);
    let next = archive(&src, open_store(&cf, "default/arch"), 0, &start, &end);
    assert!(next > 3, "several segments: {next}");

    // The gappy archive misses the transactions of rows 201..=260 (as if purged unarchived).
    let before_gap: GtidState = gtids[99]
        .parse::<coffer_api::gtid::Gtid>()
        .map(|g| {
            let mut s = start.clone();
            s.advance(g);
            s
        })
        .unwrap();
    let after_gap = {
        let mut s = start.clone();
        s.advance(gtids[159].parse().unwrap());
        s
    };
    let n = archive(
        &src,
        open_store(&cf, "default/gappy"),
        0,
        &start,
        &before_gap,
    );
    archive(&src, open_store(&cf, "default/gappy"), n, &after_gap, &end);

    let restore =
        |name: &str, archive: &str, point: &str| restore_into_new(&cf, name, archive, point);

    let (t, rs) = restore("latest", "arch", "latest: true");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rows(&mut t.conn().unwrap()), (400, 400));
    let st = &rs["status"]["pointInTime"];
    assert_eq!(st["reachedGtid"], end.to_string(), "{st:#}");
    assert!(st["segments"].as_u64().unwrap() >= 1, "{st:#}");
    assert!(st["baseSnapshot"].as_str().is_some(), "{st:#}");
    // The replay's GTID state is recorded for a replica to continue from (pitr.md trap 5).
    let pos = t.query_strings("SELECT @@gtid_slave_pos").unwrap();
    assert_eq!(pos[0][0].as_deref(), Some(end.to_string().as_str()));

    let (t, rs) = restore("mid", "arch", &format!("time: \"{}\"", rfc3339(mid)));
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rows(&mut t.conn().unwrap()), (250, 250));
    assert!(rs["status"]["pointInTime"]["lastTransactionTime"]
        .as_str()
        .is_some_and(|t| t <= rfc3339(mid).as_str()));

    // gtids[i] is row 101 + i's.
    let (t, rs) = restore("gtid-in", "arch", &format!("gtid: \"{}\"", gtids[199]));
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rows(&mut t.conn().unwrap()), (300, 300));
    let (t, rs) = restore(
        "gtid-ex",
        "arch",
        &format!("gtid: \"{}\", inclusive: false", gtids[199]),
    );
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rows(&mut t.conn().unwrap()), (299, 299));

    // Across the gap: refused, naming it; `latest` stops before it and says so.
    let (t, rs) = restore("gap", "gappy", &format!("gtid: \"{}\"", gtids[199]));
    assert_eq!(phase(&rs), "Failed", "{rs:#}");
    let e = error(&rs);
    assert!(e.contains("would cross a Purged gap"), "{e}");
    assert!(
        e.contains(&gtids[99]),
        "the latest point before the gap: {e}"
    );
    drop(t);
    let (t, rs) = restore("gap-latest", "gappy", "latest: true");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rows(&mut t.conn().unwrap()), (200, 200));
    let note = rs["status"]["pointInTime"]["note"].as_str().unwrap_or("");
    assert!(note.contains("gap"), "{rs:#}");
}

/// A mariabackup base restored into a data directory, and the archive replayed there by a
/// private server's SQL thread over relay logs, up to a GTID.
#[test]
fn a_physical_base_is_replayed_over_relay_logs_up_to_a_gtid() {
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap();
    src.exec(SCHEMA).unwrap();
    let start = gtid_pos(&src);
    insert(&src, 1..=50);
    let cf = Coffer::new();
    apply_source(&cf, &src, "physical", &[archive_manifest("arch")]);
    // No writes while the backup runs: its GTID state is the one before and after.
    let base_state = gtid_pos(&src);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let repo = cf.path("repo");
    let repo = repo.to_str().unwrap();
    let snaps = restic_snapshots(repo, &[]);
    let snap = &snaps[0];
    let tags: Vec<&str> = snap["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !tags.iter().any(|t| t.starts_with("gtid=")) {
        // Until every backup path tags its GTID state (the native one does), the test adds it
        // as a later coffer will have written it.
        let id = snap["id"].as_str().unwrap();
        let r = restic(
            repo,
            &[
                "tag",
                "--add",
                &format!("gtid={base_state}"),
                "--add",
                "app=default/src",
                id,
            ],
        );
        assert!(r.ok, "{r}");
    }
    let gtids = insert(&src, 51..=300);
    let end = gtid_pos(&src);
    archive(&src, open_store(&cf, "default/arch"), 0, &start, &end);

    let target = cf.path("restored/data");
    let params = format!(
        ", params: [{{name: dataDir, value: \"{}\"}}]",
        target.display()
    );
    let m = pitr_session(
        "phys",
        "src",
        &format!("gtid: \"{}\", archive: arch", gtids[199]),
        &params,
    );
    let f = cf.file("phys.yaml", &m);
    let _ = cf.run(&["restore", "-f", f.to_str().unwrap(), "--wait"]);
    let rs = cf.get_json("restoresession", "phys");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    let st = &rs["status"]["pointInTime"];
    assert!(st["segments"].as_u64().unwrap() >= 1, "{st:#}");
    let port = coffer_testkit::free_port();
    let _server = crate::physical::start_on(&target, port);
    let mut c = crate::physical::connect(port, src.root_password());
    assert_eq!(rows(&mut c), (250, 250));
    use coffer_testkit::mysql::prelude::Queryable;
    let pos: Option<String> = c.query_first("SELECT @@gtid_slave_pos").unwrap();
    assert_eq!(pos.as_deref(), st["reachedGtid"].as_str());
    let slave: Option<coffer_testkit::mysql::Row> = c.query_first("SHOW SLAVE STATUS").unwrap();
    assert!(slave.is_none(), "no replica configuration is left");
}

/// The row-per-transaction table of the crash test: `committed_at` is the statement's time
/// on the server (UTC), which is also the time of its binlog events.
const LOAD_SCHEMA: &str = "CREATE DATABASE app; \
    CREATE TABLE app.t (seq INT PRIMARY KEY, committed_at DATETIME(6) NOT NULL, \
    payload VARCHAR(255) NOT NULL) ENGINE=InnoDB";

/// `(seq, committed_at as "unix seconds.micros")` of every row of app.t, in seq order.
fn committed(db: &MariaDb) -> Vec<(u64, String)> {
    use coffer_testkit::mysql::prelude::Queryable;
    let mut c = db.conn().unwrap();
    c.query_drop("SET time_zone = '+00:00'").unwrap();
    c.query("SELECT seq, CAST(UNIX_TIMESTAMP(committed_at) AS CHAR) FROM app.t ORDER BY seq")
        .unwrap()
}

/// The whole second of a "unix seconds.micros" value.
fn second(at: &str) -> u64 {
    at.split('.').next().unwrap().parse().unwrap()
}

fn unix_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Issue #12's evidence: a real `coffer archive` runs while a writer commits one row per
/// transaction; the source and the archive are SIGKILLed together mid-load. Restored to `latest` the rows are exactly
/// 1..=K with nothing the source did not commit and everything acknowledged more than the
/// flush interval (5 s) before the kill; to a time, exactly the rows of the seconds up to
/// it; to a GTID, exactly up to it.
#[test]
fn a_source_killed_mid_load_is_restored_to_latest_a_time_and_a_gtid_by_the_real_runner() {
    use coffer_testkit::mysql::prelude::Queryable;
    let mut src = MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap();
    src.exec(LOAD_SCHEMA).unwrap();
    let cf = Coffer::new();
    // The default flush interval (5 s): the bound assertion (2) checks.
    let archive = "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {name: arch}\n\
                   spec:\n  appBinding: {name: src}\n  repository: {name: repo}\n";
    apply_source(&cf, &src, "native", &[archive.to_string()]);
    // Nothing writes between the base backup and the load: row `seq` is GTID start + seq.
    let start = gtid_pos(&src);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(gtid_pos(&src), start, "nothing wrote during the backup");
    let runner = crate::archive::start_archive(&cf, "arch");
    crate::archive::wait_streaming(&cf, "arch");

    // One row per autocommit transaction; each seq is recorded once its COMMIT returned.
    let mut c = src.conn().unwrap();
    c.query_drop("SET time_zone = '+00:00'").unwrap();
    let writer = std::thread::spawn(move || {
        let mut acked: Vec<(u64, SystemTime)> = Vec::new();
        for seq in 1u64.. {
            let sql = format!(
                "INSERT INTO app.t VALUES ({seq}, NOW(6), REPEAT(CHAR(65 + {seq} % 26), 200))"
            );
            if let Err(e) = c.query_drop(sql) {
                return (acked, e.to_string());
            }
            acked.push((seq, SystemTime::now()));
            std::thread::sleep(Duration::from_millis(5));
        }
        unreachable!()
    });
    std::thread::sleep(Duration::from_secs(18));
    // The machine is lost: the source and the archive die at the same instant, so only what
    // the archive had made durable counts (the open segment is lost with it).
    let killed_at = SystemTime::now();
    src.kill();
    let code = crate::archive::stop(runner, libc::SIGKILL);
    assert!(!code.success(), "coffer archive was killed: {code}");
    let (acked, err) = writer.join().unwrap();
    let last_acked = acked.last().map_or(0, |a| a.0);
    assert!(
        last_acked > 100,
        "the load ran: {last_acked} rows (writer: {err})"
    );
    let gtid = |seq: u64| format!("0-{SOURCE_ID}-{}", start.0[&Domain::MariaDb(0)].seq + seq);

    // (1) latest: exactly 1..=K, (3) K ≤ last acknowledged + the one in flight,
    // (2) everything acknowledged more than 5 s before the kill.
    let (latest, rs) = restore_into_new(&cf, "latest", "arch", "latest: true");
    assert_eq!(
        phase(&rs),
        "Succeeded",
        "{rs:#}\n{}",
        crate::archive::logs(&cf)
    );
    let rows = committed(&latest);
    let k = rows.len() as u64;
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>(), "no hole, nothing extra");
    assert!(
        k <= last_acked + 1,
        "{k} rows restored, the source acknowledged {last_acked} (one more may have been in flight)"
    );
    let bound = killed_at - Duration::from_secs(5);
    let must = acked
        .iter()
        .take_while(|(_, at)| *at < bound)
        .last()
        .map_or(0, |a| a.0);
    assert!(
        must <= k,
        "row {must} was acknowledged more than 5 s before the kill but only 1..={k} were restored"
    );
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        gtid(k),
        "{rs:#}"
    );
    let pos = latest.query_strings("SELECT @@gtid_slave_pos").unwrap();
    assert_eq!(pos[0][0].as_deref(), Some(gtid(k).as_str()));
    // Every restored row is the source's: its payload as written.
    let bad = latest
        .query_strings(
            "SELECT COUNT(*) FROM app.t WHERE payload <> REPEAT(CHAR(65 + seq % 26), 200)",
        )
        .unwrap();
    assert_eq!(bad[0][0].as_deref(), Some("0"));
    let last_at: f64 = rows.last().unwrap().1.parse().unwrap();
    eprintln!(
        "RPO: {:.3} s (kill at {:.3}, last restored row {k} committed at {last_at:.3}; \
         {last_acked} acknowledged, {must} acknowledged more than 5 s before the kill)",
        unix_f64(killed_at) - last_at,
        unix_f64(killed_at)
    );

    // A whole second in the middle: exactly the rows whose transactions have a time (the
    // binlog's, in whole seconds: the statement's second) at or before it.
    let t = second(&rows[rows.len() / 2].1);
    let want = rows.iter().take_while(|r| second(&r.1) <= t).count() as u64;
    assert!(
        want < k && rows.iter().all(|r| (r.0 <= want) == (second(&r.1) <= t)),
        "the rows up to {t} are a strict prefix"
    );
    let (at_t, rs) = restore_into_new(&cf, "time", "arch", &format!("time: \"{}\"", rfc3339(t)));
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    let got = committed(&at_t);
    assert_eq!(got, rows[..want as usize], "exactly the rows up to {t}");
    assert_eq!(
        rs["status"]["pointInTime"]["reachedGtid"],
        gtid(want),
        "{rs:#}"
    );

    // A GTID in the middle, inclusive (the default): exactly up to it.
    let g = k / 3;
    let (at_g, rs) = restore_into_new(&cf, "gtid", "arch", &format!("gtid: \"{}\"", gtid(g)));
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(
        committed(&at_g),
        rows[..g as usize],
        "exactly up to {}",
        gtid(g)
    );
}
