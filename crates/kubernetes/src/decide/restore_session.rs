//! RestoreSession → one Job (standalone), or PVCs and one Job per replica (cluster).
//!
//! Todo: doc
use coffer_api::RestoreSession;
use jiff::Timestamp;

use super::ObservedJob;
use crate::{KubeAction, OperatorSettings};

/// What the observe layer found for one RestoreSession.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The session's `metadata.resourceVersion`, so status writes are conditional.
    pub resource_version: Option<String>,
    /// The session's Jobs ([`crate::decide::names::restore_job`]), read from the API; those
    /// not found are absent.
    pub jobs: Vec<ObservedJob>,
}

/// What to do about one RestoreSession at `now`.
pub fn decide(
    rs: &RestoreSession,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    todo!()
}
