//! User commands (exec hooks, Functions): run with a time limit, in a process group of their
//! own so that the limit ends everything they started, and with bounded memory however much
//! they print — the session log gets their first lines, error messages their last ones.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a hook or a Function may run when `COFFER_EXEC_TIMEOUT` does not say: a session
/// with a `timeOut` is ended at its deadline anyway, this bounds the ones without.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The last bytes of each stream kept for the error message.
pub const TAIL_BYTES: usize = 4 * 1024;

/// How much of each stream goes to the session log (lines are cut at `LINE_BYTES`).
const LOG_BYTES: usize = 64 * 1024;
const LINE_BYTES: usize = 1024;

/// The time limit for hooks and Functions: `COFFER_EXEC_TIMEOUT` (e.g. `30m`), else the default.
pub fn timeout() -> Duration {
    std::env::var("COFFER_EXEC_TIMEOUT")
        .ok()
        .and_then(|v| coffer_api::duration::parse(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    /// None: it ran past the limit and was killed with everything it started.
    pub status: Option<ExitStatus>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub elapsed: Duration,
}

/// What a stream said: its tail, and how much of it reached the log.
#[derive(Default)]
struct Collected {
    tail: Vec<u8>,
    logged: usize,
    line: Vec<u8>,
}

impl Collected {
    fn take(&mut self, label: &str, warn: bool, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > TAIL_BYTES {
            let cut = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..cut);
        }
        for &b in data {
            if self.logged >= LOG_BYTES {
                return;
            }
            if b == b'\n' || self.line.len() >= LINE_BYTES {
                self.log_line(label, warn);
            }
            if b != b'\n' {
                self.line.push(b);
            }
        }
    }

    fn log_line(&mut self, label: &str, warn: bool) {
        self.logged += self.line.len() + 1;
        let text = String::from_utf8_lossy(&self.line);
        if warn {
            tracing::warn!("{label}: {text}");
        } else {
            tracing::info!("{label}: {text}");
        }
        if self.logged >= LOG_BYTES {
            tracing::warn!("{label}: … more output not logged (only the first {LOG_BYTES} bytes of each stream are)");
        }
        self.line.clear();
    }

    /// Logs the last line, which the stream ended without a newline.
    fn finish(&mut self, label: &str, warn: bool) {
        if !self.line.is_empty() && self.logged < LOG_BYTES {
            self.log_line(label, warn);
        }
    }

    fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).trim().to_string()
    }
}

fn collect(
    label: String,
    warn: bool,
    mut r: impl Read + Send + 'static,
) -> (Arc<Mutex<Collected>>, std::thread::JoinHandle<()>) {
    let c = Arc::new(Mutex::new(Collected::default()));
    let c2 = c.clone();
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c2.lock().unwrap().take(&label, warn, &buf[..n]),
            }
        }
        c2.lock().unwrap().finish(&label, warn);
    });
    (c, t)
}

/// Runs `cmd` (stdin closed) for at most `limit`. Past it, the whole process group gets
/// SIGTERM, then SIGKILL two seconds later. The command also dies if this process does.
pub fn run(label: &str, mut cmd: Command, limit: Duration) -> std::io::Result<Outcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = coffer_db::process::spawn_bound(cmd)?;
    let pgid = child.id() as libc::pid_t;
    let (out, out_t) = collect(
        label.to_string(),
        false,
        child.stdout.take().expect("piped"),
    );
    let (err, err_t) = collect(label.to_string(), true, child.stderr.take().expect("piped"));
    let deadline = start + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            kill_group(pgid, &mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Something it started in the background may hold the pipes open: wait for them only
    // briefly, the tails so far are enough.
    let until = Instant::now() + Duration::from_secs(2);
    for t in [out_t, err_t] {
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    let stdout_tail = out.lock().unwrap().tail_text();
    let stderr_tail = err.lock().unwrap().tail_text();
    Ok(Outcome {
        status,
        stdout_tail,
        stderr_tail,
        elapsed: start.elapsed(),
    })
}

fn kill_group(pgid: libc::pid_t, child: &mut std::process::Child) {
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if matches!(child.try_wait(), Ok(Some(_))) && unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    }

    #[test]
    fn a_command_past_its_limit_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let o = run(
            "test",
            sh(&format!(
                "sleep 60 & echo $! > {p}; echo $$ >> {p}; echo started; sleep 60",
                p = pids.display()
            )),
            Duration::from_millis(700),
        )
        .unwrap();
        assert!(o.status.is_none(), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
        assert_eq!(o.stdout_tail, "started");
        let pids: Vec<i32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 2);
        std::thread::sleep(Duration::from_millis(200));
        for pid in pids {
            assert!(
                !alive(pid),
                "process {pid} of the stopped command still runs"
            );
        }
    }

    fn peak_rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn a_command_printing_100_mb_keeps_only_a_bounded_tail() {
        let before = peak_rss_kib();
        let o = run(
            "test",
            sh(
                "head -c 100000000 /dev/zero | tr '\\0' 'x'; echo; echo last line; \
                head -c 50000000 /dev/zero | tr '\\0' 'y' >&2; echo oops >&2; exit 3",
            ),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(o.status.and_then(|s| s.code()), Some(3), "{:?}", o.status);
        assert!(o.stdout_tail.len() <= TAIL_BYTES && o.stdout_tail.ends_with("last line"));
        assert!(o.stderr_tail.len() <= TAIL_BYTES && o.stderr_tail.ends_with("oops"));
        let grown = peak_rss_kib().saturating_sub(before);
        assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB");
    }
}
