//! The compatible logical source: `mysqldump` streamed straight into the repository.

use std::{
    io::Read,
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{
    client::Clients,
    conn::{ClientFiles, ConnSpec},
    process::{describe_exit, terminate, StderrTail},
    DbError,
};

/// The flags that make the compatible dump consistent and complete by default. They come
/// before the user's `args`, so a user can still turn one off (`--skip-...`).
pub const DEFAULT_FLAGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    // Grants restored into the mysql schema take effect without a restart.
    "--flush-privileges",
    // MySQL 5.7's client defaults to 3-byte utf8, which would mangle 4-byte characters.
    "--default-character-set=utf8mb4",
];

const TRAILER: &[u8] = b"-- Dump completed";

/// mysqldump's output as a stream. Reading it to the end succeeds only when mysqldump exited
/// 0 and its output ends with the `-- Dump completed` line; otherwise the last read fails, so
/// whatever consumes it (the repository) never commits a truncated dump.
pub struct DumpStream {
    child: Child,
    stdout: ChildStdout,
    stderr: StderrTail,
    tail: Vec<u8>,
    bytes: Arc<AtomicU64>,
    finished: bool,
    target: String,
    _files: Arc<ClientFiles>,
}

impl DumpStream {
    /// Starts mysqldump with the default flags followed by `args` (Stash's task param, e.g.
    /// `--all-databases` or `--databases a b`).
    pub fn start(
        clients: &Clients,
        spec: &ConnSpec,
        files: Arc<ClientFiles>,
        args: &[String],
    ) -> Result<DumpStream, DbError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&clients.dump);
        cmd.arg(files.defaults_arg())
            .args(DEFAULT_FLAGS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("MYSQL_PWD")
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            DbError::Local(format!(
                "cannot start {}: {e} (install the MariaDB or MySQL client)",
                clients.dump.display()
            ))
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = StderrTail::start("mysqldump", child.stderr.take().expect("piped stderr"));
        Ok(DumpStream {
            child,
            stdout,
            stderr,
            tail: Vec::with_capacity(512),
            bytes: Arc::new(AtomicU64::new(0)),
            finished: false,
            target: spec.label.clone(),
            _files: files,
        })
    }

    /// A live count of the bytes read so far.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    fn remember_tail(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 256 {
            let cut = self.tail.len() - 256;
            self.tail.drain(..cut);
        }
    }

    fn finish(&mut self) -> Result<(), DbError> {
        self.finished = true;
        let status = self
            .child
            .wait()
            .map_err(|e| DbError::Local(format!("cannot wait for mysqldump: {e}")))?;
        let stderr = self.stderr.finish();
        if !status.success() {
            return Err(DbError::Dump {
                target: self.target.clone(),
                reason: format!(
                    "mysqldump {}{}",
                    describe_exit(status),
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                ),
            });
        }
        if !self.tail.windows(TRAILER.len()).any(|w| w == TRAILER) {
            return Err(DbError::Dump {
                target: self.target.clone(),
                reason: "mysqldump's output ended without its `-- Dump completed` line: the dump \
                         is truncated"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Read for DumpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n > 0 {
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            // Only the last bytes matter for the trailer check.
            let start = n.saturating_sub(256);
            let chunk = buf[start..n].to_vec();
            self.remember_tail(&chunk);
            return Ok(n);
        }
        self.finish().map_err(std::io::Error::other)?;
        Ok(0)
    }
}

impl Drop for DumpStream {
    fn drop(&mut self) {
        if !self.finished {
            terminate(&mut self.child);
        }
    }
}
