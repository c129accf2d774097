//! `coffer.dev/v1alpha1` BinlogArchive: a continuous binlog archive for point-in-time recovery.
//!
//! Stash has no such kind (it has no PITR for MySQL), so this one is coffer's own and lives in
//! coffer's own API group, `coffer.dev`, not in `stash.appscode.com`: a kind Stash might add
//! later under its group cannot collide with it, and a cluster running Stash next to coffer
//! serves both. It is namespaced and has `spec`/`status` like Stash's kinds.
//!
//! An archive streams the binlog of one AppBinding (a standalone server, or a Galera cluster
//! whose nodes it follows) into one Repository, in segments indexed by GTID
//! ([`crate::gtid::SegmentMeta`]). A RestoreSession with `spec.target.pointInTime` restores a
//! base backup and replays the archive up to a time or a GTID.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    gtid::GtidState,
    meta::{Condition, ObjectRef},
};

pub type BinlogArchive = crate::Object<BinlogArchiveSpec, BinlogArchiveStatus>;

/// The group and version of the kind.
pub const API_VERSION: &str = "coffer.dev/v1alpha1";

/// Defaults of the spec's optional fields.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_SEGMENT_MAX_SIZE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BinlogArchiveSpec {
    /// The AppBinding of the server (or Galera cluster) whose binlog is archived.
    #[serde(default)]
    pub app_binding: ObjectRef,
    /// The Repository the segments are written to.
    #[serde(default)]
    pub repository: ObjectRef,
    /// How long a transaction the server sent may wait before it is durable in the
    /// repository (the RPO). A Go duration; default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<String>,
    /// A segment is closed when it reaches this size, and at the latest one flush interval
    /// after it opened (its snapshot is the durability point; compaction merges the small
    /// ones later): bytes, or a Kubernetes quantity
    /// (`64Mi`, `1Gi`, `500M`). Default 64Mi.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    #[schemars(schema_with = "int_or_string")]
    pub segment_max_size: Option<String>,
    /// How long segments are kept: `BaseBackups` (the default) keeps every segment that a
    /// base backup still in the repository needs to reach any point after it; a duration
    /// (`720h`, `30d`) keeps segments that young, and never one a base backup needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    /// A paused archive is not streamed; the time it is paused counts against the server's
    /// binlog retention (the `StoppedTooLong` condition says when it ran out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The replica server_id the archive connects with. Default: one derived from the
    /// archive's namespace and name. It must differ from every server and replica of the
    /// source (a second connection with the same id disconnects the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
}

/// A quantity may be written as a number (`1048576`) or a string (`64Mi`), as in Kubernetes.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        N(u64),
        S(String),
    }
    Ok(Option::<Q>::deserialize(d)?.map(|q| match q {
        Q::N(n) => n.to_string(),
        Q::S(s) => s,
    }))
}

fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// How long segments are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// As long as the oldest base backup in the repository needs them.
    BaseBackups,
    /// Segments whose last transaction is younger than this, and every one a base backup
    /// needs.
    For(Duration),
}

impl Keep {
    /// `BaseBackups`, or a duration: a Go duration or whole days (`30d`).
    pub fn parse(s: &str) -> Result<Keep, String> {
        let s = s.trim();
        if s.is_empty() || s == "BaseBackups" {
            return Ok(Keep::BaseBackups);
        }
        let d = match s.strip_suffix('d').map(str::parse::<u64>) {
            Some(Ok(days)) => Duration::from_secs(days * 86_400),
            _ => crate::duration::parse(s).map_err(|e| {
                format!("{e}; expected BaseBackups or a duration such as 720h or 30d")
            })?,
        };
        if d.is_zero() {
            return Err(format!(
                "`{s}` keeps nothing; use BaseBackups or a positive duration"
            ));
        }
        Ok(Keep::For(d))
    }
}

/// A size in bytes: a plain number or a Kubernetes quantity (`64Mi`, `1Gi`, `500M`, `10k`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("`{s}` is not a size: use bytes or a quantity such as 64Mi or 1Gi");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

impl BinlogArchiveSpec {
    pub fn flush_interval(&self) -> Result<Duration, String> {
        self.flush_interval
            .as_deref()
            .map_or(Ok(DEFAULT_FLUSH_INTERVAL), crate::duration::parse)
    }

    pub fn segment_max_size(&self) -> Result<u64, String> {
        self.segment_max_size
            .as_deref()
            .map_or(Ok(DEFAULT_SEGMENT_MAX_SIZE), parse_size)
    }

    pub fn keep(&self) -> Result<Keep, String> {
        self.keep
            .as_deref()
            .map_or(Ok(Keep::BaseBackups), Keep::parse)
    }

