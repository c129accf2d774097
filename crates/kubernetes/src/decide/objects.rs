//! What the decide modules share: how a Job is observed, and the pieces every object the
//! operator creates has (owner references, labels, the pod's security settings, the agent's
//! container contract).

use jiff::Timestamp;

/// Where a Job stands, from its `status` (`active`, `succeeded`, `failed` and the `Failed`
/// condition's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// A pod runs (or is about to): `status.active > 0`, or nothing has finished yet.
    Active,
    /// `status.succeeded > 0`.
    Succeeded,
    /// `status.failed > 0` or the `Failed` condition; `reason` is the condition's reason
    /// (`BackoffLimitExceeded`, `DeadlineExceeded`, …) or a description of the pod's end.
    Failed { reason: String },
}

/// One Job, as the observe layer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedJob {
    pub name: String,
    pub state: JobState,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
}

impl ObservedJob {
    /// What a Job's status says: `Complete` (or a succeeded pod) is Succeeded; the `Failed`
    /// condition is Failed with its reason; a failed pod with none active is Failed too (the
    /// Jobs here have `backoffLimit: 0`); anything else — including `FailureTarget`, while the
    /// pods are still being stopped — is Active.
    pub fn from_job(job: &k8s_openapi::api::batch::v1::Job) -> ObservedJob {
        let st = job.status.clone().unwrap_or_default();
        let conds = st.conditions.unwrap_or_default();
        let holds = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
        let state = if holds("Complete").is_some() || st.succeeded.unwrap_or(0) > 0 {
            JobState::Succeeded
        } else if let Some(c) = holds("Failed") {
            JobState::Failed {
                reason: c
                    .reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "Failed".into()),
            }
        } else if st.failed.unwrap_or(0) > 0 && st.active.unwrap_or(0) == 0 {
            JobState::Failed {
                reason: "its pod failed".into(),
            }
        } else {
            JobState::Active
        };
        ObservedJob {
            name: job.metadata.name.clone().unwrap_or_default(),
            state,
            start_time: st
                .start_time
                .and_then(|t| t.0.to_string().parse::<Timestamp>().ok()),
        }
    }
}

use std::collections::BTreeMap;

use coffer_api::Kind;
use k8s_openapi::{
    api::{
        core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference,
            ObjectFieldSelector, PodSpec, PodTemplateSpec, ServiceAccount, Volume, VolumeMount,
        },
        rbac::v1::{RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{KubeAction, OperatorSettings};

/// The label every object the operator creates carries, so they can be listed and told apart
/// from Stash's.
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "coffer");
pub(crate) const INVOKER_TYPE: &str = "stash.appscode.com/invoker-type";
pub(crate) const INVOKER_NAME: &str = "stash.appscode.com/invoker-name";

/// The emptyDir every agent pod writes its temporary files to (its root filesystem is
/// read-only), as Stash's `stash-tmp-dir`.
pub(crate) const TMP_VOLUME: &str = "stash-tmp-dir";
pub(crate) const TMP_DIR: &str = "/tmp";
/// The user agent pods run as unless `runtimeSettings.pod.securityContext` says otherwise.
pub(crate) const DEFAULT_USER: i64 = 65534;

/// A controller owner reference (with blockOwnerDeletion) to one of coffer's resources, so
/// that deleting it deletes what it owns.
pub(crate) fn owner(kind: Kind, meta: &coffer_api::ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version().into(),
        kind: kind.as_str().into(),
        name: meta.name.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub(crate) fn labels(invoker: Kind, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (INVOKER_TYPE.to_string(), invoker.as_str().to_string()),
        (INVOKER_NAME.to_string(), name.to_string()),
    ])
}

