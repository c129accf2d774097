//! BackupSession → the backup Job, and the session's lifecycle.
//!
//! The lifecycle is [`coffer_control::session::reconcile`]'s, fed with what is observed here:
//! the Job stands for the session's executor (no Job: none, or — for a session already
//! Running, whose Job this operator created before marking it Running — gone; active:
//! running; failed or succeeded while the session is not final: ended without finishing it).
//! Its actions become requests:
//!
//! - **Start**: apply the Job [`names::backup_job`] (index 0) with its ServiceAccount and
//!   RoleBinding ([`names::backup_job_service_account`], bound to
//!   `settings.backup_job_cluster_role`, owned by the configuration so that every session
//!   shares them; none when `runtimeSettings.pod.serviceAccountName` names the user's own),
//!   then the status: phase Running, `sessionDeadline`, one target (`totalHosts: 1`) with
//!   BackupExecutorEnsured. A `runtimeSettings` that cannot be used fails the session
//!   (BackupExecutorEnsured=False) instead.
//! - **Skip**: condition BackupSkipped, phase Skipped.
//! - **Kill**: delete the Job (its pod goes with it).
//! - **MarkFailed**: DeadlineExceeded=True, or BackupDisrupted=True on the target; `error`
//!   and `sessionDuration` set. A Job the kubelet stopped at `activeDeadlineSeconds` counts as
//!   past the deadline.
//! - **Retry**: once the delay has passed, create a BackupSession (`generateName: <bc>-`,
//!   Stash's invoker and target labels, owned by the configuration, `spec.retryLeft`) and mark
//!   this one `retried`; before that, record `nextRetry` and look again then.
//! - **TrimHistory**: delete the sessions [`coffer_control::history_to_delete`] names.
//!
//! Phases are computed from conditions and targets by coffer-api's
//! [`coffer_api::phase::backup_session_phase`]. Every phase change and failure records an
//! Event. The status is written once per decision, conditionally on the resourceVersion, and
//! only when it changed.
//!
//! The Job's container is the contract with `coffer agent` (see [`agent_container_args`] and
//! the module `objects`): image and pull policy from the settings, command `["coffer"]`, args
//! `["agent", "backupsession", "<session>"]`, env `COFFER_PLATFORM=kubernetes`,
//! `COFFER_NAMESPACE` / `COFFER_POD_NAME` / `COFFER_POD_IP` (downward API),
//! `COFFER_PUSHGATEWAY` when configured, `TMPDIR=/tmp` (the emptyDir `stash-tmp-dir`), a
//! non-root user (65534 unless `runtimeSettings` says otherwise), a read-only root filesystem,
//! no privilege escalation, no capabilities; `backoffLimit: 0`, `restartPolicy: Never`,
//! `activeDeadlineSeconds` from `timeOut`. A Repository with a `local` backend has its volume
//! source mounted at `mountPath` (volume `stash-local-repository`); one without a volume source
//! fails the session (BackupExecutorEnsured=False). No Secret value is in the Job: the agent reads
//! Secrets through the API with its ServiceAccount.

use std::time::Duration;

use coffer_api::{
    backup::{condition as c, BackupSessionStatus, BackupTargetStatus},
    meta::set_condition,
    BackupConfiguration, BackupSession, Kind, Repository,
};
use coffer_control::{
    history_to_delete,
    session::{reconcile, Action, Executor, FailCondition, Phase},
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use serde_json::{json, Value};

use super::{names, objects, JobState, ObservedJob};
use crate::{KubeAction, OperatorSettings};

/// The backup Job's container name.
pub const AGENT_CONTAINER: &str = "coffer-agent";

/// `coffer agent backupsession <session>`: what the backup Job's container runs (after the
/// command `coffer`).
pub fn agent_container_args(session: &str) -> Vec<String> {
    vec!["agent".into(), "backupsession".into(), session.into()]
}

/// What the observe layer found for one BackupSession.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The session's `metadata.resourceVersion`, so status writes are conditional.
    pub resource_version: Option<String>,
    /// The BackupConfiguration `spec.invoker.name` names, if it exists.
    pub configuration: Option<BackupConfiguration>,
    /// The Repository the configuration's `spec.repository` names, if it exists: a local
    /// backend's volume is mounted into the Job's pod.
    pub repository: Option<Repository>,
    /// Every BackupSession of the same configuration (this one may be among them).
    pub siblings: Vec<BackupSession>,
    /// The session's Job ([`names::backup_job`] index 0), read from the API (not a possibly
    /// stale cache: a Running session without its Job is taken as interrupted).
    pub job: Option<ObservedJob>,
}

