//! Sessions run as child processes (`coffer agent ...`), so a crashing session cannot take the
//! server down: each in its own session (a timeout kills every process in it — the database
//! clients, and hooks with all they started, though hooks run in process groups of their own),
//! dying with its parent (a killed server leaves no orphans writing to a repository), its
//! output in a private per-session log file.

use std::{
    fs,
    os::unix::{
        fs::{DirBuilderExt, OpenOptionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use coffer_api::Kind;

/// Where a session's log lives.
pub fn log_path(home: &Path, kind: Kind, ns: &str, name: &str) -> PathBuf {
    home.join("logs")
        .join(kind.as_str().to_ascii_lowercase())
        .join(ns)
        .join(format!("{name}.log"))
}

/// A running agent.
pub struct Agent {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub child: Child,
    pub started: Instant,
    pub deadline: Option<Instant>,
    /// The session's scratch directory (`COFFER_SESSION_TMPDIR`), removed when the agent is
    /// dropped (after it ended or was killed): what the session's tools leave there
    /// (mariabackup's target directory, garbd's work directory) goes with it, even when the
    /// agent could not clean up. TMPDIR itself stays shared: lock files live there.
    _tmp: Option<tempfile::TempDir>,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the agent and everything it started (its session).
    pub fn kill_group(&mut self) {
        kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

/// SIGTERM to an agent's session — its process group and every process group its children
/// made (a hook's) — then SIGKILL after a short grace. The agent leads both (setsid), so its
/// pid is the group and session id.
pub fn kill_group(leader: i32) {
    let signal_all = |sig: i32| {
        let members = session_members(leader);
        unsafe {
            libc::kill(-leader, sig);
        }
        for pid in &members {
            unsafe {
                libc::kill(*pid, sig);
            }
        }
        !members.is_empty() || unsafe { libc::kill(-leader, 0) } == 0
    };
    signal_all(libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if !signal_all(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL);
}

/// The live processes of session `sid` (zombies excluded: they are already dead).
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state ppid pgrp session ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid)
        })
        .collect()
}

/// True while a process with this pid exists (and has not finished).
pub fn alive(pid: u32) -> bool {
    coffer_repo::lock::process_alive(i64::from(pid))
}

/// A pid that is alive may have been reused by an unrelated process; only a coffer agent counts.
pub fn process_is_agent(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"agent")
        })
        .unwrap_or(false)
}

/// Waits (at most `limit`) until `pid` has fully exited. An agent whose runner was just killed
/// gets its SIGKILL from `PR_SET_PDEATHSIG` but takes a moment to exit: its command line
/// already reads empty while `kill(pid, 0)` still succeeds, and a lock it holds still looks
/// live. Releasing its locks before it is gone would leave them behind.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Starts `coffer agent KIND NAME` for a session that the caller has claimed.
pub fn spawn(
    exe: &Path,
    home: &Path,
    kind: Kind,
    ns: &str,
    name: &str,
    pushgateway: Option<&str>,
    timeout: Option<Duration>,
) -> std::io::Result<Agent> {
    let out = open_log(home, kind, ns, name)?;
    let err = out.try_clone()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("coffer-{}-", kind.as_str().to_ascii_lowercase()))
        .tempdir()
        .map_err(|e| {
            tracing::warn!(
                "cannot create a scratch directory for the session ({e}); it uses TMPDIR"
            );
        })
        .ok();
    let mut cmd = Command::new(exe);
    if let Some(t) = &tmp {
        // Read by coffer_db::process::scratch_dir.
        cmd.env("COFFER_SESSION_TMPDIR", t.path());
    }
    cmd.arg("--home")
        .arg(home)
        .arg("-n")
        .arg(ns)
        .arg("agent")
        .arg(kind.as_str().to_ascii_lowercase())
        .arg(name)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("COFFER_LOG_COLOR", "never");
    match pushgateway {
        Some(p) => cmd.env("COFFER_PUSHGATEWAY", p),
        None => cmd.env_remove("COFFER_PUSHGATEWAY"),
    };
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own: a timeout kills everything in it, whatever process groups
            // the session's children made.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Die with the process that started us: a killed server leaves no agent behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let started = Instant::now();
    Ok(Agent {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        child,
        started,
        deadline: timeout.map(|t| started + t),
        _tmp: tmp,
    })
}

/// Opens (creates, 0600, in a 0700 directory) the log a child process of `kind/ns/name`
/// appends to.
pub(crate) fn open_log(home: &Path, kind: Kind, ns: &str, name: &str) -> std::io::Result<fs::File> {
    let log = log_path(home, kind, ns, name);
    if let Some(dir) = log.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
}
