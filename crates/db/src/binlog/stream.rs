//! The replication connection: checks the server can serve the requested GTID state, then
//! streams its binlog from there, each event rebuilt byte-exact and CRC-checked.
//!
//! MariaDB only sends GTID events to a replica that declares the capability
//! (`@mariadb_slave_capability=4`); without it they arrive rewritten as `BEGIN` queries and
//! the archive would silently have no GTIDs (pitr.md §1). Any error ends the stream: the
//! driver's iterator keeps reading after a parse error and would drop an event, so a
//! [`BinlogSource`] answers nothing after its first error; the caller reconnects from the
//! last archived GTID state.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use coffer_api::gtid::{Domain, Flavour, Gtid, GtidState};
use mysql::{prelude::Queryable, BinlogRequest};

use super::{
    checks::{check_mysql, classify_1236, detect_flavour, replica_uuid, sid_block, MySqlGtidFacts},
    event::{kind, Bad, Header, RawEvent},
    segment::{SegmentError, SegmentSink, SegmentWriter, SourceServer},
};
use crate::{conn, ClientFiles, ConnSpec, DbError};

/// What ends a capture, classified for the timeline: only [`CaptureError::retryable`] ones
/// are worth reconnecting to the same server for.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "the binlog of {target} no longer holds the transactions after GTID state `{state}` \
         ({message}): they were purged before they were archived — the timeline has a gap \
         here; a new base backup starts a new one"
    )]
    Purged {
        target: String,
        state: String,
        message: String,
    },
    #[error(
        "{target} has not reached GTID state `{state}` yet (its binlog ends at `{server_pos}`): \
         it lags behind what was archived — read another node, or wait for it to catch up"
    )]
    Ahead {
        target: String,
        state: String,
        server_pos: String,
        message: String,
    },
    #[error(
        "the GTID history of {target} diverged from the archive at `{state}` ({message}): a \
         failover to a server that missed transactions, or RESET MASTER (RESET BINARY LOGS \
         AND GTIDS on MySQL 8.4+) — the timeline has a gap here"
    )]
    Diverged {
        target: String,
        state: String,
        message: String,
    },
    #[error(
        "{target} has no binlog for GTID domain(s) {domains:?} the archive has reached \
         (`{state}`; the server's binlog state is `{server_state}`): RESET MASTER, or another \
         server's history — the timeline has a gap here"
    )]
    UnknownDomain {
        target: String,
        domains: Vec<Domain>,
        state: String,
        server_state: String,
    },
    #[error(
        "{target} already has a replica registered with server_id {server_id} (SHOW SLAVE \
         HOSTS); connecting would make the server kill it — another archive or replica uses \
         this id (give one of them another), or the server still holds a stream of this \
         archive it should have dropped after a few heartbeats"
    )]
    ServerIdInUse { target: String, server_id: u32 },
    #[error("{target} cannot be archived: {reason}")]
    Unsupported { target: String, reason: String },
    #[error("the binlog stream from {target} broke: {reason} — reconnecting resumes it")]
    Connection { target: String, reason: String },
    #[error("the binlog stream from {target} is corrupt: {reason}")]
    Corrupt { target: String, reason: String },
    #[error(transparent)]
    Db(DbError),
    #[error(transparent)]
    Sink(SegmentError),
}

impl CaptureError {
    /// An [`CaptureError::Ahead`] once no node will catch up (the archive declares a gap):
    /// the server's history went back — RESET MASTER / RESET BINARY LOGS AND GTIDS and new
    /// writes, or a server restored from an older backup — so it is a divergence, not a lag
    /// to wait for. Any other error is returned as it is.
    pub fn into_diverged(self) -> CaptureError {
        match self {
            CaptureError::Ahead {
                target,
                state,
                server_pos,
                message,
            } => CaptureError::Diverged {
                target,
                state,
                message: format!("its binlog ends before it, at `{server_pos}`: {message}"),
            },
            e => e,
        }
    }

    /// Reconnecting to the same server from the last archived state may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CaptureError::Connection { .. } | CaptureError::Db(DbError::Connect { .. })
        )
    }
}

/// How the archive registers and how often the server proves it is alive.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// The replica id ([`super::archive_server_id`]).
    pub server_id: u32,
    /// The server sends a heartbeat after this long without events (default 1 s): keep it
    /// below the flush interval, it is what closes a due segment on an idle server.
    pub heartbeat: Duration,
}

impl StreamOptions {
    pub fn new(server_id: u32) -> Self {
        StreamOptions {
            server_id,
            heartbeat: Duration::from_secs(1),
        }
    }

