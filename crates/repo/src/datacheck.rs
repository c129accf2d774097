//! Reading the repository's data back: every blob of every pack (or of a rotating subset of
//! the packs) is decrypted, decompressed and hashed, so that damage in storage is found
//! before a restore needs the data.
//!
//! The structural check that follows every backup only compares the index with the list of
//! files; a pack whose bytes were overwritten passes it, and the next backup deduplicates
//! against the damaged blobs, so every later snapshot shares the damage. The data check
//! therefore does more than report:
//!
//! - it names each damaged pack, the blobs in it that do not read back intact, and every
//!   snapshot whose trees reference one of those blobs;
//! - [`DataChecker::remove_damaged`] takes the damaged packs out of the repository: the blobs
//!   of a damaged pack that still read back intact are copied into a new pack first
//!   (salvaged, byte for byte, still encrypted), then the index files are written again
//!   without the damaged pack, then the pack file is deleted. What the index no longer lists
//!   the next backup cannot deduplicate against: it writes those blobs again, and since a
//!   blob's id is the hash of its content, the older snapshots that referenced them are whole
//!   again as well. A snapshot whose damaged data is not backed up again stays broken, and
//!   the structural check after each backup says so until it is forgotten.
//!
//! Memory stays bounded: packs are read a few MiB at a time, and of the index only the
//! locations of tree blobs and the blob lists of the packs being read are kept (rustic
//! keeps the former too).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use rustic_core::repofile::Tree;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    cipher::RepoCipher,
    lock::hex,
    repository::{RepoError, RepoResult},
    sizes::{sha256, BlobJson, IndexJson, PackJson},
    store::ObjectStore,
};

/// Consecutive blobs are read together up to this many bytes (a single larger blob is read
/// alone): the bound on what one pack check holds in memory.
const READ_GROUP: u64 = 8 << 20;

/// Which packs one run of the data check reads: the packs whose id, taken as a number, is
/// `slice` modulo `of`. Running slices 1..=M (on M days, say) reads every pack exactly once;
/// packs written in between are picked up by their slice in the next round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSubset {
    /// Zero-based.
    slice: u32,
    of: u32,
}

impl DataSubset {
    /// Every pack.
    pub const ALL: DataSubset = DataSubset { slice: 0, of: 1 };

    /// `N/M` (1 ≤ N ≤ M), as restic's `--read-data-subset` spells it; `all` for every pack.
    pub fn parse(s: &str) -> Result<DataSubset, String> {
        if s == "all" {
            return Ok(DataSubset::ALL);
        }
        let bad = || format!("`{s}` is not a subset: write N/M with 1 <= N <= M (e.g. 3/7)");
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(DataSubset {
            slice: n - 1,
            of: m,
        })
    }

    /// The slice a daily data check reads on day `day` (days since 1970-01-01, UTC) when
    /// every pack must be read once within `period_days`.
    pub fn of_day(day: u64, period_days: u32) -> DataSubset {
        let of = period_days.max(1);
        DataSubset {
            slice: (day % u64::from(of)) as u32,
            of,
        }
    }

    /// [`of_day`](Self::of_day) for today.
    pub fn today(period_days: u32) -> DataSubset {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        DataSubset::of_day(secs / 86_400, period_days)
    }

    pub fn is_all(&self) -> bool {
        self.of == 1
    }

    /// Whether the pack with this (hex) id belongs to the subset. The first four bytes of a
    /// SHA-256 are evenly spread, so the slices are about equally large.
    pub fn contains(&self, pack_id: &str) -> bool {
        let n = pack_id
            .get(..8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        n % self.of == self.slice
    }
}

impl std::fmt::Display for DataSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            f.write_str("all")
        } else {
            write!(f, "{}/{}", self.slice + 1, self.of)
        }
    }
}

/// What one data check found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataCheckReport {
    /// The subset read (`all` or `N/M`).
    pub subset: String,
    /// Packs the index lists.
    pub packs_total: usize,
    /// Packs read by this check.
    pub packs_read: usize,
    pub bytes_read: u64,
    pub damaged: Vec<DamagedPack>,
}

