//! Changing a snapshot's tags the way `restic tag` does. Snapshot files are immutable (a
//! file's name is the hash of its content), so a changed snapshot is a new file: the same
//! snapshot with the new tags and `original` naming the id it had first, written before the
//! old file is deleted. The snapshot's id changes; [`Repo::find`] still finds it by the id it
//! had first (see [`SnapshotInfo::original`]).

use sha2::{Digest, Sha256};

use crate::{
    cipher::RepoCipher,
    lock::{hex, RepoLock},
    repository::{Repo, RepoError, RepoResult, SnapshotInfo},
};

impl Repo {
    /// Rewrites snapshot `id` (a full id or unique prefix) with the tags `edit` leaves. `lock`
    /// must be this repository's exclusive lock, as restic's `tag` takes: the old snapshot
    /// file is deleted, which no reader or pruner may see half done. When `edit` changes
    /// nothing the snapshot is left as it is. Returns the snapshot as it now stands (its new
    /// id when rewritten).
    pub fn retag(
        &self,
        lock: &RepoLock,
        id: &str,
        edit: &dyn Fn(&mut Vec<String>),
    ) -> RepoResult<SnapshotInfo> {
        if !lock.is_exclusive() {
            return Err(RepoError::Operation {
                location: self.location(),
                message: "changing a snapshot's tags needs the exclusive lock (internal error)"
                    .into(),
            });
        }
        let repo = self.opened()?;
        let mut snap = repo
            .get_snapshot_from_str(id, |_| true)
            .map_err(|e| self.err(e))?;
        let old: Vec<String> = snap.tags.iter().cloned().collect();
        let mut tags = old.clone();
        edit(&mut tags);
        tags.sort();
        tags.dedup();
        if tags == old {
            return Ok(SnapshotInfo::from_file(&snap));
        }
        let old_id = snap.id;
        // rustic fills `original` with the snapshot's own id when the file has none, so this
        // is the id the snapshot had when it was first written, as restic keeps it.
        snap.original = Some(snap.original.unwrap_or(old_id));
        let mut list = rustic_core::StringList::default();
        for t in tags {
            list.add(t);
        }
        snap.tags = list;
        // The id is the file's name, never part of its content.
        snap.id = Default::default();
        let json = serde_json::to_vec(&snap).map_err(|e| RepoError::Operation {
            location: self.location(),
            message: format!("cannot serialise snapshot {id}: {e}"),
        })?;
        // Written as rustic writes it (save_snapshots), but hashed here: the new id is needed
        // and save_snapshots does not return it.
        let sealed = RepoCipher::new(&self.key).seal_file(&json, self.compress);
        let new_id: [u8; 32] = Sha256::digest(&sealed).into();
        let key = format!("snapshots/{}", hex(&new_id));
        self.store.write(&key, &[sealed.into()])?;
        repo.delete_snapshots(&[old_id]).map_err(|e| self.err(e))?;
        snap.id = rustic_core::Id::new(new_id).into();
        Ok(SnapshotInfo::from_file(&snap))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{LocalStore, Repo, SnapshotMeta, SnapshotSelector, SourceFile};

    const PASSWORD: &str = "retag-test-password";

    fn restic(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("restic")
            .arg("-r")
            .arg(dir)
            .arg("--no-cache")
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .expect("restic is installed (scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "restic {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_retagged_snapshot_is_a_new_file_restic_reads_and_the_old_id_still_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (repo, _) = Repo::open_or_init(Arc::new(store), PASSWORD).unwrap();
        let meta = SnapshotMeta {
            host: "host-0".into(),
            tags: vec!["gtid=0-1-5".into(), "verified=old".into()],
            ..Default::default()
        };
        let data = b"CREATE TABLE t (id INT);\n".repeat(1000);
        let file = SourceFile::in_memory("/dumpfile.sql", data.clone());
        let first = repo.backup(vec![file], &meta).unwrap();

        let shared = repo.lock(false).unwrap();
        assert!(
            repo.retag(&shared, &first.id, &|_| {}).is_err(),
            "a shared lock is refused"
        );
        drop(shared);
        let lock = repo.lock(true).unwrap();
        let same = repo.retag(&lock, &first.id, &|_| {}).unwrap();
        assert_eq!(same.id, first.id, "no change, no new file");

        let edit = |t: &mut Vec<String>| {
            t.retain(|x| !x.starts_with("verified="));
            t.push("verified".into());
            t.push("verified=2024-01-02T03:04:05Z".into());
        };
        let tagged = repo.retag(&lock, &first.id[..8], &edit).unwrap();
        assert_ne!(tagged.id, first.id);
        assert_eq!(tagged.original.as_deref(), Some(first.id.as_str()));
        assert_eq!(
            tagged.tags,
            ["gtid=0-1-5", "verified", "verified=2024-01-02T03:04:05Z"]
        );
        assert_eq!(tagged.unix_time, first.unix_time);
        assert_eq!(tagged.paths, first.paths);
        // Tagged again: `original` still names the first id.
        let again = repo
            .retag(&lock, &tagged.id, &|t| t.push("again".into()))
            .unwrap();
        assert_eq!(again.original.as_deref(), Some(first.id.as_str()));
        drop(lock);

        let snaps = repo.snapshots().unwrap();
        assert_eq!(snaps.len(), 1, "the old files are gone: {snaps:?}");
        assert_eq!(snaps[0].id, again.id);
        let found = repo
            .find(&SnapshotSelector {
                snapshot: first.id[..10].into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found.id, again.id, "the first id still names it");
        let mut out = Vec::new();
        repo.dump(&again.id, "/dumpfile.sql", &mut out).unwrap();
        assert_eq!(out, data);

        // restic reads the new file: the tags, `original`, and the data behind it.
        let json: serde_json::Value =
            serde_json::from_str(&restic(dir.path(), &["snapshots", "--json"])).unwrap();
        let s = &json[0];
        assert_eq!(s["id"], again.id.as_str(), "{json:#}");
        assert_eq!(s["original"], first.id.as_str(), "{json:#}");
        let tags: Vec<&str> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(tags.contains(&"verified"), "{json:#}");
        let dumped = std::process::Command::new("restic")
            .arg("-r")
            .arg(dir.path())
            .args(["--no-cache", "dump", &again.id, "/dumpfile.sql"])
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(dumped.status.success());
        assert_eq!(dumped.stdout, data);
        restic(dir.path(), &["check", "--read-data"]);
    }
}
