//! How an archive's segments live in a restic repository: durable within the flush interval,
//! listable fast after months of flushes.
//!
//! # Layout
//!
//! Segment `seq` of archive `ns/name` is two files in a snapshot:
//! `/coffer-binlog/ns/name/<seq:020>.binlog` (the segment, byte-exact: `restic dump <snap>
//! <that path> | mariadb-binlog -` reads it) and `<seq:020>.json` (its full [`SegmentMeta`]).
//! Archive snapshots are tagged `coffer-binlog`, `archive=ns/name`, `segments=<first>-<last>`
//! and `level=<n>`, host `coffer-binlog`, path `/coffer-binlog/ns/name`. Backup retention
//! never touches them ([`coffer_repo::ARCHIVE_TAG`]); [`SegmentStore::forget`] does.
//!
//! # Durability per flush, cheap forever
//!
//! [`put`](SegmentStore::put) writes one level-0 snapshot without reading the repository
//! ([`Repo::put_files`]): a data pack, a tree pack, one index file, then the snapshot file,
//! each a single write; the snapshot write is the durability point (before it the segment
//! is not listed, after it it is). rustic's archiver would read every index file of the
//! repository first, a cost that grows with every put.
//!
//! # Listing without trees
//!
//! Each snapshot's `description` (a rustic field restic keeps but does not show) holds the
//! summaries of its segments as compact JSON rows ([`catalog::Description`]), and the index
//! file its packs are listed in. [`list`](SegmentStore::list) reads snapshot files only. A
//! snapshot without a readable description (rewritten by `restic tag`, say) is read through
//! its `.json` files instead: slower, same answer.
//!
//! # Compaction
//!
//! [`compact`](SegmentStore::compact) merges every level-0 snapshot into one level-1
//! snapshot (those stored while it runs are left for the next call), and then, level by level, the oldest [`FANOUT`] snapshots of level n into one
//! of level n + 1 while the merged one holds at most [`MAX_SEGMENTS`] segments (the
//! description stays a few MB). A merge writes only trees (the blobs are reused), one
//! index file that repeats the packs of the merged snapshots' index files, and the
//! snapshot; then deletes the merged snapshot files, then their index files. So both the
//! snapshot count and the index file count stay small: called hourly, 30 days of 5 s
//! flushes are about 30 day-sized snapshots, up to 23 hour-sized ones and the last hour's
//! puts. A crash between the steps leaves the same segment in two snapshots (identical;
//! listing takes one) or an index entry twice (harmless; prune tidies): never a loss.
//!
//! # Concurrency
//!
//! Writes (put, compact, forget) hold a shared repository lock, as a backup does: backups
//! of the same repository run alongside, a prune (exclusive) waits for them and they fail
//! while it runs (the caller retries the same segment: a segment stored twice lists once).
//! One process writes one archive.
//!
//! Within that process, puts run while a compaction or a forget runs (the runner does its
//! maintenance on another thread, with its own `SegmentStore`, so the stream never waits
//! for it). They cannot conflict: a put reads nothing and writes only new files (pack,
//! index, snapshot); a compaction or forget deletes only the snapshot files it listed and
//! the index files those snapshots name, never a put's that landed after its listing (that
//! one stays a level-0 snapshot for the next compaction). The caches are per store. What a
//! listing can meet is a snapshot file deleted between its name being listed and its
//! reading: [`list`](SegmentStore::list) then lists again. Only one maintenance runs at a
//! time (two would merge the same snapshots twice: identical copies, harmless but
//! wasteful). A maintenance can be asked to stop ([`SegmentStore::cancelled_by`]): it
//! stops between two merges or two rewrites, each of which is crash-safe anyway.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use coffer_api::gtid::SegmentMeta;
use coffer_db::binlog::SegmentSink;
use coffer_repo::{IndexedRepo, Pick, Repo, RepoError, RepoResult, SnapshotMeta, ARCHIVE_TAG};

use super::catalog::{self, Description, Entry, Row};

/// Snapshots of one level merged into one of the next level.
pub const FANOUT: usize = 24;
/// A merge that would hold more segments than this is not made (about 2.3 days of 5 s
/// flushes; a 4 MB description).
pub const MAX_SEGMENTS: usize = 40_000;

const HOST: &str = "coffer-binlog";

/// One archive's segments in one repository.
#[derive(Clone)]
pub struct SegmentStore {
    repo: Repo,
    /// `namespace/name` of the BinlogArchive.
    archive: String,
    /// The last listing and an index-loaded repository for reads; refreshed when a read
    /// misses.
    cache: Arc<Mutex<Cache>>,
    /// Set: compaction and forget stop at their next step.
    cancel: Option<Arc<AtomicBool>>,
}

