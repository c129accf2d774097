//! Snapshots written without rustic's archiver, for many small snapshots of data that never
//! repeats (binlog segments): a put writes one data pack, one tree pack, one index file and
//! the snapshot file, in that order, and reads nothing. rustic's archiver reads every index
//! file of the repository first (to skip blobs it has), which grows with every put.
//!
//! Also builds a snapshot from files of existing snapshots (their blobs reused, only trees
//! written), consolidating the index files those snapshots brought into one, so that both the
//! snapshot count and the index file count stay small after months of puts.
//!
//! Order is the durability argument everywhere: packs, then the index naming them, then the
//! snapshot naming the trees. A crash leaves unreferenced packs or a duplicate index entry
//! at worst (prune removes both), never a snapshot whose data is not indexed.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::OsStr,
    sync::Arc,
};

use bytes::Bytes;
use rustic_core::{
    repofile::{Metadata, Node, NodeType, SnapshotFile, SnapshotSummary, Tree},
    Id, SnapshotOptions,
};
use sha2::{Digest, Sha256};

use crate::{
    cipher::RepoCipher,
    lock::hex,
    repository::{CountingWriter, Repo, RepoError, RepoResult, SnapshotInfo, SnapshotMeta},
    sizes::{BlobJson, IndexJson, PackJson},
    store::ObjectStore,
};

/// Data blobs are cut at this size (restic's average chunk size): no content-defined
/// chunking, as the data never repeats.
pub const BLOB_BYTES: usize = 1 << 20;
/// A pack is closed once its blobs reach this size (restic's default pack size).
const PACK_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("reading {what}: {message}")]
    Read { what: String, message: String },
    #[error("writing {what}: {message}")]
    Write { what: String, message: String },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Tree,
}

pub(crate) struct Direct<'a> {
    pub store: &'a Arc<dyn ObjectStore>,
    pub cipher: RepoCipher,
    /// Repository format v2 compresses blobs and unpacked files; v1 must not.
    pub compress: bool,
}

/// A directory being assembled: files by name (nodes whose content already exists or is
/// being written), sub-directories by name.
#[derive(Default)]
pub(crate) struct Dir {
    files: BTreeMap<String, Node>,
    dirs: BTreeMap<String, Dir>,
}

impl Dir {
    /// Places `node` at `path` (absolute or relative, `/`-separated); a later node at the
    /// same path replaces an earlier one.
    pub fn insert(&mut self, path: &str, node: Node) {
        let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some(name) = parts.pop() else { return };
        let mut dir = self;
        for p in parts {
            dir = dir.dirs.entry(p.to_string()).or_default();
        }
        dir.files.insert(name.to_string(), node);
    }
}

