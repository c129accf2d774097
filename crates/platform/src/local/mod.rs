//! The local platform: one machine, resources in an embedded SQLite store.

pub mod archives;
pub mod dashboard;
pub mod lifecycle;
pub mod runner;
pub mod server;
pub mod store;

pub use store::{ApplyOutcome, Store, StoreError};
