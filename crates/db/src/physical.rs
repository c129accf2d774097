//! Physical backups: `mariabackup --backup --stream=xbstream` as a source, and the way back —
//! extract the stream (`mbstream -x`), prepare it (`mariabackup --prepare`), and leave a data
//! directory ready to start (with `grastate.dat` for a Galera node).

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Arc,
};

use crate::{
    conn::ClientFiles,
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    xbstream, DbError,
};

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// The backup tool (mariabackup for MariaDB, xtrabackup for MySQL/Percona) and its stream
/// extractor.
#[derive(Debug, Clone)]
pub struct PhysicalTools {
    pub backup: PathBuf,
    pub extract: PathBuf,
}

impl PhysicalTools {
    pub fn detect() -> Result<PhysicalTools, DbError> {
        let backup = std::env::var_os("COFFER_MARIABACKUP")
            .map(PathBuf::from)
            .or_else(|| on_path(&["mariabackup", "mariadb-backup", "xtrabackup"]))
            .ok_or_else(|| {
                DbError::Local(
                    "neither mariabackup nor xtrabackup is on PATH: install mariadb-backup (or \
                     percona-xtrabackup)"
                        .into(),
                )
            })?;
        let extract = on_path(&["mbstream", "xbstream"]).ok_or_else(|| {
            DbError::Local(
                "neither mbstream nor xbstream is on PATH: install mariadb-backup".into(),
            )
        })?;
        Ok(PhysicalTools { backup, extract })
    }
}

/// How long mariabackup may wait for the source's locks before it gives up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `mariabackup --backup --stream=xbstream` of a server on this machine, as a stream that fails
/// its last read unless mariabackup exited 0 and the stream ended complete.
pub struct PhysicalStream {
    child: Child,
    stdout: ChildStdout,
    stderr: StderrTail,
    tail: Vec<u8>,
    /// Follows the chunks to keep the binlog position mariabackup writes near the end.
    check: Option<xbstream::PathCheck>,
    on_position: Option<crate::mysqldump::OnPosition>,
    finished: bool,
    target: String,
    _files: Arc<ClientFiles>,
    _tmp: tempfile::TempDir,
}

/// The position a mariabackup stream records (its [`xbstream::BINLOG_INFO`] file, written
/// under `BACKUP STAGE BLOCK_COMMIT`, so exactly where the prepared data stands); `None`
/// when the server writes no binlog.
pub fn stream_position(check: &xbstream::PathCheck) -> Option<crate::native::Position> {
    let raw = xbstream::BINLOG_INFO
        .iter()
        .find_map(|n| check.captured(n))?;
    let (file, pos, gtid) = xbstream::binlog_info(&String::from_utf8_lossy(raw))?;
    Some(crate::native::Position {
        binlog_file: Some(file),
        binlog_position: Some(pos),
        gtid: Some(gtid),
    })
}

impl PhysicalStream {
    pub fn start(
        tools: &PhysicalTools,
        files: Arc<ClientFiles>,
        target: &str,
    ) -> Result<PhysicalStream, DbError> {
        Self::start_watching(tools, files, target, None)
    }

