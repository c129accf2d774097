//! What the decide modules share: how a Job is observed, and the pieces every object the
//! operator creates has (owner references, labels, the pod's security settings, the agent's
//! container contract).

use jiff::Timestamp;

/// Where a Job stands, from its `status` (`active`, `succeeded`, `failed` and the `Failed`
/// condition's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// A pod runs (or is about to): `status.active > 0`, or nothing has finished yet.
    Active,
    /// `status.succeeded > 0`.
    Succeeded,
    /// `status.failed > 0` or the `Failed` condition; `reason` is the condition's reason
    /// (`BackoffLimitExceeded`, `DeadlineExceeded`, …) or a description of the pod's end.
    Failed { reason: String },
}

/// One Job, as the observe layer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedJob {
    pub name: String,
    pub state: JobState,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
}