#[derive(Default)]
struct Cache {
    listing: Option<Listing>,
    indexed: Option<Arc<IndexedRepo>>,
}

/// A listing: the archive's snapshots and where each chosen segment is.
#[derive(Clone)]
struct Listing {
    entries: Vec<Entry>,
    chosen: BTreeMap<u64, (usize, SegmentSummary)>,
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStore")
            .field("repo", &self.repo)
            .field("archive", &self.archive)
            .finish_non_exhaustive()
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Small snapshots merged, and the snapshots written in their place.
    pub merged: u64,
    pub written: u64,
}

impl SegmentStore {
    pub fn new(repo: Repo, archive: &str) -> SegmentStore {
        SegmentStore {
            repo,
            archive: archive.to_string(),
            cache: Arc::default(),
            cancel: None,
        }
    }

    /// This store's compaction and forget stop at their next step (between two merges,
    /// between two rewrites) once `flag` is set: what is done stays done, the rest is left
    /// for the next call. Used to end a maintenance at shutdown without waiting for all of it.
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> SegmentStore {
        self.cancel = Some(flag);
        self
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    pub fn archive(&self) -> &str {
        &self.archive
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    fn dir(&self) -> String {
        format!("/coffer-binlog/{}", self.archive)
    }

    fn tags(&self, level: u32, first: u64, last: u64) -> Vec<String> {
        vec![
            ARCHIVE_TAG.to_string(),
            format!("archive={}", self.archive),
            format!("segments={first}-{last}"),
            format!("level={level}"),
        ]
    }

    fn snapshot_meta(&self, level: u32, first: u64, last: u64) -> SnapshotMeta {
        SnapshotMeta {
            host: HOST.into(),
            tags: self.tags(level, first, last),
            paths: vec![self.dir()],
            late_tags: Default::default(),
        }
    }

    /// Stores one closed segment; it is durable (restorable by `read`, listed by `list`)
    /// when this returns Ok.
    pub fn put(&self, data: Vec<u8>, meta: &SegmentMeta) -> RepoResult<()> {
        self.put_snapshot(vec![(data, meta.clone())], 0)
    }

    /// Stores consecutive segments in one snapshot of `level`: what compaction makes of
    /// their puts. For the layout benchmark, which simulates months of flushes in minutes.
    #[doc(hidden)]
    pub fn put_compacted(&self, segs: Vec<(Vec<u8>, SegmentMeta)>, level: u32) -> RepoResult<()> {
        self.put_snapshot(segs, level)
    }

    fn put_snapshot(&self, segs: Vec<(Vec<u8>, SegmentMeta)>, level: u32) -> RepoResult<()> {
        let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
            return Ok(());
        };
        let (first, last) = (first.1.seq, last.1.seq);
        let archive = segs[0].1.archive.clone();
        let mut rows = Vec::with_capacity(segs.len());
        let mut files = Vec::with_capacity(2 * segs.len());
        for (data, meta) in segs {
            if data.len() as u64 != meta.bytes {
                return Err(RepoError::Source(format!(
                    "segment {} of archive {} has {} bytes but its index says {}; not stored",
                    meta.seq,
                    self.archive,
                    data.len(),
                    meta.bytes
                )));
            }
            let json = serde_json::to_vec(&meta).expect("a segment index serialises");
            files.push((segment_file(&self.dir(), meta.seq, "binlog"), data));
            files.push((segment_file(&self.dir(), meta.seq, "json"), json));
            rows.push(Row::of(&meta));
        }
        let describe = |index: &str| {
            describe(&Description {
                format: catalog::FORMAT,
                archive: archive.clone(),
                level,
                index: index.to_string(),
                segments: rows.clone(),
            })
        };
        let _lock = self.repo.lock(false)?;
        let written =
            self.repo
                .put_files(files, &self.snapshot_meta(level, first, last), &describe)?;
        tracing::debug!(
            archive = %self.archive,
            first,
            last,
            snapshot = %written.snapshot.short_id,
            "segments stored"
        );
        Ok(())
    }

    /// Every segment of this archive, ordered by `seq`, as summaries (the index without the
    /// per-transaction list; [`meta`](Self::meta) has it).
    pub fn list(&self) -> RepoResult<Vec<SegmentSummary>> {
        let listing = self.refresh()?;
        Ok(listing.chosen.into_values().map(|(_, s)| s).collect())
    }

    /// Reads the archive's snapshots afresh (and drops the index-loaded repository, which
    /// may not know the newest packs).
    fn refresh(&self) -> RepoResult<Listing> {
        // A compaction (or forget) running beside this may delete a snapshot file after its
        // name was listed and before it is read; the next listing no longer names it.
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(archive = %self.archive, "listing again after: {e}");
                self.entries()?
            }
        };
        let chosen = catalog::choose(&entries)
            .into_iter()
            .map(|(seq, i, s)| (seq, (i, s)))
            .collect();
        let listing = Listing { entries, chosen };
        let mut cache = self.cache.lock().unwrap();
        cache.listing = Some(listing.clone());
        cache.indexed = None;
        Ok(listing)
    }

    /// This archive's snapshots, oldest first.
    fn entries(&self) -> RepoResult<Vec<Entry>> {
        let tag = format!("archive={}", self.archive);
        let mut snaps: Vec<_> = self
            .repo
            .snapshots()?
            .into_iter()
            .filter(|s| s.tags.iter().any(|t| t == ARCHIVE_TAG) && s.tags.contains(&tag))
            .collect();
        snaps.sort_by(|a, b| a.unix_time.cmp(&b.unix_time).then(a.id.cmp(&b.id)));
        let mut out = Vec::with_capacity(snaps.len());
        for s in snaps {
            let parsed = s
                .description
                .as_deref()
                .and_then(|d| serde_json::from_str::<Description>(d).ok())
                .filter(|d| d.format == catalog::FORMAT);
            let entry = match parsed {
                Some(d) => Entry {
                    snapshot: s.id.clone(),
                    level: d.level,
                    index: Some(d.index),
                    segments: d.segments.iter().map(|r| r.summary(&d.archive)).collect(),
                },
                None => self.entry_from_trees(&s.id, &s.tags)?,
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// A snapshot whose description is gone: its segments from its `.json` files.
    fn entry_from_trees(&self, id: &str, tags: &[String]) -> RepoResult<Entry> {
        tracing::warn!(
            archive = %self.archive,
            snapshot = %id,
            "archive snapshot without a segment index in its description; reading its files"
        );
        let level = tags
            .iter()
            .find_map(|t| t.strip_prefix("level=")?.parse().ok())
            .unwrap_or(0);
        let prefix = format!("{}/", self.dir());
        let reader = self.repo.reader(id)?;
        let mut segments = Vec::new();
        for (path, _) in self.repo.files(id)? {
            if !(path.starts_with(&prefix) && path.ends_with(".json")) {
                continue;
            }
            let mut buf = Vec::new();
            reader.dump(&path, &mut buf)?;
            let meta: SegmentMeta = serde_json::from_slice(&buf).map_err(|e| {
                RepoError::Source(format!(
                    "{path} in snapshot {id} is not a segment index: {e}"
                ))
            })?;
            segments.push(summary_of(&meta));
        }
        Ok(Entry {
            snapshot: id.to_string(),
            level,
            index: None,
            segments,
        })
    }

    /// Where segment `seq` is: the cached listing, refreshed when it does not know `seq`
    /// (or `fresh`).
    fn locate(&self, seq: u64, fresh: bool) -> RepoResult<(String, Arc<IndexedRepo>)> {
        let cached = if fresh {
            None
        } else {
            let cache = self.cache.lock().unwrap();
            cache.listing.as_ref().and_then(|l| {
                l.chosen
                    .get(&seq)
                    .map(|(i, _)| l.entries[*i].snapshot.clone())
            })
        };
        let snapshot = match cached {
            Some(s) => s,
            None => {
                let l = self.refresh()?;
                let Some((i, _)) = l.chosen.get(&seq) else {
                    return Err(RepoError::NoSnapshot {
                        location: self.repo.location(),
                        what: format!("segment {seq} of archive {}", self.archive),
                    });
                };
                l.entries[*i].snapshot.clone()
            }
        };
        let indexed = self.cache.lock().unwrap().indexed.clone();
        let indexed = match indexed {
            Some(r) => r,
            None => {
                let r = Arc::new(self.repo.indexed()?);
                self.cache.lock().unwrap().indexed = Some(r.clone());
                r
            }
        };
        Ok((snapshot, indexed))
    }

    /// Dumps one file of segment `seq`, refreshing once when the cached listing is stale
    /// (a compaction replaced the snapshot it names).
    fn dump(&self, seq: u64, ext: &str, w: &mut dyn Write) -> RepoResult<u64> {
        let path = segment_file(&self.dir(), seq, ext);
        let (snapshot, indexed) = self.locate(seq, false)?;
        let mut counting = Counting { inner: w, n: 0 };
        match indexed.dump(&snapshot, &path, &mut counting) {
            // Nothing was written yet when the snapshot or its file is gone.
            Err(RepoError::NoSuchFile { .. }) if counting.n == 0 => {
                let (snapshot, indexed) = self.locate(seq, true)?;
                indexed.dump(&snapshot, &path, w)
            }
            other => other,
        }
    }

    /// The full index (with every transaction's end) of segment `seq`.
    pub fn meta(&self, seq: u64) -> RepoResult<SegmentMeta> {
        let mut buf = Vec::new();
        self.dump(seq, "json", &mut buf)?;
        serde_json::from_slice(&buf).map_err(|e| {
            RepoError::Source(format!(
                "the index of segment {seq} of archive {} does not parse: {e}",
                self.archive
            ))
        })
    }

    /// Writes segment `seq`'s bytes (a binlog file `mariadb-binlog` reads) to `w`.
    pub fn read(&self, seq: u64, w: &mut dyn Write) -> RepoResult<u64> {
        self.dump(seq, "binlog", w)
    }

    /// Merges small per-flush snapshots into larger ones so listing stays fast: every
    /// level-0 snapshot into one of level 1, then the oldest [`FANOUT`] of a level into one
    /// of the next while it stays within [`MAX_SEGMENTS`]; repeated until nothing merges.
    /// Call it periodically (hourly suits the default flush interval); it costs one read of
    /// the repository's index and a few small writes.
    pub fn compact(&self) -> RepoResult<Compacted> {
        self.compact_until(Halt::Never, &mut || {})
    }

    /// `listed` runs after each listing, before its merge: tests store a segment there, as
    /// the stream does meanwhile.
    fn compact_until(&self, halt: Halt, listed: &mut dyn FnMut()) -> RepoResult<Compacted> {
        let _lock = self.repo.lock(false)?;
        let mut done = Compacted::default();
        while !self.cancelled() {
            let listing = self.refresh()?;
            // Level-0 snapshots are merged by the first step only: puts go on during a
            // compaction, and merging theirs again and again could keep it from ending.
            let Some((group, level)) = next_merge(&listing.entries, done.written == 0) else {
                break;
            };
            listed();
            self.rewrite(&listing, &group, level, &Default::default(), halt)?;
            done.merged += group.len() as u64;
            done.written += 1;
            if halt != Halt::Never {
                break;
            }
        }
        self.invalidate();
        if done.merged > 0 {
            tracing::info!(archive = %self.archive, merged = done.merged, written = done.written, "archive snapshots compacted");
        }
        Ok(done)
    }

    /// Removes these segments (retention): snapshots holding only removed segments are
    /// deleted, the others written again without them. Their data stays in the
    /// repository until a prune. A cancelled store stops between two snapshots: the rest
    /// is removed by the next call.
    pub fn forget(&self, seqs: &[u64]) -> RepoResult<()> {
        let _lock = self.repo.lock(false)?;
        let gone: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        let listing = self.refresh()?;
        for (i, e) in listing.entries.iter().enumerate() {
            if self.cancelled() {
                break;
            }
            if e.segments.iter().any(|s| gone.contains(&s.meta.seq)) {
                self.rewrite(&listing, &[i], e.level, &gone, Halt::Never)?;
            }
        }
        self.invalidate();
        Ok(())
    }

    /// Writes one snapshot of `level` holding the segments of the entries `group` (the copies
    /// the listing chose, except `drop`), consolidating their index files; then deletes the
    /// group's snapshot files, then the consolidated index files. A crash before the end
    /// leaves identical copies (listed once) or extra index entries: nothing is lost.
    fn rewrite(
        &self,
        listing: &Listing,
        group: &[usize],
        level: u32,
        drop: &std::collections::BTreeSet<u64>,
        halt: Halt,
    ) -> RepoResult<()> {
        let mut names: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut rows = Vec::new();
        let mut archive = None;
        for (seq, (i, summary)) in &listing.chosen {
            if !group.contains(i) || drop.contains(seq) {
                continue;
            }
            let n = names.entry(*i).or_default();
            n.push(format!("{seq:020}.binlog"));
            n.push(format!("{seq:020}.json"));
            archive.get_or_insert_with(|| summary.meta.archive.clone());
            rows.push(Row::from_summary(summary));
        }
        let old: Vec<String> = group
            .iter()
            .map(|i| listing.entries[*i].snapshot.clone())
            .collect();
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let (first, last) = (first.0, last.0);
            let picks: Vec<Pick> = names
                .into_iter()
                .map(|(i, names)| Pick {
                    snapshot: listing.entries[i].snapshot.clone(),
                    dir: self.dir(),
                    names,
                })
                .collect();
            let consolidate: Vec<String> = group
                .iter()
                .filter_map(|i| listing.entries[*i].index.clone())
                .collect();
            let archive = archive.unwrap_or_else(|| self.archive.clone());
            let describe = |index: &str| {
                describe(&Description {
                    format: catalog::FORMAT,
                    archive: archive.clone(),
                    level,
                    index: index.to_string(),
                    segments: rows.clone(),
                })
            };
            let written = self.repo.compose(
                &picks,
                &consolidate,
                &self.snapshot_meta(level, first, last),
                &describe,
            )?;
            if halt == Halt::AfterSnapshot {
                return Ok(());
            }
            // A crash part-way through the deletions is simulated by deleting half.
            let keep = if halt == Halt::HalfDeleted {
                old.len() / 2
            } else {
                0
            };
            self.repo.delete_snapshot_files(&old[keep..])?;
            if halt == Halt::HalfDeleted {
                return Ok(());
            }
            self.repo.delete_index_files(&written.consolidated)?;
        } else {
            // Nothing of theirs counts (removed, or held by another snapshot): their index
            // files stay for prune, which knows what else they list.
            self.repo.delete_snapshot_files(&old)?;
        }
        Ok(())
    }

    fn invalidate(&self) {
        *self.cache.lock().unwrap() = Cache::default();
    }
}

/// Where a rewrite stops: only tests stop early, to show what a crash there leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    Never,
    #[cfg_attr(not(test), allow(dead_code))]
    AfterSnapshot,
    #[cfg_attr(not(test), allow(dead_code))]
    HalfDeleted,
}

