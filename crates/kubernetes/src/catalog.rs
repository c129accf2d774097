//! The catalog an agent in a Job reads its resources through and writes its statuses to: the
//! Kubernetes API, with the Job's own ServiceAccount. The engine is synchronous, so the
//! catalog owns a small runtime and blocks on each request.

use coffer_api::{Kind, Resource};
use coffer_engine::{Catalog, CatalogError};
use kube::{
    api::{DynamicObject, Patch, PatchParams},
    Api, Client,
};
use serde_json::{Map, Value};

use crate::kinds::api_resource;

pub struct KubeCatalog {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl KubeCatalog {
    /// A catalog over the cluster the environment names: `KUBECONFIG` (or ~/.kube/config),
    /// else the Pod's ServiceAccount.
    pub fn infer() -> Result<KubeCatalog, CatalogError> {
        let rt = runtime()?;
        let client = infer_client(&rt)?;
        Ok(KubeCatalog { client, rt })
    }

    /// A catalog over the cluster a kubeconfig file names (its current context).
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<KubeCatalog, CatalogError> {
        let rt = runtime()?;
        let client = rt.block_on(async {
            let bad = |e: String| CatalogError::Other {
                message: format!("kubeconfig {}: {e}", path.display()),
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| bad(e.to_string()))?;
            Client::try_from(config).map_err(|e| bad(e.to_string()))
        })?;
        Ok(KubeCatalog { client, rt })
    }

    /// A catalog over a client built elsewhere (in a test, one over a mocked service). The
    /// client must have been built inside `rt`.
    pub fn with_client(client: Client, rt: tokio::runtime::Runtime) -> KubeCatalog {
        KubeCatalog { client, rt }
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        let ar = api_resource(kind);
        if kind.cluster_scoped() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        }
    }
}

/// A client over the cluster the environment names (see [`KubeCatalog::infer`]), built in
/// `rt`, which must drive it.
pub fn infer_client(rt: &tokio::runtime::Runtime) -> Result<Client, CatalogError> {
    rt.block_on(async {
        let config = kube::Config::infer()
            .await
            .map_err(|e| CatalogError::Other {
                message: format!(
                    "no Kubernetes API to talk to ({e}): in a Pod the ServiceAccount token is \
                     mounted for this; elsewhere set KUBECONFIG"
                ),
            })?;
        Client::try_from(config).map_err(|e| CatalogError::Other {
            message: format!("cannot build a Kubernetes client: {e}"),
        })
    })
}

/// The runtime the catalog blocks on: one thread is enough for one request at a time.
pub fn runtime() -> Result<tokio::runtime::Runtime, CatalogError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CatalogError::Other {
            message: format!("cannot start the Kubernetes client's runtime: {e}"),
        })
}

impl Catalog for KubeCatalog {
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Resource>, CatalogError> {
        let api = self.api(kind, namespace);
        let found = self
            .rt
            .block_on(api.get_opt(name))
            .map_err(|e| api_error(e, "get", kind, namespace, name))?;
        found
            .map(|o| to_resource(kind, namespace, name, o))
            .transpose()
    }

    fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
        let kind = res.kind();
        let (namespace, name) = (res.namespace().to_string(), res.name().to_string());
        let api = self.api(kind, &namespace);
        let error = |verb: &str, e| api_error(e, verb, kind, &namespace, &name);
        // A merge patch only adds and changes keys: what the new status no longer has must be
        // nulled, so the patch is the difference from the stored status.
        let current = self
            .rt
            .block_on(api.get_opt(&name))
            .map_err(|e| error("get", e))?
            .ok_or_else(|| CatalogError::NotFound {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
            })?;
        let stored = current.data.get("status").cloned().unwrap_or(Value::Null);
        let wanted = res.to_json().get("status").cloned().unwrap_or(Value::Null);
        let body = status_patch(&stored, &wanted, res.meta().resource_version.as_deref());
        let written = self
            .rt
            .block_on(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)))
            .map_err(|e| error("patch the status of", e))?;
        to_resource(kind, &namespace, &name, written)
    }
}

/// The merge patch that turns status `stored` into `wanted`, carrying `resource_version` as a
/// precondition when there is one (the API server answers 409 if the object has changed).
pub fn status_patch(stored: &Value, wanted: &Value, resource_version: Option<&str>) -> Value {
    let mut patch = Map::new();
    if let Some(rv) = resource_version {
        patch.insert(
            "metadata".into(),
            serde_json::json!({ "resourceVersion": rv }),
        );
    }
    let status = match wanted {
        Value::Null => Value::Null,
        w => merge_diff(stored, w),
    };
    patch.insert("status".into(), status);
    Value::Object(patch)
}

/// RFC 7386: the patch that makes `from` into `to` (objects recursively, everything else
/// replaced whole; a key `to` lacks becomes null).
fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut out = Map::new();
            for (k, tv) in t {
                match f.get(k) {
                    Some(fv) if fv == tv => {}
                    Some(fv) if fv.is_object() && tv.is_object() => {
                        out.insert(k.clone(), merge_diff(fv, tv));
                    }
                    _ => {
                        out.insert(k.clone(), tv.clone());
                    }
                }
            }
            for k in f.keys() {
                if !t.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        (_, t) => t.clone(),
    }
}

