//! Repositories on Azure Blob (Azurite), Google Cloud Storage (gcp-storage-emulator) and
//! restic's REST protocol (rustic_server), each a real server on loopback: backup, restore
//! compared by CHECKSUM TABLE, retention, a lock held by another writer, the server stopped in
//! the middle of a backup (while its dump streams), and failures that name the backend, the
//! container and the fix.
//! restic 0.14 (Debian 12) cannot reach Azurite or the GCS emulator (no AZURE_ENDPOINT_SUFFIX:
//! always https to `<account>.blob.core.windows.net`; its gcs backend ignores
//! STORAGE_EMULATOR_HOST), so restic interoperability is tested on REST only.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use coffer_testkit::{MariaDb, ObjectServer, AZURITE_ACCOUNT, AZURITE_KEY};

use crate::common::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Azure,
    Gcs,
    Rest,
}

struct Case {
    backend: Backend,
    server: ObjectServer,
}

impl Case {
    fn start(backend: Backend) -> Case {
        let server = match backend {
            Backend::Azure => ObjectServer::azurite(),
            Backend::Gcs => ObjectServer::gcs(),
            Backend::Rest => ObjectServer::rest(),
        }
        .expect("the server is required (scripts/install-deps.sh installs it)");
        if backend == Backend::Azure {
            server.create_container("coffer-test").unwrap();
        }
        Case { backend, server }
    }

    /// The storage Secret; `wrong` spoils the credential.
    fn secret(&self, name: &str, wrong: bool) -> String {
        let mut pairs = vec![("RESTIC_PASSWORD", REPO_PASSWORD.to_string())];
        match self.backend {
            Backend::Azure => {
                pairs.push(("AZURE_ACCOUNT_NAME", AZURITE_ACCOUNT.into()));
                let key = if wrong {
                    "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
                } else {
                    AZURITE_KEY
                };
                pairs.push(("AZURE_ACCOUNT_KEY", key.into()));
            }
            Backend::Gcs => pairs.push(("GOOGLE_PROJECT_ID", "coffer".into())),
            Backend::Rest => {
                let (u, p) = self.server.user();
                pairs.push(("REST_SERVER_USERNAME", u.into()));
                let p = if wrong {
                    "not-the-password".to_string()
                } else {
                    p.to_string()
                };
                pairs.push(("REST_SERVER_PASSWORD", p));
            }
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        secret(name, &pairs)
    }

    /// A Repository in `container` (bucket; for REST the URL's path) under `prefix`.
    fn repo(
        &self,
        name: &str,
        endpoint: &str,
        container: &str,
        prefix: &str,
        secret: &str,
    ) -> String {
        let backend = match self.backend {
            Backend::Azure => format!(
                "azure: {{endpoint: \"{endpoint}\", container: {container}, prefix: {prefix}}}"
            ),
            Backend::Gcs => {
                format!("gcs: {{endpoint: \"{endpoint}\", bucket: {container}, prefix: {prefix}}}")
            }
            Backend::Rest => format!("rest: {{url: \"{endpoint}/{container}\"}}"),
        };
        format!(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: {name}}}\n\
             spec:\n  backend:\n    {backend}\n    storageSecretName: {secret}\n"
        )
    }

    fn good_repo(&self, name: &str) -> String {
        let container = match self.backend {
            Backend::Gcs => self.server.bucket(),
            _ => "coffer-test",
        };
        self.repo(name, &self.server.endpoint(), container, "db/app", "store")
    }
}

