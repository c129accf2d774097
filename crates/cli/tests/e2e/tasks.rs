//! User-defined Tasks and Functions run as steps with Stash's `${VAR:=default}` substitution.

use coffer_testkit::MariaDb;

use crate::common::*;

#[test]
fn a_user_function_runs_as_a_step_with_substituted_variables() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .unwrap();
    let cf = Coffer::new();
    let stamp = cf.path("stamp.txt");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: Function\nmetadata: {{name: stamp}}\n\
             spec:\n  image: example/stamp\n  command: [/bin/sh, -c]\n  \
             args: [\"echo ${{TARGET_NAME}}:${{REPOSITORY_NAME}}:${{note:=none}}:${{missing:=dflt}}:${{HOSTNAME}} > {}\"]\n",
            stamp.display()
        ),
        "apiVersion: stash.appscode.com/v1beta1\nkind: Function\nmetadata: {name: fail}\n\
         spec:\n  command: [/bin/sh, -c, 'echo step broke >&2; exit 3']\n"
            .to_string(),
        "apiVersion: stash.appscode.com/v1beta1\nkind: Task\nmetadata: {name: custom-backup}\n\
         spec:\n  steps:\n  - name: stamp\n    params: [{name: note, value: hello}]\n  \
         - name: mysql-backup-8.0.21\n  - name: update-status\n"
            .to_string(),
        "apiVersion: stash.appscode.com/v1beta1\nkind: Task\nmetadata: {name: failing-backup}\n\
         spec:\n  steps:\n  - name: fail\n  - name: mysql-backup-8.0.21\n"
            .to_string(),
        backup_config("bc", "repo", "src", "--databases app", 3)
            .replace("mariadb-backup-10.5.8", "custom-backup"),
        backup_config("bc-fail", "repo", "src", "--databases app", 3)
            .replace("mariadb-backup-10.5.8", "failing-backup"),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(
        std::fs::read_to_string(&stamp).unwrap().trim(),
        "src:repo:hello:dflt:host-0"
    );
    let bs = cf.last_session(&run);
    assert!(bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"].is_string());

    let run = cf.run(&["backup", "bc-fail", "--wait"]);
    assert_eq!(run.code, Some(1), "{run}");
    let reason = error(&cf.last_session(&run)).to_string();
    assert!(
        reason.contains("Function fail")
            && reason.contains("status 3")
            && reason.contains("step broke"),
        "{reason}"
    );
    // The failing first step stopped the task: only bc's snapshot exists.
    assert_eq!(
        restic_snapshots(cf.path("repo").to_str().unwrap(), &[]).len(),
        1
    );
}

#[test]
fn get_describe_and_delete_show_what_happened() {
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
         metadata: {name: orphan, namespace: team-a}\nspec:\n  repository: {name: repo}\n  \
         target: {ref: {kind: AppBinding, name: nowhere}}\n  retentionPolicy: {name: k, keepLast: 1, prune: false}\n"
            .to_string(),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let again = cf.apply("m.yaml", &manifests);
    assert!(
        again.stdout.contains("secret/repo-secret unchanged"),
        "{again}"
    );

    let run = cf.run(&["-n", "team-a", "backup", "orphan", "--wait"]);
    assert_eq!(run.code, Some(1), "{run}");
    let table = cf.ok(&["get", "backupsessions", "-n", "team-a"]).stdout;
    let header = table.lines().next().unwrap();
    for col in [
        "NAME",
        "INVOKER-TYPE",
        "INVOKER-NAME",
        "PHASE",
        "DURATION",
        "AGE",
    ] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.lines().nth(1).unwrap().contains("Failed"), "{table}");
    let name = table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let d = cf.ok(&["describe", "bs", &name, "-n", "team-a"]).stdout;
    assert!(d.contains("Phase:      Failed"), "{d}");
    assert!(d.contains("Repository team-a/repo not found"), "{d}");
    let all = cf.ok(&["get", "bc", "-A"]).stdout;
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("team-a"));
    let y = cf
        .ok(&["get", "secret", "repo-secret", "-o", "yaml"])
        .stdout;
    assert!(y.contains("redacted") && !y.contains(REPO_PASSWORD), "{y}");
    cf.ok(&["delete", "secret", "repo-secret"]);
    let r = cf.run(&["get", "secret", "repo-secret"]);
    assert!(
        !r.ok && r.stderr.contains("Secret default/repo-secret not found"),
        "{r}"
    );
}

#[test]
fn every_example_manifest_applies() {
    let cf = Coffer::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "{dirs:?}");
    for d in dirs {
        let r = cf.run(&["apply", "-f", d.to_str().unwrap()]);
        assert!(r.ok, "{}: {r}", d.display());
        assert!(r.stdout.contains("created"), "{r}");
    }
    let r = cf.run(&[
        "-n",
        "demo",
        "get",
        "backupconfiguration",
        "shop-backup",
        "-o",
        "json",
    ]);
    assert!(r.ok, "{r}");
    let bc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(bc["spec"]["retentionPolicy"]["keepDaily"], 7);
    assert!(cf.run(&["get", "task", "announced-mariadb-backup"]).ok);
}

/// Without a server, `coffer backup --wait` keeps backupHistoryLimit as the server does: the
/// newest finished session stays and the older ones go (they piled up before).
#[test]
fn backup_wait_without_a_server_trims_the_history() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config("bc", "repo", "src", "--databases app", 3) + "  backupHistoryLimit: 1\n",
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let mut last = String::new();
    for _ in 0..3 {
        let run = cf.ok(&["backup", "bc", "--wait"]);
        last = cf.last_session(&run)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        // Session names carry the second they were made in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let r = cf.ok(&["get", "backupsessions", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![last.as_str()], "backupHistoryLimit 1 keeps one");
    let logs = std::fs::read_dir(cf.home.path().join("logs/backupsession/default"))
        .unwrap()
        .count();
    assert_eq!(logs, 1, "the trimmed sessions' logs stay");
}