    /// Like [`start`](Self::start), and `watch` sees each line of mariabackup's log as it
    /// comes (for example its `BACKUP STAGE BLOCK_COMMIT`).
    pub fn start_watching(
        tools: &PhysicalTools,
        files: Arc<ClientFiles>,
        target: &str,
        watch: Option<crate::process::LineWatch>,
    ) -> Result<PhysicalStream, DbError> {
        let tmp = tempfile::Builder::new()
            .prefix("coffer-mariabackup-")
            .tempdir_in(crate::process::scratch_dir())
            .map_err(|e| DbError::Local(e.to_string()))?;
        let mut cmd = Command::new(&tools.backup);
        cmd.arg(files.defaults_arg())
            .arg("--backup")
            .arg("--stream=xbstream")
            // Give up rather than wait without end for the locks it needs (mariabackup: for
            // LOCK TABLES holders before BACKUP STAGE START; xtrabackup: for long queries
            // before FTWRL, which would stall every writer while it waits).
            .arg(format!("--ftwrl-wait-timeout={}", LOCK_WAIT.as_secs()))
            .arg(format!("--target-dir={}", tmp.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        files.pass_to(&mut cmd);
        let mut child = spawn_bound(cmd)
            .map_err(|e| DbError::Local(format!("cannot start {}: {e}", tools.backup.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr =
            StderrTail::watching("mariabackup", child.stderr.take().expect("piped"), watch);
        Ok(PhysicalStream {
            child,
            stdout,
            stderr,
            tail: Vec::new(),
            check: Some(xbstream::PathCheck::capturing(xbstream::BINLOG_INFO)),
            on_position: None,
            finished: false,
            target: target.to_string(),
            _files: files,
            _tmp: tmp,
        })
    }
}

impl PhysicalStream {
    /// `f` gets the binlog position the backup is consistent at once the stream has ended
    /// complete (the server writes a binlog), before the stream's last read returns.
    pub fn on_position(&mut self, f: crate::mysqldump::OnPosition) {
        self.on_position = Some(f);
    }
}

impl Read for PhysicalStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n > 0 {
            if let Some(c) = &mut self.check {
                // The restore judges the stream; here a chunk this reader cannot follow only
                // costs the position.
                if let Err(r) = c.feed(&buf[..n]) {
                    tracing::warn!("the backup's binlog position cannot be read: {r}");
                    self.check = None;
                }
            }
            self.tail.extend_from_slice(&buf[n.saturating_sub(64)..n]);
            if self.tail.len() > 64 {
                let cut = self.tail.len() - 64;
                self.tail.drain(..cut);
            }
            return Ok(n);
        }
        self.finished = true;
        let status = self.child.wait()?;
        let said = self.stderr.finish();
        if !status.success() {
            let last: Vec<&str> = said.lines().rev().take(3).collect();
            return Err(std::io::Error::other(DbError::Dump {
                target: self.target.clone(),
                reason: format!(
                    "mariabackup {}: {}",
                    describe_exit(status),
                    last.into_iter().rev().collect::<Vec<_>>().join("; ")
                ),
            }));
        }
        if !xbstream::ends_complete(&self.tail) {
            return Err(std::io::Error::other(DbError::Dump {
                target: self.target.clone(),
                reason: "mariabackup's stream ended without the end of xtrabackup_info".into(),
            }));
        }
        if let (Some(f), Some(c)) = (self.on_position.take(), &self.check) {
            if let Some(p) = stream_position(c) {
                f(p);
            }
        }
        Ok(0)
    }
}

impl Drop for PhysicalStream {
    fn drop(&mut self) {
        if !self.finished {
            terminate(&mut self.child);
        }
    }
}

/// `mbstream -x` into a directory, fed by writes. The stream is untrusted input: every
/// chunk's path is judged before it reaches mbstream (see [`xbstream::PathCheck`]), since
/// mbstream versions before 10.11.9 write `../x` and `/abs` paths where they point, and later
/// ones stop at them yet exit 0.
pub struct Extractor {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: StderrTail,
    target: String,
    check: xbstream::PathCheck,
}

impl Extractor {
    pub fn start(tools: &PhysicalTools, dir: &Path, target: &str) -> Result<Extractor, DbError> {
        let mut cmd = Command::new(&tools.extract);
        cmd.arg("-x")
            .arg("-C")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_bound(cmd).map_err(|e| {
            DbError::Local(format!("cannot start {}: {e}", tools.extract.display()))
        })?;
        let stdin = child.stdin.take();
        let stderr = StderrTail::start("mbstream", child.stderr.take().expect("piped"));
        Ok(Extractor {
            child,
            stdin,
            stderr,
            target: target.to_string(),
            check: xbstream::PathCheck::new(),
        })
    }

    fn refusal(&self, r: &xbstream::Refused) -> DbError {
        DbError::Physical {
            target: self.target.clone(),
            reason: r.to_string(),
        }
    }

    /// mbstream exits 0 even when it cannot create a file, so its stderr is judged too.
    pub fn finish(mut self) -> Result<(), DbError> {
        if let Some(r) = self.check.refused() {
            let e = self.refusal(r);
            self.abort();
            return Err(e);
        }
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| DbError::Local(e.to_string()))?;
        let said = self.stderr.finish();
        if !status.success()
            || said.contains("Can't create")
            || said.contains("failed")
            || said.contains("invalid filename")
        {
            return Err(DbError::Physical {
                target: self.target.clone(),
                reason: format!(
                    "extracting the stream failed ({}): {said}",
                    describe_exit(status)
                ),
            });
        }
        Ok(())
    }

    /// Stops mbstream; returns the refusal that stopped the stream, if that is what did.
    pub fn abort(mut self) -> Option<DbError> {
        drop(self.stdin.take());
        terminate(&mut self.child);
        self.check.refused().map(|r| self.refusal(r))
    }
}

impl Write for Extractor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(std::io::Error::other("extractor closed"));
        };
        // Judged before any of it goes on, then passed on whole (no short write), so the
        // checker sees each byte exactly once.
        self.check
            .feed(buf)
            .map_err(|r| std::io::Error::other(r.to_string()))?;
        stdin.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

/// Options mariabackup writes into `backup-my.cnf` and reads back at `--prepare`; a value
/// that is a path must stay inside the backup directory.
const CNF_OPTIONS: &[(&str, CnfValue)] = &[
    ("innodb_checksum_algorithm", CnfValue::Plain),
    ("innodb_log_checksums", CnfValue::Plain),
    ("innodb_fast_checksum", CnfValue::Plain),
    ("innodb_page_size", CnfValue::Plain),
    ("innodb_log_file_size", CnfValue::Plain),
    ("innodb_log_files_in_group", CnfValue::Plain),
    ("innodb_log_block_size", CnfValue::Plain),
    ("innodb_undo_tablespaces", CnfValue::Plain),
    ("innodb_compression_level", CnfValue::Plain),
    ("innodb_encrypt_log", CnfValue::Plain),
    ("innodb_data_file_path", CnfValue::DataFiles),
    ("innodb_undo_directory", CnfValue::InsideDir),
    ("innodb_log_group_home_dir", CnfValue::InsideDir),
    ("innodb_data_home_dir", CnfValue::InsideDir),
    ("innodb_buffer_pool_filename", CnfValue::InsideDir),
    ("innodb_doublewrite_file", CnfValue::InsideDir),
    ("plugin_load", CnfValue::KeyPlugins),
];

#[derive(Clone, Copy)]
enum CnfValue {
    Plain,
    /// A relative path without `..` (`./` and `.` are the directory itself).
    InsideDir,
    /// `name:size[:autoextend...];...`, every name inside the directory.
    DataFiles,
    /// Encryption key plugins, by library name only (loaded from the system's plugin dir).
    KeyPlugins,
}

fn inside_dir(v: &str) -> bool {
    !v.starts_with('/') && !v.split('/').any(|p| p == "..") && !v.contains('\0')
}

fn key_plugins(v: &str) -> bool {
    v.split(';').filter(|p| !p.is_empty()).all(|p| {
        let (name, lib) = p.split_once('=').unwrap_or(("", p));
        let stem = lib.trim_end_matches(".so");
        !lib.contains('/')
            && (name.is_empty() || name.ends_with("key_management"))
            && stem.ends_with("key_management")
    })
}

/// Judges the `backup-my.cnf` of an extracted backup: `mariabackup --prepare` reads it as its
/// options, so a crafted one could point it at files outside the backup (`innodb_*_dir`) or
/// make it load code (`plugin_dir` and `plugin_load` ran a library from the stream itself).
/// Only what mariabackup writes there is accepted: the InnoDB layout, with paths inside the
/// directory, and key-management plugins with their own settings.
pub fn check_backup_cnf(text: &str) -> Result<(), String> {
    let mut plugins: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        if line.starts_with('!') {
            refused.push(format!("`{line}` (it reads other files)"));
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = key.trim().to_ascii_lowercase().replace('-', "_");
        let key = key.strip_prefix("loose_").unwrap_or(&key).to_string();
        let value = value.trim().trim_matches(|c: char| c == '"' || c == '\'');
        let ok = match CNF_OPTIONS.iter().find(|(k, _)| *k == key) {
            Some((_, CnfValue::Plain)) => true,
            Some((_, CnfValue::InsideDir)) => inside_dir(value),
            Some((_, CnfValue::DataFiles)) => value
                .split(';')
                .filter(|f| !f.is_empty())
                .all(|f| inside_dir(f.split(':').next().unwrap_or(""))),
            Some((_, CnfValue::KeyPlugins)) => {
                let ok = key_plugins(value);
                if ok {
                    plugins.extend(value.split(';').filter_map(|p| {
                        let (name, lib) = p.split_once('=').unwrap_or(("", p));
                        let name = if name.is_empty() {
                            lib.trim_end_matches(".so")
                        } else {
                            name
                        };
                        (!name.is_empty()).then(|| format!("{name}_"))
                    }));
                }
                ok
            }
            None => false,
        };
        if !ok {
            refused.push(format!("`{line}`"));
        }
    }
    // A key plugin's own settings (file_key_management_filename, ...) are read only by it.
    refused.retain(|r| {
        let key = r.trim_matches('`').split('=').next().unwrap_or("").trim();
        let key = key.to_ascii_lowercase().replace('-', "_");
        !plugins.iter().any(|p| key.starts_with(p.as_str()))
    });
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "backup-my.cnf in the snapshot sets {}, which coffer does not let mariabackup \
             --prepare read (it may load code or reach files outside the backup); the snapshot \
             is not a mariabackup stream coffer restores",
            refused.join(", ")
        ))
    }
}

