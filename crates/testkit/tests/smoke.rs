//! Smoke tests for the harness itself: every server starts, answers and is cleaned up,
//! and the fidelity schema survives a reference logical dump/restore (mariadb-dump),
//! which proves the verify helpers compare what they should.

use coffer_testkit::{
    fidelity, free_port, garage_binary, verify, Garage, MariaDb, MariaDbOptions, MysqlServer,
    Pushgateway,
};
use mysql::prelude::Queryable;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn free_ports_are_distinct() {
    let ports: Vec<u16> = (0..64).map(|_| free_port()).collect();
    let unique: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    assert!(ports.iter().all(|p| *p > 0));
}

#[test]
fn mariadb_fidelity_schema_and_reference_dump() {
    let t = Instant::now();
    let mut src = MariaDb::start().expect("start MariaDB");
    eprintln!("MariaDB started in {:?}", t.elapsed());
    assert_eq!(src.host(), "127.0.0.1");
    assert_eq!(src.url(), format!("mysql://127.0.0.1:{}/", src.port()));
    assert!(src.datadir().join("mysql").is_dir());
    assert!(src.socket().exists());
    assert!(src.tls().is_none());

    // Only the expected root accounts exist, and both take the password.
    let users = src
        .query_strings(
            "SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User = 'root' ORDER BY 1",
        )
        .unwrap();
    assert_eq!(
        users,
        vec![
            vec![Some("root@%".to_string())],
            vec![Some("root@localhost".to_string())]
        ]
    );
    let via_socket = mysql::OptsBuilder::new()
        .socket(Some(src.socket().to_string_lossy().into_owned()))
        .user(Some("root"))
        .pass(Some(src.root_password()));
    mysql::Conn::new(via_socket).expect("root@localhost with the password over the socket");

    let t = Instant::now();
    let mut conn = src.conn().unwrap();
    fidelity::load(&mut conn, "fid").expect("load fidelity schema");
    fidelity::create_app_user(&mut conn, "fid", "app-pw'\\x").unwrap();
    eprintln!("fidelity schema loaded in {:?}", t.elapsed());

    // Spot-check that the loader stored what it meant to.
    let all_bytes: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let hex = src
        .query_strings(
            "SELECT HEX(b), LENGTH(t) FROM fid.blobs JOIN fid.texts USING (id) WHERE id = 1",
        )
        .unwrap();
    assert_eq!(hex[0][0].as_deref(), Some(all_bytes.as_str()));
    let row = src
        .query_strings("SELECT s, HEX(t) FROM fid.texts WHERE id = 3")
        .unwrap();
    assert!(
        row[0][0].as_deref().unwrap().contains("\\ slash"),
        "{row:?}"
    );
    assert!(row[0][1].as_deref().unwrap().contains("0D0A"), "{row:?}");
    let emoji = src
        .query_strings("SELECT s, c FROM fid.texts WHERE id = 1")
        .unwrap();
    assert_eq!(emoji[0][0].as_deref(), Some("😀🎉👍🏽 ok"));
    let counts = src
        .query_strings(
            "SELECT (SELECT COUNT(*) FROM fid.bulk), (SELECT COUNT(*) FROM fid.no_pk), \
                    (SELECT COUNT(*) FROM fid.audit_log), (SELECT MIN(id) FROM fid.auto_inc)",
        )
        .unwrap();
    assert_eq!(
        counts[0],
        vec![
            Some(fidelity::BULK_ROWS.to_string()),
            Some("8".into()),
            Some("4".into()),
            Some("0".into())
        ]
    );
    let app = src
        .conn_as("coffer_app", "app-pw'\\x")
        .expect("app user logs in");
    drop(app);

    assert_eq!(
        verify::user_databases(&mut conn).unwrap(),
        fidelity::databases("fid")
    );
    let sums = verify::checksums(&mut conn, &["fid"]).unwrap();
    assert!(sums.len() >= 18, "{sums:?}");
    assert!(sums.values().all(|s| s.is_some()), "{sums:?}");
    assert_eq!(
        sums,
        verify::checksums(&mut conn, &["fid"]).unwrap(),
        "checksums not stable"
    );
    let no_float = verify::checksums_without_float_tables(&mut conn, &["fid"]).unwrap();
    assert_eq!(no_float.len() + fidelity::FLOAT_TABLES.len(), sums.len());
    assert!(!no_float.contains_key("fid.floats"));
    let floats = verify::float_values(&mut conn, "fid").unwrap();
    assert_eq!(
        floats.keys().collect::<Vec<_>>(),
        ["fid.floats.f", "fid.floats.f_prec", "fid.floats.fu"]
    );
    assert_eq!(floats["fid.floats.f"][0].as_deref(), Some("0.1"));
    assert_eq!(floats["fid.floats.f"][6], None);
    let creates = verify::show_creates(&mut conn, "fid").unwrap();
    for kind in ["table", "view", "trigger", "procedure", "function", "event"] {
        assert!(
            creates
                .keys()
                .any(|k| k.starts_with(&format!("{kind} fid."))),
            "no {kind}: {:?}",
            creates.keys()
        );
    }
    assert!(
        creates["table fid.auto_inc"].contains("AUTO_INCREMENT=11"),
        "{}",
        creates["table fid.auto_inc"]
    );
    assert!(creates["event fid.ev_nightly"].contains("DISABLE"));
    assert_eq!(creates, verify::show_creates(&mut conn, "fid").unwrap());
    drop(conn);

    // Reference logical backup: mariadb-dump into a second server must preserve
    // everything the verify helpers compare (FLOAT tables are compared by value).
    if !which("mariadb-dump") || !which("mariadb") {
        eprintln!("SKIP reference dump: mariadb-dump / mariadb client not installed");
        return;
    }
    let mut dst = MariaDb::start().expect("start second MariaDB");
    let dump = src.dir().join("fid.sql");
    let status = Command::new("mariadb-dump")
        .arg(format!(
            "--defaults-extra-file={}",
            src.defaults_file().display()
        ))
        .args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--dump-history",
            "--skip-add-locks",
            "--databases",
            "fid",
            "fid_ext",
        ])
        .stdout(std::fs::File::create(&dump).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "mariadb-dump failed");
    let status = Command::new("mariadb")
        .arg(format!(
            "--defaults-extra-file={}",
            dst.defaults_file().display()
        ))
        .arg("--comments") // keep the comment inside the procedure body
        .stdin(std::fs::File::open(&dump).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "restoring the dump failed");

    let compare = |a: &MariaDb, b: &MariaDb, when: &str| {
        let (mut a, mut b) = (a.conn().unwrap(), b.conn().unwrap());
        let pairs = [(
            verify::checksums_without_float_tables(&mut a, &["fid"]).unwrap(),
            verify::checksums_without_float_tables(&mut b, &["fid"]).unwrap(),
        )];
        for (l, r) in &pairs {
            if let Some(d) = verify::diff(l, r) {
                panic!("checksums differ {when}:\n{d}");
            }
        }
        let (l, r) = (
            verify::float_values(&mut a, "fid").unwrap(),
            verify::float_values(&mut b, "fid").unwrap(),
        );
        if let Some(d) = verify::diff(&l, &r) {
            panic!("float values differ {when}:\n{d}");
        }
        let (l, r) = (
            verify::show_creates(&mut a, "fid").unwrap(),
            verify::show_creates(&mut b, "fid").unwrap(),
        );
        if let Some(d) = verify::diff(&l, &r) {
            panic!("definitions differ {when}:\n{d}");
        }
    };
    compare(&src, &dst, "after mariadb-dump | mariadb");

    // Restart (clean) and crash-restart keep the datadir and the port.
    let port = dst.port();
    let old_pid = dst.pid().unwrap();
    let t = Instant::now();
    dst.restart().expect("restart");
    eprintln!("clean stop + start took {:?}", t.elapsed());
    assert!(
        !process_exists(old_pid),
        "old server process still there after restart"
    );
    assert_eq!(dst.port(), port);
    dst.kill();
    assert!(!dst.is_running());
    dst.restart().expect("restart after SIGKILL");
    compare(&src, &dst, "after restarts");

    // Drop stops the server and removes its directory.
    let (pid, dir) = (src.pid().unwrap(), src.dir().to_path_buf());
    src.stop();
    assert!(!process_exists(pid));
    drop(src);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let (pid, dir) = (dst.pid().unwrap(), dst.dir().to_path_buf());
    drop(dst);
    assert!(!process_exists(pid));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn mariadb_tls_verifies_against_the_ca() {
    let db = MariaDb::start_with(MariaDbOptions {
        tls: true,
        require_secure_transport: true,
        extra_args: vec![],
    })
    .expect("start MariaDB with TLS");
    let tls = db.tls().expect("TLS material");
    assert!(tls.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(tls.server_key_pem.contains("PRIVATE KEY"));
    assert_ne!(tls.ca_pem, tls.wrong_ca_pem);

    let mut conn = db.conn().expect("TLS connection verified by the CA");
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .unwrap();
    let cipher = cipher.unwrap().1;
    assert!(!cipher.is_empty(), "connection is not encrypted");

    // Client certificate from the same CA is accepted.
    let with_cert = db.opts().ssl_opts(
        mysql::SslOpts::default()
            .with_root_cert_path(Some(tls.ca_path.clone()))
            .with_client_identity(Some(mysql::ClientIdentity::new(
                tls.client_cert_path.clone(),
                tls.client_key_path.clone(),
            ))),
    );
    mysql::Conn::new(with_cert).expect("TLS with client certificate");

    // An unrelated CA must not verify the server.
    let wrong = db
        .opts()
        .ssl_opts(mysql::SslOpts::default().with_root_cert_path(Some(tls.wrong_ca_path.clone())));
    assert!(
        mysql::Conn::new(wrong).is_err(),
        "server verified against the wrong CA"
    );

    // The client option file works for the CLI over verified TLS.
    if which("mariadb") {
        let out = Command::new("mariadb")
            .arg(format!(
                "--defaults-extra-file={}",
                db.defaults_file().display()
            ))
            .args(["-N", "-e", "SHOW SESSION STATUS LIKE 'Ssl_version'"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb CLI over TLS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("TLS"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // require_secure_transport: plain TCP is refused (MariaDB 10.11 reports it as
    // "Access denied" to the client).
    let plain = db.opts().ssl_opts(None::<mysql::SslOpts>);
    let err =
        mysql::Conn::new(plain).expect_err("plain TCP accepted despite require_secure_transport");
    let err = err.to_string();
    assert!(
        err.contains("Access denied") || err.contains("secure transport"),
        "{err}"
    );
}

#[test]
fn mariadb_start_failure_reports_the_log() {
    let err = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--no-such-option-coffer".into()],
        ..Default::default()
    })
    .expect_err("server with a bad option must not start");
    let msg = format!("{err:#}");
    assert!(msg.contains("no-such-option-coffer"), "{msg}");
    assert!(msg.contains("error.log"), "{msg}");
}

#[test]
fn pushgateway_serves_metrics() {
    let mut pg = Pushgateway::start().expect("start Pushgateway");
    assert!(pg.url().starts_with("http://127.0.0.1:"));
    let text = pg.metrics_text().unwrap();
    assert!(text.contains("pushgateway_build_info"), "{text}");
    pg.wipe().unwrap();
    pg.stop();
    assert!(pg.metrics_text().is_err());
}

#[test]
fn garage_serves_s3() {
    let Some(bin) = garage_binary() else {
        eprintln!("SKIP garage_serves_s3: no garage binary (set COFFER_GARAGE or run scripts/install-deps.sh)");
        return;
    };
    eprintln!("using {}", bin.display());
    let t = Instant::now();
    let mut garage = Garage::start().expect("start Garage");
    eprintln!("Garage started in {:?}", t.elapsed());
    assert_eq!(garage.region(), "garage");
    assert!(garage.access_key().starts_with("GK") && garage.access_key().len() == 26);
    assert_eq!(garage.secret_key().len(), 64);
    garage
        .create_bucket("second-bucket")
        .expect("create bucket");

    // The default key has read, write and owner on both buckets.
    for bucket in [garage.bucket(), "second-bucket"] {
        let info = garage.cli(&["bucket", "info", bucket]).unwrap();
        assert!(
            info.lines()
                .any(|l| l.starts_with("RWO") && l.contains(garage.access_key())),
            "{info}"
        );
    }

    // End to end through a real S3 client: restic initialises a repository in the
    // bucket made by create_bucket (one init: its key derivation costs ~3 s of CPU).
    if which("restic") {
        let out = Command::new("restic")
            .args([
                "-r",
                &format!("s3:{}/second-bucket/repo", garage.endpoint()),
                "init",
            ])
            .env("AWS_ACCESS_KEY_ID", garage.access_key())
            .env("AWS_SECRET_ACCESS_KEY", garage.secret_key())
            .env("AWS_DEFAULT_REGION", garage.region())
            .env("RESTIC_PASSWORD", "smoke")
            .env(
                "RESTIC_CACHE_DIR",
                std::env::temp_dir().join("coffer-testkit-restic-cache"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restic init: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            garage.log_tail()
        );
    } else {
        eprintln!("restic not installed: skipped the S3 round trip");
    }
    garage.stop();
}

/// Helper for `servers_die_with_the_test_process`: runs only when that test starts
/// this binary with the environment variable set.
#[test]
#[ignore = "helper, started by servers_die_with_the_test_process"]
fn orphan_helper() {
    if std::env::var_os("COFFER_TESTKIT_ORPHAN_HELPER").is_none() {
        return;
    }
    let db = MariaDb::start().unwrap();
    let pg = Pushgateway::start().unwrap();
    println!("DIRS {} {}", db.dir().display(), pg.dir().display());
    println!("PIDS {} {}", db.pid().unwrap(), pg.pid().unwrap());
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn servers_die_with_the_test_process() {
    use std::io::BufRead;
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "orphan_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COFFER_TESTKIT_ORPHAN_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(helper.stdout.take().unwrap());
    let (mut pids, mut dirs): (Vec<u32>, Vec<String>) = (Vec::new(), Vec::new());
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("DIRS ").nth(1) {
            dirs = rest.split_whitespace().map(String::from).collect();
        }
        if let Some(rest) = line.split("PIDS ").nth(1) {
            pids = rest
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            break;
        }
    }
    let all_alive = pids.len() == 2 && pids.iter().all(|p| process_exists(*p));
    // SIGKILL: no destructors run in the helper.
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|p| process_exists(*p)) && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The helper could not remove its directories; do it here.
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(
        all_alive,
        "helper did not report two running servers: {pids:?}"
    );
    let alive: Vec<u32> = pids.into_iter().filter(|p| process_exists(*p)).collect();
    assert!(
        alive.is_empty(),
        "servers outlived their test process: {alive:?}"
    );
}

#[test]
fn exec_reports_an_error_in_a_later_statement() {
    let db = coffer_testkit::MariaDb::start().unwrap();
    let e = db
        .exec("CREATE DATABASE d1; INSERT INTO t SELECT 1 FROM seq_1_to_3")
        .unwrap_err();
    assert!(format!("{e:#}").contains("No database selected"), "{e:#}");
}

/// Processes of a Galera cluster: those tagged with its process tag, members of the
/// nodes' process groups and any process whose command line names its directory.
fn galera_leftovers(tag: &str, pgids: &[u32], dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let marker = format!("COFFER_TESTKIT_GALERA={tag}/");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: state ppid pgrp ...
        let pgrp: Option<u32> = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let tagged = std::fs::read(entry.path().join("environ"))
            .map(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(marker.as_bytes()))
            })
            .unwrap_or(false);
        if tagged || pgrp.is_some_and(|g| pgids.contains(&g)) || cmdline.contains(&dir) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn galera_pids(cluster: &coffer_testkit::GaleraCluster) -> Vec<u32> {
    cluster
        .nodes()
        .iter()
        .map(|n| n.pid().expect("running node has a pid"))
        .collect()
}

fn galera_stop_and_check(cluster: &mut coffer_testkit::GaleraCluster) {
    let pids = galera_pids(cluster);
    let t = Instant::now();
    cluster.stop();
    eprintln!("Galera {} stopped in {:?}", cluster.group(), t.elapsed());
    assert!(cluster.nodes().iter().all(|n| !n.is_running()));
    let left = galera_leftovers(cluster.process_tag(), &pids, cluster.dir());
    assert!(left.is_empty(), "processes left after stop: {left:#?}");
    // Node 0 stops last, so it may bootstrap the cluster again.
    let grastate = std::fs::read_to_string(cluster.node(0).datadir().join("grastate.dat")).unwrap();
    assert!(grastate.contains("safe_to_bootstrap: 1"), "{grastate}");
}

#[test]
fn galera_cluster_starts_replicates_and_stops() {
    use coffer_testkit::{GaleraCluster, GaleraOptions};
    let t = Instant::now();
    let mut cluster =
        GaleraCluster::start(GaleraOptions::default()).expect("start a 3-node Galera cluster");
    eprintln!("3-node Galera cluster started in {:?}", t.elapsed());
    assert!(
        cluster.group().starts_with("coffer_test_"),
        "{}",
        cluster.group()
    );
    assert_eq!(cluster.nodes().len(), 3);
    let gports: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.gcomm_port()))
        .collect();
    assert_eq!(cluster.address(), format!("gcomm://{}", gports.join(",")));
    let mut ports: Vec<u16> = cluster
        .nodes()
        .iter()
        .flat_map(|n| [n.port(), n.gcomm_port(), n.ist_port(), n.sst_port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 12, "every node has four ports of its own");

    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(node.name(), format!("node{}", i + 1));
        assert_eq!(node.state().unwrap(), "Synced");
        assert!(node.datadir().join("mysql").is_dir());
        assert!(node.defaults_file().is_file());
        let row = node
            .query_strings(
                "SELECT @@wsrep_node_name, @@wsrep_cluster_name, @@port, VARIABLE_VALUE \
                 FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_CLUSTER_SIZE'",
            )
            .unwrap();
        assert_eq!(
            row,
            vec![vec![
                Some(node.name().to_string()),
                Some(cluster.group().to_string()),
                Some(node.port().to_string()),
                Some("3".to_string()),
            ]]
        );
    }
    // Joiners 2 and 3 got the accounts by SST: root@'%' took the password above, and
    // the SST user is there for the next joiner.
    let sst = cluster
        .node(2)
        .query_strings(&format!(
            "SELECT COUNT(*) FROM mysql.global_priv WHERE User = '{}' AND Host = 'localhost'",
            cluster.sst_user()
        ))
        .unwrap();
    assert_eq!(sst, vec![vec![Some("1".to_string())]]);

    // Write on node1, read on node3 (wsrep_sync_wait: wait until applied).
    cluster
        .node(0)
        .exec(
            "CREATE DATABASE galera_smoke; \
             CREATE TABLE galera_smoke.t (id INT PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO galera_smoke.t VALUES (1, 'from node1'), (2, 'two')",
        )
        .unwrap();
    let rows = cluster
        .node(2)
        .query_strings(
            "SET SESSION wsrep_sync_wait = 1; SELECT id, v FROM galera_smoke.t ORDER BY id",
        )
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("1".to_string()), Some("from node1".to_string())],
            vec![Some("2".to_string()), Some("two".to_string())],
        ]
    );
    // And the other way round.
    cluster
        .node(2)
        .exec("UPDATE galera_smoke.t SET v = 'from node3' WHERE id = 2")
        .unwrap();
    let v = cluster
        .node(1)
        .query_strings("SET SESSION wsrep_sync_wait = 1; SELECT v FROM galera_smoke.t WHERE id = 2")
        .unwrap();
    assert_eq!(v, vec![vec![Some("from node3".to_string())]]);

    let e = cluster
        .node(1)
        .exec("SELECT 1; INSERT INTO galera_smoke.nope VALUES (1)")
        .unwrap_err();
    assert!(format!("{e:#}").contains("nope"), "{e:#}");
    let user_pass = format!("{}:{}", cluster.sst_user(), cluster.sst_password());
    cluster.set_sst_auth(0, &user_pass).unwrap();
    cluster
        .wait_synced(std::time::Duration::from_secs(10))
        .unwrap();

    let dir = cluster.dir().to_path_buf();
    galera_stop_and_check(&mut cluster);
    drop(cluster);
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn galera_restored_backup_bootstraps_and_seeds_a_joiner() {
    use coffer_testkit::{start_restored, GaleraCluster, GaleraOptions};
    let t = Instant::now();
    let mut src = GaleraCluster::start(GaleraOptions {
        nodes: 1,
        ..Default::default()
    })
    .expect("start a 1-node Galera cluster");
    eprintln!("1-node Galera cluster started in {:?}", t.elapsed());
    src.node(0)
        .exec(
            "CREATE DATABASE restore_smoke; \
             CREATE TABLE restore_smoke.t (id INT PRIMARY KEY, v VARCHAR(40)); \
             USE restore_smoke; INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_1000",
        )
        .unwrap();
    let checksum = "CHECKSUM TABLE restore_smoke.t";
    let before = src.node(0).query_strings(checksum).unwrap();

    // A real physical backup of the running node, as root over its socket.
    let work = tempfile::Builder::new()
        .prefix("coffer-galera-backup-")
        .tempdir()
        .unwrap();
    let target = work.path().join("data");
    let backup_bin = if which("mariadb-backup") {
        "mariadb-backup"
    } else {
        "mariabackup"
    };
    let t = Instant::now();
    let out = Command::new(backup_bin)
        .arg(format!(
            "--defaults-file={}",
            src.node(0).defaults_file().display()
        ))
        .args(["--backup", "--galera-info", "--user=root"])
        .arg(format!("--socket={}", src.node(0).socket().display()))
        .arg(format!("--target-dir={}", target.display()))
        .env("MYSQL_PWD", src.root_password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(backup_bin)
        .args(["--no-defaults", "--prepare"])
        .arg(format!("--target-dir={}", target.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("backup + prepare took {:?}", t.elapsed());
    assert!(target.join("xtrabackup_galera_info").is_file());
    galera_stop_and_check(&mut src);

    // Galera's limit on the group name (32 bytes) is checked up front.
    let too_long = format!("{}_restored", src.group());
    let err = start_restored(&target, &too_long, src.root_password(), "u", "p")
        .expect_err("a 33-byte group name must be refused");
    assert!(format!("{err:#}").contains("at most 32"), "{err:#}");
    let group = format!("{}_restore", src.group());
    assert_eq!(group.len(), 32);

    // The wrong root password is reported at once, not after a timeout.
    let t = Instant::now();
    let err = start_restored(&target, &group, "wrong", src.sst_user(), src.sst_password())
        .expect_err("the wrong root password must be refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot log in with the given password"),
        "{msg}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let mut restored = start_restored(
        &target,
        &group,
        src.root_password(),
        src.sst_user(),
        src.sst_password(),
    )
    .expect("bootstrap the restored datadir");
    eprintln!("restored node bootstrapped in {:?}", t.elapsed());
    assert_eq!(restored.group(), group);
    assert_eq!(restored.root_password(), src.root_password());
    assert_eq!(restored.node(0).datadir(), target.as_path());
    let row = restored
        .node(0)
        .query_strings("SELECT @@wsrep_cluster_name")
        .unwrap();
    assert_eq!(row, vec![vec![Some(group.clone())]]);
    assert_eq!(restored.node(0).query_strings(checksum).unwrap(), before);

    // A donor with the wrong SST password: the join fails with the donor's reason,
    // and the cluster carries on.
    let t = Instant::now();
    let wrong = format!("{}:wrong", src.sst_user());
    restored.set_sst_auth(0, &wrong).unwrap();
    let err = restored
        .join_empty_node()
        .expect_err("SST with the wrong password must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("Access denied for user"), "{msg}");
    eprintln!("join with a wrong SST password failed in {:?}", t.elapsed());
    assert_eq!(restored.nodes().len(), 1);
    restored
        .wait_synced(std::time::Duration::from_secs(60))
        .unwrap();
    let right = format!("{}:{}", src.sst_user(), src.sst_password());
    restored.set_sst_auth(0, &right).unwrap();

    let t = Instant::now();
    restored
        .join_empty_node()
        .expect("join an empty node by SST");
    assert!(restored.dir().join("node2.failed-1").is_dir());
    eprintln!("empty node joined the restored node in {:?}", t.elapsed());
    assert_eq!(restored.nodes().len(), 2);
    assert_eq!(restored.node(1).name(), "node2");
    assert_eq!(restored.node(1).query_strings(checksum).unwrap(), before);
    restored
        .node(1)
        .exec("INSERT INTO restore_smoke.t VALUES (1001, 'after restore')")
        .unwrap();
    let v = restored
        .node(0)
        .query_strings(
            "SET SESSION wsrep_sync_wait = 1; SELECT v FROM restore_smoke.t WHERE id = 1001",
        )
        .unwrap();
    assert_eq!(v, vec![vec![Some("after restore".to_string())]]);

    galera_stop_and_check(&mut restored);
    drop(restored);
    assert!(
        target.join("mysql").is_dir(),
        "the caller's datadir is kept"
    );
}

/// Helper for `galera_nodes_die_with_the_test_process`: runs only when that test
/// starts this binary with the environment variable set.
#[test]
#[ignore = "helper, started by galera_nodes_die_with_the_test_process"]
fn galera_orphan_helper() {
    if std::env::var_os("COFFER_TESTKIT_GALERA_ORPHAN_HELPER").is_none() {
        return;
    }
    let mut cluster = coffer_testkit::GaleraCluster::start(coffer_testkit::GaleraOptions {
        nodes: 1,
        ..Default::default()
    })
    .unwrap();
    println!(
        "GALERA_DIR {} {}",
        cluster.process_tag(),
        cluster.dir().display()
    );
    // Killed by the test while the joiner's SST runs.
    let _ = cluster.join_empty_node();
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// A test process killed while a node joins (SST scripts, socat and mariadb-backup
/// running on both sides) leaves no process behind.
#[test]
fn galera_nodes_die_with_the_test_process() {
    use std::io::BufRead;
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "galera_orphan_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COFFER_TESTKIT_GALERA_ORPHAN_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(helper.stdout.take().unwrap());
    let (mut tag, mut dir) = (String::new(), String::new());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        // libtest may print "test galera_orphan_helper ... " on the same line.
        if let Some(rest) = line.trim_end().split("GALERA_DIR ").nth(1) {
            let (t, d) = rest.split_once(' ').unwrap();
            (tag, dir) = (t.to_string(), d.to_string());
            break;
        }
        line.clear();
    }
    assert!(!dir.is_empty(), "helper did not start a cluster");
    let dir = std::path::PathBuf::from(dir);

    // Wait until both SST scripts (donor and joiner) run, then snapshot the process
    // groups of every mariadbd of the cluster.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let (mut servers, mut sst_scripts) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let procs = galera_leftovers(&tag, &[], &dir);
        servers = procs
            .iter()
            .filter(|p| p.contains("mariadbd"))
            .map(|p| p.split(':').next().unwrap().parse::<u32>().unwrap())
            .collect::<Vec<_>>();
        sst_scripts = procs
            .iter()
            .filter(|p| p.contains("wsrep_sst_mariabackup"))
            .count();
        if servers.len() == 2 && sst_scripts >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let during = galera_leftovers(&tag, &servers, &dir);
    // SIGKILL: no destructors run in the helper.
    helper.kill().unwrap();
    helper.wait().unwrap();
    let t = Instant::now();
    let deadline = t + std::time::Duration::from_secs(30);
    let mut left = galera_leftovers(&tag, &servers, &dir);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = galera_leftovers(&tag, &servers, &dir);
    }
    eprintln!(
        "{} processes during the SST were gone {:?} after the test process died",
        during.len(),
        t.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        servers.len() == 2 && sst_scripts >= 2,
        "the SST never ran: {during:#?}"
    );
    assert!(left.is_empty(), "outlived the test process: {left:#?}");
}

/// MySQL 9 (from scripts/install-mysql.sh) starts as a GTID binlog source: the
/// harness's own set-up leaves no GTIDs, each of the test's transactions adds one, and
/// the 8.4+/9 `SHOW BINARY LOG STATUS` names the current binlog.
#[test]
fn mysql_server_is_a_gtid_binlog_source() {
    let t = Instant::now();
    let db = MysqlServer::start().expect("start MySQL");
    eprintln!("MySQL started in {:?}", t.elapsed());
    assert_eq!(db.host(), "127.0.0.1");
    assert!(db.socket().exists());

    let one = |sql: &str| -> String {
        let rows = db.query_strings(sql).unwrap();
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone().unwrap_or_default()
    };
    let version = one("SELECT @@version");
    assert!(!version.contains("MariaDB"), "{version}");
    assert_eq!(one("SELECT @@gtid_mode"), "ON");
    assert_eq!(
        one("SELECT @@gtid_executed"),
        "",
        "the harness's set-up left GTIDs"
    );
    let uuid = one("SELECT @@server_uuid");

    // Two DDL statements (one GTID each) and three multi-row transactions.
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .unwrap();
    let mut conn = db.conn().unwrap();
    for txn in 0..3 {
        let mut tx = conn.start_transaction(mysql::TxOpts::default()).unwrap();
        for row in 0..2 {
            let id = txn * 10 + row;
            tx.exec_drop("INSERT INTO shop.t VALUES (?, ?)", (id, format!("v{id}")))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    assert_eq!(one("SELECT COUNT(*) FROM shop.t"), "6");
    assert_eq!(one("SELECT @@gtid_executed"), format!("{uuid}:1-5"));

    let status = db.query_strings("SHOW BINARY LOG STATUS").unwrap();
    let file = status[0][0].clone().unwrap_or_default();
    assert!(file.starts_with("mysql-bin."), "{status:?}");

    // The mysqlbinlog wrapper beside mysqld reads that binlog and finds the last GTID.
    let mysqlbinlog = db.mysqld().with_file_name("mysqlbinlog");
    if mysqlbinlog.exists() {
        let out = Command::new(&mysqlbinlog)
            .arg("--no-defaults")
            .arg(db.datadir().join(&file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("GTID_NEXT= '{uuid}:5'")), "{text}");
    }
}
