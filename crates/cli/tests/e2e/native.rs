//! The native logical path: a parallel consistent dump into one snapshot of many files, and a
//! parallel load that is bit-exact (FLOAT included), with partial and renamed restores.

use coffer_testkit::{fidelity, mysql::prelude::Queryable, verify, MariaDb};

use crate::common::*;

pub(crate) fn native_restore(name: &str, ab: &str, params: &[(&str, &str)]) -> String {
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

/// The blob that holds the first bytes of `path` in the latest snapshot, and where it is:
/// (pack file, offset, length).
fn locate_blob(repo: &str, path: &str) -> (std::path::PathBuf, u64, u64) {
    let snap = restic_snapshots(repo, &[]).pop().unwrap();
    let mut id = snap["tree"].as_str().unwrap().to_string();
    for name in path.trim_start_matches('/').split('/') {
        let tree = restic(repo, &["cat", "blob", &id]);
        assert!(tree.ok, "{tree}");
        let tree: serde_json::Value = serde_json::from_str(&tree.stdout).unwrap();
        let node = tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {path}"));
        id = match node["subtree"].as_str() {
            Some(sub) => sub.to_string(),
            None => node["content"][0].as_str().unwrap().to_string(),
        };
    }
    let indexes = restic(repo, &["list", "index"]);
    for index in indexes.stdout.lines() {
        let index = restic(repo, &["cat", "index", index]);
        let index: serde_json::Value = serde_json::from_str(&index.stdout).unwrap();
        for pack in index["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                if blob["id"] == id.as_str() {
                    let p = pack["id"].as_str().unwrap();
                    return (
                        std::path::Path::new(repo)
                            .join("data")
                            .join(&p[..2])
                            .join(p),
                        blob["offset"].as_u64().unwrap(),
                        blob["length"].as_u64().unwrap(),
                    );
                }
            }
        }
    }
    panic!("blob {id} of {path} is in no index");
}

fn shadows_left(c: &mut coffer_testkit::mysql::Conn) -> Vec<String> {
    c.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '#coffer-%' ORDER BY 1")
        .unwrap()
}