impl Direct<'_> {
    /// A file node for `data`, its blobs appended to `blobs`.
    pub fn file_node(name: &str, data: &[u8], blobs: &mut Vec<(Vec<u8>, [u8; 32])>) -> Node {
        let mut content = Vec::new();
        for chunk in data.chunks(BLOB_BYTES) {
            let id = sha256(chunk);
            blobs.push((chunk.to_vec(), id));
            content.push(Id::new(id).into());
        }
        let meta = Metadata {
            mode: Some(0o644),
            mtime: Some(rustic_core::jiff::Timestamp::now()),
            size: data.len() as u64,
            ..Default::default()
        };
        let mut node = Node::new_node(OsStr::new(name), NodeType::File, meta);
        node.content = Some(content);
        node
    }

    /// The trees of `root`, children first; returns the root tree's id.
    pub fn trees(dir: Dir, out: &mut Vec<(Vec<u8>, [u8; 32])>) -> Result<Id, DirectError> {
        let mut nodes: Vec<Node> = dir.files.into_values().collect();
        for (name, sub) in dir.dirs {
            let id = Self::trees(sub, out)?;
            let meta = Metadata {
                mode: Some(0o755),
                mtime: Some(rustic_core::jiff::Timestamp::now()),
                ..Default::default()
            };
            let mut node = Node::new_node(OsStr::new(&name), NodeType::Dir, meta);
            node.subtree = Some(id.into());
            nodes.push(node);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = Tree { nodes };
        // The same bytes rustic and restic write for a tree: JSON and a newline.
        let mut json = serde_json::to_vec(&tree).map_err(|e| DirectError::Write {
            what: "a tree".into(),
            message: e.to_string(),
        })?;
        json.push(b'\n');
        let id = sha256(&json);
        out.push((json, id));
        Ok(Id::new(id))
    }

    /// Writes `blobs` of one kind into packs of at most [`PACK_BYTES`]; returns what the
    /// index must say about them.
    fn write_packs(
        &self,
        kind: Kind,
        blobs: &[(Vec<u8>, [u8; 32])],
    ) -> Result<Vec<PackJson>, DirectError> {
        let mut packs = Vec::new();
        let mut seen = HashSet::new();
        let mut pack = Vec::new();
        let mut header = Vec::new();
        let mut listed = Vec::new();
        for (plain, id) in blobs {
            // One pack lists a blob once (a file may repeat a chunk).
            if !seen.insert(*id) {
                continue;
            }
            let offset = pack.len() as u32;
            let (sealed, uncompressed_length) = if self.compress {
                let z = zstd::bulk::compress(plain, 1).map_err(|e| DirectError::Write {
                    what: "a blob".into(),
                    message: e.to_string(),
                })?;
                (self.cipher.encrypt(&z), Some(plain.len() as u32))
            } else {
                (self.cipher.encrypt(plain), None)
            };
            let length = sealed.len() as u32;
            pack.extend_from_slice(&sealed);
            // restic's pack header entry: type, length[, uncompressed length], id.
            let tpe: u8 = match (kind, uncompressed_length.is_some()) {
                (Kind::Data, false) => 0,
                (Kind::Tree, false) => 1,
                (Kind::Data, true) => 2,
                (Kind::Tree, true) => 3,
            };
            header.push(tpe);
            header.extend_from_slice(&length.to_le_bytes());
            if let Some(u) = uncompressed_length {
                header.extend_from_slice(&u.to_le_bytes());
            }
            header.extend_from_slice(id);
            listed.push(BlobJson {
                id: hex(id),
                tpe: if kind == Kind::Data { "data" } else { "tree" }.into(),
                offset,
                length,
                uncompressed_length,
            });
            if pack.len() >= PACK_BYTES {
                packs.push(self.finish_pack(&mut pack, &mut header, &mut listed)?);
            }
        }
        if !listed.is_empty() {
            packs.push(self.finish_pack(&mut pack, &mut header, &mut listed)?);
        }
        Ok(packs)
    }

    fn finish_pack(
        &self,
        pack: &mut Vec<u8>,
        header: &mut Vec<u8>,
        listed: &mut Vec<BlobJson>,
    ) -> Result<PackJson, DirectError> {
        let sealed = self.cipher.encrypt(header);
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let id = hex(&sha256(pack));
        self.write(
            &format!("data/{}/{id}", &id[..2]),
            std::mem::take(pack).into(),
        )?;
        header.clear();
        Ok(PackJson {
            id,
            blobs: std::mem::take(listed),
        })
    }

    /// Writes one index file listing `packs`; returns its id.
    fn write_index(&self, packs: Vec<PackJson>) -> Result<String, DirectError> {
        let json = serde_json::to_vec(&IndexJson { packs }).expect("an index serialises");
        let file = self.cipher.seal_file(&json, self.compress);
        let id = hex(&sha256(&file));
        self.write(&format!("index/{id}"), file.into())?;
        Ok(id)
    }

    /// The packs an index file lists; `None` when it is gone (a prune rewrote it).
    pub fn read_index(&self, id: &str) -> Result<Option<Vec<PackJson>>, DirectError> {
        let key = format!("index/{id}");
        let raw = match self.store.read(&key) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                return Err(DirectError::Read {
                    what: key,
                    message: e.to_string(),
                })
            }
        };
        let plain = self
            .cipher
            .open_file(&raw)
            .ok_or_else(|| DirectError::Read {
                what: key.clone(),
                message: "it does not decrypt with the repository key".into(),
            })?;
        let index: IndexJson = serde_json::from_slice(&plain).map_err(|e| DirectError::Read {
            what: key,
            message: e.to_string(),
        })?;
        Ok(Some(index.packs))
    }

    /// Writes the data and tree blobs, one index file naming their packs and the packs of
    /// `carried` (index files being consolidated), then the snapshot. Returns the snapshot
    /// and the index file's id.
    pub fn commit(
        &self,
        data: &[(Vec<u8>, [u8; 32])],
        root: Dir,
        carried: Vec<PackJson>,
        snap: SnapshotSpec,
        describe: &dyn Fn(&str) -> String,
    ) -> Result<(SnapshotFile, String), DirectError> {
        let mut trees = Vec::new();
        let root_id = Self::trees(root, &mut trees)?;
        let mut packs = self.write_packs(Kind::Data, data)?;
        let data_added: u64 = data.iter().map(|(p, _)| p.len() as u64).sum();
        let data_packed: u64 = packs
            .iter()
            .flat_map(|p| &p.blobs)
            .map(|b| u64::from(b.length))
            .sum();
        packs.extend(self.write_packs(Kind::Tree, &trees)?);
        packs.extend(carried);
        let index = self.write_index(packs)?;

        let opts = SnapshotOptions::default().host(snap.host);
        let mut file = SnapshotFile::from_options(&opts).map_err(|e| DirectError::Write {
            what: "the snapshot".into(),
            message: e.to_string(),
        })?;
        file.tree = root_id.into();
        for p in snap.paths {
            file.paths.add(p);
        }
        for t in snap.tags {
            file.tags.add(t);
        }
        file.description = Some(describe(&index));
        let mut summary = SnapshotSummary::default();
        summary.total_files_processed = snap.files;
        summary.total_bytes_processed = snap.bytes;
        summary.files_new = snap.files;
        summary.data_added = data_added;
        summary.data_added_packed = data_packed;
        summary.data_added_files = data_added;
        summary.data_added_files_packed = data_packed;
        summary.data_blobs = data.len() as u64;
        summary.tree_blobs = trees.len() as u64;
        summary.command = "coffer".into();
        file.summary = Some(summary);
        file.id = Id::default().into();
        let json = serde_json::to_vec(&file).map_err(|e| DirectError::Write {
            what: "the snapshot".into(),
            message: e.to_string(),
        })?;
        let sealed = self.cipher.seal_file(&json, self.compress);
        let id = sha256(&sealed);
        self.write(&format!("snapshots/{}", hex(&id)), sealed.into())?;
        file.id = Id::new(id).into();
        Ok((file, index))
    }

    fn write(&self, key: &str, body: Bytes) -> Result<(), DirectError> {
        self.store
            .write(key, &[body])
            .map_err(|e| DirectError::Write {
                what: key.to_string(),
                message: e.to_string(),
            })
    }
}

