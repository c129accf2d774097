//! Cuts the event stream into segments: each one a binlog file `mariadb-binlog` reads on its
//! own (`\xfebin`, the source's format description, an artificial Rotate naming the source
//! file, then the events byte-exact), holding only whole transactions, and its index.
//!
//! A segment is cut only between transactions: when it has been open for the flush interval
//! (the RPO: a transaction the server sent is in a closed segment at most that long after it
//! arrived, given a heartbeat shorter than the interval), when it reached its size limit, or
//! at a real Rotate (so every event of a segment comes from one source file, and the
//! source positions in the index name one file). A transaction is held back (in memory, on
//! disk beyond [`SPILL_BYTES`]) until its last event arrived, so a stream that breaks
//! mid-transaction leaves nothing of it in any segment.
//!
//! MySQL streams cut the same way: a transaction starts at its GTID event (33) and ends at
//! its XID or `COMMIT` query, or is the DDL statement that directly follows the GTID event
//! (MySQL's GTID event has no "standalone" flag, the first Query decides). Transactions
//! without a GTID, tagged GTIDs and compressed transactions are refused, and so is a GNO
//! that is not the next one of its source: the index records MySQL states as `uuid:1-N`.

use std::{
    io::{self, Read, Seek, Write},
    time::{Duration, Instant},
};

use coffer_api::gtid::{Gtid, GtidState, SegmentMeta, TxEnd};

use super::event::{self, kind, RawEvent, GTID_STANDALONE};

/// Where closed segments go (the repository, a directory in tests). `open` is called when a
/// segment's first transaction is complete; `close` after its last byte was written.
pub trait SegmentSink {
    type Out: Write;
    fn open(&mut self, seq: u64) -> io::Result<Self::Out>;
    fn close(&mut self, out: Self::Out, meta: &SegmentMeta) -> io::Result<()>;
}

/// When segments are cut.
#[derive(Debug, Clone, Copy)]
pub struct SegmentPolicy {
    /// The longest a segment stays open (default 5 s).
    pub flush_interval: Duration,
    /// A segment is closed after the transaction that makes it this large (default 64 MiB).
    pub max_bytes: u64,
}

impl Default for SegmentPolicy {
    fn default() -> Self {
        SegmentPolicy {
            flush_interval: Duration::from_secs(5),
            max_bytes: 64 << 20,
        }
    }
}

/// A transaction larger than this is held in a temporary file until it is complete.
pub const SPILL_BYTES: usize = 8 << 20;

/// What stops the writer: the sink failed, or the stream broke the binlog's grammar.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("writing segment {seq} failed: {source}")]
    Sink { seq: u64, source: io::Error },
    #[error("{0}")]
    Stream(String),
}

/// The server being read: recorded in every segment (it changes when a Galera archive moves
/// to another node).
#[derive(Debug, Clone, Default)]
pub struct SourceServer {
    pub server_id: u32,
    pub address: String,
}

struct Open<W> {
    out: W,
    meta: SegmentMeta,
    opened: Instant,
}

/// The events of the transaction being received.
struct Tx {
    gtid: Gtid,
    standalone: bool,
    /// MySQL's GTID event does not say whether the group is a DDL statement: its first
    /// Query does (`BEGIN` opens a transaction, anything else is the statement itself).
    undecided: bool,
    buf: TxBuf,
    /// Where its first event starts in the source file.
    start_pos: u64,
}

enum TxBuf {
    Mem(Vec<u8>),
    File(std::fs::File, u64),
}

