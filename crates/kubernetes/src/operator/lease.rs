//! Leader election with a coordination.k8s.io/v1 Lease: only the replica that holds the
//! lease runs the controllers. Whether to take the lease is a pure decision over the lease
//! as read; the writes are conditional on its resourceVersion, so two replicas that decide
//! at once cannot both win.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// What this replica knows about leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderState {
    /// The lease has not been read yet.
    Unknown,
    Leader,
    /// Another replica holds the lease (its identity, when the lease names one).
    Follower(Option<String>),
}

/// What to do with the lease as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it and renews it: wait.
    Wait { holder: String },
}

/// Decides from the lease as read (`None`: there is none) whether `me` may hold it at `now`.
/// A lease without a duration is given `default_duration`, so a half-written lease cannot
/// block election forever.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(lease) = lease else {
        return LeaseDecision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return LeaseDecision::TakeOver;
    };
    if holder == me {
        return LeaseDecision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| SignedDuration::from_secs(i64::from(s)))
        .unwrap_or_else(|| {
            SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX)
        });
    let last = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    match last {
        Some(t) if t.checked_add(duration).map(|end| end > now).unwrap_or(true) => {
            LeaseDecision::Wait { holder }
        }
        _ => LeaseDecision::TakeOver,
    }
}

/// The lease to write for a decision (None for `Wait`), carrying the read resourceVersion so
/// the write fails with 409 if someone else wrote in between.
pub fn next_lease(
    read: Option<&Lease>,
    decision: &LeaseDecision,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Option<Lease> {
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let previous = read.and_then(|l| l.spec.clone()).unwrap_or_default();
    let spec = match decision {
        LeaseDecision::Wait { .. } => return None,
        LeaseDecision::Create => LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(0),
            ..Default::default()
        },
        LeaseDecision::Renew => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..previous
        },
        LeaseDecision::TakeOver => LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(previous.lease_transitions.unwrap_or(0) + 1),
            ..previous
        },
    };
    Some(Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            resource_version: read.and_then(|l| l.metadata.resource_version.clone()),
            ..Default::default()
        },
        spec: Some(spec),
    })
}

/// Which lease, who we are, and how long a hold lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name, unique per process otherwise).
    pub identity: String,
    /// How long a hold lasts without renewal.
    pub duration: Duration,
    /// How often the lease is read and renewed; well under `duration`.
    pub retry: Duration,
}

