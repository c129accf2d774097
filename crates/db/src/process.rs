//! Child client processes: their stderr kept in a bounded tail for error messages, their exit
//! judged, and nothing left running when we give up on them.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

const STDERR_TAIL: usize = 8 * 1024;

/// Collects the last few KiB of a child's stderr on a thread and logs each line.
pub(crate) struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrTail {
    pub(crate) fn start(program: &'static str, stderr: impl Read + Send + 'static) -> Self {
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