fn current_phase(s: &BackupSession) -> Phase {
    s.status
        .as_ref()
        .and_then(|st| st.phase)
        .unwrap_or(Phase::Pending)
}

pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

/// Time until `t`, at least a second (a requeue of zero would spin).
pub(crate) fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

/// The Job as the session's executor.
pub(crate) fn executor(phase: Phase, job: Option<&ObservedJob>) -> Executor {
    match job {
        None if phase == Phase::Running => Executor::Vanished,
        None => Executor::None,
        Some(j) => match &j.state {
            JobState::Active => Executor::Running,
            JobState::Failed { reason } => {
                Executor::Exited(format!("Job {} failed: {reason}", j.name))
            }
            JobState::Succeeded => Executor::Exited(format!("Job {} succeeded", j.name)),
        },
    }
}

/// The kubelet stopped the Job at `activeDeadlineSeconds`: the session ran past its timeOut.
pub(crate) fn job_hit_deadline(job: Option<&ObservedJob>) -> bool {
    matches!(job, Some(ObservedJob { state: JobState::Failed { reason }, .. }) if reason == "DeadlineExceeded")
}

/// The backup Job's ServiceAccount, RoleBinding and Job, in apply order.
fn job_objects(
    session: &BackupSession,
    bc: &BackupConfiguration,
    repository: Option<&Repository>,
    settings: &OperatorSettings,
    time_out: Option<Duration>,
) -> Result<Vec<Value>, String> {
    let ns = session.metadata.namespace();
    let labels = objects::labels(Kind::BackupConfiguration, &bc.metadata.name);
    let rs = bc.spec.runtime_settings.as_ref();
    let (sa, mut out) = objects::pod_service_account(
        rs,
        &names::backup_job_service_account(&bc.metadata.name, 0),
        ns,
        &labels,
        objects::owner(Kind::BackupConfiguration, &bc.metadata),
        &settings.backup_job_cluster_role,
    );
    let mut plan = objects::agent_pod_plan(
        AGENT_CONTAINER,
        agent_container_args(&session.metadata.name),
        sa,
        rs,
        labels.clone(),
        settings,
    );
    plan.mount_repository(repository)?;
    let template = objects::pod_template(plan, settings)?;
    let job = Job {
        metadata: objects::metadata(
            &names::backup_job(&session.metadata.name, 0),
            ns,
            &labels,
            objects::owner(Kind::BackupSession, &session.metadata),
        ),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: time_out.map(|t| t.as_secs().max(1) as i64),
            template,
            ..Default::default()
        }),
        status: None,
    };
    out.push(objects::value(&job));
    Ok(out)
}

