//! Restic-format repositories for coffer.
//!
//! Every command that touches a repository goes through [`Repo`]: it opens or initialises the
//! repository, streams files into one snapshot and back out, lists and selects snapshots,
//! applies retention, prunes, checks and locks — on a local directory or an S3 prefix.

pub mod backend;
pub mod cipher;
pub mod lock;
pub mod repository;
mod rustic_error;
mod sizes;
pub mod store;

pub use lock::{LockError, LockInfo, RepoLock};
pub use repository::{
    ForgetOutcome, Repo, RepoError, RepoResult, Retention, SnapshotInfo, SnapshotMeta,
    SnapshotReader, SnapshotSelector, SourceFailed, SourceFile, SourceStream,
};
pub use store::{LocalStore, ObjectStore, S3Config, S3Store, StoreError};
