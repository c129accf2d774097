//! A Galera cluster's full physical backup: coffer asks for a State Snapshot Transfer with
//! `garbd` and receives it itself. The donor connects twice to our listener: first a small
//! xbstream with the Galera position at request time, then the mariabackup/xtrabackup stream.
//! garbd's exit status says nothing, so success is judged from the streams themselves (the
//! data stream must end with the end-of-file chunk of `xtrabackup_info`) and from garbd's log.

use std::{
    io::Read,
    net::{IpAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    process::{spawn_bound, terminate},
    sst_tls::{self, Conn, SstTls},
    xbstream, DbError,
};

/// What to ask the cluster for.
#[derive(Debug, Clone)]
pub struct SstRequest {
    /// `gcomm://host:port,...` — any reachable member will do.
    pub address: String,
    /// `wsrep_cluster_name`.
    pub group: String,
    /// `mariabackup` (MariaDB) or `xtrabackup-v2` (Percona XtraDB Cluster).
    pub sst_method: String,
    /// `wsrep_node_name` of the donor; None lets Galera choose.
    pub donor: Option<String>,
    /// The address the donor connects to (must be reachable from the donor).
    pub listen_host: String,
    pub listen_port: u16,
    /// garbd's own group-communication address.
    pub garbd_host: String,
    pub garbd_port: u16,
    /// How long to wait for each of the donor's two connections, and the longest the donor
    /// may send nothing.
    pub timeout: Duration,
    /// The whole transfer, from the request to the end of the data stream.
    pub deadline: Duration,
    /// The addresses the donor may connect from (the cluster members'); anyone else who
    /// reaches the listener (its port is on garbd's command line) is turned away.
    pub peers: Vec<IpAddr>,
    /// For messages, e.g. `AppBinding demo/cluster`.
    pub label: String,
    /// TLS for the donor's connections (an SST with `[sst] encrypt=2/3/4`); None: plain TCP.
    pub tls: Option<SstTls>,
}

/// An SST in progress: stage 1 received, the data stream not yet.
pub struct Sst {
    req: SstRequest,
    garbd: Option<Child>,
    workdir: tempfile::TempDir,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stage1: Vec<u8>,
    started: Instant,
}

/// Whether a connection from `peer` may carry the SST: only from a cluster member's address
/// (IPv4-mapped IPv6 counts as IPv4). Loopback is not widened to 127.0.0.0/8: a member at
/// 127.0.0.1 admits 127.0.0.1 only.
pub fn peer_allowed(peer: IpAddr, members: &[IpAddr]) -> bool {
    let canon = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    };
    let peer = canon(peer);
    members.iter().any(|m| canon(*m) == peer)
}

/// A refused SST stream, with the likely cause when it is not an xbstream from its first
/// byte: the donor encrypts its SST and the listener has no TLS.
fn refusal(r: &xbstream::Refused) -> String {
    match r {
        xbstream::Refused::Format { offset: 0, .. } => format!(
            "{r} — if the donor encrypts its SST ([sst] encrypt=2/3/4, or ssl-mode other than \
             DISABLED), give the listener a certificate: set the task param sstTLSSecret to a \
             Secret with tls.crt, tls.key (and ca.crt to verify the donor)"
        ),
        _ => r.to_string(),
    }
}

/// The host of `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
fn host_of(a: &str) -> &str {
    let a = a.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match a.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => a,
    }
}

/// The addresses of a cluster's members: the hosts of a `gcomm://h1:p1,h2:p2?opts` address
/// and any further member addresses (`wsrep_node_address` values), resolved.
pub fn member_addresses(gcomm: &str, more: &[String]) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    let list = gcomm.trim_start_matches("gcomm://");
    let list = list.split('?').next().unwrap_or("");
    let mut out: Vec<IpAddr> = Vec::new();
    for a in list.split(',').chain(more.iter().map(String::as_str)) {
        let host = host_of(a);
        if host.is_empty() {
            continue;
        }
        if let Ok(addrs) = (host, 0u16).to_socket_addrs() {
            for sa in addrs {
                if !out.contains(&sa.ip()) {
                    out.push(sa.ip());
                }
            }
        }
    }
    out
}

