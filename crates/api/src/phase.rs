//! Phases, typed: a session's (and its targets' and hosts'), and a BackupConfiguration's — each
//! serialised exactly as Stash spells it. A phase string this version does not know (written
//! by a newer coffer, or by hand) reads as `Unknown` instead of making the whole resource
//! unreadable; it is written back as "Unknown".
//!
//! Session phases are also computed from conditions and targets, as Stash does — with two
//! deliberate differences: a Pushgateway that is down (MetricsPushed=False) does not fail a
//! backup, and neither does retention postponed because the repository was in use
//! (RetentionPolicyApplied=False, reason RetentionPolicyPostponed); the conditions record them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The phase of a BackupSession or RestoreSession, of one of its targets, or of one host.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SessionPhase {
    /// Not started yet (also what an absent phase means).
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Invalid,
    /// A phase this version does not know; final, never retried.
    #[serde(other)]
    Unknown,
}

impl SessionPhase {
    pub const ALL: [SessionPhase; 7] = [
        SessionPhase::Pending,
        SessionPhase::Running,
        SessionPhase::Succeeded,
        SessionPhase::Failed,
        SessionPhase::Skipped,
        SessionPhase::Invalid,
        SessionPhase::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionPhase::Pending => "Pending",
            SessionPhase::Running => "Running",
            SessionPhase::Succeeded => "Succeeded",
            SessionPhase::Failed => "Failed",
            SessionPhase::Skipped => "Skipped",
            SessionPhase::Invalid => "Invalid",
            SessionPhase::Unknown => "Unknown",
        }
    }

    /// A phase from its name: "" is Pending, a name this version does not know is Unknown.
    pub fn parse(s: &str) -> SessionPhase {
        if s.is_empty() {
            return SessionPhase::Pending;
        }
        SessionPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .unwrap_or(SessionPhase::Unknown)
    }

    /// Nothing will change it any more: it ended, was skipped or refused, or cannot be read.
    pub fn is_final(self) -> bool {
        !matches!(self, SessionPhase::Pending | SessionPhase::Running)
    }
}

impl fmt::Display for SessionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A BackupConfiguration's phase (Stash's BackupInvokerPhase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConfigPhase {
    Ready,
    NotReady,
    Invalid,
    /// A phase this version does not know.
    #[serde(other)]
    Unknown,
}

