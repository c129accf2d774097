//! The operator's requests against a mocked API server: each test lists the requests it
//! expects, in order (method, path with query, a check of the body), with the server's canned
//! reply, and fails on any other request, a missing one, or an extra one.

use std::time::Duration;

use http::{Request, Response};
use kube::{client::Body, Client};
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::act::{ActError, Actor, Subject};
use crate::KubeAction;

type BodyCheck = Box<dyn Fn(&Value) + Send>;

/// One request the API server expects, and its reply.
pub(crate) struct Expect {
    method: &'static str,
    uri: String,
    check: BodyCheck,
    accept: Option<&'static str>,
    status: u16,
    reply: Value,
}

impl Expect {
    pub(crate) fn new(method: &'static str, uri: impl Into<String>) -> Expect {
        Expect {
            method,
            uri: uri.into(),
            check: Box::new(|_| {}),
            accept: None,
            status: 200,
            reply: Value::Null,
        }
    }

    /// Checks the request's body (parsed as JSON; `null` when empty).
    pub(crate) fn body(mut self, check: impl Fn(&Value) + Send + 'static) -> Expect {
        self.check = Box::new(check);
        self
    }

    /// The request's Accept header must contain `want`.
    pub(crate) fn accept(mut self, want: &'static str) -> Expect {
        self.accept = Some(want);
        self
    }

    /// The body must be exactly `want`.
    pub(crate) fn body_is(self, want: Value) -> Expect {
        self.body(move |got| assert_eq!(got, &want, "request body"))
    }

    /// The request's method and URI (path and query).
    pub(crate) fn request(&self) -> (&str, &str) {
        (self.method, &self.uri)
    }

    pub(crate) fn reply(mut self, status: u16, reply: Value) -> Expect {
        self.status = status;
        self.reply = reply;
        self
    }

    /// Replies with the request's own body (what a create or patch returns, near enough).
    pub(crate) fn echo(mut self) -> Expect {
        self.reply = json!("__echo__");
        self
    }
}

/// A Kubernetes `Status` error body.
pub(crate) fn status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "code": code,
        "message": format!("mock: {reason}"),
    })
}

/// A client whose requests go to a verifier that expects `steps` in order. Await the returned
/// handle after dropping every clone of the client: it fails if a step was not requested or
/// a request came that no step expected.
pub(crate) fn mock_api(steps: Vec<Expect>) -> (Client, tokio::task::JoinHandle<()>) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(verify(handle, steps));
    (Client::new(svc, "default"), verifier)
}

/// The RBAC the chart gives the operator's ServiceAccount (release `coffer` in namespace
/// `coffer`): every request a test's operator makes must be allowed by it.
pub(crate) fn operator_may(method: &str, uri: &str) {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer");
    let rbac = crate::rbac::ChartRbac::from_chart_dir(&chart, &crate::rbac::RELEASE_COFFER)
        .expect("the chart's RBAC reads");
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    if let Err(e) = rbac.allows_bound("coffer", "coffer", method, path, query) {
        panic!("the operator would be refused in a cluster: {e}");
    }
}

async fn verify(mut handle: Handle<Request<Body>, Response<Body>>, steps: Vec<Expect>) {
    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        let (req, send) = handle.next_request().await.unwrap_or_else(|| {
            panic!(
                "request {} of {total} ({} {}) never came",
                i + 1,
                step.method,
                step.uri
            )
        });
        let uri = req.uri().to_string();
        assert_eq!(
            (req.method().as_str(), uri.as_str()),
            (step.method, step.uri.as_str()),
            "request {} of {total}",
            i + 1
        );
        operator_may(step.method, &uri);
        if let Some(want) = step.accept {
            let got = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                got.contains(want),
                "request {} Accept {got:?} lacks {want:?}",
                i + 1
            );
        }
        let bytes = req.into_body().collect_bytes().await.expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        (step.check)(&body);
        let reply = if step.reply == json!("__echo__") {
            body
        } else {
            step.reply
        };
        send.send_response(
            Response::builder()
                .status(step.status)
                .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
                .expect("response"),
        );
    }
    if let Some((req, _)) = handle.next_request().await {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

/// Awaits the verifier (after the client is gone), failing the test on a timeout.
pub(crate) async fn verified(verifier: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(2), verifier)
        .await
        .expect("the API server mock finished in time")
        .expect("every request was as expected");
}

fn cron_job() -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "stash-trigger-nightly", "namespace": "db"},
        "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    })
}

const BS_STATUS: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions/nightly-x/status?";

#[tokio::test]
async fn act_makes_each_request_in_order() {
    let session = json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"generateName": "nightly-", "namespace": "db"},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "nightly"}},
    });
    let (client, verifier) = mock_api(vec![
        Expect::new(
            "PATCH",
            "/apis/batch/v1/namespaces/db/cronjobs/stash-trigger-nightly?&force=true&fieldManager=coffer",
        )
        .body_is(cron_job())
        .echo(),
        Expect::new("POST", "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions?")
            .body_is(session.clone())
            .reply(201, {
                let mut s = session.clone();
                s["metadata"]["name"] = json!("nightly-abcde");
                s
            }),
        Expect::new("DELETE", "/apis/batch/v1/namespaces/db/jobs/stash-backup-old-0?")
            .body_is(json!({"propagationPolicy": "Background"}))
            .reply(404, status(404, "NotFound")),
        Expect::new("PATCH", BS_STATUS)
            // The status as read had an error; the new one has none: it is cleared.
            .body_is(json!({"metadata": {"resourceVersion": "7"}, "status": {"phase": "Running", "error": null}}))
            .reply(200, json!({"metadata": {"name": "nightly-x"}})),
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
            .body(|e| {
                assert_eq!(e["reason"], "BackupSessionRunning");
                assert_eq!(e["type"], "Normal");
                assert_eq!(e["note"], "the backup Job started");
                assert_eq!(e["regarding"]["kind"], "BackupSession");
                assert_eq!(e["regarding"]["name"], "nightly-x");
                assert_eq!(e["regarding"]["uid"], "uid-bs", "events find their object by uid");
                assert_eq!(e["reportingController"], "coffer-operator");
            })
            .echo(),
    ]);
    let actor = Actor::new(client, Some("coffer-0".into()));
    let outcome = actor
        .act(
            vec![
                KubeAction::Apply(cron_job()),
                KubeAction::RequeueAfter(Duration::from_secs(60)),
                KubeAction::Create(session),
                KubeAction::Delete {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    namespace: "db".into(),
                    name: "stash-backup-old-0".into(),
                },
                KubeAction::PatchStatus {
                    kind: coffer_api::Kind::BackupSession,
                    namespace: "db".into(),
                    name: "nightly-x".into(),
                    resource_version: Some("7".into()),
                    status: json!({"phase": "Running"}),
                },
                KubeAction::Event {
                    kind: coffer_api::Kind::BackupSession,
                    namespace: "db".into(),
                    name: "nightly-x".into(),
                    warning: false,
                    reason: "BackupSessionRunning".into(),
                    message: "the backup Job started".into(),
                },
                KubeAction::RequeueAfter(Duration::from_secs(30)),
            ],
            &Subject {
                kind: Some(coffer_api::Kind::BackupSession),
                namespace: "db".into(),
                name: "nightly-x".into(),
                uid: Some("uid-bs".into()),
                status: Some(json!({"phase": "Pending", "error": "no Job yet"})),
            },
        )
        .await
        .expect("every request succeeded");
    assert_eq!(
        outcome.requeue_after,
        Some(Duration::from_secs(30)),
        "the shortest requeue wins"
    );
    drop(actor);
    verified(verifier).await;
}

