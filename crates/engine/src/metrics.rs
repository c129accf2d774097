//! Prometheus metrics under Stash's names and labels (so existing dashboards and alerts keep
//! working), plus coffer's own: bytes read from the database, throughput, and the age of the
//! newest good backup. The same families are pushed to a Pushgateway at the end of every
//! session and served by `coffer server` on /metrics.

use std::time::Duration;

use coffer_api::{
    backup::{BackupConfiguration, BackupSession, SessionPhase},
    repository::Repository,
    restore::RestoreSession,
};
use prometheus::{Encoder, GaugeVec, Opts, Registry};

/// A registry being filled with gauges; families are created on first use.
pub struct Metrics {
    registry: Registry,
    families: std::collections::BTreeMap<String, GaugeVec>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            registry: Registry::new(),
            families: Default::default(),
        }
    }

    /// Sets a gauge; Stash emits each metric under its new and its legacy name.
    pub fn set(&mut self, names: &[&str], help: &str, labels: &[(&str, String)], value: f64) {
        for name in names {
            let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            let fam = self
                .families
                .entry(format!("{name}|{}", keys.join(",")))
                .or_insert_with(|| {
                    let g = GaugeVec::new(Opts::new(*name, help), &keys).expect("valid metric");
                    // Two label sets under one name cannot both register; the first wins.
                    let _ = self.registry.register(Box::new(g.clone()));
                    g
                });
            let vals: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
            fam.with_label_values(&vals).set(value);
        }
    }

    /// The Prometheus text exposition format (0.0.4), which every Pushgateway accepts.
    pub fn text(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("utf-8")
    }
}

fn ts_secs(s: Option<&str>) -> Option<f64> {
    s.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second() as f64)
}

fn invoker_labels(kind: &str, name: &str, ns: &str, repo: &str) -> Vec<(&'static str, String)> {
    vec![
        ("invoker_kind", kind.to_string()),
        ("invoker_name", name.to_string()),
        ("namespace", ns.to_string()),
        ("driver", "Restic".to_string()),
        ("repository", repo.to_string()),
    ]
}

/// The metrics of one binlog archive, from its status (the runner keeps it current): lag,
/// last archived commit, bytes archived (a counter in practice: `rate()` gives bytes/s),
/// segments, gaps, and the newest recoverable window.
pub fn binlog_archive(m: &mut Metrics, a: &coffer_api::BinlogArchive) {
    let labels = vec![
        ("namespace", a.metadata.namespace().to_string()),
        ("archive", a.metadata.name.clone()),
        ("app_binding", a.spec.app_binding.name.clone()),
        ("repository", a.spec.repository.name.clone()),
    ];
    let st = a.status.clone().unwrap_or_default();
    let phase = st
        .phase
        .unwrap_or(coffer_api::archive::ArchivePhase::Pending);
    m.set(
        &["coffer_binlog_archive_streaming"],
        "1 while the archive is connected and archiving",
        &labels,
        if phase == coffer_api::archive::ArchivePhase::Streaming {
            1.0
        } else {
            0.0
        },
    );
    if let Some(l) = st.lag_seconds {
        m.set(
            &["coffer_binlog_archive_lag_seconds"],
            "How far the repository is behind the server",
            &labels,
            l,
        );
    }
    if let Some(t) = ts_secs(st.last_event_time.as_deref()) {
        m.set(
            &["coffer_binlog_archive_last_event_timestamp_seconds"],
            "Commit time of the last archived transaction",
            &labels,
            t,
        );
    }
    m.set(
        &["coffer_binlog_archive_archived_bytes"],
        "Bytes of binlog segments in the repository",
        &labels,
        st.archived_bytes.unwrap_or(0) as f64,
    );
    m.set(
        &["coffer_binlog_archive_segments"],
        "Segments in the repository",
        &labels,
        st.segment_count.unwrap_or(0) as f64,
    );
    m.set(
        &["coffer_binlog_archive_gaps"],
        "Breaks in the archived timeline (a restore cannot cross one)",
        &labels,
        st.gaps.len() as f64,
    );
    let stopped_too_long = st.conditions.iter().any(|c| {
        c.type_ == coffer_api::archive::condition::GAP_DETECTED
            && c.is_true()
            && c.reason == coffer_api::archive::condition::REASON_STOPPED_TOO_LONG
    });
    m.set(
        &["coffer_binlog_archive_stopped_too_long"],
        "1 when the archive has been stopped longer than the server keeps binlogs",
        &labels,
        if stopped_too_long { 1.0 } else { 0.0 },
    );
    if let Some(w) = st.recoverable_windows.last() {
        if let Some(t) = ts_secs(w.earliest.as_deref()) {
            m.set(
                &["coffer_binlog_archive_recoverable_start_timestamp_seconds"],
                "Earliest commit time of the newest recoverable window",
                &labels,
                t,
            );
        }
        if let Some(t) = ts_secs(w.latest.as_deref()) {
            m.set(
                &["coffer_binlog_archive_recoverable_end_timestamp_seconds"],
                "Latest commit time of the newest recoverable window",
                &labels,
                t,
            );
        }
    }
    if let Some(f) = st.failures {
        m.set(
            &["coffer_binlog_archive_failures"],
            "Consecutive failed attempts to stream",
            &labels,
            f64::from(f),
        );
    }
}

