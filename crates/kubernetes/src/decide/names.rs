//! Stash's names for the objects its operator creates, so that a cluster moved from Stash to
//! coffer (or run side by side) finds the same CronJobs, Jobs and PVCs.
//!
//! Two rules, as Stash's (kmodules') helpers: a CronJob name keeps its **last** 52 characters
//! (its Jobs get an 11-character suffix and must stay within 63); other names keep their
//! prefix and suffix and are cut in the middle to 63. Dots become dashes (a Job name becomes a
//! label value), and a cut never leaves a dash at either end.

/// The longest CronJob name: its Jobs get an 11-character suffix and must stay ≤ 63.
pub const CRON_JOB_NAME_MAX: usize = 52;
/// The longest name of an object whose name is also a label value (Jobs, ServiceAccounts).
pub const NAME_MAX: usize = 63;

fn dashed(name: &str) -> String {
    name.replace('.', "-")
}

/// The last `max` characters of `name`, without dashes at either end.
fn keep_tail(name: &str, max: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(max)..].iter().collect();
    tail.trim_matches('-').to_string()
}

/// `<prefix>-<name>-<suffix>` within `max` characters: `name` is cut at its end when needed.
fn with_prefix_and_suffix(prefix: &str, name: &str, suffix: &str, max: usize) -> String {
    let full = format!("{prefix}-{name}-{suffix}");
    if full.chars().count() <= max {
        return full;
    }
    let budget = max.saturating_sub(prefix.chars().count() + suffix.chars().count() + 2);
    let cut: String = name.chars().take(budget).collect();
    format!("{prefix}-{}-{suffix}", cut.trim_end_matches('-'))
}

/// `stash-trigger-<bc>`: the CronJob that creates a configuration's BackupSessions.
pub fn trigger_cron_job(bc: &str) -> String {
    keep_tail(&format!("stash-trigger-{}", dashed(bc)), CRON_JOB_NAME_MAX)
}

/// `coffer-verify-<bc>`: the CronJob that runs a configuration's `spec.verification.schedule`
/// (coffer's own: Stash has no such CronJob), cut as the trigger's name is.
pub fn verify_cron_job(bc: &str) -> String {
    keep_tail(&format!("coffer-verify-{}", dashed(bc)), CRON_JOB_NAME_MAX)
}

/// `stash-backup-<session>-<index>`: the Job that runs one target of a BackupSession.
pub fn backup_job(session: &str, index: usize) -> String {
    with_prefix_and_suffix(
        "stash-backup",
        &dashed(session),
        &index.to_string(),
        NAME_MAX,
    )
}

/// `stash-restore-<rs>-<index>` (standalone) or `stash-restore-<rs>-<index>-<ordinal>` (one
/// Job per replica of a cluster restore).
pub fn restore_job(rs: &str, index: usize, ordinal: Option<i32>) -> String {
    let suffix = match ordinal {
        Some(o) => format!("{index}-{o}"),
        None => index.to_string(),
    };
    with_prefix_and_suffix("stash-restore", &dashed(rs), &suffix, NAME_MAX)
}

/// The ServiceAccount (and its RoleBinding) of a configuration's backup Jobs:
/// `backupconfiguration-<bc>-<index>`.
pub fn backup_job_service_account(bc: &str, index: usize) -> String {
    with_prefix_and_suffix(
        "backupconfiguration",
        &dashed(bc),
        &index.to_string(),
        NAME_MAX,
    )
}

/// The ServiceAccount (and its RoleBinding) of a RestoreSession's Jobs:
/// `restoresession-<rs>-<index>`.
pub fn restore_job_service_account(rs: &str, index: usize) -> String {
    with_prefix_and_suffix("restoresession", &dashed(rs), &index.to_string(), NAME_MAX)
}

/// `coffer-archive-<archive>`: the Deployment (and its ServiceAccount and RoleBinding) that
/// runs a BinlogArchive (coffer's own: Stash has no archive). Cut at its end to 63: the name
/// is also a label value of its pods.
pub fn archive_deployment(archive: &str) -> String {
    let full = format!("coffer-archive-{}", dashed(archive));
    let cut: String = full.chars().take(NAME_MAX).collect();
    cut.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_stash_s() {
        assert_eq!(
            trigger_cron_job("mariadb-backup"),
            "stash-trigger-mariadb-backup"
        );
        assert_eq!(trigger_cron_job("db.v1"), "stash-trigger-db-v1");
        assert_eq!(
            verify_cron_job("mariadb-backup"),
            "coffer-verify-mariadb-backup"
        );
        assert_eq!(verify_cron_job("db.v1"), "coffer-verify-db-v1");
        assert_eq!(
            backup_job("mariadb-backup-1767225600", 0),
            "stash-backup-mariadb-backup-1767225600-0"
        );
        assert_eq!(
            restore_job("restore-db", 0, None),
            "stash-restore-restore-db-0"
        );
        assert_eq!(
            restore_job("restore-db", 0, Some(2)),
            "stash-restore-restore-db-0-2"
        );
        assert_eq!(
            backup_job_service_account("mariadb-backup", 0),
            "backupconfiguration-mariadb-backup-0"
        );
        assert_eq!(
            restore_job_service_account("restore-db", 0),
            "restoresession-restore-db-0"
        );
    }

    #[test]
    fn a_long_cron_job_name_keeps_its_last_52_characters() {
        let bc = format!("{}-backup", "a".repeat(60));
        let name = trigger_cron_job(&bc);
        assert_eq!(name.len(), CRON_JOB_NAME_MAX);
        assert!(name.ends_with("a-backup"), "{name}");
        // The cut falls right after a dash: no leading dash survives.
        let bc = format!("{}-{}", "b".repeat(40), "c".repeat(51));
        assert_eq!(trigger_cron_job(&bc), "c".repeat(51));
        let bc = format!("{}-backup", "a".repeat(60));
        let name = verify_cron_job(&bc);
        assert_eq!(name.len(), CRON_JOB_NAME_MAX);
        assert!(name.ends_with("a-backup"), "{name}");
    }

    #[test]
    fn a_long_job_name_is_cut_in_the_middle() {
        let session = format!("{}-1767225600", "x".repeat(70));
        let name = backup_job(&session, 0);
        assert_eq!(name.len(), NAME_MAX);
        assert!(name.starts_with("stash-backup-xxx"), "{name}");
        assert!(name.ends_with("x-0"), "{name}");
        // A cut that would end on a dash drops it.
        let rs = format!("{}-{}", "r".repeat(43), "s".repeat(30));
        let name = restore_job(&rs, 0, Some(12));
        assert_eq!(name, format!("stash-restore-{}-0-12", "r".repeat(43)));
        assert!(name.len() <= NAME_MAX);
    }
}
