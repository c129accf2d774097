//! BinlogArchive → the Deployment that runs its archiver, and the status fields the operator
//! owns.
//!
//! For each archive the Deployment [`names::archive_deployment`] is applied, owned by the
//! archive (controller, blockOwnerDeletion: deleting the archive deletes it and its pod),
//! with `replicas: 1` — `0` while `spec.paused` — and `strategy: Recreate`: two archivers of
//! one archive must never run at once (the old pod is stopped, and stores its open segment,
//! before the new one starts; the runner also refuses a server_id in use). Its pod is an
//! agent pod like the backup Job's (`objects::agent_pod_plan`: image, agent environment, the
//! `/tmp` emptyDir, a non-root user) running `coffer archive --namespace=<ns> <archive>`
//! ([`archive_args`]) with `restartPolicy: Always`: the archive, its AppBinding, Repository
//! and Secrets are read through the API and its status is written there; a run that ends with
//! an error is restarted by the kubelet with its back-off. A Repository with a `local`
//! backend has its volume mounted at `mountPath`, as in the other agent pods. The pod's
//! ServiceAccount (named after the Deployment) is bound to `settings.archive_cluster_role`.
//!
//! The Deployment is created once the archive's Repository is found (a local backend must be
//! mountable); once it exists it follows every change: the three objects are applied again
//! whenever they differ from what was last applied, which the Deployment's annotation
//! [`APPLIED_HASH`] records (the runner's status writes reconcile the archive every few
//! seconds; they send nothing then).
//!
//! Status: the runner owns the phase while it runs (Pending, Streaming, Backoff, Failed) and
//! the `Streaming` condition with it. The operator writes only what no runner can:
//! `DeploymentCreated` (True once the Deployment is applied; False with why it cannot be), and
//! the phase that goes with it — `Failed` (`Streaming` False, reason `Failed`, `error` saying
//! why) while no Deployment can be made, `Paused` (`Streaming` False, reason `Paused`, no lag)
//! while `spec.paused` scales it to zero, and `Pending` (`Streaming` False, reason
//! `Starting`) when it resumes or first starts, until its runner writes. Written conditionally
//! on the resourceVersion, only when it changed, so a race with the runner's own write is
//! decided again, never lost.

use coffer_api::{
    archive::{condition, ArchivePhase, BinlogArchive, BinlogArchiveStatus},
    meta::{get_condition, set_condition},
    Kind, Repository,
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::{names, objects};
use crate::{KubeAction, OperatorSettings};

/// The archiver's container name.
pub const ARCHIVE_CONTAINER: &str = "coffer-archive";
/// The condition the operator owns on a BinlogArchive: its Deployment was applied.
pub const DEPLOYMENT_CREATED: &str = "DeploymentCreated";
/// The Deployment's annotation with a digest of the objects last applied for the archive
/// (ServiceAccount, RoleBinding, Deployment): equal, they are not applied again.
pub const APPLIED_HASH: &str = "coffer.dev/applied-hash";

/// FNV-1a, 64 bits, in hex: stable across builds and toolchains (the annotation outlives
/// the operator's version).
fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The archiver's container runs `coffer archive --namespace=<ns> <archive>` (command
/// `["coffer"]`, these args): with `COFFER_PLATFORM=kubernetes` it streams until the pod is
/// stopped (SIGTERM: the open segment is stored first).
pub fn archive_args(namespace: &str, archive: &str) -> Vec<String> {
    vec![
        "archive".into(),
        format!("--namespace={namespace}"),
        archive.into(),
    ]
}

/// What the observe layer found for one BinlogArchive.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The archive's `metadata.resourceVersion`, so the status write is conditional.
    pub resource_version: Option<String>,
    /// `spec.repository`, if it exists.
    pub repository: Option<Repository>,
    /// The Deployment ([`names::archive_deployment`]), if it exists.
    pub deployment: Option<Deployment>,
}

