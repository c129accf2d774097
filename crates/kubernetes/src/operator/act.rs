//! Carries out what a reconciler decided, in the order decided: the only code of the
//! operator that writes to the API server.

use std::time::Duration;

use coffer_api::Kind;
use k8s_openapi::api::{
    batch::v1::{CronJob, Job},
    coordination::v1::Lease,
    core::v1::{ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::ApiResource,
    runtime::events::{Event, EventType, Recorder},
    Client,
};
use serde_json::{json, Value};

use crate::{kinds, KubeAction};

/// The field manager of every server-side apply and patch the operator makes.
pub const FIELD_MANAGER: &str = "coffer";

/// Why carrying out a decision failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// A conditional status write lost a race: the resource changed after it was read. The
    /// reconciler reads it again and decides anew; nothing is lost.
    #[error(
        "{kind}/{namespace}/{name} changed since it was read (409 Conflict on its status); \
         it is read again and decided anew"
    )]
    Conflict {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// The API server refused a request or could not be reached.
    #[error("{action} failed: {cause}")]
    Api { action: String, cause: kube::Error },
    /// A decided object cannot be sent as it is (a bug in a decide function).
    #[error("cannot {action}: {problem}")]
    Invalid { action: String, problem: String },
}

impl ActError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ActError::Conflict { .. } => "conflict",
            ActError::Api { .. } => "api",
            ActError::Invalid { .. } => "invalid_object",
        }
    }
}

/// The object a reconciler is working on: events about it carry its uid, so that
/// `kubectl describe` finds them, and a status write to it clears what the new status no
/// longer has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subject {
    pub kind: Option<Kind>,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// Its status as read (the version the write is conditional on).
    pub status: Option<Value>,
}

impl Subject {
    fn is(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.kind == Some(kind) && self.namespace == namespace && self.name == name
    }
}

/// What is left for the controller after every request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The shortest `RequeueAfter` decided, if any.
    pub requeue_after: Option<Duration>,
}

/// Makes the requests of a decision with one client; events go through one recorder so
/// repeated events become a series rather than a flood.
#[derive(Clone)]
pub struct Actor {
    client: Client,
    recorder: std::sync::Arc<Recorder>,
}

impl Actor {
    pub fn new(client: Client, instance: Option<String>) -> Actor {
        let reporter = kube::runtime::events::Reporter {
            controller: "coffer-operator".into(),
            instance,
        };
        Actor {
            recorder: std::sync::Arc::new(Recorder::new(client.clone(), reporter)),
            client,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Makes each request in order and stops at the first that fails: later actions may
    /// depend on earlier ones (a status that says "CronJob created" follows the CronJob).
    pub async fn act(
        &self,
        actions: Vec<KubeAction>,
        subject: &Subject,
    ) -> Result<Outcome, ActError> {
        let mut outcome = Outcome::default();
        for action in actions {
            match action {
                KubeAction::Apply(obj) => self.apply(obj).await?,
                KubeAction::Create(obj) => self.create(obj).await?,
                KubeAction::Delete {
                    api_version,
                    kind,
                    namespace,
                    name,
                } => self.delete(&api_version, &kind, &namespace, &name).await?,
                KubeAction::PatchStatus {
                    kind,
                    namespace,
                    name,
                    resource_version,
                    status,
                } => {
                    // A merge patch keeps keys it does not mention: against the status as
                    // read, the keys the new status dropped are sent as null.
                    let patch = match &subject.status {
                        Some(old) if subject.is(kind, &namespace, &name) => {
                            replacing_merge_patch(old, &status)
                        }
                        _ => status,
                    };
                    self.patch_status(kind, &namespace, &name, resource_version, patch)
                        .await?
                }
                KubeAction::Event {
                    kind,
                    namespace,
                    name,
                    warning,
                    reason,
                    message,
                } => {
                    let uid = subject
                        .is(kind, &namespace, &name)
                        .then(|| subject.uid.clone())
                        .flatten();
                    self.event(kind, &namespace, &name, uid, warning, reason, message)
                        .await
                }
                KubeAction::RequeueAfter(d) => {
                    outcome.requeue_after = Some(outcome.requeue_after.map_or(d, |o| o.min(d)));
                }
            }
        }
        Ok(outcome)
    }

    async fn apply(&self, obj: Value) -> Result<(), ActError> {
        let (api, name, what) = self.api_for(&obj, "apply")?;
        let name = name.ok_or_else(|| ActError::Invalid {
            action: format!("apply {what}"),
            problem: "metadata.name is empty; server-side apply needs a name".into(),
        })?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|cause| ActError::Api {
                action: format!("server-side apply of {what}/{name}"),
                cause,
            })?;
        tracing::debug!(object = %format!("{what}/{name}"), "applied");
        Ok(())
    }

    async fn create(&self, obj: Value) -> Result<(), ActError> {
        let (api, _, what) = self.api_for(&obj, "create")?;
        let dynamic: DynamicObject =
            serde_json::from_value(obj).map_err(|e| ActError::Invalid {
                action: format!("create {what}"),
                problem: e.to_string(),
            })?;
        let created = api
            .create(&PostParams::default(), &dynamic)
            .await
            .map_err(|cause| ActError::Api {
                action: format!("creating {what}"),
                cause,
            })?;
        tracing::info!(
            object = %format!("{what}/{}", created.metadata.name.unwrap_or_default()),
            "created"
        );
        Ok(())
    }

    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ActError> {
        let ar = api_resource_of(api_version, kind).ok_or_else(|| ActError::Invalid {
            action: format!("delete {kind}/{namespace}/{name}"),
            problem: format!("{api_version} {kind} is not a kind the operator manages"),
        })?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            // Already gone is what was wanted.
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(cause) => Err(ActError::Api {
                action: format!("deleting {kind}/{namespace}/{name}"),
                cause,
            }),
        }
    }

