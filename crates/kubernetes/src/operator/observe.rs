//! Reads what each decision needs, straight from the API server (not from a watch cache that
//! may lag: a Job missing from a stale cache would read as an interrupted session).

use coffer_api::{
    archive::BinlogArchive, BackupConfiguration, BackupSession, Kind, Repository, Resource,
    RestoreSession,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    api::{Api, DynamicObject, ListParams},
    Client,
};

use super::act::coffer_api_for;
use crate::decide::{self, names, ObservedJob};

/// The label Stash puts on every session with the name of the configuration that invoked it.
pub const INVOKER_NAME_LABEL: &str = "stash.appscode.com/invoker-name";
/// The label with the invoker's kind.
pub const INVOKER_TYPE_LABEL: &str = "stash.appscode.com/invoker-type";

/// Why what a decision needs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("reading {what} failed: {cause}")]
    Api { what: String, cause: kube::Error },
    #[error("{what} as stored cannot be read: {problem}; fix the object (kubectl edit) and it is reconciled again")]
    Decode { what: String, problem: String },
}

impl ObserveError {
    pub fn reason(&self) -> &'static str {
        match self {
            ObserveError::Api { .. } => "observe",
            ObserveError::Decode { .. } => "decode",
        }
    }
}

/// A coffer resource from the API's JSON.
pub fn to_resource(kind: Kind, obj: &DynamicObject) -> Result<Resource, ObserveError> {
    let what = format!(
        "{kind}/{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or(""),
        obj.metadata.name.as_deref().unwrap_or("")
    );
    let value = serde_json::to_value(obj).map_err(|e| ObserveError::Decode {
        what: what.clone(),
        problem: e.to_string(),
    })?;
    Resource::from_json(kind, value).map_err(|p| ObserveError::Decode {
        what,
        problem: p.to_string(),
    })
}

async fn get_coffer(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Resource>, ObserveError> {
    let what = || format!("{kind}/{namespace}/{name}");
    let found = coffer_api_for(client, kind, namespace)
        .get_opt(name)
        .await
        .map_err(|cause| ObserveError::Api {
            what: what(),
            cause,
        })?;
    found.map(|o| to_resource(kind, &o)).transpose()
}

async fn get_typed<K>(api: Api<K>, what: String, name: &str) -> Result<Option<K>, ObserveError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|cause| ObserveError::Api { what, cause })
}