#[tokio::test]
async fn a_conflicting_status_write_is_a_typed_conflict_and_stops_the_rest() {
    let (client, verifier) = mock_api(vec![Expect::new("PATCH", BS_STATUS)
        .body_is(json!({"metadata": {"resourceVersion": "7"}, "status": {"phase": "Failed"}}))
        .reply(409, status(409, "Conflict"))]);
    let actor = Actor::new(client, None);
    let err = actor
        .act(
            vec![
                KubeAction::PatchStatus {
                    kind: coffer_api::Kind::BackupSession,
                    namespace: "db".into(),
                    name: "nightly-x".into(),
                    resource_version: Some("7".into()),
                    status: json!({"phase": "Failed"}),
                },
                // Not made: it would announce a status that was not written.
                KubeAction::Apply(cron_job()),
            ],
            &Subject::default(),
        )
        .await
        .expect_err("409");
    assert!(
        matches!(err, ActError::Conflict { ref name, .. } if name == "nightly-x"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "conflict");
    drop(actor);
    verified(verifier).await;
}

#[tokio::test]
async fn an_unknown_kind_is_refused_before_any_request() {
    let (client, verifier) = mock_api(vec![]);
    let actor = Actor::new(client, None);
    let err = actor
        .act(
            vec![KubeAction::Apply(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "x", "namespace": "db"},
            }))],
            &Subject::default(),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, ActError::Invalid { .. }), "{err:?}");
    drop(actor);
    verified(verifier).await;
}

#[tokio::test]
async fn a_server_error_names_the_request() {
    let (client, verifier) = mock_api(vec![Expect::new(
        "PATCH",
        "/apis/batch/v1/namespaces/db/cronjobs/stash-trigger-nightly?&force=true&fieldManager=coffer",
    )
    .reply(403, status(403, "Forbidden"))]);
    let actor = Actor::new(client, None);
    let err = actor
        .act(vec![KubeAction::Apply(cron_job())], &Subject::default())
        .await
        .expect_err("403");
    assert!(
        err.to_string()
            .starts_with("server-side apply of CronJob/db/stash-trigger-nightly failed"),
        "{err}"
    );
    drop(actor);
    verified(verifier).await;
}

mod lease_requests {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;

    use super::*;
    use crate::operator::lease::{hold, LeaderState, LeaseConfig};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/coffer/leases";

    /// Runs one round of the election loop against `steps`, then shuts it down.
    async fn one_round(steps: Vec<Expect>) -> LeaderState {
        let (client, verifier) = mock_api(steps);
        let cfg = LeaseConfig::new("coffer-operator".into(), "coffer".into(), "me".into());
        let (state_tx, mut state_rx) = tokio::sync::watch::channel(LeaderState::Unknown);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(hold(
            Api::<Lease>::namespaced(client, "coffer"),
            cfg,
            state_tx,
            stop_rx,
        ));
        let seen = tokio::time::timeout(
            Duration::from_secs(2),
            state_rx.wait_for(|s| *s != LeaderState::Unknown),
        )
        .await
        .expect("a decision in time")
        .expect("sender alive")
        .clone();
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        verified(verifier).await;
        seen
    }

    #[tokio::test]
    async fn no_lease_is_created_held_by_us_and_released_on_shutdown() {
        let held = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "coffer-operator", "namespace": "coffer", "resourceVersion": "1"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "2026-12-01T06:00:00.000000Z"},
        });
        let state = one_round(vec![
            Expect::new("GET", format!("{LEASES}/coffer-operator"))
                .reply(404, status(404, "NotFound")),
            Expect::new("POST", format!("{LEASES}?"))
                .body(|l| {
                    assert_eq!(l["spec"]["holderIdentity"], "me");
                    assert_eq!(l["spec"]["leaseDurationSeconds"], 15);
                    assert_eq!(l["spec"]["leaseTransitions"], 0);
                    assert!(l["metadata"].get("resourceVersion").is_none());
                })
                .reply(201, held.clone()),
            // Shutdown: the lease is handed back, conditional on what was read.
            Expect::new("GET", format!("{LEASES}/coffer-operator")).reply(200, held.clone()),
            Expect::new("PUT", format!("{LEASES}/coffer-operator?"))
                .body(|l| {
                    assert_eq!(l["metadata"]["resourceVersion"], "1");
                    assert!(l["spec"].get("holderIdentity").is_none(), "{l}");
                    assert_eq!(l["spec"]["leaseDurationSeconds"], 1);
                })
                .echo(),
        ])
        .await;
        assert_eq!(state, LeaderState::Leader);
    }

    #[tokio::test]
    async fn a_lease_held_and_renewed_by_another_is_left_alone() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let state = one_round(vec![Expect::new("GET", format!("{LEASES}/coffer-operator")).reply(
            200,
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "coffer-operator", "namespace": "coffer", "resourceVersion": "9"},
                "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": now.to_string()},
            }),
        )])
        .await;
        assert_eq!(state, LeaderState::Follower(Some("other".into())));
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_makes_a_follower() {
        let state = one_round(vec![
            Expect::new("GET", format!("{LEASES}/coffer-operator")).reply(
                200,
                json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "coffer-operator", "namespace": "coffer", "resourceVersion": "9"},
                    "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                             "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 2},
                }),
            ),
            Expect::new("PUT", format!("{LEASES}/coffer-operator?"))
                .body(|l| {
                    assert_eq!(l["metadata"]["resourceVersion"], "9");
                    assert_eq!(l["spec"]["holderIdentity"], "me");
                    assert_eq!(l["spec"]["leaseTransitions"], 3);
                })
                .reply(409, status(409, "Conflict")),
        ])
        .await;
        assert_eq!(state, LeaderState::Follower(None));
    }
}

/// Each reconciler from the resource as the API serves it: what it reads, then what it
/// writes, in order.
mod reconcilers {
    use std::sync::Arc;

    use coffer_api::Kind;
    use kube::api::DynamicObject;

    use super::*;
    use crate::{
        operator::{metrics::Metrics, reconcile},
        OperatorSettings,
    };

    const NOW: &str = "2026-12-01T06:00:00Z";
    const STASH: &str = "/apis/stash.appscode.com";
    const SSA: &str = "?&force=true&fieldManager=coffer";

    fn context(client: Client) -> Arc<reconcile::Context> {
        let mut ctx = reconcile::Context::new(
            Actor::new(client, Some("coffer-0".into())),
            OperatorSettings::default(),
            Arc::new(Metrics::new()),
        );
        ctx.now = Arc::new(|| NOW.parse().unwrap());
        Arc::new(ctx)
    }

    fn object(v: Value) -> Arc<DynamicObject> {
        Arc::new(serde_json::from_value(v).expect("a Kubernetes object"))
    }