impl TxBuf {
    fn push(&mut self, b: &[u8]) -> io::Result<()> {
        if let TxBuf::Mem(v) = self {
            if v.len() + b.len() <= SPILL_BYTES {
                v.extend_from_slice(b);
                return Ok(());
            }
            let mut f = tempfile::tempfile()?;
            f.write_all(v)?;
            *self = TxBuf::File(f, v.len() as u64);
        }
        if let TxBuf::File(f, n) = self {
            f.write_all(b)?;
            *n += b.len() as u64;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        match self {
            TxBuf::Mem(v) => v.len() as u64,
            TxBuf::File(_, n) => *n,
        }
    }

    fn copy_to(self, out: &mut impl Write) -> io::Result<()> {
        match self {
            TxBuf::Mem(v) => out.write_all(&v),
            TxBuf::File(mut f, _) => {
                f.rewind()?;
                io::copy(&mut (&mut f).take(u64::MAX), out).map(|_| ())
            }
        }
    }
}

/// Turns the stream's events into segments. Feed it every event ([`push`](Self::push)),
/// call [`tick`](Self::tick) when time passes without events, and [`finish`](Self::finish)
/// when the stream ends or fails.
pub struct SegmentWriter<S: SegmentSink> {
    archive: String,
    next_seq: u64,
    policy: SegmentPolicy,
    sink: S,
    state: GtidState,
    source: SourceServer,
    fde: Option<Vec<u8>>,
    crc: bool,
    /// The source file being read, from the last Rotate.
    file: String,
    open: Option<Open<S::Out>>,
    tx: Option<Tx>,
}

impl<S: SegmentSink> SegmentWriter<S> {
    /// `start` is the GTID state the stream starts after (the connect state); `first_seq`
    /// the number of the next segment of `archive`.
    pub fn new(
        archive: &str,
        first_seq: u64,
        start: GtidState,
        policy: SegmentPolicy,
        sink: S,
    ) -> Self {
        SegmentWriter {
            archive: archive.to_string(),
            next_seq: first_seq,
            policy,
            sink,
            state: start,
            source: SourceServer::default(),
            fde: None,
            crc: true,
            file: String::new(),
            open: None,
            tx: None,
        }
    }

    /// The server the next events come from (call after each (re)connect, before its first
    /// event).
    pub fn set_source(&mut self, source: SourceServer) {
        self.source = source;
    }

