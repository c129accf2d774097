//! RestoreSession → one Job (standalone), or PVCs and one Job per replica (cluster).
//!
//! Standalone: the Job [`names::restore_job`] `stash-restore-<rs>-0` runs
//! `coffer agent restoresession <rs>` ([`agent_container_args`]) with the same container
//! contract as the backup Job (see [`super::backup_session`]), including a local backend's
//! volume at its `mountPath`. A point-in-time restore reads its BinlogArchive's repository,
//! which is not mounted (archives run on one machine only).
//!
//! Cluster (`spec.target.replicas` > 1, or `spec.target.volumeClaimTemplates` given): for each
//! ordinal 0‥replicas, each claim template with `${POD_ORDINAL}` substituted (Stash's
//! `data-<name>-${POD_ORDINAL}` gives `data-<name>-<ordinal>`) is applied as a PVC — never
//! owned and never deleted by the operator, since it holds the restored data that outlives the
//! session — and the Job `stash-restore-<rs>-0-<ordinal>` gets `POD_ORDINAL=<ordinal>` and
//! those PVCs as volumes named after the claim without its `-<ordinal>` suffix, mounted per
//! `spec.target.volumeMounts` (as Stash's `PVCListToVolumes`). `status.totalHosts` is the
//! number of replicas.
//!
//! The Jobs' ServiceAccount and RoleBinding ([`names::restore_job_service_account`], bound to
//! `settings.restore_job_cluster_role`) are owned by the session, as the Jobs are. The
//! lifecycle (start, deadline, Jobs that end without finishing the session) is
//! [`coffer_control::session::reconcile`]'s; a RestoreSession has no retries and no history.
//! The operator writes phase Running (with RestoreExecutorEnsured and `sessionDeadline`) and
//! Failed (DeadlineExceeded, or RestoreDisrupted when the Jobs ended without a final status);
//! the agents write the rest.

use std::{collections::BTreeMap, time::Duration};

use coffer_api::{
    backup::condition as c, meta::set_condition, restore::RestoreSessionStatus, Kind, Repository,
    RestoreSession,
};
use coffer_control::session::{
    reconcile, Action, Executor, FailCondition, Observed as Lifecycle, Phase, RetryState,
};
use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{
        EnvVar, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
    },
};
use serde_json::Value;

use super::{
    backup_session::{add, until},
    names, objects, JobState, ObservedJob,
};
use crate::{KubeAction, OperatorSettings};

/// The restore Job's container name.
pub const AGENT_CONTAINER: &str = "coffer-agent";
/// The condition of a restore whose Jobs ended without finishing it.
pub const RESTORE_DISRUPTED: &str = "RestoreDisrupted";

/// `coffer agent restoresession <rs>`: what each restore Job's container runs (after the
/// command `coffer`); a cluster restore's Jobs tell their replica apart by `POD_ORDINAL`.
pub fn agent_container_args(rs: &str) -> Vec<String> {
    vec!["agent".into(), "restoresession".into(), rs.into()]
}

/// What the observe layer found for one RestoreSession.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The session's `metadata.resourceVersion`, so status writes are conditional.
    pub resource_version: Option<String>,
    /// The session's Jobs ([`names::restore_job`]), read from the API; those not found are
    /// absent.
    pub jobs: Vec<ObservedJob>,
    /// The Repository `spec.repository` names, if it exists: a local backend's volume is
    /// mounted into every Job's pod.
    pub repository: Option<Repository>,
}

/// How many replicas a restore fills, and whether it is a cluster restore.
pub fn replicas(rs: &RestoreSession) -> (i32, bool) {
    let t = rs.spec.target.as_ref();
    let n = t.and_then(|t| t.replicas).unwrap_or(1).max(1);
    let templates = t.is_some_and(|t| !t.volume_claim_templates.is_empty());
    (n, n > 1 || templates)
}

/// The names of the session's Jobs.
pub fn job_names(rs: &RestoreSession) -> Vec<String> {
    let name = &rs.metadata.name;
    match replicas(rs) {
        (_, false) => vec![names::restore_job(name, 0, None)],
        (n, true) => (0..n)
            .map(|o| names::restore_job(name, 0, Some(o)))
            .collect(),
    }
}

