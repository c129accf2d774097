//! Carrying out on the local platform what `coffer_control::reconcile` decides for a session:
//! one supervision step of an agent, failing a session with its condition, skipping one. The
//! server and `coffer backup|restore --wait` without a server both use these, so a session
//! ends the same way whoever ran it.

use std::{path::Path, time::Duration};

use coffer_api::{
    backup::{condition as cond, BackupConfiguration, BackupSession, SessionPhase},
    meta::set_condition,
    Kind, Resource,
};
use coffer_control::{reconcile, Action, Executor, FailCondition, Observed, Phase};
use jiff::Timestamp;

use super::{
    runner::{self, Agent},
    store::Store,
};

fn now_str() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A session's phase as stored (Pending while it has none).
pub fn stored_phase(r: &Resource) -> Phase {
    match r {
        Resource::BackupSession(b) => b.status.as_ref().and_then(|s| s.phase),
        Resource::RestoreSession(x) => x.status.as_ref().and_then(|s| s.phase),
        _ => None,
    }
    .unwrap_or_default()
}

/// The BackupConfiguration that invoked a session, if it exists.
pub fn config_of(store: &Store, bs: &BackupSession) -> Option<BackupConfiguration> {
    match store.get(
        Kind::BackupConfiguration,
        bs.metadata.namespace(),
        &bs.spec.invoker.name,
    ) {
        Ok(Some(Resource::BackupConfiguration(bc))) => Some(bc),
        _ => None,
    }
}

/// Removes locks whose holder is gone, so that no repository stays locked by a dead run.
pub fn release_stale_locks(store: &Store, ns: &str, name: &str) {
    let Ok(Some(Resource::Repository(repo))) = store.get(Kind::Repository, ns, name) else {
        return;
    };
    let res =
        coffer_engine::resolve::repo_access(store, &repo, coffer_api::repository::LocalMount::Host)
            .map_err(|e| e.to_string())
            .and_then(|a| coffer_repo::Repo::open(a.store, &a.password).map_err(|e| e.to_string()))
            .and_then(|r| r.unlock(false).map_err(|e| e.to_string()));
    match res {
        Ok(removed) => {
            for l in removed {
                tracing::info!("Repository {ns}/{name}: removed stale {l}");
            }
        }
        Err(e) => tracing::warn!("Repository {ns}/{name}: cannot release stale locks: {e}"),
    }
}

/// Pushes a failed session's metrics (its executor could not).
fn push_failure_metrics(store: &Store, pushgateway: Option<&str>, bs: &mut BackupSession) {
    let Some(url) = pushgateway else {
        return;
    };
    let Some(bc) = config_of(store, bs) else {
        return;
    };
    let mut m = coffer_engine::metrics::Metrics::new();
    coffer_engine::metrics::backup_session(&mut m, &bc, bs, None, None);
    let job = coffer_engine::metrics::job_name(
        "BackupConfiguration",
        bc.metadata.namespace(),
        &bc.metadata.name,
    );
    let (ok, reason, msg) = coffer_engine::metrics::push_outcome(url, &job, &m);
    set_condition(
        &mut bs.status_mut().conditions,
        cond::METRICS_PUSHED,
        ok,
        reason,
        &msg,
        &now_str(),
    );
}

