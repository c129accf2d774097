//! Object stores that hold a restic repository: a local directory or an S3 bucket prefix.
//!
//! coffer talks to storage through this one small trait rather than through rustic_backend so that
//! it can reach every file of the restic layout (rustic_core has no notion of `locks/`), build only
//! the S3 service it needs, and turn storage failures into messages a person can act on.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use bytes::Bytes;

/// A failure of the storage under a repository.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location}: `{key}` does not exist")]
    NotFound { location: String, key: String },
    #[error("{location}: {message}")]
    Io { location: String, message: String },
    #[error("{location}: {message}")]
    S3 { location: String, message: String },
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

// ---------------------------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------------------------

/// Where an S3 repository lives and how to sign requests to it.
#[derive(Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A repository under a prefix of an S3 bucket, through opendal's S3 service.
pub struct S3Store {
    op: opendal::blocking::Operator,
    location: String,
    bucket: String,
    endpoint: String,
}

/// opendal is async inside; its blocking facade needs a runtime to drive requests.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-s3")
            .enable_all()
            .build()
            .expect("cannot start the S3 client runtime")
    })
}

impl S3Store {
    pub fn new(cfg: &S3Config) -> StoreResult<Self> {
        // Without opendal's auto-registration feature, the HTTP transport is installed here.
        opendal::install_default();
        let location = format!(
            "s3:{}/{}",
            cfg.endpoint.trim_end_matches('/'),
            join_prefix(&cfg.bucket, &cfg.prefix)
        );
        let root = format!("/{}", cfg.prefix.trim_matches('/'));
        let region = if cfg.region.is_empty() {
            // SigV4 needs a region; most S3-compatible servers accept us-east-1.
            "us-east-1"
        } else {
            &cfg.region
        };
        let mut builder = opendal::services::S3::default()
            .root(&root)
            .bucket(&cfg.bucket)
            .endpoint(&cfg.endpoint)
            .region(region)
            .access_key_id(&cfg.access_key_id)
            .secret_access_key(&cfg.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(t) = &cfg.session_token {
            builder = builder.session_token(t);
        }
        let err = |e: opendal::Error| StoreError::S3 {
            location: location.clone(),
            message: format!("invalid S3 configuration: {}", e.message()),
        };
        let op = opendal::Operator::new(builder)
            .map_err(err)?
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(4)
                    .with_min_delay(Duration::from_millis(200))
                    .with_jitter(),
            )
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(60)),
            );
        let _guard = runtime().enter();
        let op = opendal::blocking::Operator::new(op).map_err(err)?;
        Ok(Self {
            op,
            location,
            bucket: cfg.bucket.clone(),
            endpoint: cfg.endpoint.clone(),
        })
    }

    fn err(&self, what: &str, key: &str, e: opendal::Error) -> StoreError {
        if e.kind() == opendal::ErrorKind::NotFound {
            let msg = e.to_string();
            if msg.contains("NoSuchBucket") {
                return self.no_bucket();
            }
            return StoreError::NotFound {
                location: self.location.clone(),
                key: key.to_string(),
            };
        }
        StoreError::S3 {
            location: self.location.clone(),
            message: format!("cannot {what} `{key}`: {}", self.explain(&e)),
        }
    }

    fn no_bucket(&self) -> StoreError {
        StoreError::S3 {
            location: self.location.clone(),
            message: format!(
                "bucket `{}` does not exist at {}: create it, or fix spec.backend.s3.bucket",
                self.bucket, self.endpoint
            ),
        }
    }

    /// Turns opendal's error into the cause a person can fix.
    fn explain(&self, e: &opendal::Error) -> String {
        let full = format!("{e:?}");
        let lower = full.to_ascii_lowercase();
        if full.contains("NoSuchBucket") {
            return format!(
                "bucket `{}` does not exist: create it, or fix spec.backend.s3.bucket",
                self.bucket
            );
        }
        if full.contains("SignatureDoesNotMatch")
            || full.contains("InvalidAccessKeyId")
            || full.contains("AccessDenied")
            || full.contains("Forbidden")
            || e.kind() == opendal::ErrorKind::PermissionDenied
        {
            return "the S3 server refused the credentials: check AWS_ACCESS_KEY_ID and \
                    AWS_SECRET_ACCESS_KEY in the storage Secret and spec.backend.s3.region"
                .to_string();
        }
        if lower.contains("connection refused")
            || lower.contains("error sending request")
            || lower.contains("dns error")
            || lower.contains("tcp connect")
            || lower.contains("timed out")
        {
            return format!(
                "cannot reach the S3 endpoint {} (is the server running and the address right?)",
                self.endpoint
            );
        }
        e.message().to_string()
    }
}

fn join_prefix(bucket: &str, prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        bucket.to_string()
    } else {
        format!("{bucket}/{p}")
    }
}

impl ObjectStore for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
        let _guard = runtime().enter();
        let path = format!("{}/", dir.trim_end_matches('/'));
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(&path, opts) {
            Ok(v) => v,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                if e.to_string().contains("NoSuchBucket") {
                    return Err(self.no_bucket());
                }
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.err("list", dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| {
                (
                    e.path().trim_start_matches('/').to_string(),
                    e.metadata().content_length(),
                )
            })
            .collect())
    }

    fn read(&self, key: &str) -> StoreResult<Bytes> {
        let _guard = runtime().enter();
        self.op
            .read(key)
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("read", key, e))
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let _guard = runtime().enter();
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len).into(),
            ..Default::default()
        };
        self.op
            .read_options(key, opts)
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("read", key, e))
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        let _guard = runtime().enter();
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        self.op
            .write(key, buf)
            .map(|_| ())
            .map_err(|e| self.err("write", key, e))
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        let _guard = runtime().enter();
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        // S3 conditional writes (If-None-Match: *) make the check and the write one step.
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        match self.op.write_options(key, buf, opts) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.err("write", key, e)),
        }
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let _guard = runtime().enter();
        match self.op.delete(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        let _guard = runtime().enter();
        match self.op.stat(key) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                if e.to_string().contains("NoSuchBucket") {
                    return Err(self.no_bucket());
                }
                Ok(false)
            }
            Err(e) => Err(self.err("check", key, e)),
        }
    }

    fn create(&self) -> StoreResult<()> {
        // Buckets are not created implicitly: a typo in the bucket name should fail, not
        // silently scatter backups. Listing proves that the bucket exists and the keys work.
        self.list("keys").map(|_| ())
    }
}