    /// A read waits at least two heartbeats (and 10 s) before the stream is declared dead.
    pub fn read_timeout(&self) -> Duration {
        (self.heartbeat * 2).max(Duration::from_secs(10))
    }
}

/// An open binlog stream from one server.
pub struct BinlogSource {
    stream: mysql::BinlogStream,
    target: String,
    server: SourceServer,
    start: GtidState,
    server_pos: GtidState,
    seen_fde: bool,
    failed: bool,
}

/// `@@gtid_binlog_state`: one GTID per (domain, server) pair, so a domain can appear twice.
fn parse_gtid_list(s: &str) -> Result<Vec<Gtid>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// Connects to the server of `spec`, checks it can serve the transactions after `start`,
/// and starts streaming them (MariaDB or MySQL, told apart by `@@version`).
pub fn open(
    spec: &ConnSpec,
    files: &ClientFiles,
    opts: StreamOptions,
    start: &GtidState,
) -> Result<BinlogSource, CaptureError> {
    let target = spec.label.clone();
    let mut c =
        conn::connect_replication(spec, files, opts.read_timeout()).map_err(CaptureError::Db)?;
    let q = |e: mysql::Error| CaptureError::Db(conn::classify(spec, &e));
    let unsupported = |reason: String| CaptureError::Unsupported {
        target: target.clone(),
        reason,
    };
    type Facts = (String, u64, i64, String);
    let (version, server_id, log_bin, checksum): Facts = c
        .query_first("SELECT @@version, @@server_id, @@log_bin, @@binlog_checksum")
        .map_err(q)?
        .ok_or_else(|| unsupported("it returned no server variables".into()))?;
    let flavour = detect_flavour(&version);
    if flavour == Flavour::MariaDb && start.flavour() == Some(Flavour::MySql) {
        return Err(unsupported(format!(
            "it is MariaDB ({version}), and the archive is at the MySQL GTID state `{start}`: \
             another server's history — give this server its own archive"
        )));
    }
    if log_bin == 0 {
        return Err(unsupported(
            "its binary log is off (start it with log_bin, binlog_format=ROW)".into(),
        ));
    }
    if !checksum.eq_ignore_ascii_case("CRC32") {
        return Err(unsupported(format!(
            "binlog_checksum is {checksum}; every archived event's CRC32 is verified, so the \
             server must write them (SET GLOBAL binlog_checksum=CRC32)"
        )));
    }
    if server_id == u64::from(opts.server_id) {
        return Err(CaptureError::ServerIdInUse {
            target,
            server_id: opts.server_id,
        });
    }
    wait_for_free_id(&mut c, spec, flavour, opts)?;
    let (server_pos, request) = match flavour {
        Flavour::MariaDb => {
            let pos = prepare_mariadb(&mut c, spec, opts, start)?;
            (pos, BinlogRequest::new(opts.server_id))
        }
        Flavour::MySql => {
            let pos = prepare_mysql(&mut c, spec, opts, start)?;
            let request = BinlogRequest::new(opts.server_id)
                .with_use_gtid(true)
                .with_sids(sid_block(start));
            (pos, request)
        }
    };
    let stream = c
        .get_binlog_stream(request)
        .map_err(|e| CaptureError::Connection {
            target: target.clone(),
            reason: format!("registering as replica {}: {e}", opts.server_id),
        })?;
    Ok(BinlogSource {
        stream,
        target,
        server: SourceServer {
            server_id: server_id as u32,
            address: spec.address(),
        },
        start: start.clone(),
        server_pos,
        seen_fde: false,
        failed: false,
    })
}

/// Refuses a server_id the server already lists as a replica. Our own previous stream may
/// still be listed for a moment after it broke: the server drops it when a heartbeat to it
/// fails. A live replica with the same id stays.
fn wait_for_free_id(
    c: &mut mysql::Conn,
    spec: &ConnSpec,
    flavour: Flavour,
    opts: StreamOptions,
) -> Result<(), CaptureError> {
    // MySQL 8.4 removed SHOW SLAVE HOSTS; SHOW REPLICAS exists since 8.0.22.
    let (statement, grant) = match flavour {
        Flavour::MariaDb => ("SHOW SLAVE HOSTS", "REPLICATION MASTER ADMIN"),
        Flavour::MySql => ("SHOW REPLICAS", "REPLICATION SLAVE"),
    };
    let deadline = Instant::now() + opts.heartbeat * 5 + Duration::from_secs(1);
    loop {
        let replicas: Vec<mysql::Row> = c.query(statement).map_err(|e| {
            CaptureError::Db(match conn::classify(spec, &e) {
                DbError::Query { target, reason } => DbError::Query {
                    target,
                    reason: format!(
                        "{reason} — {statement}, run to refuse a server_id already in use, \
                         needs {grant}"
                    ),
                },
                other => other,
            })
        })?;
        let taken = replicas
            .iter()
            .any(|r| r.get::<u64, _>(0) == Some(u64::from(opts.server_id)));
        if !taken {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CaptureError::ServerIdInUse {
                target: spec.label.clone(),
                server_id: opts.server_id,
            });
        }
        std::thread::sleep(opts.heartbeat.min(Duration::from_millis(500)));
    }
}

