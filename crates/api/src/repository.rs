//! `stash.appscode.com/v1alpha1` Repository: where backups live.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::TargetRef;

pub type Repository = crate::Object<RepositorySpec, RepositoryStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositorySpec {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_policy: Option<serde_json::Value>,
    /// coffer: read the repository's data back, a rotating slice each day, so that every pack
    /// is read within `periodDays` (see `coffer check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_check: Option<DataCheckSpec>,
}

/// coffer's rotating data check: each day the first backup into the repository first reads
/// that day's slice of the packs (one of `periodDays`), so every pack is read within
/// `periodDays` days; a damaged pack is taken out before the backup writes, so the backup
/// writes that data again instead of reusing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataCheckSpec {
    /// Days within which every pack is read once (1: all of it every day).
    #[serde(default)]
    pub period_days: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    #[serde(default)]
    pub storage_secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swift: Option<SwiftSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b2: Option<B2Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<RestSpec>,
}

impl Backend {
    /// Names of the backend kinds that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.local.is_some() {
            v.push("local");
        }
        if self.s3.is_some() {
            v.push("s3");
        }
        if self.gcs.is_some() {
            v.push("gcs");
        }
        if self.azure.is_some() {
            v.push("azure");
        }
        if self.swift.is_some() {
            v.push("swift");
        }
        if self.b2.is_some() {
            v.push("b2");
        }
        if self.rest.is_some() {
            v.push("rest");
        }
        v
    }

    /// The requests coffer keeps in flight to the backend at most: `maxConnections` where
    /// Stash has it (gcs, azure, b2; 0 or unset means the default), else 5, restic's default
    /// for its remote backends. A local directory gets 5 too rather than restic's 2: the
    /// parallel native restore reads many pieces at once, and a local repository is often a
    /// network file system.
    pub fn connections(&self) -> usize {
        let given = [
            self.gcs.as_ref().and_then(|g| g.max_connections),
            self.azure.as_ref().and_then(|a| a.max_connections),
            self.b2.as_ref().and_then(|b| b.max_connections),
        ]
        .into_iter()
        .flatten()
        .find(|n| *n > 0);
        given.map_or(5, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A local backend is a Kubernetes volume mounted at `mountPath`. On one machine the
/// repository lives at `hostPath.path` (plus `subPath`) when a hostPath volume is given, and
/// at `mountPath` (plus `subPath`) otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSpec {
    #[serde(default)]
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPath>,
    /// Any other volume source (persistentVolumeClaim, nfs, emptyDir, …), kept as given.
    #[serde(flatten)]
    pub volume_source: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Where a local backend's repository is reached from — the platform's choice, made by the
/// caller (an agent in a pod says so explicitly), never read from the environment here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalMount {
    /// One machine: the host's directory, `hostPath.path` when given, else `mountPath`.
    #[default]
    Host,
    /// A pod the operator built: the volume source is mounted at `mountPath`, so the host's
    /// path means nothing there.
    Pod,
}

impl LocalSpec {
    /// The repository's directory: `<base>/<subPath>`, the base being where `at` says the
    /// volume is (see [`LocalMount`]).
    pub fn repository_path_in(&self, at: LocalMount) -> std::path::PathBuf {
        let base = match (&self.host_path, at) {
            (Some(h), LocalMount::Host) if !h.path.is_empty() => std::path::PathBuf::from(&h.path),
            _ => std::path::PathBuf::from(&self.mount_path),
        };
        match &self.sub_path {
            Some(s) if !s.is_empty() => base.join(s),
            _ => base,
        }
    }

    /// Whether a volume source is given (hostPath or any other): a pod needs one to mount.
    pub fn has_volume_source(&self) -> bool {
        self.host_path.is_some() || !self.volume_source.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Spec {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "insecureTLS"
    )]
    pub insecure_tls: Option<bool>,
}

/// Stash's `gcs` backend. `endpoint` is coffer's: the JSON API's base URL, for emulators and
/// private endpoints (default Google's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsSpec {
    #[serde(default)]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Stash's `azure` backend. `endpoint` is coffer's: the Blob service URL, for Azurite and
/// sovereign clouds (default `https://<account>.blob.core.windows.net`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSpec {
    #[serde(default)]
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Stash's `swift` backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwiftSpec {
    #[serde(default)]
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Stash's `b2` backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct B2Spec {
    #[serde(default)]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
}

/// Stash's `rest` backend: a server speaking restic's REST protocol; the URL's path is the
/// repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestSpec {
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_backup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_removed_on_last_cleanup: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<TargetRef>,
    /// coffer: total size in bytes, for metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_bytes: Option<u64>,
    /// coffer: why `integrity` is false: the structural check's findings, or the packs the
    /// data check found damaged and the snapshots that depend on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_reason: Option<String>,
    /// coffer: the packs the last data check (`coffer check --read-data`) found damaged. They
    /// were taken out of the index, so the next backup writes their blobs again; the list is
    /// cleared when a later check finds the repository whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_packs: Vec<String>,
    /// coffer: when the repository's data was last read back, and which subset (`all` or `N/M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_data_check_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_data_check_subset: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_repository_is_on_the_host_path_on_one_machine_and_at_mount_path_in_a_pod() {
        let spec = |y: &str| serde_yaml::from_str::<LocalSpec>(y).unwrap();
        let host = spec("{mountPath: /safe/data, subPath: demo, hostPath: {path: /srv/r}}");
        let pvc = spec("{mountPath: /safe/data, persistentVolumeClaim: {claimName: c}}");
        let bare = spec("{mountPath: /srv/repo}");
        let cases = [
            (&host, LocalMount::Host, "/srv/r/demo"),
            (&host, LocalMount::Pod, "/safe/data/demo"),
            (&pvc, LocalMount::Host, "/safe/data"),
            (&pvc, LocalMount::Pod, "/safe/data"),
            (&bare, LocalMount::Host, "/srv/repo"),
            (&bare, LocalMount::Pod, "/srv/repo"),
        ];
        for (l, at, want) in cases {
            assert_eq!(
                l.repository_path_in(at),
                std::path::PathBuf::from(want),
                "{l:?} {at:?}"
            );
        }
        assert!(host.has_volume_source() && pvc.has_volume_source());
        assert!(!bare.has_volume_source());
    }

    #[test]
    fn connections_follow_max_connections_else_restics_defaults() {
        let local = Backend {
            local: Some(LocalSpec::default()),
            ..Default::default()
        };
        let s3 = Backend {
            s3: Some(S3Spec::default()),
            ..Default::default()
        };
        let gcs = |n| Backend {
            gcs: Some(GcsSpec {
                max_connections: n,
                ..Default::default()
            }),
            ..Default::default()
        };
        let azure = Backend {
            azure: Some(AzureSpec {
                max_connections: Some(12),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b2 = Backend {
            b2: Some(B2Spec {
                max_connections: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        for (backend, want) in [
            (&local, 5),
            (&s3, 5),
            (&gcs(None), 5),
            (&gcs(Some(0)), 5),
            (&gcs(Some(3)), 3),
            (&azure, 12),
            (&b2, 1),
        ] {
            assert_eq!(backend.connections(), want, "{backend:?}");
        }
    }
}
