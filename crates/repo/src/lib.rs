//! Restic-format repositories for coffer.
//!
//! Every command that touches a repository goes through [`Repo`]: it opens or initialises the
//! repository, streams files into one snapshot and back out, lists and selects snapshots,
//! applies retention, prunes, checks and locks — on a local directory, a bucket or container of a cloud object store, or a restic REST server.

pub mod backend;
pub mod bounded;
pub mod cipher;
pub mod cloud;
pub mod datacheck;
pub mod direct;
pub mod lock;
pub mod repository;
pub mod rest;
mod retag;
mod rustic_error;
mod sizes;
pub mod store;
pub mod swift_auth;

pub use bounded::BoundedStore;
pub use cloud::{AzureConfig, B2Config, CloudStore, GcsConfig, S3Config, SwiftConfig};
pub use datacheck::{DamagedPack, DataCheckReport, DataSubset, RemovalOutcome};
pub use direct::{IndexedRepo, Pick, Written};
pub use lock::{LockError, LockInfo, RepoLock};
pub use repository::{
    ForgetOutcome, LateTags, Repo, RepoError, RepoResult, Retention, SnapshotInfo, SnapshotMeta,
    SnapshotReader, SnapshotSelector, SourceFailed, SourceFile, SourceStream, ARCHIVE_TAG,
};
pub use rest::{RestConfig, RestStore};
pub use store::{LocalStore, ObjectStore, StoreError};