pub(crate) fn metadata(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

/// The ServiceAccount a pod runs as: `runtimeSettings.pod.serviceAccountName` when set (the
/// user grants it what it needs, so nothing is created), else `name` — returned with the
/// ServiceAccount and the RoleBinding that grants it `cluster_role` in its namespace, both
/// named `name`, for the caller to apply.
pub(crate) fn pod_service_account(
    runtime_settings: Option<&Value>,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: OwnerReference,
    cluster_role: &str,
) -> (String, Vec<Value>) {
    let user_sa = runtime_settings
        .and_then(|r| r.pointer("/pod/serviceAccountName"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(sa) = user_sa {
        return (sa.to_string(), Vec::new());
    }
    let sa = ServiceAccount {
        metadata: metadata(name, namespace, labels, owner.clone()),
        ..Default::default()
    };
    let rb = RoleBinding {
        metadata: metadata(name, namespace, labels, owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    };
    (name.to_string(), vec![value(&sa), value(&rb)])
}

/// An object as the JSON body of a request (k8s-openapi writes apiVersion and kind).
pub(crate) fn value<T: Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).expect("k8s-openapi objects serialize to JSON")
}

/// `now` as Kubernetes writes times: RFC 3339, UTC, whole seconds.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn event(
    kind: Kind,
    meta: &coffer_api::ObjectMeta,
    warning: bool,
    reason: &str,
    message: impl Into<String>,
) -> KubeAction {
    KubeAction::Event {
        kind,
        namespace: meta.namespace().into(),
        name: meta.name.clone(),
        warning,
        reason: reason.into(),
        message: message.into(),
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// The agent container's environment, the contract between the operator and `coffer agent`:
/// the platform, where the pod is (downward API: its namespace, name and IP, the IP being the
/// address a Galera donor sends its SST to), the Pushgateway when one is configured, and the
/// temporary directory. Never a Secret value: the agent reads Secrets through the API.
pub(crate) fn agent_env(settings: &OperatorSettings) -> Vec<EnvVar> {
    let mut e = vec![
        env("COFFER_PLATFORM", "kubernetes"),
        env_field("COFFER_NAMESPACE", "metadata.namespace"),
        env_field("COFFER_POD_NAME", "metadata.name"),
        env_field("COFFER_POD_IP", "status.podIP"),
    ];
    if let Some(pg) = &settings.pushgateway {
        e.push(env("COFFER_PUSHGATEWAY", pg));
    }
    e.push(env("TMPDIR", TMP_DIR));
    e
}

/// What goes into one pod the operator creates.
pub(crate) struct PodPlan<'a> {
    pub container: &'a str,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub service_account: String,
    /// Stash's `runtimeSettings` (`{container: {...}, pod: {...}}`).
    pub runtime_settings: Option<&'a Value>,
    pub labels: BTreeMap<String, String>,
}

/// The pod of an agent — a backup or restore Job's, or a verification's: the agent's
/// environment ([`agent_env`]) and the `stash-tmp-dir` emptyDir at `/tmp` (its scratch space,
/// the root filesystem being read-only). The caller may add to it (a restore's volumes, a
/// local Repository's: [`PodPlan::mount_repository`]).
pub(crate) fn agent_pod_plan<'a>(
    container: &'a str,
    args: Vec<String>,
    service_account: String,
    runtime_settings: Option<&'a Value>,
    labels: BTreeMap<String, String>,
    settings: &OperatorSettings,
) -> PodPlan<'a> {
    let (tmp, tmp_mount) = tmp_volume();
    PodPlan {
        container,
        args,
        env: agent_env(settings),
        volumes: vec![tmp],
        mounts: vec![tmp_mount],
        service_account,
        runtime_settings,
        labels,
    }
}

/// The volume a Repository's `local` backend is mounted from in every agent pod.
pub(crate) const LOCAL_REPOSITORY_VOLUME: &str = "stash-local-repository";

/// A Repository's `spec.backend.local` as a volume and its mount at `mountPath` (Stash's
/// inline VolumeSource, kept as given: hostPath, persistentVolumeClaim, nfs, …); the agent,
/// told it runs in a pod, opens `<mountPath>/<subPath>`. None for any other backend. A local
/// backend without a volume source, or with one Kubernetes does not know, is an error
/// naming the field: the pod would have nothing to mount.
pub(crate) fn repository_volume(
    repo: &coffer_api::Repository,
) -> Result<Option<(Volume, VolumeMount)>, String> {
    let Some(local) = &repo.spec.backend.local else {
        return Ok(None);
    };
    let field = format!(
        "spec.backend.local of Repository {}/{}",
        repo.metadata.namespace(),
        repo.metadata.name
    );
    if !local.has_volume_source() {
        return Err(format!(
            "{field} has no volume source: on Kubernetes the backup, restore and verification \
             pods mount the repository from one (hostPath, persistentVolumeClaim, nfs, …) at \
             mountPath; add it"
        ));
    }
    let mut source = serde_json::Map::new();
    if let Some(h) = &local.host_path {
        source.insert("hostPath".into(), value(h));
    }
    source.extend(local.volume_source.clone());
    source.insert("name".into(), json!(LOCAL_REPOSITORY_VOLUME));
    let volume: Volume = serde_json::from_value(Value::Object(source.clone()))
        .map_err(|e| format!("{field} is not a valid volume source: {e}"))?;
    // k8s-openapi skips fields it does not know: a misspelt source would mount nothing.
    let kept = value(&volume);
    if let Some(k) = source.keys().find(|k| kept.get(k.as_str()).is_none()) {
        return Err(format!(
            "{field}: `{k}` is not a Kubernetes volume source (hostPath, persistentVolumeClaim, \
             nfs, …)"
        ));
    }
    let mount = VolumeMount {
        name: LOCAL_REPOSITORY_VOLUME.into(),
        mount_path: local.mount_path.clone(),
        ..Default::default()
    };
    Ok(Some((volume, mount)))
}

