//! The harness for end-to-end tests: a coffer home, manifests, the real `coffer` binary, and
//! the `restic` CLI for interoperability checks.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use coffer_testkit::{DbServer, MariaDb};

pub const REPO_PASSWORD: &str = "repo-pass-Zq8!";

pub struct Coffer {
    pub home: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout as bytes (dumps hold binary data that is not UTF-8).
    pub raw: Vec<u8>,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            raw: o.stdout,
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Coffer {
    pub fn new() -> Coffer {
        Coffer {
            home: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
        let tmp = self.work.path().join("tmp");
        let _ = std::fs::create_dir_all(&tmp);
        c.env("COFFER_HOME", self.home.path())
            .env("TMPDIR", &tmp)
            .env("COFFER_LOG", "info")
            .env_remove("COFFER_MYSQLDUMP")
            .env_remove("COFFER_MYSQL");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run coffer"))
    }

    /// Runs coffer and requires success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(r.ok, "coffer {args:?} failed:\n{r}");
        r
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn apply(&self, name: &str, yaml: &str) -> Run {
        let p = self.file(name, yaml);
        self.run(&["apply", "-f", p.to_str().unwrap()])
    }

    pub fn get_json(&self, kind: &str, name: &str) -> serde_json::Value {
        let r = self.ok(&["get", kind, name, "-o", "json"]);
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// The only BackupSession of a BackupConfiguration created by the last `coffer backup`.
    pub fn last_session(&self, run: &Run) -> serde_json::Value {
        let name = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("backupsession/"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no session name in output:\n{run}"));
        self.get_json("backupsession", name)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }
}

pub fn secret(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n");
    for (k, v) in pairs {
        s.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    s
}

pub fn local_repo(name: &str, path: &Path, secret: &str) -> String {
    format!(
        "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: {name}}}\n\
         spec:\n  backend:\n    local:\n      mountPath: /safe/data\n      hostPath: {{path: {}}}\n    \
         storageSecretName: {secret}\n",
        path.display()
    )
}

/// An AppBinding of the given server (MariaDB or MySQL), its credentials in Secret `secret`.
pub fn appbinding(name: &str, db: &impl DbServer, secret: &str) -> String {
    format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: {name}}}\n\
         spec:\n  type: {}\n  clientConfig: {{url: \"{}\"}}\n  \
         secret: {{name: {secret}}}\n",
        db.app_type(),
        db.url()
    )
}

/// A database Secret for root of the given server.
pub fn db_secret(name: &str, db: &impl DbServer) -> String {
    secret(
        name,
        &[("username", "root"), ("password", db.root_password())],
    )
}

pub fn backup_config(name: &str, repo: &str, ab: &str, args: &str, keep_last: u32) -> String {
    backup_config_with(name, repo, ab, &[("args", args)], keep_last)
}

pub fn backup_config_with(
    name: &str,
    repo: &str,
    ab: &str,
    params: &[(&str, &str)],
    keep_last: u32,
) -> String {
    let params: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}"))
        .collect();
    let params = params.join(", ");
    format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\nmetadata: {{name: {name}}}\n\
         spec:\n  schedule: \"0 3 * * *\"\n  task:\n    name: mariadb-backup-10.5.8\n    \
         params: [{params}]\n  repository: {{name: {repo}}}\n  target:\n    \
         ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: {ab}}}\n  \
         retentionPolicy: {{name: keep, keepLast: {keep_last}, prune: true}}\n"
    )
}

pub fn restore_session(name: &str, repo: &str, ab: &str, snapshot: &str) -> String {
    format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
         spec:\n  task: {{name: mariadb-restore-10.5.8}}\n  repository: {{name: {repo}}}\n  target:\n    \
         ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: {ab}}}\n    \
         rules: [{{snapshots: [\"{snapshot}\"]}}]\n"
    )
}

/// `restic` against a repository with our password, without a cache.
pub fn restic(repo: &str, args: &[&str]) -> Run {
    restic_env(repo, args, &[])
}

pub fn restic_env(repo: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new("restic");
    c.arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", REPO_PASSWORD);
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("run restic (is it installed?)"))
}

/// restic's view of a repository's snapshots.
pub fn restic_snapshots(repo: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    // Reading needs no lock, and a crashed writer's stale lock must not hide the answer.
    let r = restic_env(repo, &["snapshots", "--json", "--no-lock"], env);
    assert!(r.ok, "restic snapshots failed:\n{r}");
    serde_json::from_str(&r.stdout).unwrap()
}

/// `restic check` must pass.
pub fn assert_restic_check(repo: &str, env: &[(&str, &str)]) {
    let r = restic_env(repo, &["check"], env);
    assert!(
        r.ok && r.stdout.contains("no errors were found"),
        "restic check failed on {repo}:\n{r}"
    );
}

/// `restic restore` writes exactly what `restic dump` streams: the tree records the file's
/// size (a streamed file recorded as 0 bytes long restores empty).
pub fn assert_restic_restores(repo: &str, path: &str, env: &[(&str, &str)]) {
    let target = tempfile::tempdir().unwrap();
    let t = target.path().to_str().unwrap();
    let r = restic_env(
        repo,
        &["restore", "latest", "--target", t, "--include", path],
        env,
    );
    assert!(r.ok, "restic restore failed:\n{r}");
    let restored = std::fs::read(target.path().join(path.trim_start_matches('/'))).unwrap();
    let dumped = restic_env(repo, &["dump", "latest", path], env);
    assert!(dumped.ok, "{dumped}");
    assert!(!dumped.raw.is_empty(), "{path} is empty in the snapshot");
    assert!(
        restored == dumped.raw,
        "restic restore wrote {} bytes of {path}, restic dump streams {}",
        restored.len(),
        dumped.raw.len()
    );
}

pub fn phase(v: &serde_json::Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or("")
}

pub fn error(v: &serde_json::Value) -> &str {
    v["status"]["error"].as_str().unwrap_or("")
}

/// The tags of snapshot `id` (or an id prefix) as restic lists them.
pub fn snapshot_tags(repo: &Path, id: &str) -> Vec<String> {
    let snaps = restic_snapshots(repo.to_str().unwrap(), &[]);
    let snap = snaps
        .iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.starts_with(id)))
        .unwrap_or_else(|| panic!("no snapshot {id} in {snaps:?}"));
    snap["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The value of the tag `key=...`, if the snapshot has one (and only one).
pub fn tag_value<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    let mut found = tags
        .iter()
        .filter_map(|t| t.strip_prefix(&format!("{key}=")));
    let first = found.next();
    assert!(found.next().is_none(), "two {key}= tags in {tags:?}");
    first
}

/// A standalone server writing a binlog, with transactions in two GTID domains and a binlog
/// file just rotated (no transaction in it yet), backed up with `params` while nothing writes: the snapshot names the AppBinding, and the GTID state
/// and binlog position it records are the server's own at that quiet moment.
pub fn a_backup_records_the_position_it_is_consistent_at(params: &[(&str, &str)]) {
    use coffer_testkit::MariaDbOptions;
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(11, 0)).unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO app.t SELECT seq, seq FROM seq_1_to_1000; \
         SET SESSION gtid_domain_id = 7; INSERT INTO app.t VALUES (5000, 1); \
         FLUSH BINARY LOGS;",
    )
    .unwrap();
    let position = || {
        let g = src.query_strings("SELECT @@gtid_binlog_pos").unwrap();
        let m = src.query_strings("SHOW MASTER STATUS").unwrap();
        // The server lists domains in its own order; coffer's GtidState in domain order.
        let gtid: coffer_api::gtid::GtidState = g[0][0].clone().unwrap().parse().unwrap();
        (
            gtid.to_string(),
            format!("{}:{}", m[0][0].clone().unwrap(), m[0][1].clone().unwrap()),
        )
    };
    // After a rotation the server writes a checkpoint event naming the new file into it on
    // its own, once the old file's transactions are all durable: wait for it, so that the
    // position is quiet from here on.
    let file = src.query_strings("SHOW MASTER STATUS").unwrap()[0][0]
        .clone()
        .unwrap();
    while !src
        .query_strings(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .unwrap()
        .iter()
        .any(|e| {
            e[2].as_deref() == Some("Binlog_checkpoint")
                && e[5].as_deref().is_some_and(|i| i.contains(&file))
        })
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = position();
    assert!(before.0.contains(','), "two domains: {before:?}");
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", params, 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let after = position();
    assert_eq!(before, after, "nothing wrote during the backup");
    let bs = cf.last_session(&run);
    let id = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = snapshot_tags(&repo, &id);
    assert_eq!(tag_value(&tags, "app"), Some("default/src"), "{tags:?}");
    assert_eq!(
        tag_value(&tags, "gtid"),
        Some(before.0.as_str()),
        "{tags:?}"
    );
    assert_eq!(
        tag_value(&tags, "binlog"),
        Some(before.1.as_str()),
        "{tags:?}"
    );
}

