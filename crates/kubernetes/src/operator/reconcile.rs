//! One reconciliation: observe → decide → act, for each of the four kinds the operator
//! drives. A status write that loses a race (409) is not an error to back off from: the
//! resource is read again and decided anew, a few times, before giving up to the controller.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use coffer_api::{Kind, Resource};
use jiff::Timestamp;
use kube::{api::DynamicObject, runtime::controller::Action, ResourceExt};

use super::{
    act::{coffer_api_for, ActError, Actor, Subject},
    metrics::Metrics,
    observe::{self, ObserveError},
};
use crate::{decide, KubeAction, OperatorSettings};

/// How often a reconciliation is decided again after its status write met a conflict.
pub const CONFLICT_ATTEMPTS: usize = 3;

/// Everything a reconciliation uses besides the resource.
pub struct Context {
    pub actor: Actor,
    pub settings: OperatorSettings,
    pub metrics: Arc<Metrics>,
    /// The clock the decisions read (fixed in tests).
    pub now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(actor: Actor, settings: OperatorSettings, metrics: Arc<Metrics>) -> Context {
        Context {
            actor,
            settings,
            metrics,
            now: Arc::new(Timestamp::now),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Why a reconciliation failed; the controller retries it with a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Act(#[from] ActError),
    #[error("re-reading {what} after a conflict failed: {cause}")]
    Reread { what: String, cause: kube::Error },
}

impl ReconcileError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Observe(e) => e.reason(),
            ReconcileError::Act(e) => e.reason(),
            ReconcileError::Reread { .. } => "observe",
        }
    }
}

/// The controller's name for a kind, in logs and metrics.
pub fn controller_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BackupConfiguration => "backupconfiguration",
        Kind::BackupSession => "backupsession",
        Kind::RestoreSession => "restoresession",
        Kind::BinlogArchive => "binlogarchive",
        _ => "other",
    }
}

/// Reconciles one object of `kind` (BackupConfiguration, BackupSession, RestoreSession or
/// BinlogArchive).
pub async fn reconcile(
    kind: Kind,
    obj: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let controller = controller_name(kind);
    ctx.metrics.reconciled(controller);
    let key = format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let result = reconcile_inner(kind, obj.clone(), &ctx).await;
    match &result {
        Ok(_) => {
            ctx.failures.lock().expect("not poisoned").remove(&key);
        }
        Err(e) => {
            ctx.metrics.failed(controller, e.reason());
            tracing::warn!(object = %key, reason = e.reason(), error = %e, "reconcile failed");
            // `kubectl describe` shows why nothing happens; repeats become one series.
            let subject = Subject {
                kind: Some(kind),
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                uid: obj.metadata.uid.clone(),
                status: None,
            };
            let warning = KubeAction::Event {
                kind,
                namespace: subject.namespace.clone(),
                name: subject.name.clone(),
                warning: true,
                reason: "ReconcileFailed".into(),
                message: e.to_string(),
            };
            let _ = ctx.actor.act(vec![warning], &subject).await;
        }
    }
    result
}

async fn reconcile_inner(
    kind: Kind,
    obj: Arc<DynamicObject>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let mut current = obj;
    let mut attempt = 1;
    loop {
        if current.metadata.deletion_timestamp.is_some() {
            // Being deleted: owner references take the CronJob, Jobs and PVCs with it.
            return Ok(Action::await_change());
        }
        match once(kind, &current, ctx).await {
            Ok(action) => return Ok(action),
            Err(ReconcileError::Act(ActError::Conflict { .. })) if attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                let ns = current.namespace().unwrap_or_default();
                let name = current.name_any();
                tracing::debug!(object = %format!("{kind}/{ns}/{name}"), attempt, "conflict; reading again");
                let fresh = coffer_api_for(ctx.actor.client(), kind, &ns)
                    .get_opt(&name)
                    .await
                    .map_err(|cause| ReconcileError::Reread {
                        what: format!("{kind}/{ns}/{name}"),
                        cause,
                    })?;
                match fresh {
                    Some(o) => current = Arc::new(o),
                    // Deleted meanwhile: nothing is left to decide.
                    None => return Ok(Action::await_change()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn once(kind: Kind, obj: &DynamicObject, ctx: &Context) -> Result<Action, ReconcileError> {
    let client = ctx.actor.client();
    let rv = obj.metadata.resource_version.clone();
    let subject = Subject {
        kind: Some(kind),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.metadata.uid.clone(),
        status: obj.data.get("status").cloned(),
    };
    let now = (ctx.now)();
    let actions = match observe::to_resource(kind, obj)? {
        Resource::BackupConfiguration(bc) => {
            let raw = serde_json::to_value(obj).unwrap_or_default();
            let observed = observe::backup_configuration(client, &bc, &raw, rv).await?;
            decide::backup_configuration::decide(&bc, &observed, &ctx.settings, now)
        }
        Resource::BackupSession(bs) => {
            let observed = observe::backup_session(client, &bs, rv).await?;
            decide::backup_session::decide(&bs, &observed, &ctx.settings, now)
        }
        Resource::RestoreSession(rs) => {
            let observed = observe::restore_session(client, &rs, rv).await?;
            decide::restore_session::decide(&rs, &observed, &ctx.settings, now)
        }
        Resource::BinlogArchive(a) => {
            let observed = observe::binlog_archive(client, &a, rv).await?;
            decide::binlog_archive::decide(&a, &observed, &ctx.settings, now)
        }
        // The controllers are only built for the four kinds above.
        _ => Vec::new(),
    };
    tracing::debug!(object = %format!("{kind}/{}/{}", subject.namespace, subject.name), ?actions, "decided");
    let outcome = ctx.actor.act(actions, &subject).await?;
    Ok(match outcome.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// The controller's error policy: retry the object after a backoff that doubles with each
/// consecutive failure (5 s up to 5 min), so one broken object cannot spin.
pub fn error_policy(
    kind: Kind,
    obj: Arc<DynamicObject>,
    _err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let mut failures = ctx.failures.lock().expect("not poisoned");
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(backoff(*n))
}

/// The delay before the `n`th consecutive retry (n ≥ 1).
pub fn backoff(n: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << n.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let got: Vec<u64> = [1, 2, 3, 4, 6, 7, 100]
            .iter()
            .map(|n| backoff(*n).as_secs())
            .collect();
        assert_eq!(got, vec![5, 10, 20, 40, 160, 300, 300]);
    }
}
