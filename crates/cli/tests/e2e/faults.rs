//! Bad input and faults: each gets a clear message naming the resource, a Failed session
//! with the reason in its status, no snapshot that looks complete, and a repository that
//! `restic check` still passes.

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use coffer_testkit::MariaDb;

use crate::common::*;

fn script(cf: &Coffer, name: &str, body: &str) -> PathBuf {
    let p = cf.file(name, &format!("#!/bin/bash\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A coffer home with a working source, target repository and configuration `bc`.
fn setup(src: &MariaDb, extra: &str) -> Coffer {
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", src),
        appbinding("src", src, "src-auth"),
        backup_config_with(
            "bc",
            "repo",
            "src",
            &[("args", "--databases app"), ("waitTimeout", "1")],
            5,
        ),
        extra.to_string(),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    cf
}

fn app_db() -> MariaDb {
    let db = MariaDb::start().unwrap();
    db.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad TEXT);
         USE app; INSERT INTO app.t SELECT seq, REPEAT(MD5(seq), 20) FROM seq_1_to_3000;",
    )
    .unwrap();
    db
}

/// Runs `coffer backup bc --wait` and returns the session, which must have Failed with a
/// reason containing every `needle`.
fn failed_backup(
    cf: &Coffer,
    bc: &str,
    needles: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut c = cf.cmd();
    c.args(["backup", bc, "--wait"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "backup must fail:\n{stdout}\n{stderr}"
    );
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("backupsession/"))
        .and_then(|l| l.split_whitespace().next())
        .expect("session name");
    let bs = cf.get_json("backupsession", name);
    assert_eq!(phase(&bs), "Failed", "{bs:#}");
    let reason = error(&bs);
    for n in needles {
        assert!(reason.contains(n), "reason {reason:?} lacks {n:?}");
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    assert_eq!(
        bs["status"]["targets"][0]["stats"][0]["phase"], "Failed",
        "{bs:#}"
    );
    bs
}

fn snapshot_count(cf: &Coffer) -> usize {
    let repo = cf.path("repo");
    if !repo.join("config").exists() {
        return 0;
    }
    restic_snapshots(repo.to_str().unwrap(), &[]).len()
}

#[test]
fn bad_manifests_are_refused_whole_with_file_kind_and_field() {
    let cf = Coffer::new();
    let good = secret("ok", &[("a", "b")]);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("malformed.yaml", format!("{good}---\nkind: [unclosed\n"), vec!["malformed.yaml", "not valid YAML"]),
        (
            "kind.yaml",
            format!("{good}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
            vec!["kind.yaml (document 2)", "unknown kind `ConfigMap`"],
        ),
        (
            "version.yaml",
            format!("{good}---\napiVersion: stash.appscode.com/v9\nkind: Repository\nmetadata: {{name: r}}\n"),
            vec!["Repository/default/r", "apiVersion", "stash.appscode.com/v1alpha1"],
        ),
        (
            "retention.yaml",
            format!(
                "{good}---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\nmetadata: {{name: b}}\n\
                 spec: {{repository: {{name: r}}, target: {{ref: {{kind: AppBinding, name: db}}}}}}\n"
            ),
            vec!["BackupConfiguration/default/b", "spec.retentionPolicy: required"],
        ),
        (
            "backend.yaml",
            format!(
                "{good}---\napiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: r}}\n\
                 spec: {{backend: {{storageSecretName: s}}}}\n"
            ),
            vec!["Repository/default/r", "spec.backend: required"],
        ),
    ];
    // Checked at apply with the parsers the scheduler and the engine use, not at run time.
    let bc = |name: &str, extra: &str, params: &str| {
        format!(
            "{good}---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {{name: {name}}}\nspec:\n  task: {{name: mariadb-backup-10.5.8, params: \
             [{params}]}}\n  repository: {{name: r}}\n  target: {{ref: {{kind: AppBinding, \
             name: db}}}}\n  retentionPolicy: {{name: k, keepLast: 1, prune: true}}\n{extra}"
        )
    };
    let later: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "cron.yaml",
            bc("b", "  schedule: '61 * * * *'\n", ""),
            vec![
                "cron.yaml (document 2), BackupConfiguration/default/b: spec.schedule: \
                 `61 * * * *` is not a valid cron schedule",
            ],
        ),
        (
            "zone.yaml",
            bc("b", "  schedule: '0 3 * * *'\n  timeZone: Europe/Atlantis\n", ""),
            vec!["spec.timeZone: unknown time zone `Europe/Atlantis`"],
        ),
        (
            "method.yaml",
            bc("b", "", "{name: method, value: natve}"),
            vec![
                "method.yaml (document 2), BackupConfiguration/default/b: \
                 spec.task.params.method: `natve` is not one of mysqldump, native or physical",
            ],
        ),
        (
            "connections.yaml",
            bc("b", "", "{name: connections, value: '0'}"),
            vec!["spec.task.params.connections: `0` is not a whole number from 1 to 64"],
        ),
        (
            "unknown-param.yaml",
            bc("b", "", "{name: chunkMib, value: '8'}"),
            vec!["spec.task.params.chunkMib: not a param of the built-in tasks; did you mean `chunkMiB`?"],
        ),
        (
            "hook.yaml",
            bc("b", "  hooks: {preBackup: {httpGet: {port: 80}, exec: {command: [/bin/true]}}}\n", ""),
            vec!["spec.hooks.preBackup: exactly one of exec, httpGet or httpPost may be set"],
        ),
        (
            "wrong-kind.yaml",
            format!(
                "{}---\napiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\n\
                 metadata: {{name: r}}\nspec: {{clientConfig: {{url: 'mysql://h:3306/'}}, \
                 secret: {{name: s}}}}\n",
                bc("b", "", "")
            ),
            vec!["spec.repository.name: `r` is an AppBinding in this apply, not a Repository"],
        ),
    ];
    let cases = cases.into_iter().chain(later);
    for (file, text, needles) in cases {
        let r = cf.apply(file, &text);
        assert!(!r.ok, "{file} must be refused:\n{r}");
        for n in needles {
            assert!(r.stderr.contains(n), "{file}: message lacks {n:?}:\n{r}");
        }
        assert!(r.stderr.contains("nothing was applied"), "{r}");
        // Refused whole: the valid Secret beside the mistake was not stored either.
        assert!(
            !cf.run(&["get", "secret", "ok"]).ok,
            "{file}: part of the file was applied"
        );
    }
    // As in Stash, a configuration may come before its Repository: a warning, then applied.
    let r = cf.apply("early.yaml", &bc("b", "", "{name: method, value: native}"));
    assert!(r.ok, "{r}");
    assert!(
        r.stderr.contains(
            "early.yaml (document 2), BackupConfiguration/default/b: \
             spec.repository.name: Repository default/r does not exist yet"
        ),
        "{r}"
    );
    assert!(r.stderr.starts_with("warning: "), "{r}");
    assert!(cf.run(&["get", "backupconfiguration", "b"]).ok);
}

