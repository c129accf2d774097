//! What the engine needs from a platform: read resources, write statuses. The local store and
//! Kubernetes both provide it; the engine never knows which one it talks to.

use coffer_api::{Kind, Resource};

pub trait Catalog: Send + Sync {
    /// A resource, or None when it does not exist. Cluster-scoped kinds use namespace "".
    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Resource>, String>;
    /// Replaces the status of an existing resource with the one in `res`.
    fn put_status(&self, res: &Resource) -> Result<(), String>;
}

/// Writes a resource's status through the catalog. A write that fails is retried (a store
/// can answer "busy" while another process writes) and, if it still fails, logged with the
/// resource it was for: never dropped without a word. Returns whether it was written.
pub fn write_status(cat: &dyn Catalog, res: &Resource) -> bool {
    const ATTEMPTS: u64 = 5;
    for attempt in 1..=ATTEMPTS {
        match cat.put_status(res) {
            Ok(()) => return true,
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
        fn get(&self, _: Kind, _: &str, _: &str) -> Result<Option<Resource>, String> {
            Ok(None)
        }
        fn put_status(&self, _: &Resource) -> Result<(), String> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err("database is locked".into())
            } else {
                Ok(())
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
