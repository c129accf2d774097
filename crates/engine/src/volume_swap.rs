//! Putting a prepared data directory in place when the data directory is the root of a volume
//! (a replica's PVC mounted at the server's datadir, as on Kubernetes): a mount point cannot
//! be renamed, so the new tree is built inside the volume and its entries take the place of
//! the old ones, entry by entry, under a journal.
//!
//! Layout inside the volume: `.coffer-restore/` (the new tree), `.coffer-old/` (the previous
//! entries, moved aside), `.coffer-swap` (journal: the new tree is complete; moving the old
//! entries aside), `.coffer-swap-2` (journal: the old entries are all aside; moving the new
//! ones in). Nothing of the previous data is deleted before the new tree is wholly in place;
//! a restore interrupted at any point is finished or undone by the next one's
//! [`recover`](VolumeSwap::recover).

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use crate::swap::{remove_if_present, sync_dir, sync_tree};

const STAGING: &str = ".coffer-restore";
const OLD: &str = ".coffer-old";
const JOURNAL_ASIDE: &str = ".coffer-swap";
const JOURNAL_IN: &str = ".coffer-swap-2";

pub struct VolumeSwap {
    dir: PathBuf,
}

/// The names in `dir` that are data: not this module's own entries, nor the `lost+found` of
/// a freshly formatted volume (which belongs to the filesystem and stays where it is).
fn data_entries(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let text = name.to_string_lossy();
        if !text.starts_with(".coffer-") && text != "lost+found" {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl VolumeSwap {
    pub fn new(dir: &Path) -> VolumeSwap {
        VolumeSwap {
            dir: dir.to_path_buf(),
        }
    }

    /// Where the new data directory is built (inside the volume).
    pub fn staging(&self) -> PathBuf {
        self.dir.join(STAGING)
    }

    /// Whether the volume holds no data (this module's leftovers aside).
    pub fn is_empty(&self) -> bool {
        data_entries(&self.dir).map_or(true, |e| e.is_empty())
    }

    fn err(&self, what: &str, e: io::Error) -> String {
        format!(
            "data directory {} (a volume): cannot {what}: {e}",
            self.dir.display()
        )
    }

    fn mark(&self, journal: &str) -> Result<(), String> {
        File::create(self.dir.join(journal))
            .and_then(|f| f.sync_all())
            .and_then(|_| sync_dir(&self.dir))
            .map_err(|e| self.err(&format!("write the journal {journal}"), e))
    }

    /// Moves every data entry aside into `.coffer-old` (those already there stay).
    fn move_old_aside(&self) -> Result<(), String> {
        let old = self.dir.join(OLD);
        std::fs::create_dir_all(&old).map_err(|e| self.err("create .coffer-old", e))?;
        for name in data_entries(&self.dir).map_err(|e| self.err("list", e))? {
            std::fs::rename(self.dir.join(&name), old.join(&name))
                .map_err(|e| self.err(&format!("move {name:?} aside"), e))?;
        }
        sync_dir(&old)
            .and_then(|_| sync_dir(&self.dir))
            .map_err(|e| self.err("fsync", e))?;
        // The second journal replaces the first in one rename: at every instant one of them
        // says which way the swap goes.
        let (aside, moving_in) = (self.dir.join(JOURNAL_ASIDE), self.dir.join(JOURNAL_IN));
        match std::fs::rename(&aside, &moving_in) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                File::create(&moving_in)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| self.err("write the journal", e))?;
            }
            Err(e) => return Err(self.err("advance the journal", e)),
        }
        sync_dir(&self.dir).map_err(|e| self.err("fsync", e))
    }

    /// Moves the staged entries into the volume, then removes the journal and the old data.
    fn move_new_in(&self) -> Result<(), String> {
        let staging = self.staging();
        if staging.exists() {
            for name in data_entries(&staging).map_err(|e| self.err("list the staged tree", e))? {
                std::fs::rename(staging.join(&name), self.dir.join(&name))
                    .map_err(|e| self.err(&format!("move {name:?} into place"), e))?;
            }
        }
        sync_dir(&self.dir).map_err(|e| self.err("fsync", e))?;
        remove_if_present(&self.dir.join(JOURNAL_IN))
            .and_then(|_| sync_dir(&self.dir))
            .map_err(|e| self.err("remove the journal", e))?;
        self.clean()
    }

    fn clean(&self) -> Result<(), String> {
        for p in [self.dir.join(OLD), self.staging()] {
            remove_if_present(&p).map_err(|e| self.err(&format!("remove {}", p.display()), e))?;
        }
        sync_dir(&self.dir).map_err(|e| self.err("fsync", e))
    }

    /// Finishes or undoes what an interrupted restore left in the volume. Returns what it
    /// found and did (also logged).
    pub fn recover(&self) -> Result<Vec<String>, String> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let d = self.dir.display();
        let mut did = Vec::new();
        if self.dir.join(JOURNAL_IN).exists() {
            did.push(format!(
                "{d}: an interrupted restore had moved the previous data aside; moving the rest \
                 of the restored data in"
            ));
            self.move_new_in()?;
        } else if self.dir.join(JOURNAL_ASIDE).exists() {
            did.push(format!(
                "{d}: an interrupted restore had a complete restored copy and was moving the \
                 previous data aside; finishing the swap"
            ));
            self.move_old_aside()?;
            self.move_new_in()?;
        } else {
            // No journal: the staged tree was never complete, so it goes (entries move aside
            // only under a journal), or only the clean-up was left.
            let leftovers: Vec<PathBuf> = [self.dir.join(OLD), self.staging()]
                .into_iter()
                .filter(|p| p.exists())
                .collect();
            if !leftovers.is_empty() {
                did.push(format!(
                    "{d}: removing an interrupted restore's leftovers ({})",
                    leftovers
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                self.clean()?;
            }
        }
        for m in &did {
            tracing::warn!("{m}");
        }
        Ok(did)
    }

    /// Makes the staged tree durable, then puts its entries in place of the volume's.
    pub fn commit(&self) -> Result<(), String> {
        sync_tree(&self.staging()).map_err(|e| self.err("fsync the staged tree", e))?;
        self.mark(JOURNAL_ASIDE)?;
        crate::swap::fault_point("staged");
        self.move_old_aside()?;
        crate::swap::fault_point("moved-aside");
        self.move_new_in()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(marker: &str) -> (tempfile::TempDir, VolumeSwap) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("marker"), marker).unwrap();
        std::fs::create_dir(t.path().join("db")).unwrap();
        std::fs::write(t.path().join("db/t.ibd"), marker).unwrap();
        let s = VolumeSwap::new(t.path());
        (t, s)
    }

    fn stage(s: &VolumeSwap, marker: &str) {
        let st = s.staging();
        std::fs::create_dir_all(st.join("db")).unwrap();
        std::fs::write(st.join("marker"), marker).unwrap();
        std::fs::write(st.join("db/t.ibd"), marker).unwrap();
    }

    fn listing(t: &tempfile::TempDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn content(t: &tempfile::TempDir) -> (String, String) {
        (
            std::fs::read_to_string(t.path().join("marker")).unwrap(),
            std::fs::read_to_string(t.path().join("db/t.ibd")).unwrap(),
        )
    }

    #[test]
    fn commit_replaces_the_volumes_entries_and_leaves_nothing_else() {
        let (t, s) = volume("old");
        assert!(!s.is_empty());
        stage(&s, "new");
        s.commit().unwrap();
        assert_eq!(content(&t), ("new".into(), "new".into()));
        assert_eq!(listing(&t), vec!["db", "marker"]);
    }

    #[test]
    fn an_incomplete_staging_is_dropped_and_the_old_data_stays() {
        let (t, s) = volume("old");
        stage(&s, "half");
        assert!(!s.recover().unwrap().is_empty());
        assert_eq!(content(&t), ("old".into(), "old".into()));
        assert_eq!(listing(&t), vec!["db", "marker"]);
    }

    #[test]
    fn a_swap_interrupted_while_moving_aside_is_finished() {
        let (t, s) = volume("old");
        stage(&s, "new");
        s.mark(JOURNAL_ASIDE).unwrap();
        // One entry had gone aside when the process died.
        std::fs::create_dir_all(t.path().join(OLD)).unwrap();
        std::fs::rename(t.path().join("marker"), t.path().join(OLD).join("marker")).unwrap();
        s.recover().unwrap();
        assert_eq!(content(&t), ("new".into(), "new".into()));
        assert_eq!(listing(&t), vec!["db", "marker"]);
    }

    #[test]
    fn a_swap_interrupted_while_moving_in_is_finished() {
        let (t, s) = volume("old");
        stage(&s, "new");
        s.mark(JOURNAL_ASIDE).unwrap();
        s.move_old_aside().unwrap();
        assert!(t.path().join(JOURNAL_IN).exists() && !t.path().join(JOURNAL_ASIDE).exists());
        // One new entry was in place when the process died.
        std::fs::rename(s.staging().join("marker"), t.path().join("marker")).unwrap();
        s.recover().unwrap();
        assert_eq!(content(&t), ("new".into(), "new".into()));
        assert_eq!(listing(&t), vec!["db", "marker"]);
    }

    #[test]
    fn an_empty_volume_takes_the_new_tree() {
        let t = tempfile::tempdir().unwrap();
        let s = VolumeSwap::new(t.path());
        assert!(s.is_empty());
        stage(&s, "new");
        s.commit().unwrap();
        assert_eq!(content(&t), ("new".into(), "new".into()));
    }

    #[test]
    fn a_fresh_filesystems_lost_and_found_is_not_data_and_stays() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("lost+found")).unwrap();
        let s = VolumeSwap::new(t.path());
        assert!(s.is_empty());
        stage(&s, "new");
        s.commit().unwrap();
        assert_eq!(listing(&t), vec!["db", "lost+found", "marker"]);
    }
}