#[test]
fn missing_references_fail_the_session_naming_the_resource() {
    let src = app_db();
    let cf = setup(
        &src,
        &[
            backup_config("no-repo", "nope", "src", "--databases app", 1),
            backup_config("no-ab", "repo", "ghost-db", "--databases app", 1),
            local_repo("repo-no-secret", &cf_path_placeholder(), "missing-secret"),
            backup_config("no-secret", "repo-no-secret", "src", "--databases app", 1),
        ]
        .join("---\n"),
    );
    failed_backup(
        &cf,
        "no-repo",
        &[
            "Repository default/nope not found",
            "spec.repository of BackupConfiguration default/no-repo",
        ],
        &[],
    );
    failed_backup(
        &cf,
        "no-ab",
        &["AppBinding default/ghost-db not found", "spec.target.ref"],
        &[],
    );
    failed_backup(
        &cf,
        "no-secret",
        &[
            "Secret default/missing-secret not found",
            "storageSecretName of Repository default/repo-no-secret",
        ],
        &[],
    );
    let r = cf.run(&["backup", "not-there", "--wait"]);
    assert!(
        !r.ok
            && r.stderr
                .contains("BackupConfiguration default/not-there not found"),
        "{r}"
    );
    assert_eq!(snapshot_count(&cf), 0);
}

fn cf_path_placeholder() -> PathBuf {
    std::env::temp_dir().join("coffer-never-used-repo")
}