/// A RestoreSession of a point in time into AppBinding `ab` (`point` is the YAML of the
/// pointInTime fields, `params` extra task fields such as `, params: [...]`).
pub fn pitr_session(name: &str, ab: &str, point: &str, params: &str) -> String {
    format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
         spec:\n  task: {{name: mariadb-restore-10.5.8{params}}}\n  repository: {{name: repo}}\n  \
         target:\n    ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, \
         name: {ab}}}\n    pointInTime: {{{point}}}\n"
    )
}

/// A fresh server to restore into, with its AppBinding `t-<name>`.
pub fn restore_target(cf: &Coffer, name: &str) -> (MariaDb, String) {
    let target = MariaDb::start().unwrap();
    let ab = target_binding(cf, name, &target);
    (target, ab)
}

/// Applies the AppBinding `t-<name>` (and its Secret) of a server to restore into; returns
/// its name.
pub fn target_binding(cf: &Coffer, name: &str, target: &impl DbServer) -> String {
    let ab = format!("t-{name}");
    let m = [
        db_secret(&format!("{ab}-auth"), target),
        appbinding(&ab, target, &format!("{ab}-auth")),
    ]
    .join("---\n");
    let r = cf.apply(&format!("{name}-target.yaml"), &m);
    assert!(r.ok, "{r}");
    ab
}

