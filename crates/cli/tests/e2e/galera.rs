//! Galera clusters: a full physical backup through garbd and an SST that coffer receives
//! itself, restored into two replicas that start as a new cluster with the source's data; and
//! every way the transfer can fail.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use coffer_testkit::{
    galera::{self, GaleraCluster, GaleraOptions},
    mysql::prelude::Queryable,
    verify,
};

use crate::common::*;

pub(crate) fn cluster_appbinding(
    name: &str,
    c: &GaleraCluster,
    node: usize,
    group: &str,
) -> String {
    format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: {name}}}\n\
         spec:\n  type: kubedb.com/mariadb\n  clientConfig: {{url: \"mysql://127.0.0.1:{}/\"}}\n  \
         secret: {{name: cluster-auth}}\n  parameters:\n    apiVersion: config.kubedb.com/v1alpha2\n    \
         kind: GaleraArbitratorConfiguration\n    address: \"{}\"\n    group: {group}\n    sstMethod: mariabackup\n",
        c.node(node).port(),
        c.address()
    )
}

fn setup(c: &GaleraCluster, extra: &[String]) -> Coffer {
    let cf = Coffer::new();
    let mut m = vec![
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        secret(
            "cluster-auth",
            &[("username", "root"), ("password", c.root_password())],
        ),
        cluster_appbinding("cluster", c, 0, c.group()),
    ];
    m.extend(extra.iter().cloned());
    let r = cf.apply("m.yaml", &m.join("---\n"));
    assert!(r.ok, "{r}");
    cf
}

fn bc(name: &str, ab: &str, params: &[(&str, &str)]) -> String {
    backup_config_with(name, "repo", ab, params, 10)
        .replace("mariadb-backup-10.5.8", "perconaxtradb-backup-5.7")
        .replace("  schedule: \"0 3 * * *\"\n", "")
}

/// garbd processes started for this test's coffer (their work directory is under its TMPDIR).
fn garbd_count(cf: &Coffer) -> usize {
    let mine = cf.path("tmp").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let comm = std::fs::read(p.join("comm")).ok()?;
            let cmd = std::fs::read(p.join("cmdline")).ok()?;
            (comm.starts_with(b"garbd") && String::from_utf8_lossy(&cmd).contains(&mine))
                .then_some(())
        })
        .count()
}

