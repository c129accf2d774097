//! A restore holds a shared repository lock for its whole run: retention that would remove
//! the snapshot it reads waits for a later backup, and restic cannot prune under it either.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use coffer_testkit::{mysql::prelude::Queryable, verify, MariaDb};

use crate::common::*;

/// Waits until a statement of the restore's load waits on the table lock held by `LOCK TABLES`.
fn wait_until_blocked(dst: &MariaDb) {
    let t0 = Instant::now();
    loop {
        let rows = dst
            .query_strings(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE STATE LIKE 'Waiting for%metadata lock'",
            )
            .unwrap();
        if rows[0][0].as_deref() != Some("0") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the restore never reached the locked table"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retention_waits_for_a_running_restore_and_restic_cannot_prune_under_it() {
    let src = MariaDb::start().unwrap();
    // About 80 MB of dump, some 40 chunks: rustic's dump reads up to about ten ahead, so most
    // of the snapshot is still to be read from the repository when the load blocks (with 20 MB
    // the restore had read it all and a prune under it went unnoticed).
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, pad TEXT);
         INSERT INTO t SELECT seq, REPEAT(MD5(seq), 20) FROM seq_1_to_120000;",
    )
    .unwrap();
    let dst = MariaDb::start().unwrap();
    dst.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad TEXT);")
        .unwrap();
    let cf = Coffer::new();
    let repo_s = cf.path("repo").to_str().unwrap().to_string();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        db_secret("dst-auth", &dst),
        appbinding("dst", &dst, "dst-auth"),
        backup_config("bc", "repo", "src", "--databases app", 1),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let first = cf.ok(&["backup", "bc", "--wait"]);
    let first = cf.last_session(&first)["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let want = verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    // The next backup shares no data with the first: pruning the first frees all its packs.
    src.exec(
        "USE app; TRUNCATE t; INSERT INTO t SELECT seq, REPEAT(SHA1(seq), 3) FROM seq_1_to_100;",
    )
    .unwrap();

    // The restore of the first snapshot blocks in its load on a table locked on the target.
    let mut locker = dst.conn().unwrap();
    locker.query_drop("LOCK TABLES app.t WRITE").unwrap();
    let rs = cf.file("rs.yaml", &restore_session("rs", "repo", "dst", &first));
    let restore = cf
        .cmd()
        .args(["restore", "-f", rs.to_str().unwrap(), "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked(&dst);
    let locks = restic(&repo_s, &["list", "locks", "--no-lock"]);
    assert_eq!(
        locks.stdout.lines().count(),
        1,
        "the restore's lock: {locks}"
    );

    // A backup runs beside it; its retention would remove the snapshot being restored.
    let run = cf.ok(&["backup", "bc", "--wait"]);
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Succeeded", "{bs:#}");
    let retention = condition(&bs, "RetentionPolicyApplied");
    assert_eq!(retention["status"], "False", "{bs:#}");
    assert_eq!(retention["reason"], "RetentionPolicyPostponed", "{bs:#}");
    let msg = retention["message"].as_str().unwrap();
    assert!(
        msg.contains("1 snapshot(s) to remove") && msg.contains("a shared lock held by coffer"),
        "{msg}"
    );
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), 2, "nothing forgotten");
    assert_eq!(
        cf.get_json("repository", "repo")["status"]["snapshotCount"],
        2
    );

    // restic sees the restore's lock too.
    let prune = restic(&repo_s, &["prune"]);
    assert!(
        !prune.ok && prune.stderr.contains("locked"),
        "restic must not prune under a restore:\n{prune}"
    );
    let forget = restic(&repo_s, &["forget", "--keep-last", "1", "--prune"]);
    assert!(
        !forget.ok && forget.stderr.contains("locked"),
        "restic must not forget under a restore:\n{forget}"
    );

    // Once the table is free the restore finishes from intact packs, bit-exact.
    locker.query_drop("UNLOCK TABLES").unwrap();
    let out = restore.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the restore must succeed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(phase(&cf.get_json("restoresession", "rs")), "Succeeded");
    let got = verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, got, "the restore is bit-exact");

    // The next backup finds the repository free and applies the policy.
    let run = cf.ok(&["backup", "bc", "--wait"]);
    let bs = cf.last_session(&run);
    let retention = condition(&bs, "RetentionPolicyApplied");
    assert_eq!(retention["status"], "True", "{bs:#}");
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), 1);
    assert_restic_check(&repo_s, &[]);
}