impl PodPlan<'_> {
    /// Mounts the Repository's local backend, if it has one (see [`repository_volume`]).
    pub(crate) fn mount_repository(
        &mut self,
        repo: Option<&coffer_api::Repository>,
    ) -> Result<(), String> {
        if let Some((v, m)) = repo.map(repository_volume).transpose()?.flatten() {
            self.volumes.push(v);
            self.mounts.push(m);
        }
        Ok(())
    }
}

/// `runtimeSettings.pod` fields that are PodSpec fields of the same name.
const POD_FIELDS: [&str; 12] = [
    "nodeSelector",
    "automountServiceAccountToken",
    "securityContext",
    "affinity",
    "schedulerName",
    "tolerations",
    "priorityClassName",
    "priority",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "topologySpreadConstraints",
];
/// `runtimeSettings.container` fields that are Container fields of the same name (`env` is
/// appended separately; `nice` and `ionice` are not supported).
const CONTAINER_FIELDS: [&str; 3] = ["resources", "securityContext", "envFrom"];

/// Deep-merges `over` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The pod template: one container running the settings' image as a non-root user with a
/// read-only root filesystem, no privilege escalation and no capabilities, then
/// `runtimeSettings` over it (the user may loosen what they need to). An invalid
/// `runtimeSettings` field is an error naming it.
pub(crate) fn pod_template(
    plan: PodPlan<'_>,
    settings: &OperatorSettings,
) -> Result<PodTemplateSpec, String> {
    let rs = plan.runtime_settings.cloned().unwrap_or(Value::Null);
    let pod_rs = rs.get("pod").cloned().unwrap_or(Value::Null);
    let container_rs = rs.get("container").cloned().unwrap_or(Value::Null);

    let mut container = json!({
        "name": plan.container,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["coffer"],
        "args": plan.args,
        "securityContext": {
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    for f in CONTAINER_FIELDS {
        if let Some(v) = container_rs.get(f) {
            merge(&mut container[f], v);
        }
    }
    let mut container: Container = serde_json::from_value(container)
        .map_err(|e| format!("runtimeSettings.container is not valid: {e}"))?;
    let user_env: Vec<EnvVar> = match container_rs.get("env") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("runtimeSettings.container.env is not valid: {e}"))?,
        None => Vec::new(),
    };
    // The agent's contract comes first and cannot be overridden by a variable of its name.
    let contract: Vec<String> = plan.env.iter().map(|e| e.name.clone()).collect();
    let mut all_env = plan.env;
    all_env.extend(user_env.into_iter().filter(|u| !contract.contains(&u.name)));
    container.env = Some(all_env);
    container.volume_mounts = (!plan.mounts.is_empty()).then_some(plan.mounts);

    let mut pod = json!({
        "restartPolicy": "Never",
        "serviceAccountName": plan.service_account,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": DEFAULT_USER,
            "runAsGroup": DEFAULT_USER,
            "fsGroup": DEFAULT_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    for f in POD_FIELDS {
        if let Some(v) = pod_rs.get(f) {
            merge(&mut pod[f], v);
        }
    }
    let mut spec: PodSpec = serde_json::from_value(pod)
        .map_err(|e| format!("runtimeSettings.pod is not valid: {e}"))?;
    let mut pull: Vec<LocalObjectReference> = settings
        .image_pull_secrets
        .iter()
        .map(|n| LocalObjectReference { name: n.clone() })
        .collect();
    if let Some(v) = pod_rs.get("imagePullSecrets") {
        let more: Vec<LocalObjectReference> = serde_json::from_value(v.clone())
            .map_err(|e| format!("runtimeSettings.pod.imagePullSecrets is not valid: {e}"))?;
        pull.extend(more);
    }
    spec.image_pull_secrets = (!pull.is_empty()).then_some(pull);
    spec.containers = vec![container];
    spec.volumes = (!plan.volumes.is_empty()).then_some(plan.volumes);

    let mut labels = plan.labels;
    let mut annotations = BTreeMap::new();
    for (field, into) in [
        ("podLabels", &mut labels),
        ("podAnnotations", &mut annotations),
    ] {
        if let Some(v) = pod_rs.get(field) {
            let m: BTreeMap<String, String> = serde_json::from_value(v.clone())
                .map_err(|e| format!("runtimeSettings.pod.{field} is not valid: {e}"))?;
            into.extend(m);
        }
    }
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }),
        spec: Some(spec),
    })
}

