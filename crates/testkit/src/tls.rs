//! TLS certificates for test servers, generated in-process with rcgen.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// PEM-encoded certificates and keys for a TLS-enabled test server, plus the files
/// they were written to (for tools that want paths, e.g. `--ssl-ca=`).
///
/// The server certificate is valid for IP `127.0.0.1` and DNS `localhost`; the client
/// certificate (CN `coffer-client`) is signed by the same CA. `wrong_ca_pem` is an
/// unrelated CA that signed nothing here, for "must not verify" tests.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub wrong_ca_pem: String,
    /// Files holding the PEMs above (same names without `_pem`), in one directory.
    pub ca_path: PathBuf,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    pub client_cert_path: PathBuf,
    pub client_key_path: PathBuf,
    pub wrong_ca_path: PathBuf,
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "coffer-testkit");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    Ok(params)
}

fn leaf_params(cn: &str, eku: ExtendedKeyUsagePurpose) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "coffer-testkit");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    Ok(params)
}

impl TlsMaterial {
    /// Generates a fresh CA, server and client certificates (ECDSA P-256) and an
    /// unrelated second CA, and writes them as PEM files into `dir` (created if needed).
    pub fn generate(dir: &Path) -> Result<TlsMaterial> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;

        let ca_key = KeyPair::generate().context("generate CA key")?;
        let ca = ca_params("coffer-testkit CA")?;
        let ca_cert = ca.self_signed(&ca_key).context("self-sign CA")?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().context("generate server key")?;
        let mut server_params = leaf_params("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        server_params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into()?),
        ];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .context("sign server certificate")?;

        let client_key = KeyPair::generate().context("generate client key")?;
        let client_params = leaf_params("coffer-client", ExtendedKeyUsagePurpose::ClientAuth)?;
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .context("sign client certificate")?;

        let wrong_key = KeyPair::generate().context("generate second CA key")?;
        let wrong_ca = ca_params("coffer-testkit unrelated CA")?
            .self_signed(&wrong_key)
            .context("self-sign second CA")?;

        let write = |name: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))?;
            Ok(path)
        };
        let ca_pem = ca_cert.pem();
        let server_cert_pem = server_cert.pem();
        let server_key_pem = server_key.serialize_pem();
        let client_cert_pem = client_cert.pem();
        let client_key_pem = client_key.serialize_pem();
        let wrong_ca_pem = wrong_ca.pem();
        Ok(TlsMaterial {
            ca_path: write("ca.pem", &ca_pem)?,
            server_cert_path: write("server-cert.pem", &server_cert_pem)?,
            server_key_path: write("server-key.pem", &server_key_pem)?,
            client_cert_path: write("client-cert.pem", &client_cert_pem)?,
            client_key_path: write("client-key.pem", &client_key_pem)?,
            wrong_ca_path: write("wrong-ca.pem", &wrong_ca_pem)?,
            ca_pem,
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
            wrong_ca_pem,
        })
    }
}

/// rustls needs a process-wide crypto provider when more than one (ring and aws-lc-rs)
/// is compiled in — which happens in test binaries that link both mysql (aws-lc-rs)
/// and an HTTP stack using ring. Installs aws-lc-rs, mysql's own choice, if nothing
/// is installed yet; a provider installed by the code under test is left alone.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
