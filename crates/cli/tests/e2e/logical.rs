//! The compatible logical path end to end: mysqldump into a restic repository and back.

use coffer_testkit::{fidelity, verify, MariaDb};

use crate::common::*;

/// Every kind of data and definition a faithful backup must keep survives backup and
/// restore; grants are live afterwards; secrets appear nowhere; restic reads the snapshot.
#[test]
fn fidelity_schema_round_trips_through_a_local_repository() {
    let src = MariaDb::start().unwrap();
    let mut dst = MariaDb::start().unwrap();
    {
        let mut c = src.conn().unwrap();
        fidelity::load(&mut c, "fidelity").unwrap();
        fidelity::create_app_user(&mut c, "fidelity", "app-pass-1").unwrap();
        fidelity::create_accounts(&mut c, "fidelity", "fid-pass").unwrap();
    }
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        // History rows of system-versioned tables need mariadb-dump's --dump-history.
        backup_config("bc", "repo", "src", "--all-databases --dump-history", 5),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");

    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "backup failed:\n{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Succeeded", "{bs:#}");
    let snap = &bs["status"]["targets"][0]["stats"][0]["snapshots"][0];
    let snap_id = snap["name"].as_str().unwrap().to_string();
    assert_eq!(snap["path"], "/dumpfile.sql");
    assert!(snap["totalBytes"].as_u64().unwrap() > 100_000, "{snap}");
    for c in [
        "BackendRepositoryInitialized",
        "RetentionPolicyApplied",
        "RepositoryIntegrityVerified",
    ] {
        let found = bs["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["type"] == c && x["status"] == "True");
        assert!(found, "condition {c} not True: {bs:#}");
    }
    let repo_status = cf.get_json("repository", "repo");
    assert_eq!(repo_status["status"]["integrity"], true);
    assert_eq!(repo_status["status"]["snapshotCount"], 1);
    assert!(repo_status["status"]["lastBackupTime"].is_string());

    // Secrets never leak into logs, status or listings.
    for text in [
        run.stderr.as_str(),
        run.stdout.as_str(),
        &bs.to_string(),
        &cf.ok(&["get", "secret", "src-auth", "-o", "yaml"]).stdout,
        &cf.ok(&[
            "describe",
            "backupsession",
            bs["metadata"]["name"].as_str().unwrap(),
        ])
        .stdout,
    ] {
        assert!(
            !text.contains(src.root_password()),
            "database password leaked: {text}"
        );
        assert!(
            !text.contains(REPO_PASSWORD),
            "repository password leaked: {text}"
        );
    }

    // restic reads coffer's repository: snapshot layout as Stash writes it, and a dump that
    // is byte-for-byte what coffer streams back.
    let repo_s = repo.to_str().unwrap();
    let snaps = restic_snapshots(repo_s, &[]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["hostname"], "host-0");
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/dumpfile.sql"]));
    assert_restic_check(repo_s, &[]);
    assert_restic_restores(repo_s, "/dumpfile.sql", &[]);
    let dumped = restic(repo_s, &["dump", "latest", "/dumpfile.sql"]);
    assert!(dumped.ok, "{dumped}");
    assert!(dumped
        .stdout
        .contains("CREATE DATABASE /*!32312 IF NOT EXISTS*/ `fidelity`"));
    assert!(dumped.stdout.trim_end().ends_with(
        dumped
            .stdout
            .trim_end()
            .lines()
            .last()
            .filter(|l| l.starts_with("-- Dump completed"))
            .unwrap_or("<no trailer>")
    ));
    assert_eq!(
        dumped.raw.len() as u64,
        snap["totalBytes"].as_u64().unwrap()
    );

    let rs = restore_session("restore-1", "repo", "dst", &snap_id[..8]);
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "restore failed:\n{r}");
    let rs = cf.get_json("restoresession", "restore-1");
    assert_eq!(phase(&rs), "Succeeded", "{rs:#}");
    assert_eq!(rs["status"]["stats"][0]["snapshot"], snap_id.as_str());

    // The restore brought the source's mysql schema, root password included.
    dst.use_root_password(src.root_password()).unwrap();
    let mut s = src.conn().unwrap();
    let mut d = dst.conn().unwrap();
    let dbs = verify::user_databases(&mut s).unwrap();
    assert_eq!(dbs, verify::user_databases(&mut d).unwrap());
    let dbs: Vec<&str> = dbs.iter().map(String::as_str).collect();
    let want = verify::checksums_without_float_tables(&mut s, &dbs).unwrap();
    let got = verify::checksums_without_float_tables(&mut d, &dbs).unwrap();
    assert!(want.len() > 5, "fidelity schema has tables: {want:?}");
    if let Some(d) = verify::diff(&want, &got) {
        panic!("table checksums differ after restore:\n{d}");
    }
    let (wf, gf) = (
        verify::float_values(&mut s, "fidelity").unwrap(),
        verify::float_values(&mut d, "fidelity").unwrap(),
    );
    assert!(!wf.is_empty());
    if let Some(d) = verify::diff(&wf, &gf) {
        panic!("FLOAT values (as printed) differ after restore:\n{d}");
    }
    for db in fidelity::databases("fidelity") {
        let (ws, gs) = (
            verify::show_creates(&mut s, &db).unwrap(),
            verify::show_creates(&mut d, &db).unwrap(),
        );
        if let Some(d) = verify::diff(&ws, &gs) {
            panic!("{db}: definitions differ after restore:\n{d}");
        }
        let (mut ws, mut gs) = (
            verify::sequences(&mut s, &db).unwrap(),
            verify::sequences(&mut d, &db).unwrap(),
        );
        // mariadb-dump restores a sequence with SETVAL(seq, next, 0) and no round: one past
        // its first cycle comes back in round 0, where that SETVAL is ignored. The native
        // path carries the round (see native.rs).
        let cycled = format!("{db}.seq_cycle");
        if ws.contains_key(&cycled) {
            assert_eq!(
                ws[&cycled][7].as_deref(),
                Some("1"),
                "the source has cycled"
            );
            assert_eq!(
                gs[&cycled][7].as_deref(),
                Some("0"),
                "mariadb-dump lost the round"
            );
            ws.remove(&cycled);
            gs.remove(&cycled);
        }
        if let Some(d) = verify::diff(&ws, &gs) {
            panic!("{db}: sequences differ after restore:\n{d}");
        }
    }
    crate::native::assert_fidelity_extras(&mut s, &mut d);
    let (wa, ga) = (
        verify::accounts(&mut s).unwrap(),
        verify::accounts(&mut d).unwrap(),
    );
    assert!(wa.contains_key("fidelity_writer"), "{wa:?}");
    if let Some(d) = verify::diff(&wa, &ga) {
        panic!("accounts, roles or grants differ after restore:\n{d}");
    }
    let (ws, gs) = (
        verify::show_creates(&mut s, "fidelity").unwrap(),
        verify::show_creates(&mut d, "fidelity").unwrap(),
    );
    for kind in [
        "view",
        "trigger",
        "procedure",
        "function",
        "event",
        "sequence",
    ] {
        assert!(
            ws.keys().any(|k| k.starts_with(kind)),
            "fidelity schema lacks a {kind}: {:?}",
            ws.keys()
        );
    }
    if let Some(d) = verify::diff(&ws, &gs) {
        panic!("definitions differ after restore:\n{d}");
    }
    // Users and grants from the dump are live without a restart.
    let mut app = dst.conn_as("coffer_app", "app-pass-1").unwrap();
    use coffer_testkit::mysql::prelude::Queryable;
    let n: Option<u64> = app
        .query_first("SELECT COUNT(*) FROM fidelity.bulk")
        .unwrap();
    assert!(n.unwrap_or(0) > 0);
}

