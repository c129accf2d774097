//! Binlog capture for point-in-time recovery (issue #12): coffer reads a MariaDB or MySQL
//! server's binlog as a replica does (the server's files are never read, and coffer never
//! runs `FLUSH BINARY LOGS`), positioned by GTID, verifies every event's CRC32 and stores the
//! events byte-exact in segments that are binlog files of their own, each with its index
//! ([`SegmentMeta`]).
//!
//! - [`stream`]: the replication connection (GTID positioning, heartbeats, a server_id that
//!   cannot silently collide) and the classification of what can end it ([`CaptureError`]).
//! - [`checks`]: the flavour, the checks before a stream, a MySQL dump's GTID set, and the
//!   classification of the dump thread's errors: pure, table-tested.
//! - [`event`]: an event's exact bytes and the MariaDB and MySQL fields the index needs.
//! - [`segment`]: cutting the stream into segments of whole transactions.
//!
//! [`SegmentMeta`]: coffer_api::gtid::SegmentMeta

use coffer_api::gtid::{Flavour, GtidState};

pub mod checks;
pub mod event;
pub mod replay;
pub mod segment;
pub mod stream;

#[cfg(test)]
mod tests;

pub use segment::{SegmentError, SegmentPolicy, SegmentSink, SegmentWriter, SourceServer};
pub use stream::{capture, open, BinlogSource, CaptureError, StreamOptions};

/// Refuses a MySQL GTID state in a step that speaks MariaDB's GTIDs only (`what` names
/// it): a typed error instead of a statement the server would reject or misread.
pub fn require_mariadb(what: &str, state: &GtidState) -> Result<(), crate::DbError> {
    match state.flavour() {
        Some(Flavour::MySql) => Err(crate::DbError::NotMariaDbGtid {
            what: what.to_string(),
            state: state.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The lowest server_id coffer registers with. Archives take ids in
/// `ARCHIVE_SERVER_ID_BASE..=u32::MAX - 1`, derived from the archive's namespace and name:
/// servers and ordinary replicas are numbered from 1 upward by people and operators, so the
/// upper half of the range is free in practice; two archives colliding there is about one
/// chance in a billion per pair, and a collision is detected before streaming anyway
/// ([`stream::open`] refuses an id the server already lists in `SHOW SLAVE HOSTS`), because a
/// duplicate id makes the server kill the other connection (pitr.md §1).
pub const ARCHIVE_SERVER_ID_BASE: u32 = 0x8000_0000;

/// The server_id the archive `namespace/name` registers with: stable across restarts (so a
/// restarted archive replaces its own stale connection only after the server dropped it,
/// never another archive's), in `ARCHIVE_SERVER_ID_BASE..u32::MAX`.
pub fn archive_server_id(namespace: &str, name: &str) -> u32 {
    // FNV-1a: stable across Rust versions and platforms, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("coffer-binlog-archive/{namespace}/{name}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let span = u64::from(u32::MAX - ARCHIVE_SERVER_ID_BASE); // excludes u32::MAX
    ARCHIVE_SERVER_ID_BASE + (h % span) as u32
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn archive_server_ids_are_stable_high_and_distinct() {
        let a = archive_server_id("prod", "orders");
        assert_eq!(a, archive_server_id("prod", "orders"));
        assert_ne!(a, archive_server_id("prod", "order"));
        assert_ne!(a, archive_server_id("pro", "dorders"));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let id = archive_server_id("ns", &format!("archive-{i}"));
            assert!((ARCHIVE_SERVER_ID_BASE..u32::MAX).contains(&id));
            seen.insert(id);
        }
        assert_eq!(seen.len(), 2000);
    }
}
