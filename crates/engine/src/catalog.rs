//! What the engine needs from a platform: read resources, write statuses. The local store and
//! Kubernetes both provide it; the engine never knows which one it talks to.

use coffer_api::{Kind, Resource};

/// Why a catalog could not answer: the resource is not there, someone else wrote it since it
/// was read, or the platform failed (its message says what to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} was changed since it was read; read it again and retry")]
    Conflict {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("{message}")]
    Other { message: String },
}

pub trait Catalog: Send + Sync {
    /// A resource, or None when it does not exist. Cluster-scoped kinds use namespace "".
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Resource>, CatalogError>;
    /// Writes the status of `res`; if res.meta().resource_version is Some and stale: Conflict.
    /// Returns the stored resource after the write.
    fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError>;
}

/// Reads a resource, applies `change` and writes its status, reading again and retrying when
/// someone else wrote it in between. Returns the stored resource, or None (logged) when it is
/// gone or cannot be written.
pub fn update_status(
    cat: &dyn Catalog,
    kind: Kind,
    namespace: &str,
    name: &str,
    change: &mut dyn FnMut(&mut Resource),
) -> Option<Resource> {
    const ATTEMPTS: u64 = 5;
    for attempt in 1..=ATTEMPTS {
        let mut res = match cat.get(kind, namespace, name) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!("{kind} {namespace}/{name} is gone: its status was not written");
                return None;
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!("reading {kind} {namespace}/{name} (attempt {attempt}): {e}");
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                continue;
            }
            Err(e) => {
                tracing::error!("{kind} {namespace}/{name} could not be read: {e}");
                return None;
            }
        };
        change(&mut res);
        match cat.patch_status(&res) {
            Ok(r) => return Some(r),
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(
                    "writing the status of {kind} {namespace}/{name} (attempt {attempt}): {e}; \
                     trying again"
                );
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => {
                tracing::error!("the status of {kind} {namespace}/{name} could not be written: {e}")
            }
        }
    }
    None
}

/// Writes a resource's status as the engine holds it, whatever was written since it was read
/// (the engine owns its session's status while it runs). A write that fails is retried (a
/// store can answer "busy" while another process writes) and, if it still fails, logged with
/// the resource it was for: never dropped without a word. Returns whether it was written.
pub fn write_status(cat: &dyn Catalog, res: &Resource) -> bool {
    const ATTEMPTS: u64 = 5;
    let mut res = res.clone();
    res.meta_mut().resource_version = None;
    for attempt in 1..=ATTEMPTS {
        match cat.patch_status(&res) {
            Ok(_) => return true,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(
                    "writing the status of {}/{}/{} (attempt {attempt}): {e}; trying again",
                    res.kind(),
                    res.namespace(),
                    res.name()
                );
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => tracing::error!(
                "the status of {}/{}/{} could not be written: {e}",
                res.kind(),
                res.namespace(),
                res.name()
            ),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A catalog whose status writes fail `failures` times before they succeed.
    struct Flaky {
        failures: u32,
        tries: AtomicU32,
    }

    impl Catalog for Flaky {
        fn get(&self, _: Kind, _: &str, _: &str) -> Result<Option<Resource>, CatalogError> {
            Ok(None)
        }
        fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(CatalogError::Other {
                    message: "database is locked".into(),
                })
            } else {
                Ok(res.clone())
            }
        }
    }

    fn session() -> Resource {
        coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\nmetadata: {name: s}\n\
             spec: {invoker: {apiGroup: stash.appscode.com, kind: BackupConfiguration, name: b}}\n",
            "t.yaml",
        )
        .expect("parses")
        .remove(0)
    }

    #[test]
    fn a_failed_status_write_is_retried_then_reported() {
        let busy = Flaky {
            failures: 2,
            tries: AtomicU32::new(0),
        };
        assert!(write_status(&busy, &session()));
        assert_eq!(busy.tries.load(Ordering::SeqCst), 3);
        let broken = Flaky {
            failures: u32::MAX,
            tries: AtomicU32::new(0),
        };
        assert!(!write_status(&broken, &session()));
        assert_eq!(broken.tries.load(Ordering::SeqCst), 5);
    }
}
