//! A snapshot is untrusted input: whoever can write to the repository must not get to run
//! commands or write files on the host that restores it. The snapshots here are crafted with
//! the restic CLI, as anyone holding the repository password could.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use coffer_testkit::MariaDb;

use crate::common::*;

/// Stores `data` as a new snapshot holding one file, the way Stash's pipeline does.
fn restic_store(repo: &Path, name: &str, data: &[u8]) {
    let mut child = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(["--no-cache", "backup", "--stdin", "--stdin-filename", name])
        .args(["--host", "host-0", "--quiet"])
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success(), "restic backup failed");
}

fn restore_latest(cf: &Coffer, name: &str, yaml: &str) -> serde_json::Value {
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(&format!("{name}.yaml"), yaml).to_str().unwrap(),
        "--wait",
    ]);
    let rs = cf.get_json("restoresession", name);
    assert!(!r.ok, "the restore must fail:\n{r}\n{rs:#}");
    rs
}

#[test]
fn a_dump_cannot_run_shell_commands_on_the_restoring_host() {
    let dst = MariaDb::start().unwrap();
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let repo_s = repo.to_str().unwrap();
    assert!(restic(repo_s, &["init"]).ok);
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("dst-auth", &dst),
        appbinding("dst", &dst, "dst-auth"),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);

    // Each client command on its own: the first refused one stops the load.
    let cases = [
        ("shell", format!("\\! touch {}", cf.path("pwned").display())),
        (
            "system",
            format!("system touch {}", cf.path("pwned2").display()),
        ),
        ("tee", format!("tee {}", cf.path("tee-out").display())),
        ("source", "source /etc/hostname".to_string()),
    ];
    for (name, line) in &cases {
        let dump = format!(
            "CREATE DATABASE IF NOT EXISTS app;\nCREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY);\n\
             INSERT INTO app.t VALUES (1);\n{line}\nINSERT INTO app.t VALUES (2);\n"
        );
        restic_store(&repo, "dumpfile.sql", dump.as_bytes());
        let rs = restore_latest(&cf, name, &restore_session(name, "repo", "dst", "latest"));
        assert_eq!(phase(&rs), "Failed", "{name}: {rs:#}");
        assert!(
            error(&rs).contains("mysql"),
            "{name}: the error names the client: {rs:#}"
        );
    }
    let rs = cf.get_json("restoresession", "shell");
    assert!(
        error(&rs).contains("client command") && error(&rs).contains("\\!"),
        "the refusal is explained: {rs:#}"
    );
    for f in ["pwned", "pwned2", "tee-out"] {
        assert!(
            !cf.path(f).exists(),
            "{f} was created on the restoring host"
        );
    }
}

/// A chunk of the xbstream format, with the checksum mbstream verifies.
fn xb_chunk(kind: u8, path: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"XBSTCK01".to_vec();
    v.push(0);
    v.push(kind);
    v.extend_from_slice(&(path.len() as u32).to_le_bytes());
    v.extend_from_slice(path.as_bytes());
    if kind == b'P' {
        v.extend_from_slice(&(data.len() as u64).to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&crc32(data).to_le_bytes());
        v.extend_from_slice(data);
    }
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn xb_file(path: &str, data: &[u8]) -> Vec<u8> {
    [xb_chunk(b'P', path, data), xb_chunk(b'E', path, b"")].concat()
}

fn physical_restore(name: &str, target: &Path) -> String {
    format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
         spec:\n  task:\n    name: mariadb-restore-10.5.8\n    params:\n    - {{name: dataDir, value: {}}}\n  \
         repository: {{name: repo}}\n  target:\n    \
         ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: src}}\n",
        target.display()
    )
}