#[test]
fn a_native_restore_that_fails_leaves_the_target_as_it_was() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    let tables = "CREATE DATABASE shop; USE shop; \
         CREATE TABLE items (id INT PRIMARY KEY, k INT, pad CHAR(200), KEY k (k)); \
         CREATE TABLE tags (id INT PRIMARY KEY, item INT, CONSTRAINT tag_item FOREIGN KEY (item) REFERENCES items (id));";
    src.exec(&format!(
        "{tables} INSERT INTO items SELECT seq, seq % 100, MD5(seq) FROM seq_1_to_60000; \
         INSERT INTO tags SELECT seq, seq * 3 FROM seq_1_to_100;"
    ))
    .unwrap();
    // The target holds the same tables with other rows, a table of its own that refers to one
    // of them, a trigger, a shadow left by a killed restore and a database of the user's that
    // only looks like one.
    dst.exec(&format!(
        "{tables} INSERT INTO items SELECT seq, 7, SHA1(seq) FROM seq_1_to_5000; \
         INSERT INTO tags SELECT seq, seq FROM seq_1_to_10; \
         CREATE TABLE mine (id INT PRIMARY KEY, item INT, CONSTRAINT mine_item FOREIGN KEY (item) REFERENCES items (id)); \
         INSERT INTO mine VALUES (1, 2); \
         CREATE TRIGGER items_k BEFORE INSERT ON items FOR EACH ROW SET NEW.k = NEW.k + 1; \
         CREATE DATABASE `#coffer-0123456789abcdef-0`; CREATE TABLE `#coffer-0123456789abcdef-0`.items (id INT); \
         CREATE DATABASE `#coffer-mine`; CREATE TABLE `#coffer-mine`.t (id INT);"
    ))
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
            &[("method", "native"), ("chunkMiB", "1")],
            5,
        ),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let repo = cf.path("repo").to_str().unwrap().to_string();

    // Damage one piece of the last chunk of `items` inside its pack file.
    let manifest = restic(&repo, &["dump", "latest", "/coffer/9-manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_str(&manifest.stdout).unwrap();
    let last = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|f| f["table"] == "items")
        .unwrap();
    let piece = format!("{}/00000000.tsv", last["path"].as_str().unwrap());
    let (pack, offset, length) = locate_blob(&repo, &piece);
    let intact = std::fs::read(&pack).unwrap();
    let mut damaged = intact.clone();
    let at = (offset + length / 2) as usize;
    for b in &mut damaged[at..at + 16] {
        *b ^= 0xff;
    }
    let mut perms = std::fs::metadata(&pack).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&pack, perms).unwrap();
    std::fs::write(&pack, &damaged).unwrap();

    let mut d = dst.conn().unwrap();
    let before = verify::checksums(&mut d, &["shop"]).unwrap();
    let creates = verify::show_creates(&mut d, "shop").unwrap();
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(
            "r1.yaml",
            &native_restore("broken", "dst", &[("connections", "2")]),
        )
        .to_str()
        .unwrap(),
        "--wait",
    ]);
    assert!(!r.ok, "{r}");
    let rs = cf.get_json("restoresession", "broken");
    assert_eq!(phase(&rs), "Failed", "{rs:#}");
    let after = verify::checksums(&mut d, &["shop"]).unwrap();
    if let Some(diff) = verify::diff(&before, &after) {
        panic!("a failed restore changed the target:\n{diff}");
    }
    assert_eq!(creates, verify::show_creates(&mut d, "shop").unwrap());
    assert!(
        error(&rs).contains("nothing was replaced"),
        "the error says the target is as it was: {rs:#}"
    );
    assert_eq!(
        shadows_left(&mut d),
        vec!["#coffer-mine".to_string()],
        "no shadow remains, the killed restore's neither; the user's database stays"
    );

    // Repaired, the same snapshot restores over the existing tables, bit-exact.
    std::fs::write(&pack, &intact).unwrap();

    // A restore whose connections die in the middle of the load (as when coffer is killed)
    // leaves the target as it was too; its shadow is the next restore's to drop.
    let child = cf
        .cmd()
        .args([
            "restore",
            "-f",
            cf.file(
                "r-killed.yaml",
                &native_restore("killed", "dst", &[("connections", "2")]),
            )
            .to_str()
            .unwrap(),
            "--wait",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let loading = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE '#coffer-%-0' AND TABLE_NAME = 'items'";
    while d.query_first::<u64, _>(loading).unwrap() != Some(1) {
        assert!(
            t.elapsed().as_secs() < 60,
            "the restore never started loading"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let others: Vec<u64> = d
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER = 'root'")
        .unwrap();
    for id in others {
        let _ = d.query_drop(format!("KILL CONNECTION {id}"));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let after = verify::checksums(&mut d, &["shop"]).unwrap();
    if let Some(diff) = verify::diff(&before, &after) {
        panic!("a restore killed during its load changed the target:\n{diff}");
    }
    eprintln!("left by the killed restore: {:?}", shadows_left(&mut d));
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file(
            "r2.yaml",
            &native_restore("good", "dst", &[("connections", "2")]),
        )
        .to_str()
        .unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let mut s = src.conn().unwrap();
    let want = verify::checksums(&mut s, &["shop"]).unwrap();
    let got = verify::checksums(&mut d, &["shop"]).unwrap();
    for t in ["shop.items", "shop.tags"] {
        assert!(want[t].is_some());
        assert_eq!(want[t], got[t], "{t}");
    }
    assert_eq!(
        verify::show_creates(&mut s, "shop").unwrap()["table shop.items"],
        verify::show_creates(&mut d, "shop").unwrap()["table shop.items"],
    );
    // The target's own table is left alone, and its foreign key refers to the new `items`.
    let n: Option<u64> = d.query_first("SELECT COUNT(*) FROM shop.mine").unwrap();
    assert_eq!(n, Some(1));
    let fk: Vec<(String, String)> = d
        .query("SELECT UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_NAME = 'mine_item'")
        .unwrap();
    assert_eq!(fk, vec![("shop".to_string(), "items".to_string())]);
    assert_eq!(shadows_left(&mut d), vec!["#coffer-mine".to_string()]);
}

/// Runs coffer under GNU time; returns the run and the peak resident set of coffer and the
/// session process it waits for, in bytes.
fn run_measured(cf: &Coffer, args: &[&str]) -> (Run, u64) {
    let coffer = cf.cmd();
    let out = cf.path("time.out");
    let mut c = std::process::Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o", out.to_str().unwrap()])
        .arg(coffer.get_program())
        .args(args);
    for (k, v) in coffer.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().expect("run coffer under /usr/bin/time");
    let run = Run {
        ok: o.status.success(),
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        raw: o.stdout,
    };
    let kib: u64 = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{run}"));
    (run, kib << 10)
}

#[test]
fn a_native_dump_of_rows_of_256_mib_stays_within_a_memory_bound() {
    const ROW: u64 = 256 << 20;
    let big = coffer_testkit::MariaDbOptions {
        extra_args: vec![
            "--max-allowed-packet=1G".into(),
            "--innodb-log-file-size=1G".into(),
        ],
        ..Default::default()
    };
    let src = MariaDb::start_with(big.clone()).unwrap();
    let dst = MariaDb::start_with(big).unwrap();
    // Three rows of 256 MiB, made by the server; the last one is all bytes LOAD DATA escapes.
    src.exec("CREATE DATABASE blobs; CREATE TABLE blobs.b (id INT PRIMARY KEY, v LONGBLOB) ENGINE=InnoDB; \
              INSERT INTO blobs.b VALUES (1, REPEAT(MD5(1), 8388608)); \
              INSERT INTO blobs.b VALUES (2, REPEAT(MD5(2), 8388608)); \
              INSERT INTO blobs.b VALUES (3, REPEAT(CONCAT(CHAR(9), CHAR(10), CHAR(92), CHAR(0)), 67108864));")
        .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        // A chunk per row, two read at once; and all three rows in one chunk.
        backup_config_with(
            "bc",
            "repo",
            "src",
            &[("method", "native"), ("connections", "2")],
            5,
        ),
        backup_config_with(
            "one",
            "repo",
            "src",
            &[
                ("method", "native"),
                ("connections", "2"),
                ("chunkMiB", "4096"),
            ],
            5,
        ),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let mut peaks = Vec::new();
    for bc in ["bc", "one"] {
        let t = std::time::Instant::now();
        let (run, peak) = run_measured(&cf, &["backup", bc, "--wait"]);
        assert!(run.ok, "{run}");
        eprintln!(
            "native dump `{bc}` of 3 rows of 256 MiB over 2 connections: {:?}, peak RSS {} MiB",
            t.elapsed(),
            peak >> 20
        );
        peaks.push(peak);
    }
    let repo = cf.path("repo").to_str().unwrap().to_string();
    let manifest = restic(&repo, &["dump", "latest", "/coffer/9-manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_str(&manifest.stdout).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1, "one chunk");
    // The `mysql` crate holds a whole row per connection, and while it parses one, the packet
    // it came in too; everything else stays in pieces. Before pieces were bounded in bytes,
    // these dumps peaked at 1388 and 1354 MiB (each row escaped whole, and whole rows waiting
    // as pieces).
    let mib = |b: u64| b >> 20;
    assert!(
        peaks[0] <= 2 * 2 * ROW + (200 << 20),
        "peak RSS {} MiB for a row of {} MiB on each of 2 connections",
        mib(peaks[0]),
        mib(ROW)
    );
    assert!(
        peaks[1] <= 3 * ROW + (200 << 20),
        "peak RSS {} MiB for rows of {} MiB on one connection",
        mib(peaks[1]),
        mib(ROW)
    );
    let t = std::time::Instant::now();
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r.yaml", &native_restore("blobs", "dst", &[]))
            .to_str()
            .unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    eprintln!("its restore: {:?}", t.elapsed());
    let want = verify::checksums(&mut src.conn().unwrap(), &["blobs"]).unwrap();
    let got = verify::checksums(&mut dst.conn().unwrap(), &["blobs"]).unwrap();
    assert!(want["blobs.b"].is_some());
    assert_eq!(want, got);
}

/// Restores a snapshot made up in the test, with no data files, straight through the loader.
fn load_crafted(
    dst: &MariaDb,
    databases: Vec<coffer_db::native::schema::Database>,
) -> Result<(), coffer_db::DbError> {
    use coffer_db::native::{self, schema::Schema, LoadOptions, Manifest};
    let spec = coffer_db::ConnSpec {
        host: dst.host().to_string(),
        port: dst.port(),
        user: "root".into(),
        password: dst.root_password().to_string(),
        tls: None,
        label: "the crafted test".into(),
    };
    let files = coffer_db::ClientFiles::new(&spec, coffer_db::ClientFlavor::MariaDb)?;
    let schema = Schema {
        format: 1,
        databases,
        ..Default::default()
    };
    let manifest = Manifest {
        format: 2,
        ..Default::default()
    };
    let fetch: native::load::Fetch =
        std::sync::Arc::new(|_: &str, _: &mut dyn std::io::Write| Ok(0));
    let opts = LoadOptions {
        connections: 1,
        ..Default::default()
    };
    native::load(&spec, &files, &schema, &manifest, fetch, &opts).map(|_| ())
}

#[test]
fn charset_names_of_a_crafted_snapshot_do_not_become_sql() {
    use coffer_db::native::schema::{Database, Definition};
    let dst = MariaDb::start().unwrap();
    let db = |name: &str, charset: &str, views: Vec<Definition>| Database {
        name: name.into(),
        charset: charset.into(),
        collation: "utf8mb4_general_ci".into(),
        views,
        ..Default::default()
    };
    let view = |client: &str, collation: &str| Definition {
        kind: "view".into(),
        name: "v".into(),
        create: "CREATE VIEW v AS SELECT 1 AS a".into(),
        character_set_client: Some(client.into()),
        collation_connection: Some(collation.into()),
        ..Default::default()
    };
    let databases = |dst: &MariaDb| -> Vec<String> {
        dst.query_strings("SHOW DATABASES")
            .unwrap()
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()
    };

    // A character set name that carries statements of its own.
    let e = load_crafted(
        &dst,
        vec![db(
            "crafted",
            "utf8mb4 COLLATE utf8mb4_bin; CREATE DATABASE pwned1; --",
            vec![],
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the database `crafted` in the snapshot names the character set"),
        "{e}"
    );
    let e = load_crafted(
        &dst,
        vec![db(
            "crafted",
            "utf8mb4",
            vec![view("latin1; CREATE DATABASE pwned2", "latin1_swedish_ci")],
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the view `crafted`.`v` in the snapshot names the character set"),
        "{e}"
    );

    // A database name that is quoted safely only under the character set it was quoted for:
    // under GBK the last byte of `中` swallows the doubled backtick.
    let name = "中`; CREATE DATABASE pwned3; -- x";
    load_crafted(
        &dst,
        vec![db(name, "utf8mb4", vec![view("gbk", "gbk_chinese_ci")])],
    )
    .unwrap();
    let all = databases(&dst);
    assert!(all.iter().all(|d| !d.starts_with("pwned")), "{all:?}");
    assert!(all.iter().any(|d| d == name), "{all:?}");
    let v: Vec<Vec<Option<String>>> = dst
        .query_strings(&format!(
            "SELECT CHARACTER_SET_CLIENT FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{}'",
            name.replace('\'', "''")
        ))
        .unwrap();
    assert_eq!(v, vec![vec![Some("gbk".to_string())]]);
}

/// The native dump: the position of its consistent snapshot.
#[test]
fn a_native_backup_records_its_app_gtid_state_and_binlog_position() {
    a_backup_records_the_position_it_is_consistent_at(&[("method", "native")]);
}