/// MariaDB: checks the domains of `start`, then sets the session up for a GTID stream
/// (pitr.md §1). Returns the server's binlog position.
fn prepare_mariadb(
    c: &mut mysql::Conn,
    spec: &ConnSpec,
    opts: StreamOptions,
    start: &GtidState,
) -> Result<GtidState, CaptureError> {
    let target = spec.label.clone();
    let q = |e: mysql::Error| CaptureError::Db(conn::classify(spec, &e));
    let (binlog_state, binlog_pos): (String, String) = c
        .query_first("SELECT @@gtid_binlog_state, @@gtid_binlog_pos")
        .map_err(q)?
        .unwrap_or_default();
    let server_state = parse_gtid_list(&binlog_state).map_err(|e| CaptureError::Corrupt {
        target: target.clone(),
        reason: format!("@@gtid_binlog_state: {e}"),
    })?;
    // The server accepts a connect state naming a domain it never had and streams from
    // there without a word: a gap coffer must see itself.
    let missing: Vec<Domain> = start
        .0
        .keys()
        .copied()
        .filter(|d| !server_state.iter().any(|g| g.domain == *d))
        .collect();
    if !missing.is_empty() {
        return Err(CaptureError::UnknownDomain {
            target,
            domains: missing,
            state: start.to_string(),
            server_state: binlog_state,
        });
    }
    let server_pos: GtidState = binlog_pos.parse().map_err(|e| CaptureError::Corrupt {
        target: target.clone(),
        reason: format!("@@gtid_binlog_pos: {e}"),
    })?;
    // The state is digits, dashes and commas (it was parsed, and is MariaDB's: open refused
    // a MySQL one), so it is safe in the statement.
    c.query_drop(format!(
        "SET @mariadb_slave_capability=4, @slave_connect_state='{start}', \
         @slave_gtid_strict_mode=1, @master_heartbeat_period={}",
        opts.heartbeat.as_nanos()
    ))
    .map_err(q)?;
    Ok(server_pos)
}

/// MySQL: reads the GTID facts, checks them ([`check_mysql`]), then sets the session up
/// for a GTID stream. The driver sets `@master_binlog_checksum='ALL'` when it registers;
/// MySQL reads `@source_binlog_checksum` first (8.0.26+), so CRC32 stands. Returns the
/// server's executed state.
fn prepare_mysql(
    c: &mut mysql::Conn,
    spec: &ConnSpec,
    opts: StreamOptions,
    start: &GtidState,
) -> Result<GtidState, CaptureError> {
    let q = |e: mysql::Error| CaptureError::Db(conn::classify(spec, &e));
    let (gtid_mode, executed, purged): (String, String, String) = c
        .query_first("SELECT @@gtid_mode, @@gtid_executed, @@gtid_purged")
        .map_err(q)?
        .unwrap_or_default();
    // Absent before 8.0.20: an error here means "no compression".
    let compression: Option<bool> = c
        .query_first::<Option<String>, _>("SELECT @@binlog_transaction_compression")
        .ok()
        .flatten()
        .flatten()
        .map(|v| v == "1" || v.eq_ignore_ascii_case("ON"));
    let facts = MySqlGtidFacts {
        gtid_mode,
        executed,
        purged,
        compression,
    };
    let executed = check_mysql(&spec.label, &facts, start)?;
    let uuid = replica_uuid(opts.server_id);
    c.query_drop(format!(
        "SET @source_binlog_checksum='CRC32', @master_binlog_checksum='CRC32', \
         @source_heartbeat_period={ns}, @master_heartbeat_period={ns}, \
         @replica_uuid='{uuid}', @slave_uuid='{uuid}'",
        ns = opts.heartbeat.as_nanos()
    ))
    .map_err(q)?;
    Ok(executed)
}

impl BinlogSource {
    /// The server being read.
    pub fn server(&self) -> &SourceServer {
        &self.server
    }

