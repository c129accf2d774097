//! BackupConfiguration → the CronJob that triggers its sessions, the CronJob that verifies its
//! newest snapshot, and the configuration's status.
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
//! coffer's own `spec.verification.schedule` gets a second CronJob, made, followed and
//! deleted the same way ([`Scheduled`] names the two): [`names::verify_cron_job`], the same
//! `timeZone` and `suspend`, `concurrencyPolicy: Forbid`, Jobs with `backoffLimit: 0` whose
//! pod is the backup Job's agent pod (image, agent environment, the `/tmp` emptyDir,
//! runtimeSettings and security; `objects::agent_pod_plan`) running
//! `coffer verify --namespace=<ns> <bc>` ([`verify_args`]): the newest snapshot restored into a
//! throwaway server inside the pod, checked, and the outcome written to the configuration's
//! `status.lastVerification` through the API; a Repository with a `local` backend has its
//! volume mounted at `mountPath` there, as in the backup Job. Its ServiceAccount (named after the CronJob
//! unless runtimeSettings names one) is bound to `settings.verify_job_cluster_role`. A
//! verification every N backups (`everyBackups`) needs no CronJob: the backup Job's agent runs
//! it once the session ends.
//!
//! Once a CronJob exists it follows every change of the configuration (it is applied on
//! every reconcile: server-side apply makes an unchanged object a no-op), even while the
//! Repository is missing (the sessions it creates are then skipped with the reason). A
//! configuration without `schedule` runs only when asked (`coffer backup`): its CronJob, if
//! one was made, is deleted, and no CronJobCreated condition is written; likewise without
//! `spec.verification.schedule` for the verification CronJob and VerificationCronJobCreated.
//!
//! A Repository with a `local` backend but no volume source (hostPath, persistentVolumeClaim,
//! …) cannot be mounted into any pod: RepositoryFound is False with that reason.
//!
//! The status — conditions ValidationPassed, RepositoryFound, BackendSecretFound,
//! BackupTargetFound, CronJobCreated, VerificationCronJobCreated and the phase Ready /
//! NotReady / Invalid — is [`coffer_control::readiness`]'s (either CronJob not made is
//! NotReady), written (conditionally on the resourceVersion) only when it changed, with an
//! Event when the phase changes and when a CronJob is created, changed or deleted
//! (`CronJob…` for the trigger, `VerificationCronJob…` for the verification).
//!
//! Deletion needs no decision: the CronJobs, their ServiceAccounts and RoleBindings are owned
//! by the configuration, so Kubernetes' garbage collector removes them (and the CronJobs'
//! Jobs) when it is deleted; the controller has no finalizer and does nothing for a deleted
//! object.

use std::collections::BTreeMap;

use coffer_api::{BackupConfiguration, Kind, Repository};
use coffer_control::Readiness;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::{names, objects};
use crate::{KubeAction, OperatorSettings};

/// The label Stash's trigger Jobs carry (its operator deletes such Jobs once they succeed).
pub const DELETE_JOB_ON_COMPLETION: &str = "stash.appscode.com/delete-job-on-completion";
/// The trigger container's name.
pub const TRIGGER_CONTAINER: &str = "coffer-trigger";
/// The verification CronJob's container name.
pub const VERIFY_CONTAINER: &str = "coffer-verify";

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

