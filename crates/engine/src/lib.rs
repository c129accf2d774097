//! Runs one session: resolves its Task into steps, streams database -> repository (backup) or
//! repository -> database (restore), applies retention, verifies integrity and records stats.
//! It reads and writes resources only through [`Catalog`], so it runs the same on every
//! platform.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod clock;
pub mod error;
pub mod exec;
pub mod format;
pub mod hooks;
pub mod metrics;
pub mod native;
pub mod patch;
pub mod physical;
pub mod pitr_restore;
pub mod position;
pub mod progress;
pub mod resolve;
pub mod restore;
pub mod stores;
pub mod swap;
pub mod table_sums;
pub mod tasks;
pub mod verify;
pub mod verify_script;
pub mod verify_tag;
pub mod volume_swap;

pub use backup::run_backup;
pub use catalog::{update_status, Catalog, CatalogError, MemoryCatalog};
pub use error::{EngineError, EngineResult};
pub use restore::run_restore;

/// How this installation runs sessions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where to push metrics at the end of every session (none: not pushed).
    pub pushgateway: Option<String>,
    /// Who runs the session, as the platform knows it; recorded in the session's status so
    /// that the platform's supervisor can find it.
    pub executor: Executor,
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
    /// Where hooks' `exec` handlers may run (a Job's pod is not the database's).
    pub hook_exec: hooks::HookExec,
    /// Where a Repository's local backend is: the host's directory on one machine; in a
    /// pod the operator built, the volume mounted at `mountPath`.
    pub local_mount: coffer_api::repository::LocalMount,
}

/// Who executes a session: the platform says, the engine only records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// A local process (status `agentPid`).
    Process(u32),
    /// A Kubernetes pod, by name (status `executorPod`).
    Pod(String),
}

impl Executor {
    /// The status fields that name the executor: one is set, the other cleared (a session
    /// retried elsewhere names only its latest executor).
    pub fn record(&self, agent_pid: &mut Option<u32>, executor_pod: &mut Option<String>) {
        match self {
            Executor::Process(pid) => {
                *agent_pid = Some(*pid);
                *executor_pod = None;
            }
            Executor::Pod(name) => {
                *agent_pid = None;
                *executor_pod = Some(name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Executor;

    #[test]
    fn the_executor_names_itself_in_one_field() {
        let (mut pid, mut pod) = (Some(7), None);
        Executor::Pod("backup-x-1".into()).record(&mut pid, &mut pod);
        assert_eq!((pid, pod.as_deref()), (None, Some("backup-x-1")));
        Executor::Process(42).record(&mut pid, &mut pod);
        assert_eq!((pid, pod), (Some(42), None));
    }
}
