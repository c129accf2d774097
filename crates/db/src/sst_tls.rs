//! TLS on the Galera SST listener. A donor with `[sst] encrypt=2/3/4` (or an `ssl-mode` other
//! than DISABLED) sends its SST through `socat openssl-connect`, so coffer must be the TLS
//! server: it presents a certificate the donor checks against its `tca`, and when given a CA
//! it requires the donor's own certificate (`tcert`) to chain to it.

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

/// The listener's certificate and key, and optionally the CA the donor's client certificate
/// must chain to. Held in memory only; never logged (Debug leaves the PEMs out).
#[derive(Clone)]
pub struct SstTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Option<Vec<u8>>,
    /// Where they came from, for messages: e.g. `Secret demo/sst-tls`.
    pub source: String,
}

impl std::fmt::Debug for SstTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SstTls")
            .field("source", &self.source)
            .field("verifies_donor", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// aws-lc-rs: the provider rustls is already built with for mysql's `rustls-tls`, passed
/// explicitly so nothing depends on a process-wide default.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl SstTls {
    /// The rustls server configuration; errors name the Secret key at fault, never its content.
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let src = &self.source;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{src}: `tls.crt` is not PEM certificates ({e})"))?;
        if certs.is_empty() {
            return Err(format!("{src}: `tls.crt` holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|_| format!("{src}: `tls.key` holds no PEM private key"))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    let c = c.map_err(|e| format!("{src}: `ca.crt` is not PEM ({e})"))?;
                    roots.add(c).map_err(|e| format!("{src}: `ca.crt`: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{src}: `ca.crt` holds no certificate"));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .map_err(|e| format!("{src}: `ca.crt`: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!("{src}: `tls.crt` and `tls.key` do not make a server identity: {e}")
        })?;
        // One connection per stage and no resumption: tickets would only be writes the
        // donor's one-way socat never reads.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// A donor connection, plain or decrypted.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.tcp().peer_addr().ok()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            // The donor's socat ends with a close_notify; an end without one (a cut
            // connection, or a forged FIN) is an error here, not the end of the stream.
            Conn::Tls(s) => s.read(buf),
        }
    }
}

/// The TLS handshake on an accepted connection, within `timeout`. A peer that speaks
/// plaintext is told apart from one whose certificate fails, since the fixes differ.
pub(crate) fn handshake(
    tcp: TcpStream,
    config: &Arc<ServerConfig>,
    timeout: Duration,
) -> Result<Conn, String> {
    let io = |e: std::io::Error| format!("the TLS handshake failed: {e}");
    tcp.set_read_timeout(Some(timeout)).map_err(io)?;
    tcp.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut first = [0u8; 1];
    match tcp.peek(&mut first) {
        Ok(0) => return Err("the peer closed the connection before a TLS handshake".into()),
        // 0x16: a TLS handshake record. Anything else is not TLS (an xbstream starts `X`).
        Ok(_) if first[0] != 0x16 => {
            return Err(
                "the peer sent plaintext, not TLS: the donor does not encrypt its SST — set \
                 `[sst] encrypt=3` (or 4) with tcert/tkey/tca on the donor, or drop the task \
                 param sstTLSSecret"
                    .into(),
            )
        }
        Ok(_) => {}
        Err(e) => return Err(io(e)),
    }
    let mut conn = ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            format!(
                "the TLS handshake failed: {e} — check that the donor's tca is the CA of \
                 sstTLSSecret's tls.crt and, if the Secret has ca.crt, that the donor's tcert \
                 is signed by it (for client use)"
            )
        })?;
    }
    // The write timeout stays: rustls may still write (alerts) while reading, and a donor
    // that never reads must not hold us.
    Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{pki_types::ServerName, ClientConfig, ClientConnection};
    use std::{io::Write, net::TcpListener, thread::JoinHandle};

    fn material() -> (tempfile::TempDir, coffer_testkit::TlsMaterial) {
        let dir = tempfile::tempdir().unwrap();
        let m = coffer_testkit::TlsMaterial::generate(dir.path()).unwrap();
        (dir, m)
    }

    fn listener_tls(m: &coffer_testkit::TlsMaterial) -> SstTls {
        SstTls {
            cert_pem: m.server_cert_pem.clone().into_bytes(),
            key_pem: m.server_key_pem.clone().into_bytes(),
            ca_pem: Some(m.ca_pem.clone().into_bytes()),
            source: "Secret test/sst-tls".into(),
        }
    }

    /// One connection through `handshake`, read to its end.
    fn serve(tls: &SstTls) -> (u16, JoinHandle<Result<Vec<u8>, String>>) {
        let config = tls.server_config().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            let mut c = handshake(s, &config, Duration::from_secs(10))?;
            let mut got = Vec::new();
            c.read_to_end(&mut got).map_err(|e| e.to_string())?;
            Ok(got)
        });
        (port, t)
    }

    /// What the donor's `socat openssl-connect` does: verify the listener against the CA,
    /// present the client certificate (if any), send, close_notify.
    fn donor(port: u16, m: &coffer_testkit::TlsMaterial, with_cert: bool, data: &[u8]) {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(m.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let b = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = if with_cert {
            b.with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(m.client_cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(m.client_key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
        } else {
            b.with_no_client_auth()
        };
        let conn = ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        // The server may refuse mid-way; the test judges by what the server saw.
        let _ = s.write_all(data);
        s.conn.send_close_notify();
        let _ = s.flush();
    }

    #[test]
    fn a_donor_with_a_certificate_from_the_ca_is_decrypted() {
        let (_d, m) = material();
        let (port, server) = serve(&listener_tls(&m));
        let data = b"XBSTCK01 the donor's stream".repeat(1000);
        donor(port, &m, true, &data);
        assert_eq!(server.join().unwrap().unwrap(), data);
    }

    #[test]
    fn a_donor_without_a_client_certificate_is_refused_when_a_ca_is_given() {
        let (_d, m) = material();
        let (port, server) = serve(&listener_tls(&m));
        donor(port, &m, false, b"XBSTCK01");
        let err = server.join().unwrap().unwrap_err();
        assert!(err.contains("TLS handshake failed"), "{err}");
    }

    #[test]
    fn plaintext_is_refused_and_named() {
        let (_d, m) = material();
        let (port, server) = serve(&listener_tls(&m));
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(b"XBSTCK01\0\0\0\0").unwrap();
        let err = server.join().unwrap().unwrap_err();
        assert!(
            err.contains("plaintext") && err.contains("sstTLSSecret"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_secret_is_named_without_its_content() {
        let (_d, m) = material();
        let mut t = listener_tls(&m);
        t.key_pem = b"not a key: s3cr3t".to_vec();
        let err = t.server_config().unwrap_err();
        assert!(
            err.contains("Secret test/sst-tls") && err.contains("tls.key"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
        let mut t = listener_tls(&m);
        t.ca_pem = Some(b"junk".to_vec());
        assert!(t.server_config().unwrap_err().contains("ca.crt"));
        assert!(!format!("{:?}", listener_tls(&m)).contains("BEGIN"));
    }
}