/// BackupConfiguration: its Repository and that Repository's storage Secret, its target
/// AppBinding, its validation, its trigger CronJob and its verification CronJob, in that
/// order.
pub async fn backup_configuration(
    client: &Client,
    bc: &BackupConfiguration,
    raw: &serde_json::Value,
    resource_version: Option<String>,
) -> Result<decide::backup_configuration::Observed, ObserveError> {
    let ns = bc.metadata.namespace().to_string();
    let repo_ns = bc
        .spec
        .repository
        .namespace
        .clone()
        .unwrap_or_else(|| ns.clone());
    let repository =
        match get_coffer(client, Kind::Repository, &repo_ns, &bc.spec.repository.name).await? {
            Some(Resource::Repository(r)) => Some(r),
            _ => None,
        };
    // Only whether the Secret exists: its metadata is read, never its values.
    let backend_secret_found = match repository.as_ref().map(storage_secret) {
        Some(secret) if !secret.is_empty() => Api::<Secret>::namespaced(client.clone(), &repo_ns)
            .get_metadata_opt(secret)
            .await
            .map_err(|cause| ObserveError::Api {
                what: format!("Secret/{repo_ns}/{secret}"),
                cause,
            })?
            .is_some(),
        _ => false,
    };
    let target_found = match bc.spec.target.as_ref().map(|t| &t.ref_) {
        Some(r) if r.kind == Kind::AppBinding.as_str() || r.kind.is_empty() => {
            let tns = r.namespace.clone().unwrap_or_else(|| ns.clone());
            get_coffer(client, Kind::AppBinding, &tns, &r.name)
                .await?
                .is_some()
        }
        // Stash's workload targets (a StatefulSet, ...) are not read: coffer backs up
        // databases through AppBindings, and validation reports any other kind.
        Some(_) => true,
        None => false,
    };
    let problems = coffer_api::validate::validate(&Resource::BackupConfiguration(bc.clone()), raw);
    let validation = if problems.is_empty() {
        Ok(())
    } else {
        Err(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    };
    // Both CronJobs are read whether or not their schedule is set: one whose schedule was
    // removed is deleted.
    let trigger = cron_job(client, &ns, names::trigger_cron_job(&bc.metadata.name)).await?;
    let verification = cron_job(client, &ns, names::verify_cron_job(&bc.metadata.name)).await?;
    Ok(decide::backup_configuration::Observed {
        resource_version,
        repository,
        backend_secret_found,
        target_found,
        validation,
        cron_job: trigger,
        verification_cron_job: verification,
    })
}

async fn cron_job(
    client: &Client,
    ns: &str,
    name: String,
) -> Result<Option<k8s_openapi::api::batch::v1::CronJob>, ObserveError> {
    get_typed(
        Api::namespaced(client.clone(), ns),
        format!("CronJob/{ns}/{name}"),
        &name,
    )
    .await
}

/// The Repository a session's `spec.repository` names (namespace defaulting to the
/// session's), if it exists: the Jobs mount a local backend's volume.
async fn repository(
    client: &Client,
    ns: &str,
    r: &coffer_api::meta::ObjectRef,
) -> Result<Option<Repository>, ObserveError> {
    let repo_ns = r.namespace.as_deref().unwrap_or(ns);
    Ok(
        match get_coffer(client, Kind::Repository, repo_ns, &r.name).await? {
            Some(Resource::Repository(r)) => Some(r),
            _ => None,
        },
    )
}

fn storage_secret(r: &Repository) -> &str {
    &r.spec.backend.storage_secret_name
}

/// BackupSession: its configuration and that configuration's Repository, every session of that configuration (by Stash's
/// invoker label), and its Job.
pub async fn backup_session(
    client: &Client,
    session: &BackupSession,
    resource_version: Option<String>,
) -> Result<decide::backup_session::Observed, ObserveError> {
    let ns = session.metadata.namespace().to_string();
    let bc_name = session.spec.invoker.name.clone();
    let configuration = if bc_name.is_empty() {
        None
    } else {
        match get_coffer(client, Kind::BackupConfiguration, &ns, &bc_name).await? {
            Some(Resource::BackupConfiguration(bc)) => Some(bc),
            _ => None,
        }
    };
    let repository = match &configuration {
        Some(bc) => repository(client, &ns, &bc.spec.repository).await?,
        None => None,
    };
    let mut siblings = Vec::new();
    if !bc_name.is_empty() {
        let lp = ListParams::default().labels(&format!("{INVOKER_NAME_LABEL}={bc_name}"));
        let list = coffer_api_for(client, Kind::BackupSession, &ns)
            .list(&lp)
            .await
            .map_err(|cause| ObserveError::Api {
                what: format!("BackupSessions of {ns}/{bc_name}"),
                cause,
            })?;
        for o in &list.items {
            if let Resource::BackupSession(s) = to_resource(Kind::BackupSession, o)? {
                siblings.push(s);
            }
        }
    }
    let job_name = names::backup_job(&session.metadata.name, 0);
    let job = get_typed(
        Api::<Job>::namespaced(client.clone(), &ns),
        format!("Job/{ns}/{job_name}"),
        &job_name,
    )
    .await?
    .map(|j| ObservedJob::from_job(&j));
    Ok(decide::backup_session::Observed {
        resource_version,
        configuration,
        repository,
        siblings,
        job,
    })
}

/// RestoreSession: its Repository, and its Job (standalone) or one Job per replica
/// (cluster), those that exist.
pub async fn restore_session(
    client: &Client,
    rs: &RestoreSession,
    resource_version: Option<String>,
) -> Result<decide::restore_session::Observed, ObserveError> {
    let ns = rs.metadata.namespace().to_string();
    let names = decide::restore_session::job_names(rs);
    let api = Api::<Job>::namespaced(client.clone(), &ns);
    let mut jobs = Vec::new();
    for name in names {
        if let Some(j) = get_typed(api.clone(), format!("Job/{ns}/{name}"), &name).await? {
            jobs.push(ObservedJob::from_job(&j));
        }
    }
    let repository = repository(client, &ns, &rs.spec.repository).await?;
    Ok(decide::restore_session::Observed {
        resource_version,
        jobs,
        repository,
    })
}

/// BinlogArchive: its Repository (a local backend's volume is mounted into its pod) and its
/// Deployment.
pub async fn binlog_archive(
    client: &Client,
    a: &BinlogArchive,
    resource_version: Option<String>,
) -> Result<decide::binlog_archive::Observed, ObserveError> {
    let ns = a.metadata.namespace().to_string();
    let repository = repository(client, &ns, &a.spec.repository).await?;
    let name = names::archive_deployment(&a.metadata.name);
    let deployment = get_typed(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns),
        format!("Deployment/{ns}/{name}"),
        &name,
    )
    .await?;
    Ok(decide::binlog_archive::Observed {
        resource_version,
        repository,
        deployment,
    })
}