/// The verification CronJob's container runs `coffer verify --namespace=<ns> <bc>` (command
/// `["coffer"]`, these args): with `COFFER_PLATFORM=kubernetes` it reads the configuration,
/// its Repository and Secrets through the API, restores the newest snapshot into a throwaway
/// server inside the pod, and writes the outcome to the configuration's status
/// (`lastVerification`); it exits non-zero when the verification failed.
pub fn verify_args(namespace: &str, bc: &str) -> Vec<String> {
    vec![
        "verify".into(),
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
    /// The verification CronJob ([`names::verify_cron_job`]), if it exists.
    pub verification_cron_job: Option<CronJob>,
}

fn references(bc: &BackupConfiguration, o: &Observed) -> Readiness {
    let ns = bc.metadata.namespace();
    let repo_ns = bc.spec.repository.namespace.as_deref().unwrap_or(ns);
    let repo = format!("Repository {repo_ns}/{}", bc.spec.repository.name);
    let repository_found = match &o.repository {
        // Found, but its pods could not mount it: a local backend needs a volume source.
        Some(r) => objects::repository_volume(r).map(|_| ()),
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
        verification_cron_job_created: None,
    }
}

/// The configuration's CronJobs: each runs one of its schedules, and both are made, kept up
/// to date and deleted alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// `spec.schedule`: the trigger, which creates BackupSessions.
    Backup,
    /// `spec.verification.schedule`: `coffer verify` of the configuration.
    Verification,
}

impl Scheduled {
    pub const ALL: [Scheduled; 2] = [Scheduled::Backup, Scheduled::Verification];

    /// The CronJob's name.
    pub fn cron_job_name(self, bc: &str) -> String {
        match self {
            Scheduled::Backup => names::trigger_cron_job(bc),
            Scheduled::Verification => names::verify_cron_job(bc),
        }
    }

    /// The schedule, when the configuration has one (blank counts as none).
    fn schedule(self, bc: &BackupConfiguration) -> Option<&str> {
        match self {
            Scheduled::Backup => bc.spec.schedule.as_deref(),
            Scheduled::Verification => bc
                .spec
                .verification
                .as_ref()
                .and_then(|v| v.schedule.as_deref()),
        }
        .filter(|s| !s.trim().is_empty())
    }

    fn field(self) -> &'static str {
        match self {
            Scheduled::Backup => "spec.schedule",
            Scheduled::Verification => "spec.verification.schedule",
        }
    }

    /// The prefix of its Events' reasons (`<prefix>Created`, `Updated`, `Deleted`).
    fn reason(self) -> &'static str {
        match self {
            Scheduled::Backup => "CronJob",
            Scheduled::Verification => "VerificationCronJob",
        }
    }

    fn observed(self, o: &Observed) -> Option<&CronJob> {
        match self {
            Scheduled::Backup => o.cron_job.as_ref(),
            Scheduled::Verification => o.verification_cron_job.as_ref(),
        }
    }

    /// The pod that runs the schedule, and the ClusterRole its ServiceAccount is bound to.
    fn pod<'a>(
        self,
        bc: &'a BackupConfiguration,
        service_account: String,
        labels: BTreeMap<String, String>,
        settings: &'a OperatorSettings,
    ) -> objects::PodPlan<'a> {
        let ns = bc.metadata.namespace();
        let rs = bc.spec.runtime_settings.as_ref();
        match self {
            // Only creates a BackupSession through the API: no scratch space, no agent env.
            Scheduled::Backup => objects::PodPlan {
                container: TRIGGER_CONTAINER,
                args: trigger_args(ns, &bc.metadata.name),
                env: vec![EnvVar {
                    name: "COFFER_PLATFORM".into(),
                    value: Some("kubernetes".into()),
                    value_from: None,
                }],
                volumes: Vec::new(),
                mounts: Vec::new(),
                service_account,
                runtime_settings: rs,
                labels,
            },
            // An agent like the backup Job's: the throwaway server's data directory is in
            // the pod's scratch space.
            Scheduled::Verification => objects::agent_pod_plan(
                VERIFY_CONTAINER,
                verify_args(ns, &bc.metadata.name),
                service_account,
                rs,
                labels,
                settings,
            ),
        }
    }

    fn cluster_role(self, settings: &OperatorSettings) -> &str {
        match self {
            Scheduled::Backup => &settings.trigger_cluster_role,
            Scheduled::Verification => &settings.verify_job_cluster_role,
        }
    }
}

