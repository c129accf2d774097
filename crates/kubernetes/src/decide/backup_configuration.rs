//! BackupConfiguration → the CronJob that triggers its sessions, and the configuration's status.
//!
//! As Stash's operator: once the configuration is valid and its Repository, the Repository's
//! storage Secret and its target exist, the CronJob [`names::trigger_cron_job`] is applied
//! with the configuration's `schedule` and `timeZone`, `suspend` = `spec.paused`, owned by the
//! configuration (controller, blockOwnerDeletion). Its Jobs carry the label
//! `stash.appscode.com/delete-job-on-completion: "true"`, and their one container runs
//! `coffer create-backupsession --namespace=<ns> <bc>` ([`trigger_args`]) with the environment
//! `COFFER_PLATFORM=kubernetes`, as a non-root user, under a ServiceAccount that may only
//! create BackupSessions: `runtimeSettings.pod.serviceAccountName` if set (then the user
//! grants it), else one named after the CronJob, bound to `settings.trigger_cluster_role` by a
//! RoleBinding of the same name — both applied here and owned by the configuration.
//!
//! Once the CronJob exists it follows every change of the configuration (it is applied on
//! every reconcile: server-side apply makes an unchanged object a no-op), even while the
//! Repository is missing (the sessions it creates are then skipped with the reason). A
//! configuration without `schedule` runs only when asked (`coffer backup`): its CronJob, if
//! one was made, is deleted, and no CronJobCreated condition is written.
//!
//! The status — conditions ValidationPassed, RepositoryFound, BackendSecretFound,
//! BackupTargetFound, CronJobCreated and the phase Ready / NotReady / Invalid — is
//! [`coffer_control::readiness`]'s, written (conditionally on the resourceVersion) only when
//! it changed, with an Event when the phase changes and when the CronJob is created, changed
//! or deleted.
//!
//! Deletion needs no decision: the CronJob, its ServiceAccount and RoleBinding are owned by
//! the configuration, so Kubernetes' garbage collector removes them (and the CronJob's Jobs)
//! when it is deleted; the controller has no finalizer and does nothing for a deleted object.

use coffer_api::{BackupConfiguration, Kind, Repository};
use coffer_control::Readiness;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::{names, objects};
use crate::{KubeAction, OperatorSettings};

/// The label Stash's trigger Jobs carry (its operator deletes such Jobs once they succeed).
pub const DELETE_JOB_ON_COMPLETION: &str = "stash.appscode.com/delete-job-on-completion";
/// The trigger container's name.
pub const TRIGGER_CONTAINER: &str = "coffer-trigger";

/// The trigger CronJob's container runs `coffer create-backupsession --namespace=<ns> <bc>`
/// (command `["coffer"]`, these args): the CLI command that creates one BackupSession of the
/// configuration through the API, with the CronJob's ServiceAccount, as Stash's
/// `stash create-backupsession` does.
pub fn trigger_args(namespace: &str, bc: &str) -> Vec<String> {
    vec![
        "create-backupsession".into(),
        format!("--namespace={namespace}"),
        bc.into(),
    ]
}

/// What the observe layer found for one BackupConfiguration.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The configuration's `metadata.resourceVersion` (coffer-api's metadata drops it), so
    /// the status write is conditional.
    pub resource_version: Option<String>,
    /// `spec.repository`, if it exists.
    pub repository: Option<Repository>,
    /// The Repository's `spec.backend.storageSecretName` exists (false when the Repository is
    /// missing).
    pub backend_secret_found: bool,
    /// The AppBinding `spec.target.ref` names exists.
    pub target_found: bool,
    /// The configuration passed coffer's validation (`Err` says what is wrong, and where).
    pub validation: Result<(), String>,
    /// The trigger CronJob ([`names::trigger_cron_job`]), if it exists.
    pub cron_job: Option<CronJob>,
}

fn references(bc: &BackupConfiguration, o: &Observed) -> Readiness {
    let ns = bc.metadata.namespace();
    let repo_ns = bc.spec.repository.namespace.as_deref().unwrap_or(ns);
    let repo = format!("Repository {repo_ns}/{}", bc.spec.repository.name);
    let repository_found = match &o.repository {
        Some(_) => Ok(()),
        None => Err(format!(
            "{repo} (spec.repository) was not found; create it or correct the reference"
        )),
    };
    let backend_secret_found = match &o.repository {
        None => Err(format!(
            "{repo} was not found, so its storage Secret could not be looked up"
        )),
        Some(_) if o.backend_secret_found => Ok(()),
        Some(r) => Err(format!(
            "Secret {repo_ns}/{} (spec.backend.storageSecretName of {repo}) was not found",
            r.spec.backend.storage_secret_name
        )),
    };
    let target_found = match &bc.spec.target {
        None => Err("spec.target is missing".into()),
        Some(_) if o.target_found => Ok(()),
        Some(t) => Err(format!(
            "{} {}/{} (spec.target.ref) was not found",
            t.ref_.kind,
            t.ref_.namespace.as_deref().unwrap_or(ns),
            t.ref_.name
        )),
    };
    Readiness {
        repository_found,
        backend_secret_found,
        target_found,
        validation: o.validation.clone(),
        cron_job_created: None,
    }
}

