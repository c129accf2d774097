//! A bound on the requests in flight to one store: a Repository's `maxConnections`.
//!
//! rustic uploads and reads packs from several threads, and coffer's own work (locks, sizes,
//! listings) adds more; without a bound a backup opens as many connections as threads ask
//! for, which a small object store or a rate-limited account refuses. Every call of
//! [`ObjectStore`] through [`BoundedStore`] holds one of `limit` permits for its duration.

use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

use crate::store::{ObjectStore, StoreResult};

#[derive(Default)]
struct Counts {
    in_use: usize,
    waiting: usize,
}

/// A counting semaphore (std has none); permits are returned when the guard drops.
struct Permits {
    limit: usize,
    counts: Mutex<Counts>,
    freed: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut c = self.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.in_use -= 1;
        drop(c);
        self.0.freed.notify_one();
    }
}

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.waiting += 1;
        while c.in_use >= self.limit {
            c = self.freed.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        c.waiting -= 1;
        c.in_use += 1;
        Permit(self)
    }
}

/// An [`ObjectStore`] that lets at most `limit` of its calls run at once.
pub struct BoundedStore {
    inner: Arc<dyn ObjectStore>,
    permits: Permits,
}

impl BoundedStore {
    /// `limit` 0 is taken as 1: a store that admits no request would hang every command.
    pub fn new(inner: Arc<dyn ObjectStore>, limit: usize) -> BoundedStore {
        BoundedStore {
            inner,
            permits: Permits {
                limit: limit.max(1),
                counts: Mutex::default(),
                freed: Condvar::new(),
            },
        }
    }

    pub fn limit(&self) -> usize {
        self.permits.limit
    }

    /// Calls waiting for a permit right now (for diagnostics and tests).
    pub fn waiting(&self) -> usize {
        self.permits
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
    }
}

impl ObjectStore for BoundedStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
        let _p = self.permits.acquire();
        self.inner.list(dir)
    }

    fn read(&self, key: &str) -> StoreResult<Bytes> {
        let _p = self.permits.acquire();
        self.inner.read(key)
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let _p = self.permits.acquire();
        self.inner.read_range(key, offset, len)
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        let _p = self.permits.acquire();
        self.inner.write(key, parts)
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        let _p = self.permits.acquire();
        self.inner.write_new(key, parts)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let _p = self.permits.acquire();
        self.inner.delete(key)
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        let _p = self.permits.acquire();
        self.inner.exists(key)
    }

    fn create(&self) -> StoreResult<()> {
        let _p = self.permits.acquire();
        self.inner.create()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    /// Wraps the real local store, counting the calls inside it; each write waits at a gate
    /// the test opens, so calls pile up exactly where the bound must hold them.
    struct Counting {
        inner: LocalStore,
        state: Mutex<(usize, usize, bool)>, // (inside now, most inside at once, gate open)
        changed: Condvar,
    }

    impl Counting {
        fn inside(&self) -> usize {
            self.state.lock().unwrap().0
        }
    }

    impl ObjectStore for Counting {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
            self.inner.list(dir)
        }
        fn read(&self, key: &str) -> StoreResult<Bytes> {
            self.inner.read(key)
        }
        fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
            self.inner.read_range(key, offset, len)
        }
        fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            self.changed.notify_all();
            while !s.2 {
                s = self.changed.wait(s).unwrap();
            }
            drop(s);
            let r = self.inner.write(key, parts);
            self.state.lock().unwrap().0 -= 1;
            r
        }
        fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
            self.inner.write_new(key, parts)
        }
        fn delete(&self, key: &str) -> StoreResult<()> {
            self.inner.delete(key)
        }
        fn exists(&self, key: &str) -> StoreResult<bool> {
            self.inner.exists(key)
        }
        fn create(&self) -> StoreResult<()> {
            self.inner.create()
        }
    }

    #[test]
    fn no_more_than_the_limit_of_calls_reach_the_store_at_once() {
        const CALLS: usize = 9;
        const LIMIT: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(Counting {
            inner: LocalStore::new(dir.path()),
            state: Mutex::new((0, 0, false)),
            changed: Condvar::new(),
        });
        counting.create().unwrap();
        let bounded = Arc::new(BoundedStore::new(counting.clone(), LIMIT));
        let threads: Vec<_> = (0..CALLS)
            .map(|i| {
                let b = bounded.clone();
                std::thread::spawn(move || {
                    b.write(
                        &format!("data/00/{i:064}"),
                        &[Bytes::from(vec![i as u8; 10])],
                    )
                })
            })
            .collect();
        // Wait until every call is either inside the store or held at the bound. Without a
        // bound all of them end up inside, and the assertion below fails.
        {
            let mut s = counting.state.lock().unwrap();
            while s.0 + bounded.waiting() < CALLS {
                s = counting
                    .changed
                    .wait_timeout(s, std::time::Duration::from_millis(20))
                    .unwrap()
                    .0;
            }
        }
        assert_eq!(counting.inside(), LIMIT);
        assert_eq!(bounded.waiting(), CALLS - LIMIT);
        counting.state.lock().unwrap().2 = true;
        counting.changed.notify_all();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(
            counting.state.lock().unwrap().1,
            LIMIT,
            "most inside at once"
        );
        assert_eq!(bounded.waiting(), 0);
        // Every write landed in the real store.
        assert_eq!(bounded.list("data").unwrap().len(), CALLS);
    }

    #[test]
    fn a_limit_of_zero_still_admits_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let b = BoundedStore::new(Arc::new(LocalStore::new(dir.path())), 0);
        assert_eq!(b.limit(), 1);
        b.write("config", &[Bytes::from_static(b"x")]).unwrap();
        assert_eq!(&b.read("config").unwrap()[..], b"x");
    }
}