/// Two 3-node clusters at once are too much for a 2-core machine: one Galera test at a time.
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn galera_sst_backup_under_writes_restores_into_a_new_cluster() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = GaleraCluster::start(GaleraOptions::default()).unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE shop; USE shop;
             CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), note TEXT);
             INSERT INTO items SELECT seq, CONCAT('item-', seq), seq * 1.5, REPEAT('x', seq % 100) FROM seq_1_to_20000;
             CREATE TABLE probe_rows (id BIGINT PRIMARY KEY AUTO_INCREMENT, v INT);
             CREATE TABLE probe_counter (id INT PRIMARY KEY, n BIGINT); INSERT INTO probe_counter VALUES (1, 0);",
        )
        .unwrap();
    let cf = setup(
        &c,
        &[bc("cluster-backup", "cluster", &[("sstTimeout", "120s")])],
    );

    // A writer on node 0 during the whole backup: each transaction inserts a row and bumps
    // the counter, so any consistent cut has counter == rows.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut conn = c.node(0).conn().unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                conn.query_drop("START TRANSACTION").unwrap();
                conn.query_drop("INSERT INTO shop.probe_rows (v) VALUES (1)")
                    .unwrap();
                conn.query_drop("UPDATE shop.probe_counter SET n = n + 1 WHERE id = 1")
                    .unwrap();
                conn.query_drop("COMMIT").unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let run = cf.run(&["backup", "cluster-backup", "--wait"]);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(run.ok, "{run}");
    assert!(
        written > 10,
        "the writer ran during the backup ({written} transactions)"
    );
    assert_eq!(garbd_count(&cf), 0, "no garbd left behind");
    let bs = cf.last_session(&run);
    let host = &bs["status"]["targets"][0]["stats"][0];
    assert_eq!(
        host["donor"],
        c.node(1).name(),
        "default donor: a Synced node that is not the first\n{run}"
    );
    assert!(
        host["donorDesyncedSeconds"].as_f64().unwrap() > 0.5,
        "{host}"
    );
    let snaps = restic_snapshots(cf.path("repo").to_str().unwrap(), &[]);
    let mut paths: Vec<&str> = snaps[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["/galera-position.xbstream", "/xtrabackup.stream"]
    );

    // Restore two replicas; start replica 0 as a new cluster and join a fresh node to it.
    let root = cf.path("restore");
    let rs = format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: cluster-restore}}\n\
         spec:\n  task:\n    name: perconaxtradb-restore-5.7\n    params:\n    - {{name: dataDir, value: \"{}/data-${{POD_ORDINAL}}\"}}\n  \
         repository: {{name: repo}}\n  target:\n    replicas: 2\n    \
         ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: cluster}}\n",
        root.display()
    );
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let rs = cf.get_json("restoresession", "cluster-restore");
    assert_eq!(rs["status"]["stats"].as_array().unwrap().len(), 2, "{rs:#}");
    for i in 0..2 {
        assert!(root.join(format!("data-{i}/ibdata1")).exists());
        assert!(
            !root.join(format!("data-{i}/grastate.dat")).exists(),
            "a new history by default"
        );
    }

    // keepClusterUUID: the restored node continues the old history, safe to bootstrap.
    let kept = cf.path("kept");
    let rs_keep = format!(
        "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: keep-uuid}}\n\
         spec:\n  task:\n    name: perconaxtradb-restore-5.7\n    params:\n    - {{name: dataDir, value: \"{}\"}}\n    \
         - {{name: keepClusterUUID, value: \"true\"}}\n  repository: {{name: repo}}\n  target:\n    \
         ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: cluster}}\n",
        kept.display()
    );
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("keep.yaml", &rs_keep).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let grastate = std::fs::read_to_string(kept.join("grastate.dat")).unwrap();
    let uuid: Option<String> = c
        .node(0)
        .conn()
        .unwrap()
        .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_CLUSTER_STATE_UUID'")
        .unwrap();
    assert!(grastate.contains(&uuid.unwrap()), "{grastate}");
    assert!(grastate.contains("safe_to_bootstrap: 1"), "{grastate}");

    // Without coffer: restic dump of the stream, mbstream -x, mariabackup --prepare.
    let manual = cf.path("manual");
    std::fs::create_dir_all(&manual).unwrap();
    let sh = format!(
        "RESTIC_PASSWORD='{REPO_PASSWORD}' restic -r {} --no-cache --no-lock dump latest /xtrabackup.stream | mbstream -x -C {} \
         && mariabackup --prepare --target-dir={}",
        cf.path("repo").display(),
        manual.display(),
        manual.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &sh])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(manual.join("xtrabackup_galera_info").exists());

    let mut restored = galera::start_restored(
        &root.join("data-0"),
        "restored_cluster",
        c.root_password(),
        c.sst_user(),
        c.sst_password(),
    )
    .expect("the restored data directory starts as a new cluster");
    if let Err(e) = restored.join_empty_node() {
        panic!(
            "a second node joins the restored one by SST: {e:#}\n--- restored node 0 (donor) ---\n{}",
            restored.node(0).log_tail()
        );
    }
    let mut src = c.node(0).conn().unwrap();
    let want = verify::checksums(&mut src, &["shop"]).unwrap();
    for i in 0..2 {
        let mut d = restored.node(i).conn().unwrap();
        let got = verify::checksums(&mut d, &["shop"]).unwrap();
        assert_eq!(
            want.get("shop.items"),
            got.get("shop.items"),
            "node {i}: static table identical"
        );
        let rows: Option<u64> = d
            .query_first("SELECT COUNT(*) FROM shop.probe_rows")
            .unwrap();
        let counter: Option<u64> = d.query_first("SELECT n FROM shop.probe_counter").unwrap();
        assert_eq!(rows, counter, "node {i}: a transactionally consistent cut");
        assert!(rows.unwrap() <= written);
    }
}