/// The trigger's ServiceAccount, RoleBinding (unless the user names their own account) and
/// CronJob, in the order they must be applied.
fn trigger_objects(
    bc: &BackupConfiguration,
    schedule: &str,
    settings: &OperatorSettings,
) -> Result<Vec<Value>, String> {
    let ns = bc.metadata.namespace();
    let name = names::trigger_cron_job(&bc.metadata.name);
    let labels = objects::labels(Kind::BackupConfiguration, &bc.metadata.name);
    let owner = objects::owner(Kind::BackupConfiguration, &bc.metadata);
    let rs = bc.spec.runtime_settings.as_ref();
    let (sa, mut out) = objects::pod_service_account(
        rs,
        &name,
        ns,
        &labels,
        owner.clone(),
        &settings.trigger_cluster_role,
    );
    let template = objects::pod_template(
        objects::PodPlan {
            container: TRIGGER_CONTAINER,
            args: trigger_args(ns, &bc.metadata.name),
            env: vec![k8s_openapi::api::core::v1::EnvVar {
                name: "COFFER_PLATFORM".into(),
                value: Some("kubernetes".into()),
                value_from: None,
            }],
            volumes: Vec::new(),
            mounts: Vec::new(),
            service_account: sa,
            runtime_settings: rs,
            labels: labels.clone(),
        },
        settings,
    )?;
    let mut job_labels = labels.clone();
    job_labels.insert(DELETE_JOB_ON_COMPLETION.into(), "true".into());
    let cron = CronJob {
        metadata: objects::metadata(&name, ns, &labels, owner),
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            time_zone: bc.spec.time_zone.clone(),
            suspend: Some(bc.spec.paused),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    template,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    out.push(objects::value(&cron));
    Ok(out)
}

/// How the observed CronJob differs from the configuration, in words (empty: it does not).
fn cron_changes(bc: &BackupConfiguration, schedule: &str, cron: &CronJob) -> Vec<String> {
    let Some(spec) = cron.spec.as_ref() else {
        return vec!["it had no spec".into()];
    };
    let mut changes = Vec::new();
    if spec.schedule != schedule {
        changes.push(format!("schedule {:?} → {schedule:?}", spec.schedule));
    }
    if spec.time_zone != bc.spec.time_zone {
        changes.push(format!(
            "timeZone {:?} → {:?}",
            spec.time_zone.as_deref().unwrap_or(""),
            bc.spec.time_zone.as_deref().unwrap_or("")
        ));
    }
    if spec.suspend.unwrap_or(false) != bc.spec.paused {
        changes.push(if bc.spec.paused {
            "suspended (spec.paused)".into()
        } else {
            "resumed (spec.paused is false)".into()
        });
    }
    changes
}

/// What to do about one BackupConfiguration at `now`.
pub fn decide(
    bc: &BackupConfiguration,
    observed: &Observed,
    settings: &OperatorSettings,
    now: Timestamp,
) -> Vec<KubeAction> {
    let meta = &bc.metadata;
    let ns = meta.namespace();
    let cron_name = names::trigger_cron_job(&meta.name);
    let mut r = references(bc, observed);
    let mut applies = Vec::new();
    let mut events = Vec::new();

    match bc.spec.schedule.as_deref().filter(|s| !s.trim().is_empty()) {
        None => {
            if observed.cron_job.is_some() {
                applies.push(KubeAction::Delete {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    namespace: ns.into(),
                    name: cron_name.clone(),
                });
                events.push(objects::event(
                    Kind::BackupConfiguration,
                    meta,
                    false,
                    "CronJobDeleted",
                    format!("deleted CronJob {ns}/{cron_name}: spec.schedule was removed"),
                ));
            }
        }
        Some(schedule) => {
            let refs_ok = r.validation.is_ok()
                && r.repository_found.is_ok()
                && r.backend_secret_found.is_ok()
                && r.target_found.is_ok();
            let ensure = r.validation.is_ok() && (refs_ok || observed.cron_job.is_some());
            r.cron_job_created = Some(if ensure {
                match trigger_objects(bc, schedule, settings) {
                    Ok(objs) => {
                        applies.extend(objs.into_iter().map(KubeAction::Apply));
                        match &observed.cron_job {
                            None => events.push(objects::event(
                                Kind::BackupConfiguration,
                                meta,
                                false,
                                "CronJobCreated",
                                format!(
                                    "created CronJob {ns}/{cron_name} (schedule {schedule:?}{})",
                                    if bc.spec.paused { ", suspended" } else { "" }
                                ),
                            )),
                            Some(cron) => {
                                let changes = cron_changes(bc, schedule, cron);
                                if !changes.is_empty() {
                                    events.push(objects::event(
                                        Kind::BackupConfiguration,
                                        meta,
                                        false,
                                        "CronJobUpdated",
                                        format!(
                                            "updated CronJob {ns}/{cron_name}: {}",
                                            changes.join(", ")
                                        ),
                                    ));
                                }
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(format!("CronJob {ns}/{cron_name} cannot be built: {e}")),
                }
            } else if observed.cron_job.is_some() {
                Ok(())
            } else {
                Err(format!(
                    "CronJob {ns}/{cron_name} is created once the configuration is valid and \
                     its Repository, storage Secret and target are found"
                ))
            });
        }
    }

    let mut status = coffer_control::readiness(&r, bc.status.as_ref(), &objects::rfc3339(now));
    status.observed_generation = meta.generation;
    if r.cron_job_created.is_none() {
        // Without a schedule there is no CronJob to report on.
        status
            .conditions
            .retain(|c| c.type_ != coffer_api::backup::condition::CRON_JOB_CREATED);
    }
    let old_phase = bc.status.as_ref().and_then(|s| s.phase);
    if old_phase != status.phase {
        let phase = status
            .phase
            .unwrap_or(coffer_api::phase::ConfigPhase::Unknown);
        let why: Vec<String> = status
            .conditions
            .iter()
            .filter(|c| c.is_false())
            .map(|c| format!("{}: {}", c.type_, c.message))
            .collect();
        let message = if why.is_empty() {
            format!("BackupConfiguration {ns}/{} is {phase}", meta.name)
        } else {
            format!(
                "BackupConfiguration {ns}/{} is {phase}: {}",
                meta.name,
                why.join("; ")
            )
        };
        events.push(objects::event(
            Kind::BackupConfiguration,
            meta,
            phase != coffer_api::phase::ConfigPhase::Ready,
            &format!("BackupConfiguration{phase}"),
            message,
        ));
    }

    let mut out = applies;
    if bc.status.as_ref() != Some(&status) {
        out.push(KubeAction::PatchStatus {
            kind: Kind::BackupConfiguration,
            namespace: ns.into(),
            name: meta.name.clone(),
            resource_version: observed.resource_version.clone(),
            status: serde_json::to_value(&status).expect("a status serializes to JSON"),
        });
    }
    out.extend(events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::{condition, events, load, objects_of, run, run_case, status_of};

    #[test]
    fn created_applies_the_trigger_owned_by_the_configuration_and_becomes_ready() {
        let a = run_case("bc-created");
        let cron = objects_of(&a, "CronJob");
        assert_eq!(cron.len(), 1);
        let cron = cron[0];
        assert_eq!(cron["metadata"]["name"], "stash-trigger-mariadb-backup");
        assert_eq!(cron["spec"]["schedule"], "*/30 * * * *");
        assert_eq!(cron["spec"]["timeZone"], "Europe/Paris");
        assert_eq!(cron["spec"]["suspend"], false);
        assert_eq!(
            cron["spec"]["jobTemplate"]["metadata"]["labels"][DELETE_JOB_ON_COMPLETION],
            "true"
        );
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "stash-trigger-mariadb-backup");
        let c = &pod["containers"][0];
        assert_eq!(c["command"], serde_json::json!(["coffer"]));
        assert_eq!(
            c["args"],
            serde_json::json!(["create-backupsession", "--namespace=demo", "mariadb-backup"])
        );
        assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
        let rb = objects_of(&a, "RoleBinding");
        assert_eq!(rb[0]["roleRef"]["name"], "coffer-trigger");
        assert_eq!(rb[0]["subjects"][0]["name"], "stash-trigger-mariadb-backup");
        let st = status_of(&a).expect("a new configuration gets a status");
        assert_eq!(st["phase"], "Ready");
        for t in [
            "ValidationPassed",
            "RepositoryFound",
            "BackendSecretFound",
            "BackupTargetFound",
            "CronJobCreated",
        ] {
            assert_eq!(condition(st, t).unwrap()["status"], "True", "{t}");
        }
        assert_eq!(st["observedGeneration"], 2);
        assert!(matches!(
            a.iter().find(|x| matches!(x, KubeAction::PatchStatus { .. })),
            Some(KubeAction::PatchStatus { resource_version: Some(rv), .. }) if rv == "100"
        ));
        assert!(events(&a).contains(&(false, "CronJobCreated".into())));
    }

    /// Deleting a configuration needs no decision: everything made for it is owned by it
    /// (controller, blockOwnerDeletion), so the garbage collector removes it.
    #[test]
    fn deleted_everything_made_for_a_configuration_is_owned_by_it() {
        let a = run_case("bc-created");
        let applied: Vec<&Value> = a
            .iter()
            .filter_map(|x| match x {
                KubeAction::Apply(v) => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(applied.len(), 3);
        for v in applied {
            let o = &v["metadata"]["ownerReferences"][0];
            assert_eq!(o["kind"], "BackupConfiguration", "{}", v["kind"]);
            assert_eq!(o["uid"], "6f1c2e7a-0b1d-4c55-9a39-5d1c3b2a1001");
            assert_eq!(o["controller"], true);
            assert_eq!(o["blockOwnerDeletion"], true);
        }
    }

    #[test]
    fn paused_suspends_the_cron_job_without_touching_the_status() {
        let a = run_case("bc-paused");
        assert_eq!(objects_of(&a, "CronJob")[0]["spec"]["suspend"], true);
        assert!(status_of(&a).is_none(), "the status did not change: {a:?}");
        assert_eq!(events(&a), vec![(false, "CronJobUpdated".to_string())]);
    }

    #[test]
    fn changed_schedule_is_applied() {
        let a = run_case("bc-schedule-changed");
        assert_eq!(
            objects_of(&a, "CronJob")[0]["spec"]["schedule"],
            "0 3 * * *"
        );
        assert!(status_of(&a).is_none());
    }

    #[test]
    fn repository_missing_is_not_ready_and_makes_no_cron_job() {
        let a = run_case("bc-repository-missing");
        assert!(
            a.iter().all(|x| !matches!(x, KubeAction::Apply(_))),
            "{a:?}"
        );
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "NotReady");
        assert_eq!(condition(st, "RepositoryFound").unwrap()["status"], "False");
        assert_eq!(
            condition(st, "BackendSecretFound").unwrap()["status"],
            "False"
        );
        assert_eq!(condition(st, "CronJobCreated").unwrap()["status"], "False");
        assert_eq!(
            condition(st, "BackupTargetFound").unwrap()["status"],
            "True"
        );
        assert_eq!(
            events(&a),
            vec![(true, "BackupConfigurationNotReady".to_string())]
        );
    }

    #[test]
    fn an_existing_cron_job_follows_the_configuration_while_its_repository_is_missing() {
        let mut i = load("bc-paused");
        let b = i.backup_configuration.as_mut().unwrap();
        b.repository = None;
        b.backend_secret_found = false;
        let a = run(&i);
        assert_eq!(objects_of(&a, "CronJob")[0]["spec"]["suspend"], true);
        assert_eq!(status_of(&a).unwrap()["phase"], "NotReady");
    }

    #[test]
    fn invalid_configuration_makes_no_cron_job() {
        let mut i = load("bc-created");
        i.backup_configuration.as_mut().unwrap().validation_error =
            Some("spec.schedule: bad".into());
        let a = run(&i);
        assert!(objects_of(&a, "CronJob").is_empty());
        assert_eq!(status_of(&a).unwrap()["phase"], "Invalid");
    }

    #[test]
    fn schedule_removed_deletes_the_cron_job_and_its_condition() {
        let a = run_case("bc-schedule-removed");
        assert!(
            matches!(&a[0], KubeAction::Delete { kind, name, .. } if kind == "CronJob" && name == "stash-trigger-mariadb-backup")
        );
        let st = status_of(&a).unwrap();
        assert!(condition(st, "CronJobCreated").is_none());
        assert_eq!(st["phase"], "Ready");
    }

    #[test]
    fn a_service_account_named_in_runtime_settings_is_used_and_none_is_made() {
        let mut i = load("bc-created");
        let bc = &mut i.backup_configuration.as_mut().unwrap().configuration;
        bc.spec.runtime_settings.as_mut().unwrap()["pod"]["serviceAccountName"] = "mine".into();
        let a = run(&i);
        assert!(objects_of(&a, "ServiceAccount").is_empty());
        assert!(objects_of(&a, "RoleBinding").is_empty());
        let cron = objects_of(&a, "CronJob")[0];
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"],
            "mine"
        );
    }

    #[test]
    fn unusable_runtime_settings_leave_the_configuration_not_ready() {
        let mut i = load("bc-created");
        let bc = &mut i.backup_configuration.as_mut().unwrap().configuration;
        bc.spec.runtime_settings.as_mut().unwrap()["container"]["resources"] = "lots".into();
        let a = run(&i);
        assert!(objects_of(&a, "CronJob").is_empty());
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "NotReady");
        let c = condition(st, "CronJobCreated").unwrap();
        assert_eq!(c["status"], "False");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("runtimeSettings.container"),
            "{c}"
        );
    }
}
