//! File sizes for streamed snapshots.
//!
//! rustic's archiver takes a file node's size from the source before reading it and never
//! updates it; a stream has no size up front, so every streamed file would be recorded as
//! zero bytes long. `restic dump` does not care, but `restic restore` then writes an empty
//! file and `restic stats` reports nothing — silent loss for anyone who restores with restic
//! itself. rustic's `repair snapshots` computes the right size but does not save a tree whose
//! only change is a size.
//!
//! So the snapshot file rustic writes at the end of a backup is held back, and this module
//! writes the trees again with the byte counts the sources delivered: one small pack with
//! the new tree blobs, its index, and the snapshot pointing at the new root — in that order,
//! so that a crash part-way leaves unreferenced blobs at worst, never a snapshot without its
//! tree. The trees rustic wrote first are left for the next prune.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use rustic_core::{
    repofile::{SnapshotFile, Tree},
    Id, RusticResult, TreeId,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{cipher::RepoCipher, lock::hex, store::ObjectStore};

/// What went wrong while recording sizes; the caller adds the repository's location.
#[derive(Debug, thiserror::Error)]
pub enum SizesError {
    #[error("reading {what}: {message}")]
    Read { what: String, message: String },
    #[error("writing {what}: {message}")]
    Write { what: String, message: String },
}

/// restic's index file, as far as trees need it.
#[derive(Serialize, Deserialize)]
pub(crate) struct IndexJson {
    pub packs: Vec<PackJson>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PackJson {
    pub id: String,
    pub blobs: Vec<BlobJson>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BlobJson {
    pub id: String,
    #[serde(rename = "type")]
    pub tpe: String,
    pub offset: u32,
    pub length: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_length: Option<u32>,
}

struct Location {
    pack: String,
    offset: u32,
    length: u32,
    compressed: bool,
}

pub(crate) struct SizeWriter<'a> {
    pub store: &'a Arc<dyn ObjectStore>,
    pub cipher: RepoCipher,
    /// Repository format v2 compresses blobs and unpacked files; v1 must not.
    pub compress: bool,
    /// Bytes each streamed file delivered, by its path in the snapshot (no leading `/`).
    pub sizes: HashMap<String, u64>,
    /// Trees that predate this backup, found through rustic's index.
    pub old_tree: &'a dyn Fn(TreeId) -> RusticResult<Tree>,
}

impl SizeWriter<'_> {
    /// Writes `snap` with its files' sizes and returns it with its new id. `held` is the
    /// snapshot file rustic wanted to write, used as is when every size was already right;
    /// `new_indexes` are the index files this backup wrote, where its trees are found.
    pub fn commit(
        &self,
        mut snap: SnapshotFile,
        held: Bytes,
        new_indexes: &[Id],
    ) -> Result<SnapshotFile, SizesError> {
        let mut trees = HashMap::new();
        for id in new_indexes {
            let key = format!("index/{}", id.to_hex().as_str());
            let raw = self.read(&key)?;
            let plain = self
                .cipher
                .open_file(&raw)
                .ok_or_else(|| SizesError::Read {
                    what: key.clone(),
                    message: "it does not decrypt with the repository key".into(),
                })?;
            let index: IndexJson =
                serde_json::from_slice(&plain).map_err(|e| SizesError::Read {
                    what: key.clone(),
                    message: e.to_string(),
                })?;
            for pack in index.packs {
                for b in pack.blobs.into_iter().filter(|b| b.tpe == "tree") {
                    trees.insert(
                        b.id,
                        Location {
                            pack: pack.id.clone(),
                            offset: b.offset,
                            length: b.length,
                            compressed: b.uncompressed_length.is_some(),
                        },
                    );
                }
            }
        }
        let mut out = Vec::new();
        let mut found = 0;
        let fixed = self.fix(snap.tree, "", &trees, &mut out, &mut found)?;
        if found != self.sizes.len() {
            return Err(SizesError::Write {
                what: "the snapshot's trees".into(),
                message: format!(
                    "{found} of the {} files streamed were found in them",
                    self.sizes.len()
                ),
            });
        }
        let Some(root) = fixed else {
            self.write(&format!("snapshots/{}", snap.id.to_hex().as_str()), held)?;
            return Ok(snap);
        };
        self.write_trees(&out)?;
        snap.tree = root;
        let json = serde_json::to_vec(&snap).map_err(|e| SizesError::Write {
            what: "the snapshot".into(),
            message: e.to_string(),
        })?;
        let file = self.cipher.seal_file(&json, self.compress);
        let id = sha256(&file);
        self.write(&format!("snapshots/{}", hex(&id)), file.into())?;
        snap.id = Id::new(id).into();
        Ok(snap)
    }

