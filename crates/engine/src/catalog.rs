//! What the engine needs from a platform: read resources, write statuses. The local store and
//! Kubernetes both provide it; the engine never knows which one it talks to.
//!
//! Several writers change one status (the executor, the supervisor past a deadline, the server
//! scheduling a retry, another replica's executor), so a status is written as read-change-write
//! against the resource version that was read: a write over someone else's change is refused
//! with [`CatalogError::Conflict`] and [`update_status`] applies the change again on what is
//! stored now. Callers pass only their own change, never a whole status they read earlier.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use coffer_api::{Kind, Resource};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CatalogError {
    #[error("{kind}/{namespace}/{name} was not found")]
    NotFound {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("{kind}/{namespace}/{name} was changed by someone else since it was read")]
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
    /// Writes the status of `res`. If `res.meta().resource_version` is Some and differs from the
    /// stored one, nothing is written and the answer is Conflict. Returns the resource as stored
    /// after the write (with its new resource_version).
    fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError>;
}

/// How many times a change is applied again after a conflict before giving up.
const CONFLICT_ATTEMPTS: u32 = 10;
/// How many times a failing catalog is asked before the change is given up.
const ERROR_ATTEMPTS: u32 = 5;

/// Read, change, write; on Conflict read again and apply `change` again (a bounded number of
/// times); other errors are retried with a short backoff and then logged with the resource.
/// Returns the written resource, or None when it could not be written (never silently).
pub fn update_status(
    cat: &dyn Catalog,
    kind: Kind,
    namespace: &str,
    name: &str,
    change: &mut dyn FnMut(&mut Resource),
) -> Option<Resource> {
    let label = || {
        if kind.cluster_scoped() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}/{namespace}/{name}")
        }
    };
    let mut conflicts = 0;
    let mut errors = 0;
    // A store that answers "busy" while another process writes is asked again shortly.
    let mut failed = |e: &CatalogError| {
        errors += 1;
        if errors >= ERROR_ATTEMPTS {
            tracing::error!(
                "the status of {} could not be written: {e}; the change is lost",
                label()
            );
            return false;
        }
        tracing::warn!(
            "writing the status of {} (attempt {errors}): {e}; trying again",
            label()
        );
        std::thread::sleep(Duration::from_millis(50 * u64::from(errors)));
        true
    };
    loop {
        let mut res = match cat.get(kind, namespace, name) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!(
                    "the status of {} could not be written: it no longer exists",
                    label()
                );
                return None;
            }
            Err(e) => {
                if failed(&e) {
                    continue;
                }
                return None;
            }
        };
        change(&mut res);
        match cat.patch_status(&res) {
            Ok(written) => return Some(written),
            Err(CatalogError::Conflict { .. }) if conflicts + 1 < CONFLICT_ATTEMPTS => {
                conflicts += 1;
                tracing::debug!(
                    "{} changed while its status was written; applying the change again",
                    label()
                );
            }
            Err(e @ CatalogError::Conflict { .. }) => {
                tracing::error!(
                    "the status of {} could not be written: {e} ({CONFLICT_ATTEMPTS} times); \
                     the change is lost",
                    label()
                );
                return None;
            }
            Err(e @ CatalogError::NotFound { .. }) => {
                tracing::error!("the status of {} could not be written: {e}", label());
                return None;
            }
            Err(e) => {
                if !failed(&e) {
                    return None;
                }
            }
        }
    }
}

/// `res` with the status of `from` (both of the same kind), metadata and spec unchanged.
pub fn with_status_of(res: &Resource, from: &Resource) -> Result<Resource, CatalogError> {
    let mut body = res.to_json();
    let o = body.as_object_mut().expect("a resource is an object");
    match from.to_json().get("status") {
        Some(s) => o.insert("status".into(), s.clone()),
        None => o.remove("status"),
    };
    Resource::from_json(res.kind(), body).map_err(|p| CatalogError::Other {
        message: format!("the status of {} cannot be read: {p}", res.display_name()),
    })
}

