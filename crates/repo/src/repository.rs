//! One repository abstraction that every coffer command goes through: open or initialise,
//! stream files in and out, list snapshots, apply retention, prune, check, measure, lock.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytesize::ByteSize;
use rustic_core::{
    repofile::{MasterKey, Metadata, Node, NodeType, SnapshotFile},
    BackupOptions, CheckOptions, ConfigOptions, Credentials, ErrorKind, ForgetGroups, Grouped,
    KeepOptions, KeyOptions, PruneOptions, ReadSource, ReadSourceEntry, Repository,
    RepositoryBackends, RepositoryOptions, RusticError, RusticResult, SnapshotGroupCriterion,
    SnapshotOptions, StringList,
};
use std::collections::HashMap;

use crate::{
    backend::{InitClaim, SourceGate, StoreBackend},
    cipher::RepoCipher,
    datacheck::{DataCheckReport, DataChecker, DataSubset, RemovalOutcome},
    lock::{self, LockError, RepoLock},
    sizes::SizeWriter,
    store::{ObjectStore, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {location} is not initialised (no `config` file there)")]
    NotInitialised { location: String },
    #[error(
        "the password does not open repository {location}: RESTIC_PASSWORD in the storage Secret \
         must be the password the repository was created with"
    )]
    WrongPassword { location: String },
    #[error("repository {location}: {message}")]
    Operation { location: String, message: String },
    #[error("repository {location}: no snapshot matches {what}")]
    NoSnapshot { location: String, what: String },
    #[error("repository {location}: snapshot {snapshot} has no file {path}")]
    NoSuchFile {
        location: String,
        snapshot: String,
        path: String,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A storage failure inside a repository operation (its message names the location).
    #[error("{0}")]
    Storage(String),
    /// The stream being backed up failed; its own error says why.
    #[error("{0}")]
    Source(String),
}

pub type RepoResult<T> = Result<T, RepoError>;

/// The tag of a binlog archive's snapshots: many small ones per hour, retained by the
/// archive itself (segment by segment), never by a backup's keep-rules.
pub const ARCHIVE_TAG: &str = "coffer-binlog";

/// Facts about one snapshot, for listings and status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub unix_time: i64,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Bytes read from the source (restic writes no summary, so 0 for its snapshots).
    pub total_bytes: u64,
    /// Bytes added to the repository before compression.
    pub data_added: u64,
    /// Bytes added to the repository after compression and encryption.
    pub data_added_packed: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub total_files: u64,
    pub duration_seconds: f64,
    /// The snapshot's description (rustic's field; restic ignores it). Not in listings: an
    /// archive's snapshots carry their segment index there.
    #[serde(skip)]
    pub description: Option<String>,
    /// The id the snapshot had when it was written, when its tags were changed since (a
    /// changed snapshot is a new file with a new id, as with `restic tag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

impl SnapshotInfo {
    pub(crate) fn from_file(s: &SnapshotFile) -> Self {
        let id = s.id.to_hex().to_string();
        let summary = s.summary.clone().unwrap_or_default();
        Self {
            short_id: id[..8].to_string(),
            id,
            time: s.time.timestamp().to_string(),
            unix_time: s.time.timestamp().as_second(),
            hostname: s.hostname.clone(),
            paths: s.paths.iter().cloned().collect(),
            tags: s.tags.iter().cloned().collect(),
            total_bytes: summary.total_bytes_processed,
            data_added: summary.data_added,
            data_added_packed: summary.data_added_packed,
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            total_files: summary.total_files_processed,
            duration_seconds: summary.backup_duration,
            description: s.description.clone(),
            // rustic fills `original` with the id itself when the file has none.
            original: s
                .original
                .filter(|o| *o != s.id)
                .map(|o| o.to_hex().to_string()),
        }
    }
}

/// How a snapshot is chosen: `latest` or an id (or unique id prefix), optionally restricted to
/// a host and to snapshots containing a path.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSelector {
    pub snapshot: String,
    pub host: Option<String>,
    pub path: Option<String>,
}

/// restic's keep-rules; `None` everywhere keeps every snapshot.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub keep_last: Option<i32>,
    pub keep_hourly: Option<i32>,
    pub keep_daily: Option<i32>,
    pub keep_weekly: Option<i32>,
    pub keep_monthly: Option<i32>,
    pub keep_yearly: Option<i32>,
    pub keep_tags: Vec<String>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_tags.is_empty()
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ForgetOutcome {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

/// What a snapshot records about its origin.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    pub host: String,
    pub tags: Vec<String>,
    /// The snapshot's `paths` (default: every file's path). A snapshot of many files names
    /// their directory, so that retention groups its snapshots together.
    pub paths: Vec<String>,
    /// Tags known only once the source has been read (a binlog position a dump writes at its
    /// end): the producer adds them as its stream ends, and they are read when the snapshot
    /// is written, after every file was read and before the snapshot file exists.
    pub late_tags: LateTags,
}