/// A snapshot written by plain restic the way Stash writes it restores with coffer; the
/// second backup of changed data is really new data (rustic's parent-reuse trap); retention
/// keeps what it says and prunes the rest.
#[test]
fn restic_written_snapshots_restore_and_retention_prunes() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO app.t VALUES (1, 'from-restic');",
    )
    .unwrap();
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let repo_s = repo.to_str().unwrap().to_string();
    assert!(restic(&repo_s, &["init"]).ok);
    // Stash's pipeline, verbatim: mysqldump | restic backup --stdin.
    let pipeline = format!(
        "mariadb-dump --defaults-file={} --databases app | RESTIC_PASSWORD='{}' restic -r {} --no-cache \
         backup --stdin --stdin-filename dumpfile.sql --host host-0 --quiet",
        src.defaults_file().display(),
        REPO_PASSWORD,
        repo_s
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &pipeline])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        backup_config("bc", "repo", "src", "--databases app", 2),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let rs = restore_session("from-restic", "repo", "dst", "latest");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "restore of a restic-written snapshot failed:\n{r}");
    assert_eq!(
        dst.query_strings("SELECT v FROM app.t WHERE id = 1")
            .unwrap(),
        vec![vec![Some("from-restic".to_string())]]
    );

    // Three coffer backups of changing data; keepLast 2 with prune.
    for v in ["one", "two", "three"] {
        src.exec(&format!("UPDATE app.t SET v = '{v}' WHERE id = 1"))
            .unwrap();
        let run = cf.run(&["backup", "bc", "--wait"]);
        assert!(run.ok, "{run}");
    }
    let snaps = restic_snapshots(&repo_s, &[]);
    assert_eq!(snaps.len(), 2, "keepLast 2 keeps two snapshots: {snaps:#?}");
    let st = cf.get_json("repository", "repo");
    assert_eq!(st["status"]["snapshotCount"], 2);
    assert_eq!(st["status"]["snapshotsRemovedOnLastCleanup"], 1);
    assert_restic_check(&repo_s, &[]);

    // The newest snapshot holds the newest data, not a reused parent's.
    let latest = restic(&repo_s, &["dump", "latest", "/dumpfile.sql"]);
    assert!(
        latest.stdout.contains("'three'"),
        "latest snapshot has stale data"
    );
    let rs = restore_session("newest", "repo", "dst", "latest");
    assert!(
        cf.run(&[
            "restore",
            "-f",
            cf.file("rs2.yaml", &rs).to_str().unwrap(),
            "--wait"
        ])
        .ok
    );
    assert_eq!(
        dst.query_strings("SELECT v FROM app.t WHERE id = 1")
            .unwrap(),
        vec![vec![Some("three".to_string())]]
    );
}

/// mysqldump: the position its own `--master-data` lines give.
#[test]
fn a_mysqldump_backup_records_its_app_gtid_state_and_binlog_position() {
    a_backup_records_the_position_it_is_consistent_at(&[("args", "--all-databases")]);
}
