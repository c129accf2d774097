//! How an archive's segments live in a restic repository: durable within the flush interval,
//! listable fast after months of flushes.
//!
//! CONTRACT (bodies to be written): the runner and the restore use only these signatures.

use std::io::Write;

use coffer_api::gtid::SegmentMeta;
use coffer_db::binlog::SegmentSink;
use coffer_repo::{Repo, RepoResult};

/// One archive's segments in one repository.
#[derive(Debug, Clone)]
pub struct SegmentStore {
    repo: Repo,
    /// `namespace/name` of the BinlogArchive.
    archive: String,
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
        }
    }

    pub fn archive(&self) -> &str {
        &self.archive
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Stores one closed segment; it is durable (restorable by `read`, listed by `list`)
    /// when this returns Ok.
    pub fn put(&self, _data: Vec<u8>, _meta: &SegmentMeta) -> RepoResult<()> {
        unimplemented!("SegmentStore::put")
    }

    /// Every segment of this archive, ordered by `seq`, as summaries (the index without the
    /// per-transaction list; [`meta`](Self::meta) has it).
    pub fn list(&self) -> RepoResult<Vec<SegmentSummary>> {
        unimplemented!("SegmentStore::list")
    }

    /// The full index (with every transaction's end) of segment `seq`.
    pub fn meta(&self, _seq: u64) -> RepoResult<SegmentMeta> {
        unimplemented!("SegmentStore::meta")
    }

    /// Writes segment `seq`'s bytes (a binlog file `mariadb-binlog` reads) to `w`.
    pub fn read(&self, _seq: u64, _w: &mut dyn Write) -> RepoResult<u64> {
        unimplemented!("SegmentStore::read")
    }

    /// Merges small per-flush snapshots into larger ones so listing stays fast.
    pub fn compact(&self) -> RepoResult<Compacted> {
        unimplemented!("SegmentStore::compact")
    }

    /// Removes these segments (retention).
    pub fn forget(&self, _seqs: &[u64]) -> RepoResult<()> {
        unimplemented!("SegmentStore::forget")
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
