//! `stash.appscode.com/v1beta1` BackupConfiguration and BackupSession.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, Handler, ObjectRef, TargetRef, TaskRef};

pub type BackupConfiguration = crate::Object<BackupConfigurationSpec, BackupConfigurationStatus>;
pub type BackupSession = crate::Object<BackupSessionSpec, BackupSessionStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// coffer: IANA time zone the schedule is read in (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default)]
    pub repository: ObjectRef,
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_volume_template: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<BackupHooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_config: Option<RetryConfig>,
    /// coffer: scheduled restore verification of the newest snapshot into a throwaway server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSpec>,
}

/// coffer: when and how the newest snapshot is restored into a throwaway server on this
/// machine and checked. Exactly one of `everyBackups` or `schedule`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationSpec {
    /// Verify after every this many successful backups (1: after each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_backups: Option<u32>,
    /// Verify on this cron schedule (read in spec.timeZone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The user's own checks, run on the restored server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<VerificationQuery>,
    /// The user's own program, run after the queries with the restored server's address in
    /// its environment; a non-zero exit fails the verification.
    // Boxed: inline it would make every BackupConfiguration, and so every Resource, larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Box<VerificationScript>>,
    /// A BinlogArchive in this namespace that archives this configuration's AppBinding into
    /// its Repository: the snapshot is then replayed with the archive's binlogs up to the
    /// newest recoverable point (`latest`, stopping before a gap) before it is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_archive: Option<String>,
}

/// A program coffer runs against the restored server, on the machine that verifies (with
/// coffer's own user), without a shell, stdin closed, in a process group of its own. Its
/// environment holds only PATH, HOME, LANG and: COFFER_VERIFY_HOST, COFFER_VERIFY_PORT,
/// COFFER_VERIFY_USER (an account with every privilege on the throwaway server),
/// COFFER_VERIFY_DEFAULTS_FILE (a 0600 MariaDB/MySQL option file with that account's
/// password, for `mariadb --defaults-file=...`; the password is in no argument or variable),
/// COFFER_VERIFY_SNAPSHOT and COFFER_VERIFY_CONFIGURATION (`namespace/name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationScript {
    /// Absolute path of the executable.
    pub path: String,
    /// Its arguments (no shell expands them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How long it may run (e.g. `90s`, `10m`; default 10m); past it, it and everything it
    /// started are killed and the verification fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl VerificationScript {
    /// The time limit when `timeout` does not set one.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
}

/// One SQL query and the result it must give: rows separated by newlines, columns by tabs,
/// NULL as `NULL` (what `mariadb --batch --skip-column-names` prints).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationQuery {
    pub name: String,
    pub sql: String,
    pub expect: String,
}

/// coffer: the outcome of the last restore verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// When the verification started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The snapshot verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// Seconds from the start until the restored server answered a query with the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<f64>,
    /// Why it failed: the table, check or query, and what was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With spec.verification.binlogArchive: the point the replay reached (the GTID state
    /// and the commit time of the last transaction applied), as a point-in-time restore
    /// reports it.
    // Boxed: inline it would make every BackupConfiguration, and so every Resource, larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<Box<crate::restore::PointInTimeStatus>>,
    /// The steps: ServerStarted, SnapshotRestored, ArchiveReplayed (with
    /// spec.verification.binlogArchive), TablesChecked, ChecksumsCompared, QueriesChecked,
    /// ScriptChecked (with spec.verification.script), SnapshotTagged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, rename = "ref")]
    pub ref_: TargetRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    #[serde(default)]
    pub prune: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupHooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_backup: Option<Handler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<Handler>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ConfigPhase>,
    /// coffer: the last restore verification (spec.verification or `coffer verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<VerificationStatus>,
    /// coffer: the time of the last verification that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<String>,
    /// coffer: successful backups since the last verification (for everyBackups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups_since_verification: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSessionSpec {
    #[serde(default)]
    pub invoker: Invoker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_left: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Invoker {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

pub use crate::phase::{ConfigPhase, SessionPhase};

/// Condition types Stash sets on sessions.
pub mod condition {
    pub const BACKEND_REPOSITORY_INITIALIZED: &str = "BackendRepositoryInitialized";
    pub const RETENTION_POLICY_APPLIED: &str = "RetentionPolicyApplied";
    pub const REPOSITORY_INTEGRITY_VERIFIED: &str = "RepositoryIntegrityVerified";
    pub const REPOSITORY_METRICS_PUSHED: &str = "RepositoryMetricsPushed";
    pub const BACKUP_SKIPPED: &str = "BackupSkipped";
    pub const BACKUP_HISTORY_CLEANED: &str = "BackupHistoryCleaned";
    pub const BACKUP_EXECUTOR_ENSURED: &str = "BackupExecutorEnsured";
    pub const RESTORE_EXECUTOR_ENSURED: &str = "RestoreExecutorEnsured";
    pub const PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED: &str = "PreBackupHookExecutionSucceeded";
    pub const POST_BACKUP_HOOK_EXECUTION_SUCCEEDED: &str = "PostBackupHookExecutionSucceeded";
    pub const PRE_RESTORE_HOOK_EXECUTION_SUCCEEDED: &str = "PreRestoreHookExecutionSucceeded";
    pub const POST_RESTORE_HOOK_EXECUTION_SUCCEEDED: &str = "PostRestoreHookExecutionSucceeded";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const BACKUP_DISRUPTED: &str = "BackupDisrupted";
    pub const METRICS_PUSHED: &str = "MetricsPushed";
    pub const REPOSITORY_FOUND: &str = "RepositoryFound";
    pub const BACKEND_SECRET_FOUND: &str = "BackendSecretFound";
    pub const BACKUP_TARGET_FOUND: &str = "BackupTargetFound";
    pub const VALIDATION_PASSED: &str = "ValidationPassed";
    pub const CRON_JOB_CREATED: &str = "CronJobCreated";
    /// coffer: the CronJob that runs spec.verification.schedule exists (Kubernetes).
    pub const VERIFICATION_CRON_JOB_CREATED: &str = "VerificationCronJobCreated";

    /// coffer: the reason of RetentionPolicyApplied=False when the repository was in use (a
    /// restore, another backup, a restic command) and retention waits for a later backup;
    /// the backup itself succeeded.
    pub const REASON_RETENTION_POSTPONED: &str = "RetentionPolicyPostponed";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BackupTargetStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<String>,
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
pub struct BackupTargetStatus {
    #[serde(default, rename = "ref")]
    pub ref_: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostBackupStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_backup_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_backup_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostBackupStats {
    #[serde(default)]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// coffer, Galera: the node that sent the State Snapshot Transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor: Option<String>,
    /// coffer, Galera: how long the donor was out of Synced (the cluster's cost of the backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor_desynced_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    /// The restic snapshot id.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_stats: Option<FileStats>,
    /// coffer: bytes read from the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// coffer: bytes the repository grew by (after compression and encryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    /// coffer: wall time of the data transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmodified_files: Option<i64>,
}
