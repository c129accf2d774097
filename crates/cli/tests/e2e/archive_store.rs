//! The binlog archive's segments in a restic repository are usable without coffer: binlog
//! captured from a real MariaDB, stored through `RepoSink`, comes back out of `restic dump`
//! as a file `mariadb-binlog` reads, before and after compaction.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use coffer_api::gtid::{Domain, GtidState};
use coffer_db::{
    binlog::{archive_server_id, capture, open, SegmentPolicy, SegmentWriter, StreamOptions},
    ClientFiles, ClientFlavor, ConnSpec,
};
use coffer_engine::archive::{RepoSink, SegmentStore};
use coffer_repo::{LocalStore, Repo};
use coffer_testkit::{MariaDb, MariaDbOptions};

const PASSWORD: &str = "archive-store-e2e";
const SOURCE_ID: u32 = 21;

fn binlog_pos(db: &MariaDb) -> GtidState {
    let rows = db.query_strings("SELECT @@gtid_binlog_pos").unwrap();
    rows[0][0].clone().unwrap_or_default().parse().unwrap()
}

/// `restic dump <snapshot> <path> | mariadb-binlog -v -`: its output.
fn dump_through_mariadb_binlog(repo: &Path, snapshot: &str, path: &str) -> String {
    let mut dump = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(["--no-cache", "dump", snapshot, path])
        .env("RESTIC_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("restic is installed (scripts/install-deps.sh)");
    let out = Command::new("mariadb-binlog")
        .args(["-v", "-"])
        .stdin(dump.stdout.take().unwrap())
        .output()
        .expect("mariadb-binlog is installed");
    assert!(
        dump.wait().unwrap().success(),
        "restic dump {snapshot} {path}"
    );
    assert!(out.status.success(), "mariadb-binlog: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshot_with_tag(repo: &Path, tag: &str) -> String {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(["--no-cache", "snapshots", "--json", "--tag", tag])
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "one snapshot tagged {tag}: {snaps:?}");
    snaps[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn captured_segments_come_out_of_restic_dump_as_binlog_mariadb_binlog_reads() {
    let db = MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap();
    db.exec(
        "CREATE DATABASE app; \
         CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(100)) ENGINE=InnoDB",
    )
    .unwrap();
    let start = binlog_pos(&db);
    for i in 0..40 {
        db.exec(&format!(
            "INSERT INTO app.t VALUES ({i}, 'archived-row-{i}')"
        ))
        .unwrap();
        if i % 10 == 9 {
            // A pause longer than the flush interval: the next rows go to a new segment.
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    db.exec("UPDATE app.t SET v = 'updated-row' WHERE id = 7")
        .unwrap();
    let end = binlog_pos(&db);

    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = Repo::open_or_init(Arc::new(LocalStore::new(dir.path())), PASSWORD).unwrap();
    let store = SegmentStore::new(repo, "e2e/arch");
    let mut writer = SegmentWriter::new(
        "e2e/arch",
        0,
        start.clone(),
        SegmentPolicy {
            flush_interval: Duration::from_millis(20),
            max_bytes: 4 << 10,
        },
        RepoSink::new(store.clone()),
    );
    let spec = ConnSpec {
        host: db.host().into(),
        port: db.port(),
        user: "root".into(),
        password: db.root_password().into(),
        tls: None,
        label: "AppBinding e2e/source".into(),
    };
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let options = StreamOptions {
        server_id: archive_server_id("e2e", "arch"),
        heartbeat: Duration::from_millis(200),
    };
    let mut src = open(&spec, &files, options, &start).unwrap();
    capture(&mut src, &mut writer, |s| s.covers(&end)).unwrap();
    assert_eq!(writer.state(), &end);

    // Every transaction the server logged is in a listed segment, in order.
    let listed = store.list().unwrap();
    assert!(listed.len() > 1, "several segments: {listed:?}");
    let (s0, s1) = (
        start.0[&Domain::MariaDb(0)].seq,
        end.0[&Domain::MariaDb(0)].seq,
    );
    let mut gtids = Vec::new();
    for s in &listed {
        let meta = store.meta(s.meta.seq).unwrap();
        assert_eq!(meta.transactions.len() as u64, s.transactions);
        gtids.extend(meta.transactions.iter().map(|t| t.gtid.to_string()));
    }
    let expected: Vec<String> = (s0 + 1..=s1)
        .map(|q| format!("0-{SOURCE_ID}-{q}"))
        .collect();
    assert_eq!(gtids, expected);

    // Each segment read with restic and mariadb-binlog alone holds its transactions.
    let repo_dir = dir.path();
    let mut all = String::new();
    for s in &listed {
        let seq = s.meta.seq;
        let snap = snapshot_with_tag(repo_dir, &format!("segments={seq}-{seq}"));
        let path = format!("/coffer-binlog/e2e/arch/{seq:020}.binlog");
        let text = dump_through_mariadb_binlog(repo_dir, &snap, &path);
        for t in &store.meta(seq).unwrap().transactions {
            assert!(
                text.contains(&format!("GTID {}", t.gtid)),
                "segment {seq} lacks {}: {text}",
                t.gtid
            );
        }
        all.push_str(&text);
    }
    for i in 0..40 {
        assert!(
            all.contains(&format!("'archived-row-{i}'")),
            "row {i} missing"
        );
    }
    assert!(all.contains("'updated-row'"));

    // After compaction the segments are in one snapshot, still read the same way.
    store.compact().unwrap();
    let merged = snapshot_with_tag(repo_dir, "level=1");
    let last = listed.last().unwrap().meta.seq;
    let path = format!("/coffer-binlog/e2e/arch/{last:020}.binlog");
    let text = dump_through_mariadb_binlog(repo_dir, &merged, &path);
    assert!(text.contains(&format!("GTID 0-{SOURCE_ID}-{s1}")), "{text}");
    assert!(text.contains("'updated-row'"), "{text}");
    assert_eq!(store.list().unwrap(), listed);

    let check = Command::new("restic")
        .arg("-r")
        .arg(repo_dir)
        .args(["--no-cache", "check", "--read-data"])
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