/// Marks a session Failed with `reason` and the condition that says why (DeadlineExceeded or
/// BackupDisrupted), fails its unfinished targets, and releases the repository locks its dead
/// executor left.
pub fn mark_failed(
    store: &Store,
    pushgateway: Option<&str>,
    r: Resource,
    reason: &str,
    condition: FailCondition,
    ran: Option<Duration>,
) {
    tracing::warn!("{}: {reason}", r.display_name());
    let before = r.clone();
    let repo = match &r {
        Resource::BackupSession(bs) => config_of(store, bs).map(|bc| {
            (
                bc.spec.repository.clone(),
                bc.metadata.namespace().to_string(),
            )
        }),
        Resource::RestoreSession(rs) => Some((
            rs.spec.repository.clone(),
            rs.metadata.namespace().to_string(),
        )),
        _ => None,
    };
    let (ctype, creason) = match condition {
        FailCondition::DeadlineExceeded => (cond::DEADLINE_EXCEEDED, "SessionTimedOut"),
        FailCondition::Interrupted => (cond::BACKUP_DISRUPTED, "SessionInterrupted"),
    };
    let now = now_str();
    let updated = match r {
        Resource::BackupSession(mut bs) => {
            let st = bs.status_mut();
            st.phase = Some(SessionPhase::Failed);
            st.error = Some(reason.into());
            set_condition(&mut st.conditions, ctype, true, creason, reason, &now);
            if let Some(ran) = ran {
                st.session_duration = Some(coffer_api::duration::format(Duration::from_secs(
                    ran.as_secs(),
                )));
            }
            for t in st.targets.iter_mut() {
                t.phase = Some(SessionPhase::Failed);
                for h in t.stats.iter_mut() {
                    if h.phase != Some(SessionPhase::Succeeded) {
                        h.phase = Some(SessionPhase::Failed);
                        h.error = Some(reason.into());
                    }
                }
            }
            if condition == FailCondition::DeadlineExceeded {
                push_failure_metrics(store, pushgateway, &mut bs);
            }
            Resource::BackupSession(bs)
        }
        Resource::RestoreSession(mut rs) => {
            let st = rs.status_mut();
            st.phase = Some(SessionPhase::Failed);
            st.error = Some(reason.into());
            Resource::RestoreSession(rs)
        }
        other => other,
    };
    // Locks first: once the session reads Failed, its repository is usable again.
    if let Some((r, ns)) = repo {
        release_stale_locks(store, r.namespace.as_deref().unwrap_or(&ns), &r.name);
    }
    write_status(store, &before, &updated);
}

/// Writes this process's change to a status (`before` as it was read, `after` as this process
/// wants it): only the fields it changed, retried on conflict, logged if it still fails.
pub fn write_status(store: &Store, before: &Resource, after: &Resource) -> bool {
    coffer_engine::patch::write_change(store, before, after).is_some()
}

