//! Decisions about BackupConfigurations and their sessions.

use std::time::Duration;

use coffer_api::{
    backup::{
        condition as c, BackupConfiguration, BackupConfigurationStatus, BackupSession, ConfigPhase,
        SessionPhase,
    },
    meta::{set_condition, Condition},
};
use jiff::Timestamp;

use crate::session::{reconcile, Action, Executor, Observed, Phase, RetryState};

/// Whether a new session may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// Skipped, with the reason for the BackupSkipped condition.
    Skip(String),
}

fn session_phase(s: &BackupSession) -> SessionPhase {
    s.status
        .as_ref()
        .and_then(|st| st.phase)
        .unwrap_or_default()
}

fn created(s: &BackupSession) -> Option<Timestamp> {
    s.metadata.creation_timestamp.as_deref()?.parse().ok()
}

/// What a BackupSession and its configuration say about the session, for
/// [`crate::session::reconcile`]; the observer fills in what only it sees (its executor, and
/// when that started). `since` is the session's creation time, the base of a retry's delay.
pub fn observe(
    bc: &BackupConfiguration,
    session: &BackupSession,
    others: &[BackupSession],
    now: Timestamp,
) -> Observed {
    // Stash's rule: a session is skipped when its configuration is not Ready, or when another
    // session of the same configuration is still running (they would fight over the
    // repository lock and the database).
    let not_ready = bc.status.as_ref().and_then(|st| {
        let p = st.phase.filter(|p| *p != ConfigPhase::Ready)?;
        let why = st
            .conditions
            .iter()
            .find(|c| c.is_false())
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        Some(format!(
            "BackupConfiguration {}/{} is {p}{why}",
            bc.metadata.namespace(),
            bc.metadata.name
        ))
    });
    let running_siblings = others
        .iter()
        .filter(|o| {
            o.metadata.name != session.metadata.name
                && o.metadata.namespace() == session.metadata.namespace()
                && o.spec.invoker.name == session.spec.invoker.name
                && session_phase(o) == SessionPhase::Running
        })
        .map(|o| o.metadata.name.clone())
        .collect();
    let retry = match bc.spec.retry_config.as_ref() {
        Some(rc) => RetryState {
            configured: true,
            left: session
                .spec
                .retry_left
                .unwrap_or_else(|| rc.max_retry.unwrap_or(1)),
            delay: rc
                .delay
                .as_deref()
                .and_then(|d| coffer_api::duration::parse(d).ok())
                .unwrap_or(Duration::ZERO),
            retried: session.status.as_ref().is_some_and(|s| s.retried),
        },
        None => RetryState::default(),
    };
    Observed {
        phase: session_phase(session),
        now,
        since: created(session),
        time_out: bc
            .spec
            .time_out
            .as_deref()
            .and_then(|t| coffer_api::duration::parse(t).ok()),
        executor: Executor::None,
        not_ready,
        running_siblings,
        config: session.spec.invoker.name.clone(),
        retry,
        history_limit: Some(bc.spec.backup_history_limit),
    }
}

/// Whether a Pending session may run, by [`crate::session::reconcile`]'s rule.
pub fn admit(
    bc: &BackupConfiguration,
    session: &BackupSession,
    others: &[BackupSession],
) -> Admission {
    let mut o = observe(bc, session, others, Timestamp::now());
    o.phase = Phase::Pending;
    match reconcile(&o).into_iter().next() {
        Some(Action::Skip { reason }) => Admission::Skip(reason),
        _ => Admission::Run,
    }
}

/// When and how a failed session is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPlan {
    pub at: Timestamp,
    pub retry_left: i32,
}

/// A failed session with retries left that has not been retried yet gets a new session
/// after `retryConfig.delay`, with one retry fewer.
pub fn retry(
    bc: &BackupConfiguration,
    failed: &BackupSession,
    failed_at: Timestamp,
) -> Option<RetryPlan> {
    let mut o = observe(bc, failed, &[], failed_at);
    o.since = Some(failed_at);
    reconcile(&o).into_iter().find_map(|a| match a {
        Action::Retry { at, retry_left } => Some(RetryPlan { at, retry_left }),
        _ => None,
    })
}