impl DataCheckReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }

    /// One line naming every damaged pack and the snapshots that depend on it.
    pub fn summary(&self) -> String {
        self.damaged
            .iter()
            .map(|d| {
                let snaps = if d.snapshots.is_empty() {
                    "no snapshot depends on its damaged blobs".to_string()
                } else {
                    format!(
                        "snapshot(s) {} depend on it",
                        d.snapshots
                            .iter()
                            .map(|s| &s[..s.len().min(8)])
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                format!("pack {} is damaged ({}); {snaps}", d.id, d.reason)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One pack whose data does not read back as written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DamagedPack {
    pub id: String,
    /// What is wrong with it, for a person.
    pub reason: String,
    /// Blobs in it that do not read back intact (hex ids). The others are sound.
    pub damaged_blobs: Vec<String>,
    /// Blobs the index lists in it.
    pub blobs: usize,
    /// Snapshots (full ids) whose trees reference one of the damaged blobs: they do not
    /// restore whole until the blobs are written again.
    pub snapshots: Vec<String>,
    /// The blobs that read back intact, to be salvaged.
    #[serde(skip)]
    sound: Vec<BlobJson>,
}

/// What [`DataChecker::remove_damaged`] did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovalOutcome {
    pub packs_removed: Vec<String>,
    /// Intact blobs copied out of the damaged packs.
    pub blobs_salvaged: usize,
    /// Blobs that are gone until a backup writes them again.
    pub blobs_dropped: usize,
    /// Index files written again without the damaged packs.
    pub index_files_rewritten: usize,
}

/// Where a tree blob lives.
struct TreeLoc {
    pack: String,
    offset: u32,
    length: u32,
    uncompressed_length: Option<u32>,
}

/// The data check over one repository; the caller holds the repository's lock (shared for
/// [`check`](Self::check), exclusive for [`remove_damaged`](Self::remove_damaged)).
pub(crate) struct DataChecker<'a> {
    pub store: &'a Arc<dyn ObjectStore>,
    pub cipher: RepoCipher,
    /// Repository format v2 compresses index files.
    pub compress: bool,
}

fn pack_key(id: &str) -> String {
    format!("data/{}/{id}", &id[..id.len().min(2)])
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl DataChecker<'_> {
    fn storage(&self, e: crate::store::StoreError) -> RepoError {
        RepoError::Storage(e.to_string())
    }

    fn corrupt(&self, what: &str, message: impl std::fmt::Display) -> RepoError {
        RepoError::Operation {
            location: self.store.location(),
            message: format!("{what}: {message}"),
        }
    }

    /// An unpacked file (index, snapshot), decrypted.
    fn read_file(&self, key: &str) -> RepoResult<Vec<u8>> {
        let raw = self.store.read(key).map_err(|e| self.storage(e))?;
        self.cipher.open_file(&raw).ok_or_else(|| {
            self.corrupt(
                key,
                "it does not decrypt with the repository key (the file is damaged)",
            )
        })
    }

    fn read_index(&self, key: &str) -> RepoResult<IndexJson> {
        serde_json::from_slice(&self.read_file(key)?).map_err(|e| self.corrupt(key, e))
    }

    /// Reads the packs of `subset` and reports the damaged ones with the snapshots that
    /// depend on them.
    pub fn check(&self, subset: DataSubset) -> RepoResult<DataCheckReport> {
        let files: HashMap<String, u64> = self
            .store
            .list("data")
            .map_err(|e| self.storage(e))?
            .into_iter()
            .map(|(k, size)| (last_segment(&k).to_string(), size))
            .collect();
        let mut trees: HashMap<String, TreeLoc> = HashMap::new();
        let mut selected: BTreeMap<String, Vec<BlobJson>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (key, _) in self.store.list("index").map_err(|e| self.storage(e))? {
            for pack in self.read_index(&key)?.packs {
                if !seen.insert(pack.id.clone()) {
                    continue;
                }
                for b in pack.blobs.iter().filter(|b| b.tpe == "tree") {
                    trees.insert(
                        b.id.clone(),
                        TreeLoc {
                            pack: pack.id.clone(),
                            offset: b.offset,
                            length: b.length,
                            uncompressed_length: b.uncompressed_length,
                        },
                    );
                }
                if subset.contains(&pack.id) {
                    selected.insert(pack.id, pack.blobs);
                }
            }
        }
        let mut report = DataCheckReport {
            subset: subset.to_string(),
            packs_total: seen.len(),
            packs_read: selected.len(),
            ..Default::default()
        };
        for (id, blobs) in selected {
            let (damaged, read) = self.verify_pack(&id, blobs, files.get(&id).copied())?;
            report.bytes_read += read;
            if let Some(d) = damaged {
                tracing::error!(pack = %d.id, reason = %d.reason, "damaged pack");
                report.damaged.push(d);
            }
        }
        if report.damaged.iter().any(|d| !d.damaged_blobs.is_empty()) {
            self.find_snapshots(&mut report.damaged, &trees)?;
        }
        Ok(report)
    }

    /// Reads one pack whole, blob by blob; returns the damage found and the bytes read.
    fn verify_pack(
        &self,
        id: &str,
        mut blobs: Vec<BlobJson>,
        size: Option<u64>,
    ) -> RepoResult<(Option<DamagedPack>, u64)> {
        let n = blobs.len();
        let damaged = |reason: String, bad: Vec<String>, sound: Vec<BlobJson>| DamagedPack {
            id: id.to_string(),
            reason,
            damaged_blobs: bad,
            blobs: n,
            snapshots: Vec::new(),
            sound,
        };
        let Some(size) = size else {
            let bad = blobs.iter().map(|b| b.id.clone()).collect();
            let why = "the pack file is missing".to_string();
            return Ok((Some(damaged(why, bad, Vec::new())), 0));
        };
        let key = pack_key(id);
        blobs.sort_by_key(|b| b.offset);
        let mut hasher = Sha256::new();
        let mut expected = 0u64; // where the next blob should start, if the pack is contiguous
        let mut contiguous = true;
        let mut read = 0u64;
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut sound = Vec::new();
        let mut i = 0;
        while i < blobs.len() {
            let start = u64::from(blobs[i].offset);
            let mut end = start + u64::from(blobs[i].length);
            let mut j = i + 1;
            while j < blobs.len() && u64::from(blobs[j].offset) == end && end - start < READ_GROUP {
                end += u64::from(blobs[j].length);
                j += 1;
            }
            contiguous &= start == expected;
            if end > size {
                // The file is shorter than the index says: what lies past its end is lost.
                for b in &blobs[i..j] {
                    bad.push((
                        b.id.clone(),
                        format!("it lies past the end of the {size}-byte pack file"),
                    ));
                }
                contiguous = false;
                i = j;
                continue;
            }
            let data = self
                .store
                .read_range(&key, start, end - start)
                .map_err(|e| self.storage(e))?;
            read += data.len() as u64;
            if data.len() as u64 != end - start {
                return Err(self.corrupt(
                    &key,
                    format!(
                        "a read of {} bytes at {start} returned {}",
                        end - start,
                        data.len()
                    ),
                ));
            }
            if contiguous {
                hasher.update(&data);
            }
            expected = end;
            for b in &blobs[i..j] {
                let at = (u64::from(b.offset) - start) as usize;
                let raw = &data[at..at + b.length as usize];
                match self.blob_problem(b, raw) {
                    Some(why) => bad.push((b.id.clone(), why)),
                    None => sound.push(b.clone()),
                }
            }
            i = j;
        }
        let mut problems = Vec::new();
        if contiguous && expected <= size {
            // The header and its length follow the blobs.
            let tail = self
                .store
                .read_range(&key, expected, size - expected)
                .map_err(|e| self.storage(e))?;
            read += tail.len() as u64;
            hasher.update(&tail);
            if hex(&hasher.finalize()) != id {
                problems.push("its content does not hash to its name".to_string());
            }
            if let Some(p) = self.header_problem(&tail, &blobs) {
                problems.push(p);
            }
        } else if bad.is_empty() {
            problems.push("the index leaves gaps between its blobs".to_string());
        }
        if bad.is_empty() && problems.is_empty() {
            return Ok((None, read));
        }
        let mut reason = Vec::new();
        if let Some((first, why)) = bad.first() {
            reason.push(format!(
                "{} of its {n} blobs do not read back intact (blob {}: {why})",
                bad.len(),
                &first[..first.len().min(12)]
            ));
        }
        reason.extend(problems);
        let bad = bad.into_iter().map(|(b, _)| b).collect();
        Ok((Some(damaged(reason.join("; "), bad, sound)), read))
    }

    /// Why one stored blob does not yield its content, if it does not.
    fn blob_problem(&self, b: &BlobJson, raw: &[u8]) -> Option<String> {
        let Some(plain) = self.cipher.open(raw) else {
            return Some("its authentication code does not match: the bytes changed".into());
        };
        let plain = match b.uncompressed_length {
            Some(len) => match zstd::bulk::decompress(&plain, len as usize) {
                Ok(p) if p.len() == len as usize => p,
                Ok(p) => return Some(format!("it decompresses to {} bytes, not {len}", p.len())),
                Err(e) => return Some(format!("it does not decompress: {e}")),
            },
            None => plain,
        };
        (hex(&sha256(&plain)) != b.id).then(|| "its content does not hash to its id".into())
    }

    /// Checks the pack's header (`tail`: the encrypted header and its 4-byte length) against
    /// the index's list of its blobs.
    fn header_problem(&self, tail: &[u8], blobs: &[BlobJson]) -> Option<String> {
        let Some(len_at) = tail.len().checked_sub(4) else {
            return Some("it has no header".into());
        };
        let hlen = u32::from_le_bytes(tail[len_at..].try_into().expect("4 bytes")) as usize;
        if hlen != len_at {
            return Some(format!(
                "its header length says {hlen} bytes where {len_at} are"
            ));
        }
        let Some(header) = self.cipher.open(&tail[..len_at]) else {
            return Some("its header does not decrypt: the bytes changed".into());
        };
        let listed = parse_header(&header);
        let mut indexed: Vec<(String, u32)> =
            blobs.iter().map(|b| (b.id.clone(), b.length)).collect();
        indexed.sort();
        match listed {
            Some(mut l) => {
                l.sort();
                (l != indexed).then(|| "its header disagrees with the index".into())
            }
            None => Some("its header cannot be parsed".into()),
        }
    }

    /// Fills in each damaged pack's dependent snapshots by walking every snapshot's trees,
    /// each tree once.
    fn find_snapshots(
        &self,
        damaged: &mut [DamagedPack],
        trees: &HashMap<String, TreeLoc>,
    ) -> RepoResult<()> {
        let bad: HashSet<String> = damaged
            .iter()
            .flat_map(|d| d.damaged_blobs.iter().cloned())
            .collect();
        // The damaged blobs each tree reaches; most trees reach none.
        let mut memo: HashMap<String, Vec<String>> = HashMap::new();
        for (key, _) in self.store.list("snapshots").map_err(|e| self.storage(e))? {
            let snap_id = last_segment(&key).to_string();
            let snap: serde_json::Value = serde_json::from_slice(&self.read_file(&key)?)
                .map_err(|e| self.corrupt(&key, e))?;
            let Some(root) = snap.get("tree").and_then(|t| t.as_str()) else {
                tracing::warn!(snapshot = %snap_id, "snapshot has no tree; skipped");
                continue;
            };
            let reached = self.reach(root, &bad, trees, &mut memo)?;
            for d in damaged.iter_mut() {
                if d.damaged_blobs.iter().any(|b| reached.contains(b)) {
                    d.snapshots.push(snap_id.clone());
                }
            }
        }
        for d in damaged {
            d.snapshots.sort();
        }
        Ok(())
    }

    fn reach(
        &self,
        tree_id: &str,
        bad: &HashSet<String>,
        trees: &HashMap<String, TreeLoc>,
        memo: &mut HashMap<String, Vec<String>>,
    ) -> RepoResult<Vec<String>> {
        if let Some(r) = memo.get(tree_id) {
            return Ok(r.clone());
        }
        if bad.contains(tree_id) {
            return Ok(vec![tree_id.to_string()]);
        }
        let mut out = Vec::new();
        match self.load_tree(tree_id, trees)? {
            None => {
                // Missing from the index or unreadable outside the packs read: the
                // structural check reports the first, a full data check the second.
                tracing::warn!(tree = %tree_id, "tree cannot be read; its files are not mapped");
            }
            Some(tree) => {
                for node in tree.nodes {
                    for blob in node.content.iter().flatten() {
                        let h = blob.to_hex().to_string();
                        if bad.contains(&h) && !out.contains(&h) {
                            out.push(h);
                        }
                    }
                    if let Some(sub) = node.subtree {
                        for h in self.reach(sub.to_hex().as_str(), bad, trees, memo)? {
                            if !out.contains(&h) {
                                out.push(h);
                            }
                        }
                    }
                }
            }
        }
        memo.insert(tree_id.to_string(), out.clone());
        Ok(out)
    }

    fn load_tree(&self, id: &str, trees: &HashMap<String, TreeLoc>) -> RepoResult<Option<Tree>> {
        let Some(loc) = trees.get(id) else {
            return Ok(None);
        };
        let raw = self
            .store
            .read_range(
                &pack_key(&loc.pack),
                u64::from(loc.offset),
                u64::from(loc.length),
            )
            .map_err(|e| self.storage(e))?;
        let Some(plain) = self.cipher.open(&raw) else {
            return Ok(None);
        };
        let plain = match loc.uncompressed_length {
            Some(len) => match zstd::bulk::decompress(&plain, len as usize) {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
            None => plain,
        };
        Ok(serde_json::from_slice(&plain).ok())
    }

    /// Takes the damaged packs of `report` out of the repository: their intact blobs are
    /// copied into new packs, the index files are written again without them, and the pack
    /// files are deleted — in that order, so that a crash part-way leaves duplicates at worst,
    /// never an indexed blob without its data. Call with the exclusive lock held.
    pub fn remove_damaged(&self, report: &DataCheckReport) -> RepoResult<RemovalOutcome> {
        let mut out = RemovalOutcome::default();
        if report.damaged.is_empty() {
            return Ok(out);
        }
        for d in &report.damaged {
            let (salvaged, dropped) = self.salvage(d)?;
            out.blobs_salvaged += salvaged;
            out.blobs_dropped += dropped;
        }
        let gone: HashSet<&str> = report.damaged.iter().map(|d| d.id.as_str()).collect();
        for (key, _) in self.store.list("index").map_err(|e| self.storage(e))? {
            let mut index: serde_json::Value = serde_json::from_slice(&self.read_file(&key)?)
                .map_err(|e| self.corrupt(&key, e))?;
            let Some(packs) = index.get_mut("packs").and_then(|p| p.as_array_mut()) else {
                continue;
            };
            let before = packs.len();
            packs.retain(|p| {
                p.get("id")
                    .and_then(|i| i.as_str())
                    .is_none_or(|i| !gone.contains(i))
            });
            if packs.len() == before {
                continue;
            }
            let empty = packs.is_empty()
                && index
                    .get("packs_to_delete")
                    .and_then(|p| p.as_array())
                    .is_none_or(|p| p.is_empty());
            if !empty {
                index["supersedes"] = serde_json::json!([last_segment(&key)]);
                let json = serde_json::to_vec(&index).map_err(|e| self.corrupt(&key, e))?;
                self.write_file("index", &json)?;
            }
            self.store.delete(&key).map_err(|e| self.storage(e))?;
            out.index_files_rewritten += 1;
        }
        for d in &report.damaged {
            self.store
                .delete(&pack_key(&d.id))
                .map_err(|e| self.storage(e))?;
            tracing::warn!(pack = %d.id, "damaged pack removed from the repository");
            out.packs_removed.push(d.id.clone());
        }
        Ok(out)
    }

    /// Copies the blobs of a damaged pack that still read back intact into new packs (one per
    /// blob type, as restic keeps them) with their index. Returns (salvaged, dropped).
    fn salvage(&self, d: &DamagedPack) -> RepoResult<(usize, usize)> {
        let key = pack_key(&d.id);
        let mut dropped = d.damaged_blobs.len();
        let mut salvaged = 0;
        for tpe in ["data", "tree"] {
            let mut kept: Vec<(Bytes, &BlobJson)> = Vec::new();
            for b in d.sound.iter().filter(|b| b.tpe == tpe) {
                let raw =
                    match self
                        .store
                        .read_range(&key, u64::from(b.offset), u64::from(b.length))
                    {
                        Ok(raw) => raw,
                        Err(e) if e.is_not_found() => {
                            dropped += 1;
                            continue;
                        }
                        Err(e) => return Err(self.storage(e)),
                    };
                // Read again: only bytes that verify now are copied.
                if self.blob_problem(b, &raw).is_some() {
                    dropped += 1;
                    continue;
                }
                kept.push((raw, b));
            }
            if kept.is_empty() {
                continue;
            }
            salvaged += kept.len();
            self.write_pack(&kept)?;
        }
        Ok((salvaged, dropped))
    }

    /// One pack of already encrypted blobs (restic's layout: the blobs, the encrypted header
    /// listing them, the header's length), then an index file naming it.
    fn write_pack(&self, blobs: &[(Bytes, &BlobJson)]) -> RepoResult<String> {
        let mut pack = Vec::new();
        let mut header = Vec::new();
        let mut listed = Vec::new();
        for (raw, b) in blobs {
            let offset = pack.len() as u32;
            pack.extend_from_slice(raw);
            let compressed = b.uncompressed_length.is_some();
            header.push(match (b.tpe == "tree", compressed) {
                (false, false) => 0u8,
                (true, false) => 1,
                (false, true) => 2,
                (true, true) => 3,
            });
            header.extend_from_slice(&b.length.to_le_bytes());
            if let Some(u) = b.uncompressed_length {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(&unhex(&b.id).ok_or_else(|| {
                self.corrupt("the index", format!("blob id {} is not hex", b.id))
            })?);
            listed.push(BlobJson {
                offset,
                ..(*b).clone()
            });
        }
        let header = self.cipher.encrypt(&header);
        pack.extend_from_slice(&header);
        pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
        let pack_id = hex(&sha256(&pack));
        self.store
            .write(&pack_key(&pack_id), &[Bytes::from(pack)])
            .map_err(|e| self.storage(e))?;
        let index = IndexJson {
            packs: vec![PackJson {
                id: pack_id.clone(),
                blobs: listed,
            }],
        };
        let json = serde_json::to_vec(&index).expect("an index serialises");
        self.write_file("index", &json)?;
        Ok(pack_id)
    }

    /// Writes an unpacked file (named by the hash of its encrypted bytes, as restic does).
    fn write_file(&self, dir: &str, json: &[u8]) -> RepoResult<()> {
        let file = self.cipher.seal_file(json, self.compress);
        let id = hex(&sha256(&file));
        self.store
            .write(&format!("{dir}/{id}"), &[Bytes::from(file)])
            .map_err(|e| self.storage(e))
    }

    /// Which of `packs` the index lists.
    pub fn indexed(&self, packs: &[String]) -> RepoResult<Vec<String>> {
        let mut found = Vec::new();
        for (key, _) in self.store.list("index").map_err(|e| self.storage(e))? {
            for p in self.read_index(&key)?.packs {
                if packs.contains(&p.id) && !found.contains(&p.id) {
                    found.push(p.id);
                }
            }
        }
        Ok(found)
    }
}

/// The (id, length) of each blob a decrypted pack header lists.
fn parse_header(mut h: &[u8]) -> Option<Vec<(String, u32)>> {
    let mut out = Vec::new();
    while !h.is_empty() {
        let tpe = h[0];
        let fixed = match tpe {
            0 | 1 => 1 + 4 + 32,
            2 | 3 => 1 + 4 + 4 + 32,
            _ => return None,
        };
        if h.len() < fixed {
            return None;
        }
        let length = u32::from_le_bytes(h[1..5].try_into().ok()?);
        out.push((hex(&h[fixed - 32..fixed]), length));
        h = &h[fixed..];
    }
    Some(out)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod subset_tests {
    use std::collections::BTreeMap;

    use super::DataSubset;

    fn ids(n: usize) -> Vec<String> {
        (0..n as u32)
            .map(|i| crate::lock::hex(&crate::sizes::sha256(&i.to_le_bytes())))
            .collect()
    }

    #[test]
    fn a_period_of_days_reads_every_pack_exactly_once() {
        let packs = ids(500);
        for period in [1u32, 2, 7, 30, 31] {
            // Any run of `period` consecutive days, wherever it starts.
            for first_day in [0u64, 19_000, 20_123] {
                let mut reads: BTreeMap<&str, u32> = BTreeMap::new();
                for day in first_day..first_day + u64::from(period) {
                    let s = DataSubset::of_day(day, period);
                    for p in packs.iter().filter(|p| s.contains(p)) {
                        *reads.entry(p).or_default() += 1;
                    }
                }
                assert_eq!(reads.len(), packs.len(), "period {period}: every pack read");
                assert!(
                    reads.values().all(|&n| n == 1),
                    "period {period}: no pack read twice"
                );
            }
        }
    }

    #[test]
    fn slices_are_about_equal() {
        let packs = ids(7000);
        for day in 0..7 {
            let s = DataSubset::of_day(day, 7);
            let n = packs.iter().filter(|p| s.contains(p)).count();
            assert!((800..1200).contains(&n), "slice {s} holds {n} of 7000");
        }
    }

    #[test]
    fn subsets_parse_as_restic_spells_them() {
        let table = [
            ("all", Some("all")),
            ("1/1", Some("all")),
            ("1/7", Some("1/7")),
            ("7/7", Some("7/7")),
            ("0/7", None),
            ("8/7", None),
            ("3", None),
            ("a/b", None),
            ("1/0", None),
        ];
        for (input, want) in table {
            let got = DataSubset::parse(input).ok().map(|s| s.to_string());
            assert_eq!(got.as_deref(), want, "{input}");
        }
        let s = DataSubset::parse("3/7").unwrap();
        assert_eq!(s, DataSubset::of_day(2, 7));
        assert_eq!(s, DataSubset::of_day(9, 7));
    }
}

#[cfg(test)]
mod damage_tests {
    use std::sync::Arc;

    use crate::{DataSubset, LocalStore, ObjectStore, Repo, SnapshotMeta, SourceFile};

    const PASSWORD: &str = "datacheck-test-password";

    /// Incompressible bytes, the same for the same seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn backup(repo: &Repo, data: &[u8]) -> String {
        let meta = SnapshotMeta {
            host: "host-0".into(),
            ..Default::default()
        };
        let file = SourceFile::new("/dumpfile.sql", std::io::Cursor::new(data.to_vec()));
        repo.backup(vec![file], &meta).unwrap().id
    }

    fn dump(repo: &Repo, snap: &str) -> Result<Vec<u8>, crate::RepoError> {
        let mut out = Vec::new();
        repo.dump(snap, "/dumpfile.sql", &mut out).map(|_| out)
    }

    /// The largest pack holds the dump's data blobs (trees are a few hundred bytes).
    fn data_pack(store: &LocalStore) -> (String, u64) {
        let (key, size) = store
            .list("data")
            .unwrap()
            .into_iter()
            .max_by_key(|(_, s)| *s)
            .unwrap();
        (key.rsplit('/').next().unwrap().to_string(), size)
    }

    #[test]
    fn a_damaged_pack_is_named_removed_and_the_next_backup_restores_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (repo, _) = Repo::open_or_init(Arc::new(store.clone()), PASSWORD).unwrap();
        // About four chunks, all in one pack.
        let data = noise(7 << 20, 42);
        let first = backup(&repo, &data);
        let clean = repo.check_data(DataSubset::ALL).unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!(clean.packs_read, clean.packs_total);

        // A few bytes overwritten in the middle of the data pack, as storage rot does.
        let (pack, size) = data_pack(&store);
        let path = dir.path().join("data").join(&pack[..2]).join(&pack);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (size / 2) as usize;
        for b in &mut bytes[at..at + 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            dump(&repo, &first).is_err(),
            "the damage breaks the restore"
        );
        // The structural check does not see it: this is what the data check is for.
        assert_eq!(repo.check(false).unwrap(), Vec::<String>::new());

        let report = repo.check_data(DataSubset::ALL).unwrap();
        assert_eq!(report.damaged.len(), 1, "{report:?}");
        let d = &report.damaged[0];
        assert_eq!(d.id, pack);
        assert_eq!(d.snapshots, vec![first.clone()]);
        assert_eq!(d.damaged_blobs.len(), 1, "one blob holds the changed bytes");
        assert!(d.blobs > 1);
        assert!(report.summary().contains(&pack), "{}", report.summary());

        let _lock = repo.lock(true).unwrap();
        let removed = repo.remove_damaged(&report).unwrap();
        assert_eq!(removed.packs_removed, vec![pack.clone()]);
        assert_eq!(removed.blobs_dropped, 1);
        assert_eq!(removed.blobs_salvaged, d.blobs - 1);
        assert!(!path.exists());
        assert_eq!(
            repo.indexed_packs(std::slice::from_ref(&pack)).unwrap(),
            Vec::<String>::new()
        );
        // Now the structural check knows the snapshot misses a blob.
        assert!(!repo.check(false).unwrap().is_empty());
        drop(_lock);

        // The next backup of the same data writes the damaged blob again.
        let second = backup(&repo, &data);
        assert_eq!(
            dump(&repo, &second).unwrap(),
            data,
            "the new snapshot restores bit-exact"
        );
        assert_eq!(
            dump(&repo, &first).unwrap(),
            data,
            "and the old one is whole again"
        );
        assert_eq!(repo.check(false).unwrap(), Vec::<String>::new());
        assert!(repo.check_data(DataSubset::ALL).unwrap().is_clean());
        // restic agrees the repository is sound.
        let out = std::process::Command::new("restic")
            .arg("-r")
            .arg(dir.path())
            .args(["--no-cache", "check", "--read-data"])
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .expect("restic is installed (scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "restic check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_subset_reads_only_its_packs_and_finds_damage_in_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (repo, _) = Repo::open_or_init(Arc::new(store.clone()), PASSWORD).unwrap();
        let snap = backup(&repo, &noise(3 << 20, 7));
        let (pack, size) = data_pack(&store);
        let path = dir.path().join("data").join(&pack[..2]).join(&pack);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(size / 3) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut found = 0;
        let mut read = 0;
        for n in 1..=3 {
            let s = DataSubset::parse(&format!("{n}/3")).unwrap();
            let r = repo.check_data(s).unwrap();
            read += r.packs_read;
            if s.contains(&pack) {
                assert_eq!(r.damaged.len(), 1);
                assert_eq!(r.damaged[0].snapshots, vec![snap.clone()]);
                found += 1;
            } else {
                assert!(r.is_clean());
            }
            assert_eq!(r.packs_total, store.list("data").unwrap().len());
        }
        assert_eq!(found, 1);
        assert_eq!(
            read,
            store.list("data").unwrap().len(),
            "each pack read once"
        );
    }
}
