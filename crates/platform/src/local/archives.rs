//! Binlog archives on the local platform. `coffer archive NAME` runs one in the foreground
//! ([`run_foreground`]); `coffer server` runs every archive that is not paused as a child
//! process of its own (`coffer archive NAME`, its own session and log, dying with the
//! server), restarted with back-off when it ends with an error, stopped when the archive is
//! paused or deleted, and stopped cleanly (SIGTERM: the open segment is stored) when the
//! server stops. What to do is `coffer_control::pitr::supervise`'s decision.
//!
//! A process per archive rather than a thread: an archive runs for months, a stuck or
//! crashing stream cannot take the server (or another archive) down, and its log is its own.

use std::{
    collections::HashMap,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use coffer_api::{
    archive::{condition, ArchivePhase, BinlogArchive},
    meta::{get_condition, set_condition},
    Kind, Resource,
};
use coffer_control::pitr::{self, ArchiveObserved, Backoff, BinlogRetention, RunnerAction};
use coffer_engine::archive::{run_archive, ArchiveError, RunEnd, RunOptions};

use super::{runner, store::Store};

/// Runs the archive here until SIGINT or SIGTERM.
pub fn run_foreground(store: &Store, ns: &str, name: &str) -> Result<RunEnd, ArchiveError> {
    run_until_signal(store, ns, name, &RunOptions::default())
}

/// Runs the archive on any platform's catalog until SIGINT or SIGTERM (the open segment is
/// stored first): `coffer archive` on one machine, and in the operator's Deployment, whose
/// pod Kubernetes stops with SIGTERM.
pub fn run_until_signal(
    cat: &dyn coffer_engine::Catalog,
    ns: &str,
    name: &str,
    opts: &RunOptions,
) -> Result<RunEnd, ArchiveError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            tracing::warn!("cannot handle signal {sig}: {e}");
        }
    }
    run_archive(cat, ns, name, &stop, opts)
}

type Key = (String, String);

struct Supervised {
    child: Option<Child>,
    failures: u32,
    last_exit: Option<i64>,
    /// When SIGTERM was sent (the archive was paused or deleted).
    stopping: Option<Instant>,
}