#[test]
fn galera_failures_leave_no_snapshot_and_no_garbd() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = GaleraCluster::start(GaleraOptions::default()).unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);",
        )
        .unwrap();
    let extra = vec![
        cluster_appbinding("wrong-group", &c, 0, "not_the_cluster"),
        bc("bc-wrong-group", "wrong-group", &[]),
        bc(
            "bc-no-donor",
            "cluster",
            &[("donor", "node9"), ("sstTimeout", "60s")],
        ),
        bc(
            "bc-bad-auth",
            "cluster",
            &[("donor", c.node(2).name()), ("sstTimeout", "60s")],
        ),
        bc(
            "bc-killed",
            "cluster",
            &[("donor", c.node(1).name()), ("sstTimeout", "60s")],
        ),
    ];
    let cf = setup(&c, &extra);
    let repo = cf.path("repo");
    let check = |bc: &str, needles: &[&str]| {
        let run = cf.run(&["backup", bc, "--wait"]);
        assert_eq!(run.code, Some(1), "{bc}: {run}");
        let bs = cf.last_session(&run);
        assert_eq!(phase(&bs), "Failed");
        for n in needles {
            assert!(
                error(&bs).contains(n),
                "{bc}: {:?} lacks {n:?}\n--- donor logs ---\n{}\n{}\n{}",
                error(&bs),
                c.node(0).log_tail(),
                c.node(1).log_tail(),
                c.node(2).log_tail()
            );
        }
        assert_eq!(garbd_count(&cf), 0, "{bc}: garbd left behind");
    };
    check(
        "bc-wrong-group",
        &[
            "AppBinding default/wrong-group",
            "`not_the_cluster`",
            "wsrep_cluster_name",
        ],
    );
    check("bc-no-donor", &["garbd", "node9"]);
    // Each request desyncs and resyncs members; start every case from a Synced cluster.
    c.wait_synced(Duration::from_secs(60)).unwrap();
    c.set_sst_auth(2, &format!("{}:wrong-password", c.sst_user()))
        .unwrap();
    check("bc-bad-auth", &["empty data stream", "wsrep_sst_auth"]);
    c.set_sst_auth(2, &format!("{}:{}", c.sst_user(), c.sst_password()))
        .unwrap();
    c.wait_synced(Duration::from_secs(60)).unwrap();
    if repo.join("config").exists() {
        assert_eq!(restic_snapshots(repo.to_str().unwrap(), &[]).len(), 0);
    }

    // coffer killed in the middle of the backup: the donor goes back to Synced by itself.
    let mut child = cf
        .cmd()
        .args(["backup", "bc-killed", "--wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while c.node(1).state().unwrap() == "Synced" {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the donor never started the transfer"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Mid-backup: the position stage is in, the donor is desynced and about to stream.
    std::thread::sleep(Duration::from_secs(4));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let t = Instant::now();
    while c.node(1).state().unwrap() != "Synced" {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the donor stayed {}",
            c.node(1).state().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(garbd_count(&cf), 0, "garbd died with coffer");
    if repo.join("config").exists() {
        assert_eq!(
            restic_snapshots(repo.to_str().unwrap(), &[]).len(),
            0,
            "no snapshot from a killed run"
        );
    }
}

/// A chunk of the xbstream format (enough for the stream checks coffer makes).
fn xb_chunk(kind: u8, path: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"XBSTCK01".to_vec();
    v.push(0);
    v.push(kind);
    v.extend_from_slice(&(path.len() as u32).to_le_bytes());
    v.extend_from_slice(path.as_bytes());
    if kind == b'P' {
        v.extend_from_slice(&(data.len() as u64).to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(data);
    }
    v
}

/// The donor's side of an SST played by a stand-in for garbd: it connects to coffer's
/// listener twice and sends the files it is given, so a cut-short stream and a coffer killed
/// in the middle of the stream can be tested exactly.
#[test]
fn a_cut_short_or_interrupted_sst_stream_leaves_no_snapshot() {
    let db = coffer_testkit::MariaDb::start().unwrap();
    let cf = Coffer::new();
    let stage1 = [
        xb_chunk(
            b'P',
            "xtrabackup_galera_info",
            b"6d5f1a2b-0000-0000-0000-000000000001:42 0\n",
        ),
        xb_chunk(b'E', "xtrabackup_galera_info", b""),
    ]
    .concat();
    let mut body = Vec::new();
    for i in 0..2000u32 {
        body.extend(xb_chunk(b'P', "ibdata1", &vec![(i % 251) as u8; 4096]));
    }
    let full = [
        body.clone(),
        xb_chunk(b'P', "xtrabackup_info", b"backup_type = full-backuped\n"),
        xb_chunk(b'E', "xtrabackup_info", b""),
    ]
    .concat();
    let cut = body[..body.len() / 2].to_vec();
    std::fs::write(cf.path("stage1"), &stage1).unwrap();
    std::fs::write(cf.path("full"), &full).unwrap();
    std::fs::write(cf.path("cut"), &cut).unwrap();
    let fake = cf.file(
        "fake-garbd",
        "#!/bin/bash\nfor a in \"$@\"; do [ \"$prev\" = --sst ] && sst=$a; prev=$a; done\n\
         hp=${sst#*:}; hp=${hp%%/*}; host=${hp%:*}; port=${hp##*:}\nsleep 0.3\n\
         exec 3<>/dev/tcp/$host/$port; cat \"$STAGE1\" >&3; exec 3>&-\nsleep 0.5\n\
         exec 3<>/dev/tcp/$host/$port; cat \"$STAGE2\" >&3; sleep \"${HOLD:-0}\"; exec 3>&-\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A standalone server answers wsrep_cluster_name with its default name.
    let ab = format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: fake-cluster}}\n\
         spec:\n  clientConfig: {{url: \"mysql://127.0.0.1:{}/\"}}\n  secret: {{name: db-auth}}\n  \
         parameters: {{address: \"gcomm://127.0.0.1:1\", group: my_wsrep_cluster, sstMethod: mariabackup}}\n",
        db.port()
    );
    let m = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("db-auth", &db),
        ab,
        bc("sst", "fake-cluster", &[("sstTimeout", "20s")]),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &m).ok);
    let run_with = |stage2: &str, hold: &str| {
        let mut c = cf.cmd();
        c.args(["backup", "sst", "--wait"])
            .env("COFFER_GARBD", &fake)
            .env("STAGE1", cf.path("stage1"))
            .env("STAGE2", cf.path(stage2))
            .env("HOLD", hold);
        c
    };
    let repo = cf.path("repo");
    let snapshots = || {
        if repo.join("config").exists() {
            restic_snapshots(repo.to_str().unwrap(), &[]).len()
        } else {
            0
        }
    };

    // Cut short: the stream ends without xtrabackup_info's end.
    let out = run_with("cut", "0").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("without the end of xtrabackup_info"));
    assert_eq!(snapshots(), 0);

    // Killed while the stream flows: nothing is committed, the stand-in donor goes too.
    let mut child = run_with("full", "30")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_dir(repo.join("locks"))
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(snapshots(), 0, "no snapshot from a killed run");
    assert_eq!(garbd_count(&cf), 0, "garbd died with coffer");

    // A complete stream: one snapshot with both stages, the position stage byte for byte.
    let out = run_with("full", "0").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshots(), 1);
    let pos = restic(
        repo.to_str().unwrap(),
        &["dump", "--no-lock", "latest", "/galera-position.xbstream"],
    );
    assert_eq!(pos.raw, stage1);
    let data = restic(
        repo.to_str().unwrap(),
        &["dump", "--no-lock", "latest", "/xtrabackup.stream"],
    );
    assert_eq!(data.raw.len(), full.len());
}