/// The ServiceAccount, RoleBinding and Deployment, in the order they must be applied.
fn deployment_objects(
    a: &BinlogArchive,
    repository: Option<&Repository>,
    settings: &OperatorSettings,
) -> Result<Vec<Value>, String> {
    let ns = a.metadata.namespace();
    let name = names::archive_deployment(&a.metadata.name);
    let labels = objects::labels(Kind::BinlogArchive, &a.metadata.name);
    let owner = objects::owner(Kind::BinlogArchive, &a.metadata);
    let (sa, mut out) = objects::pod_service_account(
        None,
        &name,
        ns,
        &labels,
        owner.clone(),
        &settings.archive_cluster_role,
    );
    let mut plan = objects::agent_pod_plan(
        ARCHIVE_CONTAINER,
        archive_args(ns, &a.metadata.name),
        sa,
        None,
        labels.clone(),
        settings,
    );
    plan.mount_repository(repository)?;
    let mut template = objects::pod_template(plan, settings)?;
    // A Deployment's pod is restarted whenever it ends: an archive runs until it is stopped.
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = Some("Always".into());
    }
    let deployment = Deployment {
        metadata: objects::metadata(&name, ns, &labels, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(if a.spec.paused { 0 } else { 1 }),
            // Never two archivers of one archive: the old pod is gone before the new starts.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
            template,
            ..Default::default()
        }),
        status: None,
    };
    out.push(objects::value(&deployment));
    let hash = digest(&Value::Array(out.clone()).to_string());
    if let Some(d) = out.last_mut() {
        d["metadata"]["annotations"] = serde_json::json!({ APPLIED_HASH: hash });
    }
    Ok(out)
}

/// Why the Deployment cannot be made, when it cannot: the Repository is missing (its local
/// backend might need a volume) or its local backend has no volume source.
fn blocked(a: &BinlogArchive, o: &Observed) -> Option<String> {
    let ns = a.metadata.namespace();
    let r = &a.spec.repository;
    match &o.repository {
        None => Some(format!(
            "Repository {}/{} (spec.repository) was not found; create it or correct the \
             reference",
            r.namespace.as_deref().unwrap_or(ns),
            r.name
        )),
        Some(repo) => objects::repository_volume(repo).err(),
    }
}

/// The status with the operator's fields brought up to date.
fn status(a: &BinlogArchive, created: Result<(), &str>, now: &str) -> BinlogArchiveStatus {
    let mut st = a.status.clone().unwrap_or_default();
    let was_created = get_condition(&st.conditions, DEPLOYMENT_CREATED).map(|c| c.is_true());
    let name = names::archive_deployment(&a.metadata.name);
    match created {
        Err(why) => {
            set_condition(
                &mut st.conditions,
                DEPLOYMENT_CREATED,
                false,
                "Failed",
                why,
                now,
            );
            set_condition(
                &mut st.conditions,
                condition::STREAMING,
                false,
                "Failed",
                why,
                now,
            );
            st.phase = Some(ArchivePhase::Failed);
            st.error = Some(why.to_string());
        }
        Ok(()) => {
            let msg = if a.spec.paused {
                format!("Deployment {name} is applied, scaled to 0 (spec.paused)")
            } else {
                format!("Deployment {name} runs the archiver")
            };
            set_condition(
                &mut st.conditions,
                DEPLOYMENT_CREATED,
                true,
                "Applied",
                &msg,
                now,
            );
            if a.spec.paused {
                st.phase = Some(ArchivePhase::Paused);
                st.lag_seconds = None;
                set_condition(
                    &mut st.conditions,
                    condition::STREAMING,
                    false,
                    "Paused",
                    "spec.paused is set",
                    now,
                );
            } else {
                // Until the runner writes: a new archive, one resumed, or one the operator
                // had marked Failed (its runner's own Failed is left to it).
                let ours_failed =
                    st.phase == Some(ArchivePhase::Failed) && was_created == Some(false);
                if st.phase.is_none() || st.phase == Some(ArchivePhase::Paused) || ours_failed {
                    st.phase = Some(ArchivePhase::Pending);
                    st.error = None;
                    set_condition(
                        &mut st.conditions,
                        condition::STREAMING,
                        false,
                        "Starting",
                        "the archive's Deployment starts its pod",
                        now,
                    );
                }
            }
        }
    }
    st
}