    /// Why this archive (in namespace `ns`) cannot serve the restore verification of a
    /// BackupConfiguration in `bc_ns` that backs up AppBinding `app` into `repository`:
    /// its binlogs continue the configuration's snapshots only when it archives the same
    /// server into the same repository (where the snapshots are). None when it can.
    pub fn mismatch_with(
        &self,
        ns: &str,
        bc_ns: &str,
        app: Option<&crate::meta::TargetRef>,
        repository: &ObjectRef,
    ) -> Option<String> {
        let full = |r_ns: Option<&str>, name: &str, dflt: &str| {
            format!("{}/{name}", r_ns.filter(|n| !n.is_empty()).unwrap_or(dflt))
        };
        let arch_app = full(
            self.app_binding.namespace.as_deref(),
            &self.app_binding.name,
            ns,
        );
        let arch_repo = full(
            self.repository.namespace.as_deref(),
            &self.repository.name,
            ns,
        );
        let bc_app = app.map(|t| full(t.namespace.as_deref(), &t.name, bc_ns));
        let bc_repo = full(repository.namespace.as_deref(), &repository.name, bc_ns);
        let mut wrong = Vec::new();
        if bc_app.as_deref() != Some(arch_app.as_str()) {
            wrong.push(format!(
                "it archives AppBinding {arch_app}, the configuration backs up {}",
                bc_app.map_or(
                    "no AppBinding (spec.target is missing)".into(),
                    |a| format!("AppBinding {a}")
                )
            ));
        }
        if bc_repo != arch_repo {
            wrong.push(format!(
                "it archives into Repository {arch_repo}, the configuration backs up into \
                 Repository {bc_repo}"
            ));
        }
        (!wrong.is_empty()).then(|| {
            format!(
                "{}: its binlogs continue the snapshots only when it archives the same AppBinding \
                 into the same Repository",
                wrong.join("; ")
            )
        })
    }
}

/// What the archive is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ArchivePhase {
    /// Not started yet.
    Pending,
    /// Connected and archiving.
    Streaming,
    /// The stream ended with an error; waiting for the next attempt (see `nextAttempt`).
    Backoff,
    /// `spec.paused` is set.
    Paused,
    /// The spec cannot run (a missing AppBinding or Repository); see `error`.
    Failed,
    /// A phase this version does not know.
    #[serde(other)]
    Unknown,
}

impl ArchivePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchivePhase::Pending => "Pending",
            ArchivePhase::Streaming => "Streaming",
            ArchivePhase::Backoff => "Backoff",
            ArchivePhase::Paused => "Paused",
            ArchivePhase::Failed => "Failed",
            ArchivePhase::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for ArchivePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Condition types and reasons of a BinlogArchive.
pub mod condition {
    /// True while the archive is connected and archiving.
    pub const STREAMING: &str = "Streaming";
    /// True when the timeline has a gap (the reason says which kind); a restore refuses to
    /// cross it.
    pub const GAP_DETECTED: &str = "GapDetected";
    /// Transactions are missing: the server had purged binlogs the archive had not read.
    pub const REASON_PURGED: &str = "Purged";
    /// The server's GTID history is not the archived one (failover to a node that missed
    /// transactions, `RESET MASTER`, another server).
    pub const REASON_DIVERGED: &str = "Diverged";
    /// A GTID domain appeared that the archive had never seen: its earlier transactions were
    /// never archived.
    pub const REASON_UNKNOWN_DOMAIN: &str = "UnknownDomain";
    /// A segment of the archive is missing from the repository.
    pub const REASON_MISSING_SEGMENT: &str = "MissingSegment";
    /// The archive has not run for longer than the server keeps binlogs.
    pub const REASON_STOPPED_TOO_LONG: &str = "StoppedTooLong";
}

