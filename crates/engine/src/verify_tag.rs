//! The verified snapshot's tags: `verified` and `verified=<time>` after a verification that
//! succeeded, neither after one that failed (see
//! coffer_control::backup::tags_after_verification). A snapshot file cannot change, so a new
//! tag makes a new snapshot with a new id (as `restic tag` does); the verification's status
//! names the new id.

use std::time::Duration;

use coffer_api::{backup::VerificationStatus, meta::set_condition};
use coffer_control::backup::{tags_after_verification, VERIFIED_AT_TAG, VERIFIED_TAG};
use coffer_repo::{LockError, Repo, RepoLock, SnapshotInfo};

use crate::clock;

pub const SNAPSHOT_TAGGED: &str = "SnapshotTagged";

/// How often, and how far apart, the exclusive lock that rewriting a snapshot needs is tried
/// while others use the repository (a binlog archive's puts take it for moments).
const LOCK_TRIES: u32 = 20;
const LOCK_PAUSE: Duration = Duration::from_secs(3);

/// Tags snapshot `snap` after its verification (`ok`: it succeeded) and records the outcome
/// on `st` (a condition; `st.snapshot` the new id). Never fails the verification: the data
/// was checked either way, only the mark on the snapshot may be missing, and the condition
/// says why.
pub fn record(
    repo: &Repo,
    lock: &RepoLock,
    snap: &SnapshotInfo,
    ok: bool,
    st: &mut VerificationStatus,
) {
    let time = st.time.clone().unwrap_or_else(clock::now);
    let edit = |t: &mut Vec<String>| tags_after_verification(t, ok, &time);
    let mut after = snap.tags.clone();
    edit(&mut after);
    after.sort();
    let mut before = snap.tags.clone();
    before.sort();
    if before == after {
        return;
    }
    let cond = |st: &mut VerificationStatus, done: bool, reason: &str, msg: &str| {
        set_condition(
            &mut st.conditions,
            SNAPSHOT_TAGGED,
            done,
            reason,
            msg,
            &clock::now(),
        );
    };
    if let Err(holder) = upgrade(lock) {
        let msg = format!(
            "snapshot {} not {}: {holder}",
            snap.short_id,
            if ok {
                "tagged verified"
            } else {
                "cleared of its verified tags"
            }
        );
        tracing::warn!("{msg}");
        cond(st, false, "RepositoryInUse", &msg);
        return;
    }
    match repo.retag(lock, &snap.id, &edit) {
        Ok(new) => {
            let msg = if ok {
                format!(
                    "tagged `{VERIFIED_TAG}` and `{VERIFIED_AT_TAG}{time}`: snapshot {} is now {}",
                    snap.short_id, new.short_id
                )
            } else {
                format!(
                    "the `{VERIFIED_TAG}` tags of an earlier verification removed: snapshot {} \
                     is now {}",
                    snap.short_id, new.short_id
                )
            };
            tracing::info!("{msg}");
            st.snapshot = Some(new.id);
            cond(st, ok, if ok { "Tagged" } else { "Untagged" }, &msg);
        }
        Err(e) => {
            let msg = format!("cannot change the tags of snapshot {}: {e}", snap.short_id);
            tracing::warn!("{msg}");
            cond(st, false, "TagFailed", &msg);
        }
    }
}

/// The shared lock the verification holds, made exclusive; the holder of the lock in the way
/// when it never became free.
fn upgrade(lock: &RepoLock) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match lock.upgrade() {
            Ok(()) => return Ok(()),
            Err(LockError::Locked { holder, .. }) => {
                tries += 1;
                if tries >= LOCK_TRIES {
                    return Err(format!(
                        "the repository stayed in use ({holder}); the next verification tags \
                         the snapshot it verifies"
                    ));
                }
                std::thread::sleep(LOCK_PAUSE);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
