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
}
