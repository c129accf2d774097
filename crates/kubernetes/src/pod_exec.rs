//! Exec hooks on Kubernetes, as Stash runs them: the hook's command runs in the target's pod
//! through `pods/exec`, not in the agent's Job pod (which is not the database's). The pod is
//! found from the target AppBinding's Service: the first ready endpoint of its
//! EndpointSlices that is a Pod; the container is the Handler's `containerName` (none: the
//! pod's default container). The command's exit status decides; its output goes to the log.
//!
//! Needs `get appbindings`, `list endpointslices` (discovery.k8s.io) and `create`+`get` on
//! `pods/exec` (websocket upgrades are authorized as either, depending on the server's
//! version) in the target's namespace.

use coffer_engine::{hooks::RemoteExec, CatalogError, EngineError, EngineResult};
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    api::{AttachParams, DynamicObject, ListParams},
    Api, Client,
};
use tokio::io::AsyncReadExt;

use crate::kinds::api_resource;

/// Runs exec hooks in the target's pod over the API.
pub struct PodExec {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl PodExec {
    /// Over the cluster the environment names (the Pod's ServiceAccount).
    pub fn infer() -> Result<PodExec, CatalogError> {
        let rt = crate::catalog::runtime()?;
        let client = crate::catalog::infer_client(&rt)?;
        Ok(PodExec { client, rt })
    }
}

/// The pod an exec hook runs in: the first ready endpoint (a nil `ready` counts as ready, as
/// the API defines it) whose target is a Pod, across the Service's EndpointSlices.
pub fn pick_pod(slices: &[EndpointSlice]) -> Option<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.target_ref.as_ref())
        .find(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| r.name.clone())
}

fn step(msg: String) -> EngineError {
    EngineError::Step(msg)
}

/// Runs `command` in the pod of AppBinding `ns/ab`'s Service (see the module).
pub async fn exec_in_target_pod(
    client: &Client,
    which: &str,
    (ns, ab): coffer_engine::hooks::Target<'_>,
    command: &[String],
    container: Option<&str>,
) -> EngineResult<String> {
    {
        let apps: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            ns,
            &api_resource(coffer_api::Kind::AppBinding),
        );
        let binding = apps.get(ab).await.map_err(|e| {
            step(format!(
                "the {which} hook runs in AppBinding {ns}/{ab}'s pod, which cannot be read: {e}"
            ))
        })?;
        let service = binding
            .data
            .pointer("/spec/clientConfig/service/name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                step(format!(
                    "the {which} hook runs in the target's pod, found through its Service, and \
                     AppBinding {ns}/{ab} names none (spec.clientConfig.service.name)"
                ))
            })?;
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let found = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .map_err(|e| {
                step(format!(
                    "the {which} hook: cannot list the endpoints of Service {ns}/{service}: {e}"
                ))
            })?;
        let pod = pick_pod(&found.items).ok_or_else(|| {
            step(format!(
                "the {which} hook runs in a ready pod of Service {ns}/{service}, and it has none"
            ))
        })?;
        let mut ap = AttachParams::default().stdout(true).stderr(true);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let mut attached = pods.exec(&pod, command.to_vec(), &ap).await.map_err(|e| {
            step(format!(
                "the {which} hook: cannot exec in pod {ns}/{pod}: {e} (the Job's ServiceAccount \
                 needs pods/exec there)"
            ))
        })?;
        let status = attached.take_status();
        let (mut out, mut err) = (String::new(), String::new());
        let (mut so, mut se) = (attached.stdout(), attached.stderr());
        // Both streams are read at once: a full pipe would stall the command.
        let _ = tokio::join!(
            async {
                if let Some(r) = so.as_mut() {
                    let _ = r.read_to_string(&mut out).await;
                }
            },
            async {
                if let Some(r) = se.as_mut() {
                    let _ = r.read_to_string(&mut err).await;
                }
            }
        );
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = attached.join().await;
        let program = command.first().cloned().unwrap_or_default();
        for line in out.lines().chain(err.lines()) {
            tracing::info!("{which} hook ({pod}): {line}");
        }
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => {
                Ok(format!("{which} hook ran `{program}` in pod {pod}"))
            }
            Some(s) => Err(step(format!(
                "the {which} hook's `{program}` failed in pod {ns}/{pod}: {}",
                s.message.unwrap_or_else(|| s.reason.unwrap_or_default())
            ))),
            None => Err(step(format!(
                "the {which} hook's `{program}` in pod {ns}/{pod} ended without a status"
            ))),
        }
    }
}