    fn backup_configuration(rv: &str) -> Value {
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
            "metadata": {
                "name": "nightly", "namespace": "db", "uid": "uid-bc", "resourceVersion": rv,
                "generation": 1, "creationTimestamp": "2026-12-01T05:00:00Z",
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
            "spec": {
                "schedule": "30 2 * * *",
                "task": {"name": "mariadb-backup-10.5.8"},
                "repository": {"name": "s3"},
                "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "shop-db"}},
                "retentionPolicy": {"name": "keep", "keepLast": 5, "prune": true},
            },
        })
    }

    /// The reads of a BackupConfiguration's observe step, everything found but its CronJobs.
    fn bc_reads() -> Vec<Expect> {
        bc_reads_with(None, None)
    }

    /// A CronJob as the API returns it, or 404.
    fn cron_reply(found: Option<Value>) -> (u16, Value) {
        match found {
            Some(c) => (200, c),
            None => (404, status(404, "NotFound")),
        }
    }

    /// The Repository `s3` (an S3 backend: nothing to mount), as every observe step reads it.
    fn s3_repository_read() -> Expect {
        Expect::new("GET", format!("{STASH}/v1alpha1/namespaces/db/repositories/s3")).reply(
            200,
            json!({
                "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                "metadata": {"name": "s3", "namespace": "db", "resourceVersion": "3"},
                "spec": {"backend": {"s3": {"endpoint": "http://s3:9000", "bucket": "b"}, "storageSecretName": "s3-secret"}},
            }),
        )
    }

    /// The reads of a BackupConfiguration's observe step, everything found, its trigger and
    /// verification CronJobs as given.
    fn bc_reads_with(trigger: Option<Value>, verification: Option<Value>) -> Vec<Expect> {
        let (ts, tr) = cron_reply(trigger);
        let (vs, vr) = cron_reply(verification);
        vec![
            s3_repository_read(),
            // Metadata only: the operator never holds the Secret's values.
            Expect::new("GET", "/api/v1/namespaces/db/secrets/s3-secret")
                .accept("as=PartialObjectMetadata")
                .reply(
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                       "metadata": {"name": "s3-secret", "namespace": "db"}}),
            ),
            Expect::new("GET", "/apis/appcatalog.appscode.com/v1alpha1/namespaces/db/appbindings/shop-db")
                .reply(
                    200,
                    json!({
                        "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
                        "metadata": {"name": "shop-db", "namespace": "db"},
                        "spec": {"clientConfig": {"url": "mysql://shop-db:3306/"}, "secret": {"name": "shop-db-auth"}},
                    }),
                ),
            Expect::new("GET", "/apis/batch/v1/namespaces/db/cronjobs/stash-trigger-nightly")
                .reply(ts, tr),
            Expect::new("GET", "/apis/batch/v1/namespaces/db/cronjobs/coffer-verify-nightly")
                .reply(vs, vr),
        ]
    }

    fn applies(kind: &'static str, name: &'static str) -> impl Fn(&Value) + Send {
        move |o| {
            assert_eq!(
                (o["kind"].as_str(), o["metadata"]["name"].as_str()),
                (Some(kind), Some(name)),
                "{o}"
            );
            assert_eq!(o["metadata"]["namespace"], "db");
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["kind"].as_str(), owner["uid"].as_str()),
                (Some("BackupConfiguration"), Some("uid-bc"))
            );
            assert_eq!(owner["controller"], true);
        }
    }

    fn event(reason: &'static str) -> Expect {
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
            .body(move |e| {
                assert_eq!(e["reason"], reason, "{e}");
                assert_eq!(e["regarding"]["uid"], "uid-bc");
            })
            .echo()
    }

    /// The writes for a new configuration: its trigger's ServiceAccount, RoleBinding and
    /// CronJob, then its status, conditional on `rv`.
    fn bc_writes(rv: &'static str, status_reply: u16) -> Vec<Expect> {
        vec![
            Expect::new("PATCH", format!("/api/v1/namespaces/db/serviceaccounts/stash-trigger-nightly{SSA}"))
                .body(applies("ServiceAccount", "stash-trigger-nightly"))
                .echo(),
            Expect::new(
                "PATCH",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/stash-trigger-nightly{SSA}"),
            )
            .body(|rb| {
                applies("RoleBinding", "stash-trigger-nightly")(rb);
                assert_eq!(rb["roleRef"]["name"], "coffer-trigger");
                assert_eq!(rb["subjects"][0]["name"], "stash-trigger-nightly");
            })
            .echo(),
            Expect::new("PATCH", format!("/apis/batch/v1/namespaces/db/cronjobs/stash-trigger-nightly{SSA}"))
                .body(|cj| {
                    applies("CronJob", "stash-trigger-nightly")(cj);
                    assert_eq!(cj["spec"]["schedule"], "30 2 * * *");
                    assert_eq!(cj["spec"]["suspend"], false);
                    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                    assert_eq!(pod["serviceAccountName"], "stash-trigger-nightly");
                    assert_eq!(
                        pod["containers"][0]["args"],
                        json!(["create-backupsession", "--namespace=db", "nightly"])
                    );
                })
                .echo(),
            Expect::new("PATCH", format!("{STASH}/v1beta1/namespaces/db/backupconfigurations/nightly/status?"))
                .body(move |p| {
                    assert_eq!(p["metadata"], json!({"resourceVersion": rv}), "a conditional write");
                    assert_eq!(p["status"]["phase"], "Ready", "{p}");
                    let created = p["status"]["conditions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["type"] == "CronJobCreated")
                        .expect("a CronJobCreated condition")
                        .clone();
                    assert_eq!(created["status"], "True");
                })
                .reply(
                    status_reply,
                    if status_reply == 409 { status(409, "Conflict") } else { backup_configuration("99") },
                ),
        ]
    }

    #[tokio::test]
    async fn a_new_backup_configuration_gets_its_trigger_cron_job_and_a_ready_status() {
        let mut steps = bc_reads();
        steps.extend(bc_writes("12", 200));
        steps.extend([event("CronJobCreated"), event("BackupConfigurationReady")]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        let action = reconcile::reconcile(
            Kind::BackupConfiguration,
            object(backup_configuration("12")),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        assert_eq!(action, kube::runtime::controller::Action::await_change());
        drop(ctx);
        verified(verifier).await;
    }

    #[tokio::test]
    async fn a_status_write_that_meets_a_conflict_is_decided_again_from_a_fresh_read() {
        let mut steps = bc_reads();
        // The first status write lost a race: nothing after it is sent (no events that
        // announce an unwritten status).
        steps.extend(bc_writes("12", 409));
        // The configuration is read again, observed again, decided again; the write is
        // now conditional on the version just read.
        steps.push(
            Expect::new(
                "GET",
                format!("{STASH}/v1beta1/namespaces/db/backupconfigurations/nightly"),
            )
            .reply(200, backup_configuration("13")),
        );
        steps.extend(bc_reads());
        steps.extend(bc_writes("13", 200));
        steps.extend([event("CronJobCreated"), event("BackupConfigurationReady")]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(
            Kind::BackupConfiguration,
            object(backup_configuration("12")),
            ctx.clone(),
        )
        .await
        .expect("reconciled after the conflict");
        let text = ctx.metrics.text();
        assert!(
            text.contains(
                "coffer_operator_reconciliations_total{controller=\"backupconfiguration\"} 1"
            ),
            "{text}"
        );
        assert!(
            !text.contains("reconcile_failures_total{"),
            "a conflict resolved by a re-read is no failure: {text}"
        );
        drop(ctx);
        verified(verifier).await;
    }

    #[tokio::test]
    async fn conflicts_that_persist_fail_the_reconcile_for_the_controller_to_retry() {
        let mut steps = bc_reads();
        steps.extend(bc_writes("12", 409));
        for rv in ["13", "14"] {
            steps.push(
                Expect::new(
                    "GET",
                    format!("{STASH}/v1beta1/namespaces/db/backupconfigurations/nightly"),
                )
                .reply(200, backup_configuration(rv)),
            );
            steps.extend(bc_reads());
            steps.extend(bc_writes(rv, 409));
        }
        steps.push(
            Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
                .body(|e| {
                    assert_eq!(
                        (e["type"].as_str(), e["reason"].as_str()),
                        (Some("Warning"), Some("ReconcileFailed"))
                    );
                    assert!(e["note"].as_str().unwrap().contains("409 Conflict"), "{e}");
                })
                .echo(),
        );
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        let err = reconcile::reconcile(
            Kind::BackupConfiguration,
            object(backup_configuration("12")),
            ctx.clone(),
        )
        .await
        .expect_err("three conflicts");
        assert_eq!(err.reason(), "conflict");
        let text = ctx.metrics.text();
        assert!(
            text.contains("coffer_operator_reconcile_failures_total{controller=\"backupconfiguration\",reason=\"conflict\"} 1"),
            "{text}"
        );
        drop(ctx);
        verified(verifier).await;
    }

    /// spec.verification.schedule: the verification CronJob (coffer verify, run by the
    /// scenarios below) next to the trigger.
    mod verification {
        use super::*;

        const VERIFY: &str = "coffer-verify-nightly";

        fn with_verification(mut bc: Value, schedule: Option<&str>, paused: bool) -> Value {
            if let Some(s) = schedule {
                bc["spec"]["verification"] = json!({"schedule": s});
            }
            if paused {
                bc["spec"]["paused"] = json!(true);
            }
            bc
        }

        /// The configuration as the operator left it: Ready with both CronJobs' conditions
        /// (or only the trigger's).
        fn ready(mut bc: Value, verification: bool) -> Value {
            let cond = |t: &str| {
                json!({"type": t, "status": "True", "reason": match t {
                    "ValidationPassed" => "ResourceValidationPassed",
                    "RepositoryFound" => "RepositoryAvailable",
                    "BackendSecretFound" => "BackendSecretAvailable",
                    "BackupTargetFound" => "TargetAvailable",
                    _ => "CronJobCreationSucceeded",
                }, "lastTransitionTime": "2026-12-01T05:00:00Z"})
            };
            let mut conds: Vec<Value> = [
                "ValidationPassed",
                "RepositoryFound",
                "BackendSecretFound",
                "BackupTargetFound",
                "CronJobCreated",
            ]
            .into_iter()
            .map(cond)
            .collect();
            if verification {
                conds.push(cond("VerificationCronJobCreated"));
            }
            bc["status"] = json!({"phase": "Ready", "observedGeneration": 1, "conditions": conds});
            bc
        }

        /// A CronJob as the API holds it.
        fn stored_cron(name: &str, schedule: &str) -> Value {
            json!({
                "apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": name, "namespace": "db", "resourceVersion": "7"},
                "spec": {"schedule": schedule, "suspend": false,
                         "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            })
        }

        fn applied(
            kind: &'static str,
            name: &'static str,
            check: impl Fn(&Value) + Send + 'static,
        ) -> Expect {
            let path = match kind {
                "ServiceAccount" => format!("/api/v1/namespaces/db/serviceaccounts/{name}{SSA}"),
                "RoleBinding" => format!(
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/{name}{SSA}"
                ),
                _ => format!("/apis/batch/v1/namespaces/db/cronjobs/{name}{SSA}"),
            };
            Expect::new("PATCH", path)
                .body(move |o| {
                    applies(kind, name)(o);
                    check(o);
                })
                .echo()
        }

        /// The trigger's three applies, its CronJob suspended or not.
        fn trigger_applies(suspend: bool) -> Vec<Expect> {
            vec![
                applied("ServiceAccount", "stash-trigger-nightly", |_| {}),
                applied("RoleBinding", "stash-trigger-nightly", |_| {}),
                applied("CronJob", "stash-trigger-nightly", move |cj| {
                    assert_eq!(cj["spec"]["suspend"], suspend);
                }),
            ]
        }

        /// The verification's three applies: its CronJob with `schedule` (suspended or not)
        /// runs `coffer verify` as the backup Job's agent runs, bound to coffer-verify-job.
        fn verification_applies(schedule: &'static str, suspend: bool) -> Vec<Expect> {
            vec![
                applied("ServiceAccount", VERIFY, |_| {}),
                applied("RoleBinding", VERIFY, |rb| {
                    assert_eq!(rb["roleRef"]["name"], "coffer-verify-job");
                    assert_eq!(rb["subjects"][0]["name"], VERIFY);
                }),
                applied("CronJob", VERIFY, move |cj| {
                    assert_eq!(cj["spec"]["schedule"], schedule);
                    assert_eq!(cj["spec"]["suspend"], suspend);
                    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
                    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                    assert_eq!(pod["serviceAccountName"], VERIFY);
                    let c = &pod["containers"][0];
                    assert_eq!(c["args"], json!(["verify", "--namespace=db", "nightly"]));
                    assert!(c["env"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["name"] == "COFFER_PLATFORM" && e["value"] == "kubernetes"));
                    assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
                }),
            ]
        }

        fn status_write(rv: &'static str, check: impl Fn(&Value) + Send + 'static) -> Expect {
            Expect::new(
                "PATCH",
                format!("{STASH}/v1beta1/namespaces/db/backupconfigurations/nightly/status?"),
            )
            .body(move |p| {
                assert_eq!(p["metadata"], json!({"resourceVersion": rv}));
                check(p);
            })
            .reply(200, backup_configuration("99"))
        }

        fn verification_condition(p: &Value) -> Option<String> {
            p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "VerificationCronJobCreated")
                .map(|c| c["status"].as_str().unwrap().to_string())
        }

        async fn reconciles(bc: Value, steps: Vec<Expect>) {
            let (client, verifier) = mock_api(steps);
            let ctx = context(client);
            let action = reconcile::reconcile(Kind::BackupConfiguration, object(bc), ctx.clone())
                .await
                .expect("reconciled");
            assert_eq!(action, kube::runtime::controller::Action::await_change());
            drop(ctx);
            verified(verifier).await;
        }

        #[tokio::test]
        async fn created_next_to_the_trigger_with_its_condition() {
            let bc = with_verification(backup_configuration("12"), Some("0 4 * * *"), false);
            let mut steps = bc_reads();
            steps.extend(trigger_applies(false));
            steps.extend(verification_applies("0 4 * * *", false));
            steps.push(status_write("12", |p| {
                assert_eq!(p["status"]["phase"], "Ready", "{p}");
                assert_eq!(verification_condition(p).as_deref(), Some("True"), "{p}");
            }));
            steps.extend([
                event("CronJobCreated"),
                event("VerificationCronJobCreated"),
                event("BackupConfigurationReady"),
            ]);
            reconciles(bc, steps).await;
        }

        #[tokio::test]
        async fn schedule_changed_is_applied_and_the_status_left_alone() {
            let bc = ready(
                with_verification(backup_configuration("12"), Some("15 5 * * 0"), false),
                true,
            );
            let mut steps = bc_reads_with(
                Some(stored_cron("stash-trigger-nightly", "30 2 * * *")),
                Some(stored_cron(VERIFY, "0 4 * * *")),
            );
            steps.extend(trigger_applies(false));
            steps.extend(verification_applies("15 5 * * 0", false));
            steps.push(event("VerificationCronJobUpdated"));
            reconciles(bc, steps).await;
        }

        #[tokio::test]
        async fn schedule_removed_deletes_the_cron_job_and_its_condition() {
            let bc = ready(backup_configuration("12"), true);
            let mut steps = bc_reads_with(
                Some(stored_cron("stash-trigger-nightly", "30 2 * * *")),
                Some(stored_cron(VERIFY, "0 4 * * *")),
            );
            steps.extend(trigger_applies(false));
            steps.push(
                Expect::new(
                    "DELETE",
                    format!("/apis/batch/v1/namespaces/db/cronjobs/{VERIFY}?"),
                )
                .body_is(json!({"propagationPolicy": "Background"}))
                .reply(200, status(200, "Success")),
            );
            steps.push(status_write("12", |p| {
                assert_eq!(p["status"]["phase"], "Ready", "{p}");
                assert_eq!(verification_condition(p), None, "{p}");
                assert!(
                    p["status"]["conditions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["type"] == "CronJobCreated"),
                    "{p}"
                );
            }));
            steps.push(event("VerificationCronJobDeleted"));
            reconciles(bc, steps).await;
        }

        #[tokio::test]
        async fn paused_suspends_both_cron_jobs() {
            let bc = ready(
                with_verification(backup_configuration("12"), Some("0 4 * * *"), true),
                true,
            );
            let mut steps = bc_reads_with(
                Some(stored_cron("stash-trigger-nightly", "30 2 * * *")),
                Some(stored_cron(VERIFY, "0 4 * * *")),
            );
            steps.extend(trigger_applies(true));
            steps.extend(verification_applies("0 4 * * *", true));
            steps.extend([event("CronJobUpdated"), event("VerificationCronJobUpdated")]);
            reconciles(bc, steps).await;
        }
    }

    const SESSION: &str = "nightly-x7k2p";
    const JOB: &str = "stash-backup-nightly-x7k2p-0";

    fn with_time_out(mut bc: Value, t: &str) -> Value {
        bc["spec"]["timeOut"] = json!(t);
        bc
    }

    fn backup_session(rv: &str, status: Value) -> Value {
        let mut s = json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {
                "name": SESSION, "namespace": "db", "uid": "uid-bs", "resourceVersion": rv,
                "creationTimestamp": "2026-12-01T05:40:00Z",
                "labels": {
                    "app.kubernetes.io/managed-by": "coffer",
                    "stash.appscode.com/invoker-type": "BackupConfiguration",
                    "stash.appscode.com/invoker-name": "nightly",
                },
                "ownerReferences": [{"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                                     "name": "nightly", "uid": "uid-bc", "controller": true}],
            },
            "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "nightly"}},
        });
        if !status.is_null() {
            s["status"] = status;
        }
        s
    }

    /// The reads of a BackupSession's observe step: its configuration, its siblings, its Job.
    fn bs_reads(session: Value, job: Expect) -> Vec<Expect> {
        vec![
            Expect::new("GET", format!("{STASH}/v1beta1/namespaces/db/backupconfigurations/nightly"))
                .reply(200, with_time_out(backup_configuration("12"), "10m")),
            // Its Repository: a local backend's volume would be mounted into the Job.
            s3_repository_read(),
            Expect::new(
                "GET",
                format!("{STASH}/v1beta1/namespaces/db/backupsessions?&labelSelector=stash.appscode.com%2Finvoker-name%3Dnightly"),
            )
            .reply(
                200,
                json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSessionList",
                       "metadata": {"resourceVersion": "30"}, "items": [session]}),
            ),
            job,
        ]
    }

    fn session_event(reason: &'static str, warning: bool) -> Expect {
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
            .body(move |e| {
                assert_eq!(e["reason"], reason, "{e}");
                assert_eq!(e["type"], if warning { "Warning" } else { "Normal" });
                assert_eq!(e["regarding"]["kind"], "BackupSession");
                assert_eq!(e["regarding"]["uid"], "uid-bs");
            })
            .echo()
    }

    #[tokio::test]
    async fn a_new_backup_session_gets_its_job_and_a_running_status() {
        let session = backup_session("40", Value::Null);
        let mut steps = bs_reads(
            session.clone(),
            Expect::new("GET", format!("/apis/batch/v1/namespaces/db/jobs/{JOB}"))
                .reply(404, status(404, "NotFound")),
        );
        let sa = "backupconfiguration-nightly-0";
        steps.extend([
            Expect::new(
                "PATCH",
                format!("/api/v1/namespaces/db/serviceaccounts/{sa}{SSA}"),
            )
            .body(move |o| {
                assert_eq!(
                    (o["kind"].as_str(), o["metadata"]["name"].as_str()),
                    (Some("ServiceAccount"), Some(sa))
                )
            })
            .echo(),
            Expect::new(
                "PATCH",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/{sa}{SSA}"),
            )
            .body(move |o| {
                assert_eq!(o["kind"], "RoleBinding");
                assert_eq!(o["roleRef"]["name"], "coffer-backup-job");
                assert_eq!(o["subjects"][0]["name"], sa);
            })
            .echo(),
            Expect::new(
                "PATCH",
                format!("/apis/batch/v1/namespaces/db/jobs/{JOB}{SSA}"),
            )
            .body(|j| {
                assert_eq!(
                    (j["kind"].as_str(), j["metadata"]["name"].as_str()),
                    (Some("Job"), Some(JOB))
                );
                let owner = &j["metadata"]["ownerReferences"][0];
                assert_eq!(
                    (owner["kind"].as_str(), owner["uid"].as_str()),
                    (Some("BackupSession"), Some("uid-bs"))
                );
                assert_eq!(j["spec"]["backoffLimit"], 0);
                assert_eq!(j["spec"]["activeDeadlineSeconds"], 600, "timeOut 10m");
                let pod = &j["spec"]["template"]["spec"];
                assert_eq!(pod["restartPolicy"], "Never");
                assert_eq!(pod["serviceAccountName"], "backupconfiguration-nightly-0");
                assert_eq!(
                    pod["containers"][0]["args"],
                    json!(["agent", "backupsession", SESSION])
                );
            })
            .echo(),
            Expect::new(
                "PATCH",
                format!("{STASH}/v1beta1/namespaces/db/backupsessions/{SESSION}/status?"),
            )
            .body(|p| {
                assert_eq!(p["metadata"], json!({"resourceVersion": "40"}));
                assert_eq!(p["status"]["phase"], "Running", "{p}");
                assert_eq!(p["status"]["sessionDeadline"], "2026-12-01T06:10:00Z");
            })
            .reply(200, session.clone()),
            session_event("BackupSessionRunning", false),
        ]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        let action = reconcile::reconcile(Kind::BackupSession, object(session), ctx.clone())
            .await
            .expect("reconciled");
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(Duration::from_secs(600)),
            "looked at again when the deadline passes"
        );
        drop(ctx);
        verified(verifier).await;
    }

    #[tokio::test]
    async fn a_job_past_its_deadline_is_deleted_and_its_session_failed() {
        // Started at 05:40 with a 10m timeOut; it is 06:00 and the Job still runs.
        let session = backup_session(
            "41",
            json!({"phase": "Running", "sessionDeadline": "2026-12-01T05:50:00Z"}),
        );
        let mut steps = bs_reads(
            session.clone(),
            Expect::new("GET", format!("/apis/batch/v1/namespaces/db/jobs/{JOB}")).reply(
                200,
                json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": JOB, "namespace": "db"},
                    "status": {"active": 1, "startTime": "2026-12-01T05:40:00Z"},
                }),
            ),
        );
        steps.extend([
            Expect::new("DELETE", format!("/apis/batch/v1/namespaces/db/jobs/{JOB}?"))
                .body_is(json!({"propagationPolicy": "Background"}))
                .reply(200, json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": JOB, "namespace": "db"}})),
            Expect::new("PATCH", format!("{STASH}/v1beta1/namespaces/db/backupsessions/{SESSION}/status?"))
                .body(|p| {
                    assert_eq!(p["metadata"], json!({"resourceVersion": "41"}));
                    assert_eq!(p["status"]["phase"], "Failed", "{p}");
                    let c = p["status"]["conditions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["type"] == "DeadlineExceeded")
                        .expect("a DeadlineExceeded condition")
                        .clone();
                    assert_eq!(c["status"], "True");
                })
                .reply(200, session.clone()),
            session_event("BackupSessionDeadlineExceeded", true),
        ]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(Kind::BackupSession, object(session), ctx.clone())
            .await
            .expect("reconciled");
        drop(ctx);
        verified(verifier).await;
    }

    #[tokio::test]
    async fn a_cluster_restore_gets_a_pvc_and_a_job_per_replica() {
        let rs = json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": "shop-restore", "namespace": "db", "uid": "uid-rs", "resourceVersion": "50"},
            "spec": {
                "task": {"name": "perconaxtradb-restore-5.7"},
                "repository": {"name": "s3"},
                "target": {
                    "replicas": 2,
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}],
                    "volumeClaimTemplates": [{
                        "metadata": {"name": "data-shop-${POD_ORDINAL}"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    }],
                    "rules": [{"snapshots": ["latest"]}],
                },
            },
        });
        let jobs = [
            "stash-restore-shop-restore-0-0",
            "stash-restore-shop-restore-0-1",
        ];
        let mut steps: Vec<Expect> = jobs
            .iter()
            .map(|j| {
                Expect::new("GET", format!("/apis/batch/v1/namespaces/db/jobs/{j}"))
                    .reply(404, status(404, "NotFound"))
            })
            .collect();
        steps.push(s3_repository_read());
        let sa = "restoresession-shop-restore-0";
        let kind_and_name = |kind: &'static str, name: &'static str| {
            move |o: &Value| {
                assert_eq!(
                    (o["kind"].as_str(), o["metadata"]["name"].as_str()),
                    (Some(kind), Some(name)),
                    "{o}"
                )
            }
        };
        steps.extend([
            Expect::new(
                "PATCH",
                format!("/api/v1/namespaces/db/serviceaccounts/{sa}{SSA}"),
            )
            .body(kind_and_name("ServiceAccount", sa))
            .echo(),
            Expect::new(
                "PATCH",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/{sa}{SSA}"),
            )
            .body(kind_and_name("RoleBinding", sa))
            .echo(),
        ]);
        // Every replica's PVC before any Job, so no Job waits on a claim that is not there.
        for pvc in ["data-shop-0", "data-shop-1"] {
            steps.push(
                Expect::new(
                    "PATCH",
                    format!("/api/v1/namespaces/db/persistentvolumeclaims/{pvc}{SSA}"),
                )
                .body(move |p| {
                    kind_and_name("PersistentVolumeClaim", pvc)(p);
                    assert_eq!(p["spec"]["resources"]["requests"]["storage"], "1Gi");
                })
                .echo(),
            );
        }
        for (o, (pvc, job)) in [
            ("0", ("data-shop-0", jobs[0])),
            ("1", ("data-shop-1", jobs[1])),
        ] {
            steps.push(
                Expect::new(
                    "PATCH",
                    format!("/apis/batch/v1/namespaces/db/jobs/{job}{SSA}"),
                )
                .body(move |j| {
                    kind_and_name("Job", job)(j);
                    let pod = &j["spec"]["template"]["spec"];
                    let env = pod["containers"][0]["env"].as_array().unwrap();
                    assert!(
                        env.iter()
                            .any(|e| e["name"] == "POD_ORDINAL" && e["value"] == o),
                        "{env:?}"
                    );
                    assert!(
                        pod["volumes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|v| v["persistentVolumeClaim"]["claimName"] == pvc),
                        "{pod}"
                    );
                })
                .echo(),
            );
        }
        steps.push(
            Expect::new(
                "PATCH",
                format!("{STASH}/v1beta1/namespaces/db/restoresessions/shop-restore/status?"),
            )
            .body(|p| {
                assert_eq!(p["metadata"], json!({"resourceVersion": "50"}));
                assert_eq!(p["status"]["phase"], "Running", "{p}");
                assert_eq!(p["status"]["totalHosts"], 2);
            })
            .reply(200, rs.clone()),
        );
        steps.push(
            Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
                .body(|e| {
                    assert_eq!(e["regarding"]["kind"], "RestoreSession");
                    assert_eq!(e["regarding"]["uid"], "uid-rs");
                    assert_eq!(e["type"], "Normal", "{e}");
                })
                .echo(),
        );
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(Kind::RestoreSession, object(rs), ctx.clone())
            .await
            .expect("reconciled");
        drop(ctx);
        verified(verifier).await;
    }

    const COFFER: &str = "/apis/coffer.dev/v1alpha1";

    fn binlog_archive(rv: &str, generation: i64, paused: bool, status: Value) -> Value {
        json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "BinlogArchive",
            "metadata": {
                "name": "pitr", "namespace": "db", "uid": "uid-ba", "resourceVersion": rv,
                "generation": generation, "creationTimestamp": "2026-12-01T05:00:00Z",
            },
            "spec": {"appBinding": {"name": "shop-db"}, "repository": {"name": "s3"}, "paused": paused},
            "status": status,
        })
    }

    /// The archive's Deployment as the API returns it, with `replicas`.
    fn archive_deployment(replicas: i32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coffer-archive-pitr", "namespace": "db", "resourceVersion": "7"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/managed-by": "coffer"}},
                "template": {"spec": {"containers": [{"name": "coffer-archive"}]}},
            },
        })
    }

    fn ba_reads(deployment: Option<Value>) -> Vec<Expect> {
        let (code, reply) = cron_reply(deployment);
        vec![
            s3_repository_read(),
            Expect::new(
                "GET",
                "/apis/apps/v1/namespaces/db/deployments/coffer-archive-pitr",
            )
            .reply(code, reply),
        ]
    }

    fn archive_applies(kind: &'static str) -> impl Fn(&Value) + Send {
        move |o| {
            assert_eq!(
                (o["kind"].as_str(), o["metadata"]["name"].as_str()),
                (Some(kind), Some("coffer-archive-pitr")),
                "{o}"
            );
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["kind"].as_str(), owner["uid"].as_str()),
                (Some("BinlogArchive"), Some("uid-ba"))
            );
            assert_eq!(owner["controller"], true);
        }
    }

    /// The archiver's ServiceAccount, RoleBinding and Deployment (with `replicas`).
    fn ba_applies(replicas: i32) -> Vec<Expect> {
        vec![
            Expect::new("PATCH", format!("/api/v1/namespaces/db/serviceaccounts/coffer-archive-pitr{SSA}"))
                .body(archive_applies("ServiceAccount"))
                .echo(),
            Expect::new(
                "PATCH",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/db/rolebindings/coffer-archive-pitr{SSA}"),
            )
            .body(|rb| {
                archive_applies("RoleBinding")(rb);
                assert_eq!(rb["roleRef"]["name"], "coffer-archive-job");
            })
            .echo(),
            Expect::new("PATCH", format!("/apis/apps/v1/namespaces/db/deployments/coffer-archive-pitr{SSA}"))
                .body(move |d| {
                    archive_applies("Deployment")(d);
                    assert_eq!(d["spec"]["replicas"], replicas);
                    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
                    let pod = &d["spec"]["template"]["spec"];
                    assert_eq!(pod["restartPolicy"], "Always");
                    assert_eq!(
                        pod["containers"][0]["args"],
                        json!(["archive", "--namespace=db", "pitr"])
                    );
                })
                .echo(),
        ]
    }

    fn archive_event(reason: &'static str) -> Expect {
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
            .body(move |e| {
                assert_eq!(e["reason"], reason, "{e}");
                assert_eq!(e["regarding"]["kind"], "BinlogArchive");
                assert_eq!(e["regarding"]["uid"], "uid-ba");
            })
            .echo()
    }

    fn archive_status_write(
        rv: &'static str,
        phase: &'static str,
        streaming: &'static str,
    ) -> Expect {
        Expect::new(
            "PATCH",
            format!("{COFFER}/namespaces/db/binlogarchives/pitr/status?"),
        )
        .body(move |p| {
            assert_eq!(
                p["metadata"],
                json!({"resourceVersion": rv}),
                "a conditional write"
            );
            assert_eq!(p["status"]["phase"], phase, "{p}");
            let conds = p["status"]["conditions"].as_array().unwrap();
            let of = |t: &str| conds.iter().find(|c| c["type"] == t).cloned().unwrap();
            assert_eq!(of("DeploymentCreated")["status"], "True");
            assert_eq!(of("Streaming")["reason"], streaming);
        })
        .reply(200, binlog_archive("99", 1, false, Value::Null))
    }

    #[tokio::test]
    async fn a_new_binlog_archive_gets_one_archiver_deployment_and_a_pending_status() {
        let mut steps = ba_reads(None);
        steps.extend(ba_applies(1));
        steps.push(archive_status_write("20", "Pending", "Starting"));
        steps.extend([
            archive_event("DeploymentCreated"),
            archive_event("BinlogArchivePending"),
        ]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        let action = reconcile::reconcile(
            Kind::BinlogArchive,
            object(binlog_archive("20", 1, false, Value::Null)),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        assert_eq!(action, kube::runtime::controller::Action::await_change());
        drop(ctx);
        verified(verifier).await;
    }

    /// The runner's status, streaming, as the operator last left it plus the runner's fields.
    fn streaming_status() -> Value {
        json!({
            "observedGeneration": 1, "phase": "Streaming",
            "conditions": [
                {"type": "DeploymentCreated", "status": "True", "reason": "Applied",
                 "message": "Deployment coffer-archive-pitr runs the archiver",
                 "lastTransitionTime": "2026-12-01T05:00:00Z"},
                {"type": "Streaming", "status": "True", "reason": "Streaming",
                 "message": "streaming", "lastTransitionTime": "2026-12-01T05:00:01Z"},
            ],
            "lastArchivedGtid": "0-1-42", "lagSeconds": 0.2,
        })
    }

    #[tokio::test]
    async fn a_streaming_archive_keeps_its_deployment_and_the_runner_s_status() {
        // A Deployment without the digest of what was applied: applied again (a no-op for
        // server-side apply); no status write, no Event.
        let mut steps = ba_reads(Some(archive_deployment(1)));
        let mut applies = ba_applies(1);
        let deployment = applies.pop().unwrap();
        let digest = Arc::new(std::sync::Mutex::new(None::<Value>));
        let seen = digest.clone();
        steps.extend(applies);
        steps.push(Expect {
            check: Box::new(move |d| {
                (deployment.check)(d);
                *seen.lock().unwrap() = Some(d["metadata"]["annotations"].clone());
            }),
            ..Expect::new(deployment.method, deployment.uri.clone()).echo()
        });
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(
            Kind::BinlogArchive,
            object(binlog_archive("21", 1, false, streaming_status())),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        drop(ctx);
        verified(verifier).await;

        // The runner's next status write reconciles it again: the Deployment now carries the
        // digest of what would be applied, so only the reads are made.
        let mut applied = archive_deployment(1);
        applied["metadata"]["annotations"] = digest.lock().unwrap().clone().expect("applied");
        assert!(applied["metadata"]["annotations"]["coffer.dev/applied-hash"].is_string());
        let steps = ba_reads(Some(applied));
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(
            Kind::BinlogArchive,
            object(binlog_archive("21", 1, false, streaming_status())),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        drop(ctx);
        verified(verifier).await;
    }

    #[tokio::test]
    async fn a_paused_archive_is_scaled_to_zero_and_paused_then_resumed() {
        // spec.paused set (generation 2): replicas 0, phase Paused.
        let mut steps = ba_reads(Some(archive_deployment(1)));
        steps.extend(ba_applies(0));
        steps.push(archive_status_write("22", "Paused", "Paused"));
        steps.extend([
            archive_event("DeploymentUpdated"),
            archive_event("BinlogArchivePaused"),
        ]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(
            Kind::BinlogArchive,
            object(binlog_archive("22", 2, true, streaming_status())),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        drop(ctx);
        verified(verifier).await;

        // spec.paused cleared (generation 3): replicas 1, Pending until the runner writes.
        let mut paused = streaming_status();
        paused["phase"] = json!("Paused");
        paused["observedGeneration"] = json!(2);
        let mut steps = ba_reads(Some(archive_deployment(0)));
        steps.extend(ba_applies(1));
        steps.push(archive_status_write("23", "Pending", "Starting"));
        steps.extend([
            archive_event("DeploymentUpdated"),
            archive_event("BinlogArchivePending"),
        ]);
        let (client, verifier) = mock_api(steps);
        let ctx = context(client);
        reconcile::reconcile(
            Kind::BinlogArchive,
            object(binlog_archive("23", 3, false, paused)),
            ctx.clone(),
        )
        .await
        .expect("reconciled");
        drop(ctx);
        verified(verifier).await;
    }
}

/// The controllers' wiring: what they watch, when they count as synced, and that they stop.
mod controllers {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{
        operator::{metrics::Metrics, reconcile, run_controllers},
        OperatorSettings,
    };

    /// An API server that answers every list with an empty list and leaves every watch
    /// open, recording what was asked.
    fn quiet_api() -> (Client, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = tokio::spawn(async move {
            let mut open_watches = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                log.lock().unwrap().push(format!("{} {uri}", req.method()));
                super::operator_may(req.method().as_str(), &uri);
                if uri.contains("watch=true") {
                    open_watches.push(send);
                    continue;
                }
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(svc, "default"), seen, server)
    }

    #[tokio::test]
    async fn the_controllers_list_and_watch_their_kinds_and_what_coffer_created_then_stop() {
        let (client, seen, server) = quiet_api();
        let metrics = Arc::new(Metrics::new());
        metrics.set_leader(true, true);
        let ctx = Arc::new(reconcile::Context::new(
            Actor::new(client.clone(), None),
            OperatorSettings::default(),
            metrics.clone(),
        ));
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let controllers = tokio::spawn(run_controllers(client, ctx, metrics.clone(), async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));

        let synced = tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.ready().is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            synced.is_ok(),
            "ready once every watch has listed: {:?}",
            seen.lock().unwrap()
        );

        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), controllers)
            .await
            .expect("the controllers stop when told")
            .unwrap();
        assert!(
            metrics.ready().is_err(),
            "a leader whose controllers stopped is not ready"
        );
        server.abort();

        let seen = seen.lock().unwrap().clone();
        // The controllers' own lists (pages of 500), not readiness's (limit 1).
        let lists = |path: &str| {
            seen.iter()
                .filter(|r| r.starts_with(&format!("GET {path}?")) && r.contains("limit=500"))
                .cloned()
                .collect::<Vec<_>>()
        };
        for kind in ["backupconfigurations", "backupsessions", "restoresessions"] {
            let l = lists(&format!("/apis/stash.appscode.com/v1beta1/{kind}"));
            assert_eq!(l.len(), 1, "{kind} listed once across namespaces: {seen:?}");
        }
        let selector = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcoffer";
        let cron = lists("/apis/batch/v1/cronjobs");
        let jobs = lists("/apis/batch/v1/jobs");
        assert_eq!(cron.len(), 1, "{seen:?}");
        let archives = lists("/apis/coffer.dev/v1alpha1/binlogarchives");
        assert_eq!(archives.len(), 1, "binlogarchives listed once: {seen:?}");
        let deployments = lists("/apis/apps/v1/deployments");
        assert_eq!(deployments.len(), 1, "{seen:?}");
        assert_eq!(
            jobs.len(),
            2,
            "Jobs for BackupSessions and RestoreSessions: {seen:?}"
        );
        for r in cron.iter().chain(&jobs).chain(&deployments) {
            assert!(
                r.contains(selector),
                "only coffer's own objects are watched: {r}"
            );
        }
        assert!(
            seen.iter()
                .all(|r| !r.contains("persistentvolumeclaims") && !r.contains("/namespaces/")),
            "{seen:?}"
        );
    }
}

/// The whole election loop: controllers run only while this replica leads.
mod leadership {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    };

    use super::*;
    use crate::{
        operator::{lease::LeaseConfig, metrics::Metrics, run_with},
        OperatorSettings,
    };

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/coffer/leases";

    /// A fake API: the lease is ours (created, then renewed) until `stolen`, then another
    /// replica's, freshly renewed; lists are empty and watches stay open.
    fn fake(stolen: Arc<AtomicBool>) -> (Client, Arc<Mutex<Vec<String>>>) {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut open_watches = Vec::new();
            let mut created = false;
            while let Some((req, send)) = handle.next_request().await {
                let (method, uri) = (req.method().to_string(), req.uri().to_string());
                let body = req.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(format!("{method} {uri} {body}"));
                let held_by = |who: &str| {
                    json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": "coffer-operator", "namespace": "coffer", "resourceVersion": "5"},
                        "spec": {"holderIdentity": who, "leaseDurationSeconds": 15,
                                 "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()},
                    })
                };
                let (code, reply) = match (method.as_str(), uri.as_str()) {
                    (_, u) if u.contains("watch=true") => {
                        open_watches.push(send);
                        continue;
                    }
                    ("GET", u) if u.starts_with(LEASE) => {
                        if stolen.load(Ordering::SeqCst) {
                            (200, held_by("other"))
                        } else if created {
                            (200, held_by("me"))
                        } else {
                            (404, status(404, "NotFound"))
                        }
                    }
                    ("POST", u) if u.starts_with(LEASE) => {
                        created = true;
                        (201, body)
                    }
                    ("PUT", u) if u.starts_with(LEASE) => (200, body),
                    ("GET", _) => (
                        200,
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                    ),
                    _ => (500, status(500, "InternalError")),
                };
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(svc, "default"), seen)
    }

    fn lease_cfg() -> LeaseConfig {
        LeaseConfig {
            retry: Duration::from_millis(20),
            ..LeaseConfig::new("coffer-operator".into(), "coffer".into(), "me".into())
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    fn leading(m: &Metrics) -> bool {
        m.text().lines().any(|l| l == "coffer_operator_leader 1")
    }

    #[tokio::test]
    async fn controllers_run_while_leading_and_stop_when_the_lease_is_lost() {
        let stolen = Arc::new(AtomicBool::new(false));
        let (client, seen) = fake(stolen.clone());
        let metrics = Arc::new(Metrics::new());
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let op = tokio::spawn(run_with(
            client,
            OperatorSettings::default(),
            lease_cfg(),
            metrics.clone(),
            shutdown_rx,
        ));
        until("leading and ready", || {
            leading(&metrics) && metrics.ready().is_ok()
        })
        .await;
        let watches = |s: &Mutex<Vec<String>>| {
            s.lock()
                .unwrap()
                .iter()
                .filter(|r| r.contains("watch=true"))
                .count()
        };
        until("the controllers watch", || watches(&seen) == 8).await;

        stolen.store(true, Ordering::SeqCst);
        until("the controllers stopped", || !leading(&metrics)).await;
        assert!(metrics.ready().is_ok(), "a follower is ready");
        // Following: only the lease is read from now on, nothing is listed or written.
        let before = seen.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after: Vec<String> = seen.lock().unwrap()[before..].to_vec();
        assert!(!after.is_empty(), "the lease is still watched");
        assert!(
            after
                .iter()
                .all(|r| r.starts_with(&format!("GET {LEASE}/coffer-operator"))),
            "{after:?}"
        );
        assert_eq!(watches(&seen), 8, "no controller started again");

        // The lease is free again: this replica takes over and the controllers start again.
        stolen.store(false, Ordering::SeqCst);
        until("leading again", || leading(&metrics)).await;
        until("watching again", || watches(&seen) == 16).await;

        shutdown_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), op)
            .await
            .expect("stops on shutdown")
            .unwrap();
        let log = seen.lock().unwrap();
        let last = log.last().unwrap();
        assert!(
            last.starts_with(&format!("PUT {LEASE}/coffer-operator")),
            "released last: {last}"
        );
        assert!(!last.contains("holderIdentity"), "released: {last}");
    }
}