#[test]
fn wrong_repository_password_and_database_faults() {
    let mut src = app_db();
    let cf = setup(&src, "");
    // A good first backup, so the repository exists with one snapshot.
    assert!(cf.run(&["backup", "bc", "--wait"]).ok);
    assert_eq!(snapshot_count(&cf), 1);
    let repo_s = cf.path("repo").to_str().unwrap().to_string();

    let extra = [
        secret("wrong-pass", &[("RESTIC_PASSWORD", "not-the-password")]),
        local_repo("same-repo-wrong-pass", &cf.path("repo"), "wrong-pass"),
        backup_config(
            "bc-wrong-pass",
            "same-repo-wrong-pass",
            "src",
            "--databases app",
            1,
        ),
        secret(
            "bad-db-auth",
            &[("username", "root"), ("password", "wrong")],
        ),
        appbinding("src-bad-auth", &src, "bad-db-auth"),
        backup_config_with(
            "bc-bad-auth",
            "repo",
            "src-bad-auth",
            &[("args", "--databases app")],
            5,
        ),
    ]
    .join("---\n");
    assert!(cf.apply("extra.yaml", &extra).ok);
    failed_backup(
        &cf,
        "bc-wrong-pass",
        &[
            "Repository default/same-repo-wrong-pass",
            "password does not open",
        ],
        &[],
    );
    failed_backup(
        &cf,
        "bc-bad-auth",
        &["AppBinding default/src-bad-auth", "refused user `root`"],
        &[],
    );
    src.stop();
    failed_backup(
        &cf,
        "bc",
        &[
            "AppBinding default/src",
            "cannot connect",
            &format!("127.0.0.1:{}", src.port()),
        ],
        &[],
    );
    assert_eq!(snapshot_count(&cf), 1, "no failed run left a snapshot");
    assert_restic_check(&repo_s, &[]);
}

#[test]
fn a_dump_killed_or_truncated_midway_leaves_no_snapshot() {
    let src = app_db();
    let cf = setup(&src, "");
    let repo_s = cf.path("repo").to_str().unwrap().to_string();
    assert!(cf.run(&["backup", "bc", "--wait"]).ok);
    let before = restic_snapshots(&repo_s, &[]).len();

    let killed = script(
        &cf,
        "killed-dump",
        "mariadb-dump \"$@\" | head -c 30000\nkill -KILL $$",
    );
    failed_backup(
        &cf,
        "bc",
        &[
            "the dump of AppBinding default/src failed",
            "killed by signal 9",
        ],
        &[("COFFER_MYSQLDUMP", killed.to_str().unwrap())],
    );
    let truncated = script(
        &cf,
        "truncated-dump",
        "mariadb-dump \"$@\" | head -c 30000\nexit 0",
    );
    failed_backup(
        &cf,
        "bc",
        &["truncated"],
        &[("COFFER_MYSQLDUMP", truncated.to_str().unwrap())],
    );
    // A real server death in the middle of the dump.
    let failing = script(&cf, "failing-dump", "mariadb-dump \"$@\"\necho 'mysqldump: Error 2013: Lost connection to server during query' >&2\nexit 2");
    failed_backup(
        &cf,
        "bc",
        &["mysqldump exited with status 2", "Lost connection"],
        &[("COFFER_MYSQLDUMP", failing.to_str().unwrap())],
    );

    assert_eq!(
        restic_snapshots(&repo_s, &[]).len(),
        before,
        "a failed dump left a snapshot"
    );
    assert_restic_check(&repo_s, &[]);
    let st = cf.get_json("repository", "repo");
    assert_eq!(st["status"]["snapshotCount"], before as u64);
}