fn to_resource(
    kind: Kind,
    namespace: &str,
    name: &str,
    obj: DynamicObject,
) -> Result<Resource, CatalogError> {
    let mut v = serde_json::to_value(&obj).map_err(|e| CatalogError::Other {
        message: format!("{kind} {namespace}/{name} as the API server sent it: {e}"),
    })?;
    if let Some(o) = v.as_object_mut() {
        // The API server sends them, but a list item or a minimal double may not.
        o.entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version().into()));
        o.entry("kind")
            .or_insert_with(|| Value::String(kind.as_str().into()));
    }
    Resource::from_json(kind, v).map_err(|p| CatalogError::Other {
        message: format!(
            "{kind} {namespace}/{name} in the cluster is not one coffer can read ({p}): fix it \
             with kubectl edit, or apply it again"
        ),
    })
}

/// An API error as a catalog error that names the resource and what to do about it.
fn api_error(e: kube::Error, verb: &str, kind: Kind, namespace: &str, name: &str) -> CatalogError {
    let what = if kind.cluster_scoped() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    let kube::Error::Api(status) = &e else {
        return CatalogError::Other {
            message: format!(
                "cannot {verb} {what}: the Kubernetes API did not answer ({e}); check the \
                 cluster's address and the Pod's network"
            ),
        };
    };
    // The RBAC verb and resource the request needed, as a Role names them.
    let (rbac_verb, resource) = match verb.strip_prefix("patch the status of") {
        Some(_) => ("patch", format!("{}/status", kind.plural())),
        None => (verb, kind.plural().to_string()),
    };
    let scope = if kind.cluster_scoped() {
        "cluster-wide".to_string()
    } else {
        format!("in namespace {namespace}")
    };
    match status.code {
        404 => CatalogError::NotFound {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        },
        409 => CatalogError::Conflict {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        },
        401 => CatalogError::Other {
            message: format!(
                "cannot {verb} {what}: the API server does not accept the agent's credentials \
                 ({}); check the Job's ServiceAccount token",
                status.message
            ),
        },
        403 => CatalogError::Other {
            message: format!(
                "cannot {verb} {what}: the agent's ServiceAccount may not {rbac_verb} \
                 {resource} {scope} ({}): check the coffer-backup-job ClusterRole and its binding",
                status.message
            ),
        },
        code => CatalogError::Other {
            message: format!(
                "cannot {verb} {what}: the API server answered {code} {} ({})",
                status.reason, status.message
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_status_patch_nulls_what_the_new_status_dropped_and_carries_the_version() {
        let stored = json!({"phase": "Running", "error": "x", "targets": [{"phase": "Running"}],
                            "nested": {"a": 1, "b": 2}});
        let wanted = json!({"phase": "Succeeded", "targets": [{"phase": "Succeeded"}],
                            "nested": {"a": 1}});
        assert_eq!(
            status_patch(&stored, &wanted, Some("42")),
            json!({
                "metadata": {"resourceVersion": "42"},
                "status": {"phase": "Succeeded", "error": null,
                           "targets": [{"phase": "Succeeded"}], "nested": {"b": null}}
            })
        );
        assert_eq!(
            status_patch(&Value::Null, &json!({"phase": "Running"}), None),
            json!({"status": {"phase": "Running"}})
        );
    }

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "denied".into(),
            reason: "Forbidden".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn api_errors_name_the_resource_and_the_remedy() {
        assert_eq!(
            api_error(api(409), "patch", Kind::BackupSession, "db", "s1"),
            CatalogError::Conflict {
                kind: Kind::BackupSession,
                namespace: "db".into(),
                name: "s1".into()
            }
        );
        assert!(matches!(
            api_error(api(404), "get", Kind::Secret, "db", "creds"),
            CatalogError::NotFound { .. }
        ));
        let CatalogError::Other { message } =
            api_error(api(403), "get", Kind::Secret, "db", "creds")
        else {
            panic!("403 is not a conflict")
        };
        assert!(
            message.contains("may not get secrets in namespace db")
                && message.contains("coffer-backup-job ClusterRole"),
            "{message}"
        );
        let CatalogError::Other { message } = api_error(
            api(403),
            "patch the status of",
            Kind::BackupSession,
            "db",
            "s1",
        ) else {
            panic!("403 is not a conflict")
        };
        assert!(
            message.contains("may not patch backupsessions/status in namespace db"),
            "{message}"
        );
    }

    #[test]
    fn an_object_from_the_api_becomes_a_resource_with_its_version() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "db", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}]},
            "type": "Opaque", "data": {"username": "cm9vdA=="}
        }))
        .unwrap();
        let r = to_resource(Kind::Secret, "db", "creds", obj).unwrap();
        assert_eq!(r.meta().resource_version.as_deref(), Some("7"));
        let Resource::Secret(s) = r else {
            panic!("not a secret")
        };
        assert_eq!(s.data["username"], "cm9vdA==");
    }
}