/// What to do about one BinlogArchive at `now`.
pub fn decide(
    a: &BinlogArchive,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    let meta = &a.metadata;
    let ns = meta.namespace();
    let name = names::archive_deployment(&meta.name);
    let event = |warning: bool, reason: &str, message: String| {
        objects::event(Kind::BinlogArchive, meta, warning, reason, message)
    };
    let mut out = Vec::new();
    let mut events = Vec::new();
    let existing = observed.deployment.as_ref();
    let why_not = match (blocked(a, observed), existing) {
        // Kept as it is: the Repository may come back; its pod reports what it lacks.
        (Some(_), Some(_)) => None,
        (why, _) => why,
    };
    let created: Result<(), String> = match why_not {
        Some(why) => Err(why),
        None if existing.is_some() && observed.repository.is_none() => Ok(()),
        None => match deployment_objects(a, observed.repository.as_ref(), settings) {
            Ok(objs) => {
                let applied = |d: &Deployment| {
                    d.metadata
                        .annotations
                        .as_ref()
                        .and_then(|m| m.get(APPLIED_HASH))
                        .cloned()
                };
                let want_hash = objs
                    .last()
                    .and_then(|d| d["metadata"]["annotations"][APPLIED_HASH].as_str())
                    .map(String::from);
                // The runner writes the status every few seconds, and each write reconciles
                // the archive: what was applied last is not sent again.
                if want_hash.is_none() || existing.and_then(applied) != want_hash {
                    out.extend(objs.into_iter().map(KubeAction::Apply));
                }
                let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
                let want = if a.spec.paused { 0 } else { 1 };
                match existing {
                    None => events.push(event(
                        false,
                        "DeploymentCreated",
                        format!(
                            "created Deployment {ns}/{name} (replicas {want}{})",
                            if a.spec.paused { ", spec.paused" } else { "" }
                        ),
                    )),
                    Some(d) if replicas(d) != Some(want) => events.push(event(
                        false,
                        "DeploymentUpdated",
                        format!(
                            "updated Deployment {ns}/{name}: {}",
                            if a.spec.paused {
                                "scaled to 0 (spec.paused)"
                            } else {
                                "scaled to 1 (spec.paused is false)"
                            }
                        ),
                    )),
                    Some(_) => {}
                }
                Ok(())
            }
            Err(e) => Err(format!("Deployment {ns}/{name} cannot be built: {e}")),
        },
    };
    let mut st = status(
        a,
        created.as_ref().map(|_| ()).map_err(String::as_str),
        &objects::rfc3339(now),
    );
    st.observed_generation = meta.generation;
    let old = a.status.clone().unwrap_or_default();
    if st.phase != old.phase {
        let phase = st.phase.unwrap_or(ArchivePhase::Unknown);
        let failed = phase == ArchivePhase::Failed;
        let message = match &created {
            Err(why) => format!("BinlogArchive {ns}/{} is {phase}: {why}", meta.name),
            Ok(()) => format!("BinlogArchive {ns}/{} is {phase}", meta.name),
        };
        events.push(event(failed, &format!("BinlogArchive{phase}"), message));
    }
    if a.status.as_ref() != Some(&st) {
        out.push(KubeAction::PatchStatus {
            kind: Kind::BinlogArchive,
            namespace: ns.into(),
            name: meta.name.clone(),
            resource_version: observed.resource_version.clone(),
            status: serde_json::to_value(&st).expect("a status serializes to JSON"),
        });
    }
    out.extend(events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{condition, events, objects_of, run_case, status_of};

    #[test]
    fn created_applies_one_recreated_archiver_owned_by_the_archive() {
        let a = run_case("ba-created");
        let d = objects_of(&a, "Deployment");
        assert_eq!(d.len(), 1);
        let d = d[0];
        assert_eq!(d["metadata"]["name"], "coffer-archive-mariadb-pitr");
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        let o = &d["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&o["kind"], &o["controller"], &o["blockOwnerDeletion"]),
            (&"BinlogArchive".into(), &true.into(), &true.into())
        );
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            d["spec"]["template"]["metadata"]["labels"]
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["serviceAccountName"], "coffer-archive-mariadb-pitr");
        let c = &pod["containers"][0];
        assert_eq!(
            c["args"],
            serde_json::json!(["archive", "--namespace=demo", "mariadb-pitr"])
        );
        // The local Repository's volume, where the runner opens it in a pod.
        assert_eq!(c["volumeMounts"][1]["mountPath"], "/safe/data");
        assert_eq!(
            pod["volumes"][1]["persistentVolumeClaim"]["claimName"],
            "backups"
        );
        let rb = objects_of(&a, "RoleBinding");
        assert_eq!(rb[0]["roleRef"]["name"], "coffer-archive-job");
        let st = status_of(&a).expect("a new archive gets a status");
        assert_eq!(st["phase"], "Pending");
        assert_eq!(condition(st, DEPLOYMENT_CREATED).unwrap()["status"], "True");
        assert_eq!(condition(st, "Streaming").unwrap()["reason"], "Starting");
        assert!(events(&a).contains(&(false, "DeploymentCreated".into())));
    }

    #[test]
    fn paused_scales_to_zero_and_is_paused() {
        let a = run_case("ba-paused");
        let d = objects_of(&a, "Deployment");
        assert_eq!(d[0]["spec"]["replicas"], 0);
        let st = status_of(&a).expect("the phase changes");
        assert_eq!(st["phase"], "Paused");
        assert!(st.get("lagSeconds").is_none());
        assert_eq!(condition(st, "Streaming").unwrap()["reason"], "Paused");
        // The runner's fields are kept.
        assert!(st["lastArchivedGtid"].is_string() || st["lastArchivedGtid"].is_object());
        assert!(events(&a).contains(&(false, "DeploymentUpdated".into())));
    }

    #[test]
    fn streaming_is_the_runner_s_and_is_not_rewritten() {
        // A Deployment without the digest (made by an older operator): applied again.
        let a = run_case("ba-streaming");
        assert!(status_of(&a).is_none(), "{a:?}");
        assert_eq!(objects_of(&a, "Deployment").len(), 1);
        assert!(events(&a).is_empty(), "{a:?}");
        // The digest of what would be applied: nothing is sent.
        let a = run_case("ba-unchanged");
        assert!(a.is_empty(), "{a:?}");
        let created = run_case("ba-created");
        let d = objects_of(&created, "Deployment")[0];
        let i = crate::decide::fixtures::load("ba-unchanged");
        let observed = i.binlog_archive.unwrap().deployment.unwrap();
        assert_eq!(
            observed.metadata.annotations.unwrap()[APPLIED_HASH],
            d["metadata"]["annotations"][APPLIED_HASH].as_str().unwrap(),
            "ba-unchanged carries the digest ba-created applies"
        );
    }

    #[test]
    fn repository_missing_makes_no_deployment_and_fails_with_the_reason() {
        let a = run_case("ba-repository-missing");
        assert!(objects_of(&a, "Deployment").is_empty());
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Failed");
        let c = condition(st, DEPLOYMENT_CREATED).unwrap();
        assert_eq!(c["status"], "False");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("Repository demo/local-repo (spec.repository) was not found"),
            "{c}"
        );
        assert!(events(&a).contains(&(true, "BinlogArchiveFailed".into())));
    }
}
