//! `coffer operator run`: kube-rs controllers for BackupConfiguration (owning CronJobs),
//! BackupSession (owning Jobs), RestoreSession (owning Jobs) and BinlogArchive (owning its
//! archiver's Deployment), each reconcile
//! observe → decide → act; run only by the replica that holds the leader Lease; stopped
//! gracefully on SIGTERM/SIGINT; with /healthz, /readyz and /metrics.

pub mod act;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod reconcile;

#[cfg(test)]
pub(crate) mod tests;

use std::{sync::Arc, time::Duration};

use coffer_api::Kind;
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::{CronJob, Job},
    coordination::v1::Lease,
};
use kube::{
    api::{Api, DynamicObject, ListParams},
    runtime::{controller::Controller, watcher},
    Client,
};
use tokio::sync::watch;

use self::{
    act::Actor,
    lease::{LeaderState, LeaseConfig},
    metrics::Metrics,
    reconcile::Context,
};
use crate::{kinds, OperatorSettings};

/// The label selector of the objects the operator creates (decide's objects carry it).
pub const MANAGED_BY_COFFER: &str = "app.kubernetes.io/managed-by=coffer";

/// How the operator process runs (as opposed to what it puts into objects).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Where /healthz, /readyz and /metrics are served, e.g. `0.0.0.0:8080`.
    pub metrics_address: String,
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's identity in the lease (its pod name).
    pub identity: String,
}

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot build a Kubernetes client: {0}; run in a pod with a ServiceAccount, or set KUBECONFIG")]
    Client(kube::Error),
    #[error("{0}")]
    Http(String),
    #[error("cannot install the {signal} handler: {cause}")]
    Signal {
        signal: &'static str,
        cause: std::io::Error,
    },
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(settings: OperatorSettings, options: RunOptions) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    let metrics = Arc::new(Metrics::new());
    metrics::serve(&options.metrics_address, metrics.clone()).map_err(OperatorError::Http)?;
    tracing::info!(
        address = %options.metrics_address,
        lease = %format!("{}/{}", options.lease_namespace, options.lease_name),
        identity = %options.identity,
        "coffer operator starting"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|cause| OperatorError::Signal {
            signal: "SIGTERM",
            cause,
        })?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown_tx.send_replace(true);
    });

    let lease = LeaseConfig::new(
        options.lease_name.clone(),
        options.lease_namespace.clone(),
        options.identity.clone(),
    );
    run_with(client, settings, lease, metrics, shutdown_rx).await;
    Ok(())
}

/// Elects, runs the controllers while leading, and stops them when the lease is lost (to
/// wait for it again) or when `shutdown` turns true (then releases the lease).
pub async fn run_with(
    client: Client,
    settings: OperatorSettings,
    lease_cfg: LeaseConfig,
    metrics: Arc<Metrics>,
    shutdown_rx: watch::Receiver<bool>,
) {
    // The lease outlives the controllers: it is released only after they have stopped.
    let (leader_tx, mut leader_rx) = watch::channel(LeaderState::Unknown);
    let (release_tx, release_rx) = watch::channel(false);
    let identity = lease_cfg.identity.clone();
    let lease_task = tokio::spawn(lease::hold(
        Api::<Lease>::namespaced(client.clone(), &lease_cfg.namespace),
        lease_cfg,
        leader_tx,
        release_rx,
    ));

    let ctx = Arc::new(Context::new(
        Actor::new(client.clone(), Some(identity)),
        settings,
        metrics.clone(),
    ));
    let mut shutdown = shutdown_rx.clone();
    loop {
        // Wait to lead (or to be told to stop).
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = leader_rx.wait_for(|s| {
                metrics.set_leader(*s != LeaderState::Unknown, *s == LeaderState::Leader);
                *s == LeaderState::Leader
            }) => if r.is_err() { break },
        }
        tracing::info!("leading: starting the controllers");
        run_controllers(client.clone(), ctx.clone(), metrics.clone(), {
            let mut shutdown = shutdown_rx.clone();
            let mut leader = leader_rx.clone();
            async move {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => {}
                    _ = leader.wait_for(|s| *s != LeaderState::Leader) => {
                        tracing::warn!("lost the leader lease: stopping the controllers");
                    }
                }
            }
        })
        .await;
        metrics.set_leader(true, false);
        if *shutdown.borrow() {
            break;
        }
    }
    release_tx.send_replace(true);
    let _ = lease_task.await;
    tracing::info!("coffer operator stopped");
}

