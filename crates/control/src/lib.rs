//! The decisions of coffer's controllers, written once as plain functions over resource
//! snapshots, so that every platform (the local server, Kubernetes) makes the same ones and
//! they can be tested without a database, a repository or a clock.

pub mod backup;
pub mod pitr;
pub mod schedule;
pub mod session;

pub use backup::{
    admit, history_to_delete, observe, readiness, retry, Admission, Readiness, RetryPlan,
};
pub use schedule::Schedule;
pub use session::{reconcile, Action, Executor, FailCondition, Observed, Phase};