impl RemoteExec for PodExec {
    fn exec(
        &self,
        which: &str,
        target: coffer_engine::hooks::Target<'_>,
        command: &[String],
        container: Option<&str>,
    ) -> EngineResult<String> {
        self.rt.block_on(exec_in_target_pod(
            &self.client,
            which,
            target,
            command,
            container,
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "db-x"}, "addressType": "IPv4", "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(pod: &str, ready: Option<bool>) -> serde_json::Value {
        let mut e = json!({"addresses": ["10.0.0.1"],
                           "targetRef": {"kind": "Pod", "name": pod, "namespace": "db"}});
        if let Some(r) = ready {
            e["conditions"] = json!({"ready": r});
        }
        e
    }

    /// The hook's requests, up to the exec (which the mock refuses): the AppBinding, its
    /// Service's EndpointSlices, exec in the first ready pod with the Handler's container; and
    /// the chart's Job roles allow each of them.
    #[tokio::test]
    async fn the_hook_finds_the_pod_through_the_service_then_execs_in_it() {
        use crate::operator::tests::{mock_api, status, verified, Expect};
        let steps = || {
            vec![
                Expect::new(
                    "GET",
                    "/apis/appcatalog.appscode.com/v1alpha1/namespaces/db/appbindings/shop",
                )
                .reply(
                    200,
                    json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
                           "metadata": {"name": "shop", "namespace": "db"},
                           "spec": {"clientConfig": {"service": {"name": "shop-svc", "port": 3306}}}}),
                ),
                Expect::new(
                    "GET",
                    "/apis/discovery.k8s.io/v1/namespaces/db/endpointslices?&labelSelector=kubernetes.io%2Fservice-name%3Dshop-svc",
                )
                .reply(
                    200,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                           "metadata": {}, "items": [slice(json!([ep("shop-0", Some(false)), ep("shop-1", Some(true))]))]}),
                ),
                Expect::new(
                    "GET",
                    "/api/v1/namespaces/db/pods/shop-1/exec?&stdout=true&stderr=true&container=mariadb&command=sh&command=-c&command=echo+hi",
                )
                .reply(403, status(403, "Forbidden")),
            ]
        };
        let (client, verifier) = mock_api(steps());
        let command: Vec<String> = ["sh", "-c", "echo hi"].map(String::from).into();
        let err = exec_in_target_pod(
            &client,
            "preBackup",
            ("db", "shop"),
            &command,
            Some("mariadb"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot exec in pod db/shop-1"), "{err}");
        drop(client);
        verified(verifier).await;

        let chart =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer");
        let rbac =
            crate::rbac::ChartRbac::from_chart_dir(&chart, &crate::rbac::RELEASE_COFFER).unwrap();
        let settings = crate::OperatorSettings::default();
        for role in [
            &settings.backup_job_cluster_role,
            &settings.restore_job_cluster_role,
        ] {
            for e in steps() {
                let (method, uri) = e.request();
                let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
                // The exec upgrade is a GET, authorized as `create` on newer servers.
                for method in if path.ends_with("/exec") {
                    vec![method, "POST"]
                } else {
                    vec![method]
                } {
                    if let Err(e) = rbac.allows(role, "db", "job-sa", method, path, query) {
                        panic!("an exec hook would be refused: {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_first_ready_pod_of_the_service_is_picked() {
        let node = json!({"addresses": ["10.0.0.9"], "targetRef": {"kind": "Node", "name": "n"}});
        let no_ref = json!({"addresses": ["10.0.0.8"]});
        for (slices, want) in [
            (vec![], None),
            (vec![slice(json!([ep("db-0", Some(false))]))], None),
            (
                vec![slice(json!([
                    ep("db-0", Some(false)),
                    ep("db-1", Some(true))
                ]))],
                Some("db-1"),
            ),
            // No conditions: ready, as the API defines a nil `ready`.
            (vec![slice(json!([ep("db-2", None)]))], Some("db-2")),
            (
                vec![
                    slice(json!([node, no_ref])),
                    slice(json!([ep("db-3", Some(true))])),
                ],
                Some("db-3"),
            ),
        ] {
            assert_eq!(pick_pod(&slices).as_deref(), want, "{slices:?}");
        }
    }
}
