//! TLS to the database: a CA in the AppBinding (or its Secret) makes every connection verify
//! the server; a client certificate comes from tlsSecret; a certificate that does not verify
//! fails the session with that reason.

use base64::Engine;
use coffer_testkit::{MariaDb, MariaDbOptions};

use crate::common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn tls_appbinding(
    name: &str,
    db: &MariaDb,
    secret: &str,
    extra_client: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: {name}}}\n\
         spec:\n  clientConfig:\n    url: \"mysql://127.0.0.1:{}/\"\n{extra_client}  secret: {{name: {secret}}}\n{extra}",
        db.port()
    )
}

#[test]
fn tls_verified_with_the_appbinding_ca_and_refused_with_a_wrong_one() {
    let db = MariaDb::start_with(MariaDbOptions {
        tls: true,
        require_secure_transport: true,
        ..Default::default()
    })
    .unwrap();
    db.exec(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1),(2);
         CREATE USER 'certuser'@'%' IDENTIFIED BY 'cert-pass' REQUIRE X509;
         GRANT ALL PRIVILEGES ON *.* TO 'certuser'@'%';",
    )
    .unwrap();
    let tls = db.tls().unwrap();
    let cf = Coffer::new();
    let ca_secret = secret(
        "auth-with-ca",
        &[
            ("username", "root"),
            ("password", db.root_password()),
            ("CA_CERT_DATA", &tls.ca_pem),
        ],
    );
    let tls_secret = secret(
        "client-cert",
        &[
            ("tls.crt", &tls.client_cert_pem),
            ("tls.key", &tls.client_key_pem),
        ],
    );
    let cert_auth = secret(
        "cert-auth",
        &[("username", "certuser"), ("password", "cert-pass")],
    );
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("auth", &db),
        ca_secret,
        tls_secret,
        cert_auth,
        tls_appbinding(
            "ca-bundle",
            &db,
            "auth",
            &format!("    caBundle: {}\n", b64(&tls.ca_pem)),
            "",
        ),
        tls_appbinding("ca-in-secret", &db, "auth-with-ca", "", ""),
        tls_appbinding(
            "wrong-ca",
            &db,
            "auth",
            &format!("    caBundle: {}\n", b64(&tls.wrong_ca_pem)),
            "",
        ),
        tls_appbinding(
            "client-cert",
            &db,
            "cert-auth",
            &format!("    caBundle: {}\n", b64(&tls.ca_pem)),
            "  tlsSecret: {name: client-cert}\n",
        ),
        tls_appbinding(
            "cert-missing",
            &db,
            "cert-auth",
            &format!("    caBundle: {}\n", b64(&tls.ca_pem)),
            "",
        ),
        backup_config("bc-ca", "repo", "ca-bundle", "--databases app", 9),
        backup_config("bc-ca-secret", "repo", "ca-in-secret", "--databases app", 9),
        backup_config("bc-wrong-ca", "repo", "wrong-ca", "--databases app", 9),
        backup_config(
            "bc-client-cert",
            "repo",
            "client-cert",
            "--databases app",
            9,
        ),
        backup_config(
            "bc-cert-missing",
            "repo",
            "cert-missing",
            "--databases app",
            9,
        ),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    for bc in ["bc-ca", "bc-ca-secret", "bc-client-cert"] {
        let run = cf.run(&["backup", bc, "--wait"]);
        assert!(run.ok, "{bc} must succeed over verified TLS:\n{run}");
    }
    let run = cf.run(&["backup", "bc-wrong-ca", "--wait"]);
    assert_eq!(run.code, Some(1), "{run}");
    let bs = cf.last_session(&run);
    assert!(
        error(&bs).contains("TLS to the database of AppBinding default/wrong-ca"),
        "{}",
        error(&bs)
    );
    let run = cf.run(&["backup", "bc-cert-missing", "--wait"]);
    assert_eq!(
        run.code,
        Some(1),
        "a user that requires X509 is refused without tlsSecret:\n{run}"
    );
    assert!(error(&cf.last_session(&run)).contains("cert-missing"));

    // The TLS-verified snapshot restores into the same server over TLS too.
    db.exec("DROP DATABASE app").unwrap();
    let rs = restore_session("r", "repo", "ca-bundle", "latest");
    let r = cf.run(&[
        "restore",
        "-f",
        cf.file("rs.yaml", &rs).to_str().unwrap(),
        "--wait",
    ]);
    assert!(r.ok, "{r}");
    assert_eq!(
        db.query_strings("SELECT COUNT(*) FROM app.t").unwrap()[0][0].as_deref(),
        Some("2")
    );
}
