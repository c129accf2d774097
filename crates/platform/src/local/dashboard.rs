//! The read-only web dashboard of `coffer server`: one self-contained HTML page (its CSS and
//! JavaScript inline, nothing fetched from elsewhere, so it works without internet access)
//! and `/api/overview`, a JSON summary built from the store at each request, which the page
//! polls and re-renders. Only names, phases, times, sizes and failure reasons are shown:
//! never a Secret, an AppBinding's address or a repository's backend location (a REST URL
//! may carry credentials).

use std::net::{SocketAddr, ToSocketAddrs};

use coffer_api::{
    backup::{BackupConfiguration, BackupSession, SessionPhase},
    BinlogArchive, Kind, Repository, Resource, RestoreSession,
};
use jiff::Timestamp;
use serde_json::{json, Value};

use super::store::Store;

/// The page, embedded in the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// At most this many sessions of each kind are listed (the newest); history limits keep the
/// store small, this bounds the answer when they are not set.
const MAX_SESSIONS: usize = 500;

/// Where the dashboard is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DashboardAt {
    /// Not served.
    Off,
    /// On the /metrics listener.
    OnMetrics,
    /// On a listener of its own.
    Own(String),
}

/// Where the dashboard goes, from the flag (or config file) value and the metrics address.
/// Unset: on the metrics listener when that is loopback, else nowhere — the dashboard is
/// never exposed beyond the machine unless asked for by its own setting. `off` (or empty)
/// disables it; an address equal to the metrics address shares that listener.
pub fn dashboard_at(setting: Option<&str>, metrics_address: &str) -> DashboardAt {
    match setting.map(str::trim) {
        None => {
            if is_loopback(metrics_address) {
                DashboardAt::OnMetrics
            } else {
                DashboardAt::Off
            }
        }
        Some("") | Some("off") | Some("false") | Some("none") => DashboardAt::Off,
        Some(a) if a == metrics_address.trim() => DashboardAt::OnMetrics,
        Some(a) => DashboardAt::Own(a.to_string()),
    }
}