impl ConfigPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigPhase::Ready => "Ready",
            ConfigPhase::NotReady => "NotReady",
            ConfigPhase::Invalid => "Invalid",
            ConfigPhase::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for ConfigPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use crate::{
    backup::{condition as c, BackupSessionStatus, BackupTargetStatus},
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
pub fn target_phase(t: &BackupTargetStatus) -> SessionPhase {
    if is(&t.conditions, c::BACKUP_EXECUTOR_ENSURED, false)
        || is(&t.conditions, c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
        || is(
            &t.conditions,
            c::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED,
            false,
        )
        || is(&t.conditions, c::BACKUP_DISRUPTED, true)
    {
        return SessionPhase::Failed;
    }
    let Some(total) = t.total_hosts else {
        return SessionPhase::Pending;
    };
    let done: Vec<SessionPhase> = t
        .stats
        .iter()
        .filter_map(|h| h.phase)
        .filter(|p| *p == SessionPhase::Succeeded || *p == SessionPhase::Failed)
        .collect();
    if done.len() as i32 >= total && total > 0 {
        if done.contains(&SessionPhase::Failed) {
            SessionPhase::Failed
        } else {
            SessionPhase::Succeeded
        }
    } else {
        SessionPhase::Running
    }
}

/// A BackupSession's phase from its conditions and targets.
pub fn backup_session_phase(st: &BackupSessionStatus) -> SessionPhase {
    let conds = &st.conditions;
    if is(conds, c::BACKUP_SKIPPED, true) {
        return SessionPhase::Skipped;
    }
    if is(conds, c::DEADLINE_EXCEEDED, true)
        || is(conds, c::BACKUP_HISTORY_CLEANED, false)
        || is(conds, "GlobalPreBackupHookSucceeded", false)
        || is(conds, "GlobalPostBackupHookSucceeded", false)
        || is(conds, c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
        || is(conds, c::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)
    {
        return SessionPhase::Failed;
    }
    let phases: Vec<SessionPhase> = st.targets.iter().map(target_phase).collect();
    if phases.is_empty() || phases.iter().all(|p| *p == SessionPhase::Pending) {
        return SessionPhase::Pending;
    }
    if phases
        .iter()
        .all(|p| *p == SessionPhase::Succeeded || *p == SessionPhase::Failed)
    {
        let failed = phases.contains(&SessionPhase::Failed)
            || retention_failed(conds)
            || is(conds, c::REPOSITORY_INTEGRITY_VERIFIED, false)
            || is(conds, c::BACKEND_REPOSITORY_INITIALIZED, false);
        return if failed {
            SessionPhase::Failed
        } else {
            SessionPhase::Succeeded
        };
    }
    SessionPhase::Running
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

    fn target(total: Option<i32>, hosts: &[SessionPhase]) -> BackupTargetStatus {
        BackupTargetStatus {
            total_hosts: total,
            stats: hosts
                .iter()
                .map(|p| HostBackupStats {
                    hostname: "host-0".into(),
                    phase: Some(*p),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn backup_session_phase_table() {
        let ok = SessionPhase::Succeeded;
        let fail = SessionPhase::Failed;
        let run = SessionPhase::Running;
        let cases: Vec<(&str, Vec<Condition>, Vec<BackupTargetStatus>, SessionPhase)> = vec![
            ("no targets yet", vec![], vec![], SessionPhase::Pending),
            (
                "target without hosts",
                vec![],
                vec![target(None, &[])],
                SessionPhase::Pending,
            ),
            (
                "host still running",
                vec![],
                vec![target(Some(1), &[run])],
                SessionPhase::Running,
            ),
            (
                "host succeeded",
                vec![],
                vec![target(Some(1), &[ok])],
                SessionPhase::Succeeded,
            ),
            (
                "host failed",
                vec![],
                vec![target(Some(1), &[fail])],
                SessionPhase::Failed,
            ),
            (
                "skipped wins",
                vec![cond(c::BACKUP_SKIPPED, true)],
                vec![target(Some(1), &[ok])],
                SessionPhase::Skipped,
            ),
            (
                "deadline exceeded",
                vec![cond(c::DEADLINE_EXCEEDED, true)],
                vec![target(Some(1), &[run])],
                SessionPhase::Failed,
            ),
            (
                "integrity not verified",
                vec![cond(c::REPOSITORY_INTEGRITY_VERIFIED, false)],
                vec![target(Some(1), &[ok])],
                SessionPhase::Failed,
            ),
            (
                "retention failed",
                vec![cond(c::RETENTION_POLICY_APPLIED, false)],
                vec![target(Some(1), &[ok])],
                SessionPhase::Failed,
            ),
            (
                "retention postponed while the repository is in use does not fail the backup",
                vec![Condition {
                    reason: c::REASON_RETENTION_POSTPONED.into(),
                    ..cond(c::RETENTION_POLICY_APPLIED, false)
                }],
                vec![target(Some(1), &[ok])],
                SessionPhase::Succeeded,
            ),
            (
                "pre-backup hook failed",
                vec![cond(c::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED, false)],
                vec![target(Some(1), &[])],
                SessionPhase::Failed,
            ),
            (
                "pushgateway down does not fail the backup",
                vec![cond(c::METRICS_PUSHED, false)],
                vec![target(Some(1), &[ok])],
                SessionPhase::Succeeded,
            ),
            (
                "one of two targets failed",
                vec![],
                vec![target(Some(1), &[ok]), target(Some(1), &[fail])],
                SessionPhase::Failed,
            ),
            (
                "one of two targets running",
                vec![],
                vec![target(Some(1), &[ok]), target(Some(1), &[])],
                SessionPhase::Running,
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

    #[test]
    fn phases_read_and_write_as_stash_spells_them() {
        for p in SessionPhase::ALL {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, p.as_str());
            assert_eq!(serde_json::from_value::<SessionPhase>(json).unwrap(), p);
            assert_eq!(SessionPhase::parse(p.as_str()), p);
        }
        assert_eq!(SessionPhase::parse(""), SessionPhase::Pending);
        for p in [
            ConfigPhase::Ready,
            ConfigPhase::NotReady,
            ConfigPhase::Invalid,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn an_unknown_phase_in_stored_data_reads_as_unknown() {
        let st: BackupSessionStatus = serde_json::from_value(serde_json::json!({
            "phase": "Exploded",
            "targets": [{"phase": "Sideways", "stats": [{"hostname": "h", "phase": "Gone"}]}]
        }))
        .unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Unknown));
        assert_eq!(st.targets[0].phase, Some(SessionPhase::Unknown));
        assert_eq!(st.targets[0].stats[0].phase, Some(SessionPhase::Unknown));
        assert!(SessionPhase::Unknown.is_final());
        assert_eq!(SessionPhase::parse("Exploded"), SessionPhase::Unknown);
        let bc: crate::backup::BackupConfigurationStatus =
            serde_json::from_value(serde_json::json!({"phase": "Odd"})).unwrap();
        assert_eq!(bc.phase, Some(ConfigPhase::Unknown));
    }
}