/// Runs the four controllers until `stop` resolves, then lets running reconciliations end.
async fn run_controllers(
    client: Client,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Each controller watches its own receiver of one stop signal.
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay = tokio::spawn(async move {
        stop.await;
        stop_tx.send_replace(true);
    });
    let wc = watcher::Config::default;
    let main = |kind: Kind| {
        let ar = kinds::api_resource(kind);
        Controller::new_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            wc(),
            ar,
        )
    };
    // Only what coffer created is watched (and cached), not every CronJob, Job and PVC in
    // the cluster.
    let ours = || wc().labels(MANAGED_BY_COFFER);
    let bc = main(Kind::BackupConfiguration).owns(Api::<CronJob>::all(client.clone()), ours());
    let bs = main(Kind::BackupSession).owns(Api::<Job>::all(client.clone()), ours());
    // A cluster restore's PVCs are not watched: they are deliberately not owned by the
    // session (the data outlives it), so their events would map to no RestoreSession; the
    // Jobs that fill them say when the restore is done.
    let rs = main(Kind::RestoreSession).owns(Api::<Job>::all(client.clone()), ours());
    let ba = main(Kind::BinlogArchive).owns(Api::<Deployment>::all(client.clone()), ours());

    let synced = tokio::spawn(check_collections(client.clone(), metrics.clone()));

    let drive = |c: Controller<DynamicObject>, kind: Kind| {
        let mut stop = stop_rx.clone();
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        c.graceful_shutdown_on(stop)
            .run(
                move |o, ctx| reconcile::reconcile(kind, o, ctx),
                move |o, e, ctx| reconcile::error_policy(kind, o, e, ctx),
                ctx.clone(),
            )
            .for_each(move |r| async move { log_outcome(kind, r) })
    };
    futures::future::join4(
        drive(bc, Kind::BackupConfiguration),
        drive(bs, Kind::BackupSession),
        drive(rs, Kind::RestoreSession),
        drive(ba, Kind::BinlogArchive),
    )
    .await;
    synced.abort();
    relay.abort();
    metrics.set_synced(false);
}

/// Logs what a controller's stream yields. Reconcile errors are logged and counted where
/// they happen; the others are the watch's and the queue's.
fn log_outcome<E: std::error::Error, W: std::error::Error>(
    kind: Kind,
    r: Result<
        (
            kube::runtime::reflector::ObjectRef<DynamicObject>,
            kube::runtime::controller::Action,
        ),
        kube::runtime::controller::Error<E, W>,
    >,
) {
    let controller = reconcile::controller_name(kind);
    match r {
        Ok((obj, _)) => tracing::debug!(controller, object = %obj, "reconciled"),
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(controller, error = %e, "controller"),
    }
}

/// Marks the leader ready once the API serves every collection the controllers watch to
/// this ServiceAccount (CRDs installed, RBAC granted), retrying every 5 s and saying what is
/// missing. kube-runtime's own store readiness is not used: its future wakes only its latest
/// waiter, and the controller's queue waits on it, so a second waiter could stall the first
/// reconciliations.
async fn check_collections(client: Client, metrics: Arc<Metrics>) {
    let lp = || ListParams::default().limit(1);
    for kind in [
        Kind::BackupConfiguration,
        Kind::BackupSession,
        Kind::RestoreSession,
        Kind::BinlogArchive,
    ] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &kinds::api_resource(kind));
        while let Err(e) = api.list(&lp()).await {
            tracing::warn!(kind = %kind, error = %e, "cannot list; are coffer's (or Stash's) CRDs installed and the operator's ClusterRole bound?");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    let cron = Api::<CronJob>::all(client.clone());
    while let Err(e) = cron.list(&lp().labels(MANAGED_BY_COFFER)).await {
        tracing::warn!(error = %e, "cannot list CronJobs; is the operator's ClusterRole bound?");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let jobs = Api::<Job>::all(client.clone());
    while let Err(e) = jobs.list(&lp().labels(MANAGED_BY_COFFER)).await {
        tracing::warn!(error = %e, "cannot list Jobs; is the operator's ClusterRole bound?");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let deployments = Api::<Deployment>::all(client);
    while let Err(e) = deployments.list(&lp().labels(MANAGED_BY_COFFER)).await {
        tracing::warn!(error = %e, "cannot list Deployments; is the operator's ClusterRole bound?");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::info!("every watched collection is served: ready");
    metrics.set_synced(true);
}