/// The SST listener's port is on garbd's command line, visible to every local user: a
/// connection from anywhere but a cluster member is turned away (here from 127.0.0.2 while the
/// member is 127.0.0.1), a donor that trickles is cut off at `sstDeadline`, and a stream whose
/// files would land outside a data directory is refused before it is stored.
#[test]
fn the_sst_listener_takes_only_members_in_time_with_safe_paths() {
    let db = coffer_testkit::MariaDb::start().unwrap();
    let cf = Coffer::new();
    let stage1 = [
        xb_chunk(
            b'P',
            "xtrabackup_galera_info",
            b"6d5f1a2b-0000-0000-0000-000000000001:42 0\n",
        ),
        xb_chunk(b'E', "xtrabackup_galera_info", b""),
    ]
    .concat();
    let forged = [
        xb_chunk(
            b'P',
            "xtrabackup_galera_info",
            b"00000000-0000-0000-0000-00000000beef:999 0\n",
        ),
        xb_chunk(b'E', "xtrabackup_galera_info", b""),
    ]
    .concat();
    let end = [
        xb_chunk(b'P', "xtrabackup_info", b"backup_type = full-backuped\n"),
        xb_chunk(b'E', "xtrabackup_info", b""),
    ]
    .concat();
    let full = [xb_chunk(b'P', "ibdata1", &[7u8; 4096]), end.clone()].concat();
    let climbing = [
        xb_chunk(b'P', "ibdata1", &[7u8; 4096]),
        xb_chunk(b'P', "../../etc/cron.d/x", b"* * * * * root id\n"),
        end,
    ]
    .concat();
    // What an encrypting donor's socat sends first: a TLS ClientHello.
    let tls = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]
    .repeat(8);
    for (name, data) in [
        ("stage1", &stage1),
        ("forged", &forged),
        ("full", &full),
        ("climbing", &climbing),
        ("tls", &tls),
    ] {
        std::fs::write(cf.path(name), data).unwrap();
    }
    let fake = cf.file(
        "fake-garbd",
        "#!/bin/bash\nfor a in \"$@\"; do [ \"$prev\" = --sst ] && sst=$a; prev=$a; done\n\
         hp=${sst#*:}; hp=${hp%%/*}; host=${hp%:*}; port=${hp##*:}\nsleep 0.3\n\
         if [ -n \"$STRANGER\" ]; then socat -u FILE:\"$STRANGER\" TCP:$host:$port,bind=127.0.0.2 || true; sleep 0.5; fi\n\
         exec 3<>/dev/tcp/$host/$port; cat \"$STAGE1\" >&3; exec 3>&-\nsleep 0.5\n\
         exec 3<>/dev/tcp/$host/$port; cat \"$STAGE2\" >&3; sleep \"${HOLD:-0}\"; exec 3>&-\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ab = format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: fake-cluster}}\n\
         spec:\n  clientConfig: {{url: \"mysql://127.0.0.1:{}/\"}}\n  secret: {{name: db-auth}}\n  \
         parameters: {{address: \"gcomm://127.0.0.1:1\", group: my_wsrep_cluster, sstMethod: mariabackup}}\n",
        db.port()
    );
    let m = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("db-auth", &db),
        ab,
        bc(
            "sst",
            "fake-cluster",
            &[("sstTimeout", "20s"), ("sstDeadline", "8s")],
        ),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &m).ok);
    let run_with = |stranger: Option<&str>, stage2: &str, hold: &str| {
        let mut c = cf.cmd();
        c.args(["backup", "sst", "--wait"])
            .env("COFFER_GARBD", &fake)
            .env("STAGE1", cf.path("stage1"))
            .env("STAGE2", cf.path(stage2))
            .env("HOLD", hold);
        if let Some(s) = stranger {
            c.env("STRANGER", cf.path(s));
        }
        c.output().unwrap()
    };
    let repo = cf.path("repo");
    let snapshots = || {
        if repo.join("config").exists() {
            restic_snapshots(repo.to_str().unwrap(), &[]).len()
        } else {
            0
        }
    };

    // A stranger connects first with a forged position: turned away, the donor's stages kept.
    let out = run_with(Some("forged"), "full", "0");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("turned away a connection from 127.0.0.2"),
        "{said}"
    );
    assert_eq!(snapshots(), 1);
    let pos = restic(
        repo.to_str().unwrap(),
        &["dump", "--no-lock", "latest", "/galera-position.xbstream"],
    );
    assert_eq!(pos.raw, stage1, "the position stage is the donor's");

    // A donor that holds the stream open past the deadline is cut off, and nothing is stored.
    let t = Instant::now();
    let out = run_with(None, "full", "60");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("deadline") && said.contains("sstDeadline"),
        "{said}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "cut off at the deadline"
    );
    assert_eq!(snapshots(), 1);

    // A stream with a file outside the data directory is refused as it arrives.
    let out = run_with(None, "climbing", "0");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("../../etc/cron.d/x"), "{said}");
    assert_eq!(snapshots(), 1);

    // An encrypted SST is not mistaken for a cut-short one: the error says what it likely is.
    let out = run_with(None, "tls", "0");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("encrypts its SST"), "{said}");
    assert_eq!(snapshots(), 1);
}