    async fn patch_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<String>,
        status: Value,
    ) -> Result<(), ActError> {
        let api = coffer_api_for(&self.client, kind, namespace);
        let mut body = json!({ "status": status });
        if let Some(rv) = resource_version {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Err(ActError::Conflict {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            Err(cause) => Err(ActError::Api {
                action: format!("patching the status of {kind}/{namespace}/{name}"),
                cause,
            }),
        }
    }

    /// An event that cannot be recorded is logged, never fatal: the status already says
    /// what the event would have.
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: Option<String>,
        warning: bool,
        reason: String,
        message: String,
    ) {
        let regarding = ObjectReference {
            api_version: Some(kind.api_version().to_string()),
            kind: Some(kind.as_str().to_string()),
            namespace: (!kind.cluster_scoped()).then(|| namespace.to_string()),
            name: Some(name.to_string()),
            uid,
            ..Default::default()
        };
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            action: "Reconcile".into(),
            note: Some(truncate(message, EVENT_NOTE_MAX)),
            reason: reason.clone(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &regarding).await {
            tracing::warn!(
                object = %format!("{kind}/{namespace}/{name}"),
                %reason,
                error = %e,
                "cannot record event"
            );
        }
    }

    fn api_for(
        &self,
        obj: &Value,
        verb: &str,
    ) -> Result<(Api<DynamicObject>, Option<String>, String), ActError> {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_string);
        let api_version = s("/apiVersion").unwrap_or_default();
        let kind = s("/kind").unwrap_or_default();
        let namespace = s("/metadata/namespace");
        let name = s("/metadata/name").filter(|n| !n.is_empty());
        let what = match &namespace {
            Some(ns) => format!("{kind}/{ns}"),
            None => kind.clone(),
        };
        let ar = api_resource_of(&api_version, &kind).ok_or_else(|| ActError::Invalid {
            action: format!("{verb} {what}"),
            problem: format!("`{api_version}` `{kind}` is not a kind the operator manages"),
        })?;
        let api = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), &ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        Ok((api, name, what))
    }
}

