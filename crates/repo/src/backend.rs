//! The bridge from coffer's [`ObjectStore`] to rustic_core's backend traits.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use crate::{
    repository::SourceFailed,
    store::{ObjectStore, StoreError},
};

/// restic's key for a repository file: `data/` is fanned out by the first two hex digits.
pub(crate) fn key_for(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".to_string(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], hex.as_str()),
        other => format!("{}/{}", other.dirname(), hex.as_str()),
    }
}

fn rustic_err(err: StoreError) -> Box<RusticError> {
    RusticError::with_source(ErrorKind::Backend, "storage operation failed", err)
}

/// Records the first failure of any stream being backed up. rustic's archiver logs a failing
/// file and carries on, which would commit a snapshot without it; the gate makes the final
/// snapshot write fail instead, so a failed source never leaves a snapshot behind.
///
/// It also holds the snapshot file back instead of writing it, and notes the index files
/// written, so that the backup can write the snapshot itself once its trees carry file sizes
/// (see `sizes`).
#[derive(Debug, Default)]
pub struct SourceGate {
    failure: Mutex<Option<String>>,
    held: Mutex<Option<(Id, Bytes)>>,
    indexes: Mutex<Vec<Id>>,
}

impl SourceGate {
    /// The snapshot file rustic asked to write, if it got that far.
    pub fn take_held(&self) -> Option<(Id, Bytes)> {
        self.held.lock().unwrap().take()
    }

    /// The index files written through the gated backend.
    pub fn indexes(&self) -> Vec<Id> {
        self.indexes.lock().unwrap().clone()
    }

    pub fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
}

/// Makes initialising a repository safe against another process initialising it at the same
/// time. rustic writes a new key, then the config encrypted with that key's master key. Two
/// processes each doing so would leave two master keys, and each would then write files the
/// other cannot decrypt. The config is written only if none exists, and the process that
/// loses that race removes the key it wrote and opens the winner's repository instead.
#[derive(Debug, Default)]
pub struct InitClaim {
    keys: Mutex<Vec<Id>>,
    lost: std::sync::atomic::AtomicBool,
}

impl InitClaim {
    /// Whether another process initialised the repository first.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The config write of an initialisation that another process won.
#[derive(Debug, thiserror::Error)]
#[error("another process initialised the repository at the same time")]
pub struct InitRaced;

/// Serves rustic_core's reads and writes from one [`ObjectStore`].
#[derive(Clone)]
pub struct StoreBackend {
    store: Arc<dyn ObjectStore>,
    gate: Option<Arc<SourceGate>>,
    init: Option<Arc<InitClaim>>,
}

impl StoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            gate: None,
            init: None,
        }
    }

    /// A backend for initialising a repository: see [`InitClaim`].
    pub fn initialising(store: Arc<dyn ObjectStore>, claim: Arc<InitClaim>) -> Self {
        Self {
            store,
            gate: None,
            init: Some(claim),
        }
    }

    /// A backend that refuses to write a snapshot once `gate` has recorded a failure, and
    /// otherwise hands the snapshot to the gate instead of writing it.
    pub fn gated(store: Arc<dyn ObjectStore>, gate: Arc<SourceGate>) -> Self {
        Self {
            store,
            gate: Some(gate),
            init: None,
        }
    }
}

impl ReadBackend for StoreBackend {
    fn location(&self) -> String {
        self.store.location()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            return match self.store.read("config") {
                Ok(b) => Ok(vec![(Id::default(), b.len() as u32)]),
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(rustic_err(e)),
            };
        }
        let files = self.store.list(tpe.dirname()).map_err(rustic_err)?;
        Ok(files
            .into_iter()
            .filter_map(|(key, size)| {
                let name = key.rsplit('/').next()?;
                let id: Id = name.parse().ok()?;
                Some((id, u32::try_from(size).unwrap_or(u32::MAX)))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.store.read(&key_for(tpe, id)).map_err(rustic_err)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.store
            .read_range(&key_for(tpe, id), offset.into(), length.into())
            .map_err(rustic_err)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        key_for(tpe, id)
    }
}

impl WriteBackend for StoreBackend {
    fn create(&self) -> RusticResult<()> {
        self.store.create().map_err(rustic_err)
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        if let Some(gate) = &self.gate {
            match tpe {
                FileType::Snapshot => {
                    if let Some(why) = gate.failure() {
                        return Err(RusticError::with_source(
                            ErrorKind::InputOutput,
                            "the backup source failed; the snapshot is not written",
                            SourceFailed(why),
                        ));
                    }
                    let body = Bytes::from(content.slice().concat());
                    *gate.held.lock().unwrap() = Some((*id, body));
                    return Ok(());
                }
                FileType::Index => gate.indexes.lock().unwrap().push(*id),
                _ => {}
            }
        }
        if let Some(claim) = &self.init {
            match tpe {
                FileType::Key => claim.keys.lock().unwrap().push(*id),
                FileType::Config => {
                    let key = key_for(tpe, id);
                    let ours = content.slice().concat();
                    // Reading it back catches a store that ignored the condition and let a
                    // concurrent initialisation overwrite ours.
                    if self
                        .store
                        .write_new(&key, content.slice())
                        .map_err(rustic_err)?
                        && self.store.read(&key).map_err(rustic_err)? == ours
                    {
                        return Ok(());
                    }
                    claim.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    for k in claim.keys.lock().unwrap().drain(..) {
                        self.store
                            .delete(&key_for(FileType::Key, &k))
                            .map_err(rustic_err)?;
                    }
                    return Err(RusticError::with_source(
                        ErrorKind::Backend,
                        "the repository was initialised concurrently",
                        InitRaced,
                    ));
                }
                _ => {}
            }
        }
        self.store
            .write(&key_for(tpe, id), content.slice())
            .map_err(rustic_err)
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        self.store.delete(&key_for(tpe, id)).map_err(rustic_err)
    }
}
