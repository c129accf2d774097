//! The native logical path: a parallel consistent dump into one snapshot of many files, and a
//! parallel load that is bit-exact (FLOAT included), with partial and renamed restores.

use coffer_testkit::{fidelity, mysql::prelude::Queryable, verify, MariaDb};

use crate::common::*;

fn native_restore(name: &str, ab: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("    - {{name: {k}, value: \"{v}\"}}\n"))
        .collect();
    format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
         spec:\n  task:\n    name: mariadb-restore-10.5.8\n    params:\n    - {{name: method, value: native}}\n{}  \
         repository: {{name: repo}}\n  target:\n    ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: {ab}}}\n",
        params.concat()
    )
}

#[test]
fn native_dump_and_load_are_bit_exact_and_restore_parts() {
    let src = MariaDb::start_with(coffer_testkit::MariaDbOptions {
        extra_args: vec!["--log-bin=binlog".into(), "--server-id=1".into()],
        ..Default::default()
    })
    .unwrap();
    let dst = MariaDb::start().unwrap();
    {
        let mut c = src.conn().unwrap();
        fidelity::load(&mut c, "fidelity").unwrap();
        fidelity::create_accounts(&mut c, "fidelity", "fid-pass").unwrap();
    }
    src.exec("CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, k INT, pad CHAR(120), KEY k (k)); INSERT INTO t SELECT seq, seq % 1000, MD5(seq) FROM seq_1_to_60000; \
         CREATE TABLE c (tenant INT, name VARCHAR(40), v CHAR(100), PRIMARY KEY (tenant, name)); \
         INSERT INTO c SELECT seq % 50, CONCAT('n', seq), MD5(seq) FROM seq_1_to_30000; ANALYZE TABLE c; \
         CREATE TABLE s (name VARCHAR(20) PRIMARY KEY, pad CHAR(200)); \
         INSERT INTO s SELECT CONCAT('k', seq), REPEAT(MD5(seq), 6) FROM seq_1_to_300000;")
        .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        backup_config_with(
            "bc",
            "repo",
            "src",
            &[
                ("method", "native"),
                ("connections", "2"),
                ("chunkMiB", "1"),
                ("users", "true"),
            ],
            5,
        ),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let repo_s = cf.path("repo").to_str().unwrap().to_string();
    let snaps = restic_snapshots(&repo_s, &[]);
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!(["/coffer"]),
        "one path, so retention groups it"
    );
    let tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.iter().any(|t| t.starts_with("binlog=binlog.")),
        "{tags:?}"
    );
    let manifest = restic(&repo_s, &["dump", "latest", "/coffer/9-manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_str(&manifest.stdout).unwrap();
    assert_eq!(
        manifest["format"], 3,
        "chunks are directories of pieces; sequences, history, roles"
    );
    let chunks = manifest["files"].as_array().unwrap();
    let big_chunks: Vec<&serde_json::Value> = chunks.iter().filter(|f| f["table"] == "t").collect();
    assert!(
        big_chunks.len() > 1,
        "the big table is split into chunks: {}",
        big_chunks.len()
    );
    // A table without an integer key is one chunk; its many pieces load in several
    // statements of a bounded size, with one checksum across them.
    let unsplit: Vec<&serde_json::Value> = chunks.iter().filter(|f| f["table"] == "s").collect();
    assert_eq!(unsplit.len(), 1);
    assert!(
        unsplit[0]["pieces"].as_u64().unwrap() > 64,
        "{}",
        unsplit[0]
    );
    let composite = chunks.iter().filter(|f| f["table"] == "c").count();
    assert!(
        composite > 1,
        "a composite key with an integer first column is split too: {composite}"
    );
    // Every chunk is its pieces: files no larger than the repository's minimum chunk size
    // (1 MiB), stored whole without content-defined chunking, adding up to the chunk.
    let ls = restic(&repo_s, &["ls", "--json", "latest"]);
    let sizes = coffer_testkit::restic::ls_file_sizes(&ls.stdout);
    let mut several = false;
    for c in chunks {
        let dir = c["path"].as_str().unwrap();
        let pieces = c["pieces"].as_u64().unwrap();
        several |= pieces > 1;
        let mine: Vec<u64> = sizes
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{dir}/")))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(mine.len() as u64, pieces, "{dir}: {mine:?}");
        assert_eq!(
            mine.iter().sum::<u64>(),
            c["bytes"].as_u64().unwrap(),
            "{dir}"
        );
        // A row longer than that (the fidelity schema has a 1 MB blob) is a piece of its own.
        if c["table"] == "t" {
            assert!(mine.iter().all(|s| *s <= 1 << 20), "{dir}: {mine:?}");
        }
    }
    assert!(
        several,
        "a 1 MiB chunk of the big table makes several pieces"
    );
    assert_restic_check(&repo_s, &[]);
    assert_restic_restores(&repo_s, "/coffer/9-manifest.json", &[]);
    let first_piece = format!("{}/00000000.tsv", big_chunks[0]["path"].as_str().unwrap());
    assert_restic_restores(&repo_s, &first_piece, &[]);

    // Full restore: every table bit-exact (FLOAT and DOUBLE included), every definition equal.
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(
            "r1.yaml",
            &native_restore("full", "dst", &[("users", "true")]),
        )
        .to_str()
        .unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let rs = cf.get_json("restoresession", "full");
    assert!(
        rs["status"]["stats"][0]["position"]
            .as_str()
            .unwrap_or("")
            .contains("binlog"),
        "{rs:#}"
    );
    let mut s = src.conn().unwrap();
    let mut d = dst.conn().unwrap();
    assert_fidelity_restored(&mut s, &mut d);
    assert_eq!(
        verify::checksums(&mut s, &["big"]).unwrap(),
        verify::checksums(&mut d, &["big"]).unwrap()
    );
    // Users come back with their roles, and the default role is active at login.
    let mut app = dst.conn_as("fidelity_app", "fid-pass").unwrap();
    let role: Option<String> = app.query_first("SELECT CURRENT_ROLE()").unwrap();
    assert_eq!(role.as_deref(), Some("fidelity_writer"));
    let n: Option<u64> = app
        .query_first("SELECT COUNT(*) FROM fidelity.modern_types")
        .unwrap();
    assert_eq!(n, Some(5), "the role's grants are live");

    // Restoring again over what is there (roles, sequences, users already exist) gives the
    // same result: every step replaces.
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(
            "r1b.yaml",
            &native_restore("full-again", "dst", &[("users", "true")]),
        )
        .to_str()
        .unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let mut d = dst.conn().unwrap();
    assert_fidelity_restored(&mut s, &mut d);

    // One table out of the full snapshot, into a renamed database.
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(
            "r2.yaml",
            &native_restore(
                "one-table",
                "dst",
                &[("tables", "big.t"), ("rename", "big:big_copy")],
            ),
        )
        .to_str()
        .unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let n: Option<u64> = d.query_first("SELECT COUNT(*) FROM big_copy.t").unwrap();
    assert_eq!(n, Some(60000));
    let tables: Vec<String> = d.query("SHOW TABLES FROM big_copy").unwrap();
    assert_eq!(tables, vec!["t".to_string()]);
    let want = verify::checksums(&mut s, &["big"]).unwrap();
    let got = verify::checksums(&mut d, &["big_copy"]).unwrap();
    assert_eq!(want["big.t"], got["big_copy.t"]);
    assert!(got["big_copy.t"].is_some());
}

/// Everything the fidelity schema holds is the same on `d` as on `s`: every table bit-exact
/// (CHECKSUM TABLE covers system-versioned history and FLOAT bits), every definition, every
/// sequence's state and next value, every account, role and grant.
pub(crate) fn assert_fidelity_restored(
    s: &mut coffer_testkit::mysql::Conn,
    d: &mut coffer_testkit::mysql::Conn,
) {
    let dbs = fidelity::databases("fidelity");
    let dbs: Vec<&str> = dbs.iter().map(String::as_str).collect();
    let want = verify::checksums(s, &dbs).unwrap();
    let got = verify::checksums(d, &dbs).unwrap();
    if let Some(diff) = verify::diff(&want, &got) {
        panic!("checksums differ after a native restore:\n{diff}");
    }
    for db in &dbs {
        let (ws, gs) = (
            verify::show_creates(s, db).unwrap(),
            verify::show_creates(d, db).unwrap(),
        );
        if let Some(diff) = verify::diff(&ws, &gs) {
            panic!("{db}: definitions differ after a native restore:\n{diff}");
        }
        let (ws, gs) = (
            verify::sequences(s, db).unwrap(),
            verify::sequences(d, db).unwrap(),
        );
        if let Some(diff) = verify::diff(&ws, &gs) {
            panic!("{db}: sequences differ after a native restore:\n{diff}");
        }
    }
    assert_fidelity_extras(s, d);
    let (wa, ga) = (verify::accounts(s).unwrap(), verify::accounts(d).unwrap());
    for (user, host) in fidelity::ACCOUNTS {
        let key = if host.is_empty() {
            user.to_string()
        } else {
            format!("{user}@{host}")
        };
        assert!(wa.contains_key(&key), "{key}: {wa:?}");
    }
    assert!(
        wa["PUBLIC"].iter().any(|g| g.contains("enums_sets")),
        "{wa:?}"
    );
    if let Some(diff) = verify::diff(&wa, &ga) {
        panic!("accounts, roles or grants differ after a native restore:\n{diff}");
    }
}

/// What checksums alone would not show: values that must not be NULL, history rows that
/// must be there, and the next value of a sequence without a cache.
pub(crate) fn assert_fidelity_extras(
    s: &mut coffer_testkit::mysql::Conn,
    d: &mut coffer_testkit::mysql::Conn,
) {
    for (sql, want) in [
        ("SELECT COUNT(u) FROM fidelity.modern_types", "4"),
        ("SELECT COUNT(i6) FROM fidelity.modern_types", "4"),
        (
            "SELECT COUNT(*) FROM fidelity.versioned FOR SYSTEM_TIME ALL",
            "6",
        ),
        (
            "SELECT COUNT(*) FROM fidelity.versioned_period FOR SYSTEM_TIME ALL",
            "4",
        ),
        (
            "SELECT COUNT(*) FROM fidelity.spatial WHERE g IS NOT NULL",
            "3",
        ),
        // CHECKSUM TABLE gives NULL for a MERGE table: its rows are counted instead.
        (
            "SELECT GROUP_CONCAT(id ORDER BY id) FROM fidelity.merged",
            "1,2,3",
        ),
    ] {
        for (side, c) in [("source", &mut *s), ("restored", &mut *d)] {
            let got: Option<String> = c.query_first(sql).unwrap();
            assert_eq!(got.as_deref(), Some(want), "{side}: {sql}");
        }
    }
    // Without a cache the source's next value is its next_not_cached_value (read, so that the
    // source is not moved on); the restored sequence hands out exactly that.
    let want: Option<i64> = s
        .query_first("SELECT next_not_cached_value FROM fidelity.seq_nocache")
        .unwrap();
    let got: Option<i64> = d
        .query_first("SELECT NEXTVAL(fidelity.seq_nocache)")
        .unwrap();
    assert_eq!(
        got, want,
        "NEXTVAL after restore continues where the source stood"
    );
    assert_eq!(want, Some(4), "three rows of seq_user took 1, 2, 3");
}

#[test]
fn a_native_dump_that_fails_leaves_no_snapshot() {
    let mut src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, pad CHAR(200)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_400000;")
        .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with(
            "bc",
            "repo",
            "src",
            &[("method", "native"), ("chunkMiB", "1")],
            5,
        ),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);

    // A param that does not parse is refused at apply and named, instead of a default.
    let typo = cf.apply(
        "typo.yaml",
        &backup_config_with(
            "typo",
            "repo",
            "src",
            &[("method", "native"), ("chunkMiB", "1MiB")],
            5,
        ),
    );
    assert!(!typo.ok, "{typo}");
    assert!(
        typo.stderr.contains(
            "BackupConfiguration/default/typo: spec.task.params.chunkMiB: `1MiB` is not a \
             whole number from 1 to 4096"
        ),
        "{typo}"
    );
    let child = cf
        .cmd()
        .args(["backup", "bc", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let locks = cf.path("repo").join("locks");
    let t = std::time::Instant::now();
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(t.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    src.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo_s = cf.path("repo").to_str().unwrap().to_string();
    assert_eq!(
        restic_snapshots(&repo_s, &[]).len(),
        0,
        "no snapshot from a failed dump"
    );
    assert_restic_check(&repo_s, &[]);
}
