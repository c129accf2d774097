//! Physical backups: a standalone server through `mariabackup --stream`, restored into a data
//! directory that a server starts on with every row intact.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use coffer_testkit::{mysql::prelude::Queryable, verify, MariaDb};

use crate::common::*;

/// A mariadbd started on a restored data directory.
pub struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn start_on(datadir: &std::path::Path, port: u16) -> Started {
    let run = datadir.parent().unwrap().join(format!("run-{port}"));
    std::fs::create_dir_all(&run).unwrap();
    let child = Command::new("/usr/sbin/mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--socket={}/sock", run.display()))
        .arg(format!("--tmpdir={}", run.display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
        ])
        .arg(format!("--log-error={}/error.log", run.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Started(child)
}

pub fn connect(port: u16, password: &str) -> coffer_testkit::mysql::Conn {
    let opts = coffer_testkit::mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(password))
        .prefer_socket(false);
    let t = std::time::Instant::now();
    loop {
        match coffer_testkit::mysql::Conn::new(opts.clone()) {
            Ok(c) => return c,
            Err(e) if t.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("the restored server did not come up on port {port}: {e}"),
        }
    }
}

#[test]
fn standalone_physical_backup_restores_into_a_data_directory() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT, f FLOAT); INSERT INTO t SELECT seq, MD5(seq), seq / 7 FROM seq_1_to_5000;")
        .unwrap();
    let cf = Coffer::new();
    let restore_root = cf.path("restored");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "repo", "src", &[("method", "physical")], 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(
        bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["path"],
        "/xtrabackup.stream"
    );

    assert_restic_restores(cf.path("repo").to_str().unwrap(), "/xtrabackup.stream", &[]);

    // Without coffer: restic dump | mbstream -x gives a directory that prepares.
    let manual = cf.path("manual");
    std::fs::create_dir_all(&manual).unwrap();
    let sh = format!(
        "RESTIC_PASSWORD='{REPO_PASSWORD}' restic -r {} --no-cache dump latest /xtrabackup.stream | mbstream -x -C {} && mariabackup --prepare --target-dir={} 2>&1 | tail -1",
        cf.path("repo").display(), manual.display(), manual.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &sh])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(manual.join("xtrabackup_info").exists());

    // A non-empty target is refused unless the manifest says to replace it.
    let target = restore_root.join("data");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious"), "x").unwrap();
    let rs = |name: &str, replace: bool| {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
             spec:\n  task:\n    name: mariadb-restore-10.5.8\n    params:\n    - {{name: dataDir, value: {}}}\n    \
             - {{name: replaceDataDir, value: \"{replace}\"}}\n  repository: {{name: repo}}\n  target:\n    \
             ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: src}}\n",
            target.display()
        )
    };
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r1.yaml", &rs("refused", false)).to_str().unwrap(),
        "--wait",
    ]);
    assert!(!r.ok, "{r}");
    assert!(error(&cf.get_json("restoresession", "refused")).contains("is not empty"));
    assert!(target.join("precious").exists(), "nothing deleted");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("r2.yaml", &rs("replaced", true)).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    assert!(!target.join("precious").exists());
    assert!(target.join("ibdata1").exists());

    let port = coffer_testkit::free_port();
    let _server = start_on(&target, port);
    let mut restored = connect(port, src.root_password());
    let mut s = src.conn().unwrap();
    let want = verify::checksums(&mut s, &["app"]).unwrap();
    let got = verify::checksums(&mut restored, &["app"]).unwrap();
    assert_eq!(want, got, "a physical restore is bit-exact, FLOAT included");
    let n: Option<u64> = restored.query_first("SELECT COUNT(*) FROM app.t").unwrap();
    assert_eq!(n, Some(5000));
}

/// mariabackup: the position its stream records near its end.
#[test]
fn a_physical_backup_records_its_app_gtid_state_and_binlog_position() {
    a_backup_records_the_position_it_is_consistent_at(&[("method", "physical")]);
}
