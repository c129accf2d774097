//! The agent as it runs in a Kubernetes Job: the operator's Job gives it the session's name
//! in its arguments and the rest in its environment (downward API values, never a Secret's);
//! it reads every resource and Secret through the API with the Job's ServiceAccount. The
//! verification CronJob's `coffer verify` and the archive Deployment's `coffer archive` run
//! the same way.

use anyhow::{anyhow, Context, Result};
use coffer_api::repository::LocalMount;
use coffer_engine::Catalog;
use coffer_kubernetes::KubeCatalog;

/// `COFFER_PLATFORM=kubernetes`, as the operator's Jobs set it.
pub fn on_kubernetes() -> bool {
    std::env::var("COFFER_PLATFORM").is_ok_and(|p| p == "kubernetes")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs `coffer agent KIND NAME` in a Pod.
pub fn agent(flag_namespace: &str, kind: &str, name: &str) -> Result<i32> {
    let kind = crate::commands::parse_kind(kind)?;
    // The Job's namespace comes from the downward API; -n is for running it by hand.
    let ns = env("COFFER_NAMESPACE").unwrap_or_else(|| flag_namespace.to_string());
    let cfg = engine_config()?;
    let cat = KubeCatalog::infer().map_err(|e| anyhow!(e))?;
    let session = cat
        .get(kind, &ns, name)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("cannot read {kind} {ns}/{name}"))?
        .ok_or_else(|| {
            anyhow!(
                "{kind} {ns}/{name} not found: the Job outlived its session, or COFFER_NAMESPACE \
                 names the wrong namespace"
            )
        })?;
    tracing::info!("running {kind} {ns}/{name} in pod {}", pod_name()?);
    crate::commands::run_session(&cat, session, &cfg)
}

/// Runs `coffer verify BC` in the operator's verification CronJob's pod: the configuration,
/// its Repository and Secrets are read through the API, the outcome is written to the
/// configuration's status; the throwaway server runs inside this pod, in its scratch space.
pub fn verify(ns: &str, name: &str, format: crate::Format) -> Result<i32> {
    let cat = KubeCatalog::infer().map_err(|e| anyhow!(e))?;
    if let Ok(pod) = pod_name() {
        tracing::info!("verifying BackupConfiguration {ns}/{name} in pod {pod}");
    }
    // The operator's CronJob mounts a local backend's volume at its mountPath.
    crate::commands::verify_in(&cat, ns, name, format, LocalMount::Pod)
}

/// Runs `coffer archive NAME` in the pod of the operator's archive Deployment: the archive,
/// its AppBinding, Repository and Secrets are read through the API, its status is written
/// there; a local backend's volume is mounted at its mountPath. It runs until Kubernetes
/// stops the pod (SIGTERM: the open segment is stored first); an error ends it non-zero and
/// the kubelet restarts the container with its back-off.
pub fn archive(flag_namespace: &str, name: &str) -> Result<i32> {
    let ns = env("COFFER_NAMESPACE").unwrap_or_else(|| flag_namespace.to_string());
    let cat = KubeCatalog::infer().map_err(|e| anyhow!(e))?;
    if let Ok(pod) = pod_name() {
        tracing::info!("archiving BinlogArchive {ns}/{name} in pod {pod}");
    }
    let opts = coffer_engine::archive::RunOptions {
        local_mount: LocalMount::Pod,
        ..Default::default()
    };
    match coffer_platform::local::archives::run_until_signal(&cat, &ns, name, &opts) {
        Ok(coffer_engine::archive::RunEnd::Paused) => {
            println!("binlogarchive/{name} is paused (spec.paused); nothing streamed");
            Ok(0)
        }
        Ok(coffer_engine::archive::RunEnd::Stopped) => Ok(0),
        Err(e) => Err(anyhow!(e)),
    }
}

/// The pod this agent runs in, which the session's status names as its executor.
fn pod_name() -> Result<String> {
    env("COFFER_POD_NAME").ok_or_else(|| {
        anyhow!(
            "COFFER_POD_NAME is not set: the operator's Job sets it from the downward API \
             (metadata.name); set it to the pod's name when running the agent by hand"
        )
    })
}

fn engine_config() -> Result<coffer_engine::EngineConfig> {
    let replica = env("POD_ORDINAL")
        .map(|o| {
            o.parse::<u32>().map_err(|_| {
                anyhow!("POD_ORDINAL `{o}` is not a replica number (0, 1, ...): fix the Job's env")
            })
        })
        .transpose()?;
    Ok(coffer_engine::EngineConfig {
        listen_address: env("COFFER_POD_IP"),
        replica,
        data_dir_from_volume_mounts: true,
        // The operator's supervisor finds the session's executor by its pod, not a PID.
        executor: coffer_engine::Executor::Pod(pod_name()?),
        // This pod is not the database's: a hook's command runs in the target's pod, through
        // pods/exec, as Stash runs it.
        hook_exec: coffer_engine::hooks::HookExec::InTargetPod(std::sync::Arc::new(
            coffer_kubernetes::pod_exec::PodExec::infer().map_err(|e| anyhow!(e))?,
        )),
        // The operator's Jobs mount a local backend's volume at its mountPath.
        local_mount: LocalMount::Pod,
        ..crate::commands::engine_config()
    })
}
