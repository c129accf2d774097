//! Session phases computed from conditions and targets, as Stash does — with two deliberate
//! differences: a Pushgateway that is down (MetricsPushed=False) does not fail a backup, and
//! neither does retention postponed because the repository was in use
//! (RetentionPolicyApplied=False, reason RetentionPolicyPostponed); the conditions record them.

use crate::{
    backup::{condition as c, phase, BackupSessionStatus, BackupTargetStatus},
    meta::{get_condition, Condition},
};

fn is(conds: &[Condition], t: &str, status: bool) -> bool {
    get_condition(conds, t).is_some_and(|x| if status { x.is_true() } else { x.is_false() })
}

/// Retention failed; postponed because the repository was in use is not a failure.
fn retention_failed(conds: &[Condition]) -> bool {
    get_condition(conds, c::RETENTION_POLICY_APPLIED)
        .is_some_and(|x| x.is_false() && x.reason != c::REASON_RETENTION_POSTPONED)
}

/// The phase of one target from its host stats.
pub fn target_phase(t: &BackupTargetStatus) -> &'static str {
    if is(&t.conditions, c::BACKUP_EXECUTOR_ENSURED, false)
        || is(&t.conditions, c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
        || is(
            &t.conditions,
            c::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED,
            false,
        )
        || is(&t.conditions, c::BACKUP_DISRUPTED, true)
    {
        return phase::FAILED;
    }
    let Some(total) = t.total_hosts else {
        return phase::PENDING;
    };
    let done: Vec<&str> = t
        .stats
        .iter()
        .filter_map(|h| h.phase.as_deref())
        .filter(|p| *p == phase::SUCCEEDED || *p == phase::FAILED)
        .collect();
    if done.len() as i32 >= total && total > 0 {
        if done.contains(&phase::FAILED) {
            phase::FAILED
        } else {
            phase::SUCCEEDED
        }
    } else {
        phase::RUNNING
    }
}

/// A BackupSession's phase from its conditions and targets.
pub fn backup_session_phase(st: &BackupSessionStatus) -> &'static str {
    let conds = &st.conditions;
    if is(conds, c::BACKUP_SKIPPED, true) {
        return phase::SKIPPED;
    }
    if is(conds, c::DEADLINE_EXCEEDED, true)
        || is(conds, c::BACKUP_HISTORY_CLEANED, false)
        || is(conds, "GlobalPreBackupHookSucceeded", false)
        || is(conds, "GlobalPostBackupHookSucceeded", false)
        || is(conds, c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
        || is(conds, c::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
    {
        return phase::FAILED;
    }
    let phases: Vec<&str> = st.targets.iter().map(target_phase).collect();
    if phases.is_empty() || phases.iter().all(|p| *p == phase::PENDING) {
        return phase::PENDING;
    }
    if phases
        .iter()
        .all(|p| *p == phase::SUCCEEDED || *p == phase::FAILED)
    {
        let failed = phases.contains(&phase::FAILED)
            || retention_failed(conds)
            || is(conds, c::REPOSITORY_INTEGRITY_VERIFIED, false)
            || is(conds, c::BACKEND_REPOSITORY_INITIALIZED, false);
        return if failed {
            phase::FAILED
        } else {
            phase::SUCCEEDED
        };
    }
    phase::RUNNING
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::HostBackupStats;

    fn cond(t: &str, ok: bool) -> Condition {
        Condition {
            type_: t.into(),
            status: if ok { "True" } else { "False" }.into(),
            ..Default::default()
        }
    }

    fn target(total: Option<i32>, hosts: &[&str]) -> BackupTargetStatus {
        BackupTargetStatus {
            total_hosts: total,
            stats: hosts
                .iter()
                .map(|p| HostBackupStats {
                    hostname: "host-0".into(),
                    phase: Some(p.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn backup_session_phase_table() {
        let ok = phase::SUCCEEDED;
        let fail = phase::FAILED;
        let run = phase::RUNNING;
        let cases: Vec<(&str, Vec<Condition>, Vec<BackupTargetStatus>, &str)> = vec![
            ("no targets yet", vec![], vec![], phase::PENDING),
            (
                "target without hosts",
                vec![],
                vec![target(None, &[])],
                phase::PENDING,
            ),
            (
                "host still running",
                vec![],
                vec![target(Some(1), &[run])],
                phase::RUNNING,
            ),
            (
                "host succeeded",
                vec![],
                vec![target(Some(1), &[ok])],
                phase::SUCCEEDED,
            ),
            (
                "host failed",
                vec![],
                vec![target(Some(1), &[fail])],
                phase::FAILED,
            ),
            (
                "skipped wins",
                vec![cond(c::BACKUP_SKIPPED, true)],
                vec![target(Some(1), &[ok])],
                phase::SKIPPED,
            ),
            (
                "deadline exceeded",
                vec![cond(c::DEADLINE_EXCEEDED, true)],
                vec![target(Some(1), &[run])],
                phase::FAILED,
            ),
            (
                "integrity not verified",
                vec![cond(c::REPOSITORY_INTEGRITY_VERIFIED, false)],
                vec![target(Some(1), &[ok])],
                phase::FAILED,
            ),
            (
                "retention failed",
                vec![cond(c::RETENTION_POLICY_APPLIED, false)],
                vec![target(Some(1), &[ok])],
                phase::FAILED,
            ),
            (
                "retention postponed while the repository is in use does not fail the backup",
                vec![Condition {
                    reason: c::REASON_RETENTION_POSTPONED.into(),
                    ..cond(c::RETENTION_POLICY_APPLIED, false)
                }],
                vec![target(Some(1), &[ok])],
                phase::SUCCEEDED,
            ),
            (
                "pre-backup hook failed",
                vec![cond(c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)],
                vec![target(Some(1), &[])],
                phase::FAILED,
            ),
            (
                "pushgateway down does not fail the backup",
                vec![cond(c::METRICS_PUSHED, false)],
                vec![target(Some(1), &[ok])],
                phase::SUCCEEDED,
            ),
            (
                "one of two targets failed",
                vec![],
                vec![target(Some(1), &[ok]), target(Some(1), &[fail])],
                phase::FAILED,
            ),
            (
                "one of two targets running",
                vec![],
                vec![target(Some(1), &[ok]), target(Some(1), &[])],
                phase::RUNNING,
            ),
        ];
        for (name, conditions, targets, want) in cases {
            let st = BackupSessionStatus {
                conditions,
                targets,
                ..Default::default()
            };
            assert_eq!(backup_session_phase(&st), want, "{name}");
        }
    }
}