/// A cluster whose SST is encrypted (`[sst] encrypt=3`: the donor's socat connects with
/// openssl-connect, checks the listener's certificate against its tca and presents its own):
/// with the task param sstTLSSecret the listener is a TLS server that verifies the donor, and
/// the decrypted stream is a complete backup that prepares.
#[test]
fn an_encrypted_sst_is_received_over_tls() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let certs = tempfile::tempdir().unwrap();
    let tls = coffer_testkit::TlsMaterial::generate(certs.path()).unwrap();
    // The donor is the TLS client: its tcert needs client use (the testkit's client cert).
    let sst_cnf = format!(
        "encrypt = 3\ntca = {}\ntcert = {}\ntkey = {}\n",
        tls.ca_path.display(),
        tls.client_cert_path.display(),
        tls.client_key_path.display()
    );
    let c = GaleraCluster::start(GaleraOptions {
        nodes: 1,
        sst_cnf,
        ..Default::default()
    })
    .unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE shop; USE shop;
             CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40));
             INSERT INTO items SELECT seq, CONCAT('item-', seq) FROM seq_1_to_5000;",
        )
        .unwrap();
    let cf = setup(
        &c,
        &[
            secret(
                "sst-tls",
                &[
                    ("tls.crt", &tls.server_cert_pem),
                    ("tls.key", &tls.server_key_pem),
                    ("ca.crt", &tls.ca_pem),
                ],
            ),
            bc(
                "tls-backup",
                "cluster",
                &[("sstTimeout", "120s"), ("sstTLSSecret", "sst-tls")],
            ),
            secret("no-key", &[("tls.crt", &tls.server_cert_pem)]),
            bc(
                "keyless-backup",
                "cluster",
                &[("sstTimeout", "120s"), ("sstTLSSecret", "no-key")],
            ),
            bc("plain-backup", "cluster", &[("sstTimeout", "120s")]),
        ],
    );
    let run = cf.run(&["backup", "tls-backup", "--wait"]);
    assert!(run.ok, "{run}\n--- donor ---\n{}", c.node(0).log_tail());
    assert!(run.stderr.contains("over TLS"), "{run}");
    assert!(
        !run.stderr.contains("BEGIN"),
        "no key material in the log\n{run}"
    );
    assert_eq!(garbd_count(&cf), 0, "no garbd left behind");

    // The stored stream is the decrypted xbstream: it extracts and prepares with the table.
    let manual = cf.path("manual");
    std::fs::create_dir_all(&manual).unwrap();
    let sh = format!(
        "RESTIC_PASSWORD='{REPO_PASSWORD}' restic -r {} --no-cache --no-lock dump latest /xtrabackup.stream | mbstream -x -C {} \
         && mariabackup --prepare --target-dir={}",
        cf.path("repo").display(),
        manual.display(),
        manual.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &sh])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(manual.join("xtrabackup_galera_info").exists());
    assert!(manual.join("shop/items.ibd").exists());
    let status = cf.last_session(&run).to_string();
    assert!(!status.contains("BEGIN"), "no key material in the status");

    // A Secret without tls.key fails the session before any SST, naming the Secret.
    let run = cf.run(&["backup", "keyless-backup", "--wait"]);
    assert!(!run.ok, "{run}");
    assert!(
        run.stderr.contains("no-key") && run.stderr.contains("tls.key"),
        "{run}"
    );
    assert!(!run.stderr.contains("BEGIN"), "{run}");

    // Without sstTLSSecret the encrypting donor is named at once, not after sstTimeout.
    let t = Instant::now();
    let run = cf.run(&["backup", "plain-backup", "--wait"]);
    assert!(!run.ok, "{run}");
    assert!(
        run.stderr.contains("encrypts its SST") && run.stderr.contains("sstTLSSecret"),
        "{run}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(
        restic_snapshots(cf.path("repo").to_str().unwrap(), &[]).len(),
        1,
        "the failed runs stored nothing"
    );
    assert_eq!(garbd_count(&cf), 0, "no garbd left behind");
}