/// Claims a Pending session (Pending -> Running, atomically: only one claimer wins) and records
/// its `sessionDeadline`. False when someone else claimed it first, or when the store could
/// not be asked (said in the log; the caller looks again on its next pass).
pub fn claim(store: &Store, kind: Kind, ns: &str, name: &str, deadline: Option<Timestamp>) -> bool {
    match store.claim_session(kind, ns, name) {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            tracing::warn!("claiming {kind}/{ns}/{name}: {e}; it stays Pending for now");
            return false;
        }
    }
    if let Some(d) = deadline {
        coffer_engine::update_status(store, Kind::BackupSession, ns, name, &mut |r| {
            if let Resource::BackupSession(bs) = r {
                bs.status_mut().session_deadline =
                    Some(d.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        });
    }
    true
}

/// Marks a BackupSession Skipped, with the BackupSkipped condition saying why.
pub fn mark_skipped(store: &Store, mut s: BackupSession, why: &str) -> BackupSession {
    tracing::info!(
        "BackupSession {}/{} skipped: {why}",
        s.metadata.namespace(),
        s.metadata.name
    );
    let before = Resource::BackupSession(s.clone());
    let st = s.status_mut();
    set_condition(
        &mut st.conditions,
        cond::BACKUP_SKIPPED,
        true,
        "SkippedBackup",
        why,
        &now_str(),
    );
    st.phase = Some(SessionPhase::Skipped);
    st.error = Some(why.into());
    st.session_duration = Some("0s".into());
    write_status(store, &before, &Resource::BackupSession(s.clone()));
    s
}

/// One supervision step of an agent this process started: observes the agent and its
/// session, and carries out the deadline and interruption decisions of `reconcile` (killing
/// the agent's whole process session past its timeOut). Retries and history are left to
/// whoever observes the configuration's sessions (the server's per-configuration pass).
/// Returns true once the agent is done with: it ended or was stopped.
pub fn supervise_agent(store: &Store, pushgateway: Option<&str>, agent: &mut Agent) -> bool {
    let executor = match agent.child.try_wait() {
        Ok(Some(status)) => Executor::Exited(status.to_string()),
        Ok(None) => Executor::Running,
        Err(e) => {
            tracing::warn!(
                "cannot check the agent of {} {}: {e}",
                agent.kind,
                agent.name
            );
            return false;
        }
    };
    let r = store
        .get(agent.kind, &agent.namespace, &agent.name)
        .ok()
        .flatten();
    let now = Timestamp::now();
    let ran = agent.started.elapsed();
    let observed = Observed {
        // A session deleted under its agent counts as finished: only its deadline matters.
        phase: r.as_ref().map(stored_phase).unwrap_or(Phase::Failed),
        now,
        since: now
            .checked_sub(jiff::SignedDuration::try_from(ran).unwrap_or_default())
            .ok(),
        time_out: agent
            .deadline
            .map(|d| d.saturating_duration_since(agent.started)),
        executor: executor.clone(),
        not_ready: None,
        running_siblings: Vec::new(),
        config: String::new(),
        retry: Default::default(),
        history_limit: None,
    };
    let mut done = matches!(executor, Executor::Exited(_));
    let mut r = r;
    for action in reconcile(&observed) {
        match action {
            Action::Kill => {
                agent.kill_group();
                done = true;
            }
            Action::MarkFailed {
                reason,
                condition,
                ran,
            } => {
                let Some(r) = r.take() else { continue };
                let reason = if condition == FailCondition::Interrupted {
                    format!(
                        "{reason}; see `coffer logs {} {}`",
                        agent.kind.as_str().to_ascii_lowercase(),
                        agent.name
                    )
                } else {
                    reason
                };
                mark_failed(store, pushgateway, r, &reason, condition, ran);
            }
            Action::Start { .. }
            | Action::Skip { .. }
            | Action::Retry { .. }
            | Action::TrimHistory { .. } => {}
        }
    }
    done
}

/// Fails a session whose agent is known to be gone (its pid), if it still reads Running.
pub fn fail_vanished(store: &Store, pushgateway: Option<&str>, r: Resource) {
    let observed = Observed {
        phase: stored_phase(&r),
        now: Timestamp::now(),
        since: None,
        time_out: None,
        executor: Executor::Vanished,
        not_ready: None,
        running_siblings: Vec::new(),
        config: String::new(),
        retry: Default::default(),
        history_limit: None,
    };
    for action in reconcile(&observed) {
        if let Action::MarkFailed {
            reason,
            condition,
            ran,
        } = action
        {
            mark_failed(store, pushgateway, r.clone(), &reason, condition, ran);
        }
    }
}

/// Deletes the finished sessions of a configuration beyond `keep` (`backupHistoryLimit`) and
/// their logs; a failed session waiting for its retry stays until the retry exists.
pub fn trim_history(store: &Store, home: &Path, bc: &BackupConfiguration, keep: Option<i32>) {
    let ns = bc.metadata.namespace();
    let mine: Vec<BackupSession> = store
        .list(Kind::BackupSession, Some(ns))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r {
            Resource::BackupSession(b) if b.spec.invoker.name == bc.metadata.name => Some(b),
            _ => None,
        })
        .collect();
    for name in coffer_control::history_to_delete(&mine, keep) {
        let waiting = mine.iter().any(|s| {
            s.metadata.name == name && coffer_control::retry(bc, s, Timestamp::now()).is_some()
        });
        if waiting {
            continue;
        }
        if store
            .delete(Kind::BackupSession, ns, &name)
            .unwrap_or(false)
        {
            tracing::info!("BackupSession {ns}/{name} removed (backupHistoryLimit)");
            let _ = std::fs::remove_file(runner::log_path(home, Kind::BackupSession, ns, &name));
        }
    }
}

/// A retry `reconcile` asked for: due at `at`, with `retry_left` retries left after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDue {
    pub at: Timestamp,
    pub retry_left: i32,
}

