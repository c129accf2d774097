//! `coffer operator …` (the Kubernetes operator) and `coffer create-backupsession` (what the
//! trigger CronJob's pod runs). Neither opens the local store: in a pod there is none.

use std::{io::Write, path::PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use coffer_api::{Kind, Resource};
use coffer_kubernetes::{operator::RunOptions, OperatorSettings};

// Parsed once per process: the size of `RunArgs` next to `Crds` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Print the CustomResourceDefinitions of Stash's kinds (`| kubectl apply -f -`)
    Crds,
    /// Run the operator: controllers for BackupConfiguration, BackupSession and
    /// RestoreSession, with leader election, /healthz, /readyz and /metrics
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Image of the CronJob and Job pods (coffer with the database clients)
    #[arg(long, env = "COFFER_IMAGE")]
    pub image: Option<String>,
    /// imagePullPolicy of those pods
    #[arg(long, env = "COFFER_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// imagePullSecrets of those pods (repeatable)
    #[arg(long = "image-pull-secret")]
    pub image_pull_secrets: Vec<String>,
    /// Pushgateway the agents push their metrics to (e.g. http://pushgateway.monitoring:9091)
    #[arg(long, env = "COFFER_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
    /// ClusterRole bound to each configuration's trigger ServiceAccount
    #[arg(long, default_value = "coffer-trigger")]
    pub trigger_cluster_role: String,
    /// ClusterRole bound to each backup Job's ServiceAccount
    #[arg(long, default_value = "coffer-backup-job")]
    pub backup_job_cluster_role: String,
    /// ClusterRole bound to each restore Job's ServiceAccount
    #[arg(long, default_value = "coffer-restore-job")]
    pub restore_job_cluster_role: String,
    /// ClusterRole bound to each configuration's verification CronJob ServiceAccount
    #[arg(long, default_value = "coffer-verify-job")]
    pub verify_job_cluster_role: String,
    /// ClusterRole bound to each BinlogArchive Deployment's ServiceAccount
    #[arg(long, default_value = "coffer-archive-job")]
    pub archive_cluster_role: String,
    /// Address for /metrics, /healthz and /readyz
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_address: String,
    /// Name of the Lease that elects the leader
    #[arg(long, default_value = "coffer-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the pod's own namespace)
    #[arg(long)]
    pub lease_namespace: Option<String>,
}

/// `coffer operator …`.
pub fn operator(command: OperatorCommand) -> Result<i32> {
    match command {
        OperatorCommand::Crds => crds(),
        OperatorCommand::Run(args) => run(args),
    }
}

fn crds() -> Result<i32> {
    std::io::stdout()
        .lock()
        .write_all(coffer_kubernetes::crd::crds_yaml().as_bytes())
        .context("cannot write the CRDs to stdout")?;
    Ok(0)
}

/// `coffer operator run`.
fn run(args: RunArgs) -> Result<i32> {
    let defaults = OperatorSettings::default();
    let settings = OperatorSettings {
        image: args.image.unwrap_or(defaults.image),
        image_pull_policy: args.image_pull_policy,
        image_pull_secrets: args.image_pull_secrets,
        pushgateway: args.pushgateway,
        trigger_cluster_role: args.trigger_cluster_role,
        backup_job_cluster_role: args.backup_job_cluster_role,
        restore_job_cluster_role: args.restore_job_cluster_role,
        verify_job_cluster_role: args.verify_job_cluster_role,
        archive_cluster_role: args.archive_cluster_role,
    };
    let options = RunOptions {
        metrics_address: args.metrics_address,
        lease_name: args.lease_name,
        lease_namespace: match args.lease_namespace {
            Some(ns) => ns,
            None => own_namespace().ok_or_else(|| {
                anyhow!(
                    "--lease-namespace is required outside a pod (POD_NAMESPACE is not set and \
                     there is no ServiceAccount namespace file)"
                )
            })?,
        },
        identity: identity(),
    };
    runtime()?.block_on(coffer_kubernetes::operator::run(settings, options))?;
    Ok(0)
}

/// `coffer create-backupsession <bc>`: on Kubernetes through the API (the trigger
/// CronJob's pod), else in the local store.
pub fn create_backupsession(home: Option<PathBuf>, ns: &str, bc: &str) -> Result<i32> {
    if coffer_kubernetes::in_cluster() {
        let name = runtime()?.block_on(async {
            let client = coffer_kubernetes::client()
                .await
                .map_err(|e| anyhow!("cannot reach the Kubernetes API: {e}"))?;
            coffer_kubernetes::trigger::create_backup_session(&client, ns, bc)
                .await
                .map_err(anyhow::Error::from)
        })?;
        println!("backupsession/{name} created");
        return Ok(0);
    }
    let store = coffer_platform::local::Store::open(&crate::home::resolve(home))?;
    let Some(Resource::BackupConfiguration(config)) =
        store.get(Kind::BackupConfiguration, ns, bc)?
    else {
        bail!("BackupConfiguration {ns}/{bc} not found (use -n to choose the namespace)");
    };
    let bs = coffer_platform::local::server::create_backup_session(&store, &config, None)
        .map_err(|e| anyhow!(e))?;
    println!("backupsession/{} created", bs.metadata.name);
    Ok(0)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `POD_NAMESPACE` (the Helm chart sets it from the downward API), else the namespace of
/// the pod's ServiceAccount.
fn own_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
}

/// This replica's name in the lease: `POD_NAME`, else the host name (a pod's is its name),
/// with the process id so two processes on one host never share it.
fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "coffer".into());
    format!("{host}-{}", std::process::id())
}
