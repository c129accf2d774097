//! The embedded resource store: one SQLite file under COFFER_HOME (directory 0700, files
//! 0600, since Secrets live in it). Several coffer processes may use it at once (the server
//! and a CLI in another terminal): SQLite's WAL mode and a busy timeout make that safe.

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use coffer_api::{backup::SessionPhase, Kind, Resource};
use coffer_engine::CatalogError;
use rusqlite::{params, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the coffer home {path}: {reason}")]
    Home { path: PathBuf, reason: String },
    #[error("the store at {path} failed: {reason}")]
    Sql { path: PathBuf, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} was changed by someone else since it was read")]
    Conflict(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("stored {what} cannot be read: {reason}")]
    Corrupt { what: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl ApplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }
    }
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<rusqlite::Connection>,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn label(kind: Kind, ns: &str, name: &str) -> String {
    if kind.cluster_scoped() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{ns}/{name}")
    }
}

impl Store {
    /// Opens (creating if needed) the store under `home`.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        let herr = |reason: String| StoreError::Home {
            path: home.to_path_buf(),
            reason,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(|e| herr(e.to_string()))?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| herr(e.to_string()))?;
        let path = home.join("coffer.db");
        let sql = |e: rusqlite::Error| StoreError::Sql {
            path: path.clone(),
            reason: e.to_string(),
        };
        // Files SQLite creates (the database, -wal, -shm) inherit this process's umask.
        let old = unsafe { libc::umask(0o077) };
        let conn = rusqlite::Connection::open(&path);
        unsafe { libc::umask(old) };
        let conn = conn.map_err(sql)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| herr(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS resources (
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL,
                revision INTEGER NOT NULL,
                PRIMARY KEY (kind, namespace, name)
            );
            CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
            INSERT OR IGNORE INTO revision (id, value) VALUES (1, 0);",
        )
        .map_err(sql)?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// A counter that grows with every change; watchers compare it to notice changes.
    pub fn revision(&self) -> Result<i64, StoreError> {
        let c = self.conn.lock().unwrap();
        c.query_row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    fn bump(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
        tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", [])?;
        tx.query_row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))
    }

    /// A stored resource; its resourceVersion is the store revision of its last write, which
    /// every write to it changes (homes written before versions existed already have it).
    fn decode(kind: Kind, body: &str, revision: i64) -> Result<Resource, StoreError> {
        let v: serde_json::Value = serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
            what: kind.to_string(),
            reason: e.to_string(),
        })?;
        let mut r = Resource::from_json(kind, v).map_err(|p| StoreError::Corrupt {
            what: kind.to_string(),
            reason: p.to_string(),
        })?;
        r.meta_mut().resource_version = Some(revision.to_string());
        Ok(r)
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Option<Resource>, StoreError> {
        let ns = if kind.cluster_scoped() { "" } else { ns };
        let c = self.conn.lock().unwrap();
        let body = body_of(&c, kind, ns, name).map_err(|e| self.sql(e))?;
        body.map(|(b, rev)| Self::decode(kind, &b, rev)).transpose()
    }

    /// Resources of a kind, in one namespace or (None) all, ordered by namespace and name.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        let c = self.conn.lock().unwrap();
        let mut stmt = c
            .prepare(
                "SELECT body, revision FROM resources
                 WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name",
            )
            .map_err(|e| self.sql(e))?;
        let ns = if kind.cluster_scoped() { None } else { ns };
        let rows = stmt
            .query_map(params![kind.as_str(), ns], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (b, rev) = row.map_err(|e| self.sql(e))?;
            out.push(Self::decode(kind, &b, rev)?);
        }
        Ok(out)
    }

    /// Creates or updates a resource from a manifest. Status and server-set metadata (uid,
    /// creationTimestamp) are kept; generation grows when the spec changes.
    pub fn apply(&self, mut res: Resource) -> Result<ApplyOutcome, StoreError> {
        let kind = res.kind();
        let ns = res.namespace().to_string();
        let name = res.name().to_string();
        if !kind.cluster_scoped() {
            res.meta_mut().namespace = Some(ns.clone());
        } else {
            res.meta_mut().namespace = None;
        }
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().map_err(|e| self.sql(e))?;
        let existing = body_of(&tx, kind, &ns, &name).map_err(|e| self.sql(e))?;
        let outcome;
        // The version is the store's own, never one a manifest carries.
        res.meta_mut().resource_version = None;
        let mut new = res.to_json();
        match existing {
            None => {
                let m = new["metadata"].as_object_mut().expect("metadata object");
                m.insert("uid".into(), new_uid().into());
                m.insert("creationTimestamp".into(), now().into());
                m.insert("generation".into(), 1.into());
                outcome = ApplyOutcome::Created;
            }
            Some((old, _)) => {
                let old: serde_json::Value =
                    serde_json::from_str(&old).map_err(|e| StoreError::Corrupt {
                        what: label(kind, &ns, &name),
                        reason: e.to_string(),
                    })?;
                let spec_of = |v: &serde_json::Value| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("status");
                        o.remove("metadata");
                    }
                    v
                };
                let meta_of = |v: &serde_json::Value, keys: &[&str]| {
                    keys.iter()
                        .map(|k| v["metadata"].get(*k).cloned())
                        .collect::<Vec<_>>()
                };
                let user_meta = ["labels", "annotations", "ownerReferences"];
                let spec_changed = spec_of(&old) != spec_of(&new);
                let meta_changed = meta_of(&old, &user_meta) != meta_of(&new, &user_meta);
                let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let m = new["metadata"].as_object_mut().expect("metadata object");
                for k in ["uid", "creationTimestamp"] {
                    if let Some(v) = old["metadata"].get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                m.insert(
                    "generation".into(),
                    (if spec_changed { gen + 1 } else { gen }).into(),
                );
                if let Some(st) = old.get("status") {
                    new.as_object_mut()
                        .expect("object")
                        .insert("status".into(), st.clone());
                } else if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
                outcome = if spec_changed || meta_changed {
                    ApplyOutcome::Configured
                } else {
                    ApplyOutcome::Unchanged
                };
                if outcome == ApplyOutcome::Unchanged {
                    return Ok(outcome);
                }
            }
        }
        let rev = Self::bump(&tx).map_err(|e| self.sql(e))?;
        tx.execute(
            "INSERT OR REPLACE INTO resources (kind, namespace, name, body, revision)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind.as_str(), ns, name, new.to_string(), rev],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(outcome)
    }

    /// Creates a resource that must not exist yet (sessions). Its status is kept as given.
    pub fn create(&self, mut res: Resource) -> Result<Resource, StoreError> {
        let kind = res.kind();
        let ns = res.namespace().to_string();
        let name = res.name().to_string();
        {
            let m = res.meta_mut();
            if !kind.cluster_scoped() {
                m.namespace = Some(ns.clone());
            }
            m.uid = Some(new_uid());
            m.creation_timestamp.get_or_insert_with(now);
            m.generation = Some(1);
            m.resource_version = None;
        }
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().map_err(|e| self.sql(e))?;
        let rev = Self::bump(&tx).map_err(|e| self.sql(e))?;
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO resources (kind, namespace, name, body, revision)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind.as_str(), ns, name, res.to_json().to_string(), rev],
            )
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(StoreError::Exists(label(kind, &ns, &name)));
        }
        tx.commit().map_err(|e| self.sql(e))?;
        res.meta_mut().resource_version = Some(rev.to_string());
        Ok(res)
    }

    /// Replaces only the status of an existing resource. When `res` carries a resourceVersion
    /// that is no longer the stored one, nothing is written: Conflict. Returns the resource as
    /// stored, with its new version.
    pub fn patch_status(&self, res: &Resource) -> Result<Resource, StoreError> {
        let kind = res.kind();
        let ns = res.namespace().to_string();
        let name = res.name().to_string();
        let status = res.to_json().get("status").cloned();
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().map_err(|e| self.sql(e))?;
        let old = body_of(&tx, kind, &ns, &name).map_err(|e| self.sql(e))?;
        let Some((old, old_rev)) = old else {
            return Err(StoreError::NotFound(label(kind, &ns, &name)));
        };
        if res
            .meta()
            .resource_version
            .as_ref()
            .is_some_and(|v| *v != old_rev.to_string())
        {
            return Err(StoreError::Conflict(label(kind, &ns, &name)));
        }
        let mut body: serde_json::Value =
            serde_json::from_str(&old).map_err(|e| StoreError::Corrupt {
                what: label(kind, &ns, &name),
                reason: e.to_string(),
            })?;
        let o = body.as_object_mut().expect("object");
        match status {
            Some(s) => {
                o.insert("status".into(), s);
            }
            None => {
                o.remove("status");
            }
        }
        let rev = Self::bump(&tx).map_err(|e| self.sql(e))?;
        tx.execute(
            "UPDATE resources SET body = ?4, revision = ?5
             WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            params![kind.as_str(), ns, name, body.to_string(), rev],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Self::decode(kind, &body.to_string(), rev)
    }

    /// Takes a Pending (or new) session for running: sets its phase to Running only if nobody
    /// else has. Returns whether this caller got it.
    pub fn claim_session(&self, kind: Kind, ns: &str, name: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().map_err(|e| self.sql(e))?;
        let old = body_of(&tx, kind, ns, name).map_err(|e| self.sql(e))?;
        let Some((old, _)) = old else {
            return Ok(false);
        };
        let mut body: serde_json::Value =
            serde_json::from_str(&old).map_err(|e| StoreError::Corrupt {
                what: label(kind, ns, name),
                reason: e.to_string(),
            })?;
        let phase_now = SessionPhase::parse(body["status"]["phase"].as_str().unwrap_or(""));
        if phase_now != SessionPhase::Pending {
            return Ok(false);
        }
        let o = body.as_object_mut().expect("object");
        let st = o.entry("status").or_insert_with(|| serde_json::json!({}));
        st["phase"] = SessionPhase::Running.as_str().into();
        let rev = Self::bump(&tx).map_err(|e| self.sql(e))?;
        tx.execute(
            "UPDATE resources SET body = ?4, revision = ?5
             WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            params![kind.as_str(), ns, name, body.to_string(), rev],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(true)
    }

    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<bool, StoreError> {
        let ns = if kind.cluster_scoped() { "" } else { ns };
        let mut c = self.conn.lock().unwrap();
        let tx = c.transaction().map_err(|e| self.sql(e))?;
        let n = tx
            .execute(
                "DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind.as_str(), ns, name],
            )
            .map_err(|e| self.sql(e))?;
        if n > 0 {
            Self::bump(&tx).map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(n > 0)
    }
}

/// The stored JSON of one resource, and the revision of its last write.
fn body_of(
    c: &rusqlite::Connection,
    kind: Kind,
    ns: &str,
    name: &str,
) -> rusqlite::Result<Option<(String, i64)>> {
    c.query_row(
        "SELECT body, revision FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![kind.as_str(), ns, name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

impl coffer_engine::Catalog for Store {
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Resource>, CatalogError> {
        Store::get(self, kind, namespace, name).map_err(|e| CatalogError::Other {
            message: e.to_string(),
        })
    }

    fn patch_status(&self, res: &Resource) -> Result<Resource, CatalogError> {
        let (kind, namespace, name) = (
            res.kind(),
            res.namespace().to_string(),
            res.name().to_string(),
        );
        Store::patch_status(self, res).map_err(|e| match e {
            StoreError::NotFound(_) => CatalogError::NotFound {
                kind,
                namespace,
                name,
            },
            StoreError::Conflict(_) => CatalogError::Conflict {
                kind,
                namespace,
                name,
            },
            other => CatalogError::Other {
                message: other.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_api::parse_manifests;
    use std::os::unix::fs::MetadataExt;

    fn secret(pw: &str) -> Resource {
        parse_manifests(
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: demo}}\nstringData: {{RESTIC_PASSWORD: {pw}}}\n"
            ),
            "t",
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn store_is_private_and_applies_idempotently() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().join("h");
        let store = Store::open(&h).unwrap();
        assert_eq!(std::fs::metadata(&h).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(store.path()).unwrap().mode() & 0o777,
            0o600
        );

        assert_eq!(store.apply(secret("a")).unwrap(), ApplyOutcome::Created);
        assert_eq!(store.apply(secret("a")).unwrap(), ApplyOutcome::Unchanged);
        assert_eq!(store.apply(secret("b")).unwrap(), ApplyOutcome::Configured);
        let Some(Resource::Secret(s)) = store.get(Kind::Secret, "demo", "s").unwrap() else {
            panic!("secret missing")
        };
        assert_eq!(s.get("RESTIC_PASSWORD").as_deref(), Some("b"));
        assert_eq!(s.metadata.generation, Some(2));
        assert!(store.get(Kind::Secret, "other", "s").unwrap().is_none());
        assert!(store.delete(Kind::Secret, "demo", "s").unwrap());
        assert!(!store.delete(Kind::Secret, "demo", "s").unwrap());
    }

    /// coffer's own kind is stored, listed and its status kept like Stash's.
    #[test]
    fn a_binlog_archive_round_trips_with_its_status() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(&home.path().join("h")).unwrap();
        let archive = parse_manifests(
            "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\n\
             metadata: {name: a, namespace: demo}\n\
             spec: {appBinding: {name: db}, repository: {name: r}, segmentMaxSize: 1048576}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        assert_eq!(store.apply(archive).unwrap(), ApplyOutcome::Created);
        let Some(Resource::BinlogArchive(mut a)) =
            store.get(Kind::BinlogArchive, "demo", "a").unwrap()
        else {
            panic!("archive missing")
        };
        assert_eq!(a.spec.segment_max_size.as_deref(), Some("1048576"));
        let st = a.status_mut();
        st.last_archived_gtid = Some("0-1-42,100-21-7".parse().unwrap());
        st.phase = Some(coffer_api::archive::ArchivePhase::Streaming);
        store
            .patch_status(&Resource::BinlogArchive(a.clone()))
            .unwrap();
        let listed = store.list(Kind::BinlogArchive, Some("demo")).unwrap();
        let [Resource::BinlogArchive(back)] = listed.as_slice() else {
            panic!("{listed:?}")
        };
        let st = back.status.clone().unwrap();
        assert_eq!(
            st.last_archived_gtid.unwrap().to_string(),
            "0-1-42,100-21-7"
        );
        assert_eq!(st.phase, Some(coffer_api::archive::ArchivePhase::Streaming));
    }

    #[test]
    fn a_session_is_claimed_once() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let bs = parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\nmetadata: {name: b-1}\nspec: {invoker: {kind: BackupConfiguration, name: b}}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        store.create(bs.clone()).unwrap();
        assert!(matches!(store.create(bs), Err(StoreError::Exists(_))));
        assert!(store
            .claim_session(Kind::BackupSession, "default", "b-1")
            .unwrap());
        assert!(!store
            .claim_session(Kind::BackupSession, "default", "b-1")
            .unwrap());
    }

    #[test]
    fn a_status_written_over_a_newer_version_is_a_conflict() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let bs = parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\nmetadata: {name: b-1, resourceVersion: '999'}\nspec: {invoker: {kind: BackupConfiguration, name: b}}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        let created = store.create(bs).unwrap();
        let read = store
            .get(Kind::BackupSession, "default", "b-1")
            .unwrap()
            .unwrap();
        assert_eq!(
            read.meta().resource_version,
            created.meta().resource_version
        );
        assert_ne!(read.meta().resource_version.as_deref(), Some("999"));
        let with_error = |mut r: Resource, e: &str| {
            if let Resource::BackupSession(b) = &mut r {
                b.status_mut().error = Some(e.into());
            }
            r
        };
        let written = store
            .patch_status(&with_error(read.clone(), "first"))
            .unwrap();
        assert_ne!(
            written.meta().resource_version,
            read.meta().resource_version
        );
        assert!(matches!(
            store.patch_status(&with_error(read.clone(), "stale")),
            Err(StoreError::Conflict(_))
        ));
        // Without a version the write is unconditional.
        let mut any = with_error(read, "last");
        any.meta_mut().resource_version = None;
        store.patch_status(&any).unwrap();
        let Some(Resource::BackupSession(b)) =
            store.get(Kind::BackupSession, "default", "b-1").unwrap()
        else {
            panic!("missing")
        };
        assert_eq!(b.status.unwrap().error.as_deref(), Some("last"));
        // The version is not kept in the stored body.
        let c = store.conn.lock().unwrap();
        let (body, _) = body_of(&c, Kind::BackupSession, "default", "b-1")
            .unwrap()
            .unwrap();
        assert!(!body.contains("resourceVersion"), "{body}");
    }
}
