//! The kinds coffer knows, their names and apiVersions.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    Repository,
    AppBinding,
    BackupConfiguration,
    BackupSession,
    RestoreSession,
    Task,
    Function,
    /// coffer's own kind (`coffer.dev`): a continuous binlog archive.
    BinlogArchive,
}

pub const ALL: [Kind; 9] = [
    Kind::Secret,
    Kind::Repository,
    Kind::AppBinding,
    Kind::BackupConfiguration,
    Kind::BackupSession,
    Kind::RestoreSession,
    Kind::Task,
    Kind::Function,
    Kind::BinlogArchive,
];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::Repository => "Repository",
            Kind::AppBinding => "AppBinding",
            Kind::BackupConfiguration => "BackupConfiguration",
            Kind::BackupSession => "BackupSession",
            Kind::RestoreSession => "RestoreSession",
            Kind::Task => "Task",
            Kind::Function => "Function",
            Kind::BinlogArchive => "BinlogArchive",
        }
    }

    /// The apiVersion coffer writes.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret => "v1",
            Kind::Repository => "stash.appscode.com/v1alpha1",
            Kind::AppBinding => "appcatalog.appscode.com/v1alpha1",
            Kind::BinlogArchive => crate::archive::API_VERSION,
            _ => "stash.appscode.com/v1beta1",
        }
    }

    /// Every apiVersion accepted for the kind.
    pub fn accepted_api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Secret => &["v1"],
            Kind::Repository => &["stash.appscode.com/v1alpha1"],
            Kind::AppBinding => &["appcatalog.appscode.com/v1alpha1"],
            Kind::BinlogArchive => &[crate::archive::API_VERSION],
            _ => &["stash.appscode.com/v1beta1"],
        }
    }

    /// Task and Function are cluster-scoped in Stash: they have no namespace.
    pub fn cluster_scoped(self) -> bool {
        matches!(self, Kind::Task | Kind::Function)
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Repository => "repositories",
            Kind::AppBinding => "appbindings",
            Kind::BackupConfiguration => "backupconfigurations",
            Kind::BackupSession => "backupsessions",
            Kind::RestoreSession => "restoresessions",
            Kind::Task => "tasks",
            Kind::Function => "functions",
            Kind::BinlogArchive => "binlogarchives",
        }
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Secret => &[],
            Kind::Repository => &["repo"],
            Kind::AppBinding => &[],
            Kind::BackupConfiguration => &["bc"],
            Kind::BackupSession => &["bs"],
            Kind::RestoreSession => &["restore", "rs"],
            Kind::Task => &[],
            Kind::Function => &[],
            Kind::BinlogArchive => &["archive", "archives"],
        }
    }

    /// Resolves a kind as a person types it: `BackupConfiguration`, `backupconfigurations`,
    /// `bc`, `backupconfiguration.stash.appscode.com`.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let s = s.split('.').next().unwrap_or("");
        ALL.into_iter().find(|k| {
            let singular = k.as_str().to_ascii_lowercase();
            s == singular || s == k.plural() || k.short_names().contains(&s)
        })
    }

    pub fn from_manifest_kind(s: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_people_type() {
        assert_eq!(Kind::parse("bc"), Some(Kind::BackupConfiguration));
        assert_eq!(Kind::parse("backupsessions"), Some(Kind::BackupSession));
        assert_eq!(Kind::parse("Repository"), Some(Kind::Repository));
        assert_eq!(Kind::parse("repo"), Some(Kind::Repository));
        assert_eq!(
            Kind::parse("restoresession.stash.appscode.com"),
            Some(Kind::RestoreSession)
        );
        assert_eq!(Kind::parse("pods"), None);
        assert_eq!(Kind::parse("archive"), Some(Kind::BinlogArchive));
        assert_eq!(
            Kind::parse("binlogarchives.coffer.dev"),
            Some(Kind::BinlogArchive)
        );
        assert_eq!(Kind::BinlogArchive.api_version(), "coffer.dev/v1alpha1");
    }
}