fn garbd_binary() -> PathBuf {
    std::env::var_os("COFFER_GARBD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("garbd"))
}

impl Sst {
    /// Listens, starts garbd, and waits for the donor's first connection (the position).
    pub fn start(req: SstRequest) -> Result<Sst, DbError> {
        let fail = |reason: String| DbError::Sst {
            target: req.label.clone(),
            reason,
        };
        let tls = match &req.tls {
            Some(t) => Some(t.server_config().map_err(&fail)?),
            None => None,
        };
        if req.peers.is_empty() {
            return Err(fail(format!(
                "none of the cluster's addresses ({}) resolves, so no donor could be told from \
                 a stranger: fix the AppBinding's address",
                req.address
            )));
        }
        let listener =
            TcpListener::bind((req.listen_host.as_str(), req.listen_port)).map_err(|e| {
                fail(format!(
                    "cannot listen on {}:{} for the donor's stream: {e}",
                    req.listen_host, req.listen_port
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| fail(e.to_string()))?
            .port();
        let workdir = tempfile::Builder::new()
            .prefix("coffer-garbd-")
            .tempdir_in(crate::process::scratch_dir())
            .map_err(|e| fail(format!("cannot create garbd's work directory: {e}")))?;
        let log = workdir.path().join("garbd.log");
        let sst = format!(
            "{}:{}:{port}/xtrabackup_sst//1",
            req.sst_method, req.listen_host
        );
        let mut cmd = Command::new(garbd_binary());
        cmd.arg("--address")
            .arg(&req.address)
            .arg("--group")
            .arg(&req.group)
            .arg("--name")
            .arg(format!("coffer-{}", std::process::id()))
            .arg("--workdir")
            .arg(workdir.path())
            .arg("--options")
            .arg(format!(
                "gmcast.listen_addr=tcp://{}:{}",
                req.garbd_host, req.garbd_port
            ))
            .arg("--sst")
            .arg(&sst)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = &req.donor {
            cmd.arg("--donor").arg(d);
        }
        // garbd must never outlive us.
        let garbd = spawn_bound(cmd).map_err(|e| {
            fail(format!(
                "cannot start garbd ({e}): install galera-arbitrator-4"
            ))
        })?;
        tracing::info!(
            "garbd requested an SST ({}) from {} in group `{}`; listening on {}:{port}{}",
            req.sst_method,
            req.donor.as_deref().unwrap_or("a donor Galera picks"),
            req.group,
            req.listen_host,
            if tls.is_some() { " (TLS)" } else { "" }
        );
        let mut sst = Sst {
            req,
            garbd: Some(garbd),
            workdir,
            listener,
            tls,
            stage1: Vec::new(),
            started: Instant::now(),
        };
        let conn = sst.accept("the donor's first connection (the Galera position)")?;
        let mut buf = Vec::new();
        let mut stage = Timed {
            conn,
            stall: sst.req.timeout,
            deadline: sst.started + sst.req.deadline,
        };
        // Checked as it arrives: an encrypting donor's ClientHello waits for an answer, so
        // reading to the end first would only end at the stall timeout, saying nothing useful.
        let mut check = xbstream::PathCheck::new();
        let mut limited = (&mut stage).take(16 << 20);
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = match limited.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(sst.fail(format!("reading the position stage failed: {e}"))),
            };
            check
                .feed(&chunk[..n])
                .map_err(|r| sst.fail(format!("the position stage: {}", refusal(&r))))?;
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.is_empty() {
            return Err(sst.fail(
                "the donor's first connection carried nothing: its SST script failed (see the \
                 donor's error log)"
                    .into(),
            ));
        }
        tracing::info!("SST stage 1 received ({} bytes)", buf.len());
        sst.stage1 = buf;
        Ok(sst)
    }

    fn fail(&self, reason: String) -> DbError {
        DbError::Sst {
            target: self.req.label.clone(),
            reason,
        }
    }

    fn garbd_log(&self) -> String {
        std::fs::read_to_string(self.workdir.path().join("garbd.log")).unwrap_or_default()
    }

    /// garbd's own word on why the request failed, if it said one.
    fn garbd_failure(&self) -> Option<String> {
        let log = self.garbd_log();
        let line = log.lines().find(|l| {
            l.contains("FATAL")
                || l.contains("State transfer request failed")
                || l.contains("Requested donor is not available")
        })?;
        let why = line.split("]: ").last().unwrap_or(line).trim().to_string();
        let hint = if line.contains("-77") {
            format!(
                " — donor `{}` is not in a state to send a snapshot (not Synced, or busy with \
                 another transfer); retry when it is Synced",
                self.req.donor.as_deref().unwrap_or("?")
            )
        } else if line.contains("donor") || line.contains("-113") {
            format!(
                " — donor `{}` does not exist in group `{}` or is not Synced",
                self.req.donor.as_deref().unwrap_or("?"),
                self.req.group
            )
        } else {
            String::new()
        };
        Some(format!("garbd: {why}{hint}"))
    }

    /// The next connection from a member, TLS-decrypted when the listener has TLS: the
    /// allow-list and the timeouts apply before and during the handshake alike.
    fn accept(&mut self, what: &str) -> Result<Conn, DbError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| self.fail(e.to_string()))?;
        let deadline = (Instant::now() + self.req.timeout).min(self.started + self.req.deadline);
        loop {
            match self.listener.accept() {
                Ok((_, peer)) if !peer_allowed(peer.ip(), &self.req.peers) => {
                    tracing::warn!(
                        "turned away a connection from {peer} while waiting for {what}: only \
                         the cluster's members ({}) may send the SST",
                        self.peer_list()
                    );
                }
                Ok((s, peer)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| self.fail(e.to_string()))?;
                    let Some(tls) = &self.tls else {
                        tracing::info!("{what}: connected from {peer}");
                        return Ok(Conn::Plain(s));
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let conn = sst_tls::handshake(s, tls, left.max(Duration::from_secs(1)))
                        .map_err(|e| self.fail(format!("{what} from {peer}: {e}")))?;
                    tracing::info!("{what}: connected from {peer} over TLS");
                    return Ok(conn);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.fail(format!("accepting {what} failed: {e}"))),
            }
            if let Some(why) = self.garbd_failure() {
                return Err(self.fail(why));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "{what} did not arrive within {}s: check that the AppBinding's group `{}` is \
                     the cluster's wsrep_cluster_name, that the donor can reach {}:{}, and the \
                     donor's error log",
                    self.req.timeout.as_secs(),
                    self.req.group,
                    self.req.listen_host,
                    self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn peer_list(&self) -> String {
        self.req
            .peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The position stage as received (an xbstream archive).
    pub fn stage1(&self) -> &[u8] {
        &self.stage1
    }

    /// `uuid:seqno` the donor reported when the request arrived.
    pub fn requested_position(&self) -> Option<String> {
        let info = xbstream::file_content(&self.stage1, "xtrabackup_galera_info")?;
        let text = String::from_utf8_lossy(&info);
        xbstream::galera_position(&text).map(|(u, s)| format!("{u}:{s}"))
    }

    /// The data stream. The donor opens it after its own pause (10 s for mariabackup); the
    /// connection is accepted on the first read.
    pub fn into_stream(self) -> SstStream {
        SstStream {
            sst: self,
            conn: None,
            tail: Vec::new(),
            bytes: Arc::new(AtomicU64::new(0)),
            done: false,
            check: xbstream::PathCheck::capturing(xbstream::BINLOG_INFO),
            on_position: None,
            failed: None,
        }
    }
}

impl Drop for Sst {
    fn drop(&mut self) {
        if let Some(mut g) = self.garbd.take() {
            terminate(&mut g);
        }
    }
}

/// The donor's mariabackup stream. Reading it to the end succeeds only when the stream ends
/// with `xtrabackup_info`'s end-of-file chunk; otherwise the last read fails, so no snapshot
/// of a partial stream is ever committed.
pub struct SstStream {
    sst: Sst,
    conn: Option<Timed>,
    tail: Vec<u8>,
    bytes: Arc<AtomicU64>,
    done: bool,
    check: xbstream::PathCheck,
    on_position: Option<crate::mysqldump::OnPosition>,
    /// Why the stream failed; every later read fails the same way.
    failed: Option<DbError>,
}

/// A donor connection whose reads give up after `stall` without data, and at `deadline`
/// whatever the pace: a trickle cannot hold the repository's lock for ever.
struct Timed {
    conn: Conn,
    stall: Duration,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the transfer reached its deadline",
            ));
        }
        self.conn
            .tcp()
            .set_read_timeout(Some(self.stall.min(left).max(Duration::from_millis(1))))?;
        match self.conn.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let why = if Instant::now() >= self.deadline {
                    "the transfer reached its deadline".to_string()
                } else {
                    format!("the donor sent nothing for {}s", self.stall.as_secs())
                };
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
            }
            other => other,
        }
    }
}

