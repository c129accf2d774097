//! The binlog archive (issue #12): how segments live in a repository ([`store`]).
//!
//! Contract shared by the archive runner (which writes segments) and the point-in-time
//! restore (which lists and reads them): everything goes through [`store::SegmentStore`].

mod catalog;
pub mod store;

pub use store::{Compacted, RepoSink, SegmentStore, SegmentSummary};
