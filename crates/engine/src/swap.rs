//! Putting a prepared data directory in place of the current one so that a crash at any
//! instant leaves either a complete data directory or leftovers that the next restore resolves.
//!
//! The prepared tree is built beside the target (`.{name}.coffer-restore`), made durable file
//! by file, and recorded in a journal (`.{name}.coffer-swap`: the device and inode of the new
//! tree and of the directory it replaces). Then:
//! - where the filesystem can (ext4, xfs, btrfs, tmpfs), `renameat2(RENAME_EXCHANGE)` swaps the
//!   two trees in one step: the target path names the complete old or the complete new tree at
//!   every instant, and the old one ends up at the staging path to be removed;
//! - elsewhere two renames (target aside to `.{name}.coffer-old`, staging into place) leave a
//!   moment without a target; the journal tells the next restore that the new tree was
//!   complete, so it can roll either way and never deletes the only copy of the data.
//!
//! The journal goes last, after the leftovers. A restore that finds one compares inodes to
//! learn how far the interrupted swap got, and says in its log what it found and did.

use std::{
    fs::File,
    io::{self, Write},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// A filesystem object's identity, which a rename keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(p: &Path) -> io::Result<Option<Identity>> {
        match std::fs::symlink_metadata(p) {
            Ok(m) => Ok(Some(Identity {
                dev: m.dev(),
                ino: m.ino(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn to_text(self) -> String {
        format!("{}:{}", self.dev, self.ino)
    }

    fn parse(s: &str) -> Option<Identity> {
        let (d, i) = s.split_once(':')?;
        Some(Identity {
            dev: d.parse().ok()?,
            ino: i.parse().ok()?,
        })
    }
}

/// What the journal records: the complete new tree and the directory it replaces (none when
/// the target did not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Journal {
    new: Identity,
    old: Option<Identity>,
}

const JOURNAL_HEADER: &str = "coffer data directory swap v1";

impl Journal {
    fn to_text(self) -> String {
        format!(
            "{JOURNAL_HEADER}\nnew {}\nold {}\n",
            self.new.to_text(),
            self.old.map_or("none".into(), Identity::to_text)
        )
    }

    fn parse(text: &str) -> Option<Journal> {
        let mut lines = text.lines();
        if lines.next()? != JOURNAL_HEADER {
            return None;
        }
        let new = Identity::parse(lines.next()?.strip_prefix("new ")?)?;
        let old = match lines.next()?.strip_prefix("old ")? {
            "none" => None,
            s => Some(Identity::parse(s)?),
        };
        Some(Journal { new, old })
    }
}

/// Test-only crash points: a debug build run with `COFFER_FAULT_AT=swap:<step>` kills itself
/// with SIGKILL there, as a crash or an OOM kill would. Release builds have none.
pub(crate) fn fault_point(step: &str) {
    #[cfg(debug_assertions)]
    {
        let at = std::env::var("COFFER_FAULT_AT").unwrap_or_default();
        if at.strip_prefix("swap:") == Some(step) {
            tracing::warn!("COFFER_FAULT_AT: killing this process at swap step `{step}`");
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

/// Whether to use the two-rename protocol even where RENAME_EXCHANGE works (debug builds
/// only, so that tests reach it on any filesystem).
fn exchange_disabled() -> bool {
    cfg!(debug_assertions) && std::env::var_os("COFFER_SWAP_NO_EXCHANGE").is_some()
}

pub(crate) fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

/// fsyncs every file and directory below `root` (and `root`), so that the tree is on disk
/// before any rename makes it the data directory. Symlinks are not followed.
pub(crate) fn sync_tree(root: &Path) -> io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let t = entry.file_type()?;
            if t.is_dir() {
                dirs.push(entry.path());
            } else if t.is_file() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        sync_dir(&d)?;
    }
    Ok(())
}

fn at(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let (a, b) = (at(a)?, at(b)?);
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The errors by which a filesystem (or kernel) says it cannot exchange.
fn exchange_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Removes a tree; the fault point sits after its first entry has gone, where a crash leaves a
/// half-removed tree.
fn remove_tree(p: &Path) -> io::Result<()> {
    if let Some(first) = std::fs::read_dir(p)?.next() {
        let first = first?;
        if first.file_type()?.is_dir() {
            std::fs::remove_dir_all(first.path())?;
        } else {
            std::fs::remove_file(first.path())?;
        }
        fault_point("removing");
    }
    std::fs::remove_dir_all(p)
}

/// Removes a file or a whole directory; whether there was one.
pub(crate) fn remove_if_present(p: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map(|_| true),
        Ok(_) => std::fs::remove_file(p).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// One data directory and the paths beside it that a restore uses.
pub struct DirSwap {
    dir: PathBuf,
    parent: PathBuf,
    staging: PathBuf,
    old: PathBuf,
    journal: PathBuf,
    /// The journal being written, renamed over `journal` once it is on disk.
    journal_new: PathBuf,
}

impl DirSwap {
    pub fn new(dir: &Path) -> DirSwap {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "datadir".into());
        DirSwap {
            dir: dir.to_path_buf(),
            staging: parent.join(format!(".{base}.coffer-restore")),
            old: parent.join(format!(".{base}.coffer-old")),
            journal: parent.join(format!(".{base}.coffer-swap")),
            journal_new: parent.join(format!(".{base}.coffer-swap-new")),
            parent,
        }
    }

    /// Where the new data directory is built.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    fn ctx(&self, what: &str, p: &Path, e: io::Error) -> String {
        format!(
            "data directory {}: cannot {what} {}: {e}",
            self.dir.display(),
            p.display()
        )
    }

    fn sync_parent(&self) -> Result<(), String> {
        sync_dir(&self.parent).map_err(|e| self.ctx("fsync", &self.parent, e))
    }

    fn write_journal(&self, j: Journal) -> Result<(), String> {
        let tmp = &self.journal_new;
        let write = || -> io::Result<()> {
            let mut f = File::create(tmp)?;
            f.write_all(j.to_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(tmp, &self.journal)
        };
        write().map_err(|e| self.ctx("write the swap journal", &self.journal, e))?;
        self.sync_parent()
    }

    fn drop_journal(&self) -> Result<(), String> {
        remove_if_present(&self.journal)
            .map_err(|e| self.ctx("remove the swap journal", &self.journal, e))?;
        self.sync_parent()
    }

    fn remove(&self, p: &Path) -> Result<bool, String> {
        remove_if_present(p).map_err(|e| self.ctx("remove", p, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), String> {
        std::fs::rename(from, to).map_err(|e| {
            format!(
                "data directory {}: cannot rename {} to {}: {e}",
                self.dir.display(),
                from.display(),
                to.display()
            )
        })
    }

    /// Resolves what an interrupted restore of this directory left behind, before a new one
    /// starts: the data directory ends up complete (old or new) and the leftovers gone.
    /// Returns what it found and did (also logged); empty when there was nothing.
    pub fn recover(&self) -> Result<Vec<String>, String> {
        // A journal that was never completed: nothing was renamed after it.
        self.remove(&self.journal_new)?;
        let journal_text = match std::fs::read_to_string(&self.journal) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.ctx("read the swap journal", &self.journal, e)),
        };
        let id = |p: &Path| Identity::of(p).map_err(|e| self.ctx("inspect", p, e));
        let (dir, staging, old) = (id(&self.dir)?, id(&self.staging)?, id(&self.old)?);
        let d = self.dir.display();
        let mut did = Vec::new();
        match journal_text.as_deref().map(Journal::parse) {
            Some(Some(j)) => {
                let found = "found the journal of an interrupted data directory swap";
                if dir == Some(j.new) {
                    did.push(format!(
                        "{d}: {found}; the restored data had already been put in place, so it \
                         stays; removing the previous data left beside it"
                    ));
                    self.remove(&self.staging)?;
                    self.remove(&self.old)?;
                } else if dir.is_some() && dir == j.old {
                    did.push(format!(
                        "{d}: {found}; the swap had not happened, so {d} still holds the \
                         previous data; removing the unfinished restore's copy"
                    ));
                    self.remove(&self.staging)?;
                    self.remove(&self.old)?;
                } else if dir.is_none() && old.is_some() && old == j.old {
                    did.push(format!(
                        "{d}: {found}; {d} was missing and the previous data was at {}: \
                         moved it back; removing the unfinished restore's copy",
                        self.old.display()
                    ));
                    self.rename(&self.old, &self.dir)?;
                    self.remove(&self.staging)?;
                } else if dir.is_none() && staging == Some(j.new) {
                    // No previous data to go back to, and the journal says the new tree is
                    // complete and on disk.
                    did.push(format!(
                        "{d}: {found}; {d} was missing and the complete restored data was at \
                         {}: moved it into place",
                        self.staging.display()
                    ));
                    self.rename(&self.staging, &self.dir)?;
                } else if dir.is_none() {
                    did.push(format!(
                        "{d}: {found}, but neither the previous nor the restored data is left"
                    ));
                } else {
                    return Err(format!(
                        "data directory {d} is neither the one the interrupted restore replaced \
                         nor the one it restored (journal {}): check {d}, {} and {}, then \
                         remove what is not needed and the journal",
                        self.journal.display(),
                        self.staging.display(),
                        self.old.display()
                    ));
                }
                self.sync_parent()?;
                self.drop_journal()?;
            }
            Some(None) => {
                return Err(format!(
                    "data directory {d}: the swap journal {} is not readable; check {d}, {} and \
                     {}, then remove what is not needed and the journal",
                    self.journal.display(),
                    self.staging.display(),
                    self.old.display()
                ))
            }
            None => {
                // No journal: nothing was swapped since the staged tree was complete, or an
                // older coffer (without the journal) was interrupted between its renames.
                if dir.is_none() && old.is_some() {
                    did.push(format!(
                        "{d}: found {d} missing and the previous data at {}: moved it back",
                        self.old.display()
                    ));
                    self.rename(&self.old, &self.dir)?;
                } else if old.is_some() {
                    did.push(format!(
                        "{d}: removing the replaced data left at {}",
                        self.old.display()
                    ));
                    self.remove(&self.old)?;
                }
                if staging.is_some() {
                    did.push(format!(
                        "{d}: removing an unfinished restore's staging directory {}",
                        self.staging.display()
                    ));
                    self.remove(&self.staging)?;
                }
                if !did.is_empty() {
                    self.sync_parent()?;
                }
            }
        }
        for m in &did {
            tracing::warn!("{m}");
        }
        Ok(did)
    }

    /// Makes the staged tree durable, then puts it in place of the data directory and removes
    /// the one it replaced. On error, nothing has changed or the journal is left for
    /// [`recover`](Self::recover).
    pub fn commit(&self) -> Result<(), String> {
        sync_tree(&self.staging).map_err(|e| self.ctx("fsync", &self.staging, e))?;
        let id = |p: &Path| Identity::of(p).map_err(|e| self.ctx("inspect", p, e));
        let new = id(&self.staging)?.ok_or_else(|| {
            format!(
                "data directory {}: the staged data at {} is gone",
                self.dir.display(),
                self.staging.display()
            )
        })?;
        let old = id(&self.dir)?;
        self.write_journal(Journal { new, old })?;
        fault_point("staged");
        if old.is_none() {
            self.rename(&self.staging, &self.dir)?;
            self.sync_parent()?;
            fault_point("renamed");
            return self.drop_journal();
        }
        let exchanged = if exchange_disabled() {
            false
        } else {
            match exchange(&self.staging, &self.dir) {
                Ok(()) => true,
                Err(e) if exchange_unsupported(&e) => {
                    tracing::info!(
                        "{}: the filesystem cannot exchange directories ({e}); swapping with \
                         two renames",
                        self.dir.display()
                    );
                    false
                }
                Err(e) => {
                    let _ = self.drop_journal();
                    return Err(format!(
                        "data directory {}: cannot swap in the restored data from {}: {e}",
                        self.dir.display(),
                        self.staging.display()
                    ));
                }
            }
        };
        let replaced = if exchanged {
            fault_point("exchanged");
            self.sync_parent()?;
            // The previous data is now at the staging path.
            &self.staging
        } else {
            self.remove(&self.old)?;
            self.rename(&self.dir, &self.old)?;
            self.sync_parent()?;
            fault_point("moved-aside");
            if let Err(e) = self.rename(&self.staging, &self.dir) {
                // Put the previous data back rather than leave no data directory.
                return match self.rename(&self.old, &self.dir) {
                    Ok(()) => {
                        let _ = self.sync_parent();
                        let _ = self.drop_journal();
                        Err(e)
                    }
                    Err(back) => Err(format!(
                        "{e}; and the previous data could not be moved back ({back}): the next \
                         restore of this data directory puts it back"
                    )),
                };
            }
            self.sync_parent()?;
            fault_point("renamed");
            &self.old
        };
        remove_tree(replaced).map_err(|e| self.ctx("remove the replaced data at", replaced, e))?;
        self.sync_parent()?;
        fault_point("cleaned");
        self.drop_journal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent directory with `data` holding one marker file.
    fn setup(marker: &str) -> (tempfile::TempDir, DirSwap) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("marker"), marker).unwrap();
        let s = DirSwap::new(&dir);
        (t, s)
    }

    fn stage(s: &DirSwap, marker: &str) {
        std::fs::create_dir_all(s.staging.join("sub")).unwrap();
        std::fs::write(s.staging.join("marker"), marker).unwrap();
        std::fs::write(s.staging.join("sub/file"), "x").unwrap();
    }

    fn marker(s: &DirSwap) -> String {
        std::fs::read_to_string(s.dir.join("marker")).unwrap()
    }

    fn leftovers(t: &tempfile::TempDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "data")
            .collect();
        v.sort();
        v
    }

    fn journal_now(s: &DirSwap) -> Journal {
        Journal {
            new: Identity::of(&s.staging).unwrap().unwrap(),
            old: Identity::of(&s.dir).unwrap(),
        }
    }

    #[test]
    fn commit_replaces_the_directory_and_leaves_nothing_beside_it() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.commit().unwrap();
        assert_eq!(marker(&s), "new");
        assert_eq!(
            std::fs::read_to_string(s.dir.join("sub/file")).unwrap(),
            "x"
        );
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    #[test]
    fn commit_into_a_missing_directory() {
        let (t, s) = setup("old");
        std::fs::remove_dir_all(&s.dir).unwrap();
        stage(&s, "new");
        s.commit().unwrap();
        assert_eq!(marker(&s), "new");
        assert!(leftovers(&t).is_empty());
    }

    #[test]
    fn journal_round_trips() {
        let j = Journal {
            new: Identity { dev: 1, ino: 2 },
            old: None,
        };
        assert_eq!(Journal::parse(&j.to_text()), Some(j));
        let j = Journal {
            new: Identity { dev: 1, ino: 2 },
            old: Some(Identity { dev: 3, ino: 4 }),
        };
        assert_eq!(Journal::parse(&j.to_text()), Some(j));
        assert_eq!(Journal::parse("something else\n"), None);
    }

    #[test]
    fn crash_before_the_swap_keeps_the_old_data() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.write_journal(journal_now(&s)).unwrap();
        let did = s.recover().unwrap();
        assert!(did[0].contains("had not happened"), "{did:?}");
        assert_eq!(marker(&s), "old");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    #[test]
    fn crash_after_the_exchange_keeps_the_new_data() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.write_journal(journal_now(&s)).unwrap();
        exchange(&s.staging, &s.dir).unwrap();
        let did = s.recover().unwrap();
        assert!(did[0].contains("already been put in place"), "{did:?}");
        assert_eq!(marker(&s), "new");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    #[test]
    fn crash_between_the_two_renames_puts_the_old_data_back() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.write_journal(journal_now(&s)).unwrap();
        std::fs::rename(&s.dir, &s.old).unwrap();
        let did = s.recover().unwrap();
        assert!(did[0].contains("moved it back"), "{did:?}");
        assert_eq!(marker(&s), "old");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    #[test]
    fn crash_after_the_two_renames_keeps_the_new_data() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.write_journal(journal_now(&s)).unwrap();
        std::fs::rename(&s.dir, &s.old).unwrap();
        std::fs::rename(&s.staging, &s.dir).unwrap();
        let did = s.recover().unwrap();
        assert!(did[0].contains("already been put in place"), "{did:?}");
        assert_eq!(marker(&s), "new");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    #[test]
    fn crash_of_a_first_restore_before_its_rename_moves_the_complete_data_in() {
        let (t, s) = setup("old");
        std::fs::remove_dir_all(&s.dir).unwrap();
        stage(&s, "new");
        s.write_journal(journal_now(&s)).unwrap();
        let did = s.recover().unwrap();
        assert!(did[0].contains("moved it into place"), "{did:?}");
        assert_eq!(marker(&s), "new");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
    }

    /// What an older coffer (two renames, no journal) left when it died between them.
    #[test]
    fn leftovers_without_a_journal() {
        let (t, s) = setup("old");
        std::fs::rename(&s.dir, &s.old).unwrap();
        stage(&s, "half");
        let did = s.recover().unwrap();
        assert_eq!(did.len(), 2, "{did:?}");
        assert_eq!(marker(&s), "old");
        assert!(leftovers(&t).is_empty(), "{:?}", leftovers(&t));
        assert!(s.recover().unwrap().is_empty(), "nothing left to do");
    }

    #[test]
    fn a_foreign_directory_is_left_alone() {
        let (t, s) = setup("old");
        stage(&s, "new");
        s.write_journal(Journal {
            new: Identity { dev: 0, ino: 1 },
            old: Some(Identity { dev: 0, ino: 2 }),
        })
        .unwrap();
        let e = s.recover().unwrap_err();
        assert!(e.contains("is neither"), "{e}");
        assert_eq!(marker(&s), "old");
        assert!(leftovers(&t).contains(&".data.coffer-restore".to_string()));
    }
}
