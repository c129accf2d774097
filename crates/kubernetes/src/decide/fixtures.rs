//! Golden tests of every decision from YAML fixtures: `fixtures/<case>/input.yaml` is the
//! resource, what was observed and the time; the objects the decision applies or creates are
//! compared with `fixtures/<case>/expected/*.yaml` (one valid Kubernetes object per file, so
//! that `kubernetes-validate` can check them), and the whole list of actions with
//! `fixtures/<case>/actions.yaml` (objects named by their file). `UPDATE_GOLDEN=1` rewrites
//! the expected files.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use coffer_api::{BackupConfiguration, BackupSession, Repository, RestoreSession};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::CronJob;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    backup_configuration, backup_session, binlog_archive, restore_session, JobState, ObservedJob,
};
use crate::{KubeAction, OperatorSettings};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Input {
    /// What the case shows (documentation only).
    #[allow(dead_code)]
    pub description: String,
    pub now: Timestamp,
    #[serde(default)]
    pub settings: Option<Settings>,
    pub backup_configuration: Option<BcInput>,
    pub backup_session: Option<BsInput>,
    pub restore_session: Option<RsInput>,
    pub binlog_archive: Option<BaInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Settings {
    pub pushgateway: Option<String>,
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BcInput {
    pub configuration: BackupConfiguration,
    pub resource_version: Option<String>,
    pub repository: Option<Repository>,
    #[serde(default)]
    pub backend_secret_found: bool,
    #[serde(default)]
    pub target_found: bool,
    pub validation_error: Option<String>,
    pub cron_job: Option<CronJob>,
    pub verification_cron_job: Option<CronJob>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JobInput {
    pub name: String,
    /// Active, Succeeded or Failed.
    pub state: String,
    #[serde(default)]
    pub reason: String,
    pub start_time: Option<Timestamp>,
}

impl JobInput {
    fn observed(&self) -> ObservedJob {
        ObservedJob {
            name: self.name.clone(),
            state: match self.state.as_str() {
                "Active" => JobState::Active,
                "Succeeded" => JobState::Succeeded,
                "Failed" => JobState::Failed {
                    reason: self.reason.clone(),
                },
                other => panic!("job state {other:?}: expected Active, Succeeded or Failed"),
            },
            start_time: self.start_time,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BsInput {
    pub session: BackupSession,
    pub resource_version: Option<String>,
    pub configuration: Option<BackupConfiguration>,
    pub repository: Option<Repository>,
    #[serde(default)]
    pub siblings: Vec<BackupSession>,
    pub job: Option<JobInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RsInput {
    pub session: RestoreSession,
    pub resource_version: Option<String>,
    #[serde(default)]
    pub jobs: Vec<JobInput>,
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BaInput {
    pub archive: coffer_api::archive::BinlogArchive,
    pub resource_version: Option<String>,
    pub repository: Option<Repository>,
    pub deployment: Option<k8s_openapi::api::apps::v1::Deployment>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub(crate) fn load(case: &str) -> Input {
    let path = root().join(case).join("input.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn settings(i: &Input) -> OperatorSettings {
    let mut s = OperatorSettings::default();
    if let Some(o) = &i.settings {
        s.pushgateway = o.pushgateway.clone();
        s.image_pull_secrets = o.image_pull_secrets.clone();
    }
    s
}

/// The decision the case's input asks for.
pub(crate) fn run(i: &Input) -> Vec<KubeAction> {
    let s = settings(i);
    if let Some(b) = &i.binlog_archive {
        assert!(
            i.backup_configuration.is_none()
                && i.backup_session.is_none()
                && i.restore_session.is_none(),
            "an input has exactly one resource"
        );
        return binlog_archive::decide(
            &b.archive,
            &binlog_archive::Observed {
                resource_version: b.resource_version.clone(),
                repository: b.repository.clone(),
                deployment: b.deployment.clone(),
            },
            &s,
            i.now,
        );
    }
    match (
        &i.backup_configuration,
        &i.backup_session,
        &i.restore_session,
    ) {
        (Some(b), None, None) => backup_configuration::decide(
            &b.configuration,
            &backup_configuration::Observed {
                resource_version: b.resource_version.clone(),
                repository: b.repository.clone(),
                backend_secret_found: b.backend_secret_found,
                target_found: b.target_found,
                validation: match &b.validation_error {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                },
                cron_job: b.cron_job.clone(),
                verification_cron_job: b.verification_cron_job.clone(),
            },
            &s,
            i.now,
        ),
        (None, Some(b), None) => backup_session::decide(
            &b.session,
            &backup_session::Observed {
                resource_version: b.resource_version.clone(),
                configuration: b.configuration.clone(),
                repository: b.repository.clone(),
                siblings: b.siblings.clone(),
                job: b.job.as_ref().map(JobInput::observed),
            },
            &s,
            i.now,
        ),
        (None, None, Some(r)) => restore_session::decide(
            &r.session,
            &restore_session::Observed {
                resource_version: r.resource_version.clone(),
                jobs: r.jobs.iter().map(JobInput::observed).collect(),
                repository: r.repository.clone(),
            },
            &s,
            i.now,
        ),
        _ => {
            panic!("an input has exactly one of backupConfiguration, backupSession, restoreSession")
        }
    }
}

pub(crate) fn run_case(case: &str) -> Vec<KubeAction> {
    run(&load(case))
}

/// The actions as golden files: `expected/<file>` per applied or created object, and the
/// list of actions.
fn render(actions: &[KubeAction]) -> (BTreeMap<String, String>, String) {
    let mut files = BTreeMap::new();
    let mut list = Vec::new();
    let yaml = |v: &Value| serde_yaml::to_string(v).expect("JSON renders as YAML");
    for (n, a) in actions.iter().enumerate() {
        let entry = match a {
            KubeAction::Apply(v) | KubeAction::Create(v) => {
                let kind = v["kind"].as_str().unwrap_or("object").to_lowercase();
                let name = v["metadata"]["name"]
                    .as_str()
                    .or_else(|| v["metadata"]["generateName"].as_str())
                    .unwrap_or("")
                    .trim_end_matches('-');
                let file = format!("{:02}-{kind}-{name}.yaml", n + 1);
                files.insert(file.clone(), yaml(v));
                let verb = if matches!(a, KubeAction::Apply(_)) {
                    "apply"
                } else {
                    "create"
                };
                json!({ verb: format!("expected/{file}") })
            }
            KubeAction::Delete {
                api_version,
                kind,
                namespace,
                name,
            } => {
                json!({"delete": {"apiVersion": api_version, "kind": kind, "namespace": namespace, "name": name}})
            }
            KubeAction::PatchStatus {
                kind,
                namespace,
                name,
                resource_version,
                status,
            } => json!({"patchStatus": {
                "kind": kind.as_str(), "namespace": namespace, "name": name,
                "resourceVersion": resource_version, "status": status,
            }}),
            KubeAction::Event {
                kind,
                namespace,
                name,
                warning,
                reason,
                message,
            } => json!({"event": {
                "kind": kind.as_str(), "namespace": namespace, "name": name,
                "type": if *warning { "Warning" } else { "Normal" },
                "reason": reason, "message": message,
            }}),
            KubeAction::RequeueAfter(d) => json!({"requeueAfter": format!("{}s", d.as_secs())}),
        };
        list.push(entry);
    }
    (files, yaml(&Value::Array(list)))
}

fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("a readable directory entry").path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn golden_fixtures() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(root())
        .expect("crates/kubernetes/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 14, "only {} fixture cases", cases.len());
    let mut failures = Vec::new();
    for dir in cases {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (files, list) = render(&run_case(&case));
        let expected = dir.join("expected");
        if update {
            let _ = fs::remove_dir_all(&expected);
            if !files.is_empty() {
                fs::create_dir_all(&expected).unwrap();
            }
            for (f, text) in &files {
                fs::write(expected.join(f), text).unwrap();
            }
            fs::write(dir.join("actions.yaml"), &list).unwrap();
            continue;
        }
        if read_dir(&expected) != files {
            failures.push(format!(
                "{case}: the objects differ from {}",
                expected.display()
            ));
        }
        if fs::read_to_string(dir.join("actions.yaml")).ok().as_deref() != Some(list.as_str()) {
            failures.push(format!("{case}: the actions differ from actions.yaml"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(rerun with UPDATE_GOLDEN=1 and review the diff if the change is intended)",
        failures.join("\n")
    );
}

/// The applied (or created) objects of `kind`.
pub(crate) fn objects_of<'a>(actions: &'a [KubeAction], kind: &str) -> Vec<&'a Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            KubeAction::Apply(v) | KubeAction::Create(v) if v["kind"] == kind => Some(v),
            _ => None,
        })
        .collect()
}

/// The status written, if any.
pub(crate) fn status_of(actions: &[KubeAction]) -> Option<&Value> {
    actions.iter().find_map(|a| match a {
        KubeAction::PatchStatus { status, .. } => Some(status),
        _ => None,
    })
}

/// The condition `type_` of a status (or of its first target when `target`).
pub(crate) fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The reasons of the Events recorded, in order.
pub(crate) fn events(actions: &[KubeAction]) -> Vec<(bool, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            KubeAction::Event {
                warning, reason, ..
            } => Some((*warning, reason.clone())),
            _ => None,
        })
        .collect()
}
