//! A physical restore that replaces a data directory is killed at each step of the swap: the
//! directory is the complete old or the complete new one (or, between the two renames of the
//! fallback protocol, absent with the old one beside it), and the next restore puts things
//! right and says so in its log.

use std::{collections::BTreeMap, path::Path};

use coffer_testkit::{mysql::prelude::Queryable, MariaDb};

use crate::common::*;
use crate::physical::{connect, start_on};

/// What tells restored data directories apart: every file's path and size, and the LSN the
/// backup ends at (different for each snapshot).
#[derive(Debug, Clone, PartialEq)]
struct Tree {
    files: BTreeMap<String, u64>,
    checkpoints: String,
}

fn tree(dir: &Path) -> Option<Tree> {
    if !dir.exists() {
        return None;
    }
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if m.is_dir() {
                todo.push(e.path());
                files.insert(format!("{rel}/"), 0);
            } else {
                files.insert(rel, m.len());
            }
        }
    }
    let checkpoints = std::fs::read_to_string(dir.join("xtrabackup_checkpoints")).unwrap();
    Some(Tree { files, checkpoints })
}

/// Names in the target's parent that a restore made beside it.
fn leftovers(target: &Path) -> Vec<String> {
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".data."))
        .collect()
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the crash points are compiled into debug builds only"
)]
fn a_physical_restore_killed_at_each_step_of_the_swap_leaves_a_complete_data_directory() {
    let src = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO t SELECT seq, 'A' FROM seq_1_to_1000;",
    )
    .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", &[("method", "physical")], 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let snapshot = |cf: &Coffer| {
        let run = cf.ok(&["backup", "bc", "--wait"]);
        cf.last_session(&run)["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let snap_a = snapshot(&cf);
    src.exec("UPDATE app.t SET v = 'B'").unwrap();
    let snap_b = snapshot(&cf);

    let target = cf.path("restored/data");
    let mut n = 0;
    let mut restore = |snap: &str, replace: bool, env: &[(&str, &str)]| {
        n += 1;
        let yaml = format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: r{n}}}\n\
             spec:\n  task:\n    name: mariadb-restore-10.5.8\n    params:\n    - {{name: dataDir, value: {}}}\n    \
             - {{name: replaceDataDir, value: \"{replace}\"}}\n  repository: {{name: repo}}\n  target:\n    \
             ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: src}}\n    \
             rules: [{{snapshots: [\"{snap}\"]}}]\n",
            target.display()
        );
        let f = cf.file(&format!("r{n}.yaml"), &yaml);
        let mut c = cf.cmd();
        c.args(["restore", "-f", f.to_str().unwrap(), "--wait"]);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().unwrap())
    };

    // The two data directories every outcome must be one of.
    let r = restore(&snap_a, false, &[]);
    assert!(r.ok, "{r}");
    let tree_a = tree(&target).unwrap();
    let r = restore(&snap_b, true, &[]);
    assert!(r.ok, "{r}");
    let tree_b = tree(&target).unwrap();
    assert_ne!(tree_a.checkpoints, tree_b.checkpoints);
    let trees = [(&snap_a, tree_a), (&snap_b, tree_b)];
    let mut current = 1; // the target holds B

    // (protocol, step, whether the new data is in place right after the kill)
    let exchange: &[(&str, &str, Option<bool>)] = &[
        ("exchange", "staged", Some(false)),
        ("exchange", "exchanged", Some(true)),
        ("exchange", "removing", Some(true)),
        ("exchange", "cleaned", Some(true)),
        // Between the two renames there is no data directory until the next restore.
        ("two renames", "moved-aside", None),
        ("two renames", "renamed", Some(true)),
        ("two renames", "removing", Some(true)),
        ("two renames", "cleaned", Some(true)),
    ];
    for &(protocol, step, new_in_place) in exchange {
        let other = 1 - current;
        let what = format!("{protocol}, killed at `{step}`");
        let fault = format!("swap:{step}");
        let mut env = vec![("COFFER_FAULT_AT", fault.as_str())];
        if protocol == "two renames" {
            env.push(("COFFER_SWAP_NO_EXCHANGE", "1"));
        }
        let r = restore(trees[other].0, true, &env);
        assert!(!r.ok, "{what}: the restore must have been killed:\n{r}");
        assert!(
            r.stderr
                .contains(&format!("killing this process at swap step `{step}`")),
            "{what}:\n{r}"
        );
        let now = tree(&target);
        match new_in_place {
            Some(true) => assert!(now.as_ref() == Some(&trees[other].1), "{what}: {now:?}"),
            Some(false) => assert!(now.as_ref() == Some(&trees[current].1), "{what}: {now:?}"),
            None => assert!(now.is_none(), "{what}: {now:?}"),
        }
        assert!(
            !leftovers(&target).is_empty(),
            "{what}: the journal remains"
        );

        // The next restore resolves the leftovers first and says what it found; this one is
        // refused afterwards (the directory is not empty and it may not replace it).
        let r = restore(trees[other].0, false, &[]);
        assert!(!r.ok && r.stderr.contains("is not empty"), "{what}:\n{r}");
        assert!(
            r.stderr
                .contains("found the journal of an interrupted data directory swap"),
            "{what}: the log says what it found:\n{r}"
        );
        if new_in_place == Some(true) {
            current = other;
        }
        assert!(
            tree(&target).as_ref() == Some(&trees[current].1),
            "{what}: after recovery the target must be the {} data",
            if current == 0 { "A" } else { "B" }
        );
        assert_eq!(leftovers(&target), Vec::<String>::new(), "{what}");
    }

    // Killed once more mid-removal, then a full restore recovers and replaces the directory.
    let other = 1 - current;
    let r = restore(
        trees[other].0,
        true,
        &[("COFFER_FAULT_AT", "swap:removing")],
    );
    assert!(!r.ok, "{r}");
    let r = restore(trees[current].0, true, &[]);
    assert!(r.ok, "{r}");
    assert!(
        r.stderr
            .contains("the restored data had already been put in place"),
        "{r}"
    );
    assert!(tree(&target).as_ref() == Some(&trees[current].1));
    assert_eq!(leftovers(&target), Vec::<String>::new());

    // And a server starts on it with the rows of that snapshot.
    let port = coffer_testkit::free_port();
    let _server = start_on(&target, port);
    let mut c = connect(port, src.root_password());
    let v: Option<String> = c
        .query_first("SELECT GROUP_CONCAT(DISTINCT v) FROM app.t")
        .unwrap();
    assert_eq!(v.as_deref(), Some(if current == 0 { "A" } else { "B" }));
}
