//! Restore verification (`coffer verify`, spec.verification): the newest snapshot restored
//! into a throwaway server, checked, and the server gone afterwards whatever the outcome.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use coffer_testkit::{mysql::prelude::Queryable, MariaDb, MariaDbOptions};

use crate::common::*;

const QUERIES: &str = "  verification:\n    everyBackups: 1\n    queries:\n    \
    - {name: row-count, sql: 'SELECT COUNT(*) FROM app.t', expect: '3000'}\n    \
    - {name: max-id, sql: 'SELECT MAX(id), MIN(name) FROM app.t', expect: \"3000\\tn1\"}\n";

fn setup(params: &[(&str, &str)], queries: &str) -> (MariaDb, Coffer) {
    let src = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20));
         USE app; INSERT INTO app.t SELECT seq, CONCAT('n', seq) FROM seq_1_to_3000;
         CREATE TABLE app.empty (id INT);",
    )
    .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", params, 5) + queries,
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    (src, cf)
}

/// Nothing of the throwaway server is left: no directory in the scratch directory, no
/// process started on one, nothing listening on its port.
fn assert_nothing_left(cf: &Coffer, status: &serde_json::Value) {
    let tmp = cf.path("tmp");
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("coffer-verify-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "directories left in {}: {left:?}",
        tmp.display()
    );
    let needle = tmp.to_string_lossy().into_owned();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(
            !(cmd.contains("mariadbd") && cmd.contains(&needle)),
            "a verification server is still running: {cmd}"
        );
    }
    let started = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ServerStarted")
        .expect("ServerStarted condition");
    let port: u16 = started["message"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the verification port {port}"
    );
}