    /// The next event, byte-exact and verified. After an error, every call fails: reconnect.
    pub fn next_event(&mut self) -> Result<RawEvent, CaptureError> {
        if self.failed {
            return Err(self.connection("the stream already failed".into()));
        }
        let r = self.read();
        self.failed = r.is_err();
        r
    }

    fn connection(&self, reason: String) -> CaptureError {
        CaptureError::Connection {
            target: self.target.clone(),
            reason,
        }
    }

    fn corrupt(&self, reason: String) -> CaptureError {
        CaptureError::Corrupt {
            target: self.target.clone(),
            reason,
        }
    }

    fn read(&mut self) -> Result<RawEvent, CaptureError> {
        // mysql_common unwraps a short read of an event body: a malformed packet is corrupt
        // data, not a reason to take the process down.
        let item = std::panic::catch_unwind(AssertUnwindSafe(|| self.stream.next()))
            .map_err(|_| self.corrupt("an event shorter than its header says".into()))?;
        let ev = match item {
            None => return Err(self.connection("the server ended the stream".into())),
            Some(Err(e)) => return Err(self.classify(e)),
            Some(Ok(ev)) => ev,
        };
        let h = ev.header();
        let header = Header {
            timestamp: h.timestamp(),
            kind: h.event_type_raw(),
            server_id: h.server_id(),
            size: h.event_size(),
            log_pos: h.log_pos(),
            flags: h.flags_raw(),
        };
        let target = self.target.clone();
        let bad = |b: Bad| CaptureError::Corrupt {
            target: target.clone(),
            reason: b.to_string(),
        };
        let raw = if header.kind == kind::FORMAT_DESCRIPTION {
            let alg = match ev.footer().get_checksum_alg() {
                Ok(Some(a)) => a as u8,
                _ => return Err(self.corrupt("a format description without checksum".into())),
            };
            if alg != 1 {
                return Err(self.corrupt(format!(
                    "the format description announces checksum algorithm {alg}, not CRC32"
                )));
            }
            self.seen_fde = true;
            RawEvent::rebuild(header, ev.data(), Some(alg), ev.checksum()).map_err(bad)?
        } else if self.seen_fde {
            let crc = ev
                .checksum()
                .ok_or_else(|| self.corrupt(format!("event type {} has no CRC", header.kind)))?;
            RawEvent::rebuild(header, ev.data(), None, Some(crc)).map_err(bad)?
        } else {
            // The first fake Rotate comes before any FDE, so the reader left its CRC in the
            // data (the server checksums it under 'ALL', pitr.md §1).
            RawEvent::rebuild(header, ev.data(), None, None).map_err(bad)?
        };
        raw.verify_crc().map_err(bad)?;
        Ok(raw)
    }

    fn classify(&self, e: mysql::Error) -> CaptureError {
        let mysql::Error::MySqlError(me) = &e else {
            return self.connection(e.to_string());
        };
        if me.code != 1236 {
            // Killed, shut down, replaced by a replica with the same id: the connection is
            // gone, the binlog is not at fault.
            return self.connection(format!("error {}: {}", me.code, me.message));
        }
        classify_1236(&self.target, &me.message, &self.start, &self.server_pos)
    }
}

/// Streams `source` into `writer` until `stop` says so (asked after every event, and a
/// heartbeat arrives at least every heartbeat period) or the stream fails. The open segment
/// is closed either way, without the transaction being received; the writer's
/// [`state`](SegmentWriter::state) is then where the next stream starts.
pub fn capture<S: SegmentSink>(
    source: &mut BinlogSource,
    writer: &mut SegmentWriter<S>,
    mut stop: impl FnMut(&GtidState) -> bool,
) -> Result<(), CaptureError> {
    if writer.state() != &source.start {
        return Err(CaptureError::Corrupt {
            target: source.target.clone(),
            reason: format!(
                "the stream starts after `{}` but the archive is at `{}`",
                source.start,
                writer.state()
            ),
        });
    }
    writer.set_source(source.server.clone());
    let sink = |e: SegmentError, target: &str| match e {
        SegmentError::Stream(reason) => CaptureError::Corrupt {
            target: target.to_string(),
            reason,
        },
        e => CaptureError::Sink(e),
    };
    let result = loop {
        if stop(writer.state()) {
            break Ok(());
        }
        match source.next_event() {
            Ok(ev) => {
                if let Err(e) = writer.push(ev, Instant::now()) {
                    break Err(sink(e, &source.target));
                }
            }
            Err(e) => break Err(e),
        }
    };
    let closed = writer.finish().map_err(|e| sink(e, &source.target));
    result?;
    closed.map(|_| ())
}