/// The RetentionPolicyApplied condition of a session.
fn retention(bs: &serde_json::Value) -> &serde_json::Value {
    bs["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "RetentionPolicyApplied"))
        .unwrap_or_else(|| panic!("no RetentionPolicyApplied condition: {bs:#}"))
}

/// Backups lock the repository shared, as restic's do: two run side by side, and the
/// retention of one (which needs the repository to itself) waits for a later backup.
#[test]
fn two_backups_of_one_repository_at_once_both_run_and_retention_waits() {
    let src = app_db();
    let cf = setup(
        &src,
        &backup_config("bc2", "repo", "src", "--databases app", 1),
    );
    let repo_s = cf.path("repo").to_str().unwrap().to_string();
    assert!(cf.run(&["backup", "bc", "--wait"]).ok);
    // The first backup dawdles mid-stream while locked.
    let slow = script(
        &cf,
        "slow-dump",
        "mariadb-dump \"$@\" | { head -c 2000; sleep 5; cat; }",
    );
    let mut first = cf.cmd();
    first
        .args(["backup", "bc", "--wait"])
        .env("COFFER_MYSQLDUMP", &slow)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = first.spawn().unwrap();
    let locks = cf.path("repo").join("locks");
    wait_for_lock(&locks);
    // The second keeps one snapshot of the group: it would remove the older one.
    let run = cf.run(&["backup", "bc2", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Succeeded", "{bs:#}");
    let r = retention(&bs);
    assert_eq!(r["status"], "False", "{bs:#}");
    assert_eq!(r["reason"], "RetentionPolicyPostponed", "{bs:#}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("a shared lock held by coffer"),
        "{bs:#}"
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first backup must still succeed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), 3, "nothing forgotten");
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "locks released"
    );
    // Alone, the next one applies its policy.
    let run = cf.run(&["backup", "bc2", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(retention(&cf.last_session(&run))["status"], "True");
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), 1);
    assert_restic_check(&repo_s, &[]);
}

fn wait_for_lock(locks: &std::path::Path) {
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            t0.elapsed().as_secs() < 30,
            "no lock appeared in {}",
            locks.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// coffer's locks are restic's: restic sees coffer's backup lock and will not prune under it;
/// coffer will not remove snapshots while restic holds a lock; a crashed coffer's stale lock is
/// removed by the next run; `coffer unlock` clears what a crashed restic left.
#[test]
fn locks_are_shared_with_restic_and_survive_crashes() {
    use std::process::{Command, Stdio};
    let src = app_db();
    let cf = setup(
        &src,
        &backup_config("keep1", "repo", "src", "--databases app", 1),
    );
    let repo = cf.path("repo");
    let repo_s = repo.to_str().unwrap().to_string();
    let locks = repo.join("locks");
    assert!(cf.run(&["backup", "bc", "--wait"]).ok);

    // 1. coffer holds the lock; restic sees it (shared, as restic's backup's) and refuses to
    //    prune.
    let slow = script(
        &cf,
        "slow-dump",
        "mariadb-dump \"$@\" | { head -c 2000; sleep 4; cat; }",
    );
    let mut running = cf.cmd();
    running
        .args(["backup", "bc", "--wait"])
        .env("COFFER_MYSQLDUMP", &slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut running = running.spawn().unwrap();
    wait_for_lock(&locks);
    let listed = restic(&repo_s, &["list", "locks", "--no-lock"]);
    let id = listed.stdout.trim().to_string();
    assert_eq!(id.lines().count(), 1, "{listed}");
    let lock = restic(&repo_s, &["cat", "lock", &id, "--no-lock"]);
    let lock: serde_json::Value =
        serde_json::from_str(&lock.stdout).unwrap_or_else(|_| panic!("{lock}"));
    assert_eq!(lock["exclusive"], false);
    let holder = std::fs::read(format!("/proc/{}/cmdline", lock["pid"])).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&holder).contains("agent"),
        "the lock names the live coffer agent running the session: {lock}"
    );
    let prune = restic(&repo_s, &["prune"]);
    assert!(
        !prune.ok && prune.stderr.contains("locked"),
        "restic must not prune under coffer's lock:\n{prune}"
    );
    assert!(running.wait().unwrap().success());

    // 2. restic holds a lock (a backup waiting on its input): coffer backs up beside it but
    //    removes no snapshot.
    let mut restic_backup = Command::new("restic")
        .args([
            "-r",
            &repo_s,
            "--no-cache",
            "backup",
            "--stdin",
            "--stdin-filename",
            "x.sql",
        ])
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lock(&locks);
    let before = restic_snapshots(&repo_s, &[]).len();
    let run = cf.run(&["backup", "keep1", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    let r = retention(&bs);
    assert_eq!(r["reason"], "RetentionPolicyPostponed", "{bs:#}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("held by restic") && msg.contains(&format!("pid {}", restic_backup.id())),
        "{msg}"
    );
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), before + 1);
    // 3. restic crashes and leaves its lock: it is stale (its process is gone), so coffer
    //    works around it, and `coffer unlock` removes it.
    restic_backup.kill().unwrap();
    restic_backup.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        1,
        "restic's lock is left behind"
    );
    let run = cf.run(&["backup", "keep1", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(
        retention(&cf.last_session(&run))["status"],
        "True",
        "a stale restic lock must not hold up retention"
    );
    assert_eq!(restic_snapshots(&repo_s, &[]).len(), 1);
    let un = cf.ok(&["unlock", "repo"]);
    assert!(
        un.stdout.contains("removed a shared lock held by restic"),
        "{un}"
    );
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);

    // 4. coffer itself is killed mid-backup: its lock stays (restic refuses to work until it
    //    is removed), and the next coffer run removes it.
    let before = restic_snapshots(&repo_s, &[]).len();
    let mut crashed = cf.cmd();
    crashed
        .args(["backup", "bc", "--wait"])
        .env("COFFER_MYSQLDUMP", &slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut crashed = crashed.spawn().unwrap();
    wait_for_lock(&locks);
    unsafe { libc::kill(crashed.id() as i32, libc::SIGKILL) };
    crashed.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        1,
        "the crashed run's lock remains"
    );
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    // The next run finds the crashed run's session, fails it as interrupted and releases the
    // lock it left (or, failing that, its own run steps over the stale lock).
    assert!(
        run.stderr
            .contains("interrupted: the session's process ended")
            && (run
                .stderr
                .contains("removed stale a shared lock held by coffer")
                || run
                    .stderr
                    .contains("removing stale lock left by a crashed coffer")),
        "{run}"
    );
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
    assert_eq!(
        restic_snapshots(&repo_s, &[]).len(),
        before + 1,
        "the killed run left no snapshot"
    );
    assert_restic_check(&repo_s, &[]);
}

/// Overwrites 16 bytes in the middle of the repository's largest pack (the dump's data; the
/// trees' pack is small) and returns the pack's id.
pub(crate) fn damage_largest_pack(cf: &Coffer) -> String {
    let mut packs = Vec::new();
    let mut dirs = vec![cf.path("repo").join("data")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                packs.push(p);
            }
        }
    }
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.last().expect("the backup wrote packs");
    let mut bytes = std::fs::read(pack).unwrap();
    let (mid, len) = (bytes.len() / 2, bytes.len());
    for b in &mut bytes[mid.saturating_sub(8)..(mid + 8).min(len)] {
        *b ^= 0x5a;
    }
    std::fs::set_permissions(pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(pack, bytes).unwrap();
    pack.file_name().unwrap().to_str().unwrap().to_string()
}

/// The reproduction of coffer issue #13: a pack damaged on disk is found by
/// `coffer check --read-data`, which names it and the snapshot that depends on it, marks the
/// Repository's integrity false and takes the damaged pack out of the index; the next backup
/// then writes the damaged data again instead of deduplicating against it, and its snapshot
/// restores with equal table checksums.
/// A source of several chunks of dump (chunks average 2 MiB), a target, and a coffer home
/// backing the source up into a local repository (`repo_extra` is appended to its spec).
fn damage_setup(repo_extra: &str) -> (MariaDb, MariaDb, Coffer) {
    let src = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad TEXT);
         USE app; INSERT INTO app.t SELECT seq, CONCAT(REPEAT(MD5(seq), 10), SHA2(seq, 512))
         FROM seq_1_to_20000;",
    )
    .unwrap();
    let dst = MariaDb::start().unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret") + repo_extra,
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        db_secret("dst-auth", &dst),
        appbinding("dst", &dst, "dst-auth"),
        // Without the date in the dump's trailer, a backup of unchanged data yields the same
        // blobs: the next backup heals the old snapshot too.
        backup_config("bc", "repo", "src", "--databases app --skip-dump-date", 5),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    (src, dst, cf)
}

