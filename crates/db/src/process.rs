//! Child processes: started so that they end with the session, their stderr kept in a bounded
//! tail for error messages, their exit judged, and nothing left running when we give up on them.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    process::{Child, Command, ExitStatus},
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread::JoinHandle,
};

/// Names the session's scratch directory, which the process that started the agent removes
/// when the agent ends, however it ends.
pub const SESSION_TMPDIR: &str = "COFFER_SESSION_TMPDIR";

/// Where a session's temporary directories go: its scratch directory, else TMPDIR.
pub fn scratch_dir() -> std::path::PathBuf {
    std::env::var_os(SESSION_TMPDIR)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread every bound child is forked from. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked the child ends, not the process, so children must come from a thread that lives
/// as long as the process; session threads (dump workers, hook runners) come and go.
fn spawner() -> Option<&'static mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name("coffer-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts `cmd` so that the child cannot outlive this process: it stays in our process group
/// (a group kill of the session reaches it) and gets SIGKILL when we die, even by SIGKILL
/// (`PR_SET_PDEATHSIG`, armed between fork and exec, forked from a thread that lives as long
/// as the process). Its own children are not covered by the death signal; they are reached by
/// the group kill of a server or `coffer backup --wait` that times the session out.
pub fn spawn_bound(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We may have died between fork and prctl; then no signal would ever come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let Some(spawner) = spawner() else {
        return Err(std::io::Error::other(
            "cannot start the thread that starts child processes",
        ));
    };
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the child-starting thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the child-starting thread is gone"))?
}

const STDERR_TAIL: usize = 8 * 1024;

/// Collects the last few KiB of a child's stderr on a thread and logs each line.
pub(crate) struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

/// Called with each line a child writes to stderr, on the thread that reads it.
pub type LineWatch = Box<dyn FnMut(&str) + Send>;

impl StderrTail {
    pub(crate) fn start(program: &'static str, stderr: impl Read + Send + 'static) -> Self {
        Self::watching(program, stderr, None)
    }

    /// Like `start`, and `watch` sees every line as it comes.
    pub(crate) fn watching(
        program: &'static str,
        stderr: impl Read + Send + 'static,
        mut watch: Option<LineWatch>,
    ) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{program}-stderr"))
            .spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = Vec::new();
                while let Ok(n) = r.read_until(b'\n', &mut line) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&line);
                    tracing::info!(target: "coffer::client", "{program}: {}", text.trim_end());
                    if let Some(w) = watch.as_mut() {
                        w(text.trim_end());
                    }
                    let mut g = b.lock().unwrap();
                    g.extend_from_slice(&line);
                    if g.len() > STDERR_TAIL {
                        let cut = g.len() - STDERR_TAIL;
                        g.drain(..cut);
                    }
                    line.clear();
                }
            })
            .ok();
        Self { buf, thread }
    }

    /// Waits for the stream to end and returns what it said, trimmed.
    pub(crate) fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }

    pub(crate) fn text(&self) -> String {
        let g = self.buf.lock().unwrap();
        String::from_utf8_lossy(&g).trim().to_string()
    }
}

/// Ends a child we no longer need: SIGTERM, then SIGKILL if it lingers.
pub(crate) fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// A bound child started from a short-lived thread keeps running after that thread ends
    /// (the death signal follows the spawner thread, not the caller's).
    #[test]
    fn a_bound_child_outlives_the_thread_that_asked_for_it() {
        let mut child = std::thread::spawn(|| {
            let mut c = Command::new("sleep");
            c.arg("30");
            spawn_bound(c).unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            matches!(state(child.id()), Some(s) if s != 'Z'),
            "the child died with its requesting thread"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The death signal is armed: a bound child of a process killed with SIGKILL dies too.
    #[test]
    fn a_bound_child_dies_with_a_killed_parent() {
        // The parent is this test binary re-run as a helper that starts a bound `sleep`.
        if let Ok(out) = std::env::var("COFFER_TEST_BOUND_CHILD_PID_FILE") {
            let mut c = Command::new("sleep");
            c.arg("60");
            let mut child = spawn_bound(c).unwrap();
            std::fs::write(&out, child.id().to_string()).unwrap();
            // Killed while waiting here.
            let _ = child.wait();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::a_bound_child_dies_with_a_killed_parent",
                "--nocapture",
            ])
            .env("COFFER_TEST_BOUND_CHILD_PID_FILE", &pid_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let pid: u32 = loop {
            if let Some(p) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the helper never started its child"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        helper.kill().unwrap();
        helper.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(state(pid), Some(s) if s != 'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} outlived its SIGKILLed parent"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