/// After a session this process ran reached a final phase: what `reconcile` asks of a
/// finished session — trimming its configuration's history now, and the retry it is due, if
/// any, for the caller to carry out when it is due ([`retry_session`]).
pub fn finished(store: &Store, home: &Path, kind: Kind, ns: &str, name: &str) -> Option<RetryDue> {
    if kind != Kind::BackupSession {
        return None;
    }
    let Ok(Some(Resource::BackupSession(bs))) = store.get(kind, ns, name) else {
        return None;
    };
    let bc = config_of(store, &bs)?;
    let observed = coffer_control::observe(&bc, &bs, &[], Timestamp::now());
    let mut due = None;
    for action in reconcile(&observed) {
        match action {
            Action::TrimHistory { keep } => trim_history(store, home, &bc, keep),
            Action::Retry { at, retry_left } => due = Some(RetryDue { at, retry_left }),
            _ => {}
        }
    }
    due
}

/// What [`retry_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Retried {
    /// Not due yet: recorded as the failed session's `nextRetry`.
    Later(Timestamp),
    /// The retry session, created by this process.
    Created(Box<BackupSession>),
    /// Someone else retried it first, or it could not be done (logged).
    NotDone,
}

/// Carries out `reconcile`'s Retry of a failed BackupSession: before `due.at`, records it as
/// `nextRetry`; from then on, marks the session retried and creates its retry (one retry
/// fewer). Marking comes first, so that two observers (a server and `--wait`) never both
/// create one.
pub fn retry_session(store: &Store, ns: &str, name: &str, due: RetryDue) -> Retried {
    let Ok(Some(Resource::BackupSession(failed))) = store.get(Kind::BackupSession, ns, name) else {
        return Retried::NotDone;
    };
    let Some(bc) = config_of(store, &failed) else {
        return Retried::NotDone;
    };
    let at = due.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mark = |retried: bool| {
        let mut taken = false;
        let written =
            coffer_engine::update_status(store, Kind::BackupSession, ns, name, &mut |r| {
                if let Resource::BackupSession(b) = r {
                    let st = b.status_mut();
                    taken = retried && !st.retried;
                    st.next_retry = Some(at.clone());
                    st.retried = retried;
                }
            });
        written.is_some() && taken
    };
    if due.at > Timestamp::now() {
        if failed.status.as_ref().and_then(|s| s.next_retry.as_deref()) != Some(at.as_str()) {
            mark(false);
        }
        return Retried::Later(due.at);
    }
    if !mark(true) {
        return Retried::NotDone;
    }
    match super::server::create_backup_session(store, &bc, Some(due.retry_left)) {
        Ok(new) => {
            tracing::info!(
                "BackupSession {ns}/{name} failed; retrying as {} ({} retries left after it)",
                new.metadata.name,
                due.retry_left
            );
            Retried::Created(Box::new(new))
        }
        Err(e) => {
            tracing::error!("BackupSession {ns}/{name}: cannot create its retry session: {e}");
            mark(false);
            Retried::NotDone
        }
    }
}

/// What [`start_pending`] did with a Pending session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Claimed by this process, its deadline recorded: run it.
    Claimed,
    /// Not admitted (its configuration is not Ready, or a session of it is running): Skipped.
    Skipped,
    /// Someone else claimed it first, or it is gone.
    Lost,
}