/// The PVCs of one replica, from the claim templates with `${POD_ORDINAL}` substituted.
fn claims(rs: &RestoreSession, ordinal: i32) -> Result<Vec<PersistentVolumeClaim>, String> {
    let ns = rs.metadata.namespace();
    let vars = BTreeMap::from([("POD_ORDINAL".to_string(), ordinal.to_string())]);
    let mut labels = objects::labels(Kind::RestoreSession, &rs.metadata.name);
    labels.remove(objects::INVOKER_NAME); // The data outlives the session that filled it.
    let templates = rs
        .spec
        .target
        .as_ref()
        .map(|t| t.volume_claim_templates.as_slice())
        .unwrap_or(&[]);
    templates
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("spec.target.volumeClaimTemplates[{i}]");
            let text = coffer_api::envsubst::substitute(&t.to_string(), &vars)
                .map_err(|e| format!("{field}: {e}"))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("{field}: {e}"))?;
            let mut pvc: PersistentVolumeClaim = serde_json::from_value(v)
                .map_err(|e| format!("{field} is not a PersistentVolumeClaim: {e}"))?;
            if pvc.metadata.name.as_deref().unwrap_or("").is_empty() {
                return Err(format!("{field}: metadata.name is missing"));
            }
            pvc.metadata.namespace = Some(ns.into());
            pvc.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(labels.clone());
            pvc.status = None;
            Ok(pvc)
        })
        .collect()
}

/// ServiceAccount, RoleBinding, PVCs and Jobs, in apply order.
fn objects_to_apply(
    rs: &RestoreSession,
    repository: Option<&Repository>,
    settings: &OperatorSettings,
    time_out: Option<Duration>,
) -> Result<Vec<Value>, String> {
    let meta = &rs.metadata;
    let ns = meta.namespace();
    let labels = objects::labels(Kind::RestoreSession, &meta.name);
    let owner = objects::owner(Kind::RestoreSession, meta);
    let rset = rs.spec.runtime_settings.as_ref();
    let (sa, mut out) = objects::pod_service_account(
        rset,
        &names::restore_job_service_account(&meta.name, 0),
        ns,
        &labels,
        owner.clone(),
        &settings.restore_job_cluster_role,
    );
    let mounts: Vec<VolumeMount> = rs
        .spec
        .target
        .as_ref()
        .map(|t| {
            t.volume_mounts
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    serde_json::from_value(m.clone())
                        .map_err(|e| format!("spec.target.volumeMounts[{i}] is not valid: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let (n, cluster) = replicas(rs);
    let ordinals: Vec<Option<i32>> = if cluster {
        (0..n).map(Some).collect()
    } else {
        vec![None]
    };
    let mut jobs = Vec::new();
    for ordinal in ordinals {
        let mut plan = objects::agent_pod_plan(
            AGENT_CONTAINER,
            agent_container_args(&meta.name),
            sa.clone(),
            rset,
            labels.clone(),
            settings,
        );
        plan.mount_repository(repository)?;
        if let Some(o) = ordinal {
            plan.env.push(EnvVar {
                name: "POD_ORDINAL".into(),
                value: Some(o.to_string()),
                value_from: None,
            });
            for pvc in claims(rs, o)? {
                let claim = pvc.metadata.name.clone().unwrap_or_default();
                let suffix = format!("-{o}");
                let volume = claim.strip_suffix(&suffix).unwrap_or(&claim).to_string();
                plan.volumes.push(Volume {
                    name: volume,
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: None,
                    }),
                    ..Default::default()
                });
                out.push(objects::value(&pvc));
            }
            plan.mounts.extend(mounts.iter().cloned());
        }
        let template = objects::pod_template(plan, settings)?;
        let job = Job {
            metadata: objects::metadata(
                &names::restore_job(&meta.name, 0, ordinal),
                ns,
                &labels,
                owner.clone(),
            ),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: time_out.map(|t| t.as_secs().max(1) as i64),
                template,
                ..Default::default()
            }),
            status: None,
        };
        jobs.push(objects::value(&job));
    }
    out.extend(jobs);
    Ok(out)
}