/// The server's archive runners.
#[derive(Default)]
pub struct Archives {
    running: HashMap<Key, Supervised>,
    backoff: Backoff,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn ts(s: Option<&str>) -> Option<i64> {
    s.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

impl Archives {
    /// One pass: reap, decide, start, stop.
    pub fn tick(&mut self, store: &Store, exe: &Path, home: &Path) {
        let archives: Vec<BinlogArchive> = store
            .list(Kind::BinlogArchive, None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| match r {
                Resource::BinlogArchive(a) => Some(a),
                _ => None,
            })
            .collect();
        // Deleted archives: stop their runners.
        let live: Vec<Key> = archives
            .iter()
            .map(|a| (a.metadata.namespace().to_string(), a.metadata.name.clone()))
            .collect();
        for (key, sup) in self.running.iter_mut() {
            if !live.contains(key) {
                terminate(sup);
            }
        }
        for a in &archives {
            let key = (a.metadata.namespace().to_string(), a.metadata.name.clone());
            let sup = self.running.entry(key.clone()).or_insert(Supervised {
                child: None,
                failures: a.status.as_ref().and_then(|s| s.failures).unwrap_or(0),
                last_exit: None,
                stopping: None,
            });
            reap(&key, sup);
            let st = a.status.clone().unwrap_or_default();
            let observed = ArchiveObserved {
                archive: format!("{}/{}", key.0, key.1),
                paused: a.spec.paused,
                running: sup.child.is_some(),
                failures: sup.failures,
                last_exit: sup.last_exit,
                last_streaming: ts(st.last_running_time.as_deref()),
                binlog_retention: match st.binlog_retention_seconds {
                    Some(0) => BinlogRetention::Never,
                    Some(s) => BinlogRetention::Seconds(s),
                    None => BinlogRetention::Unknown,
                },
                now: now(),
            };
            let decision = pitr::supervise(&observed, &self.backoff);
            match decision.action {
                RunnerAction::Start => match spawn(exe, home, &key.0, &key.1) {
                    Ok(c) => {
                        tracing::info!(
                            "binlog archive {}/{} started (pid {})",
                            key.0,
                            key.1,
                            c.id()
                        );
                        sup.child = Some(c);
                    }
                    Err(e) => {
                        tracing::error!("cannot start binlog archive {}/{}: {e}", key.0, key.1);
                        sup.failures += 1;
                        sup.last_exit = Some(now());
                    }
                },
                RunnerAction::StartAt(at) => {
                    let next = pitr::rfc3339(at);
                    if st.next_attempt.as_deref() != Some(next.as_str())
                        || st.phase != Some(ArchivePhase::Backoff)
                    {
                        let n = sup.failures;
                        write(store, &key, &mut |s| {
                            s.phase = Some(ArchivePhase::Backoff);
                            s.failures = Some(n);
                            s.next_attempt = Some(next.clone());
                        });
                    }
                }
                RunnerAction::Stop => terminate(sup),
                RunnerAction::Nothing => {
                    if a.spec.paused
                        && sup.child.is_none()
                        && st.phase != Some(ArchivePhase::Paused)
                    {
                        write(store, &key, &mut |s| {
                            s.phase = Some(ArchivePhase::Paused);
                            s.lag_seconds = None;
                        });
                    }
                }
            }
            let stored_too_long = get_condition(&st.conditions, condition::GAP_DETECTED)
                .is_some_and(|c| c.is_true() && c.reason == condition::REASON_STOPPED_TOO_LONG);
            match decision.stopped_too_long {
                Some(s) if !stored_too_long => {
                    let msg = s.to_string();
                    tracing::error!("{msg}");
                    write(store, &key, &mut |st| {
                        set_condition(
                            &mut st.conditions,
                            condition::GAP_DETECTED,
                            true,
                            condition::REASON_STOPPED_TOO_LONG,
                            &msg,
                            &pitr::rfc3339(now()),
                        )
                    });
                }
                None if stored_too_long => write(store, &key, &mut |st| {
                    set_condition(
                        &mut st.conditions,
                        condition::GAP_DETECTED,
                        false,
                        "Resumed",
                        "the archive streams again; a Purged gap shows if transactions were lost",
                        &pitr::rfc3339(now()),
                    )
                }),
                _ => {}
            }
        }
        self.running
            .retain(|k, sup| live.contains(k) || sup.child.is_some());
    }

    /// Stops every runner: SIGTERM (each stores its open segment), SIGKILL to what is left
    /// after `grace`.
    pub fn shutdown(&mut self, grace: Duration) {
        for sup in self.running.values_mut() {
            terminate(sup);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until
            && self.running.values_mut().any(|s| {
                s.child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            })
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        for (key, sup) in self.running.iter_mut() {
            if let Some(mut c) = sup.child.take() {
                if matches!(c.try_wait(), Ok(None)) {
                    tracing::warn!(
                        "binlog archive {}/{} did not stop within the grace; killed",
                        key.0,
                        key.1
                    );
                    runner::kill_group(c.id() as i32);
                }
                let _ = c.wait();
            }
        }
    }
}

fn write(
    store: &Store,
    key: &Key,
    change: &mut dyn FnMut(&mut coffer_api::archive::BinlogArchiveStatus),
) {
    // update_status logs a write it could not make; the next pass decides again.
    coffer_engine::update_status(store, Kind::BinlogArchive, &key.0, &key.1, &mut |r| {
        if let Resource::BinlogArchive(a) = r {
            change(a.status.get_or_insert_with(Default::default));
        }
    });
}

/// Notices a runner that ended: a clean exit resets the failures, an error counts one.
fn reap(key: &Key, sup: &mut Supervised) {
    let Some(c) = sup.child.as_mut() else { return };
    let Ok(Some(status)) = c.try_wait() else {
        return;
    };
    sup.child = None;
    sup.last_exit = Some(now());
    if status.success() || sup.stopping.is_some() {
        sup.failures = 0;
        tracing::info!("binlog archive {}/{} stopped", key.0, key.1);
    } else {
        sup.failures += 1;
        tracing::warn!(
            "binlog archive {}/{} ended with {status} (failure {}); see its log",
            key.0,
            key.1,
            sup.failures
        );
    }
    sup.stopping = None;
}

/// SIGTERM, once; the runner stores its open segment and exits.
fn terminate(sup: &mut Supervised) {
    if let (Some(c), None) = (&sup.child, sup.stopping) {
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        sup.stopping = Some(Instant::now());
    }
}

/// Starts `coffer archive NAME` with its own session and log, dying with the server.
fn spawn(exe: &Path, home: &Path, ns: &str, name: &str) -> std::io::Result<Child> {
    let out = runner::open_log(home, Kind::BinlogArchive, ns, name)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(home)
        .arg("-n")
        .arg(ns)
        .arg("archive")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("COFFER_LOG_COLOR", "never");
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
