//! The capture against a real MariaDB (binlog on, GTIDs, ROW format): what the server sent is
//! what the segments hold, `mariadb-binlog` reads and replays them, and every way the
//! stream can end is named.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use coffer_api::gtid::{Domain, GtidState, SegmentMeta};
use coffer_testkit::{GaleraCluster, GaleraOptions, MariaDb, MariaDbOptions};

use super::{
    event::{kind, Header},
    *,
};
use crate::{ClientFiles, ClientFlavor, ConnSpec};

const SOURCE_ID: u32 = 11;

fn source() -> MariaDb {
    MariaDb::start_with(MariaDbOptions::default().binlog(SOURCE_ID, 0)).unwrap()
}

fn spec(db: &MariaDb) -> ConnSpec {
    ConnSpec {
        host: db.host().into(),
        port: db.port(),
        user: "root".into(),
        password: db.root_password().into(),
        tls: None,
        label: "AppBinding test/source".into(),
    }
}

fn binlog_pos(db: &MariaDb) -> GtidState {
    let rows = db.query_strings("SELECT @@gtid_binlog_pos").unwrap();
    rows[0][0].clone().unwrap_or_default().parse().unwrap()
}

/// Segments as files in a directory.
struct DirSink {
    dir: PathBuf,
    metas: Vec<SegmentMeta>,
    closed_at: Vec<std::time::Instant>,
}

impl DirSink {
    fn new(dir: &Path) -> DirSink {
        DirSink {
            dir: dir.to_path_buf(),
            metas: Vec::new(),
            closed_at: Vec::new(),
        }
    }
    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("seg-{seq:06}.bin"))
    }
}

impl SegmentSink for DirSink {
    type Out = fs::File;
    fn open(&mut self, seq: u64) -> std::io::Result<fs::File> {
        fs::File::create(self.path(seq))
    }
    fn close(&mut self, out: fs::File, meta: &SegmentMeta) -> std::io::Result<()> {
        out.sync_all()?;
        self.metas.push(meta.clone());
        self.closed_at.push(std::time::Instant::now());
        Ok(())
    }
}

fn options(server_id: u32) -> StreamOptions {
    StreamOptions {
        server_id,
        heartbeat: Duration::from_millis(200),
    }
}

/// Captures from `start` until the archive covers `until`.
fn capture_until(
    db: &MariaDb,
    writer: &mut SegmentWriter<DirSink>,
    until: &GtidState,
) -> Result<(), CaptureError> {
    capture_from(&spec(db), writer, until)
}

fn capture_from(
    spec: &ConnSpec,
    writer: &mut SegmentWriter<DirSink>,
    until: &GtidState,
) -> Result<(), CaptureError> {
    let spec = spec.clone();
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let start = writer.state().clone();
    let mut src = open(
        &spec,
        &files,
        options(archive_server_id("test", "a")),
        &start,
    )?;
    capture(&mut src, writer, |s| s.covers(until))
}

/// The events of a segment file after its `\xfebin`.
fn events(bytes: &[u8]) -> Vec<(Header, &[u8])> {
    assert_eq!(&bytes[..4], b"\xfebin");
    let mut off = 4;
    let mut out = Vec::new();
    while off < bytes.len() {
        let h = Header::parse(&bytes[off..]).unwrap();
        out.push((h, &bytes[off..off + h.size as usize]));
        off += h.size as usize;
    }
    assert_eq!(off, bytes.len(), "the file ends on an event boundary");
    out
}

fn mariadb_binlog(args: &[&Path], extra: &[&str]) -> std::process::Output {
    Command::new("mariadb-binlog")
        .args(extra)
        .args(args)
        .output()
        .expect("run mariadb-binlog")
}

const SCHEMA: &str = "CREATE DATABASE app; \
    CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB; \
    CREATE TABLE app.u (id INT PRIMARY KEY AUTO_INCREMENT, t_id INT, big TEXT) ENGINE=InnoDB";