/// Restores snapshot `id` (or `latest`) into `dst` and compares table checksums with `src`.
fn restore_equal(cf: &Coffer, src: &MariaDb, dst: &MariaDb, name: &str, id: &str) {
    dst.exec("DROP DATABASE IF EXISTS app").unwrap();
    let rs = cf.file(
        &format!("{name}.yaml"),
        &restore_session(name, "repo", "dst", &id[..id.len().min(8)]),
    );
    let r = cf.run(&["restore", "-f", rs.to_str().unwrap(), "--wait"]);
    assert!(r.ok, "restore of {id}: {r}");
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    let got = coffer_testkit::verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, got, "snapshot {id} restores the source's tables");
    assert!(want.values().all(Option::is_some));
}

/// The reproduction of coffer issue #13: a pack damaged on disk is found by
/// `coffer check --read-data`, which names it and the snapshot that depends on it, marks the
/// Repository's integrity false and takes the damaged pack out of the index; the next backup
/// then writes the damaged data again instead of deduplicating against it, and its snapshot
/// restores with equal table checksums.
#[test]
fn a_damaged_pack_is_found_by_the_data_check_and_the_next_backup_restores() {
    let (src, dst, cf) = damage_setup("");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let snaps: serde_json::Value =
        serde_json::from_str(&cf.ok(&["snapshots", "repo", "-o", "json"]).stdout).unwrap();
    let snap = snaps[0]["id"].as_str().unwrap().to_string();
    let clean = cf.run(&["check", "repo", "--read-data"]);
    assert!(clean.ok, "{clean}");
    assert!(clean.stdout.contains("no errors were found"), "{clean}");

    let pack = damage_largest_pack(&cf);
    let check = cf.run(&["check", "repo", "--read-data"]);
    assert!(!check.ok, "a damaged repository fails the check: {check}");
    assert!(
        check.stdout.contains(&format!("damaged pack {pack}")),
        "{check}"
    );
    assert!(
        check
            .stdout
            .contains(&format!("snapshot {snap} depends on it")),
        "{check}"
    );
    let repo = cf.get_json("repository", "repo");
    assert_eq!(repo["status"]["integrity"], false, "{repo:#}");
    let reason = repo["status"]["integrityReason"].as_str().unwrap();
    assert!(
        reason.contains(&pack) && reason.contains(&snap[..8]),
        "{reason}"
    );
    assert_eq!(repo["status"]["damagedPacks"][0], pack.as_str());
    assert_eq!(repo["status"]["lastDataCheckSubset"], "all");

    // The next backup writes the damaged data again and the repository is whole.
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let session = cf.last_session(&run);
    assert_eq!(phase(&session), "Succeeded", "{session:#}");
    let repo = cf.get_json("repository", "repo");
    assert_eq!(repo["status"]["integrity"], true, "{repo:#}");
    assert!(repo["status"].get("damagedPacks").is_none(), "{repo:#}");
    let again = cf.run(&["check", "repo", "--read-data"]);
    assert!(again.ok, "{again}");
    assert_restic_check(cf.path("repo").to_str().unwrap(), &[]);

    // Both snapshots restore: the new one, and the old one whose blobs were written again.
    restore_equal(&cf, &src, &dst, "rs-old", &snap);
    restore_equal(&cf, &src, &dst, "rs-new", "latest");
}