/// Names of finished sessions to delete so that `limit` (default 1) remain, newest kept; the
/// newest Succeeded session is never deleted (unless the limit is 0 or less), and sessions
/// that have not finished are never touched.
pub fn history_to_delete(sessions: &[BackupSession], limit: Option<i32>) -> Vec<String> {
    let limit = limit.unwrap_or(1);
    let mut finished: Vec<&BackupSession> = sessions
        .iter()
        .filter(|s| session_phase(s).is_final())
        .collect();
    finished.sort_by_key(|s| std::cmp::Reverse((created(s), s.metadata.name.clone())));
    let keep = limit.max(0) as usize;
    let last_good = if limit > 0 {
        finished
            .iter()
            .find(|s| session_phase(s) == SessionPhase::Succeeded)
            .map(|s| s.metadata.name.clone())
    } else {
        None
    };
    finished
        .iter()
        .skip(keep)
        .filter(|s| Some(&s.metadata.name) != last_good.as_ref())
        .map(|s| s.metadata.name.clone())
        .collect()
}

/// What the platform found about a configuration's references.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub repository_found: Result<(), String>,
    pub backend_secret_found: Result<(), String>,
    pub target_found: Result<(), String>,
    pub validation: Result<(), String>,
    /// Whether the trigger CronJob exists (Kubernetes); `None` where sessions are scheduled
    /// without one (the local server) or there is no `spec.schedule`, and then the status has
    /// no CronJobCreated condition.
    pub cron_job_created: Option<Result<(), String>>,
    /// Whether the CronJob that runs `spec.verification.schedule` exists (Kubernetes); `None`
    /// where verifications are scheduled without one (the local server) or there is no
    /// verification schedule, and then the status has no VerificationCronJobCreated condition.
    pub verification_cron_job_created: Option<Result<(), String>>,
}

/// Stash's BackupConfiguration phase: Invalid when validation failed, NotReady while the
/// repository, its secret or the target is missing (or, on Kubernetes, the trigger CronJob or
/// the verification CronJob is not created), Ready otherwise — each with the condition that
/// explains it. A CronJob's condition is removed when there is no CronJob to report on.
pub fn readiness(
    r: &Readiness,
    previous: Option<&BackupConfigurationStatus>,
    now: &str,
) -> BackupConfigurationStatus {
    let mut conds: Vec<Condition> = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    // None: the condition reports on nothing here, so it is removed.
    let mut put = |t: &str, res: Option<&Result<(), String>>, ok_reason: &str, bad: &str| match res
    {
        Some(Ok(())) => set_condition(&mut conds, t, true, ok_reason, "", now),
        Some(Err(m)) => set_condition(&mut conds, t, false, bad, m, now),
        None => conds.retain(|x| x.type_ != t),
    };
    put(
        c::VALIDATION_PASSED,
        Some(&r.validation),
        "ResourceValidationPassed",
        "ResourceValidationFailed",
    );
    put(
        c::REPOSITORY_FOUND,
        Some(&r.repository_found),
        "RepositoryAvailable",
        "RepositoryNotAvailable",
    );
    put(
        c::BACKEND_SECRET_FOUND,
        Some(&r.backend_secret_found),
        "BackendSecretAvailable",
        "BackendSecretNotAvailable",
    );
    put(
        c::BACKUP_TARGET_FOUND,
        Some(&r.target_found),
        "TargetAvailable",
        "TargetNotAvailable",
    );
    for (t, cron) in [
        (c::CRON_JOB_CREATED, &r.cron_job_created),
        (
            c::VERIFICATION_CRON_JOB_CREATED,
            &r.verification_cron_job_created,
        ),
    ] {
        put(
            t,
            cron.as_ref(),
            "CronJobCreationSucceeded",
            "CronJobCreationFailed",
        );
    }
    let phase = if r.validation.is_err() {
        ConfigPhase::Invalid
    } else if r.repository_found.is_err()
        || r.backend_secret_found.is_err()
        || r.target_found.is_err()
        || r.cron_job_created.as_ref().is_some_and(|c| c.is_err())
        || r.verification_cron_job_created
            .as_ref()
            .is_some_and(|c| c.is_err())
    {
        ConfigPhase::NotReady
    } else {
        ConfigPhase::Ready
    };
    BackupConfigurationStatus {
        observed_generation: previous.and_then(|p| p.observed_generation),
        conditions: conds,
        phase: Some(phase),
        // What verification recorded is kept as it is.
        ..previous.cloned().unwrap_or_default()
    }
}

/// After a successful backup: the count of backups since the last verification, and whether
/// a verification is due now (spec.verification.everyBackups reached). A schedule-driven
/// verification does not count backups.
pub fn verification_after_backup(
    v: Option<&coffer_api::backup::VerificationSpec>,
    since: Option<u32>,
) -> Option<(u32, bool)> {
    let every = v?.every_backups.filter(|n| *n > 0)?;
    let count = since.unwrap_or(0).saturating_add(1);
    Some((count, count >= every))
}