/// The CronJob's ServiceAccount, RoleBinding (unless the user names their own account) and
/// the CronJob itself, in the order they must be applied.
fn cron_objects(
    bc: &BackupConfiguration,
    which: Scheduled,
    schedule: &str,
    repository: Option<&Repository>,
    settings: &OperatorSettings,
) -> Result<Vec<Value>, String> {
    let ns = bc.metadata.namespace();
    let name = which.cron_job_name(&bc.metadata.name);
    let labels = objects::labels(Kind::BackupConfiguration, &bc.metadata.name);
    let owner = objects::owner(Kind::BackupConfiguration, &bc.metadata);
    let (sa, mut out) = objects::pod_service_account(
        bc.spec.runtime_settings.as_ref(),
        &name,
        ns,
        &labels,
        owner.clone(),
        which.cluster_role(settings),
    );
    let mut plan = which.pod(bc, sa, labels.clone(), settings);
    if which == Scheduled::Verification {
        // `coffer verify` opens the Repository: a local backend's volume is mounted.
        plan.mount_repository(repository)?;
    }
    let template = objects::pod_template(plan, settings)?;
    let mut job_labels = labels.clone();
    let (concurrency, backoff) = match which {
        Scheduled::Backup => {
            job_labels.insert(DELETE_JOB_ON_COMPLETION.into(), "true".into());
            (None, None)
        }
        // One verification at a time; a failed one is not run again (its outcome is
        // recorded on the configuration's status; the next schedule tries again).
        Scheduled::Verification => (Some("Forbid".to_string()), Some(0)),
    };
    let cron = CronJob {
        metadata: objects::metadata(&name, ns, &labels, owner),
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            time_zone: bc.spec.time_zone.clone(),
            suspend: Some(bc.spec.paused),
            concurrency_policy: concurrency,
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: backoff,
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

/// One CronJob of the configuration: applied (with an Event when it is created or changes)
/// or deleted, into `applies` and `events`. Returns its condition: None without a schedule.
fn ensure_cron_job(
    bc: &BackupConfiguration,
    which: Scheduled,
    observed: &Observed,
    r: &Readiness,
    settings: &OperatorSettings,
    applies: &mut Vec<KubeAction>,
    events: &mut Vec<KubeAction>,
) -> Option<Result<(), String>> {
    let meta = &bc.metadata;
    let ns = meta.namespace();
    let name = which.cron_job_name(&meta.name);
    let existing = which.observed(observed);
    let event = |reason: &str, message: String| {
        objects::event(
            Kind::BackupConfiguration,
            meta,
            false,
            &format!("{}{reason}", which.reason()),
            message,
        )
    };
    let Some(schedule) = which.schedule(bc) else {
        if existing.is_some() {
            applies.push(KubeAction::Delete {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                namespace: ns.into(),
                name: name.clone(),
            });
            events.push(event(
                "Deleted",
                format!("deleted CronJob {ns}/{name}: {} was removed", which.field()),
            ));
        }
        return None;
    };
    let refs_ok = r.validation.is_ok()
        && r.repository_found.is_ok()
        && r.backend_secret_found.is_ok()
        && r.target_found.is_ok();
    if !(r.validation.is_ok() && (refs_ok || existing.is_some())) {
        return Some(if existing.is_some() {
            Ok(())
        } else {
            Err(format!(
                "CronJob {ns}/{name} is created once the configuration is valid and its \
                 Repository, storage Secret and target are found"
            ))
        });
    }
    let objs = match cron_objects(bc, which, schedule, observed.repository.as_ref(), settings) {
        Ok(objs) => objs,
        Err(e) => return Some(Err(format!("CronJob {ns}/{name} cannot be built: {e}"))),
    };
    applies.extend(objs.into_iter().map(KubeAction::Apply));
    match existing {
        None => events.push(event(
            "Created",
            format!(
                "created CronJob {ns}/{name} (schedule {schedule:?}{})",
                if bc.spec.paused { ", suspended" } else { "" }
            ),
        )),
        Some(cron) => {
            let changes = cron_changes(bc, schedule, cron);
            if !changes.is_empty() {
                events.push(event(
                    "Updated",
                    format!("updated CronJob {ns}/{name}: {}", changes.join(", ")),
                ));
            }
        }
    }
    Some(Ok(()))
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
    let mut r = references(bc, observed);
    let mut applies = Vec::new();
    let mut events = Vec::new();
    for which in Scheduled::ALL {
        let created = ensure_cron_job(bc, which, observed, &r, settings, &mut applies, &mut events);
        match which {
            Scheduled::Backup => r.cron_job_created = created,
            Scheduled::Verification => r.verification_cron_job_created = created,
        }
    }

    // Without a schedule there is no CronJob to report on: readiness drops its condition.
    let mut status = coffer_control::readiness(&r, bc.status.as_ref(), &objects::rfc3339(now));
    status.observed_generation = meta.generation;
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

    fn verify_cron(a: &[KubeAction]) -> Option<&Value> {
        objects_of(a, "CronJob")
            .into_iter()
            .find(|c| c["metadata"]["name"] == "coffer-verify-mariadb-backup")
    }

    #[test]
    fn verification_schedule_gets_its_cron_job_running_coffer_verify_as_an_agent() {
        let a = run_case("bc-verification-created");
        let cron = verify_cron(&a).expect("the verification CronJob is applied");
        assert_eq!(cron["spec"]["schedule"], "0 4 * * *");
        assert_eq!(cron["spec"]["timeZone"], "Europe/Paris");
        assert_eq!(cron["spec"]["suspend"], false);
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
        let job = &cron["spec"]["jobTemplate"];
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert!(
            job["metadata"]["labels"]
                .get(DELETE_JOB_ON_COMPLETION)
                .is_none(),
            "a verification's Job and its log stay for the CronJob's history"
        );
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "coffer-verify-mariadb-backup");
        let c = &pod["containers"][0];
        assert_eq!(c["name"], VERIFY_CONTAINER);
        assert_eq!(
            c["args"],
            serde_json::json!(["verify", "--namespace=demo", "mariadb-backup"])
        );
        // The backup Job's pod, but for its container and arguments: same image, environment,
        // volumes, security and runtimeSettings.
        let mut bs = load("bs-created");
        let b = bs.backup_session.as_mut().unwrap();
        b.configuration = Some(
            load("bc-verification-created")
                .backup_configuration
                .unwrap()
                .configuration,
        );
        bs.settings = load("bc-verification-created").settings;
        let backup = run(&bs);
        let mut agent = objects_of(&backup, "Job")[0]["spec"]["template"]["spec"].clone();
        let mut verify = pod.clone();
        for p in [&mut agent, &mut verify] {
            p["containers"][0]["name"] = "x".into();
            p["containers"][0]["args"] = Value::Null;
            p["serviceAccountName"] = Value::Null;
        }
        assert_eq!(verify, agent);
        let env = &c["env"];
        assert!(env
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COFFER_PUSHGATEWAY"));
        let rb = objects_of(&a, "RoleBinding");
        let rb = rb
            .iter()
            .find(|r| r["metadata"]["name"] == "coffer-verify-mariadb-backup")
            .expect("its RoleBinding");
        assert_eq!(rb["roleRef"]["name"], "coffer-verify-job");
        assert_eq!(rb["subjects"][0]["name"], "coffer-verify-mariadb-backup");
        for o in objects_of(&a, "ServiceAccount")
            .into_iter()
            .chain(objects_of(&a, "RoleBinding"))
            .chain(objects_of(&a, "CronJob"))
        {
            assert_eq!(
                o["metadata"]["ownerReferences"][0]["uid"],
                "6f1c2e7a-0b1d-4c55-9a39-5d1c3b2a1001"
            );
        }
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "Ready");
        assert_eq!(
            condition(st, "VerificationCronJobCreated").unwrap()["status"],
            "True"
        );
        assert_eq!(
            events(&a),
            vec![
                (false, "CronJobCreated".to_string()),
                (false, "VerificationCronJobCreated".to_string()),
                (false, "BackupConfigurationReady".to_string()),
            ]
        );
    }

    /// (case, verification CronJob's schedule and suspend when applied (None: deleted), the
    /// condition's status (None: absent), the events).
    #[test]
    fn verification_cron_job_table() {
        type Case = (
            &'static str,
            Option<(&'static str, bool)>,
            Option<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "bc-verification-schedule-changed",
                Some(("15 5 * * 0", false)),
                Some("True"),
                vec!["VerificationCronJobUpdated"],
            ),
            (
                "bc-verification-paused",
                Some(("0 4 * * *", true)),
                Some("True"),
                vec!["CronJobUpdated", "VerificationCronJobUpdated"],
            ),
            (
                "bc-verification-removed",
                None,
                None,
                vec!["VerificationCronJobDeleted"],
            ),
        ];
        for (case, want, cond, want_events) in cases {
            let i = load(case);
            let a = run(&i);
            let old = i
                .backup_configuration
                .as_ref()
                .unwrap()
                .configuration
                .status
                .clone();
            match want {
                Some((schedule, suspend)) => {
                    let cron = verify_cron(&a).unwrap_or_else(|| panic!("{case}: {a:?}"));
                    assert_eq!(cron["spec"]["schedule"], schedule, "{case}");
                    assert_eq!(cron["spec"]["suspend"], suspend, "{case}");
                    assert!(
                        !a.iter().any(|x| matches!(x, KubeAction::Delete { .. })),
                        "{case}"
                    );
                }
                None => {
                    assert!(verify_cron(&a).is_none(), "{case}");
                    let deleted = a.iter().any(|x| {
                        matches!(x, KubeAction::Delete { kind, name, .. }
                            if kind == "CronJob" && name == "coffer-verify-mariadb-backup")
                    });
                    assert!(deleted, "{case}: {a:?}");
                }
            }
            // The trigger follows spec.schedule whatever happens to the verification's.
            let trigger: Vec<_> = objects_of(&a, "CronJob")
                .into_iter()
                .filter(|c| c["metadata"]["name"] == "stash-trigger-mariadb-backup")
                .collect();
            assert_eq!(trigger.len(), 1, "{case}");
            let got_cond = match status_of(&a) {
                Some(st) => {
                    condition(st, "VerificationCronJobCreated").map(|c| c["status"].clone())
                }
                // Unchanged: as the configuration's status has it.
                None => {
                    let old = serde_json::to_value(old.unwrap()).unwrap();
                    condition(&old, "VerificationCronJobCreated").map(|c| c["status"].clone())
                }
            };
            assert_eq!(got_cond, cond.map(Value::from), "{case}");
            if let Some(st) = status_of(&a) {
                assert_eq!(st["phase"], "Ready", "{case}");
            }
            let got: Vec<String> = events(&a).into_iter().map(|(_, r)| r).collect();
            assert_eq!(got, want_events, "{case}");
        }
    }

    #[test]
    fn a_verification_cron_job_waits_for_the_repository_like_the_trigger() {
        let mut i = load("bc-verification-created");
        let b = i.backup_configuration.as_mut().unwrap();
        b.repository = None;
        b.backend_secret_found = false;
        let a = run(&i);
        assert!(verify_cron(&a).is_none(), "{a:?}");
        let st = status_of(&a).unwrap();
        assert_eq!(st["phase"], "NotReady");
        let c = condition(st, "VerificationCronJobCreated").unwrap();
        assert_eq!(c["status"], "False");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("coffer-verify-mariadb-backup"),
            "{c}"
        );
    }

    #[test]
    fn a_verification_schedule_alone_makes_only_the_verification_cron_job() {
        let mut i = load("bc-verification-created");
        i.backup_configuration
            .as_mut()
            .unwrap()
            .configuration
            .spec
            .schedule = None;
        let a = run(&i);
        let crons = objects_of(&a, "CronJob");
        assert_eq!(crons.len(), 1);
        assert_eq!(crons[0]["metadata"]["name"], "coffer-verify-mariadb-backup");
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