/// A cluster writing binlogs with wsrep GTIDs: the SST snapshot names the AppBinding and
/// records the donor's GTID state and binlog position, which the donor's mariabackup wrote
/// into the stream; nothing writes during the backup, so they are the donor's at that moment.
#[test]
fn a_galera_backup_records_the_donors_gtid_state_and_binlog_position() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = GaleraCluster::start(GaleraOptions {
        binlog: true,
        ..GaleraOptions::default()
    })
    .unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE d; USE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT); \
             INSERT INTO d.t SELECT seq, seq FROM seq_1_to_1000;",
        )
        .unwrap();
    c.node(2).exec("INSERT INTO d.t VALUES (5000, 1);").unwrap();
    c.wait_synced(Duration::from_secs(60)).unwrap();
    let donor = c.node(1);
    let position = || {
        let mut conn = donor.conn().unwrap();
        // Wait until the donor has applied every write the cluster committed.
        conn.query_drop("SET SESSION wsrep_sync_wait = 1").unwrap();
        let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM d.t").unwrap();
        assert_eq!(n, Some(1001));
        let g: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").unwrap();
        let m: Option<(String, u64)> = conn
            .query_first("SHOW MASTER STATUS")
            .map(|r| {
                r.map(|row: coffer_testkit::mysql::Row| {
                    (
                        row.get::<String, _>(0).unwrap(),
                        row.get::<u64, _>(1).unwrap(),
                    )
                })
            })
            .unwrap();
        let gtid: coffer_api::gtid::GtidState = g.unwrap().parse().unwrap();
        let (file, pos) = m.unwrap();
        (gtid.to_string(), format!("{file}:{pos}"))
    };
    let cf = setup(
        &c,
        &[bc(
            "bc",
            "cluster",
            &[("donor", donor.name()), ("sstTimeout", "120s")],
        )],
    );
    let before = position();
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    // The donor rotates its binlog for the transfer (FLUSH LOGS): the GTID state stays, and
    // the end of the old file and the start of the new one are the same point in history.
    let after = position();
    assert_eq!(after.0, before.0, "nothing wrote during the backup");
    let bs = cf.last_session(&run);
    assert_eq!(
        bs["status"]["targets"][0]["stats"][0]["donor"],
        donor.name()
    );
    let id = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = snapshot_tags(&cf.path("repo"), &id);
    assert_eq!(tag_value(&tags, "app"), Some("default/cluster"), "{tags:?}");
    assert_eq!(
        tag_value(&tags, "gtid"),
        Some(before.0.as_str()),
        "{tags:?}"
    );
    let binlog = tag_value(&tags, "binlog");
    assert!(
        binlog == Some(before.1.as_str()) || binlog == Some(after.1.as_str()),
        "{tags:?}: before {before:?}, after {after:?}"
    );
}