/// See [`SnapshotMeta::late_tags`].
pub type LateTags = Arc<Mutex<Vec<String>>>;

/// One file to put into a snapshot: its absolute path in the snapshot and its content.
pub struct SourceFile {
    pub path: String,
    pub reader: Box<dyn BufRead + Send>,
    /// The file's length when it is known before reading (a buffer in memory): recorded in the
    /// tree as is, and checked against what the reader delivers.
    pub size: Option<u64>,
}

impl SourceFile {
    /// A plain reader (a pipe, a socket) gets a 1 MiB buffer: rustic's chunker reads a few
    /// kilobytes at a time.
    pub fn new(path: impl Into<String>, reader: impl Read + Send + 'static) -> SourceFile {
        SourceFile::buffered(path, BufReader::with_capacity(1 << 20, reader))
    }

    /// A reader that holds its data in memory already, passed on without another copy.
    pub fn buffered(path: impl Into<String>, reader: impl BufRead + Send + 'static) -> SourceFile {
        SourceFile {
            path: path.into(),
            reader: Box::new(reader),
            size: None,
        }
    }

    /// A file held in memory: its size is known up front.
    pub fn in_memory(
        path: impl Into<String>,
        data: impl AsRef<[u8]> + Send + 'static,
    ) -> SourceFile {
        let size = data.as_ref().len() as u64;
        SourceFile {
            size: Some(size),
            ..SourceFile::buffered(path, std::io::Cursor::new(data))
        }
    }
}

/// Files handed to [`Repo::backup_stream`] one at a time, in path order.
pub type SourceStream = Box<dyn Iterator<Item = SourceFile> + Send>;

/// An open restic repository.
#[derive(Clone)]
pub struct Repo {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) key: MasterKey,
    /// Repository format v2 (compressed blobs and files).
    pub(crate) compress: bool,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("location", &self.store.location())
            .finish_non_exhaustive()
    }
}

fn raw(store: &Arc<dyn ObjectStore>) -> RepoResult<Repository<()>> {
    raw_with(store, StoreBackend::new(store.clone()))
}

fn raw_with(store: &Arc<dyn ObjectStore>, backend: StoreBackend) -> RepoResult<Repository<()>> {
    let backends = RepositoryBackends::new(Arc::new(backend), None);
    let opts = RepositoryOptions::default().no_cache(true);
    Repository::new(&opts, &backends).map_err(|e| op_err(store, e))
}

/// Picks the message of the deepest cause worth showing from a rustic error.
#[allow(clippy::boxed_local)] // rustic_core hands its errors out boxed
fn op_err(store: &Arc<dyn ObjectStore>, e: Box<RusticError>) -> RepoError {
    // A storage failure carries our own StoreError: surface it unchanged.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&*e);
    while let Some(s) = src {
        if let Some(se) = s.downcast_ref::<StoreError>() {
            return RepoError::Storage(se.to_string());
        }
        if let Some(se) = s.downcast_ref::<SourceFailed>() {
            return RepoError::Source(se.0.clone());
        }
        src = s.source();
    }
    let location = store.location();
    // The whole report is for the session log; the status gets the summary.
    tracing::warn!("repository {location}: {}", crate::rustic_error::detail(&e));
    tracing::debug!("repository {location}: {e}");
    RepoError::Operation {
        location,
        message: crate::rustic_error::summary(&e),
    }
}

/// A source stream's failure, carried through rustic's error chain unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceFailed(pub String);

/// Serialises the initialisation of one repository location among the processes of this
/// machine, whatever the store. Conditional writes of the config ([`InitClaim`]) also guard
/// against other machines, but not every S3 server honours them (Garage ignores
/// `If-None-Match`), and first backups of one new repository starting together on one
/// server are the common case.
struct InitLock {
    // The lock is released when the file closes.
    _held: Option<std::fs::File>,
}

impl InitLock {
    fn acquire(location: &str) -> InitLock {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(location.as_bytes());
        let name = format!("coffer-init-{}.lock", crate::lock::hex(&digest[..8]));
        let path = std::env::temp_dir().join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| f.lock().map(|()| f));
        match file {
            Ok(f) => InitLock { _held: Some(f) },
            Err(e) => {
                // Without the lock the config's conditional write still decides the race.
                tracing::warn!(path = %path.display(), error = %e, "cannot take the repository initialisation lock");
                InitLock { _held: None }
            }
        }
    }
}

