//! The binlog archive (issue #12): how segments live in a repository ([`store`]) and the
//! runner that streams a server's binlog into them ([`run`]).
//!
//! Contract shared by the archive runner (which writes segments) and the point-in-time
//! restore (which lists and reads them): everything goes through [`store::SegmentStore`].

pub mod bases;
mod catalog;
mod maintain;
pub mod run;
pub mod source;
pub mod store;
pub mod track;

pub use maintain::MaintenanceHook;
pub use run::{run_archive, ArchiveError, RunEnd, RunOptions};
pub use store::{Compacted, RepoSink, SegmentStore, SegmentSummary};
