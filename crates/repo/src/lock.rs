//! Repository locks in restic's own format (`locks/<id>`, encrypted JSON), so that coffer and
//! restic see each other's work: coffer refuses to write while restic holds a conflicting lock and
//! restic refuses to prune while coffer writes.

use std::{
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use rustic_core::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    cipher::RepoCipher,
    store::{ObjectStore, StoreError},
};

/// restic considers a lock stale when it has not been refreshed for this long.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// restic refreshes its locks every five minutes; so do we.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// The JSON body of a restic lock file. Unknown fields are ignored by restic, so `program` lets
/// coffer recognise its own locks without confusing anyone else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub time: String,
    pub exclusive: bool,
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    pub pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl LockInfo {
    fn age(&self) -> Option<Duration> {
        let t: Timestamp = self.time.parse().ok()?;
        let secs = Timestamp::now().as_second() - t.as_second();
        Some(Duration::from_secs(secs.max(0) as u64))
    }

    /// restic's rule: older than 30 minutes, or on this host with its process gone.
    pub fn is_stale(&self) -> bool {
        if self.age().is_none_or(|a| a > STALE_AFTER) {
            return true;
        }
        self.hostname == hostname() && !process_alive(self.pid)
    }

    pub fn is_coffers(&self) -> bool {
        self.program.as_deref() == Some("coffer")
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock held by {}{} on host {} (pid {}) since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            if self.is_coffers() {
                "coffer"
            } else {
                "restic"
            },
            if self.username.is_empty() {
                String::new()
            } else {
                format!(" as user {}", self.username)
            },
            self.hostname,
            self.pid,
            self.time
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "repository {location} is locked: {holder}. Another backup, restore, prune or restic \
         command is using it; wait for it to finish, or if that process is gone run \
         `coffer unlock` for this repository"
    )]
    Locked { location: String, holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encrypt or decrypt lock file {0}: wrong repository key or corrupt file")]
    Crypto(String),
}

/// A lock this process holds; refreshed in the background and removed on drop.
pub struct RepoLock {
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    cipher: RepoCipher,
    /// The lock file this process holds now. Held across every rewrite of it (refresh,
    /// upgrade), so that one never undoes the other.
    current: Mutex<Current>,
    stop: (Mutex<bool>, Condvar),
}

struct Current {
    key: String,
    exclusive: bool,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock")
            .field("key", &self.shared.current.lock().unwrap().key)
            .finish()
    }
}

fn write_lock(
    store: &dyn ObjectStore,
    cipher: &RepoCipher,
    exclusive: bool,
) -> Result<String, LockError> {
    let info = LockInfo {
        time: Timestamp::now().to_string(),
        exclusive,
        hostname: hostname(),
        username: username(),
        pid: i64::from(std::process::id()),
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        program: Some("coffer".into()),
    };
    let body = cipher.encrypt(&serde_json::to_vec(&info).expect("lock serialises"));
    let id = hex(&Sha256::digest(&body));
    let key = format!("locks/{id}");
    store.write(&key, &[Bytes::from(body)])?;
    Ok(key)
}