impl Repo {
    /// Opens an existing repository with its password.
    pub fn open(store: Arc<dyn ObjectStore>, password: &str) -> RepoResult<Repo> {
        let r = raw(&store)?;
        if r.config_id().map_err(|e| op_err(&store, e))?.is_none() {
            return Err(RepoError::NotInitialised {
                location: store.location(),
            });
        }
        let open = r.open(&Credentials::password(password)).map_err(|e| {
            if e.is_incorrect_password() {
                RepoError::WrongPassword {
                    location: store.location(),
                }
            } else {
                op_err(&store, e)
            }
        })?;
        Ok(Repo {
            key: open.key(),
            compress: open.config().version > 1,
            store,
        })
    }

    /// Opens the repository, creating it first when the location holds none.
    /// Returns whether it was created.
    pub fn open_or_init(store: Arc<dyn ObjectStore>, password: &str) -> RepoResult<(Repo, bool)> {
        match Repo::open(store.clone(), password) {
            Ok(r) => Ok((r, false)),
            Err(RepoError::NotInitialised { .. }) => {
                let _local = InitLock::acquire(&store.location());
                // Another process on this machine may have created it while we waited.
                match Repo::open(store.clone(), password) {
                    Ok(r) => return Ok((r, false)),
                    Err(RepoError::NotInitialised { .. }) => {}
                    Err(e) => return Err(e),
                }
                store.create()?;
                let claim = Arc::new(InitClaim::default());
                let r = raw_with(
                    &store,
                    StoreBackend::initialising(store.clone(), claim.clone()),
                )?;
                // zstd level 1: compression is most of a backup's CPU, and level 1 compresses
                // SQL dumps within a few percent of the default level at about twice the speed.
                let mut config = ConfigOptions::default();
                config.set_compression = Some(1);
                // Content-defined chunking scans every byte past the minimum chunk size, and
                // that scan was the largest single cost of a native backup. A minimum equal to
                // the average (1 MiB) scans half of the data instead of two thirds; chunks
                // average 2 MiB. restic reads such repositories unchanged.
                config.set_chunk_size = Some(ByteSize::mib(1));
                config.set_chunk_min_size = Some(ByteSize::mib(1));
                config.set_chunk_max_size = Some(ByteSize::mib(8));
                // Packs are built whole in memory, and rustic keeps several in flight: its
                // 32 MiB default cost more resident memory than anything else in a backup.
                // 16 MiB is restic's own default.
                config.set_datapack_size = Some(ByteSize::mib(16));
                // rustic re-reads every blob it has just compressed and encrypted (decrypt,
                // decompress, compare) before packing it: 1.5 of 13 CPU-seconds in a 2 GB native
                // backup. restic does not, and a blob that does not decrypt to its id is still
                // caught on every read: by its MAC, by `coffer` restore's checksums of each
                // native file, and by `check --read-data`.
                config.set_extra_verify = Some(false);
                let open = match r.init(
                    &Credentials::password(password),
                    &KeyOptions::default(),
                    &config,
                ) {
                    Ok(open) => open,
                    // Another process created it a moment ago: use theirs.
                    Err(_) if claim.lost() || store.exists("config")? => {
                        return Ok((Repo::open(store, password)?, false));
                    }
                    Err(e) => return Err(op_err(&store, e)),
                };
                Ok((
                    Repo {
                        key: open.key(),
                        compress: open.config().version > 1,
                        store,
                    },
                    true,
                ))
            }
            Err(e) => Err(e),
        }
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Later opens reuse the master key, skipping the password KDF (128 MiB of scrypt for
    /// repositories rustic created).
    pub(crate) fn opened(&self) -> RepoResult<Repository<rustic_core::OpenStatus>> {
        self.opened_with(StoreBackend::new(self.store.clone()))
    }

    fn opened_with(
        &self,
        backend: StoreBackend,
    ) -> RepoResult<Repository<rustic_core::OpenStatus>> {
        raw_with(&self.store, backend)?
            .open(&Credentials::Masterkey(self.key.clone()))
            .map_err(|e| op_err(&self.store, e))
    }

    pub(crate) fn err(&self, e: Box<RusticError>) -> RepoError {
        op_err(&self.store, e)
    }

    /// Files at most this long are stored as one blob, without content-defined chunking:
    /// rustic's chunker reads its minimum chunk size whole and scans byte by byte only past
    /// it. A producer free to choose its file boundaries (the native dump) stays under it.
    pub fn unchunked_file_limit(&self) -> RepoResult<u64> {
        let repo = self.opened()?;
        let cfg = repo.config();
        Ok(match cfg.chunker() {
            rustic_core::repofile::Chunker::Rabin => cfg.chunk_min_size(),
            rustic_core::repofile::Chunker::FixedSize => cfg.chunk_size(),
        } as u64)
    }

    pub fn lock(&self, exclusive: bool) -> RepoResult<RepoLock> {
        Ok(RepoLock::acquire(
            self.store.clone(),
            RepoCipher::new(&self.key),
            exclusive,
        )?)
    }

    pub fn unlock(&self, all: bool) -> RepoResult<Vec<String>> {
        Ok(lock::unlock(
            self.store.as_ref(),
            &RepoCipher::new(&self.key),
            all,
        )?)
    }

    pub fn locks(&self) -> RepoResult<Vec<(String, Option<lock::LockInfo>)>> {
        Ok(lock::list_locks(
            self.store.as_ref(),
            &RepoCipher::new(&self.key),
        )?)
    }

    /// Streams the given files into one new snapshot. The snapshot is written only after every
    /// reader has reached its end without error: a reader that fails (for example because the
    /// dump behind it failed) leaves no snapshot behind.
    pub fn backup(
        &self,
        mut files: Vec<SourceFile>,
        meta: &SnapshotMeta,
    ) -> RepoResult<SnapshotInfo> {
        // The tree archiver expects entries in path order.
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut meta = meta.clone();
        if meta.paths.is_empty() {
            meta.paths = files.iter().map(|f| f.path.clone()).collect();
        }
        self.backup_stream(Box::new(files.into_iter()), &meta)
    }

    /// Like [`backup`](Self::backup), for files that a producer makes while the backup runs:
    /// they must come in path order (a file out of order fails the backup), and `meta.paths`
    /// names the snapshot's paths, which cannot be known up front.
    pub fn backup_stream(
        &self,
        files: SourceStream,
        meta: &SnapshotMeta,
    ) -> RepoResult<SnapshotInfo> {
        let gate = Arc::new(SourceGate::default());
        let repo = self
            .opened_with(StoreBackend::gated(self.store.clone(), gate.clone()))?
            .to_indexed_ids()
            .map_err(|e| self.err(e))?;
        let sopts = SnapshotOptions::default().host(meta.host.clone());
        let mut snap = SnapshotFile::from_options(&sopts).map_err(|e| self.err(e))?;
        for t in &meta.tags {
            // Added whole: rustic's option parser would split a tag at its commas, and a
            // MariaDB GTID position with several domains has them.
            snap.tags.add(t.clone());
        }
        let mut opts = BackupOptions::default();
        // A stream has no size or mtime: without `force`, a parent snapshot's file would be
        // taken as unchanged and its old content silently reused.
        opts.parent_opts.force = true;
        opts.no_scan = true;
        let mut paths: Vec<PathBuf> = meta.paths.iter().map(PathBuf::from).collect();
        paths.sort();
        let src = StreamSource::new(files, gate.clone());
        let snap = repo
            .archive(&opts, &src, snap, &paths)
            .map_err(|e| match gate.failure() {
                Some(why) => RepoError::Source(why),
                None => self.err(e),
            })?;
        // Belt and braces: every byte the sources delivered must be in the snapshot, which
        // the gate has held back so far.
        let info = SnapshotInfo::from_file(&snap);
        let sizes = src.sizes();
        let delivered: u64 = sizes.values().sum::<u64>() + src.known.load(Ordering::SeqCst);
        if gate.failure().is_some() || info.total_bytes != delivered {
            return Err(RepoError::Source(gate.failure().unwrap_or_else(|| {
                format!(
                    "the snapshot holds {} bytes but the source delivered {delivered}; it was \
                     not written",
                    info.total_bytes
                )
            })));
        }
        let Some((held_id, held)) = gate.take_held() else {
            return Err(RepoError::Operation {
                location: self.store.location(),
                message: "the backup finished without a snapshot to write; nothing was saved"
                    .into(),
            });
        };
        debug_assert_eq!(held_id, *snap.id);
        let late: Vec<String> = meta
            .late_tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let old_tree = |id| repo.get_tree(&id);
        let writer = SizeWriter {
            store: &self.store,
            cipher: RepoCipher::new(&self.key),
            compress: repo.config().version > 1,
            sizes,
            old_tree: &old_tree,
        };
        let snap = writer
            .commit(snap, held, &gate.indexes(), &late)
            .map_err(|e| RepoError::Operation {
                location: self.store.location(),
                message: format!("{e}; the snapshot was not written, back up again"),
            })?;
        Ok(SnapshotInfo::from_file(&snap))
    }

    /// All snapshots, newest first.
    pub fn snapshots(&self) -> RepoResult<Vec<SnapshotInfo>> {
        let mut snaps = self
            .opened()?
            .get_all_snapshots()
            .map_err(|e| self.err(e))?;
        snaps.sort_unstable_by_key(|s| std::cmp::Reverse(s.time.timestamp()));
        Ok(snaps.iter().map(SnapshotInfo::from_file).collect())
    }

    /// Finds the snapshot a selector means.
    pub fn find(&self, sel: &SnapshotSelector) -> RepoResult<SnapshotInfo> {
        let snaps = self.snapshots()?;
        let matches_filters = |s: &&SnapshotInfo| {
            sel.host.as_ref().is_none_or(|h| &s.hostname == h)
                && sel
                    .path
                    .as_ref()
                    .is_none_or(|p| s.paths.iter().any(|sp| same_path(sp, p)))
        };
        let what = || {
            let mut w = format!("`{}`", sel.snapshot);
            if let Some(h) = &sel.host {
                w.push_str(&format!(" on host `{h}`"));
            }
            if let Some(p) = &sel.path {
                w.push_str(&format!(" with path `{p}`"));
            }
            w
        };
        let found: Vec<&SnapshotInfo> = if sel.snapshot.is_empty() || sel.snapshot == "latest" {
            snaps.iter().filter(matches_filters).take(1).collect()
        } else {
            let by_id: Vec<&SnapshotInfo> = snaps
                .iter()
                .filter(|s| s.id.starts_with(&sel.snapshot))
                .filter(matches_filters)
                .collect();
            if by_id.is_empty() {
                // An id recorded before the snapshot's tags changed (a backup session's
                // status, a verification's) still names it.
                snaps
                    .iter()
                    .filter(|s| {
                        s.original
                            .as_ref()
                            .is_some_and(|o| o.starts_with(&sel.snapshot))
                    })
                    .filter(matches_filters)
                    .collect()
            } else {
                by_id
            }
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RepoError::NoSnapshot {
                location: self.location(),
                what: what(),
            }),
            _ => Err(RepoError::Operation {
                location: self.location(),
                message: format!(
                    "snapshot id prefix `{}` is ambiguous: use more characters",
                    sel.snapshot
                ),
            }),
        }
    }

    /// Streams one file of a snapshot into `w`; returns the bytes written.
    pub fn dump(&self, snapshot_id: &str, path: &str, w: &mut dyn Write) -> RepoResult<u64> {
        let repo = self.opened()?.to_indexed().map_err(|e| self.err(e))?;
        let snap = repo
            .get_snapshot_from_str(snapshot_id, |_| true)
            .map_err(|e| self.err(e))?;
        let rel = path.trim_start_matches('/');
        let node =
            repo.node_from_snapshot_and_path(&snap, rel)
                .map_err(|_| RepoError::NoSuchFile {
                    location: self.location(),
                    snapshot: snapshot_id.chars().take(8).collect(),
                    path: path.to_string(),
                })?;
        let mut counting = CountingWriter { inner: w, n: 0 };
        repo.dump(&node, &mut counting).map_err(|e| self.err(e))?;
        counting
            .flush()
            .map_err(|e| RepoError::Source(e.to_string()))?;
        Ok(counting.n)
    }

    /// A snapshot opened for reading many of its files (the index is read once).
    pub fn reader(&self, snapshot_id: &str) -> RepoResult<SnapshotReader> {
        let repo = self.opened()?.to_indexed().map_err(|e| self.err(e))?;
        let snap = repo
            .get_snapshot_from_str(snapshot_id, |_| true)
            .map_err(|e| self.err(e))?;
        Ok(SnapshotReader {
            repo,
            snap,
            store: self.store.clone(),
        })
    }

    /// Paths of every file in a snapshot with their sizes.
    pub fn files(&self, snapshot_id: &str) -> RepoResult<Vec<(String, u64)>> {
        let repo = self.opened()?.to_indexed().map_err(|e| self.err(e))?;
        let snap = repo
            .get_snapshot_from_str(snapshot_id, |_| true)
            .map_err(|e| self.err(e))?;
        let node = repo
            .node_from_snapshot_and_path(&snap, "")
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in repo
            .ls(&node, &rustic_core::LsOptions::default())
            .map_err(|e| self.err(e))?
        {
            let (p, n) = item.map_err(|e| self.err(e))?;
            if n.is_file() {
                out.push((format!("/{}", p.display()), n.meta.size));
            }
        }
        Ok(out)
    }

    /// Applies keep-rules per host+paths group, as `restic forget` does. With `dry_run` nothing
    /// is removed but the outcome says what would be.
    /// Snapshots tagged [`ARCHIVE_TAG`] are not a backup's: their own store retains them.
    pub fn forget(&self, rules: &Retention, dry_run: bool) -> RepoResult<ForgetOutcome> {
        let repo = self.opened()?;
        let mut snaps = repo.get_all_snapshots().map_err(|e| self.err(e))?;
        snaps.retain(|s| !s.tags.contains(ARCHIVE_TAG));
        if rules.is_empty() {
            return Ok(ForgetOutcome {
                kept: snaps.iter().map(|s| s.id.to_hex().to_string()).collect(),
                removed: Vec::new(),
            });
        }
        let mut keep = KeepOptions::default();
        keep.keep_last = rules.keep_last;
        keep.keep_hourly = rules.keep_hourly;
        keep.keep_daily = rules.keep_daily;
        keep.keep_weekly = rules.keep_weekly;
        keep.keep_monthly = rules.keep_monthly;
        keep.keep_yearly = rules.keep_yearly;
        keep.keep_tags = rules
            .keep_tags
            .iter()
            .map(|t| t.parse::<StringList>().unwrap_or_default())
            .collect();
        let mut crit = SnapshotGroupCriterion::new();
        crit.hostname = true;
        crit.paths = true;
        crit.label = false;
        crit.tags = false;
        let grouped = Grouped::from_items(snaps, crit);
        let now = rustic_core::jiff::Zoned::now();
        let groups = ForgetGroups::from_grouped_snapshots_with_retention(grouped, &keep, &now)
            .map_err(|e| self.err(e))?;
        let mut out = ForgetOutcome::default();
        let mut ids = Vec::new();
        for g in &groups.0 {
            for s in &g.items {
                let id = s.snapshot.id.to_hex().to_string();
                if s.keep {
                    out.kept.push(id);
                } else {
                    ids.push(s.snapshot.id);
                    out.removed.push(id);
                }
            }
        }
        if !dry_run && !ids.is_empty() {
            repo.delete_snapshots(&ids).map_err(|e| self.err(e))?;
        }
        Ok(out)
    }

    /// Deletes snapshots by id (used to take back a snapshot that must not stand).
    pub fn delete_snapshot(&self, id: &str) -> RepoResult<()> {
        let repo = self.opened()?;
        let snap = repo
            .get_snapshot_from_str(id, |_| true)
            .map_err(|e| self.err(e))?;
        repo.delete_snapshots(&[snap.id]).map_err(|e| self.err(e))
    }

    /// Removes data no snapshot references. Call with an exclusive lock held: unused packs are
    /// deleted at once rather than in rustic's two-phase delete.
    pub fn prune(&self) -> RepoResult<()> {
        let repo = self.opened()?;
        let opts = PruneOptions::default().instant_delete(true);
        let plan = repo.prune_plan(&opts).map_err(|e| self.err(e))?;
        repo.prune(&opts, plan).map_err(|e| self.err(e))
    }

    /// Verifies the repository's structure (and with `read_data` every pack's content).
    /// Returns the problems found; empty means healthy.
    pub fn check(&self, read_data: bool) -> RepoResult<Vec<String>> {
        let repo = self.opened()?;
        let opts = CheckOptions::default().read_data(read_data);
        let results = repo.check(opts).map_err(|e| self.err(e))?;
        if results.is_ok().is_ok() {
            return Ok(Vec::new());
        }
        Ok(results
            .0
            .iter()
            .map(|(level, e)| format!("{level:?}: {e}"))
            .collect())
    }

    fn data_checker(&self) -> RepoResult<DataChecker<'_>> {
        Ok(DataChecker {
            store: &self.store,
            cipher: RepoCipher::new(&self.key),
            compress: self.opened()?.config().version > 1,
        })
    }