/// The API server refuses an Event whose note is longer than 1 kB.
const EVENT_NOTE_MAX: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The JSON merge patch (RFC 7386) that turns `old` into exactly `new`: `new`, plus `null`
/// for every key of `old` that `new` lacks, at every level of nested objects (lists are
/// replaced whole by a merge patch anyway).
pub fn replacing_merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                let v = match o.get(k) {
                    Some(ov) => replacing_merge_patch(ov, nv),
                    None => nv.clone(),
                };
                patch.insert(k.clone(), v);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// The API of one of coffer's kinds in a namespace (cluster-wide for Task and Function).
pub fn coffer_api_for(client: &Client, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    let ar = kinds::api_resource(kind);
    if kind.cluster_scoped() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), namespace, &ar)
    }
}

/// Where an object given as JSON lives: coffer's own kinds, or the core kinds the operator
/// creates (plural and group from k8s-openapi, so no plural is guessed).
pub fn api_resource_of(api_version: &str, kind: &str) -> Option<ApiResource> {
    if let Some(k) = Kind::from_manifest_kind(kind) {
        if k.accepted_api_versions().contains(&api_version) && k != Kind::Secret {
            return Some(kinds::api_resource(k));
        }
    }
    let core = [
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Lease>(&()),
    ];
    core.into_iter()
        .find(|ar| ar.api_version == api_version && ar.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_api_limit() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate(long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(
            truncate("x".repeat(1024), 1024).len(),
            1024,
            "exactly at the limit is kept"
        );
    }

    #[test]
    fn a_status_patch_clears_what_the_new_status_dropped() {
        let old = json!({
            "phase": "Failed", "error": "boom", "nextRetry": "2026-12-01T06:00:00Z",
            "conditions": [{"type": "A"}, {"type": "B"}],
            "targets": {"t": {"phase": "Failed", "error": "x"}},
        });
        let new = json!({
            "phase": "Succeeded",
            "conditions": [{"type": "A"}],
            "targets": {"t": {"phase": "Succeeded"}},
            "retried": true,
        });
        let patch = replacing_merge_patch(&old, &new);
        assert_eq!(
            patch,
            json!({
                "phase": "Succeeded", "error": null, "nextRetry": null,
                "conditions": [{"type": "A"}],
                "targets": {"t": {"phase": "Succeeded", "error": null}},
                "retried": true,
            })
        );
        // Applied as RFC 7386 does, the patch gives exactly the new status.
        fn apply(target: &mut Value, patch: &Value) {
            match (target.as_object_mut(), patch.as_object()) {
                (Some(t), Some(p)) => {
                    for (k, v) in p {
                        if v.is_null() {
                            t.remove(k);
                        } else {
                            apply(t.entry(k.clone()).or_insert(Value::Null), v);
                        }
                    }
                }
                _ => *target = patch.clone(),
            }
        }
        let mut applied = old.clone();
        apply(&mut applied, &patch);
        assert_eq!(applied, new);
        assert_eq!(
            replacing_merge_patch(&Value::Null, &new),
            new,
            "no status yet"
        );
    }

    #[test]
    fn known_kinds_resolve_to_their_plural_and_group() {
        let cj = api_resource_of("batch/v1", "CronJob").unwrap();
        assert_eq!(
            (cj.group.as_str(), cj.plural.as_str()),
            ("batch", "cronjobs")
        );
        let pvc = api_resource_of("v1", "PersistentVolumeClaim").unwrap();
        assert_eq!(
            (pvc.group.as_str(), pvc.plural.as_str()),
            ("", "persistentvolumeclaims")
        );
        let rb = api_resource_of("rbac.authorization.k8s.io/v1", "RoleBinding").unwrap();
        assert_eq!(rb.plural, "rolebindings");
        let bs = api_resource_of("stash.appscode.com/v1beta1", "BackupSession").unwrap();
        assert_eq!(bs.plural, "backupsessions");
        assert_eq!(api_resource_of("v1", "Secret").unwrap().plural, "secrets");
        // A wrong version is refused, not sent to a URL that does not exist.
        assert!(api_resource_of("batch/v1beta1", "CronJob").is_none());
        assert!(api_resource_of("stash.appscode.com/v1alpha1", "BackupSession").is_none());
        assert!(api_resource_of("apps/v1", "StatefulSet").is_none());
        assert!(api_resource_of("apps/v1", "Deployment").is_some());
    }
}
