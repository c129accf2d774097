//! `coffer bench-archive-layout` (hidden; scripts/bench-archive-layout.sh runs it): months of
//! binlog archive flushes in minutes, then the costs a restore and the runner see.
//!
//! Every hour but the last is written as the one level-1 snapshot hourly compaction makes of
//! its puts (one snapshot, one index file: [`SegmentStore::put_compacted`]); after every 24
//! hours the real [`SegmentStore::compact`] merges them into a day. The last hour is real
//! puts, left uncompacted: the worst moment for a listing (the most snapshots). Then it
//! times listing, restore planning over the listing (`latest`, and a time target whose
//! covering segments' full indexes are read), reading one segment, and a put.

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::Context;
use coffer_api::{
    gtid::{GtidState, SegmentMeta, TxEnd},
    restore::PointInTimeTarget,
};
use coffer_control::pitr::{plan_restore, BaseBackup};
use coffer_engine::archive::SegmentStore;
use coffer_repo::{LocalStore, Repo};

const ARCHIVE: &str = "bench/archive";
/// Transactions per segment (a quiet server: the listing cost does not depend on it).
const TXS: u64 = 2;

struct Gen {
    seq: u64,
    gtid: u64,
    time: i64,
    flush: u64,
}

impl Gen {
    /// The next segment: a few hundred bytes that differ per segment.
    fn next(&mut self) -> (Vec<u8>, SegmentMeta) {
        let state = |n: u64| -> GtidState {
            if n == 0 {
                GtidState::default()
            } else {
                format!("0-1-{n}").parse().expect("a GTID state")
            }
        };
        let len = 300 + (self.seq % 200) as usize;
        let mut data = Vec::with_capacity(len);
        let mut x = self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(len);
        let start = self.gtid;
        let transactions = (0..TXS)
            .map(|k| TxEnd {
                gtid: format!("0-1-{}", start + k + 1).parse().expect("a GTID"),
                time: self.time,
                end: len as u64 * (k + 1) / TXS,
                source_end: 4 + len as u64 * (k + 1) / TXS,
            })
            .collect();
        let meta = SegmentMeta {
            archive: ARCHIVE.into(),
            seq: self.seq,
            source_server_id: 1,
            source_address: "mariadb-0.mariadb:3306".into(),
            source_file: format!("mariadb-bin.{:06}", 1 + self.seq / 17_280),
            start_state: state(start),
            end_state: state(start + TXS),
            transactions,
            bytes: len as u64,
        };
        self.seq += 1;
        self.gtid += TXS;
        self.time += self.flush as i64;
        (data, meta)
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

pub fn run(dir: &Path, days: u64, flush: u64) -> anyhow::Result<i32> {
    anyhow::ensure!(
        flush > 0 && days > 0,
        "--days and --flush-seconds must be positive"
    );
    std::fs::create_dir_all(dir)?;
    anyhow::ensure!(
        std::fs::read_dir(dir)?.next().is_none(),
        "{} must be empty: the benchmark makes a new repository there",
        dir.display()
    );
    let (repo, _) = Repo::open_or_init(Arc::new(LocalStore::new(dir)), "bench-archive-layout")?;
    let store = SegmentStore::new(repo, ARCHIVE);
    let per_hour = 3600 / flush;
    let hours = days * 24;
    let t0 = jiff::Timestamp::now().as_second() - (days * 86_400) as i64;
    let mut gen = Gen {
        seq: 0,
        gtid: 0,
        time: t0,
        flush,
    };
    println!(
        "simulating {days} days of {flush} s flushes: {} segments ({per_hour} per hour)",
        hours * per_hour
    );
    let started = Instant::now();
    let (mut compactions, mut compact_secs) = (0u32, 0f64);
    for h in 0..hours - 1 {
        let segs: Vec<_> = (0..per_hour).map(|_| gen.next()).collect();
        store.put_compacted(segs, 1)?;
        if (h + 1) % 24 == 0 {
            let t = Instant::now();
            let done = store.compact()?;
            compact_secs += secs(t);
            compactions += 1;
            anyhow::ensure!(done.written >= 1, "the day's compaction merged nothing");
            println!(
                "  day {:>2} written and compacted ({:.0} s so far)",
                (h + 1) / 24,
                secs(started)
            );
        }
    }
    let mut put_times = Vec::new();
    for _ in 0..per_hour {
        let (data, meta) = gen.next();
        let t = Instant::now();
        store.put(data, &meta)?;
        put_times.push(secs(t));
    }
    println!("simulation written in {:.0} s", secs(started));

    let snapshots = store.repo().snapshots()?.len();
    let indexes = std::fs::read_dir(dir.join("index"))?.count();
    let mut list_times = Vec::new();
    let mut listed = Vec::new();
    for _ in 0..3 {
        let fresh = SegmentStore::new(store.repo().clone(), ARCHIVE);
        let t = Instant::now();
        listed = fresh.list()?;
        list_times.push(secs(t));
    }
    anyhow::ensure!(
        listed.len() as u64 == gen.seq,
        "listed {} segments of {}",
        listed.len(),
        gen.seq
    );

    // Planning needs every transaction (the listing has counts only): the full indexes,
    // made again here as the generator made them, are what a planner would hold.
    let mut regen = Gen {
        seq: 0,
        gtid: 0,
        time: t0,
        flush,
    };
    let metas: Vec<SegmentMeta> = (0..gen.seq).map(|_| regen.next().1).collect();
    let base = BaseBackup {
        snapshot: "base".into(),
        time: t0 - 60,
        state: GtidState::default(),
    };
    let t = Instant::now();
    let latest = plan_restore(
        ARCHIVE,
        &PointInTimeTarget::Latest,
        std::slice::from_ref(&base),
        &metas,
    )
    .context("planning `latest`")?;
    let plan_latest = secs(t);

    // A time target in the middle: the summaries say which segments cover it; their full
    // indexes are read from the repository.
    let target = t0 + (days * 86_400 / 2) as i64 + 2;
    let t = Instant::now();
    let reader = SegmentStore::new(store.repo().clone(), ARCHIVE);
    let listing = reader.list()?;
    let after_list = secs(t);
    let mut fetched = 0;
    for s in &listing {
        let covers = s.first_time.is_some_and(|f| f <= target + flush as i64)
            && s.last_time.is_some_and(|l| l >= target - flush as i64);
        if covers {
            anyhow::ensure!(reader.meta(s.meta.seq)? == metas[s.meta.seq as usize]);
            fetched += 1;
        }
    }
    let after_meta = secs(t);
    let plan = plan_restore(ARCHIVE, &PointInTimeTarget::Time(target), &[base], &metas)
        .context("planning a time target")?;
    let plan_time = secs(t) - after_meta;
    let t = Instant::now();
    let mut out = Vec::new();
    reader.read(listing.len() as u64 / 3, &mut out)?;
    let read_one = secs(t);
    let t = Instant::now();
    reader.read(listing.len() as u64 / 3 + 1, &mut out)?;
    let read_next = secs(t);
    let t = Instant::now();
    let n = 100;
    for k in 2..2 + n {
        reader.read(listing.len() as u64 / 3 + k, &mut out)?;
    }
    let read_many = secs(t) / n as f64;

    // The RPO during maintenance: the runner compacts on a thread of its own (its own
    // store on the repository) while the stream goes on storing segments, so a segment's
    // durability waits for its own put only. Puts back to back while the last hour and
    // then the last day are merged: their slowest is what a flush waits at worst then (a
    // compaction in the stream's path, as before, held every flush for all of it).
    let compactor = SegmentStore::new(store.repo().clone(), ARCHIVE);
    let t = Instant::now();
    let (during, compaction) = std::thread::scope(|s| -> anyhow::Result<_> {
        let job = s.spawn(|| {
            let t = Instant::now();
            compactor.compact().map(|c| (c, secs(t)))
        });
        let mut during = Vec::new();
        while !job.is_finished() {
            let (data, meta) = gen.next();
            let t = Instant::now();
            store.put(data, &meta)?;
            during.push(secs(t));
        }
        let compaction = job
            .join()
            .map_err(|_| anyhow::anyhow!("the compaction thread panicked"))??;
        Ok((during, compaction))
    })?;
    let rpo_compaction = secs(t);
    anyhow::ensure!(
        compaction.0.merged > 0,
        "the compaction beside the puts merged nothing"
    );

    put_times.sort_by(f64::total_cmp);
    let avg = put_times.iter().sum::<f64>() / put_times.len() as f64;
    let bytes: u64 = walk_size(dir);
    println!("--- results ({} segments, {days} days) ---", listed.len());
    println!(
        "repository: {snapshots} snapshots, {indexes} index files, {:.1} MB",
        bytes as f64 / 1e6
    );
    println!(
        "daily compaction: {compactions} runs, {:.2} s average",
        compact_secs / f64::from(compactions.max(1))
    );
    println!(
        "put after {days} days: {:.1} ms average, {:.1} ms median, {:.1} ms max ({} puts)",
        avg * 1e3,
        put_times[put_times.len() / 2] * 1e3,
        put_times[put_times.len() - 1] * 1e3,
        put_times.len()
    );
    let max_during = during.iter().copied().fold(0f64, f64::max);
    println!(
        "RPO during maintenance: a compaction of {:.2} s ({} snapshots merged) beside {} puts: \
         slowest put {:.1} ms (without a compaction: {:.1} ms); in the stream's path it \
         would have held every flush for {:.2} s",
        compaction.1,
        compaction.0.merged,
        during.len(),
        max_during * 1e3,
        put_times[put_times.len() - 1] * 1e3,
        rpo_compaction
    );
    println!(
        "list: {:.2} s, {:.2} s, {:.2} s (fresh store each time)",
        list_times[0], list_times[1], list_times[2]
    );
    println!(
        "plan `latest` over {} full indexes: {:.3} s ({} segments to replay)",
        listed.len(),
        plan_latest,
        latest.segments.len()
    );
    println!(
        "plan a time target: list {after_list:.2} s + {fetched} full indexes {:.2} s + plan {plan_time:.3} s ({} segments to replay, stop at {:?})",
        after_meta - after_list,
        plan.segments.len(),
        plan.stop.as_ref().map(|s| s.segment)
    );
    println!(
        "read one segment: {read_one:.2} s (loads the index), the next: {read_next:.3} s, then {:.1} ms each",
        read_many * 1e3
    );
    Ok(0)
}

fn walk_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten().map(|e| walk_size(&e.path())).sum()
}