    /// Reads the data of the packs in `subset` back and reports the damaged packs with the
    /// snapshots that depend on them (see [`crate::datacheck`]). Call with a lock held.
    pub fn check_data(&self, subset: DataSubset) -> RepoResult<DataCheckReport> {
        self.data_checker()?.check(subset)
    }

    /// Takes the damaged packs a data check found out of the repository, salvaging their
    /// intact blobs, so that the next backup writes the damaged blobs again instead of
    /// reusing them. Call with the exclusive lock held.
    pub fn remove_damaged(&self, report: &DataCheckReport) -> RepoResult<RemovalOutcome> {
        self.data_checker()?.remove_damaged(report)
    }

    /// Which of these packs the index still lists.
    pub fn indexed_packs(&self, packs: &[String]) -> RepoResult<Vec<String>> {
        if packs.is_empty() {
            return Ok(Vec::new());
        }
        self.data_checker()?.indexed(packs)
    }

    /// Bytes the repository's data takes in storage (restic's `stats --mode raw-data` after prune).
    pub fn size(&self) -> RepoResult<u64> {
        Ok(self.store.list("data")?.iter().map(|(_, s)| s).sum())
    }
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_start_matches('/') == b.trim_start_matches('/')
}

pub(crate) struct CountingWriter<'a> {
    pub inner: &'a mut dyn Write,
    pub n: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes delivered by each file of unknown size, by its path without the leading `/`.
