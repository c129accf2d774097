//! What the engine needs from a platform: read resources, write statuses. The local store and
//! Kubernetes both provide it; the engine never knows which one it talks to.

use coffer_api::{Kind, Resource};

pub trait Catalog: Send + Sync {
    /// A resource, or None when it does not exist. Cluster-scoped kinds use namespace "".
    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Resource>, String>;
    /// Replaces the status of an existing resource with the one in `res`.
    fn put_status(&self, res: &Resource) -> Result<(), String>;
}
