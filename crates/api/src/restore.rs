//! `stash.appscode.com/v1beta1` RestoreSession.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, Handler, ObjectRef, TargetRef, TaskRef};

pub type RestoreSession = crate::Object<RestoreSessionSpec, RestoreSessionStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSessionSpec {
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default)]
    pub repository: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Deprecated in Stash in favour of `target.rules`; still honoured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_volume_template: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<RestoreHooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, rename = "ref")]
    pub ref_: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claim_templates: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// coffer: restore to a point in time — a base backup, then the binlog archive replayed
    /// up to the target. Stash has no such field; a Stash manifest without it is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTime>,
}

/// coffer: where a point-in-time restore stops. Exactly one of `latest`, `time` and `gtid`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PointInTime {
    /// The last archived transaction before the first gap after the base backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    /// An RFC 3339 time: the last transaction committed at or before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// A GTID (`domain-server-seq`): up to that transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Whether the `gtid` transaction itself is restored (default true). Only with `gtid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusive: Option<bool>,
    /// The BinlogArchive (in the RestoreSession's namespace) to replay.
    #[serde(default)]
    pub archive: String,
}

/// A [`PointInTime`] read: what the restore resolves against the archive's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTimeTarget {
    Latest,
    /// Unix seconds.
    Time(i64),
    Gtid {
        gtid: crate::gtid::Gtid,
        inclusive: bool,
    },
}

impl PointInTime {
    /// The target, or every problem with it as `(field, message)`; `validate` reports them
    /// at apply with the field path.
    pub fn target(&self) -> Result<PointInTimeTarget, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut given = Vec::new();
        if self.latest {
            given.push("latest");
        }
        if self.time.is_some() {
            given.push("time");
        }
        if self.gtid.is_some() {
            given.push("gtid");
        }
        match given.as_slice() {
            [] => problems.push((
                "",
                "required: exactly one of latest: true, time (RFC 3339) or gtid \
                 (domain-server-seq)"
                    .to_string(),
            )),
            [_] => {}
            many => problems.push((
                "",
                format!(
                    "exactly one of latest, time or gtid may be set, found {}",
                    many.join(", ")
                ),
            )),
        }
        if self.inclusive.is_some() && self.gtid.is_none() {
            problems.push((
                "inclusive",
                "only a gtid target is inclusive or not; remove it".to_string(),
            ));
        }
        if self.archive.is_empty() {
            problems.push((
                "archive",
                "required: the BinlogArchive to replay".to_string(),
            ));
        }
        let time = self
            .time
            .as_deref()
            .and_then(|t| match t.parse::<jiff::Timestamp>() {
                Ok(ts) => Some(ts.as_second()),
                Err(_) => {
                    problems.push((
                        "time",
                        format!("`{t}` is not an RFC 3339 time; write e.g. 2024-05-01T12:00:00Z"),
                    ));
                    None
                }
            });
        let gtid = self
            .gtid
            .as_deref()
            .and_then(|g| match g.parse::<crate::gtid::Gtid>() {
                Ok(g) => Some(g),
                Err(e) => {
                    problems.push(("gtid", e));
                    None
                }
            });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(match (time, gtid) {
            (Some(t), _) => PointInTimeTarget::Time(t),
            (_, Some(gtid)) => PointInTimeTarget::Gtid {
                gtid,
                inclusive: self.inclusive.unwrap_or(true),
            },
            _ => PointInTimeTarget::Latest,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreHooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_restore: Option<Handler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_restore: Option<Handler>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::phase::SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostRestoreStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<String>,
    /// coffer: why the session failed, in words, with what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// coffer: the process running the session, for supervision and crash recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pid: Option<u32>,
    /// coffer: the pod running the session, when a cluster runs it (the local platform records
    /// `agentPid` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_pod: Option<String>,
    /// coffer: how far a point-in-time restore got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTimeStatus>,
}

/// coffer: the base backup a point-in-time restore started from and the point it reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimeStatus {
    /// The restic snapshot of the base backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_snapshot: Option<String>,
    /// The GTID state reached after the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_gtid: Option<crate::gtid::GtidState>,
    /// Commit time of the last transaction applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transaction_time: Option<String>,
    /// Segments replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u64>,
    /// Why the replay stopped before the target asked for (`latest` before a gap), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRestoreStats {
    #[serde(default)]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::phase::SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// coffer: the snapshot restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// coffer: bytes streamed out of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_bytes: Option<u64>,
    /// coffer: rows loaded (native restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_rows: Option<u64>,
    /// coffer: the binlog position / GTID the restored data corresponds to, for a replica or
    /// point-in-time replay to continue from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

impl RestoreSessionSpec {
    /// The rule that applies to a host: a rule naming it wins over one with no targetHosts.
    pub fn rule_for(&self, host: &str) -> Option<&Rule> {
        let rules = match &self.target {
            Some(t) if !t.rules.is_empty() => &t.rules,
            _ => &self.rules,
        };
        rules
            .iter()
            .find(|r| r.target_hosts.iter().any(|h| h == host))
            .or_else(|| rules.iter().find(|r| r.target_hosts.is_empty()))
    }

    pub fn target_ref(&self) -> Option<&TargetRef> {
        self.target.as_ref().map(|t| &t.ref_)
    }

    /// coffer: the point-in-time target, when the restore has one.
    pub fn point_in_time(&self) -> Option<&PointInTime> {
        self.target.as_ref().and_then(|t| t.point_in_time.as_ref())
    }
}