type DeliveredPerFile = Arc<Mutex<Vec<(String, Arc<AtomicU64>)>>>;

/// Files given as readers, handed to rustic's archiver once each, as it asks for them.
struct StreamSource {
    files: Mutex<Option<SourceStream>>,
    gate: Arc<SourceGate>,
    per_file: DeliveredPerFile,
    /// Bytes delivered by the files whose size was known, each checked as it ends.
    known: Arc<AtomicU64>,
}

impl StreamSource {
    fn new(files: SourceStream, gate: Arc<SourceGate>) -> Self {
        Self {
            files: Mutex::new(Some(files)),
            gate,
            per_file: Arc::default(),
            known: Arc::default(),
        }
    }

    fn sizes(&self) -> HashMap<String, u64> {
        self.per_file
            .lock()
            .unwrap()
            .iter()
            .map(|(p, n)| (p.clone(), n.load(Ordering::SeqCst)))
            .collect()
    }
}

/// The archiver's view of a [`SourceStream`]: one entry per file, made when it asks.
struct Entries {
    files: SourceStream,
    gate: Arc<SourceGate>,
    per_file: DeliveredPerFile,
    known: Arc<AtomicU64>,
    now: rustic_core::jiff::Timestamp,
    last: Option<String>,
}

impl Iterator for Entries {
    type Item = RusticResult<ReadSourceEntry<FillReader>>;