/// The session's Jobs together as its executor: running while any runs; ended (with the
/// failures) once all have; gone when a Running session misses one.
fn executor(phase: Phase, expected: &[String], jobs: &[ObservedJob]) -> Executor {
    let found: Vec<&ObservedJob> = expected
        .iter()
        .filter_map(|n| jobs.iter().find(|j| &j.name == n))
        .collect();
    if found.is_empty() {
        return if phase == Phase::Running {
            Executor::Vanished
        } else {
            Executor::None
        };
    }
    if found.iter().any(|j| j.state == JobState::Active) {
        return Executor::Running;
    }
    if found.len() < expected.len() && phase == Phase::Running {
        return Executor::Vanished;
    }
    let failed: Vec<String> = found
        .iter()
        .filter_map(|j| match &j.state {
            JobState::Failed { reason } => Some(format!("Job {} failed: {reason}", j.name)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        Executor::Exited("all its Jobs succeeded".into())
    } else {
        Executor::Exited(failed.join("; "))
    }
}

/// What to do about one RestoreSession at `now`.
pub fn decide(
    rs: &RestoreSession,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    let meta = &rs.metadata;
    let ns = meta.namespace();
    let now_s = objects::rfc3339(now);
    let old: RestoreSessionStatus = rs.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let phase_now = old.phase.unwrap_or(Phase::Pending);
    let expected = job_names(rs);
    let time_out = rs
        .spec
        .time_out
        .as_deref()
        .and_then(|t| coffer_api::duration::parse(t).ok());
    let started = observed
        .jobs
        .iter()
        .filter(|j| expected.contains(&j.name))
        .filter_map(|j| j.start_time)
        .min();
    let o = Lifecycle {
        phase: phase_now,
        now,
        since: started.or_else(|| {
            meta.creation_timestamp
                .as_deref()
                .and_then(|t| t.parse().ok())
        }),
        time_out,
        executor: executor(phase_now, &expected, &observed.jobs),
        not_ready: None,
        running_siblings: Vec::new(),
        config: meta.name.clone(),
        retry: RetryState::default(),
        history_limit: None,
    };
    let ev = |warning: bool, reason: &str, message: String| {
        objects::event(Kind::RestoreSession, meta, warning, reason, message)
    };
    let mut first = Vec::new();
    let mut after = Vec::new();
    let actions = reconcile(&o);
    // Running within its deadline: nothing to do until then.
    if actions.is_empty() && phase_now == Phase::Running && o.executor == Executor::Running {
        if let (Some(s), Some(t)) = (o.since, time_out) {
            after.push(KubeAction::RequeueAfter(until(now, add(s, t))));
        }
    }
    let repo = observed.repository.as_ref();
    for action in actions {
        match action {
            Action::Start { deadline } => match objects_to_apply(rs, repo, settings, time_out) {
                Ok(objs) => {
                    first.extend(objs.into_iter().map(KubeAction::Apply));
                    st.phase = Some(Phase::Running);
                    st.total_hosts = Some(replicas(rs).0);
                    st.session_deadline = deadline.map(objects::rfc3339);
                    set_condition(
                        &mut st.conditions,
                        c::RESTORE_EXECUTOR_ENSURED,
                        true,
                        "SuccessfullyEnsuredRestoreExecutor",
                        "",
                        &now_s,
                    );
                    after.push(ev(
                        false,
                        "RestoreSessionRunning",
                        format!("started Job(s) {}", expected.join(", ")),
                    ));
                    if let Some(t) = time_out {
                        after.push(KubeAction::RequeueAfter(t.max(Duration::from_secs(1))));
                    }
                }
                Err(e) => {
                    set_condition(
                        &mut st.conditions,
                        c::RESTORE_EXECUTOR_ENSURED,
                        false,
                        "FailedToEnsureRestoreExecutor",
                        &e,
                        &now_s,
                    );
                    st.phase = Some(Phase::Failed);
                    st.error = Some(e.clone());
                    after.push(ev(true, "RestoreExecutorEnsureFailed", e));
                }
            },
            Action::Kill => {
                for j in observed
                    .jobs
                    .iter()
                    .filter(|j| expected.contains(&j.name) && j.state == JobState::Active)
                {
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
                let hit = observed.jobs.iter().any(|j| matches!(&j.state, JobState::Failed { reason } if reason == "DeadlineExceeded"));
                let deadline = condition == FailCondition::DeadlineExceeded || hit;
                let reason = if deadline && condition != FailCondition::DeadlineExceeded {
                    coffer_control::session::deadline_reason(time_out.or(ran).unwrap_or_default())
                } else {
                    reason
                };
                let cond = if deadline {
                    c::DEADLINE_EXCEEDED
                } else {
                    RESTORE_DISRUPTED
                };
                set_condition(&mut st.conditions, cond, true, cond, &reason, &now_s);
                st.phase = Some(Phase::Failed);
                st.error = Some(reason.clone());
                if let Some(r) = ran {
                    st.session_duration = Some(coffer_api::duration::format(Duration::from_secs(
                        r.as_secs(),
                    )));
                }
                after.push(ev(
                    true,
                    if deadline {
                        "RestoreSessionDeadlineExceeded"
                    } else {
                        "RestoreSessionInterrupted"
                    },
                    reason,
                ));
            }
            // No siblings, retries or history for a restore: reconcile never asks for these.
            Action::Skip { .. } | Action::Retry { .. } | Action::TrimHistory { .. } => {}
        }
    }
    let mut out = first;
    if st != old {
        out.push(KubeAction::PatchStatus {
            kind: Kind::RestoreSession,
            namespace: ns.into(),
            name: meta.name.clone(),
            resource_version: observed.resource_version.clone(),
            status: serde_json::to_value(&st).expect("a status serializes to JSON"),
        });
    }
    out.extend(after);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{condition, events, load, objects_of, run, run_case, status_of};

    fn env_value<'a>(job: &'a Value, name: &str) -> Option<&'a Value> {
        job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| &e["value"])
    }

    #[test]
    fn standalone_is_one_job() {
        let a = run_case("rs-standalone");
        assert!(objects_of(&a, "PersistentVolumeClaim").is_empty());
        let jobs = objects_of(&a, "Job");
        assert_eq!(jobs.len(), 1);
        let job = jobs[0];
        assert_eq!(job["metadata"]["name"], "stash-restore-restore-mariadb-0");
        assert_eq!(
            job["metadata"]["ownerReferences"][0]["kind"],
            "RestoreSession"
        );
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 7200);
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["args"],
            serde_json::json!(["agent", "restoresession", "restore-mariadb"])
        );
        assert_eq!(env_value(job, "COFFER_PLATFORM").unwrap(), "kubernetes");
        assert!(env_value(job, "POD_ORDINAL").is_none());
        assert_eq!(
            objects_of(&a, "RoleBinding")[0]["roleRef"]["name"],
            "coffer-restore-job"
        );
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Running");
        assert_eq!(st["totalHosts"], 1);
        assert_eq!(
            condition(st, "RestoreExecutorEnsured").unwrap()["status"],
            "True"
        );
        assert_eq!(
            events(&a),
            vec![(false, "RestoreSessionRunning".to_string())]
        );
    }

    #[test]
    fn cluster_of_three_is_three_pvcs_and_three_jobs() {
        let a = run_case("rs-cluster");
        let pvcs = objects_of(&a, "PersistentVolumeClaim");
        let names: Vec<&str> = pvcs
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["data-galera-0", "data-galera-1", "data-galera-2"]);
        for p in &pvcs {
            assert_eq!(p["metadata"]["namespace"], "demo");
            assert!(
                p["metadata"].get("ownerReferences").is_none(),
                "restored data outlives the session"
            );
            assert_eq!(p["spec"]["resources"]["requests"]["storage"], "10Gi");
        }
        let jobs = objects_of(&a, "Job");
        assert_eq!(jobs.len(), 3);
        for (n, job) in jobs.iter().enumerate() {
            assert_eq!(
                job["metadata"]["name"],
                format!("stash-restore-restore-galera-0-{n}")
            );
            assert_eq!(
                env_value(job, "POD_ORDINAL").unwrap(),
                &Value::from(n.to_string())
            );
            let pod = &job["spec"]["template"]["spec"];
            let vol = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "data-galera")
                .expect("the PVC's volume is named without the ordinal");
            assert_eq!(
                vol["persistentVolumeClaim"]["claimName"],
                format!("data-galera-{n}")
            );
            let mounts = &pod["containers"][0]["volumeMounts"];
            assert!(mounts
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "data-galera" && m["mountPath"] == "/var/lib/mysql"));
        }
        // The PVCs exist before the Jobs that mount them.
        let last_pvc = a.iter().rposition(
            |x| matches!(x, KubeAction::Apply(v) if v["kind"] == "PersistentVolumeClaim"),
        );
        let first_job = a
            .iter()
            .position(|x| matches!(x, KubeAction::Apply(v) if v["kind"] == "Job"));
        assert!(last_pvc < first_job);
        assert_eq!(status_of(&a).unwrap()["totalHosts"], 3);
        assert!(
            !a.iter().any(|x| matches!(x, KubeAction::Delete { .. })),
            "nothing is deleted"
        );
    }

    #[test]
    fn cluster_past_its_deadline_stops_the_running_jobs() {
        let a = run_case("rs-cluster-deadline");
        let deleted: Vec<&str> = a
            .iter()
            .filter_map(|x| match x {
                KubeAction::Delete { kind, name, .. } if kind == "Job" => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            [
                "stash-restore-restore-galera-0-1",
                "stash-restore-restore-galera-0-2"
            ]
        );
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        assert_eq!(condition(st, "DeadlineExceeded").unwrap()["status"], "True");
    }

    #[test]
    fn a_failed_job_interrupts_the_restore() {
        let a = run_case("rs-job-failed");
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        assert_eq!(condition(st, RESTORE_DISRUPTED).unwrap()["status"], "True");
        assert_eq!(
            events(&a),
            vec![(true, "RestoreSessionInterrupted".to_string())]
        );
    }

    #[test]
    fn a_cluster_restore_waits_while_any_replica_runs() {
        let mut i = load("rs-cluster-deadline");
        i.now = "2026-01-02T00:30:00Z".parse().unwrap();
        let a = run(&i);
        // Jobs 0-1 and 0-2 run; the earliest start (00:00:10) + 1h is the deadline.
        assert_eq!(a, vec![KubeAction::RequeueAfter(Duration::from_secs(1810))]);
    }

    #[test]
    fn a_finished_restore_needs_nothing() {
        let mut i = load("rs-job-failed");
        let r = i.restore_session.as_mut().unwrap();
        r.session.status.as_mut().unwrap().phase = Some(Phase::Succeeded);
        r.jobs[0].state = "Succeeded".into();
        assert_eq!(run(&i), vec![]);
    }
}