/// A new BackupSession of `bc` — the trigger CronJob's and a retry's alike, as Stash's
/// `NewSession` makes it: `generateName: <bc>-` (the server picks the name), the labels of
/// every object the operator makes ([`objects::labels`]: managed-by, invoker type and name)
/// plus Stash's target labels (so sessions can be listed by database), a controller owner
/// reference to the configuration, and `retryLeft`: `retry_left` for a retry's session, else
/// the configuration's `retryConfig.maxRetry` (1 when unset) when it has a retryConfig.
///
/// The owner reference does not set `blockOwnerDeletion`: with the
/// OwnerReferencesPermissionEnforcement admission plugin that would need `update` on
/// `backupconfigurations/finalizers`, which the trigger's ServiceAccount does not have (and a
/// session need not hold up its configuration's deletion).
pub fn new_session(bc: &BackupConfiguration, retry_left: Option<i32>) -> Value {
    let meta = &bc.metadata;
    let mut labels = objects::labels(Kind::BackupConfiguration, &meta.name);
    if let Some(t) = &bc.spec.target {
        let target_ns = t.ref_.namespace.as_deref().unwrap_or(meta.namespace());
        for (k, v) in [
            ("stash.appscode.com/target-kind", t.ref_.kind.as_str()),
            ("stash.appscode.com/target-name", t.ref_.name.as_str()),
            ("stash.appscode.com/target-namespace", target_ns),
        ] {
            labels.insert(k.into(), v.into());
        }
    }
    let mut owner = objects::owner(Kind::BackupConfiguration, meta);
    owner.block_owner_deletion = None;
    let retry_left = retry_left.or_else(|| {
        bc.spec
            .retry_config
            .as_ref()
            .map(|r| r.max_retry.unwrap_or(1))
    });
    let mut spec = json!({
        "invoker": {
            "apiGroup": "stash.appscode.com",
            "kind": Kind::BackupConfiguration.as_str(),
            "name": meta.name,
        },
    });
    if let Some(r) = retry_left {
        spec["retryLeft"] = json!(r);
    }
    json!({
        "apiVersion": Kind::BackupSession.api_version(),
        "kind": Kind::BackupSession.as_str(),
        "metadata": {
            "generateName": format!("{}-", meta.name),
            "namespace": meta.namespace(),
            "labels": labels,
            "ownerReferences": [objects::value(&owner)],
        },
        "spec": spec,
    })
}

/// The session's one target, created when missing (Stash: one per configuration target).
fn target<'a>(
    st: &'a mut BackupSessionStatus,
    bc: &BackupConfiguration,
) -> &'a mut BackupTargetStatus {
    if st.targets.is_empty() {
        st.targets.push(BackupTargetStatus {
            ref_: bc
                .spec
                .target
                .as_ref()
                .map(|t| t.ref_.clone())
                .unwrap_or_default(),
            total_hosts: Some(1),
            ..Default::default()
        });
    }
    &mut st.targets[0]
}