    fn next(&mut self) -> Option<Self::Item> {
        let f = self.files.next()?;
        if self.last.as_ref().is_some_and(|last| *last >= f.path) {
            // The tree would be built wrong: fail the backup, which leaves no snapshot.
            let why = format!(
                "the backup source produced {} after {}: files must come in path order",
                f.path,
                self.last.as_deref().unwrap_or_default()
            );
            self.gate.fail(why.clone());
            return Some(Err(RusticError::new(ErrorKind::InvalidInput, why)));
        }
        self.last = Some(f.path.clone());
        let path = PathBuf::from(&f.path);
        let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
            let why = format!("snapshot file path {} has no name", f.path);
            self.gate.fail(why.clone());
            return Some(Err(RusticError::new(ErrorKind::InvalidInput, why)));
        };
        let meta = Metadata {
            mode: Some(0o100644),
            mtime: Some(self.now),
            // rustic sizes its chunk buffer by the smaller of this and the minimum chunk size;
            // a stream's size is unknown, and the default of 0 made it grow the buffer by
            // doubling, copying each chunk once more. The real size of a stream replaces this
            // in the tree before the snapshot is written (sizes).
            size: f.size.unwrap_or(u64::MAX),
            ..Default::default()
        };
        let delivered = Arc::new(AtomicU64::new(0));
        if f.size.is_none() {
            self.per_file.lock().unwrap().push((
                f.path.trim_start_matches('/').to_string(),
                delivered.clone(),
            ));
        }
        Some(Ok(ReadSourceEntry {
            path,
            node: Node::new_node(&name, NodeType::File, meta),
            open: Some(FillReader {
                inner: Some(f.reader),
                gate: self.gate.clone(),
                delivered,
                expected: f.size.map(|n| (n, f.path.clone(), self.known.clone())),
            }),
        }))
    }
}