/// Kind, namespace ("" when cluster-scoped), name.
type Key = (Kind, String, String);

/// An in-memory catalog with resource versions and conditional status writes, for tests of
/// everything that reads and writes through a [`Catalog`].
#[derive(Default)]
pub struct MemoryCatalog {
    items: Mutex<BTreeMap<Key, (u64, Resource)>>,
    next_version: Mutex<u64>,
}

impl MemoryCatalog {
    pub fn new() -> MemoryCatalog {
        MemoryCatalog::default()
    }

    /// A catalog holding `resources`.
    pub fn with(resources: impl IntoIterator<Item = Resource>) -> MemoryCatalog {
        let c = MemoryCatalog::new();
        for r in resources {
            c.put(r);
        }
        c
    }

    fn key(kind: Kind, namespace: &str, name: &str) -> Key {
        let ns = if kind.cluster_scoped() { "" } else { namespace };
        (kind, ns.to_string(), name.to_string())
    }

    fn bump(&self) -> u64 {
        let mut v = self.next_version.lock().unwrap();
        *v += 1;
        *v
    }

    /// Creates or replaces a resource (spec and status), giving it a new version.
    pub fn put(&self, mut res: Resource) -> Resource {
        let v = self.bump();
        res.meta_mut().resource_version = Some(v.to_string());
        let key = Self::key(res.kind(), res.namespace(), res.name());
        self.items.lock().unwrap().insert(key, (v, res.clone()));
        res
    }

    pub fn remove(&self, kind: Kind, namespace: &str, name: &str) -> Option<Resource> {
        self.items
            .lock()
            .unwrap()
            .remove(&Self::key(kind, namespace, name))
            .map(|(_, r)| r)
    }
}

impl Catalog for MemoryCatalog {
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Resource>, CatalogError> {
        Ok(self
            .items
            .lock()
            .unwrap()
            .get(&Self::key(kind, namespace, name))
            .map(|(_, r)| r.clone()))
    }

    fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
        let key = Self::key(res.kind(), res.namespace(), res.name());
        let mut items = self.items.lock().unwrap();
        let Some((version, stored)) = items.get(&key) else {
            return Err(CatalogError::NotFound {
                kind: key.0,
                namespace: key.1,
                name: key.2,
            });
        };
        if let Some(v) = &res.meta().resource_version {
            if *v != version.to_string() {
                return Err(CatalogError::Conflict {
                    kind: key.0,
                    namespace: key.1,
                    name: key.2,
                });
            }
        }
        let mut written = with_status_of(stored, res)?;
        let v = self.bump();
        written.meta_mut().resource_version = Some(v.to_string());
        items.insert(key, (v, written.clone()));
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn session() -> Resource {
        coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\nmetadata: {name: s}\n\
             spec: {invoker: {apiGroup: stash.appscode.com, kind: BackupConfiguration, name: b}}\n",
            "t.yaml",
        )
        .expect("parses")
        .remove(0)
    }

    fn bs(r: &mut Resource) -> &mut coffer_api::backup::BackupSession {
        match r {
            Resource::BackupSession(b) => b,
            _ => panic!("not a BackupSession"),
        }
    }

    #[test]
    fn a_stale_write_is_refused_and_a_current_one_gets_a_new_version() {
        let cat = MemoryCatalog::with([session()]);
        let read = cat
            .get(Kind::BackupSession, "default", "s")
            .unwrap()
            .unwrap();
        let mut mine = read.clone();
        bs(&mut mine).status_mut().error = Some("mine".into());
        let written = cat.patch_status(&mine).unwrap();
        assert_ne!(
            written.meta().resource_version,
            read.meta().resource_version
        );
        let mut stale = read.clone();
        bs(&mut stale).status_mut().error = Some("stale".into());
        assert_eq!(
            cat.patch_status(&stale),
            Err(CatalogError::Conflict {
                kind: Kind::BackupSession,
                namespace: "default".into(),
                name: "s".into()
            })
        );
        let mut now = cat
            .get(Kind::BackupSession, "default", "s")
            .unwrap()
            .unwrap();
        assert_eq!(bs(&mut now).status_mut().error.as_deref(), Some("mine"));
    }

    /// A catalog that lets another writer change the resource between the first read and
    /// write of update_status, as a second replica or the supervisor would.
    struct Racing {
        inner: MemoryCatalog,
        raced: AtomicU32,
        writes: AtomicU32,
    }

    impl Catalog for Racing {
        fn get(&self, k: Kind, ns: &str, n: &str) -> Result<Option<Resource>, CatalogError> {
            let r = self.inner.get(k, ns, n);
            if self.raced.fetch_add(1, Ordering::SeqCst) == 0 {
                update_status(&self.inner, k, ns, n, &mut |r| {
                    bs(r).status_mut().next_retry = Some("other".into())
                })
                .expect("the other writer writes");
            }
            r
        }
        fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.patch_status(res)
        }
    }

    #[test]
    fn a_conflict_is_retried_and_both_changes_survive() {
        let cat = Racing {
            inner: MemoryCatalog::with([session()]),
            raced: AtomicU32::new(0),
            writes: AtomicU32::new(0),
        };
        let mut w = update_status(&cat, Kind::BackupSession, "default", "s", &mut |r| {
            bs(r).status_mut().error = Some("mine".into())
        })
        .expect("written");
        assert_eq!(
            cat.writes.load(Ordering::SeqCst),
            2,
            "one conflict, one retry"
        );
        let st = bs(&mut w).status_mut().clone();
        assert_eq!(st.error.as_deref(), Some("mine"));
        assert_eq!(st.next_retry.as_deref(), Some("other"));
        let mut stored = cat
            .inner
            .get(Kind::BackupSession, "default", "s")
            .unwrap()
            .unwrap();
        assert_eq!(bs(&mut stored).status_mut(), &st);
    }

    #[test]
    fn a_missing_resource_is_not_found() {
        let cat = MemoryCatalog::new();
        assert_eq!(
            cat.patch_status(&session()),
            Err(CatalogError::NotFound {
                kind: Kind::BackupSession,
                namespace: "default".into(),
                name: "s".into()
            })
        );
        let mut called = false;
        assert!(
            update_status(&cat, Kind::BackupSession, "default", "s", &mut |_| called =
                true)
            .is_none()
        );
        assert!(!called);
    }

    /// A catalog whose status writes fail `failures` times before they succeed.
    struct Flaky {
        inner: MemoryCatalog,
        failures: u32,
        tries: AtomicU32,
    }

    impl Catalog for Flaky {
        fn get(&self, k: Kind, ns: &str, n: &str) -> Result<Option<Resource>, CatalogError> {
            self.inner.get(k, ns, n)
        }
        fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(CatalogError::Other {
                    message: "database is locked".into(),
                })
            } else {
                self.inner.patch_status(res)
            }
        }
    }

    #[test]
    fn a_failing_catalog_is_retried_then_reported() {
        let flaky = |failures| Flaky {
            inner: MemoryCatalog::with([session()]),
            failures,
            tries: AtomicU32::new(0),
        };
        let mut change = |r: &mut Resource| bs(r).status_mut().error = Some("x".into());
        let busy = flaky(2);
        assert!(update_status(&busy, Kind::BackupSession, "default", "s", &mut change).is_some());
        assert_eq!(busy.tries.load(Ordering::SeqCst), 3);
        let broken = flaky(u32::MAX);
        assert!(update_status(&broken, Kind::BackupSession, "default", "s", &mut change).is_none());
        assert_eq!(broken.tries.load(Ordering::SeqCst), ERROR_ATTEMPTS);
    }
}