/// Why the timeline breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GapReason {
    Purged,
    Diverged,
    UnknownDomain,
    MissingSegment,
    StoppedTooLong,
    #[serde(other)]
    Unknown,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Purged => condition::REASON_PURGED,
            GapReason::Diverged => condition::REASON_DIVERGED,
            GapReason::UnknownDomain => condition::REASON_UNKNOWN_DOMAIN,
            GapReason::MissingSegment => condition::REASON_MISSING_SEGMENT,
            GapReason::StoppedTooLong => condition::REASON_STOPPED_TOO_LONG,
            GapReason::Unknown => "Unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinlogArchiveStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ArchivePhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The GTID state after the last transaction durable in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_gtid: Option<GtidState>,
    /// Commit time of that transaction (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<String>,
    /// How far the repository is behind the server, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// The server being read (`host:port`, server_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Segments in the repository and their total size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_bytes: Option<u64>,
    /// Each unbroken run of segments, oldest first: the times and GTID states a restore can
    /// reach (with a base backup on the same run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recoverable_windows: Vec<RecoverableWindow>,
    /// Where the timeline breaks, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<ArchiveGap>,
    /// The last time the archive was streaming (RFC 3339): what `StoppedTooLong` counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_running_time: Option<String>,
    /// How long the server keeps binlogs (`binlog_expire_logs_seconds`/`expire_logs_days`)
    /// as the runner last read it, in seconds; 0 when it never expires them. What
    /// `StoppedTooLong` compares the time the archive has been stopped with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_retention_seconds: Option<u64>,
    /// Consecutive failed runs, and when the next one starts (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// Why the archive is not streaming, in words, with what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An unbroken run of segments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverableWindow {
    /// First and last commit time in the run (RFC 3339); absent when it has no transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// The GTID state at the start of the run and after its last transaction.
    #[serde(default)]
    pub start_gtid: GtidState,
    #[serde(default)]
    pub end_gtid: GtidState,
    pub first_segment: u64,
    pub last_segment: u64,
}

/// A break in the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveGap {
    pub reason: GapReason,
    /// The segments on either side (`after` is absent for a gap before the first segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_segment: Option<u64>,
    pub before_segment: u64,
    /// The GTID domain that breaks (a MariaDB domain id; a MySQL source is `sourceUuid`),
    /// what the archive expected and what the server had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<u32>,
    /// The MySQL source UUID that breaks (MySQL archives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// The same, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_serves_a_verification_only_of_its_server_into_its_repository() {
        use crate::meta::TargetRef;
        let arch = BinlogArchiveSpec {
            app_binding: ObjectRef {
                name: "db".into(),
                namespace: None,
            },
            repository: ObjectRef {
                name: "repo".into(),
                namespace: Some("backups".into()),
            },
            ..Default::default()
        };
        let app = |name: &str, ns: Option<&str>| TargetRef {
            name: name.into(),
            namespace: ns.map(str::to_string),
            ..Default::default()
        };
        let repo = |name: &str, ns: Option<&str>| ObjectRef {
            name: name.into(),
            namespace: ns.map(str::to_string),
        };
        // (configuration's namespace, AppBinding, Repository) -> what the refusal names
        type Case<'a> = (&'a str, Option<TargetRef>, ObjectRef, Option<&'a [&'a str]>);
        let cases: Vec<Case> = vec![
            (
                "demo",
                Some(app("db", None)),
                repo("repo", Some("backups")),
                None,
            ),
            (
                "x",
                Some(app("db", Some("demo"))),
                repo("repo", Some("backups")),
                None,
            ),
            (
                "demo",
                Some(app("other", None)),
                repo("repo", Some("backups")),
                Some(&["AppBinding demo/db", "backs up AppBinding demo/other"]),
            ),
            (
                "demo",
                Some(app("db", None)),
                repo("repo", None),
                Some(&["Repository backups/repo", "into Repository demo/repo"]),
            ),
            (
                "demo",
                None,
                repo("repo", Some("backups")),
                Some(&["no AppBinding (spec.target is missing)"]),
            ),
        ];
        for (bc_ns, a, r, want) in cases {
            let got = arch.mismatch_with("demo", bc_ns, a.as_ref(), &r);
            match want {
                None => assert_eq!(got, None, "{bc_ns} {a:?} {r:?}"),
                Some(parts) => {
                    let got = got.unwrap_or_else(|| panic!("refused: {a:?} {r:?}"));
                    for p in parts {
                        assert!(got.contains(p), "`{p}` in `{got}`");
                    }
                }
            }
        }
    }

    #[test]
    fn keep_and_sizes_parse_or_say_what_is_expected() {
        assert_eq!(Keep::parse("").unwrap(), Keep::BaseBackups);
        assert_eq!(Keep::parse("BaseBackups").unwrap(), Keep::BaseBackups);
        assert_eq!(
            Keep::parse("30d").unwrap(),
            Keep::For(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            Keep::parse("720h").unwrap(),
            Keep::For(Duration::from_secs(720 * 3600))
        );
        assert!(Keep::parse("0s").unwrap_err().contains("keeps nothing"));
        assert!(Keep::parse("forever").unwrap_err().contains("BaseBackups"));
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert!(parse_size("64MB").unwrap_err().contains("64Mi"));
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("99999999999999999999Gi").is_err());
        let spec = BinlogArchiveSpec::default();
        assert_eq!(spec.flush_interval().unwrap(), Duration::from_secs(5));
        assert_eq!(spec.keep().unwrap(), Keep::BaseBackups);
        assert_eq!(spec.segment_max_size().unwrap(), 64 << 20);
    }
}
