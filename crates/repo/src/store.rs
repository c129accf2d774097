//! Object stores that hold a restic repository: the trait, and a local directory.
//! Remote stores live in `cloud` (through opendal) and `rest` (restic's REST protocol).
//!
//! coffer talks to storage through this one small trait rather than through rustic_backend so that
//! it can reach every file of the restic layout (rustic_core has no notion of `locks/`), build only
//! the S3 service it needs, and turn storage failures into messages a person can act on.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;

/// A failure of the storage under a repository.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location}: `{key}` does not exist")]
    NotFound { location: String, key: String },
    #[error("{location}: {message}")]
    Io { location: String, message: String },
    /// A failure of a remote object store (S3, Azure Blob, GCS, B2, Swift, a REST server).
    #[error("{location}: {message}")]
    Remote { location: String, message: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Flat key-value access to the files of one repository. Keys are relative paths such as
/// `config`, `keys/<id>` or `data/ab/<id>`.
pub trait ObjectStore: Send + Sync + 'static {
    /// Where the repository lives, for messages (never contains credentials).
    fn location(&self) -> String;
    /// Files below `dir` (recursively), as (key relative to the repository, size).
    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>>;
    fn read(&self, key: &str) -> StoreResult<Bytes>;
    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes>;
    /// Writes a whole file; readers never see a partial file.
    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()>;
    /// Writes a whole file only if no file has that key; returns whether it wrote. Two
    /// processes initialising one repository race on its `config`: exactly one must win.
    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool>;
    /// Removes a file; removing a missing file is not an error.
    fn delete(&self, key: &str) -> StoreResult<()>;
    fn exists(&self, key: &str) -> StoreResult<bool>;
    /// Prepares an empty repository location (directories, reachability).
    fn create(&self) -> StoreResult<()>;
}

// ---------------------------------------------------------------------------------------------
// Local directory
// ---------------------------------------------------------------------------------------------

/// A repository in a local directory, laid out exactly as restic's local backend does.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io(&self, what: &str, path: &Path, err: std::io::Error) -> StoreError {
        if err.kind() == std::io::ErrorKind::NotFound {
            return StoreError::NotFound {
                location: self.location(),
                key: path
                    .strip_prefix(&self.root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            };
        }
        let hint = match err.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (permission denied: check the owner and mode of the repository directory)"
            }
            _ if err.raw_os_error() == Some(libc::ENOSPC) => {
                " (the disk is full: free space or move the repository)"
            }
            _ => "",
        };
        StoreError::Io {
            location: self.location(),
            message: format!("cannot {what} {}: {err}{hint}", path.display()),
        }
    }

    /// Writes `parts` to a synced temporary file beside `p` and returns its path. The name
    /// is unique per process and call, so concurrent writers never share a temporary file.
    fn write_temp(&self, p: &Path, parts: &[Bytes]) -> StoreResult<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = p.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| self.io("create", &dir, e))?;
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{name}-{}-{seq}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            for part in parts {
                f.write_all(part)?;
            }
            f.sync_all()
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(self.io("write", p, e))
            }
        }
    }
}

impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut stack = vec![self.path(dir)];
        while let Some(d) = stack.pop() {
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", &d, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io("list", &d, e))?;
                let ft = entry.file_type().map_err(|e| self.io("list", &d, e))?;
                let p = entry.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.starts_with(".tmp-") {
                        continue;
                    }
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    let rel = p
                        .strip_prefix(&self.root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, size));
                }
            }
        }
        Ok(out)
    }

    fn read(&self, key: &str) -> StoreResult<Bytes> {
        let p = self.path(key);
        fs::read(&p)
            .map(Bytes::from)
            .map_err(|e| self.io("read", &p, e))
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let p = self.path(key);
        let mut f = fs::File::open(&p).map_err(|e| self.io("open", &p, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("seek in", &p, e))?;
        let mut buf = vec![0; len as usize];
        f.read_exact(&mut buf).map_err(|e| self.io("read", &p, e))?;
        Ok(buf.into())
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        let p = self.path(key);
        let tmp = self.write_temp(&p, parts)?;
        fs::rename(&tmp, &p).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io("write", &p, e)
        })
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        let p = self.path(key);
        let tmp = self.write_temp(&p, parts)?;
        // A hard link is created atomically and never replaces an existing file.
        let linked = fs::hard_link(&tmp, &p);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io("write", &p, e)),
        }
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", &p, e)),
        }
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(self.path(key).exists())
    }

    fn create(&self) -> StoreResult<()> {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for d in ["keys", "snapshots", "index", "locks"] {
            let p = self.root.join(d);
            b.create(&p).map_err(|e| self.io("create", &p, e))?;
        }
        for i in 0..=255u8 {
            let p = self.root.join("data").join(format!("{i:02x}"));
            b.create(&p).map_err(|e| self.io("create", &p, e))?;
        }
        Ok(())
    }
}