/// The snapshot `id` as restic lists it.
fn restic_snapshot(cf: &Coffer, id: &str) -> serde_json::Value {
    let snaps = restic_snapshots(cf.path("repo").to_str().unwrap(), &[]);
    snaps
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no snapshot {id} in {snaps:#?}"))
}

/// The verified snapshot carries `verified` and `verified=<time>` (restic's view), under a
/// new id whose `original` is the id the backup wrote; restic still finds the repository
/// sound.
fn assert_tagged(cf: &Coffer, last: &serde_json::Value, written: &str) {
    let id = last["snapshot"].as_str().unwrap();
    assert_ne!(id, written, "a tagged snapshot is a new file: {last:#}");
    let s = restic_snapshot(cf, id);
    assert_eq!(s["original"], written, "{s:#}");
    let tags: Vec<&str> = s["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tags.contains(&"verified"), "{s:#}");
    let at = format!("verified={}", last["time"].as_str().unwrap());
    assert_eq!(
        tags.iter()
            .filter(|t| t.starts_with("verified="))
            .collect::<Vec<_>>(),
        vec![&at.as_str()],
        "{s:#}"
    );
    let c = condition_of(last, "SnapshotTagged");
    assert_eq!(c["status"], "True", "{last:#}");
    assert!(
        restic_snapshots(cf.path("repo").to_str().unwrap(), &[])
            .iter()
            .all(|s| s["id"] != written),
        "the old snapshot file is gone"
    );
    assert_restic_check(cf.path("repo").to_str().unwrap(), &[]);
}

/// The id the newest snapshot was written with (setup's backup may have verified, and so
/// tagged, it already).
fn newest_snapshot_id(cf: &Coffer) -> String {
    let snaps: serde_json::Value =
        serde_json::from_str(&cf.ok(&["snapshots", "repo", "-o", "json"]).stdout).unwrap();
    let s = &snaps[0];
    s.get("original")
        .unwrap_or(&s["id"])
        .as_str()
        .unwrap()
        .to_string()
}

fn verify_ok(params: &[(&str, &str)]) {
    let (_src, cf) = setup(params, QUERIES);
    let written = newest_snapshot_id(&cf);
    // The backup itself verified its snapshot (everyBackups: 1), as scheduled.
    let bc = cf.get_json("backupconfiguration", "bc");
    let scheduled = &bc["status"]["lastVerification"];
    assert_eq!(scheduled["phase"], "Succeeded", "{bc:#}");
    assert!(
        scheduled["recoverySeconds"].as_f64().unwrap() > 0.0,
        "{bc:#}"
    );
    assert_eq!(bc["status"]["backupsSinceVerification"], 0, "{bc:#}");
    assert_tagged(&cf, scheduled, &written);
    // And `coffer verify` verifies again by hand.
    let run = cf.run(&["verify", "bc", "-o", "json"]);
    assert!(run.ok, "{run}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["phase"], "Succeeded", "{out:#}");
    assert!(out["recoverySeconds"].as_f64().unwrap() > 0.0, "{out:#}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    assert_eq!(last["snapshot"], out["snapshot"]);
    assert!(last["recoverySeconds"].as_f64().is_some(), "{bc:#}");
    assert_eq!(bc["status"]["lastVerifiedTime"], last["time"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&cf.ok(&["snapshots", "repo", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        last["snapshot"], snaps[0]["id"],
        "the newest snapshot is verified"
    );
    for t in [
        "ServerStarted",
        "SnapshotRestored",
        "TablesChecked",
        "QueriesChecked",
    ] {
        let c = condition_of(last, t);
        assert_eq!(c["status"], "True", "{t}: {last:#}");
    }
    assert_tagged(&cf, last, &written);
    assert_nothing_left(&cf, last);
}

#[test]
fn a_native_snapshot_verifies_with_a_recovery_time() {
    verify_ok(&[("method", "native")]);
}

#[test]
fn a_mysqldump_snapshot_verifies_with_a_recovery_time() {
    verify_ok(&[("args", "--databases app")]);
}

/// The default selection (--all-databases) brings the source's mysql schema along.
#[test]
fn an_all_databases_mysqldump_snapshot_verifies() {
    verify_ok(&[]);
}

#[test]
fn a_physical_snapshot_verifies_with_a_recovery_time() {
    verify_ok(&[("method", "physical")]);
}

#[test]
fn a_query_with_another_result_fails_the_verification_and_is_named() {
    let wrong = "  verification:\n    everyBackups: 1\n    queries:\n    \
        - {name: row-count, sql: 'SELECT COUNT(*) FROM app.t', expect: '3000'}\n    \
        - {name: too-many, sql: 'SELECT COUNT(*) FROM app.t', expect: '3001'}\n";
    let (_src, cf) = setup(&[("method", "native")], wrong);
    let run = cf.run(&["verify", "bc"]);
    assert!(!run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Failed", "{bc:#}");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains("query `too-many` returned `3000`, expected `3001`"),
        "{reason}"
    );
    assert!(bc["status"].get("lastVerifiedTime").is_none(), "{bc:#}");
    assert_nothing_left(&cf, last);
}

/// spec.verification.everyBackups: 2 verifies after the second backup, not the first.
#[test]
fn every_second_backup_is_verified() {
    let every = "  verification:\n    everyBackups: 2\n    queries:\n    \
        - {name: row-count, sql: 'SELECT COUNT(*) FROM app.t', expect: '3000'}\n";
    let (_src, cf) = setup(&[("method", "native")], every);
    let bc = cf.get_json("backupconfiguration", "bc");
    assert!(bc["status"].get("lastVerification").is_none(), "{bc:#}");
    assert_eq!(bc["status"]["backupsSinceVerification"], 1, "{bc:#}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    assert_eq!(bc["status"]["backupsSinceVerification"], 0, "{bc:#}");
    let snaps: serde_json::Value =
        serde_json::from_str(&cf.ok(&["snapshots", "repo", "-o", "json"]).stdout).unwrap();
    let newest = snaps
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(last["snapshot"], newest["id"], "{snaps:#}");
    assert_nothing_left(&cf, last);
}

/// spec.verification.schedule: `coffer server` verifies when the schedule fires.
#[test]
fn the_server_verifies_on_the_verification_schedule() {
    let cron = "  verification:\n    schedule: '* * * * *'\n    queries:\n    \
        - {name: row-count, sql: 'SELECT COUNT(*) FROM app.t', expect: '3000'}\n";
    let (_src, cf) = setup(&[("method", "native")], cron);
    let port = coffer_testkit::free_port();
    let log = std::fs::File::create(cf.path("server.log")).unwrap();
    let mut server = cf
        .cmd()
        .args(["server", "--metrics-address", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Waits for the outcome (the schedule fires within a minute), not for a time.
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let bc = cf.get_json("backupconfiguration", "bc");
        last = bc["status"]["lastVerification"].clone();
        if matches!(last["phase"].as_str(), Some("Succeeded" | "Failed")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    let log = std::fs::read_to_string(cf.path("server.log")).unwrap_or_default();
    assert_eq!(last["phase"], "Succeeded", "{last:#}\n{log}");
    assert!(
        log.contains("verification schedule `* * * * *` fired"),
        "{log}"
    );
    assert_nothing_left(&cf, &last);
}

fn verification_servers(cf: &Coffer) -> usize {
    let needle = cf.path("tmp").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("mariadbd") && cmd.contains(&needle)
        })
        .count()
}

/// A `coffer verify` killed while its server runs takes the server with it, and the next
/// verification removes the directory it left.
#[test]
fn a_killed_verification_leaves_nothing_after_the_next() {
    let (_src, cf) = setup(&[("method", "native")], QUERIES);
    let mut child = cf
        .cmd()
        .args(["verify", "bc"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = false;
    for _ in 0..600 {
        if verification_servers(&cf) > 0 {
            seen = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen, "the verification server was never seen running");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    for _ in 0..200 {
        if verification_servers(&cf) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(verification_servers(&cf), 0, "the server died with coffer");
    let run = cf.run(&["verify", "bc"]);
    assert!(run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    assert_nothing_left(&cf, &bc["status"]["lastVerification"]);
}

/// A verified snapshot has a new id; the id its backup session recorded still restores it
/// (bit-exact table checksums), and a second verification leaves one `verified=` tag.
#[test]
fn a_verified_snapshot_restores_by_the_id_its_backup_recorded() {
    let (src, cf) = setup(&[("method", "native")], QUERIES);
    let written = newest_snapshot_id(&cf);
    cf.ok(&["verify", "bc"]);
    let bc = cf.get_json("backupconfiguration", "bc");
    assert_tagged(&cf, &bc["status"]["lastVerification"], &written);
    cf.ok(&["verify", "bc"]);
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    assert_tagged(&cf, last, &written);

    let dst = MariaDb::start().unwrap();
    let more = [
        db_secret("dst-auth", &dst),
        appbinding("dst", &dst, "dst-auth"),
        restore_session("rs", "repo", "dst", &written[..8]),
    ]
    .join("---\n");
    let rs = cf.file("rs.yaml", &more);
    let r = cf.run(&["restore", "-f", rs.to_str().unwrap(), "--wait"]);
    assert!(r.ok, "restore by the id the backup recorded: {r}");
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    let got = coffer_testkit::verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, got);
    assert!(want.values().all(Option::is_some));
}

/// spec.verification.script runs against the restored server with its address in the
/// environment and the password in an option file; its exit code and last stderr lines name
/// a failure.
#[test]
fn a_script_checks_the_restored_server_and_its_failure_is_named() {
    let cf0 = Coffer::new();
    let script = cf0.file(
        "check.sh",
        "#!/bin/sh\n\
         n=$(mariadb --defaults-file=\"$COFFER_VERIFY_DEFAULTS_FILE\" -N -B \\\n\
           -e 'SELECT COUNT(*) FROM app.t') || exit 2\n\
         echo \"checked $COFFER_VERIFY_USER@$COFFER_VERIFY_HOST:$COFFER_VERIFY_PORT\" >&2\n\
         if [ \"$n\" != \"$1\" ]; then echo \"app.t has $n rows, expected $1\" >&2; exit 4; fi\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = |rows: &str| {
        format!(
            "  verification:\n    everyBackups: 1\n    script:\n      path: {}\n      \
             args: ['{rows}']\n      timeout: 2m\n",
            script.display()
        )
    };
    let (_src, cf) = setup(&[("method", "native")], &spec("3000"));
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    let c = condition_of(last, "ScriptChecked");
    assert_eq!(c["status"], "True", "{last:#}");

    let bad = backup_config_with("bc", "repo", "src", &[("method", "native")], 5) + &spec("3001");
    let r = cf.apply("bad.yaml", &bad);
    assert!(r.ok, "{r}");
    let run = cf.run(&["verify", "bc"]);
    assert!(!run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Failed", "{bc:#}");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("script {} exited with code 4", script.display())),
        "{reason}"
    );
    assert!(
        reason.contains("app.t has 3000 rows, expected 3001"),
        "{reason}"
    );
    assert!(
        reason.contains("checked coffer_verify@127.0.0.1:"),
        "{reason}"
    );
    assert_nothing_left(&cf, last);

    // A path that is not absolute is refused at apply, naming the field.
    let rel = backup_config_with("bc", "repo", "src", &[("method", "native")], 5)
        + "  verification:\n    everyBackups: 1\n    script: {path: check.sh}\n";
    let r = cf.apply("rel.yaml", &rel);
    assert!(!r.ok, "{r}");
    assert!(r.stderr.contains("spec.verification.script.path"), "{r}");
}

/// A pack the verified snapshot depends on, damaged on disk, fails its verification with the
/// reason, takes the `verified` tags an earlier verification left, and leaves no server.
#[test]
fn a_snapshot_on_a_damaged_pack_fails_its_verification() {
    let (_src, cf) = setup(&[("method", "native")], QUERIES);
    let bc = cf.get_json("backupconfiguration", "bc");
    let first = bc["status"]["lastVerification"].clone();
    assert_eq!(first["phase"], "Succeeded", "{bc:#}");
    let tagged = first["snapshot"].as_str().unwrap().to_string();

    let pack = crate::faults::damage_largest_pack(&cf);
    let run = cf.run(&["verify", "bc"]);
    assert!(!run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Failed", "{bc:#}");
    let reason = last["reason"].as_str().unwrap();
    // It names the table whose data could not be read, the pack, and why.
    assert!(reason.contains("into `app`.`t`"), "{reason}");
    assert!(reason.contains(&format!("Pack:{}", &pack[..8])), "{reason}");
    assert!(reason.contains("MAC check failed"), "{reason}");
    let restored = condition_of(last, "SnapshotRestored");
    assert_eq!(restored["status"], "False", "{last:#}");
    assert_eq!(bc["status"]["lastVerifiedTime"], first["time"], "{bc:#}");
    // The tags of the earlier verification are gone: the snapshot no longer restores.
    let id = last["snapshot"].as_str().unwrap();
    assert_ne!(id, tagged, "{last:#}");
    let s = restic_snapshot(&cf, id);
    let tags = s["tags"].as_array().cloned().unwrap_or_default();
    assert!(
        tags.iter()
            .all(|t| !t.as_str().unwrap().starts_with("verified")),
        "{s:#}"
    );
    assert_nothing_left(&cf, last);
}

/// A Galera SST snapshot is the newest snapshot verify picks: extracted, prepared and
/// started as a standalone server, its tables and the user's queries checked, then tagged.
#[test]
fn a_galera_sst_snapshot_is_verified() {
    use coffer_testkit::galera::{GaleraCluster, GaleraOptions};
    let _one_at_a_time = crate::galera::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let c = GaleraCluster::start(GaleraOptions::default()).unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20));
             USE app; INSERT INTO app.t SELECT seq, CONCAT('n', seq) FROM seq_1_to_3000;",
        )
        .unwrap();
    c.wait_synced(std::time::Duration::from_secs(60)).unwrap();
    let cf = Coffer::new();
    let bc = backup_config_with("bc", "repo", "cluster", &[("sstTimeout", "120s")], 10)
        .replace("mariadb-backup-10.5.8", "perconaxtradb-backup-5.7")
        .replace("  schedule: \"0 3 * * *\"\n", "")
        + QUERIES;
    let m = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        secret(
            "cluster-auth",
            &[("username", "root"), ("password", c.root_password())],
        ),
        crate::galera::cluster_appbinding("cluster", &c, 0, c.group()),
        bc,
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &m);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let written = newest_snapshot_id(&cf);
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    let s = restic_snapshot(&cf, last["snapshot"].as_str().unwrap());
    assert!(
        s["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/galera-position.xbstream"),
        "the SST snapshot was verified: {s:#}"
    );
    for t in ["SnapshotRestored", "TablesChecked", "QueriesChecked"] {
        let cond = condition_of(last, t);
        assert_eq!(cond["status"], "True", "{t}: {last:#}");
    }
    assert_tagged(&cf, last, &written);
    assert_nothing_left(&cf, last);
}

// ---- row counts and checksums recorded at the backup's point (table_sums.rs) ----------

/// A source with a binary log and tables of every kind the comparison treats apart: InnoDB
/// (compared by checksum), FLOAT/DOUBLE (by row count only after a logical restore) and
/// MyISAM (present only).
fn loaded_source() -> MariaDb {
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(1, 0)).unwrap();
    src.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20));
         USE app; INSERT INTO app.t SELECT seq, CONCAT('n', seq) FROM seq_1_to_3000;
         CREATE TABLE app.empty (id INT);
         CREATE TABLE app.w (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(40));
         CREATE TABLE app.f (id INT PRIMARY KEY, x FLOAT, y DOUBLE);
         INSERT INTO app.f VALUES (1, 0.1, 1.0/3), (2, 3.14159, 2.718281828459045);
         CREATE TABLE app.m (id INT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO app.m VALUES (1);",
    )
    .unwrap();
    src
}

/// Commits into app.w (inserts and updates, one transaction each) until stopped. Started before the backup and stopped after it, so the backup's point
/// falls in the middle of the load.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(src: &MariaDb) -> Writer {
        let mut c = src.conn().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                c.query_drop(format!(
                    "INSERT INTO app.w (v, note) VALUES ({i}, 'row {i}')"
                ))
                .unwrap();
                c.query_drop(format!(
                    "UPDATE app.w SET v = v + 1 WHERE id = {}",
                    i / 2 + 1
                ))
                .unwrap();
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
        let w = Writer {
            stop,
            done,
            thread: Some(thread),
        };
        // The load is under way before the backup starts.
        while w.done.load(Ordering::Relaxed) < 50 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        w
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Backs up `src` under a write load with spec.verification (which records the sums).
fn backup_under_load(src: &MariaDb, params: &[(&str, &str)]) -> Coffer {
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", src),
        appbinding("src", src, "src-auth"),
        backup_config_with("bc", "repo", "src", params, 5)
            + "  verification:\n    everyBackups: 100\n",
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let writer = Writer::start(src);
    let before = writer.done.load(Ordering::Relaxed);
    let run = cf.run(&["backup", "bc", "--wait"]);
    let after = writer.done.load(Ordering::Relaxed);
    writer.stop();
    assert!(run.ok, "{run}");
    assert!(after > before, "no write committed while the backup ran");
    cf
}

/// The number of tables the verification compared by row count and checksum.
fn compared_by_checksum(status: &serde_json::Value) -> usize {
    let c = condition_of(status, "ChecksumsCompared");
    let msg = c["message"].as_str().unwrap();
    assert_eq!(c["status"], "True", "{status:#}");
    msg.split(" table(s) compared by row count and checksum")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in `{msg}`"))
}

fn verify_sums_under_load(params: &[(&str, &str)], logical: bool) {
    let src = loaded_source();
    let cf = backup_under_load(&src, params);
    let run = cf.run(&["verify", "bc", "-o", "json"]);
    assert!(run.ok, "{run}");
    let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["phase"], "Succeeded", "{out:#}");
    let msg = condition_of(&out, "ChecksumsCompared")["message"]
        .as_str()
        .unwrap()
        .to_string();
    // t, empty and w (under load) always; f too after a physical restore (its bytes).
    let want = if logical { 3 } else { 4 };
    assert_eq!(compared_by_checksum(&out), want, "{msg}");
    if logical {
        assert!(
            msg.contains("1 by row count only") && msg.contains("app.f"),
            "{msg}"
        );
    }
    assert!(
        msg.contains("present only") && msg.contains("app.m"),
        "{msg}"
    );
    assert!(msg.contains("at binlog mysql-bin."), "{msg}");
    assert_nothing_left(&cf, &out);
}

#[test]
fn a_native_snapshot_under_writes_matches_the_checksums_recorded_at_its_point() {
    verify_sums_under_load(&[("method", "native")], true);
}

#[test]
fn a_mysqldump_snapshot_under_writes_matches_the_checksums_recorded_at_its_point() {
    verify_sums_under_load(&[("args", "--databases app")], true);
}

#[test]
fn a_physical_snapshot_under_writes_matches_the_checksums_recorded_at_its_point() {
    verify_sums_under_load(&[("method", "physical")], false);
}

/// A snapshot whose recorded checksum of app.t does not match its data (written again with
/// one value changed) fails the verification, naming the table and both values.
#[test]
fn a_recorded_checksum_that_does_not_match_fails_naming_the_table() {
    use coffer_repo::{LocalStore, Repo, SnapshotMeta, SnapshotSelector, SourceFile};
    let src = loaded_source();
    let cf = backup_under_load(&src, &[("args", "--databases app")]);
    let repo = Repo::open(Arc::new(LocalStore::new(cf.path("repo"))), REPO_PASSWORD).unwrap();
    let snap = repo
        .find(&SnapshotSelector {
            snapshot: "latest".into(),
            ..Default::default()
        })
        .unwrap();
    let files = repo.files(&snap.id).unwrap();
    let sums_path = "/dumpfile.sql.table-sums.json";
    assert!(
        files.iter().any(|(p, _)| p == sums_path),
        "no sums recorded: {files:?}"
    );
    let mut sums = Vec::new();
    repo.dump(&snap.id, sums_path, &mut sums).unwrap();
    let mut sums: serde_json::Value = serde_json::from_slice(&sums).unwrap();
    let t = sums["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["table"] == "t")
        .expect("app.t recorded");
    let real = t["checksum"].as_u64().unwrap();
    t["checksum"] = serde_json::json!(real + 1);
    let mut dump = Vec::new();
    repo.dump(&snap.id, "/dumpfile.sql", &mut dump).unwrap();
    let meta = SnapshotMeta {
        host: snap.hostname.clone(),
        tags: snap.tags.clone(),
        paths: vec!["/dumpfile.sql".into()],
        late_tags: Default::default(),
    };
    repo.backup(
        vec![
            SourceFile::in_memory("/dumpfile.sql", dump),
            SourceFile::in_memory(sums_path, serde_json::to_vec(&sums).unwrap()),
        ],
        &meta,
    )
    .unwrap();
    repo.delete_snapshot(&snap.id).unwrap();
    let run = cf.run(&["verify", "bc", "-o", "json"]);
    assert!(!run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Failed", "{bc:#}");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "table app.t: CHECKSUM TABLE of the restored table is {real}, the backup recorded {}",
            real + 1
        )),
        "{reason}"
    );
    assert_eq!(condition_of(last, "ChecksumsCompared")["status"], "False");
    assert_nothing_left(&cf, last);
}

// ---- replayed with a binlog archive (spec.verification.binlogArchive) ------------------

/// spec.verification.binlogArchive: the newest snapshot is replayed with the archive's
/// binlogs to the newest archived point before it is checked. The rows written after the
/// backup reach the throwaway server only by the replay, and a user query counts them; the
/// status names the point reached; the sums recorded at the backup's point are not compared.
fn verify_replayed(params: &[(&str, &str)]) {
    use std::time::Duration;
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(21, 0)).unwrap();
    src.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20));
         USE app; INSERT INTO app.t SELECT seq, CONCAT('n', seq) FROM seq_1_to_3000;",
    )
    .unwrap();
    let cf = Coffer::new();
    let verification = "  verification:\n    everyBackups: 100\n    binlogArchive: arch\n    \
        queries:\n    \
        - {name: after-base, sql: 'SELECT COUNT(*) FROM app.t WHERE id > 3000', expect: '500'}\n    \
        - {name: updated, sql: \"SELECT COUNT(*) FROM app.t WHERE name LIKE 'u%'\", expect: '100'}\n";
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", params, 5) + verification,
        "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {name: arch}\n\
         spec:\n  appBinding: {name: src}\n  repository: {name: repo}\n  flushInterval: 1s\n"
            .to_string(),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let runner = crate::archive::start_archive(&cf, "arch");
    crate::archive::wait_streaming(&cf, "arch");
    // After the base: 50 transactions of 10 new rows, then 100 rows of the base changed.
    let mut c = src.conn().unwrap();
    c.query_drop("USE app").unwrap();
    for i in 0..50 {
        let from = 3001 + i * 10;
        c.query_drop(format!(
            "INSERT INTO app.t SELECT seq, CONCAT('n', seq) FROM seq_{from}_to_{}",
            from + 9
        ))
        .unwrap();
    }
    c.query_drop("UPDATE app.t SET name = CONCAT('u', id) WHERE id <= 100")
        .unwrap();
    let end = src.query_strings("SELECT @@gtid_binlog_pos").unwrap()[0][0]
        .clone()
        .unwrap();
    crate::archive::wait_until(Duration::from_secs(60), "the archive caught up", || {
        crate::archive::status(&cf, "arch")["lastArchivedGtid"] == end.as_str()
    });
    let code = crate::archive::stop(runner, libc::SIGINT);
    assert!(code.success(), "{code}\n{}", crate::archive::logs(&cf));

    let run = cf.run(&["verify", "bc", "-o", "json"]);
    assert!(run.ok, "{run}");
    let bc = cf.get_json("backupconfiguration", "bc");
    let last = &bc["status"]["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{bc:#}");
    let pit = &last["pointInTime"];
    assert_eq!(pit["reachedGtid"], end.as_str(), "{last:#}");
    assert!(pit["lastTransactionTime"].as_str().is_some(), "{last:#}");
    assert!(pit["segments"].as_u64().unwrap() >= 1, "{last:#}");
    let replayed = condition_of(last, "ArchiveReplayed");
    assert_eq!(replayed["status"], "True", "{last:#}");
    assert_eq!(replayed["reason"], "Replayed", "{last:#}");
    let msg = replayed["message"].as_str().unwrap();
    assert!(msg.contains("archive default/arch: "), "{msg}");
    assert!(msg.contains(&format!("up to {end}")), "{msg}");
    let sums = condition_of(last, "ChecksumsCompared");
    assert_eq!(sums["status"], "False", "{last:#}");
    assert_eq!(sums["reason"], "Replayed", "{last:#}");
    assert_eq!(condition_of(last, "QueriesChecked")["status"], "True");
    assert!(last["recoverySeconds"].as_f64().unwrap() > 0.0, "{last:#}");
    assert_nothing_left(&cf, last);
}

#[test]
fn a_native_snapshot_is_verified_replayed_to_the_archives_newest_point() {
    verify_replayed(&[("method", "native")]);
}

#[test]
fn a_physical_snapshot_is_verified_replayed_over_relay_logs() {
    verify_replayed(&[("method", "physical")]);
}
