//! Progress of a long transfer: bytes and rate, logged every few seconds to the session log
//! (and so to the terminal of whoever runs it).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::format;

pub struct Progress {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(what: &'static str, counter: Arc<AtomicU64>, every: Duration) -> Progress {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coffer-progress".into())
            .spawn(move || {
                let start = Instant::now();
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().unwrap();
                loop {
                    let (g, _) = cv.wait_timeout(stopped, every).unwrap();
                    stopped = g;
                    if *stopped {
                        return;
                    }
                    let bytes = counter.load(Ordering::Relaxed);
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(
                        "{what} {} in {:.0}s ({}/s)",
                        format::size(bytes),
                        secs,
                        format::size((bytes as f64 / secs) as u64)
                    );
                }
            })
            .ok();
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
