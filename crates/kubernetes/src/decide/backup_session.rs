//! BackupSession → the backup Job, and the session's lifecycle.
//!
//! Todo: doc
use coffer_api::{BackupConfiguration, BackupSession};
use jiff::Timestamp;

use super::ObservedJob;
use crate::{KubeAction, OperatorSettings};

/// What the observe layer found for one BackupSession.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The session's `metadata.resourceVersion`, so status writes are conditional.
    pub resource_version: Option<String>,
    /// The BackupConfiguration `spec.invoker.name` names, if it exists.
    pub configuration: Option<BackupConfiguration>,
    /// Every BackupSession of the same configuration (this one may be among them).
    pub siblings: Vec<BackupSession>,
    /// The session's Job ([`crate::decide::names::backup_job`] index 0), read from the API
    /// (not a possibly stale cache: a Running session without its Job is taken as
    /// interrupted).
    pub job: Option<ObservedJob>,
}

/// What to do about one BackupSession at `now`.
pub fn decide(
    session: &BackupSession,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    todo!()
}