/// What to do about one BackupSession at `now`.
pub fn decide(
    session: &BackupSession,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    let meta = &session.metadata;
    let ns = meta.namespace();
    let now_s = objects::rfc3339(now);
    let old = session.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let phase_now = current_phase(session);
    let job = observed.job.as_ref();
    let ev = |warning: bool, reason: &str, message: String| {
        objects::event(Kind::BackupSession, meta, warning, reason, message)
    };

    let Some(bc) = &observed.configuration else {
        // Owned by its configuration: when that is gone the session goes too. One that has
        // not started must not start.
        if phase_now != Phase::Pending {
            return Vec::new();
        }
        let reason = format!(
            "BackupConfiguration {ns}/{} was not found",
            session.spec.invoker.name
        );
        set_condition(
            &mut st.conditions,
            c::BACKUP_SKIPPED,
            true,
            "SkippedTakingNewBackup",
            &reason,
            &now_s,
        );
        st.phase = Some(coffer_api::phase::backup_session_phase(&st));
        return vec![
            KubeAction::PatchStatus {
                kind: Kind::BackupSession,
                namespace: ns.into(),
                name: meta.name.clone(),
                resource_version: observed.resource_version.clone(),
                status: serde_json::to_value(&st).expect("a status serializes to JSON"),
            },
            ev(true, "BackupSessionSkipped", reason),
        ];
    };

    let mut o = coffer_control::observe(bc, session, &observed.siblings, now);
    o.executor = executor(phase_now, job);
    if phase_now == Phase::Running {
        if let Some(start) = job.and_then(|j| j.start_time) {
            o.since = Some(start);
        }
    } else if phase_now.is_final() {
        // Finished at creation + sessionDuration: the base of a retry's delay.
        let ran = old
            .session_duration
            .as_deref()
            .and_then(|d| coffer_api::duration::parse(d).ok());
        o.since = match (o.since, ran) {
            (Some(s), Some(d)) => Some(add(s, d)),
            (s, _) => s,
        };
    }

    let mut first = Vec::new(); // Deletes and Applies, before the status.
    let mut after = Vec::new(); // Creates, trims, Events, requeues, after it.
    let mut recompute_phase = false;

    let actions = reconcile(&o);
    // Running within its deadline: nothing to do until then.
    if actions.is_empty() && phase_now == Phase::Running && o.executor == Executor::Running {
        if let (Some(s), Some(t)) = (o.since, o.time_out) {
            after.push(KubeAction::RequeueAfter(until(now, add(s, t))));
        }
    }
    for action in actions {
        match action {
            Action::Start { deadline } => match job_objects(
                session,
                bc,
                observed.repository.as_ref(),
                settings,
                o.time_out,
            ) {
                Ok(objs) => {
                    first.extend(objs.into_iter().map(KubeAction::Apply));
                    st.session_deadline = deadline.map(objects::rfc3339);
                    let t = target(&mut st, bc);
                    set_condition(
                        &mut t.conditions,
                        c::BACKUP_EXECUTOR_ENSURED,
                        true,
                        "SuccessfullyEnsuredBackupExecutor",
                        "",
                        &now_s,
                    );
                    recompute_phase = true;
                    after.push(ev(
                        false,
                        "BackupSessionRunning",
                        format!(
                            "started Job {ns}/{} for BackupConfiguration {}",
                            names::backup_job(&meta.name, 0),
                            bc.metadata.name
                        ),
                    ));
                    if let Some(t) = o.time_out {
                        after.push(KubeAction::RequeueAfter(t.max(Duration::from_secs(1))));
                    }
                }
                Err(e) => {
                    let t = target(&mut st, bc);
                    set_condition(
                        &mut t.conditions,
                        c::BACKUP_EXECUTOR_ENSURED,
                        false,
                        "FailedToEnsureBackupExecutor",
                        &e,
                        &now_s,
                    );
                    st.error = Some(e.clone());
                    recompute_phase = true;
                    after.push(ev(true, "BackupExecutorEnsureFailed", e));
                }
            },
            Action::Skip { reason } => {
                set_condition(
                    &mut st.conditions,
                    c::BACKUP_SKIPPED,
                    true,
                    "SkippedTakingNewBackup",
                    &reason,
                    &now_s,
                );
                recompute_phase = true;
                after.push(ev(true, "BackupSessionSkipped", reason));
            }
            Action::Kill => {
                if let Some(j) = job {
                    first.push(KubeAction::Delete {
                        api_version: "batch/v1".into(),
                        kind: "Job".into(),
                        namespace: ns.into(),
                        name: j.name.clone(),
                    });
                }
            }
            Action::MarkFailed {
                reason,
                condition,
                ran,
            } => {
                let deadline =
                    condition == FailCondition::DeadlineExceeded || job_hit_deadline(job);
                let reason = if deadline && condition != FailCondition::DeadlineExceeded {
                    coffer_control::session::deadline_reason(o.time_out.or(ran).unwrap_or_default())
                } else {
                    reason
                };
                if deadline {
                    set_condition(
                        &mut st.conditions,
                        c::DEADLINE_EXCEEDED,
                        true,
                        "DeadlineExceeded",
                        &reason,
                        &now_s,
                    );
                } else {
                    let t = target(&mut st, bc);
                    set_condition(
                        &mut t.conditions,
                        c::BACKUP_DISRUPTED,
                        true,
                        "BackupDisrupted",
                        &reason,
                        &now_s,
                    );
                }
                st.error = Some(reason.clone());
                if let Some(r) = ran {
                    st.session_duration = Some(coffer_api::duration::format(Duration::from_secs(
                        r.as_secs(),
                    )));
                }
                recompute_phase = true;
                after.push(ev(
                    true,
                    if deadline {
                        "BackupSessionDeadlineExceeded"
                    } else {
                        "BackupSessionInterrupted"
                    },
                    reason,
                ));
            }
            Action::Retry { at, retry_left } => {
                if at <= now {
                    after.insert(0, KubeAction::Create(new_session(bc, Some(retry_left))));
                    st.retried = true;
                    st.next_retry = None;
                    after.push(ev(
                        false,
                        "BackupSessionRetried",
                        format!("created a new session of BackupConfiguration {} ({retry_left} retries left after it)", bc.metadata.name),
                    ));
                } else {
                    st.next_retry = Some(objects::rfc3339(at));
                    after.push(KubeAction::RequeueAfter(until(now, at)));
                }
            }
            Action::TrimHistory { keep } => {
                let mut all: Vec<BackupSession> = observed
                    .siblings
                    .iter()
                    .filter(|s| s.metadata.name != meta.name)
                    .cloned()
                    .collect();
                let mut me = session.clone();
                me.status = Some(st.clone());
                all.push(me);
                let gone = history_to_delete(&all, keep);
                if !gone.is_empty() {
                    after.push(objects::event(
                        Kind::BackupConfiguration,
                        &bc.metadata,
                        false,
                        "BackupHistoryCleaned",
                        format!(
                            "deleted old sessions {} (backupHistoryLimit {})",
                            gone.join(", "),
                            keep.unwrap_or(1)
                        ),
                    ));
                }
                for name in gone {
                    after.push(KubeAction::Delete {
                        api_version: Kind::BackupSession.api_version().into(),
                        kind: Kind::BackupSession.as_str().into(),
                        namespace: ns.into(),
                        name,
                    });
                }
            }
        }
    }

    if recompute_phase {
        st.phase = Some(coffer_api::phase::backup_session_phase(&st));
    }
    if st.phase == Some(Phase::Failed)
        && old.phase != Some(Phase::Failed)
        && !after
            .iter()
            .any(|a| matches!(a, KubeAction::Event { warning: true, .. }))
    {
        after.push(ev(
            true,
            "BackupSessionFailed",
            st.error
                .clone()
                .unwrap_or_else(|| "the session failed".into()),
        ));
    }

    let mut out = first;
    if st != old {
        let creates = after
            .iter()
            .take_while(|a| matches!(a, KubeAction::Create(_)))
            .count();
        let rest = after.split_off(creates);
        out.extend(after);
        out.push(KubeAction::PatchStatus {
            kind: Kind::BackupSession,
            namespace: ns.into(),
            name: meta.name.clone(),
            resource_version: observed.resource_version.clone(),
            status: serde_json::to_value(&st).expect("a status serializes to JSON"),
        });
        out.extend(rest);
    } else {
        out.extend(after);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{condition, events, load, objects_of, run, run_case, status_of};

    fn env_names(c: &Value) -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn created_applies_the_job_as_the_contract_says_and_runs() {
        let a = run_case("bs-created");
        let job = objects_of(&a, "Job");
        assert_eq!(job.len(), 1);
        let job = job[0];
        assert_eq!(
            job["metadata"]["name"],
            "stash-backup-mariadb-backup-1767227400-0"
        );
        let owner = &job["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "BackupSession");
        assert_eq!(owner["controller"], true);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 3600);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["serviceAccountName"],
            "backupconfiguration-mariadb-backup-0"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65534);
        assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
        assert_eq!(pod["volumes"][0]["name"], "stash-tmp-dir");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "ghcr.io/coffer-backup/coffer:latest");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["command"], serde_json::json!(["coffer"]));
        assert_eq!(
            c["args"],
            serde_json::json!(["agent", "backupsession", "mariadb-backup-1767227400"])
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        // The contract's variables first; the user's TMPDIR does not override it, TZ is added.
        assert_eq!(
            env_names(c),
            [
                "COFFER_PLATFORM",
                "COFFER_NAMESPACE",
                "COFFER_POD_NAME",
                "COFFER_POD_IP",
                "COFFER_PUSHGATEWAY",
                "TMPDIR",
                "TZ"
            ]
        );
        let env = c["env"].as_array().unwrap();
        assert_eq!(env[0]["value"], "kubernetes");
        assert_eq!(
            env[1]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(
            env[2]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(env[3]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        assert_eq!(env[4]["value"], "http://pushgateway.monitoring:9091");
        assert_eq!(env[5]["value"], "/tmp");
        // No Secret anywhere in the Job.
        let text = job.to_string();
        assert!(
            !text.contains("secretKeyRef") && !text.contains("\"secret\""),
            "{text}"
        );

        let rb = objects_of(&a, "RoleBinding")[0];
        assert_eq!(rb["roleRef"]["name"], "coffer-backup-job");
        assert_eq!(
            rb["metadata"]["ownerReferences"][0]["kind"],
            "BackupConfiguration"
        );

        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Running");
        assert_eq!(st["sessionDeadline"], "2026-01-01T01:30:00Z");
        assert_eq!(st["targets"][0]["totalHosts"], 1);
        // The Job is applied before the status says Running.
        let job_at = a
            .iter()
            .position(|x| matches!(x, KubeAction::Apply(v) if v["kind"] == "Job"));
        let st_at = a
            .iter()
            .position(|x| matches!(x, KubeAction::PatchStatus { .. }));
        assert!(job_at < st_at);
        assert!(a.contains(&KubeAction::RequeueAfter(Duration::from_secs(3600))));
    }

    #[test]
    fn without_pushgateway_there_is_no_pushgateway_variable() {
        let mut i = load("bs-created");
        i.settings = None;
        let a = run(&i);
        let c = &objects_of(&a, "Job")[0]["spec"]["template"]["spec"]["containers"][0];
        assert!(!env_names(c).contains(&"COFFER_PUSHGATEWAY".to_string()));
    }

    #[test]
    fn overlapping_is_skipped() {
        let a = run_case("bs-overlapping");
        assert!(objects_of(&a, "Job").is_empty());
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Skipped");
        let c = condition(st, "BackupSkipped").unwrap();
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("mariadb-backup-1767227400"));
        assert_eq!(events(&a), vec![(true, "BackupSessionSkipped".to_string())]);
    }

    #[test]
    fn job_succeeded_trims_history() {
        let a = run_case("bs-job-succeeded");
        assert!(status_of(&a).is_none());
        let deleted: Vec<&str> = a
            .iter()
            .filter_map(|x| match x {
                KubeAction::Delete { kind, name, .. } if kind == "BackupSession" => {
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["mariadb-backup-1767225600"]);
    }

    #[test]
    fn history_trimmed_keeps_the_newest_and_the_last_good_one() {
        let a = run_case("bs-history-trimmed");
        let mut deleted: Vec<&str> = a
            .iter()
            .filter_map(|x| match x {
                KubeAction::Delete { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        deleted.sort();
        assert_eq!(
            deleted,
            ["mariadb-backup-1767220000", "mariadb-backup-1767220060"]
        );
    }

    #[test]
    fn job_failed_is_interrupted_and_failed() {
        for case in ["bs-job-failed", "bs-job-succeeded-unfinished"] {
            let a = run_case(case);
            let st = status_of(&a).unwrap();
            assert_eq!(st["phase"], "Failed", "{case}");
            assert_eq!(
                condition(&st["targets"][0], "BackupDisrupted").unwrap()["status"],
                "True",
                "{case}"
            );
            assert!(st["error"]
                .as_str()
                .unwrap()
                .contains("stash-backup-mariadb-backup-1767227400-0"));
            assert_eq!(
                events(&a),
                vec![(true, "BackupSessionInterrupted".to_string())],
                "{case}"
            );
            assert!(
                objects_of(&a, "BackupSession").is_empty(),
                "no retryConfig: no retry"
            );
        }
    }

    #[test]
    fn past_its_deadline_the_job_is_deleted_and_the_session_fails() {
        let a = run_case("bs-deadline");
        assert!(matches!(&a[0], KubeAction::Delete { kind, name, .. }
            if kind == "Job" && name == "stash-backup-mariadb-backup-1767227400-0"));
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        assert_eq!(condition(st, "DeadlineExceeded").unwrap()["status"], "True");
        assert!(!a.iter().any(|x| matches!(x, KubeAction::RequeueAfter(_))));
    }

    #[test]
    fn a_job_stopped_at_its_active_deadline_is_deadline_exceeded() {
        let mut i = load("bs-job-failed");
        i.backup_session
            .as_mut()
            .unwrap()
            .job
            .as_mut()
            .unwrap()
            .reason = "DeadlineExceeded".into();
        let a = run(&i);
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        assert_eq!(condition(st, "DeadlineExceeded").unwrap()["status"], "True");
        assert!(condition(&st["targets"][0], "BackupDisrupted").is_none());
        assert!(
            !a.iter().any(|x| matches!(x, KubeAction::Delete { .. })),
            "the Job already ended"
        );
    }

    #[test]
    fn running_within_its_deadline_waits_for_it() {
        let a = run_case("bs-running");
        assert_eq!(a, vec![KubeAction::RequeueAfter(Duration::from_secs(3000))]);
    }

    #[test]
    fn a_running_session_whose_job_is_gone_is_interrupted() {
        let mut i = load("bs-running");
        i.backup_session.as_mut().unwrap().job = None;
        let a = run(&i);
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        assert!(condition(&st["targets"][0], "BackupDisrupted").is_some());
    }

    #[test]
    fn retried_creates_the_next_session_before_marking_this_one() {
        let a = run_case("bs-retried");
        let created = objects_of(&a, "BackupSession");
        assert_eq!(created.len(), 1);
        let s = created[0];
        assert_eq!(s["metadata"]["generateName"], "mariadb-backup-");
        assert_eq!(s["spec"]["retryLeft"], 1);
        assert_eq!(s["spec"]["invoker"]["name"], "mariadb-backup");
        assert_eq!(
            s["metadata"]["labels"]["stash.appscode.com/invoker-name"],
            "mariadb-backup"
        );
        assert_eq!(
            s["metadata"]["ownerReferences"][0]["kind"],
            "BackupConfiguration"
        );
        assert!(matches!(&a[0], KubeAction::Create(_)));
        let st = status_of(&a).unwrap();
        assert_eq!(st["retried"], true);
        assert_eq!(st["phase"], "Failed");
        assert!(events(&a).contains(&(false, "BackupSessionRetried".to_string())));
    }

    #[test]
    fn a_retry_waits_for_its_delay() {
        let a = run_case("bs-retry-delayed");
        assert!(objects_of(&a, "BackupSession").is_empty());
        assert_eq!(status_of(&a).unwrap()["nextRetry"], "2026-01-01T00:43:00Z");
        assert!(a.contains(&KubeAction::RequeueAfter(Duration::from_secs(480))));
        // Once the delay has passed, the retry is created.
        let mut i = load("bs-retry-delayed");
        i.now = "2026-01-01T00:43:00Z".parse().unwrap();
        let a = run(&i);
        assert_eq!(objects_of(&a, "BackupSession")[0]["spec"]["retryLeft"], 1);
    }

    #[test]
    fn a_pending_session_without_its_configuration_is_skipped() {
        let mut i = load("bs-created");
        i.backup_session.as_mut().unwrap().configuration = None;
        let a = run(&i);
        assert!(objects_of(&a, "Job").is_empty());
        assert_eq!(status_of(&a).unwrap()["phase"], "Skipped");
    }

    #[test]
    fn unusable_runtime_settings_fail_the_session() {
        let mut i = load("bs-created");
        let bc = i
            .backup_session
            .as_mut()
            .unwrap()
            .configuration
            .as_mut()
            .unwrap();
        bc.spec.runtime_settings.as_mut().unwrap()["pod"]["tolerations"] = "none".into();
        let a = run(&i);
        assert!(objects_of(&a, "Job").is_empty());
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        let c = condition(&st["targets"][0], "BackupExecutorEnsured").unwrap();
        assert_eq!(c["status"], "False");
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("runtimeSettings.pod"));
    }
}