/// `mariabackup --prepare`: applies the redo log so the directory is consistent.
pub fn prepare(tools: &PhysicalTools, dir: &Path, target: &str) -> Result<(), DbError> {
    if !dir.join("xtrabackup_info").exists() {
        return Err(DbError::Physical {
            target: target.into(),
            reason: "the extracted backup has no xtrabackup_info: the stream is incomplete".into(),
        });
    }
    // mariabackup reads backup-my.cnf from the directory as its own options.
    let cnf = std::fs::read(dir.join("backup-my.cnf")).unwrap_or_default();
    check_backup_cnf(&String::from_utf8_lossy(&cnf)).map_err(|reason| DbError::Physical {
        target: target.into(),
        reason,
    })?;
    let mut cmd = Command::new(&tools.backup);
    cmd.arg("--prepare")
        .arg("--use-memory=256M")
        .arg(format!("--target-dir={}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_bound(cmd)
        .and_then(|c| c.wait_with_output())
        .map_err(|e| DbError::Local(format!("cannot run {}: {e}", tools.backup.display())))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = said.lines().rev().take(5).collect();
        return Err(DbError::Physical {
            target: target.into(),
            reason: format!(
                "mariabackup --prepare {}: {}",
                describe_exit(out.status),
                last.into_iter().rev().collect::<Vec<_>>().join("; ")
            ),
        });
    }
    Ok(())
}

/// The Galera position of the prepared data (mariabackup rewrites xtrabackup_galera_info from
/// the recovered InnoDB state during prepare; the streamed value can be ahead of the data).
pub fn prepared_galera_position(dir: &Path) -> Option<(String, i64)> {
    let text = std::fs::read_to_string(dir.join("xtrabackup_galera_info")).ok()?;
    xbstream::galera_position(&text)
}

/// Writes `grastate.dat` so the node starts from this position.
pub fn write_grastate(
    dir: &Path,
    uuid: &str,
    seqno: i64,
    safe_to_bootstrap: bool,
) -> std::io::Result<()> {
    std::fs::write(
        dir.join("grastate.dat"),
        format!(
            "# GALERA saved state\nversion: 2.1\nuuid:    {uuid}\nseqno:   {seqno}\nsafe_to_bootstrap: {}\n",
            u8::from(safe_to_bootstrap)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = "# This options file was generated by innobackupex.\n\n# The server\n\
        [mysqld]\ninnodb_checksum_algorithm=crc32\ninnodb_data_file_path=ibdata1:12M:autoextend\n\
        innodb_log_file_size=100663296\ninnodb_page_size=16384\ninnodb_undo_directory=./\n\
        innodb_undo_tablespaces=0\ninnodb_compression_level=6\n\n";

    #[test]
    fn what_mariabackup_writes_is_accepted() {
        assert_eq!(check_backup_cnf(WRITTEN), Ok(()));
        assert_eq!(check_backup_cnf(""), Ok(()));
        let encrypted = format!(
            "{WRITTEN}plugin_load=file_key_management=file_key_management.so\n\
             file_key_management_filename=/etc/mysql/keys.txt\n\
             file_key_management_encryption_algorithm=aes_cbc\n"
        );
        assert_eq!(check_backup_cnf(&encrypted), Ok(()));
        assert_eq!(
            check_backup_cnf("innodb_data_file_path=ibdata1:12M;ibdata2:12M:autoextend\n"),
            Ok(())
        );
    }

    #[test]
    fn code_loading_and_paths_outside_are_refused() {
        for bad in [
            "plugin_dir=/var/lib/mysql-restore",
            "plugin-dir=.",
            "plugin_load=evil=evil.so",
            "plugin_load=file_key_management=../../tmp/evil.so",
            "plugin_load=file_key_management=/tmp/file_key_management.so",
            "plugin-load-add=evil.so",
            "innodb_data_home_dir=/etc",
            "innodb_log_group_home_dir=../elsewhere",
            "innodb_undo_directory=/var/lib/mysql",
            "innodb_data_file_path=/etc/ibdata1:12M:autoextend",
            "innodb_data_file_path=ibdata1:12M;../x:1M",
            "datadir=/var/lib/mysql",
            "tmpdir=/etc",
            "!include /etc/mysql/other.cnf",
            "!includedir /etc/mysql/conf.d",
            "file_key_management_filename=/etc/shadow",
        ] {
            let text = format!("{WRITTEN}{bad}\n");
            let e = check_backup_cnf(&text).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
