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
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    DbError,
};

/// The flags that make the compatible dump consistent and complete by default. They come
/// before the user's `args`, so a user can still turn one off (`--skip-...`).
pub const DEFAULT_FLAGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    // LOCK TABLES around a table's rows fails the restore of a table whose DEFAULT calls
    // NEXTVAL (the sequence is not among the locked tables: MariaDB error 1100).
    "--skip-add-locks",
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
        let mut cmd = Command::new(&clients.dump);
        cmd.arg(files.defaults_arg())
            .args(DEFAULT_FLAGS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("MYSQL_PWD");
        files.pass_to(&mut cmd);
        let mut child = spawn_bound(cmd).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use std::{io::Read, os::unix::fs::PermissionsExt, sync::Arc};

    use super::*;
    use crate::conn::ClientFlavor;

    fn fake_dump(body: &str) -> (tempfile::TempDir, Clients) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fake-dump");
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Clients {
            dump: p.clone(),
            client: p,
            flavor: ClientFlavor::MariaDb,
        };
        (dir, c)
    }

    fn read_all(body: &str) -> Result<Vec<u8>, std::io::Error> {
        let (_d, clients) = fake_dump(body);
        let spec = ConnSpec {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: "p".into(),
            tls: None,
            label: "AppBinding t/db".into(),
        };
        let files = Arc::new(ClientFiles::new(&spec, ClientFlavor::MariaDb).unwrap());
        // Another test thread may fork while our script is still open for writing; its
        // child holds the descriptor until it execs, and starting the script fails with
        // ETXTBSY meanwhile.
        let mut s = (0..50)
            .find_map(
                |_| match DumpStream::start(&clients, &spec, files.clone(), &[]) {
                    Err(e) if e.to_string().contains("Text file busy") => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    other => Some(other),
                },
            )
            .expect("the fake dump stays busy")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_complete_dump_reads_to_the_end() {
        let out =
            read_all("echo 'CREATE TABLE t (a INT);'; echo '-- Dump completed on 2026-01-01'")
                .unwrap();
        assert!(out.ends_with(b"-- Dump completed on 2026-01-01\n"));
    }

    #[test]
    fn a_killed_dump_fails_the_last_read() {
        let e = read_all("echo 'CREATE TABLE t (a INT);'; echo '-- Dump completed'; kill -KILL $$")
            .unwrap_err();
        assert!(e.to_string().contains("killed by signal 9"), "{e}");
    }

    #[test]
    fn a_failed_dump_reports_its_stderr() {
        let e = read_all(
            "echo 'INSERT'; echo 'mysqldump: Got error: 2013: Lost connection' >&2; exit 2",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("exited with status 2") && m.contains("Lost connection"),
            "{m}"
        );
    }

    #[test]
    fn a_dump_without_its_trailer_is_truncated() {
        let e = read_all("echo 'INSERT INTO t VALUES (1)'").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
