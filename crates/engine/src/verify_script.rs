//! spec.verification.script: the user's program run against the restored server. It gets the
//! server's address in its environment and the password in a 0600 option file (never in an
//! argument or a variable), and fails the verification with its exit code and the last lines
//! of its stderr.

use std::{path::Path, process::Command, time::Duration};

use coffer_api::backup::VerificationScript;

/// How many lines of the script's stderr a failure quotes.
const STDERR_LINES: usize = 5;

/// What the script is told about the server it checks.
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    /// The option file holding the password (0600, in the throwaway server's directory).
    pub defaults_file: &'a Path,
    pub snapshot: &'a str,
    /// `namespace/name` of the BackupConfiguration.
    pub configuration: &'a str,
}

/// The option file a script's client reads: the account, the address, the password.
pub fn defaults_file_text(host: &str, port: u16, user: &str, password: &str) -> String {
    // The user and password coffer makes are plain (a name and hex): no quoting needed.
    format!("[client]\nuser={user}\npassword={password}\nhost={host}\nport={port}\nprotocol=TCP\n")
}

fn limit(sc: &VerificationScript) -> Duration {
    sc.timeout
        .as_deref()
        .and_then(|t| coffer_api::duration::parse(t).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(VerificationScript::DEFAULT_TIMEOUT)
}

/// The last few lines of a stream, joined for a one-line reason.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(STDERR_LINES);
    lines[from..].join(" | ")
}

/// Runs the script; Ok with a message for the condition, Err with the reason it failed.
pub fn run(sc: &VerificationScript, t: &Target, cwd: &Path) -> Result<String, String> {
    let mut cmd = Command::new(&sc.path);
    cmd.args(&sc.args).current_dir(cwd).env_clear();
    // Only what a program needs to run: coffer's own environment may hold credentials.
    for k in ["PATH", "HOME", "LANG", "LC_ALL", "TZ"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("COFFER_VERIFY_HOST", t.host)
        .env("COFFER_VERIFY_PORT", t.port.to_string())
        .env("COFFER_VERIFY_USER", t.user)
        .env("COFFER_VERIFY_DEFAULTS_FILE", t.defaults_file)
        .env("COFFER_VERIFY_SNAPSHOT", t.snapshot)
        .env("COFFER_VERIFY_CONFIGURATION", t.configuration);
    let limit = limit(sc);
    let label = format!("verification script {}", sc.path);
    let out = crate::exec::run(&label, cmd, limit)
        .map_err(|e| format!("script {}: cannot start it: {e}", sc.path))?;
    let said = last_lines(&out.stderr_tail);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends: {said}")
    };
    match out.status {
        None => Err(format!(
            "script {} ran longer than {} (spec.verification.script.timeout) and was killed{said}",
            sc.path,
            coffer_api::duration::format(limit)
        )),
        Some(s) if s.success() => Ok(format!(
            "script {} succeeded in {:.1}s",
            sc.path,
            out.elapsed.as_secs_f64()
        )),
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".into(),
            };
            Err(format!("script {} {how}{said}", sc.path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_quotes_the_last_lines() {
        let text = "a\nb\n\nc\nd\ne\nf\ng\n";
        assert_eq!(last_lines(text), "c | d | e | f | g");
        assert_eq!(last_lines(""), "");
    }

    #[test]
    fn the_script_gets_the_address_not_the_password_and_fails_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let cnf = dir.path().join("client.cnf");
        std::fs::write(&cnf, defaults_file_text("127.0.0.1", 3307, "u", "sekret")).unwrap();
        let t = Target {
            host: "127.0.0.1",
            port: 3307,
            user: "u",
            defaults_file: &cnf,
            snapshot: "abc",
            configuration: "demo/bc",
        };
        // A variable of coffer's own environment the script must not see.
        std::env::set_var("COFFER_TEST_PARENT_SECRET", "leak");
        let sc = VerificationScript {
            path: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "env | grep -q sekret && echo 'password in the environment' >&2; \
                 env | grep -q COFFER_TEST_PARENT_SECRET && echo 'parent environment' >&2; \
                 echo \"$1 $COFFER_VERIFY_USER@$COFFER_VERIFY_HOST:$COFFER_VERIFY_PORT \
                 $COFFER_VERIFY_SNAPSHOT $COFFER_VERIFY_CONFIGURATION\" >&2; \
                 grep -q '^password=sekret$' \"$COFFER_VERIFY_DEFAULTS_FILE\" \
                 && echo found-password >&2; exit 3"
                    .into(),
                "sh".into(),
                "arg1".into(),
            ],
            timeout: None,
        };
        let e = run(&sc, &t, dir.path()).unwrap_err();
        assert_eq!(
            e,
            "script /bin/sh exited with code 3; its stderr ends: \
             arg1 u@127.0.0.1:3307 abc demo/bc | found-password"
        );
        let ok = VerificationScript {
            path: "/bin/true".into(),
            ..Default::default()
        };
        assert!(run(&ok, &t, dir.path())
            .unwrap()
            .starts_with("script /bin/true succeeded"));
    }

    #[test]
    fn a_script_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let cnf = dir.path().join("client.cnf");
        let t = Target {
            host: "127.0.0.1",
            port: 1,
            user: "u",
            defaults_file: &cnf,
            snapshot: "abc",
            configuration: "demo/bc",
        };
        let sc = VerificationScript {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), "echo started >&2; sleep 600".into()],
            timeout: Some("1s".into()),
        };
        let e = run(&sc, &t, dir.path()).unwrap_err();
        assert!(e.contains("ran longer than 1s"), "{e}");
        assert!(e.contains("started"), "{e}");
    }
}