impl ReadSource for StreamSource {
    type Open = FillReader;
    type Iter = Entries;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let files = self
            .files
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Box::new(std::iter::empty()));
        Entries {
            files,
            gate: self.gate.clone(),
            per_file: self.per_file.clone(),
            known: self.known.clone(),
            now: rustic_core::jiff::Timestamp::now(),
            last: None,
        }
    }
}

/// rustic's chunker shrinks its read buffer to the size of any short read and never grows it
/// back; pipes and sockets return short reads all the time. This reader always fills the
/// caller's buffer (or reaches the end), keeping the chunker on large reads.
/// It also reports the stream's failure to the snapshot gate and counts what it delivered.
pub struct FillReader {
    /// Dropped at the end of the stream, so that a finished file holds no memory while the
    /// snapshot is still being written.
    inner: Option<Box<dyn BufRead + Send>>,
    gate: Arc<SourceGate>,
    /// Bytes this file delivered.
    delivered: Arc<AtomicU64>,
    /// For a file of known size: that size, its path, and the sum of such files' bytes, added
    /// to once the file has delivered exactly its size.
    expected: Option<(u64, String, Arc<AtomicU64>)>,
}

impl Read for FillReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let mut n = 0;
        while n < buf.len() {
            let avail = match inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.gate.fail(e.to_string());
                    return Err(std::io::Error::other(SourceFailed(e.to_string())));
                }
            };
            if avail.is_empty() {
                self.inner = None;
                if let Some((want, path, known)) = self.expected.take() {
                    let got = self.delivered.load(Ordering::Relaxed) + n as u64;
                    if got != want {
                        let why = format!("{path} delivered {got} bytes, not its {want}");
                        self.gate.fail(why.clone());
                        return Err(std::io::Error::other(SourceFailed(why)));
                    }
                    known.fetch_add(want, Ordering::SeqCst);
                }
                break;
            }
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            inner.consume(k);
            n += k;
        }
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One snapshot, open for streaming its files out.
pub struct SnapshotReader {
    repo: Repository<rustic_core::IndexedFullStatus>,
    snap: SnapshotFile,
    store: Arc<dyn ObjectStore>,
}

