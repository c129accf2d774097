//! What the trigger CronJob's pod runs (`coffer create-backupsession --namespace=<ns> <bc>`):
//! one new BackupSession of a configuration, named by the API server, labelled and owned as
//! Stash's are, so that the operator picks it up and deleting the configuration removes it.

use coffer_api::{Kind, Resource};
use kube::{
    api::{DynamicObject, PostParams},
    Client,
};

use crate::{decide::backup_session::new_session, operator::act::coffer_api_for};

/// Why a BackupSession could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("BackupConfiguration {namespace}/{name} not found; nothing to back up")]
    NotFound { namespace: String, name: String },
    #[error("{what} failed: {cause}")]
    Api { what: String, cause: kube::Error },
    #[error("BackupConfiguration {what} as stored cannot be read: {problem}")]
    Decode { what: String, problem: String },
}

/// Reads the configuration (for its uid and retry settings) and creates one BackupSession;
/// returns the name the server gave it.
pub async fn create_backup_session(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<String, TriggerError> {
    let bc_api = coffer_api_for(client, Kind::BackupConfiguration, namespace);
    let found = bc_api
        .get_opt(name)
        .await
        .map_err(|cause| TriggerError::Api {
            what: format!("reading BackupConfiguration {namespace}/{name}"),
            cause,
        })?;
    let Some(found) = found else {
        return Err(TriggerError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        });
    };
    let bc = match crate::operator::observe::to_resource(Kind::BackupConfiguration, &found) {
        Ok(Resource::BackupConfiguration(bc)) => bc,
        Ok(_) => unreachable!("read as a BackupConfiguration"),
        Err(e) => {
            return Err(TriggerError::Decode {
                what: format!("{namespace}/{name}"),
                problem: e.to_string(),
            })
        }
    };
    let session: DynamicObject =
        serde_json::from_value(new_session(&bc, None)).expect("a BackupSession is a valid object");
    let created = coffer_api_for(client, Kind::BackupSession, namespace)
        .create(&PostParams::default(), &session)
        .await
        .map_err(|cause| TriggerError::Api {
            what: format!("creating a BackupSession of {namespace}/{name}"),
            cause,
        })?;
    Ok(created.metadata.name.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::operator::tests::{mock_api, status, verified, Expect};

    const BCS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/db/backupconfigurations";

    fn stored_bc() -> Value {
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
            "metadata": {"name": "nightly", "namespace": "db", "uid": "uid-bc", "resourceVersion": "12"},
            "spec": {
                "schedule": "0 1 * * *",
                "repository": {"name": "s3"},
                "task": {"name": "mariadb-backup-10.5.8"},
                "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "db"}},
                "retryConfig": {"maxRetry": 2},
            },
        })
    }

    /// What the trigger asks of the API and what it is told, for `nightly` in `db`.
    fn exchange() -> Vec<Expect> {
        let want = json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {
                "generateName": "nightly-",
                "namespace": "db",
                "labels": {
                    "app.kubernetes.io/managed-by": "coffer",
                    "stash.appscode.com/invoker-name": "nightly",
                    "stash.appscode.com/invoker-type": "BackupConfiguration",
                    "stash.appscode.com/target-kind": "AppBinding",
                    "stash.appscode.com/target-name": "db",
                    "stash.appscode.com/target-namespace": "db",
                },
                "ownerReferences": [{
                    "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                    "name": "nightly", "uid": "uid-bc", "controller": true,
                }],
            },
            "spec": {
                "invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "nightly"},
                "retryLeft": 2,
            },
        });
        let mut created = want.clone();
        created["metadata"]["name"] = json!("nightly-x7k2p");
        vec![
            Expect::new("GET", format!("{BCS}/nightly")).reply(200, stored_bc()),
            Expect::new(
                "POST",
                "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions?",
            )
            .body_is(want)
            .reply(201, created),
        ]
    }

    #[tokio::test]
    async fn creates_a_labelled_owned_session_named_by_the_server() {
        let (client, verifier) = mock_api(exchange());
        let name = create_backup_session(&client, "db", "nightly")
            .await
            .unwrap();
        assert_eq!(name, "nightly-x7k2p");
        drop(client);
        verified(verifier).await;
    }

    /// The CronJob's ServiceAccount is bound to the chart's coffer-trigger ClusterRole in the
    /// configuration's namespace, as the operator binds it: that is enough for every request.
    #[test]
    fn the_charts_trigger_role_allows_every_request_the_trigger_makes() {
        let chart =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer");
        let rbac =
            crate::rbac::ChartRbac::from_chart_dir(&chart, &crate::rbac::RELEASE_COFFER).unwrap();
        let role = &crate::OperatorSettings::default().trigger_cluster_role;
        let sa = crate::decide::names::trigger_cron_job("nightly");
        for e in exchange() {
            let (method, uri) = e.request();
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            if let Err(e) = rbac.allows(role, "db", &sa, method, path, query) {
                panic!("the trigger would be refused: {e}");
            }
        }
    }

    #[tokio::test]
    async fn a_missing_configuration_creates_nothing() {
        let (client, verifier) = mock_api(vec![
            Expect::new("GET", format!("{BCS}/gone")).reply(404, status(404, "NotFound"))
        ]);
        let err = create_backup_session(&client, "db", "gone")
            .await
            .unwrap_err();
        assert!(matches!(err, TriggerError::NotFound { .. }), "{err:?}");
        drop(client);
        verified(verifier).await;
    }
}