/// With `spec.dataCheck` on the Repository, the first backup of the day reads the day's
/// slice of packs before it writes: a damaged pack is named and taken out, that same backup
/// writes its data again, and its snapshot restores.
#[test]
fn a_backup_with_a_daily_data_check_writes_damaged_data_again() {
    let (src, dst, cf) = damage_setup("");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let pack = damage_largest_pack(&cf);
    // The rotating check is switched on now, so that today's slice (all: one day) is due.
    let with_check =
        local_repo("repo", &cf.path("repo"), "repo-secret") + "  dataCheck: {periodDays: 1}\n";
    let r = cf.apply("repo.yaml", &with_check);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(
        run.ok,
        "the backup that found the damage succeeds: {run}\n{:#}",
        cf.last_session(&run)["status"]
    );
    let repo = cf.get_json("repository", "repo");
    assert_eq!(repo["status"]["integrity"], false, "{repo:#}");
    assert_eq!(repo["status"]["damagedPacks"][0], pack.as_str(), "{repo:#}");
    assert_eq!(repo["status"]["lastDataCheckSubset"], "all", "{repo:#}");
    let reason = repo["status"]["integrityReason"].as_str().unwrap();
    assert!(reason.contains(&pack), "{reason}");
    restore_equal(&cf, &src, &dst, "rs-latest", "latest");
    // A later check finds the repository whole again.
    let again = cf.run(&["check", "repo", "--read-data"]);
    assert!(again.ok, "{again}");
    let repo = cf.get_json("repository", "repo");
    assert_eq!(repo["status"]["integrity"], true, "{repo:#}");
}