/// A workload of single- and multi-statement transactions, a DDL, updates, deletes and one
/// transaction of about 10 MB (held on disk by the writer until complete).
fn workload(db: &MariaDb, from: i32, n: i32) {
    let mut c = db.conn().unwrap();
    use mysql::prelude::Queryable;
    for i in from..from + n {
        let sql = match i % 50 {
            7 => "UPDATE app.t SET v = CONCAT(v, 'x') WHERE id % 7 = 0".to_string(),
            13 => format!("DELETE FROM app.t WHERE id = {}", i - 3),
            21 if i == 21 => "ALTER TABLE app.u ADD COLUMN w INT DEFAULT 3".to_string(),
            _ => format!(
                "START TRANSACTION; INSERT INTO app.t VALUES ({i}, 'row {i}'); \
                 INSERT INTO app.u (t_id, big) VALUES ({i}, REPEAT('b', {i})); COMMIT"
            ),
        };
        c.query_drop(sql).unwrap();
        if i == from + n / 2 {
            c.query_drop(
                "INSERT INTO app.u (t_id, big) SELECT seq, REPEAT(CHAR(65 + seq % 26), 500) \
                 FROM app.seq_1_to_20000",
            )
            .unwrap();
        }
    }
}

#[test]
fn a_workload_becomes_segments_mariadb_binlog_reads_and_replays_to_the_same_tables() {
    let db = source();
    db.exec(SCHEMA).unwrap();
    let start = binlog_pos(&db);
    workload(&db, 0, 120);
    let end = binlog_pos(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(
        "test/a",
        0,
        start.clone(),
        SegmentPolicy {
            flush_interval: Duration::from_millis(20),
            max_bytes: 256 << 10,
        },
        DirSink::new(dir.path()),
    );
    capture_until(&db, &mut w, &end).unwrap();
    assert_eq!(w.state(), &end);
    let sink = w.into_sink();
    assert!(
        sink.metas.len() > 1,
        "several segments: {}",
        sink.metas.len()
    );

    // The index names every transaction the server logged, once, in order.
    let s0 = start.0[&Domain::MariaDb(0)].seq;
    let s1 = end.0[&Domain::MariaDb(0)].seq;
    let indexed: Vec<String> = sink
        .metas
        .iter()
        .flat_map(|m| m.transactions.iter().map(|t| t.gtid.to_string()))
        .collect();
    let expected: Vec<String> = (s0 + 1..=s1)
        .map(|q| format!("0-{SOURCE_ID}-{q}"))
        .collect();
    assert_eq!(indexed, expected);

    // The 10 MB transaction went whole into one segment, past the 256 KiB size limit.
    assert!(sink.metas.iter().any(|m| m.bytes > 8 << 20));
    assert!(sink
        .metas
        .iter()
        .all(|m| m.source_file == "mysql-bin.000001"));
    // The server's own binlog file, to compare bytes with (tests only: coffer never reads it).
    let server_file = fs::read(db.datadir().join(&sink.metas[0].source_file)).unwrap();
    let mut paths = Vec::new();
    let mut prev_end = start.clone();
    for m in &sink.metas {
        assert_eq!(
            m.start_state, prev_end,
            "segment {} continues the last",
            m.seq
        );
        prev_end = m.end_state.clone();
        assert_eq!(m.source_server_id, SOURCE_ID);
        let path = sink.path(m.seq);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, m.bytes);
        let evs = events(&bytes);
        assert_eq!(evs[0].0.kind, kind::FORMAT_DESCRIPTION);
        assert_eq!(evs[1].0.kind, kind::ROTATE);
        assert!(evs[1].0.artificial());
        // Every stored event is byte for byte where the server wrote it, CRC included; no
        // transaction is split (each segment starts with a GTID event and ends with the end
        // of its last transaction).
        let mut offsets = vec![];
        let mut off = 4u64;
        for (h, _) in &evs {
            off += u64::from(h.size);
            offsets.push(off);
        }
        for (h, raw) in &evs[2..] {
            let at = (h.log_pos - h.size) as usize;
            assert_eq!(&server_file[at..h.log_pos as usize], *raw, "event at {at}");
        }
        assert_eq!(evs[2].0.kind, kind::GTID);
        let gtid_events = evs.iter().filter(|(h, _)| h.kind == kind::GTID).count();
        assert_eq!(
            gtid_events,
            m.transactions.len(),
            "GTID events are in the stream"
        );
        for t in &m.transactions {
            assert!(offsets.contains(&t.end), "{} ends on an event", t.gtid);
        }
        assert_eq!(m.transactions.last().unwrap().end, m.bytes);
        assert!(m
            .transactions
            .iter()
            .all(|t| t.source_end > 0 && t.time > 0));

        let out = mariadb_binlog(&[&path], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for t in &m.transactions {
            assert!(
                text.contains(&format!("GTID {}", t.gtid)),
                "{} in {text:.2000}",
                t.gtid
            );
        }
        paths.push(path);
    }

    // Replayed into a server that has only the initial schema, the segments give the
    // source's tables.
    let target = MariaDb::start().unwrap();
    target.exec(SCHEMA).unwrap();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut dump = Command::new("mariadb-binlog")
        .arg("--skip-gtid-strict-mode")
        .args(&paths)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("mariadb")
        .arg(format!(
            "--defaults-extra-file={}",
            target.defaults_file().display()
        ))
        .stdin(dump.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let sum = |d: &MariaDb| d.query_strings("CHECKSUM TABLE app.t, app.u").unwrap();
    assert_eq!(sum(&db), sum(&target));
    let rows = target.query_strings("SELECT COUNT(*) FROM app.u").unwrap();
    assert!(rows[0][0].as_deref().unwrap().parse::<u64>().unwrap() > 20_000);
}

#[test]
fn a_second_stream_with_the_same_server_id_is_refused() {
    let db = source();
    db.exec(SCHEMA).unwrap();
    let spec = spec(&db);
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let start = binlog_pos(&db);
    let id = archive_server_id("test", "twice");
    let first = open(&spec, &files, options(id), &start).unwrap();
    let e = open(&spec, &files, options(id), &start).err().unwrap();
    assert!(
        matches!(e, CaptureError::ServerIdInUse { server_id, .. } if server_id == id),
        "{e}"
    );
    assert!(e.to_string().contains("SHOW SLAVE HOSTS"), "{e}");
    // The server's own id too.
    let e = open(&spec, &files, options(SOURCE_ID), &start)
        .err()
        .unwrap();
    assert!(matches!(e, CaptureError::ServerIdInUse { .. }), "{e}");
    // Once the first stream is gone, the id is free again.
    drop(first);
    let mut again = open(&spec, &files, options(id), &start).unwrap();
    db.exec("INSERT INTO app.t VALUES (1, 'one')").unwrap();
    let mut saw_gtid = false;
    for _ in 0..20 {
        let ev = again.next_event().unwrap();
        if ev.header.kind == kind::GTID {
            saw_gtid = true;
            break;
        }
    }
    assert!(saw_gtid, "the capability brings GTID events");
}

#[test]
fn purged_ahead_diverged_and_unknown_domain_are_named() {
    let db = source();
    db.exec(SCHEMA).unwrap();
    workload(&db, 0, 5);
    let old = binlog_pos(&db);
    workload(&db, 5, 5);
    let now = binlog_pos(&db);
    let spec = spec(&db);
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let first_error = |state: &str| -> CaptureError {
        let st: GtidState = state.parse().unwrap();
        match open(&spec, &files, options(archive_server_id("t", state)), &st) {
            Err(e) => e,
            Ok(mut s) => {
                let mut kinds = Vec::new();
                let t = std::time::Instant::now();
                loop {
                    match s.next_event() {
                        Err(e) => break e,
                        Ok(ev) => kinds.push(ev.header.kind),
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(5),
                        "{state}: no error, {kinds:?}"
                    );
                }
            }
        }
    };
    let seq = now.0[&Domain::MariaDb(0)].seq;
    let e = first_error(&format!("0-{SOURCE_ID}-{}", seq + 100));
    assert!(matches!(e, CaptureError::Ahead { .. }), "{e}");
    let e = first_error(&format!("0-99-{}", seq - 2));
    assert!(matches!(e, CaptureError::Diverged { .. }), "{e}");
    let e = first_error(&format!("0-{SOURCE_ID}-{seq},5-{SOURCE_ID}-3"));
    assert!(
        matches!(e, CaptureError::UnknownDomain { ref domains, .. } if domains == &[Domain::MariaDb(5)]),
        "{e}"
    );

    // The test rotates and purges the server's binlogs (coffer never does).
    db.exec("FLUSH BINARY LOGS").unwrap();
    let current = db.query_strings("SHOW MASTER STATUS").unwrap()[0][0]
        .clone()
        .unwrap();
    // A file is purged only once no crash recovery needs it (its binlog checkpoint).
    let t = std::time::Instant::now();
    loop {
        db.exec(&format!("PURGE BINARY LOGS TO '{current}'"))
            .unwrap();
        let logs = db.query_strings("SHOW BINARY LOGS").unwrap();
        if logs.len() == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not purged: {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = first_error(&old.to_string());
    assert!(matches!(e, CaptureError::Purged { .. }), "{e}");
    assert!(!e.retryable());
}

#[test]
fn a_restarted_server_is_resumed_from_the_last_archived_state_without_loss_or_duplicate() {
    let mut db = source();
    db.exec(SCHEMA).unwrap();
    let start = binlog_pos(&db);
    workload(&db, 0, 20);
    let mid = binlog_pos(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(
        "test/a",
        0,
        start.clone(),
        SegmentPolicy::default(),
        DirSink::new(dir.path()),
    );
    capture_until(&db, &mut w, &mid).unwrap();
    db.restart().unwrap();
    workload(&db, 20, 20);
    let end = binlog_pos(&db);
    capture_until(&db, &mut w, &end).unwrap();
    let sink = w.into_sink();
    let seqs: Vec<u64> = sink
        .metas
        .iter()
        .flat_map(|m| m.transactions.iter().map(|t| t.gtid.seq))
        .collect();
    let expected: Vec<u64> =
        (start.0[&Domain::MariaDb(0)].seq + 1..=end.0[&Domain::MariaDb(0)].seq).collect();
    assert_eq!(seqs, expected);
    let files: Vec<&str> = sink.metas.iter().map(|m| m.source_file.as_str()).collect();
    assert_ne!(
        files.first(),
        files.last(),
        "the restart opened a new binlog file"
    );
    for pair in sink.metas.windows(2) {
        assert_eq!(pair[0].end_state, pair[1].start_state);
    }
}

/// An archive reading node 1 of a Galera cluster continues from node 2 when node 1 is
/// killed, keyed on GTIDs (the nodes' binlog files differ): every transaction once.
#[test]
fn a_galera_archive_continues_from_another_node_without_loss_or_duplicate() {
    let cluster = GaleraCluster::start(GaleraOptions {
        nodes: 3,
        binlog: true,
        ..Default::default()
    })
    .unwrap();
    let node_spec = |i: usize| ConnSpec {
        host: "127.0.0.1".into(),
        port: cluster.node(i).port(),
        user: "root".into(),
        password: cluster.root_password().into(),
        tls: None,
        label: format!("AppBinding test/galera node {}", i + 1),
    };
    let pos = |i: usize| -> GtidState {
        let rows = cluster
            .node(i)
            .query_strings("SELECT @@gtid_binlog_pos")
            .unwrap();
        rows[0][0].clone().unwrap_or_default().parse().unwrap()
    };
    let n1 = cluster.node(0);
    n1.exec(SCHEMA).unwrap();
    let start = pos(0);
    assert!(
        start.0.contains_key(&Domain::MariaDb(100)),
        "replicated writes use domain 100: {start}"
    );
    for i in 0..30 {
        cluster
            .node(i % 3)
            .exec(&format!("INSERT INTO app.t VALUES ({i}, 'row {i}')"))
            .unwrap();
    }
    let mid = pos(0);
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(
        "test/galera",
        0,
        start.clone(),
        SegmentPolicy::default(),
        DirSink::new(dir.path()),
    );
    capture_from(&node_spec(0), &mut w, &mid).unwrap();
    n1.kill();
    for i in 30..60 {
        cluster
            .node(1 + i % 2)
            .exec(&format!("INSERT INTO app.t VALUES ({i}, 'row {i}')"))
            .unwrap();
    }
    let end = pos(1);
    capture_from(&node_spec(1), &mut w, &end).unwrap();
    let sink = w.into_sink();
    let gtids: Vec<String> = sink
        .metas
        .iter()
        .flat_map(|m| m.transactions.iter().map(|t| t.gtid.to_string()))
        .collect();
    let s0 = start.0[&Domain::MariaDb(100)].seq;
    let s1 = end.0[&Domain::MariaDb(100)].seq;
    assert_eq!(gtids.len() as u64, s1 - s0, "{gtids:?}");
    let seqs: Vec<u64> = sink
        .metas
        .iter()
        .flat_map(|m| m.transactions.iter().map(|t| t.gtid.seq))
        .collect();
    assert_eq!(seqs, (s0 + 1..=s1).collect::<Vec<_>>());
    let servers: Vec<u32> = sink.metas.iter().map(|m| m.source_server_id).collect();
    assert_eq!(servers.first(), Some(&21));
    assert_eq!(servers.last(), Some(&22));
    for pair in sink.metas.windows(2) {
        assert_eq!(pair[0].end_state, pair[1].start_state);
    }
    // Node 2's table holds exactly the rows the archive has transactions for.
    let rows = cluster
        .node(1)
        .query_strings("SELECT COUNT(*) FROM app.t")
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("60"));
}

/// On an idle server the heartbeats close a segment within the flush interval (plus a
/// heartbeat): a committed transaction does not wait for the next one to be archived.
#[test]
fn an_idle_server_s_last_transaction_is_flushed_within_the_interval() {
    let db = source();
    db.exec(SCHEMA).unwrap();
    let start = binlog_pos(&db);
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(600);
    let mut w = SegmentWriter::new(
        "test/a",
        0,
        start.clone(),
        SegmentPolicy {
            flush_interval: interval,
            max_bytes: 64 << 20,
        },
        DirSink::new(dir.path()),
    );
    let spec = spec(&db);
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let mut src = open(
        &spec,
        &files,
        options(archive_server_id("test", "idle")),
        &start,
    )
    .unwrap();
    let writer = std::thread::spawn({
        let db_conn = db.conn().unwrap();
        move || {
            let mut c = db_conn;
            std::thread::sleep(Duration::from_millis(300));
            use mysql::prelude::Queryable;
            c.query_drop("INSERT INTO app.t VALUES (1, 'one')").unwrap();
            std::time::Instant::now()
        }
    });
    let stop_at = std::time::Instant::now() + Duration::from_secs(4);
    capture(&mut src, &mut w, |_| std::time::Instant::now() > stop_at).unwrap();
    let committed = writer.join().unwrap();
    let sink = w.into_sink();
    assert_eq!(sink.metas.len(), 1);
    assert_eq!(sink.metas[0].transactions.len(), 1);
    let took = sink.closed_at[0] - committed;
    // The heartbeat is 200 ms: closed by a tick, long before the capture stopped.
    assert!(took < interval + Duration::from_millis(500), "{took:?}");
}

/// The cut that replays segments `metas` from their start up to and including transaction
/// `k` (0-based over all of them): the segments needed and each one's cut.
fn cut_to(metas: &[SegmentMeta], k: usize) -> Vec<(u64, replay::Cut)> {
    let mut out = Vec::new();
    let mut left = k;
    for m in metas {
        if left < m.transactions.len() {
            out.push((
                m.seq,
                replay::Cut {
                    from: None,
                    to: Some(m.transactions[left].end),
                },
            ));
            return out;
        }
        left -= m.transactions.len();
        out.push((m.seq, replay::Cut::default()));
    }
    out
}

/// Both replay ways stop exactly after the chosen transaction: through
/// `mariadb-binlog - | mariadb` into a running server, and through a private server's SQL
/// thread over the segments placed as relay logs (the source's server_id differs from the
/// private server's, UNTIL at the stop's source position).
#[test]
fn pipe_and_relay_replays_stop_exactly_after_the_chosen_transaction() {
    let db = source();
    db.exec("CREATE DATABASE app; CREATE TABLE app.t (seq INT PRIMARY KEY, v VARCHAR(50))")
        .unwrap();
    let start = binlog_pos(&db);
    let mut c = db.conn().unwrap();
    use mysql::prelude::Queryable;
    for i in 1..=300 {
        c.query_drop(format!("INSERT INTO app.t VALUES ({i}, 'row {i}')"))
            .unwrap();
    }
    let end = binlog_pos(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(
        "test/a",
        0,
        start.clone(),
        SegmentPolicy {
            flush_interval: Duration::from_secs(3600),
            max_bytes: 16 << 10,
        },
        DirSink::new(dir.path()),
    );
    capture_until(&db, &mut w, &end).unwrap();
    let sink = w.into_sink();
    assert!(sink.metas.len() > 2, "{} segments", sink.metas.len());
    let k = 233; // transaction 234 inserts seq 234
    let cuts = cut_to(&sink.metas, k);
    let stop = sink
        .metas
        .iter()
        .find(|m| m.seq == cuts.last().unwrap().0)
        .unwrap();
    let stop_tx = sink
        .metas
        .iter()
        .flat_map(|m| m.transactions.iter())
        .nth(k)
        .unwrap()
        .clone();
    let rows = |d: &MariaDb| -> Vec<Vec<Option<String>>> {
        d.query_strings("SELECT COUNT(*), MAX(seq) FROM app.t")
            .unwrap()
    };
    let want = vec![vec![Some("234".to_string()), Some("234".to_string())]];

    // The pipe into a running server with the schema.
    let target = MariaDb::start().unwrap();
    target
        .exec("CREATE DATABASE app; CREATE TABLE app.t (seq INT PRIMARY KEY, v VARCHAR(50))")
        .unwrap();
    let tspec = spec(&target);
    let clients = crate::Clients::detect().unwrap();
    let files = std::sync::Arc::new(ClientFiles::new(&tspec, clients.flavor).unwrap());
    let mut load = crate::LoadSink::start(&clients, &tspec, files, &[]).unwrap();
    let tool = replay::binlog_tool(coffer_api::gtid::Flavour::MariaDb).unwrap();
    for (seq, cut) in &cuts {
        let path = sink.path(*seq);
        replay::pipe_segment(&tool, &mut load, *cut, move |w| {
            std::io::copy(&mut fs::File::open(path)?, w)
        })
        .unwrap();
    }
    load.finish().unwrap();
    assert_eq!(rows(&target), want);

    // The relay logs in a stopped server's data directory.
    let mut relay = MariaDb::start().unwrap();
    relay
        .exec("CREATE DATABASE app; CREATE TABLE app.t (seq INT PRIMARY KEY, v VARCHAR(50))")
        .unwrap();
    relay.stop();
    let datadir = relay.datadir().to_path_buf();
    for (i, (seq, cut)) in cuts.iter().enumerate() {
        let out = fs::File::create(replay::RelayServer::relay_path(&datadir, i + 1)).unwrap();
        let mut t = replay::Trim::new(out, *cut);
        std::io::copy(&mut fs::File::open(sink.path(*seq)).unwrap(), &mut t).unwrap();
    }
    replay::RelayServer::write_index(&datadir, cuts.len()).unwrap();
    let mut server = replay::RelayServer::start(
        &datadir,
        replay::RelayOptions {
            server_id: 4_000_000_000,
            parallel_threads: 4,
        },
        "test relay",
    )
    .unwrap();
    let mut stop_state = GtidState::default();
    stop_state.advance(stop_tx.gtid);
    let mut reached = start.clone();
    reached.advance(stop_tx.gtid);
    server
        .apply(
            Some((&stop.source_file, stop_tx.source_end)),
            &stop_state,
            &reached,
        )
        .unwrap();
    server.shutdown().unwrap();
    assert!(
        !fs::read_dir(&datadir)
            .unwrap()
            .flatten()
            .any(|f| f.file_name().to_string_lossy().starts_with("coffer-relay")),
        "the relay logs are gone"
    );
    relay.restart().unwrap();
    assert_eq!(rows(&relay), want);
    let pos = relay.query_strings("SELECT @@gtid_slave_pos").unwrap();
    assert_eq!(pos[0][0].as_deref(), Some(reached.to_string().as_str()));
    let slaves = relay.query_strings("SHOW SLAVE STATUS").unwrap();
    assert!(slaves.is_empty(), "no replica configuration left");
}