/// The metrics of a finished BackupSession and its repository.
pub fn backup_session(
    m: &mut Metrics,
    bc: &BackupConfiguration,
    session: &BackupSession,
    repo: Option<&Repository>,
    app_type: Option<&str>,
) {
    let ns = bc.metadata.namespace();
    let repo_name = &bc.spec.repository.name;
    let base = invoker_labels("BackupConfiguration", &bc.metadata.name, ns, repo_name);
    let st = session.status.clone().unwrap_or_default();
    let ok = st.phase == Some(SessionPhase::Succeeded);
    m.set(
        &[
            "stash_appscode_com_backupsession_success",
            "stash_backup_session_success",
        ],
        "Whether the backup session succeeded (1) or failed (0)",
        &base,
        if ok { 1.0 } else { 0.0 },
    );
    let created = ts_secs(session.metadata.creation_timestamp.as_deref());
    let finished = jiff::Timestamp::now().as_second() as f64;
    if ok {
        let duration = st
            .session_duration
            .as_deref()
            .and_then(|d| coffer_api::duration::parse(d).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.set(
            &[
                "stash_appscode_com_backupsession_duration_seconds",
                "stash_backup_session_duration_seconds",
            ],
            "Time the backup session took",
            &base,
            duration,
        );
        m.set(
            &[
                "stash_appscode_com_backupsession_target_count_total",
                "stash_backup_target_count_total",
            ],
            "Number of targets of the backup session",
            &base,
            st.targets.len() as f64,
        );
        m.set(
            &[
                "stash_appscode_com_backupsession_last_success_time_seconds",
                "stash_backup_last_success_time_seconds",
            ],
            "When the last successful backup finished",
            &base,
            finished,
        );
    }
    let kind = match app_type.unwrap_or("") {
        t if t.contains("mariadb") => "mariadbs",
        t if t.contains("perconaxtradb") => "perconaxtradbs",
        t if t.contains("mysql") => "mysqls",
        _ => "appbindings",
    };
    let group = app_type
        .and_then(|t| t.split_once('/').map(|(g, _)| g.to_string()))
        .unwrap_or_else(|| "appcatalog.appscode.com".into());
    for t in &st.targets {
        let mut tl = base.clone();
        tl.push(("kind", kind.to_string()));
        tl.push(("group", group.clone()));
        tl.push(("name", t.ref_.name.clone()));
        let t_ok = t.phase == Some(SessionPhase::Succeeded);
        m.set(
            &[
                "stash_appscode_com_backupsession_target_success",
                "stash_backup_target_success",
            ],
            "Whether the target's backup succeeded",
            &tl,
            if t_ok { 1.0 } else { 0.0 },
        );
        m.set(
            &[
                "stash_appscode_com_backupsession_target_host_count_total",
                "stash_backup_target_host_count_total",
            ],
            "Number of hosts of the target",
            &tl,
            t.total_hosts.unwrap_or(1) as f64,
        );
        if t_ok {
            m.set(
                &[
                    "stash_appscode_com_backupsession_target_last_success_time_seconds",
                    "stash_backup_target_last_success_time_seconds",
                ],
                "When the target was last backed up successfully",
                &tl,
                finished,
            );
        }
        for h in &t.stats {
            let mut hl = tl.clone();
            hl.push(("hostname", h.hostname.clone()));
            let h_ok = h.phase == Some(SessionPhase::Succeeded);
            m.set(
                &[
                    "stash_appscode_com_backupsession_host_backup_success",
                    "stash_backup_host_backup_success",
                ],
                "Whether the host's backup succeeded",
                &hl,
                if h_ok { 1.0 } else { 0.0 },
            );
            if !h_ok {
                continue;
            }
            let sum = |f: &dyn Fn(&coffer_api::backup::SnapshotStats) -> f64| -> f64 {
                h.snapshots.iter().map(f).sum()
            };
            let size = sum(&|s| s.total_bytes.unwrap_or(0) as f64);
            let uploaded = sum(&|s| s.uploaded_bytes.unwrap_or(0) as f64);
            let secs = sum(&|s| s.duration_seconds.unwrap_or(0.0));
            let host_duration = h
                .duration
                .as_deref()
                .and_then(|d| coffer_api::duration::parse(d).ok())
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            let files = |f: &dyn Fn(&coffer_api::backup::FileStats) -> Option<i64>| -> f64 {
                h.snapshots
                    .iter()
                    .filter_map(|s| s.file_stats.as_ref().and_then(f))
                    .sum::<i64>() as f64
            };
            for (names, help, v) in [
                (
                    [
                        "stash_appscode_com_backupsession_host_backup_duration_seconds",
                        "stash_backup_host_backup_duration_seconds",
                    ],
                    "Time the host's backup took",
                    host_duration,
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_data_size_bytes",
                        "stash_backup_host_data_size_bytes",
                    ],
                    "Bytes backed up from the host",
                    size,
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_data_uploaded_bytes",
                        "stash_backup_host_data_uploaded_bytes",
                    ],
                    "Bytes the repository grew by",
                    uploaded,
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_data_processing_time_seconds",
                        "stash_backup_host_data_processing_time_seconds",
                    ],
                    "Time spent transferring the host's data",
                    secs,
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_files_total",
                        "stash_backup_host_files_total",
                    ],
                    "Files in the snapshot",
                    files(&|f| f.total_files),
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_files_new",
                        "stash_backup_host_files_new",
                    ],
                    "New files in the snapshot",
                    files(&|f| f.new_files),
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_files_modified",
                        "stash_backup_host_files_modified",
                    ],
                    "Modified files in the snapshot",
                    files(&|f| f.modified_files),
                ),
                (
                    [
                        "stash_appscode_com_backupsession_host_files_unmodified",
                        "stash_backup_host_files_unmodified",
                    ],
                    "Unmodified files in the snapshot",
                    files(&|f| f.unmodified_files),
                ),
            ] {
                m.set(&names, help, &hl, v);
            }
            // coffer's own.
            m.set(
                &["coffer_backup_bytes_read"],
                "Bytes read from the database by the last backup",
                &hl,
                size,
            );
            m.set(
                &["coffer_backup_throughput_bytes_per_second"],
                "Bytes read from the database per second by the last backup",
                &hl,
                if secs > 0.0 { size / secs } else { 0.0 },
            );
        }
    }
    let _ = created;
    if let Some(r) = repo {
        repository(m, r);
        if let Some(last) = r
            .status
            .as_ref()
            .and_then(|s| s.last_backup_time.as_deref())
        {
            if let Some(t) = ts_secs(Some(last)) {
                m.set(
                    &["coffer_backup_newest_good_age_seconds"],
                    "Age of the newest successful backup in the repository",
                    &base,
                    (finished - t).max(0.0),
                );
            }
        }
    }
}

