//! Stash's names for the objects its operator creates, so that a cluster moved from Stash to
//! coffer (or run side by side) finds the same CronJobs, Jobs and PVCs.

/// The longest name of a CronJob: its Jobs get an 11-character suffix and must stay ≤ 63.
pub const CRON_JOB_NAME_MAX: usize = 52;
/// The longest name of an object that labels carry (a Job, a ServiceAccount).
pub const NAME_MAX: usize = 63;

/// `stash-trigger-<bc>`: the CronJob that creates a configuration's BackupSessions.
pub fn trigger_cron_job(bc: &str) -> String {
    todo!()
}

/// `stash-backup-<session>-<index>`: the Job that runs one target of a BackupSession.
pub fn backup_job(session: &str, index: usize) -> String {
    todo!()
}

/// `stash-restore-<rs>-<index>` (standalone) or `stash-restore-<rs>-<index>-<ordinal>` (one
/// Job per replica of a cluster restore).
pub fn restore_job(rs: &str, index: usize, ordinal: Option<i32>) -> String {
    todo!()
}

/// The ServiceAccount (and its RoleBinding) of a configuration's backup Jobs:
/// `backupconfiguration-<bc>-<index>`.
pub fn backup_job_service_account(bc: &str, index: usize) -> String {
    todo!()
}

/// The ServiceAccount (and its RoleBinding) of a RestoreSession's Jobs:
/// `restoresession-<rs>-<index>`.
pub fn restore_job_service_account(rs: &str, index: usize) -> String {
    todo!()
}
