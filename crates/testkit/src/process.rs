//! Child-process plumbing shared by all servers.
//!
//! * Every server runs in its own process group, so a stop signal also reaches any
//!   helper it forks.
//! * Every server gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process
//!   even when that is killed or aborts without running destructors. Linux ties the
//!   death signal to the *thread* that forked the child, and test harnesses run each
//!   test on a short-lived thread, so all children are forked from one spawner thread
//!   that lives as long as the process.

use anyhow::{anyhow, Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the long-lived spawner thread, in a new process group, with a
/// parent-death signal. `what` names the program in error messages.
pub(crate) fn spawn(mut cmd: Command, what: &str) -> Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("coffer-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the coffer-testkit spawner thread");
        Mutex::new(tx)
    });

    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe functions prctl(2), getppid(2) and raise(3).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    let program = format!("{cmd:?}");
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| anyhow!("coffer-testkit spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| anyhow!("coffer-testkit spawner thread is gone"))?
        .with_context(|| format!("cannot start {what}: {program}"))
}

/// Sends `signal` to the process group led by `child`, unless it has been reaped.
fn signal_group(child: &mut Child, signal: libc::c_int) {
    if matches!(child.try_wait(), Ok(None)) {
        // The child leads its own group (process_group(0)), so -pid is its group.
        let pgid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on a process group we created and have not reaped.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Asks the process group to stop with SIGTERM and waits up to `grace`; then SIGKILLs
/// it. Returns the exit status (None if it could not be collected).
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal_group(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    kill(child)
}

/// SIGKILLs the process group and reaps the child.
pub(crate) fn kill(child: &mut Child) -> Option<ExitStatus> {
    signal_group(child, libc::SIGKILL);
    child.wait().ok()
}

/// Polls `probe` every 100 ms until it returns `Ok(Some(value))` or `timeout` elapses.
/// Between attempts it checks that `child` is still running. Errors returned by
/// `probe` are remembered and reported if the wait fails.
pub(crate) fn wait_until<T>(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(anyhow!("{what} exited during startup ({status})"));
        }
        if start.elapsed() > timeout {
            let detail = last_err
                .map(|e| format!("; last error: {e:#}"))
                .unwrap_or_default();
            return Err(anyhow!(
                "{what} was not ready after {}s{detail}",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