    /// The tree `id` (at `prefix`) with every file's size set; `None` when nothing in it
    /// changed. New tree blobs are appended to `out` children first.
    fn fix(
        &self,
        id: TreeId,
        prefix: &str,
        new_trees: &HashMap<String, Location>,
        out: &mut Vec<(Vec<u8>, [u8; 32])>,
        found: &mut usize,
    ) -> Result<Option<TreeId>, SizesError> {
        let mut tree = self.load_tree(id, new_trees)?;
        let mut changed = false;
        for node in &mut tree.nodes {
            let path = format!("{prefix}{}", node.name().to_string_lossy());
            if node.is_file() {
                if let Some(&size) = self.sizes.get(&path) {
                    *found += 1;
                    changed |= node.meta.size != size;
                    node.meta.size = size;
                }
            } else if let Some(sub) = node.subtree.filter(|_| node.is_dir()) {
                if let Some(new) = self.fix(sub, &format!("{path}/"), new_trees, out, found)? {
                    node.subtree = Some(new);
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        // The same bytes rustic and restic write for a tree: JSON and a newline.
        let mut json = serde_json::to_vec(&tree).map_err(|e| SizesError::Write {
            what: format!("the tree of /{prefix}"),
            message: e.to_string(),
        })?;
        json.push(b'\n');
        let blob_id = sha256(&json);
        out.push((json, blob_id));
        Ok(Some(Id::new(blob_id).into()))
    }

    fn load_tree(
        &self,
        id: TreeId,
        new_trees: &HashMap<String, Location>,
    ) -> Result<Tree, SizesError> {
        let hex_id = id.to_hex().to_string();
        let Some(loc) = new_trees.get(&hex_id) else {
            return (self.old_tree)(id).map_err(|e| SizesError::Read {
                what: format!("tree {hex_id}"),
                message: e.to_string(),
            });
        };
        let key = format!("data/{}/{}", &loc.pack[..2], loc.pack);
        let raw = self
            .store
            .read_range(&key, u64::from(loc.offset), u64::from(loc.length))
            .map_err(|e| SizesError::Read {
                what: key.clone(),
                message: e.to_string(),
            })?;
        let bad = |message: String| SizesError::Read {
            what: format!("tree {hex_id} in {key}"),
            message,
        };
        let plain = self
            .cipher
            .open(&raw)
            .ok_or_else(|| bad("it does not decrypt with the repository key".into()))?;
        let plain = if loc.compressed {
            zstd::decode_all(plain.as_slice()).map_err(|e| bad(e.to_string()))?
        } else {
            plain
        };
        serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))
    }

    /// One pack holding `blobs` (restic's layout: the encrypted blobs, then the encrypted
    /// header listing them, then the header's length), then the index file naming it.
    fn write_trees(&self, blobs: &[(Vec<u8>, [u8; 32])]) -> Result<(), SizesError> {
        let mut pack = Vec::new();
        let mut header = Vec::new();
        let mut listed = Vec::new();
        for (plain, id) in blobs {
            let offset = pack.len() as u32;
            let (sealed, uncompressed_length) = if self.compress {
                let z = zstd::bulk::compress(plain, 0).expect("zstd into memory cannot fail");
                (self.cipher.encrypt(&z), Some(plain.len() as u32))
            } else {
                (self.cipher.encrypt(plain), None)
            };
            let length = sealed.len() as u32;
            pack.extend_from_slice(&sealed);
            match uncompressed_length {
                Some(u) => {
                    header.push(3u8); // compressed tree
                    header.extend_from_slice(&length.to_le_bytes());
                    header.extend_from_slice(&u.to_le_bytes());
                }
                None => {
                    header.push(1u8); // tree
                    header.extend_from_slice(&length.to_le_bytes());
                }
            }
            header.extend_from_slice(id);
            listed.push(BlobJson {
                id: hex(id),
                tpe: "tree".into(),
                offset,
                length,
                uncompressed_length,
            });
        }
        let header = self.cipher.encrypt(&header);
        pack.extend_from_slice(&header);
        pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
        let pack_id = hex(&sha256(&pack));
        self.write(&format!("data/{}/{pack_id}", &pack_id[..2]), pack.into())?;

        let index = IndexJson {
            packs: vec![PackJson {
                id: pack_id,
                blobs: listed,
            }],
        };
        let json = serde_json::to_vec(&index).expect("index serialises");
        let file = self.cipher.seal_file(&json, self.compress);
        let index_id = hex(&sha256(&file));
        self.write(&format!("index/{index_id}"), file.into())
    }

    fn read(&self, key: &str) -> Result<Bytes, SizesError> {
        self.store.read(key).map_err(|e| SizesError::Read {
            what: key.to_string(),
            message: e.to_string(),
        })
    }

    fn write(&self, key: &str, body: Bytes) -> Result<(), SizesError> {
        self.store
            .write(key, &[body])
            .map_err(|e| SizesError::Write {
                what: key.to_string(),
                message: e.to_string(),
            })
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command, sync::Arc};

    use crate::{LocalStore, Repo, SnapshotMeta, SourceFile};

    const PASSWORD: &str = "sizes-test-password";

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

    /// Streams three files of known content (one nested, one empty) into `repo` and checks
    /// that restic sees their sizes and restores them whole.
    fn backup_and_restore_with_restic(repo: &Path) {
        let r = Repo::open(Arc::new(LocalStore::new(repo)), PASSWORD).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let files = vec![
            SourceFile::new(
                "/dumpfile.sql",
                std::io::Cursor::new(b"SELECT 1;\n".to_vec()),
            ),
            SourceFile::new("/dir/sub/big.bin", std::io::Cursor::new(big.clone())),
            SourceFile::new("/dir/empty", std::io::empty()),
        ];
        let meta = SnapshotMeta {
            host: "host-0".into(),
            tags: vec!["a,b".into()],
            paths: vec![],
        };
        let info = r.backup(files, &meta).unwrap();

        let ls = restic(repo, &["ls", "--json", "latest"]);
        assert!(ls.status.success(), "{ls:?}");
        let sizes: Vec<(String, u64)> =
            coffer_testkit::restic::ls_file_sizes(&String::from_utf8(ls.stdout).unwrap())
                .into_iter()
                .collect();
        assert_eq!(
            sizes,
            vec![
                ("/dir/empty".to_string(), 0),
                ("/dir/sub/big.bin".to_string(), big.len() as u64),
                ("/dumpfile.sql".to_string(), 10),
            ]
        );

        let snaps = restic(repo, &["snapshots", "--json"]);
        let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
        assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
        assert_eq!(
            snaps[0]["id"], info.id,
            "the id coffer reports is the one written"
        );
        assert_eq!(snaps[0]["tags"], serde_json::json!(["a,b"]));
        assert_eq!(snaps[0]["hostname"], "host-0");

        let target = tempfile::tempdir().unwrap();
        let out = restic(
            repo,
            &[
                "restore",
                "latest",
                "--target",
                target.path().to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(target.path().join("dir/sub/big.bin")).unwrap(),
            big
        );
        assert_eq!(
            std::fs::read(target.path().join("dumpfile.sql")).unwrap(),
            b"SELECT 1;\n"
        );
        let check = restic(repo, &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
    }

    #[test]
    fn a_stream_keeps_known_sizes_and_fails_out_of_order_or_short() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = Repo::open_or_init(Arc::new(LocalStore::new(dir.path())), PASSWORD).unwrap();
        let meta = SnapshotMeta {
            host: "host-0".into(),
            tags: vec![],
            paths: vec!["/coffer".into()],
        };
        let piece: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let good = vec![
            SourceFile::in_memory("/coffer/0-schema.json", b"{}".to_vec()),
            SourceFile::in_memory("/coffer/1-000000/00000000.tsv", piece.clone()),
            SourceFile::new(
                "/coffer/9-manifest.json",
                std::io::Cursor::new(b"[]".to_vec()),
            ),
        ];
        r.backup_stream(Box::new(good.into_iter()), &meta).unwrap();
        let ls = restic(dir.path(), &["ls", "--json", "latest"]);
        let sizes = coffer_testkit::restic::ls_file_sizes(&String::from_utf8(ls.stdout).unwrap());
        let size_of = |path: &str| sizes.get(path).copied();
        assert_eq!(size_of("/coffer/1-000000/00000000.tsv"), Some(700_000));
        assert_eq!(size_of("/coffer/9-manifest.json"), Some(2));

        let out_of_order = vec![
            SourceFile::in_memory("/coffer/1-000001/00000000.tsv", b"b".to_vec()),
            SourceFile::in_memory("/coffer/1-000000/00000000.tsv", b"a".to_vec()),
        ];
        let e = r
            .backup_stream(Box::new(out_of_order.into_iter()), &meta)
            .unwrap_err()
            .to_string();
        assert!(e.contains("files must come in path order"), "{e}");

        let mut short = SourceFile::in_memory("/coffer/1-000000/00000000.tsv", b"abc".to_vec());
        short.size = Some(10);
        let e = r
            .backup_stream(Box::new(vec![short].into_iter()), &meta)
            .unwrap_err()
            .to_string();
        assert!(e.contains("delivered 3 bytes, not its 10"), "{e}");

        let snaps = restic(dir.path(), &["snapshots", "--json"]);
        let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
        assert_eq!(
            snaps.as_array().unwrap().len(),
            1,
            "only the good stream made one"
        );
        let check = restic(dir.path(), &["check", "--read-data"]);
        assert!(check.status.success(), "{check:?}");
    }

    #[test]
    fn streamed_files_keep_their_sizes_in_a_v2_repository() {
        let dir = tempfile::tempdir().unwrap();
        Repo::open_or_init(Arc::new(LocalStore::new(dir.path())), PASSWORD).unwrap();
        backup_and_restore_with_restic(dir.path());
    }

    #[test]
    fn streamed_files_keep_their_sizes_in_a_v1_repository() {
        let dir = tempfile::tempdir().unwrap();
        let init = restic(dir.path(), &["init", "--repository-version", "1"]);
        assert!(init.status.success(), "{init:?}");
        backup_and_restore_with_restic(dir.path());
    }
}