/// The tag a successful restore verification leaves on the snapshot it verified.
pub const VERIFIED_TAG: &str = "verified";
/// With the time that verification started (RFC 3339, UTC), as in status.lastVerifiedTime.
pub const VERIFIED_AT_TAG: &str = "verified=";

/// A snapshot's tags after a verification of it: on success `verified` and `verified=<time>`
/// replacing an earlier time; on failure neither (a snapshot that no longer restores must not
/// keep the word of an earlier verification). Other tags are kept as they are.
pub fn tags_after_verification(tags: &mut Vec<String>, succeeded: bool, time: &str) {
    tags.retain(|t| t != VERIFIED_TAG && !t.starts_with(VERIFIED_AT_TAG));
    if succeeded {
        tags.push(VERIFIED_TAG.to_string());
        tags.push(format!("{VERIFIED_AT_TAG}{time}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_sets_or_clears_the_verified_tags() {
        let t = "2024-05-06T07:08:09Z";
        // (tags before, succeeded) -> tags after
        let cases: [(&[&str], bool, &[&str]); 5] = [
            (
                &["gtid=0-1-5"],
                true,
                &["gtid=0-1-5", "verified", "verified=2024-05-06T07:08:09Z"],
            ),
            (
                &["verified", "verified=2020-01-01T00:00:00Z", "app=a"],
                true,
                &["app=a", "verified", "verified=2024-05-06T07:08:09Z"],
            ),
            (
                &["verified", "verified=2020-01-01T00:00:00Z", "app=a"],
                false,
                &["app=a"],
            ),
            (&["app=a"], false, &["app=a"]),
            // A user's tag that only starts with the word is not ours.
            (&["verifiedby=ops"], false, &["verifiedby=ops"]),
        ];
        for (before, ok, want) in cases {
            let mut tags: Vec<String> = before.iter().map(|s| s.to_string()).collect();
            tags_after_verification(&mut tags, ok, t);
            tags.sort();
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(tags, want, "{before:?} {ok}");
        }
    }

    #[test]
    fn verification_is_due_after_every_n_backups() {
        use coffer_api::backup::VerificationSpec;
        let every = |n| VerificationSpec {
            every_backups: Some(n),
            ..Default::default()
        };
        let cron = VerificationSpec {
            schedule: Some("@daily".into()),
            ..Default::default()
        };
        // (spec, backups since the last verification) -> (count now, due)
        let cases = [
            (None, None, None),
            (Some(cron), Some(4), None),
            (Some(every(1)), None, Some((1, true))),
            (Some(every(3)), None, Some((1, false))),
            (Some(every(3)), Some(1), Some((2, false))),
            (Some(every(3)), Some(2), Some((3, true))),
            // A count above N (N lowered since) verifies at once.
            (Some(every(2)), Some(7), Some((8, true))),
        ];
        for (spec, since, want) in cases {
            assert_eq!(
                verification_after_backup(spec.as_ref(), since),
                want,
                "{spec:?} {since:?}"
            );
        }
    }
    use coffer_api::{
        backup::{BackupSessionSpec, BackupSessionStatus, Invoker, RetryConfig},
        meta::ObjectMeta,
    };

    fn bc(name: &str) -> BackupConfiguration {
        BackupConfiguration {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn bs(name: &str, invoker: &str, phase: Option<SessionPhase>, created: &str) -> BackupSession {
        BackupSession {
            api_version: "stash.appscode.com/v1beta1".into(),
            kind: "BackupSession".into(),
            metadata: ObjectMeta {
                name: name.into(),
                creation_timestamp: Some(created.into()),
                ..Default::default()
            },
            spec: BackupSessionSpec {
                invoker: Invoker {
                    kind: "BackupConfiguration".into(),
                    name: invoker.into(),
                    ..Default::default()
                },
                retry_left: None,
            },
            status: phase.map(|p| BackupSessionStatus {
                phase: Some(p),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn admission_table() {
        let new = bs("a-3", "a", None, "2026-01-01T00:03:00Z");
        let cases: Vec<(&str, Vec<BackupSession>, bool)> = vec![
            ("nothing else", vec![], true),
            (
                "previous finished",
                vec![bs(
                    "a-1",
                    "a",
                    Some(SessionPhase::Succeeded),
                    "2026-01-01T00:01:00Z",
                )],
                true,
            ),
            (
                "previous running",
                vec![bs(
                    "a-2",
                    "a",
                    Some(SessionPhase::Running),
                    "2026-01-01T00:02:00Z",
                )],
                false,
            ),
            (
                "other config running",
                vec![bs(
                    "b-2",
                    "b",
                    Some(SessionPhase::Running),
                    "2026-01-01T00:02:00Z",
                )],
                true,
            ),
            (
                "itself running",
                vec![bs(
                    "a-3",
                    "a",
                    Some(SessionPhase::Running),
                    "2026-01-01T00:03:00Z",
                )],
                true,
            ),
        ];
        for (name, others, run) in cases {
            let got = admit(&bc("a"), &new, &others);
            assert_eq!(got == Admission::Run, run, "{name}: {got:?}");
            if let Admission::Skip(why) = got {
                assert!(
                    why.contains("a-2 of BackupConfiguration a is still running"),
                    "{why}"
                );
            }
        }
        let mut not_ready = bc("a");
        not_ready.status = Some(BackupConfigurationStatus {
            phase: Some(ConfigPhase::NotReady),
            conditions: vec![Condition {
                type_: c::REPOSITORY_FOUND.into(),
                status: "False".into(),
                message: "Repository default/r not found".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        match admit(&not_ready, &new, &[]) {
            Admission::Skip(w) => assert!(
                w.contains("NotReady: Repository default/r not found"),
                "{w}"
            ),
            Admission::Run => panic!("a NotReady configuration must not run"),
        }
    }

    #[test]
    fn retry_table() {
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut c = bc("a");
        c.spec.retry_config = Some(RetryConfig {
            max_retry: Some(2),
            delay: Some("30s".into()),
        });
        let failed = bs(
            "a-1",
            "a",
            Some(SessionPhase::Failed),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            retry(&c, &failed, t),
            Some(RetryPlan {
                at: "2026-01-01T00:00:30Z".parse().unwrap(),
                retry_left: 1
            })
        );
        let mut last = failed.clone();
        last.spec.retry_left = Some(0);
        assert_eq!(retry(&c, &last, t), None, "no retries left");
        let mut done = failed.clone();
        done.status.as_mut().unwrap().retried = true;
        assert_eq!(retry(&c, &done, t), None, "already retried");
        let ok = bs(
            "a-1",
            "a",
            Some(SessionPhase::Succeeded),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(retry(&c, &ok, t), None, "only failures are retried");
        assert_eq!(
            retry(&bc("a"), &failed, t),
            None,
            "no retryConfig, no retry"
        );
    }

    #[test]
    fn history_table() {
        let s = |n: &str, p: Option<SessionPhase>, m: u32| {
            bs(n, "a", p, &format!("2026-01-01T00:{m:02}:00Z"))
        };
        let sessions = vec![
            s("a-1", Some(SessionPhase::Succeeded), 1),
            s("a-2", Some(SessionPhase::Failed), 2),
            s("a-3", Some(SessionPhase::Failed), 3),
            s("a-4", Some(SessionPhase::Running), 4),
            s("a-5", Some(SessionPhase::Skipped), 5),
        ];
        let mut del = history_to_delete(&sessions, None);
        del.sort();
        // limit 1 keeps the newest finished (a-5) and the last Succeeded (a-1); a-4 runs.
        assert_eq!(del, vec!["a-2", "a-3"]);
        let mut del = history_to_delete(&sessions, Some(3));
        del.sort();
        assert_eq!(
            del,
            Vec::<String>::new(),
            "a-5, a-3, a-2 kept, a-1 is the last good one"
        );
        let mut del = history_to_delete(&sessions, Some(0));
        del.sort();
        assert_eq!(del, vec!["a-1", "a-2", "a-3", "a-5"]);
    }

    #[test]
    fn readiness_table() {
        let ok = Readiness {
            repository_found: Ok(()),
            backend_secret_found: Ok(()),
            target_found: Ok(()),
            validation: Ok(()),
            cron_job_created: None,
            verification_cron_job_created: None,
        };
        assert_eq!(readiness(&ok, None, "t").phase, Some(ConfigPhase::Ready));
        let missing = Readiness {
            repository_found: Err("Repository default/r not found".into()),
            ..ok.clone()
        };
        let st = readiness(&missing, None, "t");
        assert_eq!(st.phase, Some(ConfigPhase::NotReady));
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == c::REPOSITORY_FOUND)
            .unwrap();
        assert!(c.is_false() && c.message.contains("not found"));
        let invalid = Readiness {
            validation: Err("spec.schedule: bad".into()),
            ..missing
        };
        assert_eq!(
            readiness(&invalid, None, "t").phase,
            Some(ConfigPhase::Invalid)
        );
    }

    #[test]
    fn cron_job_created_table() {
        let ok = Readiness {
            repository_found: Ok(()),
            backend_secret_found: Ok(()),
            target_found: Ok(()),
            validation: Ok(()),
            cron_job_created: None,
            verification_cron_job_created: None,
        };
        let not_created = Err("waiting for the Repository".to_string());
        // (case, readiness, phase, CronJobCreated status or None when absent)
        let cases: Vec<(&str, Readiness, ConfigPhase, Option<&str>)> = vec![
            (
                "no CronJob on this platform",
                ok.clone(),
                ConfigPhase::Ready,
                None,
            ),
            (
                "CronJob created",
                Readiness {
                    cron_job_created: Some(Ok(())),
                    ..ok.clone()
                },
                ConfigPhase::Ready,
                Some("True"),
            ),
            (
                "CronJob not created",
                Readiness {
                    cron_job_created: Some(not_created.clone()),
                    ..ok.clone()
                },
                ConfigPhase::NotReady,
                Some("False"),
            ),
            (
                "invalid wins over a missing CronJob",
                Readiness {
                    validation: Err("spec.schedule: bad".into()),
                    cron_job_created: Some(not_created),
                    ..ok.clone()
                },
                ConfigPhase::Invalid,
                Some("False"),
            ),
        ];
        for (name, r, phase, cron) in cases {
            let st = readiness(&r, None, "t");
            assert_eq!(st.phase, Some(phase), "{name}");
            let got = st
                .conditions
                .iter()
                .find(|x| x.type_ == c::CRON_JOB_CREATED)
                .map(|x| x.status.as_str());
            assert_eq!(got, cron, "{name}");
        }
    }

    #[test]
    fn verification_cron_job_created_table() {
        let ok = Readiness {
            repository_found: Ok(()),
            backend_secret_found: Ok(()),
            target_found: Ok(()),
            validation: Ok(()),
            cron_job_created: Some(Ok(())),
            verification_cron_job_created: None,
        };
        let created = |st: &BackupConfigurationStatus, t: &str| {
            st.conditions
                .iter()
                .find(|x| x.type_ == t)
                .map(|x| x.status.clone())
        };
        let not_created = Err("runtimeSettings.pod is not valid".to_string());
        // (case, readiness, phase, VerificationCronJobCreated status or None when absent)
        let cases: Vec<(&str, Readiness, ConfigPhase, Option<&str>)> = vec![
            (
                "no verification schedule",
                ok.clone(),
                ConfigPhase::Ready,
                None,
            ),
            (
                "verification CronJob created",
                Readiness {
                    verification_cron_job_created: Some(Ok(())),
                    ..ok.clone()
                },
                ConfigPhase::Ready,
                Some("True"),
            ),
            (
                "verification CronJob not created",
                Readiness {
                    verification_cron_job_created: Some(not_created.clone()),
                    ..ok.clone()
                },
                ConfigPhase::NotReady,
                Some("False"),
            ),
            (
                "a verification schedule without a backup schedule",
                Readiness {
                    cron_job_created: None,
                    verification_cron_job_created: Some(Ok(())),
                    ..ok.clone()
                },
                ConfigPhase::Ready,
                Some("True"),
            ),
            (
                "invalid wins",
                Readiness {
                    validation: Err("spec.verification.schedule: bad".into()),
                    verification_cron_job_created: Some(not_created),
                    ..ok.clone()
                },
                ConfigPhase::Invalid,
                Some("False"),
            ),
        ];
        for (name, r, phase, want) in cases {
            let st = readiness(&r, None, "t");
            assert_eq!(st.phase, Some(phase), "{name}");
            let got = created(&st, c::VERIFICATION_CRON_JOB_CREATED);
            assert_eq!(got.as_deref(), want, "{name}");
        }
        // A schedule removed: the condition goes with the CronJob, the other one stays.
        let before = readiness(
            &Readiness {
                verification_cron_job_created: Some(Ok(())),
                ..ok.clone()
            },
            None,
            "t",
        );
        let after = readiness(&ok, Some(&before), "t2");
        assert_eq!(created(&after, c::VERIFICATION_CRON_JOB_CREATED), None);
        assert_eq!(
            created(&after, c::CRON_JOB_CREATED).as_deref(),
            Some("True")
        );
        assert_eq!(after.phase, Some(ConfigPhase::Ready));
    }
}
