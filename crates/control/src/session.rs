//! The lifecycle of one session, decided in one place: `reconcile(observed) -> actions`.
//!
//! Whoever runs sessions (the local server, `coffer backup --wait` without a server, an
//! operator) observes a session and its executor (the agent process, a Job), asks
//! [`reconcile`] what to do, and carries the actions out. The decisions — start or skip,
//! the deadline, an executor that is gone, retries, history — are therefore the same on
//! every platform and testable without processes or a clock.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// A session's phase: the api's own type, so that every platform reads the same phases.
pub use coffer_api::phase::SessionPhase as Phase;

/// What the observer knows about the process (or pod) that runs the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// Nothing runs the session (it was not started by this observer).
    None,
    /// It runs.
    Running,
    /// It ended, with this exit status (as text, e.g. `exit status: 1`).
    Exited(String),
    /// It was known only by its pid (adopted after a restart) and that pid is gone.
    Vanished,
}

/// Why a session is marked Failed by its supervisor, and which condition says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCondition {
    /// `DeadlineExceeded`: it ran past its `timeOut`.
    DeadlineExceeded,
    /// `BackupDisrupted` (`SessionInterrupted`): its executor ended without a final status.
    Interrupted,
}

/// The retry settings of the configuration, and where this session stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryState {
    /// `retryConfig` is set.
    pub configured: bool,
    /// Retries left for this session's line (`spec.retryLeft`, else `maxRetry`, else 1).
    pub left: i32,
    pub delay: Duration,
    /// A retry session was already created for this session.
    pub retried: bool,
}

/// One session as observed at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub phase: Phase,
    pub now: Timestamp,
    /// When its executor started (Running), or when it finished (final phases; the base of a
    /// retry's delay).
    pub since: Option<Timestamp>,
    /// The configuration's (or RestoreSession's) `timeOut`.
    pub time_out: Option<Duration>,
    pub executor: Executor,
    /// Why the configuration may not run sessions (NotReady, Invalid), if so.
    pub not_ready: Option<String>,
    /// Other Running sessions of the same configuration, by name.
    pub running_siblings: Vec<String>,
    /// The configuration's name (for messages).
    pub config: String,
    pub retry: RetryState,
    /// `backupHistoryLimit`; `None` for sessions without history (RestoreSessions).
    pub history_limit: Option<Option<i32>>,
}

/// What the observer must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Claim and start the session; record `deadline` as `sessionDeadline`.
    Start { deadline: Option<Timestamp> },
    /// Mark it Skipped with the BackupSkipped condition.
    Skip { reason: String },
    /// Stop its executor and everything it started.
    Kill,
    /// Mark it Failed with `reason` and the condition.
    MarkFailed {
        reason: String,
        condition: FailCondition,
        /// How long it ran, when known.
        ran: Option<Duration>,
    },
    /// Create a retry session at `at` (or record `at` as `nextRetry` while it is ahead).
    Retry { at: Timestamp, retry_left: i32 },
    /// Delete finished sessions of the configuration beyond `keep` (`backupHistoryLimit`).
    TrimHistory { keep: Option<i32> },
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

/// The reason of a session that ran past its timeOut.
pub fn deadline_reason(ran: Duration) -> String {
    format!(
        "the session ran past its timeOut ({}); its processes were stopped",
        coffer_api::duration::format(ran)
    )
}

fn retry_after(o: &Observed, failed_at: Timestamp) -> Option<Action> {
    let r = &o.retry;
    (r.configured && !r.retried && r.left > 0).then(|| Action::Retry {
        at: add(failed_at, r.delay),
        retry_left: r.left - 1,
    })
}

