//! For scripts/bench-replay.sh: archives a server's binlog between two GTID states into
//! segment files (as the archive does), then replays them with coffer's relay-log path into
//! a stopped server's data directory, timing the replay.
//!
//!   BENCH_PASSWORD=… replay_bench PORT USER FROM_STATE UNTIL_STATE SEGMENT_DIR DATADIR
//!
//! Prints `segments=N bytes=B transactions=T` and `relay_seconds=S` (private server start,
//! apply, shutdown) and `apply_seconds=A` (the SQL thread alone).

use std::{fs, path::PathBuf, time::Instant};

use coffer_api::gtid::{GtidState, SegmentMeta};
use coffer_db::{
    binlog::{self, replay, SegmentPolicy, SegmentSink, SegmentWriter, StreamOptions},
    ClientFiles, ClientFlavor, ConnSpec,
};

struct Dir(PathBuf, Vec<SegmentMeta>);

impl SegmentSink for Dir {
    type Out = std::io::BufWriter<fs::File>;
    fn open(&mut self, seq: u64) -> std::io::Result<Self::Out> {
        Ok(std::io::BufWriter::new(fs::File::create(
            self.0.join(format!("seg-{seq:06}.bin")),
        )?))
    }
    fn close(&mut self, out: Self::Out, meta: &SegmentMeta) -> std::io::Result<()> {
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        self.1.push(meta.clone());
        Ok(())
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!(
            "usage: BENCH_PASSWORD=… {} PORT USER FROM UNTIL SEGMENT_DIR DATADIR",
            a[0]
        );
        std::process::exit(2);
    }
    let spec = ConnSpec {
        host: "127.0.0.1".into(),
        port: a[1].parse().expect("PORT"),
        user: a[2].clone(),
        password: std::env::var("BENCH_PASSWORD").unwrap_or_default(),
        tls: None,
        label: "bench source".into(),
    };
    let from: GtidState = a[3].parse().expect("FROM");
    let until: GtidState = a[4].parse().expect("UNTIL");
    let seg_dir = PathBuf::from(&a[5]);
    let datadir = PathBuf::from(&a[6]);
    fs::create_dir_all(&seg_dir).unwrap();

    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap();
    let mut w = SegmentWriter::new(
        "bench/replay",
        0,
        from.clone(),
        SegmentPolicy {
            flush_interval: std::time::Duration::from_secs(3600),
            max_bytes: 64 << 20,
        },
        Dir(seg_dir.clone(), Vec::new()),
    );
    let mut src = binlog::open(
        &spec,
        &files,
        StreamOptions::new(binlog::archive_server_id("bench", "replay")),
        &from,
    )
    .expect("open the binlog stream");
    binlog::capture(&mut src, &mut w, |s| s.covers(&until)).expect("capture");
    let metas = w.into_sink().1;
    let bytes: u64 = metas.iter().map(|m| m.bytes).sum();
    let txs: usize = metas.iter().map(|m| m.transactions.len()).sum();
    println!("segments={} bytes={bytes} transactions={txs}", metas.len());

    let t0 = Instant::now();
    for (i, m) in metas.iter().enumerate() {
        fs::copy(
            seg_dir.join(format!("seg-{:06}.bin", m.seq)),
            replay::RelayServer::relay_path(&datadir, i + 1),
        )
        .unwrap();
    }
    replay::RelayServer::write_index(&datadir, metas.len()).unwrap();
    let last = metas.last().expect("segments");
    let stop = last.transactions.last().unwrap();
    let mut stop_state = GtidState::default();
    stop_state.advance(stop.gtid);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut server = replay::RelayServer::start(
        &datadir,
        replay::RelayOptions {
            server_id: u32::MAX - 1,
            parallel_threads: cores.clamp(1, 16),
        },
        "bench target",
    )
    .expect("start the private server");
    let t1 = Instant::now();
    server
        .apply(
            Some((&last.source_file, stop.source_end)),
            &stop_state,
            &until,
        )
        .expect("apply");
    let applied = t1.elapsed();
    server.shutdown().expect("shutdown");
    println!("apply_seconds={:.2}", applied.as_secs_f64());
    println!("relay_seconds={:.2}", t0.elapsed().as_secs_f64());
}