/// Runs the point-in-time RestoreSession `name` of `archive` into AppBinding `ab` to its end;
/// returns the session.
pub fn pitr_restore(
    cf: &Coffer,
    name: &str,
    ab: &str,
    archive: &str,
    point: &str,
) -> serde_json::Value {
    let session = pitr_session(name, ab, &format!("{point}, archive: {archive}"), "");
    let f = cf.file(&format!("{name}.yaml"), &session);
    let _ = cf.run(&["restore", "-f", f.to_str().unwrap(), "--wait"]);
    cf.get_json("restoresession", name)
}

/// Every row of each table, in primary-key order, as strings: what "row by row" compares.
pub fn table_rows(db: &MariaDb, tables: &[&str]) -> Vec<Vec<Vec<Option<String>>>> {
    tables
        .iter()
        .map(|t| {
            db.query_strings(&format!("SELECT * FROM {t} ORDER BY 1"))
                .unwrap()
        })
        .collect()
}

/// The condition of type `t` in a status object (anything with `conditions`), or a panic
/// that shows the whole status.
pub fn condition_of<'a>(status: &'a serde_json::Value, t: &str) -> &'a serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no {t} condition: {status:#}"))
}

/// The condition of type `t` on a resource's status.
pub fn condition<'a>(resource: &'a serde_json::Value, t: &str) -> &'a serde_json::Value {
    condition_of(&resource["status"], t)
}