/// The lifecycle of one session: what to do given what is observed.
pub fn reconcile(o: &Observed) -> Vec<Action> {
    let past_deadline = o.executor == Executor::Running
        && match (o.since, o.time_out) {
            (Some(s), Some(t)) => o.now >= add(s, t),
            _ => false,
        };
    match o.phase {
        Phase::Pending => {
            if let Some(why) = &o.not_ready {
                return vec![Action::Skip {
                    reason: why.clone(),
                }];
            }
            if let Some(other) = o.running_siblings.first() {
                return vec![Action::Skip {
                    reason: format!(
                        "the previous session {other} of BackupConfiguration {} is still running",
                        o.config
                    ),
                }];
            }
            vec![Action::Start {
                deadline: o.time_out.map(|t| add(o.now, t)),
            }]
        }
        Phase::Running => {
            let ran = o
                .since
                .and_then(|s| Duration::try_from(o.now.duration_since(s)).ok());
            let failed = |reason: String, condition| {
                let mut a = vec![Action::MarkFailed {
                    reason,
                    condition,
                    ran,
                }];
                a.extend(retry_after(o, o.now));
                a
            };
            match &o.executor {
                Executor::Running => {
                    if !past_deadline {
                        return Vec::new();
                    }
                    let mut a = vec![Action::Kill];
                    a.extend(failed(
                        deadline_reason(ran.unwrap_or_default()),
                        FailCondition::DeadlineExceeded,
                    ));
                    a
                }
                Executor::Exited(status) => failed(
                    format!("the session's process ended ({status}) without finishing it"),
                    FailCondition::Interrupted,
                ),
                Executor::Vanished => failed(
                    "interrupted: the session's process ended without finishing it".into(),
                    FailCondition::Interrupted,
                ),
                // Running elsewhere (another observer's executor): not ours to judge.
                Executor::None => Vec::new(),
            }
        }
        // Invalid and Unknown (a phase this version cannot read) are final and never retried.
        Phase::Failed | Phase::Succeeded | Phase::Skipped | Phase::Invalid | Phase::Unknown => {
            // Its status is final but its executor hangs on past the deadline: stop it.
            let mut a = if past_deadline {
                vec![Action::Kill]
            } else {
                Vec::new()
            };
            if o.phase == Phase::Failed {
                a.extend(retry_after(o, o.since.unwrap_or(o.now)));
            }
            if let Some(keep) = o.history_limit {
                a.push(Action::TrimHistory { keep });
            }
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T00:{s}Z").parse().unwrap()
    }

    fn base(phase: Phase) -> Observed {
        Observed {
            phase,
            now: t("10:00"),
            since: None,
            time_out: None,
            executor: Executor::None,
            not_ready: None,
            running_siblings: Vec::new(),
            config: "a".into(),
            retry: RetryState::default(),
            history_limit: Some(None),
        }
    }

    fn retries(left: i32) -> RetryState {
        RetryState {
            configured: true,
            left,
            delay: Duration::from_secs(30),
            retried: false,
        }
    }

    #[test]
    fn lifecycle_table() {
        let running = |exec: Executor| Observed {
            since: Some(t("09:00")),
            time_out: Some(Duration::from_secs(30)),
            executor: exec,
            ..base(Phase::Running)
        };
        let cases: Vec<(&str, Observed, Vec<Action>)> = vec![
            (
                "pending starts, with its deadline",
                Observed {
                    time_out: Some(Duration::from_secs(60)),
                    ..base(Phase::Pending)
                },
                vec![Action::Start {
                    deadline: Some(t("11:00")),
                }],
            ),
            (
                "pending without timeOut has no deadline",
                base(Phase::Pending),
                vec![Action::Start { deadline: None }],
            ),
            (
                "pending with another running is skipped",
                Observed {
                    running_siblings: vec!["a-2".into()],
                    ..base(Phase::Pending)
                },
                vec![Action::Skip {
                    reason: "the previous session a-2 of BackupConfiguration a is still running"
                        .into(),
                }],
            ),
            (
                "pending on a NotReady configuration is skipped",
                Observed {
                    not_ready: Some("BackupConfiguration default/a is NotReady".into()),
                    ..base(Phase::Pending)
                },
                vec![Action::Skip {
                    reason: "BackupConfiguration default/a is NotReady".into(),
                }],
            ),
            (
                "running within its deadline: nothing",
                Observed {
                    now: t("09:29"),
                    ..running(Executor::Running)
                },
                vec![],
            ),
            (
                "running past its deadline: kill, then Failed(DeadlineExceeded)",
                running(Executor::Running),
                vec![
                    Action::Kill,
                    Action::MarkFailed {
                        reason: deadline_reason(Duration::from_secs(60)),
                        condition: FailCondition::DeadlineExceeded,
                        ran: Some(Duration::from_secs(60)),
                    },
                ],
            ),
            (
                "past its deadline with retries left: also retried",
                Observed {
                    retry: retries(2),
                    ..running(Executor::Running)
                },
                vec![
                    Action::Kill,
                    Action::MarkFailed {
                        reason: deadline_reason(Duration::from_secs(60)),
                        condition: FailCondition::DeadlineExceeded,
                        ran: Some(Duration::from_secs(60)),
                    },
                    Action::Retry {
                        at: t("10:30"),
                        retry_left: 1,
                    },
                ],
            ),
            (
                "executor exited without a final status: interrupted",
                running(Executor::Exited("signal: 9 (SIGKILL)".into())),
                vec![Action::MarkFailed {
                    reason:
                        "the session's process ended (signal: 9 (SIGKILL)) without finishing it"
                            .into(),
                    condition: FailCondition::Interrupted,
                    ran: Some(Duration::from_secs(60)),
                }],
            ),
            (
                "adopted executor vanished, retries left: interrupted and retried",
                Observed {
                    retry: retries(1),
                    ..running(Executor::Vanished)
                },
                vec![
                    Action::MarkFailed {
                        reason: "interrupted: the session's process ended without finishing it"
                            .into(),
                        condition: FailCondition::Interrupted,
                        ran: Some(Duration::from_secs(60)),
                    },
                    Action::Retry {
                        at: t("10:30"),
                        retry_left: 0,
                    },
                ],
            ),
            (
                "running under another observer: not judged here",
                running(Executor::None),
                vec![],
            ),
            (
                "failed with retries left: retry after the delay, then trim",
                Observed {
                    since: Some(t("09:00")),
                    retry: retries(1),
                    ..base(Phase::Failed)
                },
                vec![
                    Action::Retry {
                        at: t("09:30"),
                        retry_left: 0,
                    },
                    Action::TrimHistory { keep: None },
                ],
            ),
            (
                "failed without retries left: trim only",
                Observed {
                    retry: retries(0),
                    ..base(Phase::Failed)
                },
                vec![Action::TrimHistory { keep: None }],
            ),
            (
                "failed and already retried: trim only",
                Observed {
                    retry: RetryState {
                        retried: true,
                        ..retries(1)
                    },
                    history_limit: Some(Some(3)),
                    ..base(Phase::Failed)
                },
                vec![Action::TrimHistory { keep: Some(3) }],
            ),
            (
                "succeeded: trim history",
                Observed {
                    retry: retries(1),
                    history_limit: Some(Some(2)),
                    ..base(Phase::Succeeded)
                },
                vec![Action::TrimHistory { keep: Some(2) }],
            ),
            (
                "final status but the executor hangs past its deadline: kill only",
                Observed {
                    since: Some(t("09:00")),
                    time_out: Some(Duration::from_secs(30)),
                    executor: Executor::Running,
                    ..base(Phase::Succeeded)
                },
                vec![Action::Kill, Action::TrimHistory { keep: None }],
            ),
            (
                "a restore (no history) that succeeded: nothing",
                Observed {
                    history_limit: None,
                    ..base(Phase::Succeeded)
                },
                vec![],
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(reconcile(&o), want, "{name}");
        }
    }

    #[test]
    fn phases_parse() {
        assert_eq!(Phase::parse(""), Phase::Pending);
        assert_eq!(Phase::parse("Running"), Phase::Running);
        assert_eq!(Phase::parse("Exploded"), Phase::Unknown);
        assert!(Phase::parse("Skipped").is_final());
        // A phase that cannot be read is final: never started again, never retried.
        let o = Observed {
            phase: Phase::Unknown,
            retry: RetryState {
                configured: true,
                left: 1,
                ..Default::default()
            },
            history_limit: None,
            ..base(Phase::Unknown)
        };
        assert_eq!(reconcile(&o), vec![]);
    }
}