/// The next merge a compaction makes: the entries to merge and the level of the result.
/// Level 0 (only when `level0`): all of them (at least two, within [`MAX_SEGMENTS`]);
/// level n: the oldest [`FANOUT`] when their segments fit [`MAX_SEGMENTS`].
fn next_merge(entries: &[Entry], level0: bool) -> Option<(Vec<usize>, u32)> {
    let mut levels: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.level == 0 && !level0 {
            continue;
        }
        levels.entry(e.level).or_default().push(i);
    }
    for (level, mut idx) in levels {
        // Oldest segments first.
        idx.sort_by_key(|i| entries[*i].segments.first().map(|s| s.meta.seq));
        let mut group = Vec::new();
        let mut total = 0;
        for i in idx {
            let n = entries[i].segments.len();
            if total + n > MAX_SEGMENTS || (level > 0 && group.len() == FANOUT) {
                break;
            }
            group.push(i);
            total += n;
        }
        let enough = if level == 0 { 2 } else { FANOUT };
        if group.len() >= enough {
            return Some((group, level + 1));
        }
    }
    None
}

fn segment_file(dir: &str, seq: u64, ext: &str) -> String {
    format!("{dir}/{seq:020}.{ext}")
}

fn describe(d: &Description) -> String {
    serde_json::to_string(d).expect("a description serialises")
}