    /// The GTID state after the last complete transaction: where a new stream resumes.
    pub fn state(&self) -> &GtidState {
        &self.state
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    fn stream_err(&self, what: String) -> SegmentError {
        SegmentError::Stream(what)
    }

    fn io(&self, e: io::Error) -> SegmentError {
        SegmentError::Sink {
            seq: self.next_seq,
            source: e,
        }
    }

    /// One event from the stream (checksum already verified).
    pub fn push(&mut self, ev: RawEvent, now: Instant) -> Result<(), SegmentError> {
        let h = ev.header;
        match h.kind {
            kind::HEARTBEAT | kind::MYSQL_HEARTBEAT_V2 => return self.tick(now),
            kind::MYSQL_ANONYMOUS_GTID => {
                return Err(self.stream_err(
                    "the stream has a transaction without a GTID (an anonymous GTID event): \
                     the server wrote it while gtid_mode was not ON; the archive positions \
                     by GTID only — archive from after the server switched to gtid_mode=ON \
                     (a new base backup)"
                        .into(),
                ))
            }
            kind::MYSQL_GTID_TAGGED => {
                return Err(self.stream_err(
                    "the stream has a tagged GTID (MySQL 8.3+ gtid tags): not supported by \
                     the archive yet"
                        .into(),
                ))
            }
            kind::MYSQL_TRANSACTION_PAYLOAD => {
                return Err(self.stream_err(
                    "the stream has a compressed transaction (TRANSACTION_PAYLOAD): \
                     compressed transactions are not archived yet (SET GLOBAL \
                     binlog_transaction_compression=OFF)"
                        .into(),
                ))
            }
            // The server decrypted the events; the marker means nothing in our copy.
            kind::START_ENCRYPTION => return Ok(()),
            kind::ROTATE if h.artificial() || h.timestamp == 0 => {
                let (_, name) = ev.rotate().map_err(|e| self.stream_err(e.to_string()))?;
                self.file = name;
                return Ok(());
            }
            _ if h.artificial() => return Ok(()),
            kind::FORMAT_DESCRIPTION => {
                self.no_open_tx("a format description")?;
                // A new source file starts: its events belong to a new segment.
                self.close()?;
                let alg = ev.bytes.len().checked_sub(5).map(|i| ev.bytes[i]);
                self.crc = alg == Some(1);
                self.fde = Some(ev.bytes);
                return Ok(());
            }
            kind::ROTATE => {
                self.no_open_tx("a Rotate")?;
                let (_, name) = ev.rotate().map_err(|e| self.stream_err(e.to_string()))?;
                if let Some(open) = &mut self.open {
                    open.out
                        .write_all(&ev.bytes)
                        .map_err(|e| SegmentError::Sink {
                            seq: open.meta.seq,
                            source: e,
                        })?;
                    open.meta.bytes += ev.bytes.len() as u64;
                }
                self.close()?;
                self.file = name;
                return Ok(());
            }
            kind::GTID | kind::MYSQL_GTID => {
                let mysql = h.kind == kind::MYSQL_GTID;
                let (gtid, flags2) = if mysql {
                    (ev.mysql_gtid(), 0)
                } else {
                    match ev.gtid() {
                        Ok((g, f)) => (Ok(g), f),
                        Err(e) => (Err(e), 0),
                    }
                };
                let gtid = gtid.map_err(|e| self.stream_err(e.to_string()))?;
                if let Some(tx) = &self.tx {
                    return Err(self.stream_err(format!(
                        "transaction {} has no end before the next one, {gtid}",
                        tx.gtid
                    )));
                }
                if let Some(last) = self.state.0.get(&gtid.domain) {
                    if gtid.seq <= last.seq {
                        return Err(self.stream_err(format!(
                            "the stream sent {gtid} after {last}: a transaction it already \
                             sent, or history that went back"
                        )));
                    }
                }
                // A MySQL state is "uuid:1-N": a transaction after a hole would make it lie.
                let next = self.state.0.get(&gtid.domain).map_or(1, |g| g.seq + 1);
                if mysql && gtid.seq != next {
                    return Err(self.stream_err(format!(
                        "the stream sent {gtid} where {} was due: the archive records MySQL \
                         states as sets contiguous from 1 and cannot hold a hole",
                        Gtid { seq: next, ..gtid }
                    )));
                }
                let mut buf = TxBuf::Mem(Vec::new());
                buf.push(&ev.bytes).map_err(|e| self.io(e))?;
                self.tx = Some(Tx {
                    gtid,
                    standalone: flags2 & GTID_STANDALONE != 0,
                    undecided: mysql,
                    buf,
                    start_pos: u64::from(h.log_pos).saturating_sub(u64::from(h.size)),
                });
                return Ok(());
            }
            _ => {}
        }
        let Some(tx) = &mut self.tx else {
            // Between transactions (binlog checkpoint, stop, the file's GTID list): kept
            // when a segment is open, as in the source file; nothing to replay otherwise.
            if let Some(open) = &mut self.open {
                open.out
                    .write_all(&ev.bytes)
                    .map_err(|e| SegmentError::Sink {
                        seq: open.meta.seq,
                        source: e,
                    })?;
                open.meta.bytes += ev.bytes.len() as u64;
            }
            return Ok(());
        };
        tx.buf.push(&ev.bytes).map_err(|e| SegmentError::Sink {
            seq: self.next_seq,
            source: e,
        })?;
        if tx.undecided && h.kind == kind::QUERY {
            tx.undecided = false;
            tx.standalone = !opens_transaction(&ev);
        }
        if ends_transaction(tx.standalone, &ev) {
            self.complete(h.timestamp, h.log_pos, now)?;
            self.tick(now)?;
        }
        Ok(())
    }

    fn no_open_tx(&self, what: &str) -> Result<(), SegmentError> {
        match &self.tx {
            Some(tx) => {
                Err(self.stream_err(format!("transaction {} has no end before {what}", tx.gtid)))
            }
            None => Ok(()),
        }
    }

    /// Moves the finished transaction into the open segment (opening one if needed).
    fn complete(&mut self, time: u32, log_pos: u32, now: Instant) -> Result<(), SegmentError> {
        let tx = self.tx.take().expect("a transaction is open");
        if self.open.is_none() {
            let Some(fde) = self.fde.clone() else {
                return Err(self.stream_err(format!(
                    "transaction {} arrived before any format description",
                    tx.gtid
                )));
            };
            let seq = self.next_seq;
            let mut out = self.sink.open(seq).map_err(|e| self.io(e))?;
            let rotate =
                event::artificial_rotate(self.source.server_id, &self.file, tx.start_pos, self.crc);
            let mut head = Vec::with_capacity(4 + fde.len() + rotate.len());
            head.extend_from_slice(b"\xfebin");
            head.extend_from_slice(&fde);
            head.extend_from_slice(&rotate);
            out.write_all(&head).map_err(|e| self.io(e))?;
            self.open = Some(Open {
                out,
                meta: SegmentMeta {
                    archive: self.archive.clone(),
                    seq,
                    source_server_id: self.source.server_id,
                    source_address: self.source.address.clone(),
                    source_file: self.file.clone(),
                    start_state: self.state.clone(),
                    end_state: self.state.clone(),
                    transactions: Vec::new(),
                    bytes: head.len() as u64,
                },
                opened: now,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        let len = tx.buf.len();
        tx.buf
            .copy_to(&mut open.out)
            .map_err(|e| SegmentError::Sink {
                seq: open.meta.seq,
                source: e,
            })?;
        open.meta.bytes += len;
        open.meta.transactions.push(TxEnd {
            gtid: tx.gtid,
            time: i64::from(time),
            end: open.meta.bytes,
            source_end: u64::from(log_pos),
        });
        self.state.advance(tx.gtid);
        open.meta.end_state = self.state.clone();
        Ok(())
    }

    /// Closes the open segment when it is due (call on heartbeats and idle wake-ups).
    pub fn tick(&mut self, now: Instant) -> Result<(), SegmentError> {
        if self.tx.is_some() {
            return Ok(());
        }
        let due = self.open.as_ref().is_some_and(|o| {
            now.duration_since(o.opened) >= self.policy.flush_interval
                || o.meta.bytes >= self.policy.max_bytes
        });
        if due {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SegmentError> {
        if let Some(mut open) = self.open.take() {
            let seq = open.meta.seq;
            let sink_err = |e| SegmentError::Sink { seq, source: e };
            open.out.flush().map_err(sink_err)?;
            self.sink.close(open.out, &open.meta).map_err(sink_err)?;
            self.next_seq = seq + 1;
        }
        Ok(())
    }

    /// The stream ended or failed: the transaction being received is dropped (the next
    /// stream resumes before it), the open segment is closed. Returns where to resume.
    pub fn finish(&mut self) -> Result<GtidState, SegmentError> {
        self.tx = None;
        self.close()?;
        Ok(self.state.clone())
    }
}

/// Whether the first Query after a MySQL GTID event opens a multi-event transaction:
/// `BEGIN`, `XA START`, or a DDL that MySQL logs as part of one (an atomic
/// `CREATE TABLE ... SELECT` is logged `... START TRANSACTION`, its rows and an XID follow).
fn opens_transaction(ev: &RawEvent) -> bool {
    ev.query_text().is_some_and(|q| {
        let q = String::from_utf8_lossy(q).trim().to_ascii_uppercase();
        q == "BEGIN" || q.starts_with("XA START") || q.ends_with("START TRANSACTION")
    })
}

/// Whether `ev` is the last event of its transaction.
fn ends_transaction(standalone: bool, ev: &RawEvent) -> bool {
    let k = ev.header.kind;
    if standalone {
        // A DDL group: its one statement ends it (INTVAR/RAND/USER_VAR events come before).
        return k == kind::QUERY || k == kind::QUERY_COMPRESSED;
    }
    match k {
        kind::XID | kind::XA_PREPARE => true,
        kind::QUERY => ev.query_text().is_some_and(|q| {
            let q = String::from_utf8_lossy(q).trim().to_ascii_uppercase();
            q == "COMMIT"
                || q == "ROLLBACK"
                || q.starts_with("XA COMMIT")
                || q.starts_with("XA ROLLBACK")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::event::{crc32, Header, HEADER_LEN};

    /// Keeps every segment in memory.
    #[derive(Default)]
    struct Mem {
        done: Vec<(Vec<u8>, SegmentMeta)>,
    }

    impl SegmentSink for Mem {
        type Out = Vec<u8>;
        fn open(&mut self, _seq: u64) -> io::Result<Vec<u8>> {
            Ok(Vec::new())
        }
        fn close(&mut self, out: Vec<u8>, meta: &SegmentMeta) -> io::Result<()> {
            self.done.push((out, meta.clone()));
            Ok(())
        }
    }

    struct Gen {
        pos: u32,
    }

    impl Gen {
        fn ev(&mut self, kind_: u8, flags: u16, ts: u32, payload: &[u8]) -> RawEvent {
            let size = (HEADER_LEN + payload.len() + 4) as u32;
            self.pos += size;
            let mut b = Vec::new();
            Header {
                timestamp: ts,
                kind: kind_,
                server_id: 11,
                size,
                log_pos: self.pos,
                flags,
            }
            .write(&mut b);
            b.extend_from_slice(payload);
            let c = crc32(&b);
            b.extend_from_slice(&c.to_le_bytes());
            RawEvent {
                header: Header::parse(&b).unwrap(),
                bytes: b,
            }
        }
        fn fde(&mut self) -> RawEvent {
            let mut p = vec![0u8; 60];
            p.push(1); // CRC32
            self.ev(kind::FORMAT_DESCRIPTION, 0, 1, &p)
        }
        fn fake_rotate(&mut self, name: &str) -> RawEvent {
            let mut p = 4u64.to_le_bytes().to_vec();
            p.extend_from_slice(name.as_bytes());
            self.ev(kind::ROTATE, event::FLAG_ARTIFICIAL, 0, &p)
        }
        fn gtid(&mut self, seq: u64, flags2: u8) -> RawEvent {
            let mut p = seq.to_le_bytes().to_vec();
            p.extend_from_slice(&0u32.to_le_bytes());
            p.push(flags2);
            self.ev(kind::GTID, 0, 100, &p)
        }
        fn rows(&mut self) -> RawEvent {
            self.ev(30, 0, 100, &[7; 40])
        }
        fn xid(&mut self, ts: u32) -> RawEvent {
            self.ev(kind::XID, 0, ts, &1u64.to_le_bytes())
        }
        fn query(&mut self, text: &str) -> RawEvent {
            let mut p = vec![0u8; 13];
            p.push(0);
            p.extend_from_slice(text.as_bytes());
            self.ev(kind::QUERY, 0, 100, &p)
        }
        /// A MySQL GTID event: flags, SID, GNO, then the logical-clock fields.
        fn mysql_gtid(&mut self, sid: [u8; 16], gno: i64) -> RawEvent {
            let mut p = vec![1u8];
            p.extend_from_slice(&sid);
            p.extend_from_slice(&gno.to_le_bytes());
            p.push(2);
            p.extend_from_slice(&[0; 16]);
            self.ev(kind::MYSQL_GTID, 0, 100, &p)
        }
        fn tx(&mut self, seq: u64) -> Vec<RawEvent> {
            vec![self.gtid(seq, 0), self.rows(), self.xid(200 + seq as u32)]
        }
    }

    fn writer(policy: SegmentPolicy) -> SegmentWriter<Mem> {
        let mut w = SegmentWriter::new("a", 0, "0-11-0".parse().unwrap(), policy, Mem::default());
        w.set_source(SourceServer {
            server_id: 11,
            address: "db:3306".into(),
        });
        w
    }

    #[test]
    fn segments_are_binlog_files_of_whole_transactions_with_their_index() {
        let t0 = Instant::now();
        let mut w = writer(SegmentPolicy {
            flush_interval: Duration::from_secs(5),
            max_bytes: 1 << 20,
        });
        let mut g = Gen { pos: 0 };
        w.push(g.fake_rotate("bin.000001"), t0).unwrap();
        w.push(g.fde(), t0).unwrap();
        for seq in 1..=3 {
            for e in g.tx(seq) {
                w.push(e, t0).unwrap();
            }
        }
        // A DDL: GTID flagged standalone, then one query.
        w.push(g.gtid(4, GTID_STANDALONE), t0).unwrap();
        w.push(g.query("CREATE TABLE t (a INT)"), t0).unwrap();
        // A non-transactional statement ends with a COMMIT query.
        w.push(g.gtid(5, 0), t0).unwrap();
        w.push(g.query("BEGIN"), t0).unwrap();
        w.push(g.query("COMMIT"), t0).unwrap();
        assert!(w.sink().done.is_empty(), "not due yet");
        w.push(g.gtid(6, 0), t0).unwrap();
        w.push(g.rows(), t0).unwrap();
        // Due while transaction 6 is open: no cut inside it.
        w.tick(t0 + Duration::from_secs(6)).unwrap();
        assert!(w.sink().done.is_empty());
        w.push(g.xid(206), t0 + Duration::from_secs(6)).unwrap();
        let done = &w.sink().done;
        assert_eq!(done.len(), 1);
        let (bytes, meta) = &done[0];
        assert_eq!(meta.bytes as usize, bytes.len());
        assert_eq!(&bytes[..4], b"\xfebin");
        assert_eq!(meta.source_file, "bin.000001");
        assert_eq!(meta.start_state.to_string(), "0-11-0");
        assert_eq!(meta.end_state.to_string(), "0-11-6");
        let gtids: Vec<u64> = meta.transactions.iter().map(|t| t.gtid.seq).collect();
        assert_eq!(gtids, [1, 2, 3, 4, 5, 6]);
        assert_eq!(meta.transactions[0].time, 201);
        assert_eq!(meta.transactions.last().unwrap().end, meta.bytes);
        // Every transaction end is an event boundary: walk the file's events.
        let mut off = 4usize;
        let mut ends = Vec::new();
        while off < bytes.len() {
            let h = Header::parse(&bytes[off..]).unwrap();
            off += h.size as usize;
            ends.push(off as u64);
        }
        assert_eq!(off, bytes.len());
        assert!(meta.transactions.iter().all(|t| ends.contains(&t.end)));
    }

    #[test]
    fn a_broken_stream_keeps_only_whole_transactions_and_resumes_after_them() {
        let t0 = Instant::now();
        let mut w = writer(SegmentPolicy::default());
        let mut g = Gen { pos: 0 };
        w.push(g.fake_rotate("bin.000001"), t0).unwrap();
        w.push(g.fde(), t0).unwrap();
        for e in g.tx(1) {
            w.push(e, t0).unwrap();
        }
        w.push(g.gtid(2, 0), t0).unwrap();
        w.push(g.rows(), t0).unwrap();
        let resume = w.finish().unwrap();
        assert_eq!(resume.to_string(), "0-11-1");
        let (bytes, meta) = &w.sink().done[0];
        assert_eq!(meta.transactions.len(), 1);
        assert_eq!(meta.bytes as usize, bytes.len());
        // A duplicate of what was archived is refused.
        let mut g2 = Gen { pos: 0 };
        w.push(g2.fde(), t0).unwrap();
        let e = w.push(g2.gtid(1, 0), t0).unwrap_err().to_string();
        assert!(e.contains("already"), "{e}");
    }

    #[test]
    fn size_limit_and_rotate_cut_between_transactions() {
        let t0 = Instant::now();
        let mut w = writer(SegmentPolicy {
            flush_interval: Duration::from_secs(3600),
            max_bytes: 300,
        });
        let mut g = Gen { pos: 0 };
        w.push(g.fake_rotate("bin.000001"), t0).unwrap();
        w.push(g.fde(), t0).unwrap();
        for seq in 1..=4 {
            for e in g.tx(seq) {
                w.push(e, t0).unwrap();
            }
        }
        let n = w.sink().done.len();
        assert!(n >= 1, "the size limit cut");
        let mut p = 4u64.to_le_bytes().to_vec();
        p.extend_from_slice(b"bin.000002");
        w.push(g.ev(kind::ROTATE, 0, 100, &p), t0).unwrap();
        w.push(g.fde(), t0).unwrap();
        for e in g.tx(5) {
            w.push(e, t0).unwrap();
        }
        w.finish().unwrap();
        let done = &w.sink().done;
        let last = &done.last().unwrap().1;
        assert_eq!(last.source_file, "bin.000002");
        assert_eq!(last.transactions.len(), 1);
        // Segments chain: each starts where the previous ended, numbered without holes.
        for pair in done.windows(2) {
            assert_eq!(pair[0].1.end_state, pair[1].1.start_state);
            assert_eq!(pair[0].1.seq + 1, pair[1].1.seq);
        }
        let all: usize = done.iter().map(|d| d.1.transactions.len()).sum();
        assert_eq!(all, 5);
    }

    const SID: [u8; 16] = [
        0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95,
        0x62,
    ];
    const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn mysql_writer() -> SegmentWriter<Mem> {
        let mut w = SegmentWriter::new(
            "a",
            0,
            GtidState::default(),
            SegmentPolicy::default(),
            Mem::default(),
        );
        w.set_source(SourceServer {
            server_id: 1,
            address: "mysql:3306".into(),
        });
        w
    }

    #[test]
    fn a_mysql_stream_is_cut_into_transactions_by_gtid_and_commit() {
        let t0 = Instant::now();
        let mut w = mysql_writer();
        let mut g = Gen { pos: 0 };
        w.push(g.fake_rotate("binlog.000001"), t0).unwrap();
        w.push(g.fde(), t0).unwrap();
        // PREVIOUS_GTIDS (empty set) between transactions, before any segment: not kept.
        w.push(
            g.ev(kind::MYSQL_PREVIOUS_GTIDS, 0, 1, &0u64.to_le_bytes()),
            t0,
        )
        .unwrap();
        // Each transaction's events, and the kind of the event that must end it.
        let txs: Vec<(Vec<RawEvent>, u8)> = vec![
            // A row transaction: GTID, BEGIN, rows, XID.
            (
                vec![g.mysql_gtid(SID, 1), g.query("BEGIN"), g.rows(), g.xid(201)],
                kind::XID,
            ),
            // A DDL: GTID, then the statement alone.
            (
                vec![g.mysql_gtid(SID, 2), g.query("CREATE TABLE t (a INT)")],
                kind::QUERY,
            ),
            // A non-transactional table: BEGIN ... COMMIT query.
            (
                vec![
                    g.mysql_gtid(SID, 3),
                    g.query("BEGIN"),
                    g.rows(),
                    g.query("COMMIT"),
                ],
                kind::QUERY,
            ),
            // An atomic CREATE TABLE ... SELECT: its rows and XID belong to it.
            (
                vec![
                    g.mysql_gtid(SID, 4),
                    g.query("CREATE TABLE u (a INT) START TRANSACTION"),
                    g.rows(),
                    g.xid(204),
                ],
                kind::XID,
            ),
        ];
        let mut enders = Vec::new();
        for (events, ender) in txs {
            enders.push(ender);
            for e in events {
                w.push(e, t0).unwrap();
            }
        }
        let end = w.finish().unwrap();
        assert_eq!(end.to_string(), format!("{UUID}:1-4"));
        let (bytes, meta) = &w.sink().done[0];
        assert_eq!(meta.start_state, GtidState::default());
        assert_eq!(meta.end_state.to_string(), format!("{UUID}:1-4"));
        assert_eq!(meta.source_file, "binlog.000001");
        let gtids: Vec<String> = meta
            .transactions
            .iter()
            .map(|t| t.gtid.to_string())
            .collect();
        let want: Vec<String> = (1..=4).map(|n| format!("{UUID}:{n}")).collect();
        assert_eq!(gtids, want);
        // Walk the file: each transaction starts with its GTID event, and its recorded end
        // is just after the event that ends it.
        let mut off = 4usize;
        let mut events = Vec::new();
        while off < bytes.len() {
            let h = Header::parse(&bytes[off..]).unwrap();
            off += h.size as usize;
            events.push((h.kind, off as u64));
        }
        assert_eq!(off, bytes.len());
        assert_eq!(meta.bytes as usize, bytes.len());
        for (t, ender) in meta.transactions.iter().zip(&enders) {
            let i = events
                .iter()
                .position(|e| e.1 == t.end)
                .expect("an event boundary");
            assert_eq!(events[i].0, *ender, "{}", t.gtid);
            if let Some(next) = events.get(i + 1) {
                assert_eq!(next.0, kind::MYSQL_GTID, "after {}", t.gtid);
            }
        }
        assert_eq!(meta.transactions.last().unwrap().end, meta.bytes);
        assert_eq!(meta.transactions[0].time, 201);
    }

    #[test]
    fn a_mysql_stream_without_gtids_with_holes_or_compressed_is_refused() {
        let t0 = Instant::now();
        let start = |w: &mut SegmentWriter<Mem>, g: &mut Gen| {
            w.push(g.fake_rotate("binlog.000001"), t0).unwrap();
            w.push(g.fde(), t0).unwrap();
        };
        let mut g = Gen { pos: 0 };
        // (case, the offending event, what the error says)
        let cases: Vec<(&str, RawEvent, &str)> = vec![
            (
                "anonymous",
                g.ev(kind::MYSQL_ANONYMOUS_GTID, 0, 100, &[0; 42]),
                "without a GTID",
            ),
            ("hole", g.mysql_gtid(SID, 3), "contiguous from 1"),
            (
                "compressed",
                g.ev(kind::MYSQL_TRANSACTION_PAYLOAD, 0, 100, &[0; 20]),
                "compressed",
            ),
            (
                "tagged",
                g.ev(kind::MYSQL_GTID_TAGGED, 0, 100, &[0; 40]),
                "tagged",
            ),
        ];
        for (case, ev, says) in cases {
            let mut w = mysql_writer();
            let mut g = Gen { pos: 0 };
            start(&mut w, &mut g);
            for e in [g.mysql_gtid(SID, 1), g.query("CREATE TABLE t (a INT)")] {
                w.push(e, t0).unwrap();
            }
            let e = w.push(ev, t0).unwrap_err().to_string();
            assert!(e.contains(says), "{case}: {e}");
            // What was complete stays archived, and the stream resumes after it.
            assert_eq!(w.finish().unwrap().to_string(), format!("{UUID}:1"));
        }
    }
}