impl SnapshotReader {
    /// Streams one file of the snapshot into `w`; returns the bytes written.
    pub fn dump(&self, path: &str, w: &mut dyn Write) -> RepoResult<u64> {
        let node = self
            .repo
            .node_from_snapshot_and_path(&self.snap, path.trim_start_matches('/'))
            .map_err(|_| RepoError::NoSuchFile {
                location: self.store.location(),
                snapshot: self.snap.id.to_hex().chars().take(8).collect(),
                path: path.to_string(),
            })?;
        let mut counting = CountingWriter { inner: w, n: 0 };
        self.repo
            .dump(&node, &mut counting)
            .map_err(|e| op_err(&self.store, e))?;
        counting
            .flush()
            .map_err(|e| RepoError::Source(e.to_string()))?;
        Ok(counting.n)
    }
}

#[cfg(test)]
mod init_race_tests {
    use std::sync::{Arc, Barrier};

    use crate::{CloudStore, LocalStore, ObjectStore, Repo, S3Config, SnapshotMeta, SourceFile};

    const PASSWORD: &str = "init-race-password";

    /// Several processes' first backups into one new repository start together: all must
    /// end up in one repository with one master key, every snapshot readable by all.
    fn racing_first_backups(store: Arc<dyn ObjectStore>) {
        const N: usize = 4;
        let barrier = Arc::new(Barrier::new(N));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let (repo, created) = Repo::open_or_init(store, PASSWORD).unwrap();
                    let body = format!("written by backup {i}\n");
                    let file = SourceFile::new("/dumpfile.sql", std::io::Cursor::new(body));
                    let meta = SnapshotMeta {
                        host: format!("host-{i}"),
                        tags: vec![],
                        paths: vec![],
                        late_tags: Default::default(),
                    };
                    repo.backup(vec![file], &meta).unwrap();
                    created
                })
            })
            .collect();
        let created: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            created.iter().filter(|c| **c).count(),
            1,
            "exactly one initialisation wins: {created:?}"
        );
        assert_eq!(
            store.list("keys").unwrap().len(),
            1,
            "the losers' keys are removed"
        );

        let repo = Repo::open(store, PASSWORD).unwrap();
        let mut snaps = repo.snapshots().unwrap();
        snaps.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        assert_eq!(snaps.len(), N);
        for (i, s) in snaps.iter().enumerate() {
            let mut out = Vec::new();
            repo.dump(&s.id, "/dumpfile.sql", &mut out).unwrap();
            assert_eq!(out, format!("written by backup {i}\n").into_bytes());
        }
        assert_eq!(repo.check(true).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn concurrent_first_backups_share_one_local_repository() {
        let dir = tempfile::tempdir().unwrap();
        racing_first_backups(Arc::new(LocalStore::new(dir.path())));
    }

    #[test]
    fn concurrent_first_backups_share_one_s3_repository() {
        let g = coffer_testkit::Garage::start()
            .expect("Garage is required (scripts/install-deps.sh builds it)");
        let store = CloudStore::s3(&S3Config {
            endpoint: g.endpoint(),
            bucket: g.bucket().to_string(),
            prefix: "race".into(),
            region: g.region().to_string(),
            access_key_id: g.access_key().to_string(),
            secret_access_key: g.secret_key().to_string(),
            session_token: None,
        })
        .unwrap();
        racing_first_backups(Arc::new(store));
    }

    #[test]
    fn a_config_is_written_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(store.write_new("config", &["first".into()]).unwrap());
        assert!(!store.write_new("config", &["second".into()]).unwrap());
        assert_eq!(&store.read("config").unwrap()[..], b"first");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("config")]);
    }
}