impl RepoLock {
    /// Takes a lock like restic does: write ours, then look for conflicting live locks and back
    /// off if there is one. Stale locks left by a crashed coffer on this host are removed.
    pub fn acquire(
        store: Arc<dyn ObjectStore>,
        cipher: RepoCipher,
        exclusive: bool,
    ) -> Result<RepoLock, LockError> {
        let ours = write_lock(store.as_ref(), &cipher, exclusive)?;
        if let Err(e) = check_conflicts(store.as_ref(), &cipher, exclusive, &[ours.as_str()]) {
            let _ = store.delete(&ours);
            return Err(e);
        }
        let shared = Arc::new(Shared {
            store,
            cipher,
            current: Mutex::new(Current {
                key: ours,
                exclusive,
            }),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let s = shared.clone();
        let refresher = std::thread::Builder::new()
            .name("coffer-lock-refresh".into())
            .spawn(move || refresh_loop(&s))
            .ok();
        Ok(RepoLock { shared, refresher })
    }

    /// Turns this shared lock into an exclusive one, as forget and prune need: refused (and the
    /// shared lock kept) while anyone else holds a live lock on the repository.
    pub fn upgrade(&self) -> Result<(), LockError> {
        let s = &self.shared;
        let mut cur = s.current.lock().unwrap();
        if cur.exclusive {
            return Ok(());
        }
        let new = write_lock(s.store.as_ref(), &s.cipher, true)?;
        if let Err(e) = check_conflicts(
            s.store.as_ref(),
            &s.cipher,
            true,
            &[new.as_str(), cur.key.as_str()],
        ) {
            let _ = s.store.delete(&new);
            return Err(e);
        }
        let old = std::mem::replace(&mut cur.key, new);
        cur.exclusive = true;
        if let Err(e) = s.store.delete(&old) {
            tracing::warn!("cannot remove the shared lock {old} after upgrading it: {e}");
        }
        Ok(())
    }

    pub fn key(&self) -> String {
        self.shared.current.lock().unwrap().key.clone()
    }

    pub fn is_exclusive(&self) -> bool {
        self.shared.current.lock().unwrap().exclusive
    }
}

/// Looks for live locks that conflict with one of ours (`ours`: our own lock files, ignored):
/// an exclusive lock conflicts with every other, a shared one with exclusive ones. Stale locks
/// left by a crashed coffer on this host are removed on the way.
fn check_conflicts(
    store: &dyn ObjectStore,
    cipher: &RepoCipher,
    exclusive: bool,
    ours: &[&str],
) -> Result<(), LockError> {
    let conflict = (|| -> Result<Option<LockInfo>, LockError> {
        for (key, info) in list_locks(store, cipher)? {
            if ours.contains(&key.as_str()) {
                continue;
            }
            let Some(info) = info else {
                // A lock we cannot read (another key, or corrupt) cannot be judged: restic
                // treats it as held.
                return Ok(Some(LockInfo {
                    time: "unknown".into(),
                    exclusive: true,
                    hostname: "unknown".into(),
                    username: String::new(),
                    pid: 0,
                    uid: 0,
                    gid: 0,
                    program: None,
                }));
            };
            if info.is_stale() {
                if info.is_coffers() && info.hostname == hostname() {
                    tracing::info!(lock = %key, "removing stale lock left by a crashed coffer process (pid {})", info.pid);
                    store.delete(&key)?;
                }
                continue;
            }
            if exclusive || info.exclusive {
                return Ok(Some(info));
            }
        }
        Ok(None)
    })();
    match conflict? {
        None => Ok(()),
        Some(info) => Err(LockError::Locked {
            location: store.location(),
            holder: info.describe(),
        }),
    }
}

fn refresh_loop(s: &Shared) {
    let (stopped, cv) = &s.stop;
    let mut guard = stopped.lock().unwrap();
    loop {
        // A lock dropped before this thread first ran has already notified: without this
        // check the drop would wait a whole refresh period for the join.
        if *guard {
            return;
        }
        let (g, _) = cv.wait_timeout(guard, REFRESH_EVERY).unwrap();
        guard = g;
        if *guard {
            return;
        }
        let mut cur = s.current.lock().unwrap();
        match write_lock(s.store.as_ref(), &s.cipher, cur.exclusive) {
            Ok(new) => {
                let old = std::mem::replace(&mut cur.key, new);
                let _ = s.store.delete(&old);
            }
            Err(e) => tracing::warn!("cannot refresh the repository lock: {e}"),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        *self.shared.stop.0.lock().unwrap() = true;
        self.shared.stop.1.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let key = self.shared.current.lock().unwrap().key.clone();
        if let Err(e) = self.shared.store.delete(&key) {
            tracing::warn!("cannot remove the repository lock {key}: {e}");
        }
    }
}

/// Every lock file with its decoded body (None when it cannot be decrypted).
pub fn list_locks(
    store: &dyn ObjectStore,
    cipher: &RepoCipher,
) -> Result<Vec<(String, Option<LockInfo>)>, LockError> {
    let mut out = Vec::new();
    for (key, _) in store.list("locks")? {
        let data = match store.read(&key) {
            Ok(d) => d,
            // Removed between list and read: its holder finished.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let info = cipher
            .open_file(&data)
            .and_then(|p| serde_json::from_slice(&p).ok());
        out.push((key, info));
    }
    Ok(out)
}

/// Removes locks: only stale ones, or every lock with `all` (as `restic unlock --remove-all`).
/// Returns the removed locks' descriptions.
pub fn unlock(
    store: &dyn ObjectStore,
    cipher: &RepoCipher,
    all: bool,
) -> Result<Vec<String>, LockError> {
    let mut removed = Vec::new();
    for (key, info) in list_locks(store, cipher)? {
        let stale = info.as_ref().is_some_and(LockInfo::is_stale);
        if all || stale {
            store.delete(&key)?;
            removed.push(match info {
                Some(i) => i.describe(),
                None => format!("unreadable lock {key}"),
            });
        }
    }
    Ok(removed)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            if unsafe { libc::getuid() } == 0 {
                "root".into()
            } else {
                unsafe { libc::getuid() }.to_string()
            }
        })
}

/// Whether a process is alive on this host (a zombie is not: it has finished, even if nobody
/// has reaped it yet).
pub fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie has finished; nobody may have reaped it yet (PID 1 in a container often
    // does not), but it holds nothing.
    exists && !is_zombie(pid)
}

fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{LocalStore, LockError, Repo, RepoError};

    fn lock_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("locks")).map_or(0, |d| d.count())
    }

    fn is_locked(r: Result<impl std::fmt::Debug, RepoError>) -> String {
        match r {
            Err(RepoError::Lock(LockError::Locked { holder, .. })) => holder,
            other => panic!("expected a lock conflict, got {other:?}"),
        }
    }

    /// restic's rules: shared locks coexist, an exclusive one conflicts with every other; an
    /// upgrade to exclusive waits for every other holder and keeps the shared lock meanwhile.
    #[test]
    fn shared_locks_coexist_and_exclusive_ones_wait_for_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) =
            Repo::open_or_init(Arc::new(LocalStore::new(dir.path())), "lock-test").unwrap();
        let reader = repo.lock(false).unwrap();
        let writer = repo.lock(false).unwrap();
        assert_eq!(lock_files(dir.path()), 2);
        let holder = is_locked(repo.lock(true));
        assert!(
            holder.starts_with("a shared lock held by coffer"),
            "{holder}"
        );

        let holder = is_locked(writer.upgrade().map_err(RepoError::from));
        assert!(holder.starts_with("a shared lock"), "{holder}");
        assert!(!writer.is_exclusive());
        assert_eq!(
            lock_files(dir.path()),
            2,
            "the refused upgrade left no file"
        );

        drop(reader);
        writer.upgrade().unwrap();
        assert!(writer.is_exclusive());
        assert_eq!(
            lock_files(dir.path()),
            1,
            "the shared lock file was replaced"
        );
        let holder = is_locked(repo.lock(false));
        assert!(holder.starts_with("an exclusive lock"), "{holder}");
        drop(writer);
        assert_eq!(lock_files(dir.path()), 0);
        drop(repo.lock(true).unwrap());
    }
}