/// Admits or skips a Pending session as the server does (by `reconcile`) and claims it, for
/// running it in this process.
pub fn start_pending(store: &Store, kind: Kind, ns: &str, name: &str) -> Start {
    let Ok(Some(Resource::BackupSession(bs))) = store.get(kind, ns, name) else {
        // RestoreSessions are not admitted, only claimed (as the server does).
        return match kind != Kind::BackupSession && claim(store, kind, ns, name, None) {
            true => Start::Claimed,
            false => Start::Lost,
        };
    };
    let Some(bc) = config_of(store, &bs) else {
        // The agent fails it, saying that the configuration is missing.
        return match claim(store, kind, ns, name, None) {
            true => Start::Claimed,
            false => Start::Lost,
        };
    };
    let list = || -> Vec<BackupSession> {
        store
            .list(Kind::BackupSession, Some(ns))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| match r {
                Resource::BackupSession(b) => Some(b),
                _ => None,
            })
            .collect()
    };
    // Without a server nobody recovers a session whose runner was killed (its agent dies
    // with it): observed as vanished, it fails as interrupted instead of blocking every later
    // session of its configuration as "still running". Such an agent may take a moment to
    // die (its runner was killed just now), so a sibling still running is looked at again
    // for a short while before this session is skipped for it.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let observed = loop {
        for s in list() {
            let Some(st) = s.status.as_ref() else {
                continue;
            };
            let (Some(pid), Some(SessionPhase::Running)) = (st.agent_pid, st.phase) else {
                continue;
            };
            if !(runner::alive(pid) && runner::process_is_agent(pid)) {
                // Not an agent any more, but perhaps still exiting: its locks are released
                // once it is gone (a pid reused by another process is not waited on long).
                runner::wait_gone(pid, Duration::from_secs(5));
                fail_vanished(store, None, Resource::BackupSession(s));
            }
        }
        let observed = coffer_control::observe(&bc, &bs, &list(), Timestamp::now());
        if observed.running_siblings.is_empty() || std::time::Instant::now() >= until {
            break observed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match reconcile(&observed).into_iter().next() {
        Some(Action::Skip { reason }) => {
            mark_skipped(store, bs, &reason);
            Start::Skipped
        }
        Some(Action::Start { deadline }) if claim(store, kind, ns, name, deadline) => {
            Start::Claimed
        }
        _ => Start::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_failed_session(home: &Path) -> Store {
        let store = Store::open(home).unwrap();
        let docs = coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {name: b, namespace: demo}\n\
             spec: {repository: {name: r}, task: {name: mariadb-backup-10.5.8}, \
             target: {ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: db}}, \
             retentionPolicy: {name: keep, keepLast: 5, prune: true}, retryConfig: {maxRetry: 2, delay: 1m}}\n\
             ---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\n\
             metadata: {name: b-1, namespace: demo}\n\
             spec: {invoker: {apiGroup: stash.appscode.com, kind: BackupConfiguration, name: b}}\n\
             status: {phase: Failed}\n",
            "t.yaml",
        )
        .unwrap();
        store.apply(docs[0].clone()).unwrap();
        store.create(docs[1].clone()).unwrap();
        store
    }

    fn session(store: &Store, name: &str) -> BackupSession {
        match store.get(Kind::BackupSession, "demo", name) {
            Ok(Some(Resource::BackupSession(b))) => b,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_failed_session_is_retried_once_when_due() {
        let home = tempfile::tempdir().unwrap();
        let store = store_with_failed_session(home.path());
        let due = finished(&store, home.path(), Kind::BackupSession, "demo", "b-1")
            .expect("a retry is due");
        assert_eq!(due.retry_left, 1);
        // Not due yet: recorded as nextRetry, nothing created.
        assert_eq!(
            retry_session(&store, "demo", "b-1", due),
            Retried::Later(due.at)
        );
        let st = session(&store, "b-1").status.unwrap();
        assert!(!st.retried);
        assert_eq!(
            st.next_retry,
            Some(due.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        );
        // Due: one retry session, with one retry fewer, and the failed one marked retried.
        let now = RetryDue {
            at: Timestamp::now(),
            ..due
        };
        let Retried::Created(new) = retry_session(&store, "demo", "b-1", now) else {
            panic!("no retry created")
        };
        assert_eq!(new.spec.retry_left, Some(1));
        assert!(session(&store, "b-1").status.unwrap().retried);
        // A second observer finds it retried and creates nothing.
        assert_eq!(retry_session(&store, "demo", "b-1", now), Retried::NotDone);
        assert_eq!(
            store.list(Kind::BackupSession, Some("demo")).unwrap().len(),
            2
        );
        assert_eq!(
            finished(&store, home.path(), Kind::BackupSession, "demo", "b-1"),
            None
        );
    }
}