impl Timed {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.conn.peer()
    }
}

impl SstStream {
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.sst.started.elapsed()
    }

    /// `f` gets the donor's binlog position its backup is consistent at (the donor writes a
    /// binlog) once the stream has ended complete, before the stream's last read returns.
    pub fn on_position(&mut self, f: crate::mysqldump::OnPosition) {
        self.on_position = Some(f);
    }
}

impl SstStream {
    fn fail(&mut self, reason: String) -> std::io::Error {
        let e = self.sst.fail(reason);
        self.failed = Some(e.clone());
        if let Some(mut g) = self.sst.garbd.take() {
            terminate(&mut g);
        }
        std::io::Error::other(e)
    }
}

impl Read for SstStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(std::io::Error::other(e.clone()));
        }
        if self.done {
            return Ok(0);
        }
        if self.conn.is_none() {
            let c = self
                .sst
                .accept("the donor's data stream")
                .map_err(std::io::Error::other)?;
            // A donor that stalls for this long has failed.
            let c = Timed {
                conn: c,
                stall: self.sst.req.timeout.max(Duration::from_secs(60)),
                deadline: self.sst.started + self.sst.req.deadline,
            };
            tracing::debug!("data stream from {:?}", c.peer());
            self.conn = Some(c);
        }
        let n = match self.conn.as_mut().expect("connected").read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let got = self.bytes.load(Ordering::Relaxed);
                return Err(self.fail(format!(
                    "{e}, after {got} bytes of the data stream and {}s of the {}s the transfer \
                     may take; if the cluster needs longer, raise the task param sstDeadline",
                    self.sst.started.elapsed().as_secs(),
                    self.sst.req.deadline.as_secs()
                )));
            }
        };
        if n > 0 {
            if let Err(r) = self.check.feed(&buf[..n]) {
                return Err(self.fail(format!("the data stream: {}", refusal(&r))));
            }
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.tail.extend_from_slice(&buf[n.saturating_sub(64)..n]);
            if self.tail.len() > 64 {
                let cut = self.tail.len() - 64;
                self.tail.drain(..cut);
            }
            return Ok(n);
        }
        self.done = true;
        if let Some(mut g) = self.sst.garbd.take() {
            terminate(&mut g);
        }
        let total = self.bytes.load(Ordering::Relaxed);
        if total == 0 {
            return Err(self.fail(
                "the donor sent an empty data stream: its mariabackup failed — often wrong SST \
                 credentials (wsrep_sst_auth) on the donor; see the donor's error log"
                    .into(),
            ));
        }
        if !xbstream::ends_complete(&self.tail) {
            return Err(self.fail(format!(
                "the donor's stream ended after {total} bytes without the end of \
                 xtrabackup_info: the transfer was cut short"
            )));
        }
        if let Some(f) = self.on_position.take() {
            if let Some(p) = crate::physical::stream_position(&self.check) {
                f(p);
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SST request to a listener on `port` whose only member is 127.0.0.1; garbd is
    /// `COFFER_GARBD=true`, so only the test's own donor connects.
    fn request(port: u16, tls: Option<SstTls>) -> SstRequest {
        SstRequest {
            address: "gcomm://127.0.0.1:1".into(),
            group: "g".into(),
            sst_method: "mariabackup".into(),
            donor: None,
            listen_host: "127.0.0.1".into(),
            listen_port: port,
            garbd_host: "127.0.0.1".into(),
            garbd_port: 1,
            timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(20),
            peers: vec!["127.0.0.1".parse().unwrap()],
            label: "AppBinding test/cluster".into(),
            tls,
        }
    }

    #[test]
    fn only_the_members_addresses_may_send_the_sst() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let members = [ip("10.0.0.1"), ip("10.0.0.2"), ip("127.0.0.1")];
        assert!(peer_allowed(ip("10.0.0.2"), &members));
        assert!(peer_allowed(ip("127.0.0.1"), &members));
        assert!(peer_allowed(ip("::ffff:10.0.0.1"), &members), "IPv4-mapped");
        assert!(!peer_allowed(ip("10.0.0.3"), &members));
        assert!(
            !peer_allowed(ip("127.0.0.2"), &members),
            "loopback is not widened"
        );
        assert!(!peer_allowed(ip("::1"), &members));
        assert!(!peer_allowed(ip("10.0.0.1"), &[]));
        assert!(peer_allowed(ip("10.0.0.1"), &[ip("::ffff:10.0.0.1")]));
    }

    /// With TLS configured, the listener refuses the donor's first connection when it speaks
    /// plaintext, and says why, instead of reading it as an SST.
    #[test]
    fn the_tls_listener_refuses_a_plaintext_donor() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let m = coffer_testkit::TlsMaterial::generate(dir.path()).unwrap();
        // No garbd: a program that exits at once; the test plays the donor.
        std::env::set_var("COFFER_GARBD", "true");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let donor = std::thread::spawn(move || {
            for _ in 0..200 {
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.write_all(b"XBSTCK01\0\0\0\0");
                    return true;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            false
        });
        let req = request(
            port,
            Some(SstTls {
                cert_pem: m.server_cert_pem.into_bytes(),
                key_pem: m.server_key_pem.into_bytes(),
                ca_pem: None,
                source: "Secret test/sst-tls".into(),
            }),
        );
        let err = Sst::start(req).err().expect("a plaintext donor is refused");
        assert!(donor.join().unwrap(), "the test donor connected");
        let said = err.to_string();
        assert!(
            said.contains("AppBinding test/cluster")
                && said.contains("plaintext, not TLS")
                && said.contains("first connection"),
            "{said}"
        );
    }

    /// Without TLS, an encrypting donor's ClientHello is named as such at once, not after the
    /// stall timeout as "sent nothing".
    #[test]
    fn a_plain_listener_names_an_encrypting_donor_at_once() {
        use std::io::Write;
        std::env::set_var("COFFER_GARBD", "true");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let donor = std::thread::spawn(move || {
            for _ in 0..200 {
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    // Something like a ClientHello (a real one is hundreds of bytes), then
                    // waiting for the ServerHello.
                    let hello = [
                        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                    ];
                    let _ = s.write_all(&hello.repeat(8));
                    while !s2.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let req = request(port, None);
        let t = Instant::now();
        let err = Sst::start(req).err().expect("a TLS donor is refused");
        stop.store(true, Ordering::SeqCst);
        donor.join().unwrap();
        let said = err.to_string();
        assert!(
            said.contains("encrypts its SST") && said.contains("sstTLSSecret"),
            "{said}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn members_come_from_the_gcomm_list_and_the_node_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            member_addresses(
                "gcomm://10.0.0.1:4567,10.0.0.2,[fd00::3]:4567?pc.wait_prim=no",
                &["10.0.0.4:4567".into(), "10.0.0.1".into(), "fd00::5".into()]
            ),
            vec![
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                ip("fd00::3"),
                ip("10.0.0.4"),
                ip("fd00::5")
            ]
        );
        assert_eq!(member_addresses("gcomm://", &[]), Vec::<IpAddr>::new());
        assert!(member_addresses("gcomm://localhost:4567", &[]).contains(&ip("127.0.0.1")));
    }
}
