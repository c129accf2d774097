//! BackupConfiguration → the CronJob that triggers its sessions, and the configuration's status.
//!
//! Todo: doc
use coffer_api::{BackupConfiguration, Repository};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::CronJob;

use crate::{KubeAction, OperatorSettings};

/// The trigger CronJob's container runs `coffer create-backupsession --namespace=<ns> <bc>`
/// (command `["coffer"]`, these args): the CLI command that creates one BackupSession of the
/// configuration through the API, with the CronJob's ServiceAccount, as Stash's
/// `stash create-backupsession` does.
pub fn trigger_args(namespace: &str, bc: &str) -> Vec<String> {
    vec![
        "create-backupsession".into(),
        format!("--namespace={namespace}"),
        bc.into(),
    ]
}

/// What the observe layer found for one BackupConfiguration.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The configuration's `metadata.resourceVersion` (coffer-api's metadata drops it), so
    /// the status write is conditional.
    pub resource_version: Option<String>,
    /// `spec.repository`, if it exists.
    pub repository: Option<Repository>,
    /// The Repository's `spec.backend.storageSecretName` exists (false when the Repository is
    /// missing).
    pub backend_secret_found: bool,
    /// The AppBinding `spec.target.ref` names exists.
    pub target_found: bool,
    /// The configuration passed coffer's validation (`Err` says what is wrong, and where).
    pub validation: Result<(), String>,
    /// The trigger CronJob ([`crate::decide::names::trigger_cron_job`]), if it exists.
    pub cron_job: Option<CronJob>,
}

/// What to do about one BackupConfiguration at `now`.
pub fn decide(
    bc: &BackupConfiguration,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    todo!()
}
