//! The operator's decisions: one pure function per reconciler, from the resource, what was
//! observed about it and the time, to the [`KubeAction`](crate::KubeAction)s that bring the
//! cluster to what the resource asks for. No IO and no clock here: the observe layer fetches
//! what each `Observed` struct names, the act layer carries the actions out in order (stopping
//! at the first that fails, then deciding again).
//!
//! What the observe layer must supply, per reconciler (each `Observed` documents its fields):
//! the resource's `metadata.resourceVersion` (coffer-api's metadata drops it; status writes
//! are conditional on it, so a decision made on a stale read is refused with 409 and made
//! again), the objects it references, and the Jobs read from the API — [`ObservedJob::from_job`]
//! turns a Job into what the decisions need. Objects the decisions build carry the resource's
//! `metadata.uid` in their owner references, so the resource passed in must have it.
//!
//! The lifecycle decisions themselves (start or skip, deadline, interrupted, retry, history)
//! are coffer-control's, shared with the local platform; these modules only translate them into
//! Kubernetes objects and requests.
//!
//! Tests: `fixtures/<case>/input.yaml` (crate root) holds one decision's inputs; the objects it
//! applies or creates are golden files in `fixtures/<case>/expected/` (valid Kubernetes
//! objects, checked by `kubernetes-validate --strict`), the list of its actions is
//! `fixtures/<case>/actions.yaml` (beside, so that `expected/` holds only objects).
//! `UPDATE_GOLDEN=1 cargo test -p coffer-kubernetes --lib` rewrites them.

pub mod backup_configuration;
pub mod backup_session;
pub mod binlog_archive;
#[cfg(test)]
mod fixtures;
pub mod names;
mod objects;
pub mod restore_session;

pub use objects::{JobState, ObservedJob};
