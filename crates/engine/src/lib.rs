//! Runs one session: resolves its Task into steps, streams database -> repository (backup) or
//! repository -> database (restore), applies retention, verifies integrity and records stats.
//! It reads and writes resources only through [`Catalog`], so it runs the same on every
//! platform.

pub mod backup;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod exec;
pub mod format;
pub mod hooks;
pub mod metrics;
pub mod native;
pub mod physical;
pub mod progress;
pub mod resolve;
pub mod restore;
pub mod swap;
pub mod tasks;
pub mod volume_swap;

pub use backup::run_backup;
pub use catalog::{Catalog, CatalogError};
pub use error::{EngineError, EngineResult};
pub use restore::run_restore;

/// How this installation runs sessions.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Where to push metrics at the end of every session (none: not pushed).
    pub pushgateway: Option<String>,
    /// The address a Galera backup's SST listener advertises to the donor when the task sets
    /// no `listenAddress` (in a Pod: its IP, from the downward API). None: 127.0.0.1.
    pub listen_address: Option<String>,
    /// Restore only this replica of a cluster restore (on Kubernetes each replica has its own
    /// Job, which sets POD_ORDINAL). None: every replica, one after the other.
    pub replica: Option<u32>,
    /// Each replica's data volume is mounted where the RestoreSession's
    /// `spec.target.volumeMounts` says (a PVC in the replica's Job): a physical restore whose
    /// task has no `dataDir` restores into the first mount path.
    pub data_dir_from_volume_mounts: bool,
}
