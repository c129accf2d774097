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
    finished: bool,
    target: String,
    _files: Arc<ClientFiles>,
    _tmp: tempfile::TempDir,
}

impl PhysicalStream {
    pub fn start(
        tools: &PhysicalTools,
        files: Arc<ClientFiles>,
        target: &str,
    ) -> Result<PhysicalStream, DbError> {
        let tmp = tempfile::Builder::new()
            .prefix("coffer-mariabackup-")
            .tempdir()
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
        let stderr = StderrTail::start("mariabackup", child.stderr.take().expect("piped"));
        Ok(PhysicalStream {
            child,
            stdout,
            stderr,
            tail: Vec::new(),
            finished: false,
            target: target.to_string(),
            _files: files,
            _tmp: tmp,
        })
    }
}

impl Read for PhysicalStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n > 0 {
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

/// `mbstream -x` into a directory, fed by writes.
pub struct Extractor {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: StderrTail,
    target: String,
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
        })
    }

    /// mbstream exits 0 even when it cannot create a file, so its stderr is judged too.
    pub fn finish(mut self) -> Result<(), DbError> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| DbError::Local(e.to_string()))?;
        let said = self.stderr.finish();
        if !status.success() || said.contains("Can't create") || said.contains("failed") {
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

    pub fn abort(mut self) {
        drop(self.stdin.take());
        terminate(&mut self.child);
    }
}

impl Write for Extractor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.stdin.as_mut() {
            Some(s) => s.write(buf),
            None => Err(std::io::Error::other("extractor closed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
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