impl LeaseConfig {
    pub fn new(name: String, namespace: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            name,
            namespace,
            identity,
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// Reads, decides and writes the lease every `retry` until `shutdown` resolves, publishing
/// the state on `state`. A leader that cannot renew for a whole `duration` steps down (someone
/// else may have taken over by then). On shutdown a held lease is released so another replica
/// takes over at once.
pub async fn hold(
    api: Api<Lease>,
    cfg: LeaseConfig,
    state: watch::Sender<LeaderState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        let next = match step(&api, &cfg).await {
            Ok(LeaderState::Leader) => {
                last_renewed = Some(std::time::Instant::now());
                LeaderState::Leader
            }
            Ok(other) => {
                last_renewed = None;
                other
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "cannot read or write the leader lease");
                match last_renewed {
                    Some(t) if t.elapsed() < cfg.duration => LeaderState::Leader,
                    Some(_) => LeaderState::Follower(None),
                    None => state.borrow().clone(),
                }
            }
        };
        state.send_if_modified(|s| {
            if *s != next {
                tracing::info!(lease = %cfg.name, from = ?s, to = ?next, "leadership changed");
                *s = next;
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if *state.borrow() == LeaderState::Leader {
        release(&api, &cfg).await;
    }
    state.send_replace(LeaderState::Follower(None));
}

async fn step(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<LeaderState, kube::Error> {
    let read = api.get_opt(&cfg.name).await?;
    let now = Timestamp::now();
    let decision = decide(read.as_ref(), &cfg.identity, now, cfg.duration);
    let Some(lease) = next_lease(read.as_ref(), &decision, cfg, now) else {
        let LeaseDecision::Wait { holder } = decision else {
            unreachable!("only Wait writes nothing")
        };
        return Ok(LeaderState::Follower(Some(holder)));
    };
    let written = match decision {
        LeaseDecision::Create => api.create(&PostParams::default(), &lease).await,
        _ => api.replace(&cfg.name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => Ok(LeaderState::Leader),
        // Another replica wrote first: it leads; we find out who on the next read.
        Err(kube::Error::Api(s)) if s.is_conflict() || s.code == 409 => {
            Ok(LeaderState::Follower(None))
        }
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(read)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let mut lease = read.clone();
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the leader lease"),
        Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "cannot release the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: Option<i64>, duration: Option<i32>) -> Lease {
        let now: Timestamp = "2026-12-01T06:00:00Z".parse().unwrap();
        Lease {
            metadata: ObjectMeta {
                name: Some("coffer-operator".into()),
                resource_version: Some("41".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed_secs_ago.map(|s| MicroTime(now - SignedDuration::from_secs(s))),
                lease_duration_seconds: duration,
                lease_transitions: Some(3),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn lease_decisions() {
        let now: Timestamp = "2026-12-01T06:00:00Z".parse().unwrap();
        let d = Duration::from_secs(15);
        let wait = |h: &str| LeaseDecision::Wait { holder: h.into() };
        let table: Vec<(&str, Option<Lease>, LeaseDecision)> = vec![
            ("no lease", None, LeaseDecision::Create),
            (
                "ours",
                Some(lease(Some("me"), Some(5), Some(15))),
                LeaseDecision::Renew,
            ),
            (
                "ours, even expired",
                Some(lease(Some("me"), Some(60), Some(15))),
                LeaseDecision::Renew,
            ),
            (
                "released",
                Some(lease(None, Some(5), Some(1))),
                LeaseDecision::TakeOver,
            ),
            (
                "empty holder",
                Some(lease(Some(""), Some(5), Some(15))),
                LeaseDecision::TakeOver,
            ),
            (
                "other, fresh",
                Some(lease(Some("other"), Some(5), Some(15))),
                wait("other"),
            ),
            (
                "other, expired",
                Some(lease(Some("other"), Some(16), Some(15))),
                LeaseDecision::TakeOver,
            ),
            (
                "other, exactly at expiry",
                Some(lease(Some("other"), Some(15), Some(15))),
                LeaseDecision::TakeOver,
            ),
            (
                "other, never renewed",
                Some(lease(Some("other"), None, Some(15))),
                LeaseDecision::TakeOver,
            ),
            (
                "other, no duration: default",
                Some(lease(Some("other"), Some(10), None)),
                wait("other"),
            ),
            (
                "other, no duration, expired",
                Some(lease(Some("other"), Some(20), None)),
                LeaseDecision::TakeOver,
            ),
        ];
        for (case, l, want) in table {
            assert_eq!(decide(l.as_ref(), "me", now, d), want, "{case}");
        }
    }

    #[test]
    fn writes_carry_the_read_version_and_count_transitions() {
        let now: Timestamp = "2026-12-01T06:00:00Z".parse().unwrap();
        let cfg = LeaseConfig::new("coffer-operator".into(), "coffer".into(), "me".into());
        let read = lease(Some("other"), Some(60), Some(15));
        let taken = next_lease(Some(&read), &LeaseDecision::TakeOver, &cfg, now).unwrap();
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("41"));
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));

        let mine = lease(Some("me"), Some(5), Some(15));
        let renewed = next_lease(Some(&mine), &LeaseDecision::Renew, &cfg, now).unwrap();
        let spec = renewed.spec.unwrap();
        assert_eq!(
            spec.lease_transitions,
            Some(3),
            "a renewal is not a transition"
        );
        assert_eq!(spec.renew_time, Some(MicroTime(now)));

        let created = next_lease(None, &LeaseDecision::Create, &cfg, now).unwrap();
        assert_eq!(created.metadata.resource_version, None);
        assert_eq!(created.metadata.namespace.as_deref(), Some("coffer"));
        assert!(next_lease(Some(&read), &wait_other(), &cfg, now).is_none());
    }

    fn wait_other() -> LeaseDecision {
        LeaseDecision::Wait {
            holder: "other".into(),
        }
    }
}