/// A restore from a repository with a damaged pack fails, and says so in one or two lines
/// naming the repository, even with RUST_BACKTRACE set; the storage library's whole message
/// goes to the session log.
#[test]
fn a_damaged_repository_fails_the_restore_in_two_lines() {
    let src = app_db();
    let cf = setup(&src, "");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    damage_largest_pack(&cf);
    let rs = cf.file("rs.yaml", &restore_session("rs", "repo", "src", "latest"));
    let o = cf
        .cmd()
        .args(["restore", "-f", rs.to_str().unwrap(), "--wait"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let r = Run::from(o);
    assert!(!r.ok, "{r}");
    assert!(r.stdout.contains("restoresession/rs created"), "{r}");
    let session = cf.get_json("restoresession", "rs");
    assert_eq!(phase(&session), "Failed", "{session:#}");
    let reason = error(&session);
    assert!(
        reason.lines().count() <= 2 && reason.len() <= 300,
        "the reason must be one or two short lines, got {} lines, {} chars:\n{reason}",
        reason.lines().count(),
        reason.len()
    );
    assert!(reason.contains("Repository default/repo"), "{reason}");
    let host_error = session["status"]["stats"][0]["error"].as_str().unwrap();
    assert_eq!(host_error, reason);
    let yaml = cf.ok(&["get", "restoresession", "rs", "-o", "yaml"]).stdout;
    assert!(
        !yaml.contains("stack backtrace") && !yaml.contains("Backtrace"),
        "{yaml}"
    );
    // What the command prints about the failure is the same short reason.
    assert!(r.stderr.contains(&format!("reason: {reason}\n")), "{r}");
    // The detail is in the session log, without rustic's backtraces.
    let log = cf.ok(&["logs", "restoresession", "rs"]).stdout;
    assert!(log.contains("Repository default/repo"), "{log}");
    assert!(
        log.contains("Data decryption failed, MAC check failed"),
        "{log}"
    );
    assert!(log.contains("rustic.cli.rs/docs/errors/C001"), "{log}");
    assert!(!log.contains("Backtrace:"), "{log}");
    assert!(log.lines().count() > reason.lines().count(), "{log}");
}

/// A password written into `clientConfig.url` is never used (credentials come from the
/// AppBinding's Secret) and never shown: not by apply's errors, `get -o yaml/json`,
/// `describe`, a failed session's status and log, nor the store on disk.
#[test]
fn a_password_in_the_appbinding_url_is_shown_nowhere() {
    const URL_PASSWORD: &str = "Url-Pass-7731";
    let cf = Coffer::new();
    // A port nothing listens on: the backup fails connecting.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ab = |url: &str| {
        format!(
            "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: src}}\n\
             spec:\n  clientConfig: {{url: \"{url}\"}}\n  secret: {{name: src-auth}}\n"
        )
    };
    let refused = cf.apply(
        "bad-url.yaml",
        &ab(&format!("mysql://root:{URL_PASSWORD}@127.0.0.1:99999/")),
    );
    assert!(!refused.ok, "{refused}");
    assert!(
        refused.stderr.contains("spec.clientConfig.url"),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("mysql://root:***@127.0.0.1:99999/"),
        "{refused}"
    );
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        secret("src-auth", &[("username", "root"), ("password", "unused")]),
        ab(&format!("mysql://root:{URL_PASSWORD}@127.0.0.1:{port}/")),
        backup_config_with("bc", "repo", "src", &[("waitTimeout", "1")], 5),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(!run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Failed", "{bs:#}");
    let name = bs["metadata"]["name"].as_str().unwrap().to_string();
    let yaml = cf.ok(&["get", "appbinding", "src", "-o", "yaml"]).stdout;
    assert!(yaml.contains("mysql://root:***@127.0.0.1:"), "{yaml}");
    let mut store = String::new();
    let mut dirs = vec![cf.home.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                store.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    for (what, text) in [
        ("apply", refused.stderr.clone()),
        ("get -o yaml", yaml),
        (
            "get -o json",
            cf.ok(&["get", "appbinding", "src", "-o", "json"]).stdout,
        ),
        ("describe", cf.ok(&["describe", "appbinding", "src"]).stdout),
        ("backup output", format!("{}{}", run.stdout, run.stderr)),
        ("session", bs.to_string()),
        (
            "session log",
            cf.ok(&["logs", "backupsession", &name]).stdout,
        ),
        ("store", store),
    ] {
        assert!(
            !text.contains(URL_PASSWORD),
            "{what} shows the URL's password:\n{text}"
        );
    }
}