/// The snapshot file's fields that the caller chooses.
pub(crate) struct SnapshotSpec {
    pub host: String,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    /// Files and bytes the snapshot holds, for its summary.
    pub files: u64,
    pub bytes: u64,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Files of an existing snapshot to carry into a new one: the files `names` of directory
/// `dir` of snapshot `snapshot` (a full id). Their blobs are reused as they are.
#[derive(Debug, Clone)]
pub struct Pick {
    pub snapshot: String,
    pub dir: String,
    pub names: Vec<String>,
}

/// What [`Repo::put_files`] and [`Repo::compose`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub snapshot: SnapshotInfo,
    /// The one index file naming the new packs (and the consolidated ones' packs).
    pub index: String,
    /// Consolidated index files that existed (and are now in `index`): safe to delete once
    /// nothing needs the old snapshots.
    pub consolidated: Vec<String>,
}

/// A repository opened with its whole index, for reading many files of many snapshots.
pub struct IndexedRepo {
    repo: rustic_core::Repository<rustic_core::IndexedFullStatus>,
    store: Arc<dyn ObjectStore>,
}

impl IndexedRepo {
    /// Streams file `path` of snapshot `snapshot_id` (a full id) into `w`.
    pub fn dump(
        &self,
        snapshot_id: &str,
        path: &str,
        w: &mut dyn std::io::Write,
    ) -> RepoResult<u64> {
        let no_file = || RepoError::NoSuchFile {
            location: self.store.location(),
            snapshot: snapshot_id.chars().take(8).collect(),
            path: path.to_string(),
        };
        let snap = self
            .repo
            .get_snapshots(&[snapshot_id])
            .map_err(|_| no_file())?
            .pop()
            .ok_or_else(no_file)?;
        let node = self
            .repo
            .node_from_snapshot_and_path(&snap, path.trim_start_matches('/'))
            .map_err(|_| no_file())?;
        let mut counting = CountingWriter { inner: w, n: 0 };
        self.repo
            .dump(&node, &mut counting)
            .map_err(|e| RepoError::Operation {
                location: self.store.location(),
                message: format!("reading {path} of snapshot {snapshot_id}: {e}"),
            })?;
        std::io::Write::flush(&mut counting).map_err(|e| RepoError::Source(e.to_string()))?;
        Ok(counting.n)
    }
}