/// Whether every address `addr` resolves to is a loopback one (an address that does not
/// resolve counts as not loopback).
fn is_loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    match addr.to_socket_addrs() {
        Ok(list) => {
            let list: Vec<SocketAddr> = list.collect();
            !list.is_empty() && list.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

fn ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

fn fmt_ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn duration_secs(s: Option<&str>) -> Option<f64> {
    s.and_then(|s| coffer_api::duration::parse(s).ok())
        .map(|d| d.as_secs_f64())
}

/// Bytes read and bytes added to the repository by a backup session, summed over its
/// hosts and snapshots; None when it recorded no sizes.
fn backup_sizes(bs: &BackupSession) -> (Option<u64>, Option<u64>) {
    let mut total = None;
    let mut uploaded = None;
    for t in bs.status.iter().flat_map(|s| &s.targets) {
        for h in &t.stats {
            for sn in &h.snapshots {
                if let Some(b) = sn.total_bytes {
                    *total.get_or_insert(0) += b;
                }
                if let Some(b) = sn.uploaded_bytes {
                    *uploaded.get_or_insert(0) += b;
                }
            }
        }
    }
    (total, uploaded)
}

/// Why a session failed or was skipped: its error, else the first host error, else the
/// message of a condition that is False.
fn backup_reason(bs: &BackupSession) -> Option<String> {
    let st = bs.status.as_ref()?;
    let phase = st.phase.unwrap_or_default();
    if !matches!(
        phase,
        SessionPhase::Failed | SessionPhase::Skipped | SessionPhase::Invalid
    ) {
        return None;
    }
    st.error
        .clone()
        .or_else(|| {
            st.targets
                .iter()
                .flat_map(|t| &t.stats)
                .find_map(|h| h.error.clone())
        })
        .or_else(|| {
            st.conditions
                .iter()
                .find(|c| c.status == "False" && !c.message.is_empty())
                .map(|c| c.message.clone())
        })
}

fn backup_session_json(bs: &BackupSession) -> Value {
    let st = bs.status.as_ref();
    let phase = st.and_then(|s| s.phase).unwrap_or_default();
    let start = ts(bs.metadata.creation_timestamp.as_deref());
    let dur = duration_secs(st.and_then(|s| s.session_duration.as_deref()));
    let end = match (start, dur, phase.is_final()) {
        (Some(s), Some(d), true) => s.checked_add(jiff::SignedDuration::from_secs_f64(d)).ok(),
        _ => None,
    };
    let (total, uploaded) = backup_sizes(bs);
    json!({
        "name": bs.metadata.name,
        "namespace": bs.metadata.namespace(),
        "configuration": bs.spec.invoker.name,
        "phase": phase.as_str(),
        "start": start.map(fmt_ts),
        "end": end.map(fmt_ts),
        "durationSeconds": dur,
        "totalBytes": total,
        "uploadedBytes": uploaded,
        "retried": st.is_some_and(|s| s.retried),
        "reason": backup_reason(bs),
    })
}

fn restore_session_json(rs: &RestoreSession) -> Value {
    let st = rs.status.as_ref();
    let phase = st.and_then(|s| s.phase).unwrap_or_default();
    let restored: Option<u64> = st.and_then(|s| {
        s.stats
            .iter()
            .filter_map(|h| h.restored_bytes)
            .reduce(|a, b| a + b)
    });
    let reason = if matches!(phase, SessionPhase::Failed | SessionPhase::Invalid) {
        st.and_then(|s| {
            s.error
                .clone()
                .or_else(|| s.stats.iter().find_map(|h| h.error.clone()))
        })
    } else {
        None
    };
    json!({
        "name": rs.metadata.name,
        "namespace": rs.metadata.namespace(),
        "repository": rs.spec.repository.name,
        "phase": phase.as_str(),
        "start": rs.metadata.creation_timestamp,
        "durationSeconds": duration_secs(st.and_then(|s| s.session_duration.as_deref())),
        "restoredBytes": restored,
        "pointInTime": st.and_then(|s| s.point_in_time.as_ref()).map(|p| json!({
            "baseSnapshot": p.base_snapshot,
            "lastTransactionTime": p.last_transaction_time,
            "segments": p.segments,
        })),
        "reason": reason,
    })
}

fn configuration_json(bc: &BackupConfiguration, mine: &[&BackupSession], now: Timestamp) -> Value {
    let ns = bc.metadata.namespace();
    let last = mine.last().map(|s| backup_session_json(s));
    let newest_good = mine
        .iter()
        .rev()
        .find(|s| s.status.as_ref().and_then(|x| x.phase) == Some(SessionPhase::Succeeded))
        .map(|s| backup_session_json(s));
    let good_time = newest_good
        .as_ref()
        .and_then(|s| s["end"].as_str().or(s["start"].as_str()))
        .and_then(|t| t.parse::<Timestamp>().ok());
    let verification = bc
        .status
        .as_ref()
        .and_then(|s| s.last_verification.as_ref());
    json!({
        "name": bc.metadata.name,
        "namespace": ns,
        "phase": bc.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()),
        "notReadyReasons": bc.status.iter().flat_map(|s| &s.conditions)
            .filter(|c| c.status == "False" && !c.message.is_empty())
            .map(|c| c.message.clone())
            .collect::<Vec<_>>(),
        "schedule": bc.spec.schedule,
        "paused": bc.spec.paused,
        "repository": bc.spec.repository.name,
        "target": bc.spec.target.as_ref().map(|t| t.ref_.name.clone()),
        "lastSession": last,
        "newestSucceeded": good_time.map(fmt_ts),
        "newestSucceededAgeSeconds": good_time.map(|t| (now - t).get_seconds().max(0)),
        // When the newest restore verification ran, its outcome, the recovery time it
        // measured, and why it failed.
        "verification": {
            "last": verification.and_then(|v| v.time.clone()),
            "outcome": verification.and_then(|v| v.phase).map(|p| p.as_str()),
            "recoveryTimeSeconds": verification.and_then(|v| v.recovery_seconds),
            "reason": verification.and_then(|v| v.reason.clone()),
            "snapshot": verification.and_then(|v| v.snapshot.clone()),
        },
    })
}

fn repository_json(r: &Repository, sessions: &[Value]) -> Value {
    let st = r.status.as_ref();
    let b = &r.spec.backend;
    // The kind of backend only: its location may hold credentials (a REST URL).
    let backend = [
        ("s3", b.s3.is_some()),
        ("gcs", b.gcs.is_some()),
        ("azure", b.azure.is_some()),
        ("b2", b.b2.is_some()),
        ("swift", b.swift.is_some()),
        ("rest", b.rest.is_some()),
        ("local", b.local.is_some()),
    ]
    .into_iter()
    .find(|(_, on)| *on)
    .map(|(k, _)| k);
    let mut cumulative = 0u64;
    let growth: Vec<Value> = sessions
        .iter()
        .filter(|s| s["phase"] == "Succeeded")
        .map(|s| {
            let up = s["uploadedBytes"].as_u64().unwrap_or(0);
            cumulative += up;
            json!({
                "time": s["end"].as_str().or(s["start"].as_str()),
                "session": s["name"],
                "uploadedBytes": up,
                "cumulativeBytes": cumulative,
            })
        })
        .collect();
    json!({
        "name": r.metadata.name,
        "namespace": r.metadata.namespace(),
        "backend": backend,
        "integrity": st.and_then(|s| s.integrity),
        "totalSizeBytes": st.and_then(|s| s.total_size_bytes),
        "snapshotCount": st.and_then(|s| s.snapshot_count),
        "firstBackupTime": st.and_then(|s| s.first_backup_time.clone()),
        "lastBackupTime": st.and_then(|s| s.last_backup_time.clone()),
        "growth": growth,
    })
}

fn archive_json(a: &BinlogArchive) -> Value {
    let st = a.status.as_ref();
    json!({
        "name": a.metadata.name,
        "namespace": a.metadata.namespace(),
        "phase": st.and_then(|s| s.phase).map(|p| p.to_string()),
        "paused": a.spec.paused,
        "lagSeconds": st.and_then(|s| s.lag_seconds),
        "lastEventTime": st.and_then(|s| s.last_event_time.clone()),
        "segmentCount": st.and_then(|s| s.segment_count),
        "archivedBytes": st.and_then(|s| s.archived_bytes),
        "windows": st.iter().flat_map(|s| &s.recoverable_windows)
            .map(|w| json!({"earliest": w.earliest, "latest": w.latest}))
            .collect::<Vec<_>>(),
        "gaps": st.map(|s| s.gaps.len()).unwrap_or(0),
        "reason": st.and_then(|s| s.error.clone()),
    })
}

fn list<T>(store: &Store, kind: Kind, pick: impl Fn(Resource) -> Option<T>) -> Vec<T> {
    store
        .list(kind, None)
        .unwrap_or_default()
        .into_iter()
        .filter_map(pick)
        .collect()
}

fn created(m: &coffer_api::meta::ObjectMeta) -> Option<Timestamp> {
    ts(m.creation_timestamp.as_deref())
}

/// `/api/overview`: everything the page shows, from the store as it is now.
pub fn overview(store: &Store, now: Timestamp) -> Result<Value, String> {
    let revision = store.revision().map_err(|e| e.to_string())?;
    let mut backups = list(store, Kind::BackupSession, |r| match r {
        Resource::BackupSession(b) => Some(b),
        _ => None,
    });
    // Oldest first; the name breaks ties of one second.
    backups.sort_by(|a, b| {
        (created(&a.metadata), &a.metadata.name).cmp(&(created(&b.metadata), &b.metadata.name))
    });
    let configs = list(store, Kind::BackupConfiguration, |r| match r {
        Resource::BackupConfiguration(b) => Some(b),
        _ => None,
    });
    let configurations: Vec<Value> = configs
        .iter()
        .map(|bc| {
            let mine: Vec<&BackupSession> = backups
                .iter()
                .filter(|s| {
                    s.metadata.namespace() == bc.metadata.namespace()
                        && s.spec.invoker.name == bc.metadata.name
                })
                .collect();
            configuration_json(bc, &mine, now)
        })
        .collect();
    let backup_json: Vec<(Option<String>, Value)> = backups
        .iter()
        .map(|s| {
            // The repository a session wrote to is its configuration's.
            let repo = configs
                .iter()
                .find(|c| {
                    c.metadata.namespace() == s.metadata.namespace()
                        && c.metadata.name == s.spec.invoker.name
                })
                .map(|c| {
                    let ns = c.spec.repository.namespace.as_deref();
                    format!(
                        "{}/{}",
                        ns.unwrap_or(c.metadata.namespace()),
                        c.spec.repository.name
                    )
                });
            (repo, backup_session_json(s))
        })
        .collect();
    let repositories: Vec<Value> = list(store, Kind::Repository, |r| match r {
        Resource::Repository(x) => Some(x),
        _ => None,
    })
    .iter()
    .map(|r| {
        let key = format!("{}/{}", r.metadata.namespace(), r.metadata.name);
        let sessions: Vec<Value> = backup_json
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(key.as_str()))
            .map(|(_, v)| v.clone())
            .collect();
        repository_json(r, &sessions)
    })
    .collect();
    let mut restores = list(store, Kind::RestoreSession, |r| match r {
        Resource::RestoreSession(x) => Some(x),
        _ => None,
    });
    restores.sort_by(|a, b| {
        (created(&a.metadata), &a.metadata.name).cmp(&(created(&b.metadata), &b.metadata.name))
    });
    let archives: Vec<Value> = list(store, Kind::BinlogArchive, |r| match r {
        Resource::BinlogArchive(x) => Some(x),
        _ => None,
    })
    .iter()
    .map(archive_json)
    .collect();
    let skip_b = backup_json.len().saturating_sub(MAX_SESSIONS);
    let skip_r = restores.len().saturating_sub(MAX_SESSIONS);
    Ok(json!({
        "now": fmt_ts(now),
        "revision": revision,
        "configurations": configurations,
        "backupSessions": backup_json.into_iter().skip(skip_b).map(|(_, v)| v).collect::<Vec<_>>(),
        "restoreSessions": restores.iter().skip(skip_r).map(restore_session_json).collect::<Vec<_>>(),
        "repositories": repositories,
        "binlogArchives": archives,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_the_dashboard_is_served() {
        use DashboardAt::*;
        let cases: &[(Option<&str>, &str, DashboardAt)] = &[
            // Unset: beside /metrics when that is loopback, else not at all.
            (None, "127.0.0.1:9464", OnMetrics),
            (None, "[::1]:9464", OnMetrics),
            (None, "localhost:9464", OnMetrics),
            (None, "0.0.0.0:9464", Off),
            (None, "192.0.2.7:9464", Off),
            (Some("off"), "127.0.0.1:9464", Off),
            (Some(""), "127.0.0.1:9464", Off),
            (Some("127.0.0.1:9464"), "127.0.0.1:9464", OnMetrics),
            (
                Some("0.0.0.0:8080"),
                "127.0.0.1:9464",
                Own("0.0.0.0:8080".into()),
            ),
            (
                Some("127.0.0.1:9465"),
                "0.0.0.0:9464",
                Own("127.0.0.1:9465".into()),
            ),
        ];
        for (setting, metrics, want) in cases {
            assert_eq!(
                &dashboard_at(*setting, metrics),
                want,
                "{setting:?} with metrics on {metrics}"
            );
        }
    }

    fn put(store: &Store, yaml: &str) {
        for r in coffer_api::parse_manifests(yaml, "t").unwrap() {
            match r.kind() {
                Kind::BackupSession => {
                    store.create(r).unwrap();
                }
                _ => {
                    store.apply(r).unwrap();
                }
            }
        }
    }

    fn session(name: &str, at: &str, status: &str) -> String {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\n\
             metadata: {{name: {name}, namespace: demo, creationTimestamp: \"{at}\"}}\n\
             spec: {{invoker: {{apiGroup: stash.appscode.com, kind: BackupConfiguration, name: nightly}}}}\n\
             status: {status}\n"
        )
    }

    #[test]
    fn the_overview_summarises_the_store_without_secrets() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        put(
            &store,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\n\
             stringData: {RESTIC_PASSWORD: pw-Do-Not-Show, url: \"rest:https://u:pw2-Hidden@h/\"}\n\
             ---\napiVersion: stash.appscode.com/v1alpha1\nkind: Repository\n\
             metadata: {name: repo, namespace: demo}\n\
             spec: {backend: {rest: {url: \"https://u:pw3-Hidden@h/r\"}, storageSecretName: s}}\n\
             ---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {name: nightly, namespace: demo}\n\
             spec:\n  schedule: \"0 3 * * *\"\n  paused: true\n  repository: {name: repo}\n  \
             task: {name: mariadb-backup-10.5.8}\n  \
             target: {ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: db}}\n  retentionPolicy: {name: k, keepLast: 1, prune: true}\n",
        );
        let stats = |total: u64, up: u64| {
            format!(
                "targets: [{{ref: {{apiVersion: v1, kind: AppBinding, name: db}}, stats: [{{hostname: host-0, \
                 snapshots: [{{name: x, totalBytes: {total}, uploadedBytes: {up}}}]}}]}}]"
            )
        };
        put(
            &store,
            &[
                session(
                    "nightly-1",
                    "2026-01-01T03:00:00Z",
                    &format!(
                        "{{phase: Succeeded, sessionDuration: 1m30s, {}}}",
                        stats(1000, 100)
                    ),
                ),
                session(
                    "nightly-2",
                    "2026-01-02T03:00:00Z",
                    &format!(
                        "{{phase: Succeeded, sessionDuration: 10s, {}}}",
                        stats(1100, 40)
                    ),
                ),
                session(
                    "nightly-3",
                    "2026-01-03T03:00:00Z",
                    "{phase: Failed, sessionDuration: 2s, error: \"cannot connect: refused\"}",
                ),
                session("nightly-4", "2026-01-04T03:00:00Z", "{phase: Running}"),
            ]
            .join("---\n"),
        );
        let now: Timestamp = "2026-01-04T03:00:30Z".parse().unwrap();
        let v = overview(&store, now).unwrap();
        let text = v.to_string();
        for secret in ["pw-Do-Not-Show", "pw2-Hidden", "pw3-Hidden"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let c = &v["configurations"][0];
        assert_eq!(c["name"], "nightly");
        assert_eq!(c["paused"], true);
        assert_eq!(c["lastSession"]["name"], "nightly-4");
        assert_eq!(c["lastSession"]["phase"], "Running");
        // The newest good backup is the newest Succeeded one, timed at its end.
        assert_eq!(c["newestSucceeded"], "2026-01-02T03:00:10Z");
        assert_eq!(c["newestSucceededAgeSeconds"], 2 * 86400 + 20);
        assert!(c["verification"]["last"].is_null());
        let s = v["backupSessions"].as_array().unwrap();
        let names: Vec<&str> = s.iter().map(|x| x["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["nightly-1", "nightly-2", "nightly-3", "nightly-4"]);
        assert_eq!(s[0]["durationSeconds"], 90.0);
        assert_eq!(s[0]["end"], "2026-01-01T03:01:30Z");
        assert_eq!(s[0]["totalBytes"], 1000);
        assert!(s[0]["reason"].is_null());
        assert_eq!(s[2]["reason"], "cannot connect: refused");
        assert!(s[3]["end"].is_null(), "a running session has no end");
        let r = &v["repositories"][0];
        assert_eq!(r["backend"], "rest");
        let growth: Vec<u64> = r["growth"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["cumulativeBytes"].as_u64().unwrap())
            .collect();
        assert_eq!(growth, [100, 140]);
        assert_eq!(v["binlogArchives"], json!([]));
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for bad in [
            "http://",
            "https://",
            "src=",
            "@import",
            "url(",
            "rel=\"stylesheet",
        ] {
            assert!(!PAGE.contains(bad), "the page refers to {bad}");
        }
        assert!(PAGE.contains("/api/overview"));
    }
}
