//! Sessions run as child processes (`coffer agent ...`), so a crashing session cannot take the
//! server down: each in its own process group (a timeout kills all of it, mysqldump included),
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
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the agent and everything it started (its process group).
    pub fn kill_group(&mut self) {
        kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

/// SIGTERM to a process group, then SIGKILL after a short grace.
pub fn kill_group(pgid: i32) {
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// True while a process with this pid exists (and has not finished).
pub fn alive(pid: u32) -> bool {
    coffer_repo::lock::process_alive(i64::from(pid))
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
    let log = log_path(home, kind, ns, name);
    if let Some(dir) = log.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
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
        .env("COFFER_LOG_COLOR", "never")
        .process_group(0);
    match pushgateway {
        Some(p) => cmd.env("COFFER_PUSHGATEWAY", p),
        None => cmd.env_remove("COFFER_PUSHGATEWAY"),
    };
    unsafe {
        cmd.pre_exec(|| {
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
    })
}
