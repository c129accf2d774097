//! S3 repositories on a real S3 server (Garage): round trip, restic interoperability on the
//! same bucket, and the server's faults.

use coffer_testkit::{Garage, MariaDb};

use crate::common::*;

fn s3_secret(name: &str, g: &Garage) -> String {
    secret(
        name,
        &[
            ("RESTIC_PASSWORD", REPO_PASSWORD),
            ("AWS_ACCESS_KEY_ID", g.access_key()),
            ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
        ],
    )
}

fn s3_repo(name: &str, endpoint: &str, bucket: &str, prefix: &str, secret: &str) -> String {
    format!(
        "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: {name}}}\n\
         spec:\n  backend:\n    s3: {{endpoint: \"{endpoint}\", bucket: {bucket}, prefix: {prefix}, region: garage}}\n    \
         storageSecretName: {secret}\n"
    )
}

fn restic_s3_env(g: &Garage) -> Vec<(&str, &str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", g.access_key()),
        ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
        ("AWS_DEFAULT_REGION", "garage"),
    ]
}

#[test]
fn s3_repository_round_trip_and_restic_interop() {
    let g = Garage::start().expect("Garage is required (scripts/install-deps.sh builds it)");
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(64));
         INSERT INTO t SELECT seq, UNHEX(SHA2(seq, 256)) FROM seq_1_to_20000;",
    )
    .unwrap();
    let cf = Coffer::new();
    let manifests = [
        s3_secret("s3-secret", &g),
        s3_repo("s3", &g.endpoint(), g.bucket(), "/coffer/app", "s3-secret"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        backup_config("bc", "s3", "src", "--databases app", 3),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Succeeded");

    // restic sees the same repository under s3:<endpoint>/<bucket>/<prefix>.
    let url = format!("s3:{}/{}/coffer/app", g.endpoint(), g.bucket());
    let env = restic_s3_env(&g);
    let snaps = restic_snapshots(&url, &env);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/dumpfile.sql"]));
    assert_restic_check(&url, &env);

    // A snapshot that restic writes into coffer's S3 repository restores with coffer.
    src.exec("UPDATE app.t SET v = 'changed-by-restic' WHERE id = 7")
        .unwrap();
    let pipeline = format!(
        "mariadb-dump --defaults-file={} --databases app | restic -r {url} --no-cache backup --stdin \
         --stdin-filename dumpfile.sql --host host-0 --quiet",
        src.defaults_file().display()
    );
    let mut c = std::process::Command::new("bash");
    c.args(["-o", "pipefail", "-c", &pipeline])
        .env("RESTIC_PASSWORD", REPO_PASSWORD);
    for (k, v) in &env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rs = restore_session("r", "s3", "dst", "latest");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let mut s = src.conn().unwrap();
    let mut d = dst.conn().unwrap();
    let want = coffer_testkit::verify::checksums(&mut s, &["app"]).unwrap();
    assert_eq!(
        want,
        coffer_testkit::verify::checksums(&mut d, &["app"]).unwrap()
    );
    assert_eq!(
        dst.query_strings("SELECT v FROM app.t WHERE id = 7")
            .unwrap(),
        vec![vec![Some("changed-by-restic".to_string())]]
    );
    let listed = cf.ok(&["snapshots", "s3"]);
    assert_eq!(
        listed.stdout.lines().count(),
        3,
        "header + 2 snapshots:\n{listed}"
    );
}

#[test]
fn s3_down_or_missing_bucket_fails_with_the_reason() {
    let g = Garage::start().expect("Garage is required");
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .unwrap();
    let dead = format!("http://127.0.0.1:{}", coffer_testkit::free_port());
    let cf = Coffer::new();
    let manifests = [
        s3_secret("s3-secret", &g),
        s3_repo(
            "no-bucket",
            &g.endpoint(),
            "no-such-bucket",
            "x",
            "s3-secret",
        ),
        s3_repo("down", &dead, g.bucket(), "x", "s3-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config("bc-no-bucket", "no-bucket", "src", "--databases app", 3),
        backup_config("bc-down", "down", "src", "--databases app", 3),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    for (bc, needles) in [
        (
            "bc-no-bucket",
            vec![
                "Repository default/no-bucket",
                "bucket `no-such-bucket` does not exist",
            ],
        ),
        (
            "bc-down",
            vec![
                "Repository default/down",
                "cannot reach the S3 endpoint",
                &dead,
            ],
        ),
    ] {
        let run = cf.run(&["backup", bc, "--wait"]);
        assert_eq!(run.code, Some(1), "{run}");
        let bs = cf.last_session(&run);
        assert_eq!(phase(&bs), "Failed");
        for n in needles {
            assert!(
                error(&bs).contains(n),
                "{bc}: reason {:?} lacks {n:?}",
                error(&bs)
            );
        }
    }
}
