//! The base backups in an archive's repository: snapshots whose `gtid=` tag records the GTID
//! state they hold (every backup path writes it). The runner needs them twice: an empty
//! archive starts at the newest one's state (so a point-in-time restore from it is possible
//! at once), and retention keeps what they need.

use coffer_api::gtid::GtidState;
use coffer_control::pitr::BaseBackup;
use coffer_repo::SnapshotInfo;

/// The tag that records a snapshot's GTID state.
pub const GTID_TAG: &str = "gtid=";

/// The snapshots that are base backups, newest first. A `gtid=` tag that does not parse is
/// skipped with a warning (it cannot anchor a replay).
pub fn base_backups(snapshots: &[SnapshotInfo]) -> Vec<BaseBackup> {
    let mut out: Vec<BaseBackup> = snapshots
        .iter()
        // The archive's own snapshots are never base backups.
        .filter(|s| !s.tags.iter().any(|t| t == coffer_repo::ARCHIVE_TAG))
        .filter_map(|s| {
            let tag = s.tags.iter().find_map(|t| t.strip_prefix(GTID_TAG))?;
            match tag.parse::<GtidState>() {
                // An empty state is a server that had not binlogged a transaction yet.
                Ok(state) => Some(BaseBackup {
                    snapshot: s.id.clone(),
                    time: s.unix_time,
                    state,
                }),
                Err(e) => {
                    tracing::warn!(
                        "snapshot {}: tag `{GTID_TAG}{tag}`: {e}; ignored",
                        s.short_id
                    );
                    None
                }
            }
        })
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.time));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, t: i64, tags: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            short_id: id.into(),
            unix_time: t,
            time: String::new(),
            hostname: "host-0".into(),
            paths: Vec::new(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            total_bytes: 0,
            data_added: 0,
            data_added_packed: 0,
            files_new: 0,
            files_changed: 0,
            files_unmodified: 0,
            total_files: 0,
            duration_seconds: 0.0,
            description: None,
            original: None,
        }
    }

    #[test]
    fn only_snapshots_with_a_gtid_state_are_bases_newest_first() {
        let b = base_backups(&[
            snap("a", 10, &["coffer", "gtid=0-1-5"]),
            snap("b", 30, &["gtid=0-1-9,100-21-3"]),
            snap("c", 20, &["coffer"]),
            snap("d", 40, &["gtid=not-a-gtid"]),
            snap("e", 50, &["binlog=bin.000001:4", "gtid="]),
            snap("f", 60, &[coffer_repo::ARCHIVE_TAG, "gtid=0-1-20"]),
        ]);
        let ids: Vec<&str> = b.iter().map(|b| b.snapshot.as_str()).collect();
        assert_eq!(ids, ["e", "b", "a"]);
        assert!(b[0].state.0.is_empty());
        assert_eq!(b[1].state.to_string(), "0-1-9,100-21-3");
    }
}
