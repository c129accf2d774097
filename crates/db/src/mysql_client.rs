//! The compatible logical sink: a snapshot streamed into the `mysql` client.

use std::{
    io::Write,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Arc,
};

use crate::{
    client::Clients,
    conn::{ClientFiles, ConnSpec},
    process::{describe_exit, spawn_bound, terminate, StderrTail},
    DbError,
};

/// What the client says when `--binary-mode` or `--sandbox` stops a client command.
const REFUSED_MARKS: [&str; 2] = ["Unknown command '\\", "Not allowed in the sandbox mode"];

/// The options that make the client execute SQL and nothing else. A snapshot is untrusted
/// input: without them its `\! cmd` or `system cmd` lines run programs on this host, and
/// `source`, `tee` or `pager` touch its files. `--binary-mode` (MariaDB, MySQL 5.6.3+) turns off
/// every client command but `\C` and `DELIMITER` on piped input; `--sandbox` (MariaDB 10.5.25,
/// 10.6.18, 10.11.8 and later) refuses the file-touching ones again, and LOAD DATA LOCAL is
/// turned off so that a dump cannot read this host's files into the server. A client without
/// `--binary-mode` is refused.
fn protections(client: &Path) -> Result<Vec<&'static str>, DbError> {
    let help = Command::new(client)
        .arg("--no-defaults")
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| {
            DbError::Local(format!(
                "cannot start {}: {e} (install the MariaDB or MySQL client)",
                client.display()
            ))
        })?;
    let has = |option: &str| {
        help.lines().any(|l| {
            l.split_whitespace().any(|w| {
                w == option
                    || w.strip_prefix(option)
                        .is_some_and(|r| r.starts_with(['=', '[']))
            })
        })
    };
    if !has("--binary-mode") {
        return Err(DbError::Local(format!(
            "{} has no --binary-mode, so it would run the shell commands (\\!, system) a \
             snapshot may contain: install the MariaDB client (Debian: apt-get install \
             mariadb-client; 10.5.25, 10.6.18, 10.11.8 and later also have --sandbox) or MySQL's \
             5.6.3 or later, or point COFFER_MYSQL at one",
            client.display()
        )));
    }
    let mut v = vec!["--binary-mode"];
    if has("--sandbox") {
        v.push("--sandbox");
    }
    if has("--local-infile") {
        v.push("--local-infile=0");
    }
    Ok(v)
}

/// Explains a refused client command in what mysql said, so that the failure names it.
fn explain(said: String) -> String {
    if REFUSED_MARKS.iter().any(|m| said.contains(m)) {
        format!(
            "the snapshot contains a mysql client command, which coffer does not run (it could \
             run programs or touch files on this host): {said}"
        )
    } else {
        said
    }
}

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
    /// Starts `mysql` with the task's `args` (e.g. a database name), then the protections,
    /// last so that they win over anything before them.
    pub fn start(
        clients: &Clients,
        spec: &ConnSpec,
        files: Arc<ClientFiles>,
        args: &[String],
    ) -> Result<LoadSink, DbError> {
        let protections = protections(&clients.client)?;
        let mut cmd = Command::new(&clients.client);
        cmd.arg(files.defaults_arg())
            .args(args)
            .args(&protections)
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
        let stderr = explain(self.stderr.finish());
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
        explain(self.stderr.finish())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in client whose `--help` lists the given options.
    fn client_listing(dir: &Path, name: &str, options: &[&str]) -> std::path::PathBuf {
        let p = dir.join(name);
        let lines: String = options
            .iter()
            .map(|o| format!("echo '  {o}      Some text.'\n"))
            .collect();
        std::fs::write(&p, format!("#!/bin/sh\n{lines}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_client_must_be_able_to_refuse_client_commands() {
        let dir = tempfile::tempdir().unwrap();
        let mariadb = client_listing(
            dir.path(),
            "mariadb",
            &["--batch", "--binary-mode", "--local-infile", "--sandbox"],
        );
        assert_eq!(
            protections(&mariadb).unwrap(),
            vec!["--binary-mode", "--sandbox", "--local-infile=0"]
        );
        let mysql = client_listing(
            dir.path(),
            "mysql",
            &["--binary-mode", "--local-infile[=#]"],
        );
        assert_eq!(
            protections(&mysql).unwrap(),
            vec!["--binary-mode", "--local-infile=0"]
        );
        let old = client_listing(dir.path(), "old", &["--batch", "--sandbox-ish"]);
        let e = protections(&old).unwrap_err().to_string();
        assert!(e.contains("has no --binary-mode"), "{e}");
        assert!(e.contains("install"), "{e}");
    }

    #[test]
    fn a_refused_client_command_is_explained() {
        let said = "ERROR at line 4: Unknown command '\\!'.".to_string();
        assert!(explain(said.clone()).contains("client command, which coffer does not run"));
        assert!(explain(said).ends_with("Unknown command '\\!'."));
        let plain = "ERROR 1064 (42000) at line 1: syntax".to_string();
        assert_eq!(explain(plain.clone()), plain);
    }
}
