//! How the operator was installed: what it puts into the objects it creates.

/// Settings every reconciler reads; from the operator's flags (and the Helm chart's values).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSettings {
    /// The image with `coffer`, the MariaDB/MySQL clients, mariabackup, garbd and the MariaDB
    /// server (a verification's throwaway server); CronJob and Job pods run it.
    pub image: String,
    /// `IfNotPresent` unless set.
    pub image_pull_policy: String,
    /// Image pull secrets added to every pod the operator creates.
    pub image_pull_secrets: Vec<String>,
    /// Pushgateway URL handed to agents (none: metrics are not pushed).
    pub pushgateway: Option<String>,
    /// The ClusterRole bound to each configuration's CronJob ServiceAccount (may only create
    /// BackupSessions and read their configuration).
    pub trigger_cluster_role: String,
    /// The ClusterRole bound to each backup Job's ServiceAccount.
    pub backup_job_cluster_role: String,
    /// The ClusterRole bound to each restore Job's ServiceAccount.
    pub restore_job_cluster_role: String,
    /// The ClusterRole bound to each configuration's verification CronJob ServiceAccount
    /// (reads the configuration, its Repository and Secrets; writes the configuration's
    /// status).
    pub verify_job_cluster_role: String,
    /// The ClusterRole bound to each BinlogArchive Deployment's ServiceAccount (reads the
    /// archive, its AppBinding, Repository and Secrets; writes the archive's status).
    pub archive_cluster_role: String,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            image: "ghcr.io/coffer-backup/coffer:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: Vec::new(),
            pushgateway: None,
            trigger_cluster_role: "coffer-trigger".into(),
            backup_job_cluster_role: "coffer-backup-job".into(),
            restore_job_cluster_role: "coffer-restore-job".into(),
            verify_job_cluster_role: "coffer-verify-job".into(),
            archive_cluster_role: "coffer-archive-job".into(),
        }
    }
}