/// The `stash-tmp-dir` emptyDir and its mount at `/tmp`.
pub(crate) fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: TMP_DIR.into(),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;

    fn job(status: Value) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "stash-backup-s-0"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_local_repository_is_mounted_from_its_volume_source_at_mount_path() {
        let repo = |backend: Value| -> coffer_api::Repository {
            serde_json::from_value(json!({
                "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                "metadata": {"name": "r", "namespace": "demo"},
                "spec": {"backend": backend},
            }))
            .unwrap()
        };
        let local = |l: Value| repo(json!({"storageSecretName": "s", "local": l}));
        let mounted = |l: Value| {
            let (v, m) = repository_volume(&local(l)).unwrap().expect("a volume");
            assert_eq!(
                (m.name.as_str(), v.name.as_str()),
                (LOCAL_REPOSITORY_VOLUME, LOCAL_REPOSITORY_VOLUME)
            );
            (value(&v), m.mount_path, m.sub_path)
        };
        // Mounted whole at mountPath (subPath is the directory inside it, which the agent
        // opens), the source kept as given.
        let cases = [
            (
                json!({"mountPath": "/safe/data", "subPath": "db", "hostPath": {"path": "/srv/b", "type": "DirectoryOrCreate"}}),
                json!({"name": LOCAL_REPOSITORY_VOLUME, "hostPath": {"path": "/srv/b", "type": "DirectoryOrCreate"}}),
            ),
            (
                json!({"mountPath": "/safe/data", "persistentVolumeClaim": {"claimName": "c"}}),
                json!({"name": LOCAL_REPOSITORY_VOLUME, "persistentVolumeClaim": {"claimName": "c"}}),
            ),
            (
                json!({"mountPath": "/r", "nfs": {"server": "nfs", "path": "/x", "readOnly": true}}),
                json!({"name": LOCAL_REPOSITORY_VOLUME, "nfs": {"server": "nfs", "path": "/x", "readOnly": true}}),
            ),
        ];
        for (l, want) in cases {
            let mount_path = l["mountPath"].as_str().unwrap().to_string();
            assert_eq!(mounted(l.clone()), (want, mount_path, None), "{l}");
        }
        let refused = |l: Value| repository_volume(&local(l)).unwrap_err();
        let e = refused(json!({"mountPath": "/safe/data"}));
        assert!(
            e.contains("spec.backend.local of Repository demo/r has no volume source"),
            "{e}"
        );
        let e =
            refused(json!({"mountPath": "/safe/data", "persistentVolumeClam": {"claimName": "c"}}));
        assert!(
            e.contains("`persistentVolumeClam` is not a Kubernetes volume source"),
            "{e}"
        );
        // Other backends: nothing to mount.
        let s3 =
            repo(json!({"storageSecretName": "s", "s3": {"endpoint": "http://s3", "bucket": "b"}}));
        assert!(repository_volume(&s3).unwrap().is_none());
    }

    #[test]
    fn job_status_table() {
        let failed = |r: &str| JobState::Failed { reason: r.into() };
        let cases = [
            ("just created", json!({}), JobState::Active),
            ("running", json!({"active": 1}), JobState::Active),
            ("succeeded", json!({"succeeded": 1}), JobState::Succeeded),
            (
                "complete",
                json!({"conditions": [{"type": "Complete", "status": "True"}]}),
                JobState::Succeeded,
            ),
            (
                "backoff limit",
                json!({"failed": 1, "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
                failed("BackoffLimitExceeded"),
            ),
            (
                "active deadline",
                json!({"conditions": [
                    {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
                failed("DeadlineExceeded"),
            ),
            (
                "pods still stopping",
                json!({"active": 1, "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}]}),
                JobState::Active,
            ),
            (
                "a failed pod, no condition yet",
                json!({"failed": 1}),
                failed("its pod failed"),
            ),
        ];
        for (name, status, want) in cases {
            assert_eq!(ObservedJob::from_job(&job(status)).state, want, "{name}");
        }
        let j = ObservedJob::from_job(&job(
            json!({"active": 1, "startTime": "2026-01-01T00:30:05Z"}),
        ));
        assert_eq!(j.name, "stash-backup-s-0");
        assert_eq!(j.start_time, Some("2026-01-01T00:30:05Z".parse().unwrap()));
    }
}