/// A real mariabackup stream with something appended or changed: mbstream extracts what comes
/// before the bad part, so without coffer's own checks the restore would look complete.
#[test]
fn a_physical_snapshot_cannot_write_outside_its_directory_or_load_code() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1);")
        .unwrap();
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", &[("method", "physical")], 50),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let real = restic(
        repo.to_str().unwrap(),
        &["dump", "latest", "/xtrabackup.stream"],
    )
    .raw;
    assert!(real.len() > 1000);

    let root = cf.path("restored");
    std::fs::create_dir_all(&root).unwrap();
    let outside = cf.path("abs-target");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "climbs",
            [real.clone(), xb_file("../escape", b"pwned")].concat(),
            "../escape".into(),
        ),
        (
            "nested-climb",
            [real.clone(), xb_file("mysql/../../escape2", b"pwned")].concat(),
            "mysql/../../escape2".into(),
        ),
        (
            "absolute",
            [xb_file(outside.to_str().unwrap(), b"pwned"), real.clone()].concat(),
            outside.display().to_string(),
        ),
    ];
    for (name, stream, named) in &cases {
        restic_store(&repo, "xtrabackup.stream", stream);
        let target = root.join(name);
        let rs = restore_latest(&cf, name, &physical_restore(name, &target));
        assert_eq!(phase(&rs), "Failed", "{name}: {rs:#}");
        assert!(
            error(&rs).contains(named.as_str()) && error(&rs).contains("outside"),
            "{name}: the error names the path: {rs:#}"
        );
        assert!(!target.exists(), "{name}: nothing restored");
    }
    for f in [root.join("escape"), root.join("escape2"), outside.clone()] {
        assert!(
            !f.exists(),
            "{} was written outside the restore",
            f.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    // backup-my.cnf is read by mariabackup --prepare as its options: pointing plugin_dir at the
    // backup itself would load a library that came with the stream.
    let dir = cf.path("extracted");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ex = Command::new("mbstream")
        .args(["-x", "-C"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ex.stdin.take().unwrap().write_all(&real).unwrap();
    assert!(ex.wait().unwrap().success());
    let pwned = cf.path("pwned-by-plugin");
    std::fs::write(
        cf.path("evil.c"),
        format!(
            "#include <fcntl.h>\n__attribute__((constructor)) static void f(void) {{ creat(\"{}\", 0644); }}\n",
            pwned.display()
        ),
    )
    .unwrap();
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("evil.so"))
        .arg(cf.path("evil.c"))
        .status()
        .unwrap();
    assert!(cc.success());
    let target = root.join("plugin");
    let staging = root.join(".plugin.coffer-restore");
    let mut cnf = std::fs::read_to_string(dir.join("backup-my.cnf")).unwrap();
    cnf.push_str(&format!(
        "plugin_dir={}\nplugin_load=evil=evil.so\n",
        staging.display()
    ));
    std::fs::write(dir.join("backup-my.cnf"), cnf).unwrap();
    // Re-stream it, xtrabackup_info last as mariabackup writes it.
    let mut files: Vec<String> = walk(&dir)
        .into_iter()
        .filter(|f| f != "xtrabackup_info")
        .collect();
    files.push("xtrabackup_info".into());
    let out = Command::new("mbstream")
        .arg("-c")
        .args(&files)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    restic_store(&repo, "xtrabackup.stream", &out.stdout);
    let rs = restore_latest(&cf, "plugin", &physical_restore("plugin", &target));
    assert_eq!(phase(&rs), "Failed", "{rs:#}");
    assert!(
        error(&rs).contains("plugin_dir") && error(&rs).contains("backup-my.cnf"),
        "the error names the option: {rs:#}"
    );
    assert!(
        !pwned.exists(),
        "mariabackup --prepare loaded a library from the snapshot"
    );
    assert!(!target.exists());
}

/// Relative paths of the files under `dir`.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The task param `args` cannot point the client at another server or at this host's files:
/// `apply` refuses it, naming the field and the option, and nothing runs.
#[test]
fn args_that_redirect_the_client_are_refused_at_apply() {
    let src = MariaDb::start().unwrap();
    let cf = Coffer::new();
    let base = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
    ]
    .join("---\n");
    let leak = format!("--all-databases -r{}", cf.path("leak.sql").display());
    for (args, option) in [
        ("--all-databases --ho=127.0.0.2", "--host"),
        (leak.as_str(), "--result-file"),
    ] {
        let manifests = format!(
            "{base}---\n{}",
            backup_config("redirect", "repo", "src", args, 5)
        );
        let r = cf.apply("m.yaml", &manifests);
        assert!(!r.ok, "{args}: applied:\n{r}");
        assert!(
            r.stderr.contains("BackupConfiguration/default/redirect")
                && r.stderr.contains("spec.task.params")
                && r.stderr.contains(option),
            "{args}: the error names the resource, the field and the option:\n{r}"
        );
        let got = cf.run(&["get", "backupconfigurations", "-o", "json"]);
        assert!(
            !got.stdout.contains("redirect"),
            "nothing was applied: {got}"
        );
    }
    assert!(!cf.path("leak.sql").exists());
}