/// Repository metrics, labelled as Stash labels them.
pub fn repository(m: &mut Metrics, r: &Repository) {
    let Some(st) = &r.status else { return };
    let b = &r.spec.backend;
    let (backend, bucket, prefix) = if let Some(s3) = &b.s3 {
        (
            "s3",
            s3.bucket.clone(),
            s3.prefix.clone().unwrap_or_default(),
        )
    } else if let Some(g) = &b.gcs {
        (
            "gcs",
            g.bucket.clone(),
            g.prefix.clone().unwrap_or_default(),
        )
    } else if let Some(a) = &b.azure {
        (
            "azure",
            a.container.clone(),
            a.prefix.clone().unwrap_or_default(),
        )
    } else if let Some(b2) = &b.b2 {
        (
            "b2",
            b2.bucket.clone(),
            b2.prefix.clone().unwrap_or_default(),
        )
    } else if let Some(sw) = &b.swift {
        (
            "swift",
            sw.container.clone(),
            sw.prefix.clone().unwrap_or_default(),
        )
    } else if let Some(r) = &b.rest {
        ("rest", r.url.clone(), String::new())
    } else if let Some(l) = &b.local {
        (
            "local",
            // The local server's metrics: the repository as this machine sees it.
            l.repository_path_in(coffer_api::repository::LocalMount::Host)
                .display()
                .to_string(),
            String::new(),
        )
    } else {
        ("unknown", String::new(), String::new())
    };
    let mut l = vec![
        ("name", r.metadata.name.clone()),
        ("namespace", r.metadata.namespace().to_string()),
        ("backend", backend.to_string()),
    ];
    if !bucket.is_empty() {
        l.push(("bucket", bucket));
    }
    if !prefix.is_empty() {
        l.push(("prefix", prefix));
    }
    if let Some(i) = st.integrity {
        m.set(
            &[
                "stash_appscode_com_repository_integrity",
                "stash_repository_integrity",
            ],
            "Whether the repository passed its integrity check",
            &l,
            if i { 1.0 } else { 0.0 },
        );
    }
    if st.integrity.is_some() {
        m.set(
            &["coffer_repository_damaged_packs"],
            "Packs the last data check found damaged that no later check has found healed",
            &l,
            st.damaged_packs.len() as f64,
        );
    }
    if let Some(t) = ts_secs(st.last_data_check_time.as_deref()) {
        m.set(
            &["coffer_repository_last_data_check_timestamp_seconds"],
            "When the repository's data was last read back (coffer check --read-data)",
            &l,
            t,
        );
    }
    if let Some(s) = st.total_size_bytes {
        m.set(
            &[
                "stash_appscode_com_repository_size_bytes",
                "stash_repository_size_bytes",
            ],
            "Bytes the repository takes in storage",
            &l,
            s as f64,
        );
    }
    if let Some(n) = st.snapshot_count {
        m.set(
            &[
                "stash_appscode_com_repository_snapshot_count",
                "stash_repository_snapshot_count",
            ],
            "Snapshots in the repository",
            &l,
            n as f64,
        );
    }
    if let Some(n) = st.snapshots_removed_on_last_cleanup {
        m.set(
            &[
                "stash_appscode_com_repository_snapshot_cleaned",
                "stash_repository_snapshot_cleaned",
            ],
            "Snapshots removed by the last retention run",
            &l,
            n as f64,
        );
    }
}