impl Repo {
    fn direct(&self) -> Direct<'_> {
        Direct {
            store: &self.store,
            cipher: RepoCipher::new(&self.key),
            compress: self.compress,
        }
    }

    fn direct_err(&self, e: DirectError) -> RepoError {
        RepoError::Operation {
            location: self.store.location(),
            message: e.to_string(),
        }
    }

    /// Writes a snapshot of files held in memory without reading the repository: their data
    /// pack, a tree pack, one index file, then the snapshot (durable when this returns).
    /// `describe` makes the snapshot's description from the index file's id. Data is never
    /// deduplicated against the repository: meant for data that does not repeat.
    pub fn put_files(
        &self,
        files: Vec<(String, Vec<u8>)>,
        meta: &SnapshotMeta,
        describe: &dyn Fn(&str) -> String,
    ) -> RepoResult<Written> {
        let mut blobs = Vec::new();
        let mut root = Dir::default();
        let bytes = files.iter().map(|(_, d)| d.len() as u64).sum();
        let count = files.len() as u64;
        for (path, data) in &files {
            let name = path.rsplit('/').next().unwrap_or(path);
            root.insert(path, Direct::file_node(name, data, &mut blobs));
        }
        drop(files);
        let spec = SnapshotSpec {
            host: meta.host.clone(),
            tags: meta.tags.clone(),
            paths: meta.paths.clone(),
            files: count,
            bytes,
        };
        let (snap, index) = self
            .direct()
            .commit(&blobs, root, Vec::new(), spec, describe)
            .map_err(|e| self.direct_err(e))?;
        Ok(Written {
            snapshot: SnapshotInfo::from_file(&snap),
            index,
            consolidated: Vec::new(),
        })
    }

    /// Writes a snapshot made of files of existing snapshots (`picks`, placed at the same
    /// paths; a later pick of the same path wins), writing only its trees. The index files
    /// `consolidate` are read and their packs listed again in the new snapshot's one index
    /// file, so that the caller can delete them afterwards. Every picked file must exist.
    pub fn compose(
        &self,
        picks: &[Pick],
        consolidate: &[String],
        meta: &SnapshotMeta,
        describe: &dyn Fn(&str) -> String,
    ) -> RepoResult<Written> {
        let repo = self.opened()?.to_indexed_ids().map_err(|e| self.err(e))?;
        let mut root = Dir::default();
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut snaps: BTreeMap<String, SnapshotFile> = BTreeMap::new();
        for pick in picks {
            if !snaps.contains_key(&pick.snapshot) {
                let s = repo
                    .get_snapshots(&[pick.snapshot.as_str()])
                    .map_err(|e| self.err(e))?
                    .pop()
                    .ok_or_else(|| RepoError::NoSnapshot {
                        location: self.store.location(),
                        what: pick.snapshot.clone(),
                    })?;
                snaps.insert(pick.snapshot.clone(), s);
            }
            let snap = &snaps[&pick.snapshot];
            let missing = |name: &str| RepoError::NoSuchFile {
                location: self.store.location(),
                snapshot: pick.snapshot.chars().take(8).collect(),
                path: format!("{}/{name}", pick.dir.trim_end_matches('/')),
            };
            let dir = repo
                .node_from_snapshot_and_path(snap, pick.dir.trim_matches('/'))
                .map_err(|_| missing(""))?;
            let Some(sub) = dir.subtree.filter(|_| dir.is_dir()) else {
                return Err(missing(""));
            };
            let tree = repo.get_tree(&sub).map_err(|e| self.err(e))?;
            let mut by_name: BTreeMap<String, Node> = tree
                .nodes
                .into_iter()
                .filter(|n| n.is_file())
                .map(|n| (n.name().to_string_lossy().into_owned(), n))
                .collect();
            for name in &pick.names {
                let node = by_name.remove(name).ok_or_else(|| missing(name))?;
                files += 1;
                bytes += node.meta.size;
                root.insert(&format!("{}/{name}", pick.dir.trim_end_matches('/')), node);
            }
        }
        let direct = self.direct();
        let mut carried = Vec::new();
        let mut consolidated = Vec::new();
        for id in consolidate {
            if let Some(packs) = direct.read_index(id).map_err(|e| self.direct_err(e))? {
                carried.extend(packs);
                consolidated.push(id.clone());
            }
        }
        let spec = SnapshotSpec {
            host: meta.host.clone(),
            tags: meta.tags.clone(),
            paths: meta.paths.clone(),
            files,
            bytes,
        };
        let (snap, index) = direct
            .commit(&[], root, carried, spec, describe)
            .map_err(|e| self.direct_err(e))?;
        Ok(Written {
            snapshot: SnapshotInfo::from_file(&snap),
            index,
            consolidated,
        })
    }

    /// The repository with its whole index loaded, for many reads.
    pub fn indexed(&self) -> RepoResult<IndexedRepo> {
        let repo = self.opened()?.to_indexed().map_err(|e| self.err(e))?;
        Ok(IndexedRepo {
            repo,
            store: self.store.clone(),
        })
    }

    /// Removes snapshot files by full id (a missing one is no error).
    pub fn delete_snapshot_files(&self, ids: &[String]) -> RepoResult<()> {
        for id in ids {
            self.delete_missing_ok(&format!("snapshots/{id}"))?;
        }
        Ok(())
    }

    /// Removes index files by id (a missing one is no error). Only for index files whose
    /// packs another index file lists (see [`compose`](Self::compose)).
    pub fn delete_index_files(&self, ids: &[String]) -> RepoResult<()> {
        for id in ids {
            self.delete_missing_ok(&format!("index/{id}"))?;
        }
        Ok(())
    }

    fn delete_missing_ok(&self, key: &str) -> RepoResult<()> {
        match self.store.delete(key) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
