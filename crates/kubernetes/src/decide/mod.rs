//! The operator's decisions: one pure function per reconciler, from the resource, what was
//! observed about it and the time, to the [`KubeAction`](crate::KubeAction)s that bring the
//! cluster to what the resource asks for. No IO and no clock here: the observe layer fetches
//! what each `Observed` struct names, the act layer carries the actions out in order (stopping
//! at the first that fails, then deciding again).
//!
//! The lifecycle decisions themselves (start or skip, deadline, interrupted, retry, history)
//! are coffer-control's, shared with the local platform; these modules only translate them into
//! Kubernetes objects and requests.

pub mod backup_configuration;
pub mod backup_session;
#[cfg(test)]
mod fixtures;
pub mod names;
mod objects;
pub mod restore_session;

pub use objects::{JobState, ObservedJob};