/// The metrics of a finished RestoreSession.
pub fn restore_session(m: &mut Metrics, rs: &RestoreSession) {
    let ns = rs.metadata.namespace();
    let base = invoker_labels(
        "RestoreSession",
        &rs.metadata.name,
        ns,
        &rs.spec.repository.name,
    );
    let st = rs.status.clone().unwrap_or_default();
    let ok = st.phase == Some(SessionPhase::Succeeded);
    m.set(
        &[
            "stash_appscode_com_restoresession_success",
            "stash_restore_session_success",
        ],
        "Whether the restore session succeeded",
        &base,
        if ok { 1.0 } else { 0.0 },
    );
    if ok {
        let d = st
            .session_duration
            .as_deref()
            .and_then(|d| coffer_api::duration::parse(d).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.set(
            &[
                "stash_appscode_com_restoresession_duration_seconds",
                "stash_restore_session_duration_seconds",
            ],
            "Time the restore session took",
            &base,
            d,
        );
    }
    for h in &st.stats {
        let mut hl = base.clone();
        hl.push(("hostname", h.hostname.clone()));
        m.set(
            &[
                "stash_appscode_com_restoresession_host_restore_success",
                "stash_restore_host_restore_success",
            ],
            "Whether the host's restore succeeded",
            &hl,
            if h.phase == Some(SessionPhase::Succeeded) {
                1.0
            } else {
                0.0
            },
        );
        if let Some(b) = h.restored_bytes {
            m.set(
                &["coffer_restore_bytes_written"],
                "Bytes streamed into the database",
                &hl,
                b as f64,
            );
        }
    }
}

/// Pushes to a Pushgateway under Stash's job name (`<kind>-<namespace>-<name>`), replacing
/// metrics of the same name in that job and keeping the others (Stash's `Add`): a failed run
/// leaves the last success time in place for alerting.
/// A restore verification of a BackupConfiguration (labels `namespace`, `name`, as the
/// alert rules in deploy/prometheus/coffer-alerts.yaml read them).
pub fn verification(
    m: &mut Metrics,
    bc: &BackupConfiguration,
    st: &coffer_api::backup::VerificationStatus,
    last_success: Option<&str>,
) {
    let l = vec![
        ("namespace", bc.metadata.namespace().to_string()),
        ("name", bc.metadata.name.clone()),
        ("repository", bc.spec.repository.name.clone()),
    ];
    let ok = st.phase == Some(SessionPhase::Succeeded);
    m.set(
        &["coffer_verification_success"],
        "Whether the last restore verification succeeded (1) or failed (0)",
        &l,
        if ok { 1.0 } else { 0.0 },
    );
    if let Some(t) = ts_secs(last_success) {
        m.set(
            &["coffer_verification_last_success_timestamp_seconds"],
            "When the last successful restore verification started",
            &l,
            t,
        );
    }
    if let Some(r) = st.recovery_seconds.filter(|_| ok) {
        m.set(
            &["coffer_verification_recovery_seconds"],
            "Seconds from the start of the last verification to a restored server answering",
            &l,
            r,
        );
    }
}

pub fn push(url: &str, job: &str, m: &Metrics) -> Result<(), String> {
    let url = format!("{}/metrics/job/{}", url.trim_end_matches('/'), job);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(m.text())
        .send()
        .map_err(|e| format!("cannot reach the Pushgateway at {url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        return Err(format!(
            "the Pushgateway at {url} answered {status}: {}",
            body.trim()
        ));
    }
    Ok(())
}

/// Pushes and describes the outcome as a MetricsPushed condition: (ok, reason, message).
pub fn push_outcome(url: &str, job: &str, m: &Metrics) -> (bool, &'static str, String) {
    match push(url, job, m) {
        Ok(()) => (
            true,
            "SuccessfullyPushedMetrics",
            format!("pushed to {url} as job {job}"),
        ),
        Err(e) => {
            tracing::warn!("metrics not pushed: {e}");
            (false, "FailedToPushMetrics", e)
        }
    }
}

pub fn job_name(kind: &str, ns: &str, name: &str) -> String {
    format!("{}-{ns}-{name}", kind.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_both_names_and_labels() {
        let mut m = Metrics::new();
        m.set(
            &[
                "stash_backup_session_success",
                "stash_appscode_com_backupsession_success",
            ],
            "h",
            &[("invoker_name", "bc".into()), ("namespace", "demo".into())],
            1.0,
        );
        let t = m.text();
        assert!(
            t.contains("# TYPE stash_backup_session_success gauge"),
            "{t}"
        );
        assert!(
            t.contains("stash_backup_session_success{invoker_name=\"bc\",namespace=\"demo\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("stash_appscode_com_backupsession_success{"),
            "{t}"
        );
    }
}