fn script(cf: &Coffer, name: &str, body: &str) -> PathBuf {
    let p = cf.file(name, &format!("#!/bin/bash\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Waits until the dump, paused mid-stream, has made `marker`: the backup holds its lock
/// and is writing to the repository.
fn wait_for(marker: &std::path::Path) {
    let t0 = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the dump never paused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn app_db() -> MariaDb {
    let db = MariaDb::start().unwrap();
    db.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad TEXT);
         USE app; INSERT INTO app.t SELECT seq, REPEAT(MD5(seq), 40) FROM seq_1_to_20000;",
    )
    .unwrap();
    db
}

fn snapshot_count(cf: &Coffer, repo: &str) -> usize {
    let listed = cf.ok(&["snapshots", repo]);
    listed.stdout.lines().count().saturating_sub(1)
}

/// Backup, a second writer holding the lock, retention, restore by CHECKSUM TABLE.
fn round_trip(backend: Backend) -> (Case, Coffer, MariaDb) {
    let case = Case::start(backend);
    let src = app_db();
    let dst = MariaDb::start().unwrap();
    let cf = Coffer::new();
    let manifests = [
        case.secret("store", false),
        case.good_repo("repo"),
        db_secret("src-auth", &src),
        db_secret("dst-auth", &dst),
        appbinding("src", &src, "src-auth"),
        appbinding("dst", &dst, "dst-auth"),
        backup_config("bc", "repo", "src", "--databases app", 5),
        backup_config("bc1", "repo", "src", "--databases app", 1),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let t0 = std::time::Instant::now();
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(phase(&cf.last_session(&run)), "Succeeded");
    eprintln!("{backend:?}: first backup took {:?}", t0.elapsed());

    // Another writer (a backup dawdling mid-stream) holds a shared lock: this backup runs, and
    // its retention, which needs the repository to itself, waits.
    let marker = cf.path("paused");
    let slow = script(
        &cf,
        "slow-dump",
        &format!(
            "mariadb-dump \"$@\" | {{ head -c 2000; touch {}; sleep 6; cat; }}",
            marker.display()
        ),
    );
    let mut first = cf.cmd();
    first
        .args(["backup", "bc", "--wait"])
        .env("COFFER_MYSQLDUMP", &slow)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = first.spawn().unwrap();
    wait_for(&marker);
    if backend == Backend::Rest {
        // coffer's lock is restic's: restic sees it and will not prune under it.
        let locks = restic_rest(&case.server, &["list", "locks", "--no-lock"]);
        assert!(locks.ok && locks.stdout.lines().count() == 1, "{locks}");
        let prune = restic_rest(&case.server, &["prune"]);
        assert!(!prune.ok && prune.stderr.contains("locked"), "{prune}");
    }
    let run = cf.run(&["backup", "bc1", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Succeeded", "{bs:#}");
    let r = condition(&bs, "RetentionPolicyApplied");
    assert_eq!(r["reason"], "RetentionPolicyPostponed", "{bs:#}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("a shared lock held by coffer"),
        "{bs:#}"
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the locked-over backup must succeed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot_count(&cf, "repo"), 3, "nothing forgotten yet");

    // Alone, retention keeps one snapshot.
    src.exec("UPDATE app.t SET pad = 'last' WHERE id = 7")
        .unwrap();
    let run = cf.run(&["backup", "bc1", "--wait"]);
    assert!(run.ok, "{run}");
    let bs = cf.last_session(&run);
    assert_eq!(condition(&bs, "RetentionPolicyApplied")["status"], "True");
    assert_eq!(snapshot_count(&cf, "repo"), 1);

    let rs = restore_session("r", "repo", "dst", "latest");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    let got = coffer_testkit::verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, got);
    let repo = cf.get_json("Repository", "repo");
    assert_eq!(repo["status"]["snapshotCount"], 1, "{repo:#}");
    assert_eq!(repo["status"]["integrity"], true, "{repo:#}");
    (case, cf, src)
}

/// The server stopped in the middle of a backup: Failed, no snapshot; then wrong credentials
/// and a missing container fail naming the backend, the container and the fix.
fn faults(backend: Backend) {
    let mut case = Case::start(backend);
    let src = app_db();
    let cf = Coffer::new();
    let dead = format!("http://127.0.0.1:{}", coffer_testkit::free_port());
    let dead_endpoint = match backend {
        Backend::Azure => format!("{dead}/{AZURITE_ACCOUNT}"),
        _ => dead.clone(),
    };
    let container = match backend {
        Backend::Gcs => case.server.bucket().to_string(),
        _ => "coffer-test".to_string(),
    };
    let manifests = [
        case.secret("store", false),
        case.secret("wrong", true),
        case.good_repo("repo"),
        case.repo(
            "wrong-key",
            &case.server.endpoint(),
            &container,
            "x",
            "wrong",
        ),
        case.repo(
            "no-container",
            &case.server.endpoint(),
            "no-such-container",
            "x",
            "store",
        ),
        case.repo("down", &dead_endpoint, &container, "x", "store"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config("bc", "repo", "src", "--databases app", 5),
        backup_config("bc-wrong-key", "wrong-key", "src", "--databases app", 5),
        backup_config(
            "bc-no-container",
            "no-container",
            "src",
            "--databases app",
            5,
        ),
        backup_config("bc-down", "down", "src", "--databases app", 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    assert!(cf.run(&["backup", "bc", "--wait"]).ok);

    // Stopped mid-backup: the dump pauses after its first part, and the server stops meanwhile.
    let marker = cf.path("paused");
    let slow = script(
        &cf,
        "slow-dump",
        &format!(
            "mariadb-dump \"$@\" | {{ head -c 200000; touch {}; sleep 3; cat; }}",
            marker.display()
        ),
    );
    let mut running = cf.cmd();
    running
        .args(["backup", "bc", "--wait"])
        .env("COFFER_MYSQLDUMP", &slow)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let running = running.spawn().unwrap();
    wait_for(&marker);
    case.server.stop();
    let run = Run::from(running.wait_with_output().unwrap());
    assert!(!run.ok, "the backup must fail: {run}");
    let bs = cf.last_session(&run);
    assert_eq!(phase(&bs), "Failed", "{bs:#}");
    eprintln!("{backend:?}: stopped server: {}", error(&bs));
    case.server.start().unwrap();
    assert_eq!(
        snapshot_count(&cf, "repo"),
        1,
        "the failed backup left none"
    );
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "the next backup succeeds: {run}");
    assert_eq!(snapshot_count(&cf, "repo"), 2);

    let name = match backend {
        Backend::Azure => "Azure Blob",
        Backend::Gcs => "GCS",
        Backend::Rest => "REST server",
    };
    let mut cases: Vec<(&str, Vec<String>)> = vec![(
        "bc-down",
        vec![
            "Repository default/down".into(),
            format!("cannot reach the {name}"),
            dead.clone(),
        ],
    )];
    match backend {
        Backend::Azure => {
            cases.push((
                "bc-wrong-key",
                vec![
                    "the Azure Blob service refused the credentials".into(),
                    "AZURE_ACCOUNT_KEY".into(),
                ],
            ));
            cases.push((
                "bc-no-container",
                vec![
                    "Azure Blob container `no-such-container` does not exist".into(),
                    "spec.backend.azure.container".into(),
                ],
            ));
        }
        Backend::Gcs => cases.push((
            "bc-no-container",
            vec![
                "GCS bucket `no-such-container` does not exist".into(),
                "spec.backend.gcs.bucket".into(),
            ],
        )),
        Backend::Rest => cases.push((
            "bc-wrong-key",
            vec![
                "the REST server refused the credentials".into(),
                "REST_SERVER_PASSWORD".into(),
            ],
        )),
    }
    for (bc, needles) in cases {
        let run = cf.run(&["backup", bc, "--wait"]);
        assert_eq!(run.code, Some(1), "{run}");
        let bs = cf.last_session(&run);
        assert_eq!(phase(&bs), "Failed");
        for n in needles {
            assert!(
                error(&bs).contains(&n),
                "{bc}: reason {:?} lacks {n:?}",
                error(&bs)
            );
        }
        assert!(!error(&bs).contains(AZURITE_KEY), "{bs:#}");
    }
}

#[test]
fn azure_round_trip_retention_lock_and_restore() {
    round_trip(Backend::Azure);
}

#[test]
fn azure_server_stopped_wrong_key_and_missing_container() {
    faults(Backend::Azure);
}

#[test]
fn gcs_round_trip_retention_lock_and_restore() {
    round_trip(Backend::Gcs);
}

#[test]
fn gcs_server_stopped_and_missing_bucket() {
    faults(Backend::Gcs);
}

#[test]
fn rest_server_stopped_and_wrong_password() {
    faults(Backend::Rest);
}

/// restic on the REST server's `coffer-test` repository. The URL with its credentials reaches
/// restic through RESTIC_REPOSITORY, never argv (restic 0.14 has no RESTIC_REST_USERNAME).
fn restic_rest(server: &ObjectServer, args: &[&str]) -> Run {
    let (u, p) = server.user();
    let url = format!(
        "rest:http://{u}:{p}@127.0.0.1:{}/coffer-test",
        server.port()
    );
    let out = std::process::Command::new("restic")
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_REPOSITORY", &url)
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .output()
        .unwrap();
    Run::from(out)
}

/// restic reads coffer's REST repository, and coffer restores what restic writes there. The
/// repository URL with its credentials reaches restic through RESTIC_REPOSITORY, never argv
/// (restic 0.14 has no RESTIC_REST_USERNAME/PASSWORD).
#[test]
fn rest_round_trip_and_restic_interop() {
    let (case, cf, src) = round_trip(Backend::Rest);
    let (u, p) = case.server.user();
    let url = format!(
        "rest:http://{u}:{p}@127.0.0.1:{}/coffer-test",
        case.server.port()
    );
    let restic = |args: &[&str]| {
        let r = restic_rest(&case.server, args);
        assert!(r.ok, "restic {args:?}: {r}");
        r.stdout
    };
    let snaps: Vec<serde_json::Value> =
        serde_json::from_str(&restic(&["snapshots", "--json", "--no-lock"])).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/dumpfile.sql"]));
    assert!(restic(&["check"]).contains("no errors were found"));

    // restic writes a snapshot; coffer restores it.
    src.exec("UPDATE app.t SET pad = 'by-restic' WHERE id = 9")
        .unwrap();
    let pipeline = format!(
        "mariadb-dump --defaults-file={} --databases app | restic --no-cache backup --stdin \
         --stdin-filename dumpfile.sql --host host-0 --quiet",
        src.defaults_file().display()
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &pipeline])
        .env("RESTIC_REPOSITORY", &url)
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = MariaDb::start().unwrap();
    let manifests = [
        db_secret("dst2-auth", &dst),
        appbinding("dst2", &dst, "dst2-auth"),
    ]
    .join("---\n");
    assert!(cf.apply("m2.yaml", &manifests).ok);
    let rs = restore_session("r2", "repo", "dst2", "latest");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs2.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    assert_eq!(
        dst.query_strings("SELECT pad FROM app.t WHERE id = 9")
            .unwrap(),
        vec![vec![Some("by-restic".to_string())]]
    );
    assert_eq!(snapshot_count(&cf, "repo"), 2);
}

/// A REST server whose certificate a private CA signed: reached with that CA under
/// CA_CERT_DATA; without it, or with another CA, the backup fails naming CA_CERT_DATA.
#[test]
fn rest_over_tls_with_a_private_ca() {
    let server = ObjectServer::rest_tls().expect("rustic-server is required");
    let tls = server.tls().unwrap();
    let (u, p) = server.user();
    let src = app_db();
    let cf = Coffer::new();
    let store = |name: &str, ca: Option<&str>| {
        let mut pairs = vec![
            ("RESTIC_PASSWORD", REPO_PASSWORD),
            ("REST_SERVER_USERNAME", u),
            ("REST_SERVER_PASSWORD", p),
        ];
        if let Some(ca) = ca {
            pairs.push(("CA_CERT_DATA", ca));
        }
        secret(name, &pairs)
    };
    let repo = |name: &str, secret: &str| {
        format!(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: {name}}}\n\
             spec:\n  backend:\n    rest: {{url: \"{}/coffer-test\"}}\n    storageSecretName: {secret}\n",
            server.endpoint()
        )
    };
    let manifests = [
        store("with-ca", Some(&tls.ca_pem)),
        store("no-ca", None),
        store("wrong-ca", Some(&tls.wrong_ca_pem)),
        repo("repo", "with-ca"),
        repo("repo-no-ca", "no-ca"),
        repo("repo-wrong-ca", "wrong-ca"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config("bc", "repo", "src", "--databases app", 5),
        backup_config("bc-no-ca", "repo-no-ca", "src", "--databases app", 5),
        backup_config("bc-wrong-ca", "repo-wrong-ca", "src", "--databases app", 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let run = cf.run(&["backup", "bc", "--wait"]);
    assert!(run.ok, "{run}");
    assert_eq!(snapshot_count(&cf, "repo"), 1);
    for bc in ["bc-no-ca", "bc-wrong-ca"] {
        let run = cf.run(&["backup", bc, "--wait"]);
        assert_eq!(run.code, Some(1), "{run}");
        let bs = cf.last_session(&run);
        assert_eq!(phase(&bs), "Failed");
        assert!(error(&bs).contains("CA_CERT_DATA"), "{bc}: {}", error(&bs));
    }
}