fn summary_of(meta: &SegmentMeta) -> SegmentSummary {
    SegmentSummary {
        first_time: meta.first_time(),
        last_time: meta.last_time(),
        transactions: meta.transactions.len() as u64,
        meta: SegmentMeta {
            transactions: Vec::new(),
            ..meta.clone()
        },
    }
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A segment as listed: its index without the per-transaction list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentSummary {
    /// `meta` with `transactions` emptied.
    pub meta: SegmentMeta,
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    pub transactions: u64,
}

/// A [`SegmentSink`] that buffers each segment in memory (at most the segment size limit) and
/// stores it with [`SegmentStore::put`] when it closes.
pub struct RepoSink {
    store: SegmentStore,
}

impl RepoSink {
    pub fn new(store: SegmentStore) -> RepoSink {
        RepoSink { store }
    }

    pub fn store(&self) -> &SegmentStore {
        &self.store
    }
}

impl SegmentSink for RepoSink {
    type Out = Vec<u8>;

    fn open(&mut self, _seq: u64) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn close(&mut self, out: Vec<u8>, meta: &SegmentMeta) -> std::io::Result<()> {
        self.store
            .put(out, meta)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command, sync::Arc};

    use coffer_api::gtid::{GtidState, TxEnd};
    use coffer_repo::LocalStore;

    use super::*;

    const PASSWORD: &str = "segment-store-test";
    const ARCHIVE: &str = "ns/arch";

    fn repo(dir: &Path) -> Repo {
        Repo::open_or_init(Arc::new(LocalStore::new(dir)), PASSWORD)
            .unwrap()
            .0
    }

    /// Segment `seq`: `len` bytes that differ per segment, `txs` transactions of domain 0
    /// continuing the previous segment.
    fn segment(seq: u64, len: usize, txs: u64) -> (Vec<u8>, SegmentMeta) {
        let data: Vec<u8> = (0..len)
            .map(|i| ((i as u64 * 31 + seq * 7) % 251) as u8)
            .collect();
        let state = |n: u64| -> GtidState {
            if n == 0 {
                GtidState::default()
            } else {
                format!("0-1-{n}").parse().unwrap()
            }
        };
        let first = seq * txs;
        let transactions = (0..txs)
            .map(|k| TxEnd {
                gtid: format!("0-1-{}", first + k + 1).parse().unwrap(),
                time: 1_700_000_000 + (seq * 5) as i64,
                end: len as u64 * (k + 1) / txs,
                source_end: 1000 + k,
            })
            .collect();
        let meta = SegmentMeta {
            archive: ARCHIVE.into(),
            seq,
            source_server_id: 1,
            source_address: "db-0:3306".into(),
            source_file: "mariadb-bin.000001".into(),
            start_state: state(first),
            end_state: state(first + txs),
            transactions,
            bytes: len as u64,
        };
        (data, meta)
    }

    fn restic(repo: &Path, args: &[&str]) -> std::process::Output {
        Command::new("restic")
            .arg("-r")
            .arg(repo)
            .arg("--no-cache")
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .expect("restic is installed (scripts/install-deps.sh)")
    }

    /// Every stored segment reads back byte-exact with its full index, and the listing is
    /// exactly the stored summaries in seq order.
    fn assert_holds(store: &SegmentStore, segs: &[(Vec<u8>, SegmentMeta)]) {
        let listed = store.list().unwrap();
        let want: Vec<SegmentSummary> = segs.iter().map(|(_, m)| summary_of(m)).collect();
        assert_eq!(listed, want);
        for (data, meta) in segs {
            let mut out = Vec::new();
            let n = store.read(meta.seq, &mut out).unwrap();
            assert_eq!(n, data.len() as u64);
            assert!(out == *data, "segment {} differs", meta.seq);
            assert_eq!(store.meta(meta.seq).unwrap(), *meta);
        }
    }

    #[test]
    fn put_list_meta_read_round_trip_and_restic_reads_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
        assert_eq!(store.list().unwrap(), vec![]);
        // One segment larger than a blob (several blobs), one empty of transactions.
        let segs = vec![
            segment(0, 3_000_000, 3),
            segment(1, 500, 1),
            segment(2, 64, 0),
        ];
        for (data, meta) in &segs {
            store.put(data.clone(), meta).unwrap();
        }
        assert_holds(&store, &segs);
        // A later put is found by a store whose listing is cached.
        let more = segment(3, 1000, 2);
        store.put(more.0.clone(), &more.1).unwrap();
        let mut out = Vec::new();
        store.read(3, &mut out).unwrap();
        assert_eq!(out, more.0);
        assert!(matches!(
            store.read(9, &mut Vec::new()),
            Err(RepoError::NoSnapshot { .. })
        ));
        // Another archive in the same repository is not listed.
        let other = SegmentStore::new(store.repo().clone(), "ns/other");
        assert_eq!(other.list().unwrap(), vec![]);

        // restic reads the segment byte-exact and finds the repository sound.
        let snaps = restic(
            dir.path(),
            &["snapshots", "--json", "--tag", "coffer-binlog"],
        );
        assert!(snaps.status.success(), "{snaps:?}");
        let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
        assert_eq!(snaps.as_array().unwrap().len(), 4);
        let first = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == "segments=0-0")
            })
            .unwrap();
        let path = "/coffer-binlog/ns/arch/00000000000000000000.binlog";
        let dump = restic(dir.path(), &["dump", first["id"].as_str().unwrap(), path]);
        assert!(dump.status.success(), "{dump:?}");
        assert!(dump.stdout == segs[0].0, "restic dump differs");
        let check = restic(dir.path(), &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
    }

    fn puts(store: &SegmentStore, seqs: std::ops::Range<u64>) -> Vec<(Vec<u8>, SegmentMeta)> {
        seqs.map(|seq| {
            let (data, meta) = segment(seq, 200 + (seq as usize * 37) % 3000, seq % 3);
            store.put(data.clone(), &meta).unwrap();
            (data, meta)
        })
        .collect()
    }

    fn snapshot_count(store: &SegmentStore) -> usize {
        store.repo().snapshots().unwrap().len()
    }

    fn index_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("index")).unwrap().count()
    }

    #[test]
    fn compaction_keeps_every_segment_and_shrinks_snapshots_and_index_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
        let mut segs = puts(&store, 0..30);
        let before = store.list().unwrap();
        assert_eq!(snapshot_count(&store), 30);
        assert_eq!(index_count(dir.path()), 30);

        let done = store.compact().unwrap();
        assert_eq!(
            done,
            Compacted {
                merged: 30,
                written: 1
            }
        );
        assert_eq!(store.list().unwrap(), before);
        assert_eq!(snapshot_count(&store), 1);
        assert_eq!(
            index_count(dir.path()),
            1,
            "the puts' index files are consolidated"
        );
        assert_holds(&store, &segs);

        // Puts after a compaction, compacted again: two level-1 snapshots, all segments.
        segs.extend(puts(&store, 30..40));
        assert_eq!(
            store.compact().unwrap(),
            Compacted {
                merged: 10,
                written: 1
            }
        );
        assert_eq!(store.compact().unwrap(), Compacted::default());
        assert_eq!(snapshot_count(&store), 2);
        assert_eq!(index_count(dir.path()), 2);
        assert_holds(&store, &segs);

        // FANOUT level-1 snapshots make one of level 2.
        for k in 0..(FANOUT as u64 - 2) {
            segs.extend(puts(&store, 40 + k * 2..42 + k * 2));
            store.compact().unwrap();
        }
        let tags: Vec<Vec<String>> = store
            .repo()
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.tags)
            .collect();
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert!(tags[0].contains(&"level=2".to_string()), "{tags:?}");
        assert!(
            tags[0].contains(&format!("segments=0-{}", segs.len() - 1)),
            "{tags:?}"
        );
        assert_eq!(index_count(dir.path()), 1);
        assert_holds(&store, &segs);

        let check = restic(dir.path(), &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
        // restic still reads a segment out of the merged snapshot.
        let path = "/coffer-binlog/ns/arch/00000000000000000017.binlog";
        let dump = restic(dir.path(), &["dump", "latest", path]);
        assert!(
            dump.status.success() && dump.stdout == segs[17].0,
            "{:?}",
            dump.status
        );
    }

    #[test]
    fn a_compaction_cut_short_loses_nothing_and_lists_each_segment_once() {
        for halt in [Halt::AfterSnapshot, Halt::HalfDeleted] {
            let dir = tempfile::tempdir().unwrap();
            let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
            let segs = puts(&store, 0..12);
            let before = store.list().unwrap();
            store.compact_until(halt, &mut || {}).unwrap();
            assert!(
                snapshot_count(&store) > 1,
                "{halt:?} left the old snapshots"
            );
            // A store that did not see the crash lists and reads every segment once.
            let fresh = SegmentStore::new(store.repo().clone(), ARCHIVE);
            assert_eq!(fresh.list().unwrap(), before, "{halt:?}");
            assert_holds(&fresh, &segs);
            // The next compaction finishes the job.
            fresh.compact().unwrap();
            assert_eq!(snapshot_count(&fresh), 1, "{halt:?}");
            assert_holds(&fresh, &segs);
            let check = restic(dir.path(), &["check", "--read-data"]);
            assert!(check.status.success(), "{halt:?}: {check:?}");
        }
    }

    /// The stream stores segments while a compaction runs (another store on the same
    /// repository, as the runner's maintenance thread has): a put made after the
    /// compaction listed and before it merged is neither lost nor merged; the next
    /// compaction takes it.
    #[test]
    fn segments_stored_during_a_compaction_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SegmentStore::new(repo(dir.path()), ARCHIVE);
        let compactor = SegmentStore::new(writer.repo().clone(), ARCHIVE);
        let mut segs = puts(&writer, 0..8);
        let mut during = Vec::new();
        let done = compactor
            .compact_until(Halt::Never, &mut || {
                if during.is_empty() {
                    during.extend(puts(&writer, 8..10));
                }
            })
            .unwrap();
        // 0..8 merged; the two puts made meanwhile are left for the next compaction.
        assert_eq!(
            done,
            Compacted {
                merged: 8,
                written: 1
            }
        );
        segs.extend(during);
        // The writer's own cached listing and a fresh store both see every segment once.
        assert_holds(&writer, &segs);
        assert_holds(&SegmentStore::new(writer.repo().clone(), ARCHIVE), &segs);
        assert_eq!(snapshot_count(&writer), 3);
        assert_eq!(
            compactor.compact().unwrap(),
            Compacted {
                merged: 2,
                written: 1
            }
        );
        assert_eq!(snapshot_count(&writer), 2);
        assert_eq!(index_count(dir.path()), 2);
        assert_holds(&writer, &segs);
        let check = restic(dir.path(), &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
    }

    /// A cancelled maintenance stops between steps: not at all when cancelled before, after
    /// the merge in progress when cancelled during it; nothing is lost either way.
    #[test]
    fn a_cancelled_compaction_stops_between_merges() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SegmentStore::new(repo(dir.path()), ARCHIVE);
        let flag = Arc::new(AtomicBool::new(true));
        let cancelled =
            SegmentStore::new(writer.repo().clone(), ARCHIVE).cancelled_by(flag.clone());
        // FANOUT - 1 level-1 snapshots and a few puts: two merges are due (the puts into
        // one more level-1 snapshot, then the FANOUT level-1 ones into a level-2).
        let mut segs = Vec::new();
        let n = FANOUT as u64 - 1;
        for k in 0..n {
            segs.extend(puts(&writer, 2 * k..2 * k + 2));
            writer.compact().unwrap();
        }
        segs.extend(puts(&writer, 2 * n..2 * n + 3));
        let before = snapshot_count(&writer);
        assert_eq!(before, FANOUT + 2);
        assert_eq!(cancelled.compact().unwrap(), Compacted::default());
        cancelled.forget(&[0, 1]).unwrap();
        assert_eq!(
            snapshot_count(&writer),
            before,
            "cancelled before: nothing done"
        );
        flag.store(false, Ordering::SeqCst);
        let done = cancelled
            .compact_until(Halt::Never, &mut || flag.store(true, Ordering::SeqCst))
            .unwrap();
        assert_eq!(done.written, 1, "the merge in progress finishes: {done:?}");
        assert_holds(&writer, &segs);
        flag.store(false, Ordering::SeqCst);
        cancelled.compact().unwrap();
        assert_eq!(
            snapshot_count(&writer),
            1,
            "the rest is done by the next call"
        );
        assert_holds(&writer, &segs);
    }

    #[test]
    fn forget_removes_segments_from_small_and_compacted_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
        let mut segs = puts(&store, 0..10);
        store.compact().unwrap();
        segs.extend(puts(&store, 10..14));
        // From the compacted snapshot (0..5) and whole small ones (10, 11).
        store.forget(&[0, 1, 2, 3, 4, 10, 11, 99]).unwrap();
        let kept: Vec<_> = segs
            .into_iter()
            .filter(|(_, m)| ![0, 1, 2, 3, 4, 10, 11].contains(&m.seq))
            .collect();
        assert_holds(&store, &kept);
        assert_eq!(
            snapshot_count(&store),
            3,
            "the rewritten one and two small ones"
        );
        let tags: Vec<String> = store
            .repo()
            .snapshots()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.tags)
            .collect();
        assert!(tags.contains(&"segments=5-9".to_string()), "{tags:?}");
        assert!(matches!(
            store.read(0, &mut Vec::new()),
            Err(RepoError::NoSnapshot { .. })
        ));
        // Everything removed, then pruned: the repository is sound and holds nothing.
        store.forget(&(0..14).collect::<Vec<_>>()).unwrap();
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(snapshot_count(&store), 0);
        store.repo().prune().unwrap();
        let check = restic(dir.path(), &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
    }

    #[test]
    fn backup_retention_leaves_archive_snapshots_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
        puts(&store, 0..3);
        let rules = coffer_repo::Retention {
            keep_last: Some(1),
            ..Default::default()
        };
        let out = store.repo().forget(&rules, false).unwrap();
        assert!(out.removed.is_empty(), "{out:?}");
        assert_eq!(store.list().unwrap().len(), 3);
    }

    #[test]
    fn a_segment_whose_size_disagrees_with_its_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SegmentStore::new(repo(dir.path()), ARCHIVE);
        let (mut data, meta) = segment(0, 100, 1);
        data.pop();
        assert!(store.put(data, &meta).is_err());
        assert_eq!(store.list().unwrap(), vec![]);
    }
}
