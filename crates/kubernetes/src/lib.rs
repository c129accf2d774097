//! coffer on Kubernetes: the CRDs for Stash's kinds, the operator's controllers (each one
//! observe → decide → act, with the decisions pure and shared with the local platform through
//! coffer-control), and the catalog through which an agent in a Job reads its resources and
//! patches their status.
//!
//! What the operator runs, per BackupConfiguration: the trigger CronJob of `spec.schedule`
//! (creates BackupSessions) and, with `spec.verification.schedule`, the verification CronJob
//! (`coffer verify` in an agent pod); per BackupSession one backup Job; per RestoreSession
//! one restore Job (one per replica for a cluster); per BinlogArchive one Deployment of one
//! pod running `coffer archive` (scaled to 0 while paused). See [`decide`].

pub mod action;
pub mod catalog;
pub mod crd;
pub mod decide;
pub mod kinds;
pub mod operator;
pub mod pod_exec;
pub mod rbac;
pub mod settings;
pub mod trigger;

pub use action::KubeAction;
pub use catalog::KubeCatalog;
pub use settings::OperatorSettings;

/// A client for the cluster this process runs in (its ServiceAccount), or the one KUBECONFIG
/// names.
pub async fn client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}

/// Whether coffer runs on Kubernetes: `COFFER_PLATFORM=kubernetes`, or inside a pod (the
/// kubelet sets `KUBERNETES_SERVICE_HOST`) unless `COFFER_PLATFORM=local` says otherwise.
pub fn in_cluster() -> bool {
    match std::env::var("COFFER_PLATFORM").ok().as_deref() {
        Some("kubernetes") => true,
        Some("local") => false,
        _ => std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    }
}
