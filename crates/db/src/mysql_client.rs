//! The compatible logical sink: a snapshot streamed into the `mysql` client.

use std::{
    io::Write,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Arc,
};

use crate::{
    client::Clients,
    conn::{ClientFiles, ConnSpec},
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    DbError,
};

/// A running `mysql` client that executes whatever is written to it.
pub struct LoadSink {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: StderrTail,
    written: u64,
    target: String,
    _files: Arc<ClientFiles>,
}

impl LoadSink {
    /// Starts `mysql` with the task's `args` (e.g. a database name).
    pub fn start(
        clients: &Clients,
        spec: &ConnSpec,
        files: Arc<ClientFiles>,
        args: &[String],
    ) -> Result<LoadSink, DbError> {
        let mut cmd = Command::new(&clients.client);
        cmd.arg(files.defaults_arg())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("MYSQL_PWD");
        files.pass_to(&mut cmd);
        let mut child = spawn_bound(cmd).map_err(|e| {
            DbError::Local(format!(
                "cannot start {}: {e} (install the MariaDB or MySQL client)",
                clients.client.display()
            ))
        })?;
        let stdin = child.stdin.take();
        let stderr = StderrTail::start("mysql", child.stderr.take().expect("piped stderr"));
        Ok(LoadSink {
            child,
            stdin,
            stderr,
            written: 0,
            target: spec.label.clone(),
            _files: files,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Closes the input and waits: succeeds only if mysql executed everything and exited 0.
    pub fn finish(mut self) -> Result<u64, DbError> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| DbError::Local(format!("cannot wait for mysql: {e}")))?;
        let stderr = self.stderr.finish();
        if !status.success() {
            return Err(DbError::Load {
                target: self.target.clone(),
                reason: format!(
                    "mysql {}{}",
                    describe_exit(status),
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                ),
            });
        }
        Ok(self.written)
    }

    /// Stops the client without letting it finish (the input was incomplete).
    pub fn abort(mut self) -> String {
        drop(self.stdin.take());
        terminate(&mut self.child);
        self.stderr.finish()
    }
}

impl Write for LoadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("mysql input already closed"))?;
        match stdin.write(buf) {
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(std::io::Error::other(
                format!("mysql stopped reading its input: {}", self.stderr.text()),
            )),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for LoadSink {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            terminate(&mut self.child);
        }
    }
}
