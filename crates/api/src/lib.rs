//! coffer's resource model.
//!
//! Eight kinds with Stash's apiVersions and field names — Secret, Repository, AppBinding,
//! BackupConfiguration, BackupSession, RestoreSession, Task and Function — so that a Stash
//! user's manifests apply unchanged, and one of coffer's own: BinlogArchive
//! (`coffer.dev/v1alpha1`, point-in-time recovery, which Stash does not have). This crate parses manifests, refuses bad ones whole with
//! the field path and what is expected, and knows the kinds' defaults and phases. It knows
//! nothing about databases, repositories or where resources are stored.

pub mod appbinding;
pub mod archive;
pub mod backup;
pub mod clientargs;
pub mod duration;
pub mod envsubst;
pub mod gtid;
pub mod kind;
pub mod manifest;
pub mod meta;
pub mod params;
pub mod phase;
pub mod references;
pub mod repository;
pub mod restore;
pub mod schedule;
pub mod secret;
pub mod task;
pub mod validate;

use serde::{Deserialize, Serialize};

pub use appbinding::AppBinding;
pub use archive::BinlogArchive;
pub use backup::{BackupConfiguration, BackupSession};
pub use kind::Kind;
pub use manifest::{parse_located, parse_manifests, Located, ManifestError, Resource};
pub use meta::{Condition, ObjectMeta};
pub use repository::Repository;
pub use restore::RestoreSession;
pub use secret::Secret;
pub use task::{Function, Task};

/// The envelope every kind but Secret shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<Spec, Status> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

fn none<T>() -> Option<T> {
    None
}

impl<Spec, Status: Default> Object<Spec, Status> {
    /// The status, created empty on first use.
    pub fn status_mut(&mut self) -> &mut Status {
        self.status.get_or_insert_with(Status::default)
    }
}
