//! Runs one BinlogArchive until it is told to stop: streams the binlog of its AppBinding's
//! server (or of one Galera node after another) into segments in its Repository, and keeps
//! its status (phase, conditions, last archived GTID, lag, windows, gaps) current.
//!
//! Where it starts:
//! - an archive with segments resumes at the end state of its newest segment;
//! - an empty archive starts at the GTID state of the newest base backup in the repository
//!   (a snapshot tagged `gtid=`), so a point-in-time restore from that backup is possible as
//!   soon as the first segment is stored; when the server no longer holds (or never held)
//!   that state, or there is no base backup, it starts at the server's `gtid_binlog_pos`
//!   (a base backup taken later lies on the archive's timeline then).
//!
//! What ends a stream:
//! - a broken connection, a corrupt event, a failed repository write: retried from the last
//!   archived (durable) state, after a delay that grows with consecutive failures
//!   ([`coffer_control::pitr::Backoff`]); for Galera every node is tried in turn first;
//! - the server cannot continue the archived history (its binlogs were purged, its history
//!   diverged — RESET MASTER, another server —, or it lacks an archived domain; for Galera:
//!   no node can): a named gap. The `GapDetected` condition says which at once, and the
//!   archive goes on from the oldest transaction the server still has, so the timeline
//!   shows the gap (`status.gaps`) as soon as a segment after it is stored;
//! - a configuration the server refuses (binlog off, wrong checksum, a server_id in use),
//!   an AppBinding or Repository that is missing: the run ends with the error (the
//!   supervisor restarts it with back-off).
//!
//! Maintenance (compaction of the small per-flush snapshots, retention) runs every
//! `maintenance_every` on a thread of its own ([`super::maintain`]): the stream is read and
//! segments are cut and stored meanwhile, so the flush interval holds during it.
//!
//! A clean stop (the stop flag) closes the open segment and stores it first, and stops a
//! maintenance in progress between two of its steps.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use coffer_api::{
    archive::{condition, ArchivePhase, BinlogArchive, BinlogArchiveStatus, GapReason},
    gtid::{GtidState, SegmentMeta},
    meta::set_condition,
    Kind, Resource,
};
use coffer_control::pitr::{self, Backoff, BinlogRetention};
use coffer_db::binlog::{
    self, archive_server_id, BinlogSource, CaptureError, SegmentPolicy, SegmentSink, SegmentWriter,
    StreamOptions,
};
use coffer_repo::{Repo, RepoError};

use super::{
    bases::base_backups,
    maintain::{Maintainer, MaintenanceHook},
    source::{self, Facts, Node},
    store::{RepoSink, SegmentStore},
    track::{self, Tracker},
};
use crate::{
    catalog::{update_status, Catalog},
    error::{status_reason, EngineError},
};

/// How a run behaves besides its spec.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Delays between attempts after consecutive failures inside the run.
    pub backoff: Backoff,
    /// How often small segment snapshots are merged and retention is applied (the first
    /// time as soon as the stream runs).
    pub maintenance_every: Duration,
    /// Consecutive failures after which the run gives up and ends with the error (the
    /// supervisor restarts it later); None: it never gives up by itself.
    pub max_failures: Option<u32>,
    /// Tests only: called by the maintenance thread before it works.
    #[doc(hidden)]
    pub maintenance_hook: Option<MaintenanceHook>,
    /// Where a local backend's repository is reached from: the host's directory (one
    /// machine), or the volume the operator's pod mounts at `mountPath`.
    pub local_mount: coffer_api::repository::LocalMount,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            backoff: Backoff::default(),
            maintenance_every: Duration::from_secs(600),
            max_failures: None,
            maintenance_hook: None,
            local_mount: coffer_api::repository::LocalMount::Host,
        }
    }
}

/// How a run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The stop flag was set; the open segment was stored.
    Stopped,
    /// The archive is paused: nothing was streamed.
    Paused,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("BinlogArchive {archive}: {source}")]
    Capture {
        archive: String,
        source: Box<CaptureError>,
    },
    #[error("BinlogArchive {archive}: its segments in the repository: {source}")]
    Store { archive: String, source: RepoError },
    #[error(
        "the status of BinlogArchive {0} could not be written several times in a row (see the \
         log); the archive stops rather than run unobserved — check the store"
    )]
    Status(String),
}

/// Runs the archive `namespace/name` until `stop` is set (or a fatal error).
pub fn run_archive(
    cat: &dyn Catalog,
    namespace: &str,
    name: &str,
    stop: &AtomicBool,
    opts: &RunOptions,
) -> Result<RunEnd, ArchiveError> {
    let label = format!("{namespace}/{name}");
    let archive = match cat.get(Kind::BinlogArchive, namespace, name) {
        Ok(Some(Resource::BinlogArchive(a))) => a,
        Ok(_) => {
            return Err(EngineError::Missing {
                kind: Kind::BinlogArchive,
                namespace: namespace.into(),
                name: name.into(),
                referenced_by: "the archive runner".into(),
            }
            .into())
        }
        Err(e) => return Err(EngineError::Catalog(e).into()),
    };
    let mut status = StatusOut::new(cat, namespace, name);
    if archive.spec.paused {
        status.write(&mut |st| {
            st.phase = Some(ArchivePhase::Paused);
            streaming_condition(st, false, "Paused", "spec.paused is set");
        })?;
        return Ok(RunEnd::Paused);
    }
    let mut run = match Run::prepare(cat, &archive, stop, opts.clone(), status) {
        Ok(r) => r,
        Err(failed) => {
            let (e, mut status) = *failed;
            tracing::error!("{e}");
            let reason = status_reason(&e.to_string());
            status.write(&mut |st| {
                st.phase = Some(ArchivePhase::Failed);
                st.error = Some(reason.clone());
                streaming_condition(st, false, "Failed", &reason);
            })?;
            return Err(e);
        }
    };
    tracing::info!("archive {label}: starting");
    let end = run.run();
    if let Err(e) = &end {
        let reason = status_reason(&e.to_string());
        let _ = run.status.write(&mut |st| {
            st.phase = Some(ArchivePhase::Backoff);
            st.error = Some(reason.clone());
            streaming_condition(st, false, "Failed", &reason);
        });
    }
    end
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn streaming_condition(st: &mut BinlogArchiveStatus, ok: bool, reason: &str, message: &str) {
    set_condition(
        &mut st.conditions,
        condition::STREAMING,
        ok,
        reason,
        message,
        &pitr::rfc3339(now()),
    );
}

/// Status writes of the runner: only the fields it owns are changed, on what is stored
/// now (the server writes others). A write that fails is retried by `update_status`; if
/// several in a row fail, the run stops with [`ArchiveError::Status`].
struct StatusOut<'a> {
    cat: &'a dyn Catalog,
    namespace: String,
    name: String,
    failed: u32,
}

const STATUS_FAILURES: u32 = 3;

impl<'a> StatusOut<'a> {
    fn new(cat: &'a dyn Catalog, namespace: &str, name: &str) -> Self {
        StatusOut {
            cat,
            namespace: namespace.into(),
            name: name.into(),
            failed: 0,
        }
    }

    fn write(
        &mut self,
        change: &mut dyn FnMut(&mut BinlogArchiveStatus),
    ) -> Result<(), ArchiveError> {
        let written = update_status(
            self.cat,
            Kind::BinlogArchive,
            &self.namespace,
            &self.name,
            &mut |r| {
                if let Resource::BinlogArchive(a) = r {
                    change(a.status.get_or_insert_with(Default::default));
                }
            },
        );
        if written.is_some() {
            self.failed = 0;
            return Ok(());
        }
        self.failed += 1;
        if self.failed >= STATUS_FAILURES {
            return Err(ArchiveError::Status(format!(
                "{}/{}",
                self.namespace, self.name
            )));
        }
        Ok(())
    }
}

/// A [`RepoSink`] that also hands every stored segment's index to the runner.
struct Sink {
    inner: RepoSink,
    stored: Arc<Mutex<Vec<SegmentMeta>>>,
}

impl SegmentSink for Sink {
    type Out = Vec<u8>;

    fn open(&mut self, seq: u64) -> std::io::Result<Vec<u8>> {
        self.inner.open(seq)
    }

    fn close(&mut self, out: Vec<u8>, meta: &SegmentMeta) -> std::io::Result<()> {
        self.inner.close(out, meta)?;
        tracing::debug!(
            "segment {} stored: {} transactions, {} bytes, up to {}",
            meta.seq,
            meta.transactions.len(),
            meta.bytes,
            meta.end_state
        );
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(track::light(meta));
        Ok(())
    }
}

/// What to do after a stream ended with an error.
enum Next {
    /// Reconnect from the archived state after a delay.
    Retry(CaptureError),
    /// The writer's state is not what was stored (a failed repository write): reload it
    /// from the repository, then retry.
    Resync(CaptureError),
    /// The server cannot continue the archived history.
    Gap(GapReason, CaptureError),
    /// Give up: the run ends with this error.
    Fatal(CaptureError),
}

struct Run<'a> {
    label: String,
    status: StatusOut<'a>,
    store: SegmentStore,
    nodes: Vec<Node>,
    galera: bool,
    current: usize,
    stream: StreamOptions,
    policy: SegmentPolicy,
    flush: Duration,
    tracker: Tracker,
    stored: Arc<Mutex<Vec<SegmentMeta>>>,
    stop: &'a AtomicBool,
    opts: RunOptions,
    last_status: Option<Instant>,
    dirty: bool,
    maint: Maintainer,
    /// The node, its connection, and the statement that reads its binlog position there.
    lag_conn: Option<(usize, coffer_db::MysqlConn, &'static str)>,
    retention: BinlogRetention,
    /// A gap detected that no stored segment shows yet.
    pending_gap: Option<(GapReason, String)>,
    fatal: Option<ArchiveError>,
}

type Prepared<'a> = Result<Run<'a>, Box<(ArchiveError, StatusOut<'a>)>>;

impl<'a> Run<'a> {
    fn prepare(
        cat: &'a dyn Catalog,
        a: &BinlogArchive,
        stop: &'a AtomicBool,
        opts: RunOptions,
        status: StatusOut<'a>,
    ) -> Prepared<'a> {
        let ns = a.metadata.namespace().to_string();
        let name = a.metadata.name.clone();
        let label = format!("{ns}/{name}");
        let res = format!("BinlogArchive {label}");
        let invalid = |field: &str, m: String| {
            ArchiveError::Engine(EngineError::Invalid {
                resource: res.clone(),
                message: format!("{field}: {m}"),
            })
        };
        let prepared = (|| -> Result<_, ArchiveError> {
            let flush = a
                .spec
                .flush_interval()
                .map_err(|m| invalid("spec.flushInterval", m))?;
            let max_bytes = a
                .spec
                .segment_max_size()
                .map_err(|m| invalid("spec.segmentMaxSize", m))?;
            let keep = a.spec.keep().map_err(|m| invalid("spec.keep", m))?;
            let ab_ns = a.spec.app_binding.namespace.as_deref().unwrap_or(&ns);
            let ab = match cat
                .get(Kind::AppBinding, ab_ns, &a.spec.app_binding.name)
                .map_err(EngineError::Catalog)?
            {
                Some(Resource::AppBinding(ab)) => ab,
                _ => {
                    return Err(EngineError::Missing {
                        kind: Kind::AppBinding,
                        namespace: ab_ns.into(),
                        name: a.spec.app_binding.name.clone(),
                        referenced_by: format!("spec.appBinding of {res}"),
                    }
                    .into())
                }
            };
            let repo_ns = a.spec.repository.namespace.as_deref().unwrap_or(&ns);
            let repository = crate::resolve::get_repository(
                cat,
                repo_ns,
                &a.spec.repository.name,
                &format!("spec.repository of {res}"),
            )?;
            // On one machine the host's directory; in the operator's Deployment the volume
            // mounted at mountPath.
            let access = crate::resolve::repo_access(cat, &repository, opts.local_mount)?;
            let (repo, created) = Repo::open_or_init(access.store.clone(), &access.password)
                .map_err(EngineError::Repo)?;
            if created {
                tracing::info!("repository {} created", repo.location());
            }
            let nodes = source::nodes(cat, &ab)?;
            let galera = ab.spec.galera().is_some();
            let server_id = a
                .spec
                .server_id
                .unwrap_or_else(|| archive_server_id(&ns, &name));
            Ok((flush, max_bytes, keep, repo, nodes, galera, server_id))
        })();
        let (flush, max_bytes, keep, repo, nodes, galera, server_id) = match prepared {
            Ok(p) => p,
            Err(e) => return Err(Box::new((e, status))),
        };
        // The server proves it is alive at least this often, so an idle stream still closes
        // a due segment in time.
        let heartbeat = (flush / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        // A transaction is durable when the `put` of its segment returns, which is up to one
        // heartbeat after the segment is due plus the write itself: cut segments early enough
        // that both fit in the flush interval (a fifth of it is left for the write).
        let cut_after = segment_cut_after(flush, heartbeat);
        let store = SegmentStore::new(repo, &label);
        let maint = Maintainer::new(
            &store,
            keep,
            opts.maintenance_every,
            opts.maintenance_hook.clone(),
        );
        Ok(Run {
            status,
            store,
            label,
            nodes,
            galera,
            current: 0,
            stream: StreamOptions {
                server_id,
                heartbeat,
            },
            policy: SegmentPolicy {
                flush_interval: cut_after,
                max_bytes,
            },
            flush,
            tracker: Tracker::default(),
            stored: Arc::new(Mutex::new(Vec::new())),
            stop,
            opts,
            last_status: None,
            dirty: true,
            maint,
            lag_conn: None,
            retention: BinlogRetention::Unknown,
            pending_gap: None,
            fatal: None,
        })
    }

    fn store_err(&self, e: RepoError) -> ArchiveError {
        ArchiveError::Store {
            archive: self.label.clone(),
            source: e,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn new_writer(&self, start: GtidState, first_seq: u64) -> SegmentWriter<Sink> {
        SegmentWriter::new(
            &self.label,
            first_seq,
            start,
            self.policy,
            Sink {
                inner: RepoSink::new(self.store.clone()),
                stored: self.stored.clone(),
            },
        )
    }

    /// Reads what the repository holds (a maintenance in progress is stopped first: the
    /// listing then sees no snapshot vanish under it).
    fn reload(&mut self) -> Result<(), ArchiveError> {
        self.maint.cancel();
        let list = self.store.list().map_err(|e| self.store_err(e))?;
        self.tracker = Tracker::from_summaries(&list);
        self.dirty = true;
        Ok(())
    }

    fn run(&mut self) -> Result<RunEnd, ArchiveError> {
        self.reload()?;
        let mut writer = self
            .tracker
            .end_state()
            .cloned()
            .map(|s| self.new_writer(s, self.tracker.next_seq()));
        let mut failures = 0u32;
        while !self.stopping() {
            let opened = match &writer {
                Some(w) => {
                    let start = w.state().clone();
                    self.open_any(&start).map(|s| (s, None))
                }
                None => self.initial_start().map(|(st, s)| (s, Some(st))),
            };
            let result = match opened {
                Ok((mut src, fresh)) => {
                    if let Some(st) = fresh {
                        writer = Some(self.new_writer(st, self.tracker.next_seq()));
                    }
                    let w = writer
                        .as_mut()
                        .expect("a writer exists once a stream is open");
                    failures = 0;
                    self.streaming(&src)?;
                    let r = binlog::capture(&mut src, w, |_| self.on_event());
                    self.absorb();
                    if let Some(e) = self.fatal.take() {
                        return Err(e);
                    }
                    self.progress(true)?;
                    r
                }
                Err(e) => Err(e),
            };
            let Err(e) = result else {
                continue; // stopped: the loop condition ends it
            };
            match self.classify(e) {
                Next::Retry(e) => self.back_off(&mut failures, &e)?,
                Next::Resync(e) => {
                    self.back_off(&mut failures, &e)?;
                    self.reload()?;
                    writer = self
                        .tracker
                        .end_state()
                        .cloned()
                        .map(|s| self.new_writer(s, self.tracker.next_seq()));
                }
                Next::Gap(reason, e) => match self.jump_gap(reason, &e) {
                    Ok(start) => {
                        let next = writer
                            .as_ref()
                            .map_or(self.tracker.next_seq(), |w| w.next_seq());
                        writer = Some(self.new_writer(start, next));
                    }
                    Err(e) => self.back_off(&mut failures, &e)?,
                },
                Next::Fatal(e) => {
                    return Err(ArchiveError::Capture {
                        archive: self.label.clone(),
                        source: Box::new(e),
                    })
                }
            }
        }
        self.absorb();
        if let Some(t) = self.maint.cancel() {
            self.tracker = t;
            self.progress(true)?;
        }
        self.status.write(&mut |st| {
            st.phase = Some(ArchivePhase::Pending);
            st.lag_seconds = None;
            streaming_condition(st, false, "Stopped", "the archive runner was stopped");
        })?;
        tracing::info!("archive {}: stopped", self.label);
        Ok(RunEnd::Stopped)
    }

    /// The start of an empty archive: the newest base backup's state when a node can serve
    /// it, else the server's current position.
    fn initial_start(&mut self) -> Result<(GtidState, BinlogSource), CaptureError> {
        let base = match self.store.repo().snapshots() {
            Ok(s) => base_backups(&s).into_iter().next(),
            Err(e) => {
                tracing::warn!(
                    "cannot list the base backups of archive {}: {e}",
                    self.label
                );
                None
            }
        };
        if let Some(b) = base {
            match self.open_any(&b.state) {
                Ok(src) => {
                    tracing::info!(
                        "archive {}: starting at base backup {} ({})",
                        self.label,
                        b.snapshot,
                        b.state
                    );
                    return Ok((b.state, src));
                }
                Err(e) if e.retryable() => return Err(e),
                Err(e) => tracing::warn!(
                    "archive {}: cannot start at base backup {} ({}): {e}; starting at the \
                     server's current position (a base backup taken from now on is covered)",
                    self.label,
                    b.snapshot,
                    b.state
                ),
            }
        }
        let pos = self.current_pos()?;
        tracing::info!(
            "archive {}: empty, starting at the server's position `{pos}`",
            self.label
        );
        let src = self.open_any(&pos)?;
        Ok((pos, src))
    }

    /// `gtid_binlog_pos` of the first node that answers (the current one first).
    fn current_pos(&mut self) -> Result<GtidState, CaptureError> {
        let mut last = None;
        for i in self.order() {
            match Facts::binlog_pos(&self.nodes[i]) {
                Ok(p) => {
                    self.current = i;
                    return Ok(p);
                }
                Err(e) => last = Some(CaptureError::Db(e)),
            }
        }
        Err(last.expect("an AppBinding has at least one node"))
    }

    /// The nodes in the order they are tried: the current one, then the others.
    fn order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        (0..n).map(|k| (self.current + k) % n).collect()
    }

    /// Opens a stream after `start` on the first node that can serve it. Only a node whose
    /// binlog holds every archived domain at or after the archived state can
    /// (`binlog::open` checks it).
    fn open_any(&mut self, start: &GtidState) -> Result<BinlogSource, CaptureError> {
        let mut errors: Vec<CaptureError> = Vec::new();
        for i in self.order() {
            let node = &self.nodes[i];
            match binlog::open(&node.spec, &node.files, self.stream, start) {
                Ok(src) => {
                    if i != self.current {
                        tracing::info!(
                            "archive {}: now reading {} (after {})",
                            self.label,
                            node.address(),
                            self.nodes[self.current].address()
                        );
                    }
                    self.current = i;
                    return Ok(src);
                }
                Err(e) => {
                    tracing::warn!("archive {}: {}: {e}", self.label, node.address());
                    let fatal = matches!(
                        e,
                        CaptureError::ServerIdInUse { .. } | CaptureError::Unsupported { .. }
                    );
                    errors.push(e);
                    if fatal && !self.galera {
                        break;
                    }
                }
            }
        }
        // A node that could not be reached may still hold what the others lack: retrying
        // wins over a gap; a gap is declared only when every node says so.
        let pick = errors
            .iter()
            .position(|e| e.retryable())
            .or_else(|| {
                errors.iter().position(|e| {
                    matches!(
                        e,
                        CaptureError::Purged { .. }
                            | CaptureError::Diverged { .. }
                            | CaptureError::UnknownDomain { .. }
                            | CaptureError::Ahead { .. }
                    )
                })
            })
            .unwrap_or(0);
        Err(errors.swap_remove(pick))
    }

    fn classify(&self, e: CaptureError) -> Next {
        if e.retryable() {
            return Next::Retry(e);
        }
        match e {
            CaptureError::Purged { .. } => Next::Gap(GapReason::Purged, e),
            CaptureError::Diverged { .. } => Next::Gap(GapReason::Diverged, e),
            CaptureError::UnknownDomain { .. } => Next::Gap(GapReason::UnknownDomain, e),
            // Every node is behind the archive: its history went back (RESET MASTER and new
            // writes, a server restored from an older backup).
            CaptureError::Ahead { .. } => Next::Gap(GapReason::Diverged, e.into_diverged()),
            CaptureError::Corrupt { .. } => Next::Retry(e),
            CaptureError::Sink(_) => Next::Resync(e),
            _ => Next::Fatal(e),
        }
    }

    /// A gap: named in the status now; the archive continues from the oldest transaction the
    /// server still has (its oldest binlog's start), or from its current position.
    fn jump_gap(&mut self, reason: GapReason, e: &CaptureError) -> Result<GtidState, CaptureError> {
        let node = &self.nodes[self.current];
        let start = match Facts::oldest_binlog_start(node) {
            Ok(Some(s)) => s,
            Ok(None) => Facts::binlog_pos(node).map_err(CaptureError::Db)?,
            Err(e) => return Err(CaptureError::Db(e)),
        };
        let message = format!(
            "{e}; archiving continues from `{start}` ({}): a restore cannot cross this gap — \
             take a new base backup",
            node.address()
        );
        tracing::error!("archive {}: {message}", self.label);
        self.pending_gap = Some((reason, status_reason(&message)));
        let reason_s = reason.as_str();
        let msg = status_reason(&message);
        self.status
            .write(&mut |st| {
                set_condition(
                    &mut st.conditions,
                    condition::GAP_DETECTED,
                    true,
                    reason_s,
                    &msg,
                    &pitr::rfc3339(now()),
                );
            })
            .map_err(|_| CaptureError::Connection {
                target: self.label.clone(),
                reason: "the status could not be written".into(),
            })?;
        Ok(start)
    }

    /// Waits before the next attempt, saying so in the status.
    fn back_off(&mut self, failures: &mut u32, e: &CaptureError) -> Result<(), ArchiveError> {
        *failures += 1;
        if self.opts.max_failures.is_some_and(|m| *failures >= m) {
            return Err(ArchiveError::Capture {
                archive: self.label.clone(),
                source: Box::new(CaptureError::Connection {
                    target: self.nodes[self.current].spec.label.clone(),
                    reason: format!("{} attempts in a row failed; the last: {e}", failures),
                }),
            });
        }
        let delay = self.opts.backoff.delay(*failures);
        let reason = status_reason(&e.to_string());
        tracing::warn!(
            "archive {}: {e}; attempt {} in {}",
            self.label,
            *failures + 1,
            coffer_api::duration::format(delay)
        );
        let n = *failures;
        let next = pitr::rfc3339(now() + delay.as_secs() as i64);
        self.status.write(&mut |st| {
            st.phase = Some(ArchivePhase::Backoff);
            st.failures = Some(n);
            st.next_attempt = Some(next.clone());
            st.error = Some(reason.clone());
            streaming_condition(st, false, "Disconnected", &reason);
        })?;
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stopping() {
            std::thread::sleep(Duration::from_millis(100).min(delay));
        }
        Ok(())
    }

    /// Connected: the status says so.
    fn streaming(&mut self, src: &BinlogSource) -> Result<(), ArchiveError> {
        let node = &self.nodes[self.current];
        self.retention = Facts::retention(node);
        let source = format!("{} (server_id {})", node.address(), src.server().server_id);
        tracing::info!("archive {}: streaming from {source}", self.label);
        let retention = match self.retention {
            BinlogRetention::Seconds(s) => Some(s),
            BinlogRetention::Never => Some(0),
            BinlogRetention::Unknown => None,
        };
        let t = pitr::rfc3339(now());
        self.status.write(&mut |st| {
            st.phase = Some(ArchivePhase::Streaming);
            st.source = Some(source.clone());
            st.error = None;
            st.failures = None;
            st.next_attempt = None;
            st.last_running_time = Some(t.clone());
            st.binlog_retention_seconds = retention;
            streaming_condition(st, true, "Connected", &format!("reading {source}"));
        })?;
        self.dirty = true;
        Ok(())
    }

    /// Called after every event (heartbeats included): takes stored segments into account,
    /// picks up an ended maintenance's listing, writes the status when due, starts
    /// maintenance when due (it runs beside the stream). True stops the stream.
    fn on_event(&mut self) -> bool {
        if self.stopping() {
            return true;
        }
        self.absorb();
        if let Some(t) = self.maint.finished() {
            self.tracker = t;
            self.dirty = true;
        }
        if let Err(e) = self.progress(false) {
            self.fatal = Some(e);
            return true;
        }
        self.maint.start_if_due();
        false
    }

    fn absorb(&mut self) {
        let stored: Vec<SegmentMeta> =
            std::mem::take(&mut *self.stored.lock().unwrap_or_else(|p| p.into_inner()));
        if stored.is_empty() {
            return;
        }
        for m in &stored {
            self.tracker.push(m);
            self.maint.stored(m);
        }
        self.pending_gap = None;
        self.dirty = true;
    }

    /// Writes the archive's progress: after stored segments at most once per flush
    /// interval, and every 30 s anyway (lag, last running time); `force` writes now.
    fn progress(&mut self, force: bool) -> Result<(), ArchiveError> {
        let since = self.last_status.map(|t| t.elapsed());
        let due = force
            || since
                .is_none_or(|s| (self.dirty && s >= self.flush) || s >= Duration::from_secs(30));
        if !due {
            return Ok(());
        }
        let lag = self.lag();
        let mut tracker_status = BinlogArchiveStatus::default();
        self.tracker.fill(&mut tracker_status);
        let gap = self.pending_gap.clone().or_else(|| {
            self.tracker
                .gaps
                .last()
                .map(|g| (g.reason, status_reason(&g.to_string())))
        });
        let t = pitr::rfc3339(now());
        self.status.write(&mut |st| {
            st.segment_count = tracker_status.segment_count;
            st.archived_bytes = tracker_status.archived_bytes;
            st.recoverable_windows = tracker_status.recoverable_windows.clone();
            st.gaps = tracker_status.gaps.clone();
            if tracker_status.last_archived_gtid.is_some() {
                st.last_archived_gtid = tracker_status.last_archived_gtid.clone();
            }
            if tracker_status.last_event_time.is_some() {
                st.last_event_time = tracker_status.last_event_time.clone();
            }
            st.lag_seconds = lag;
            if st.phase == Some(ArchivePhase::Streaming) {
                st.last_running_time = Some(t.clone());
            }
            match &gap {
                Some((reason, msg)) => set_condition(
                    &mut st.conditions,
                    condition::GAP_DETECTED,
                    true,
                    reason.as_str(),
                    msg,
                    &t,
                ),
                // StoppedTooLong is the supervisor's to set and clear.
                None => {
                    let theirs =
                        coffer_api::meta::get_condition(&st.conditions, condition::GAP_DETECTED)
                            .is_some_and(|c| c.reason == condition::REASON_STOPPED_TOO_LONG);
                    if !theirs {
                        set_condition(
                            &mut st.conditions,
                            condition::GAP_DETECTED,
                            false,
                            "NoGap",
                            "the archived timeline has no gap",
                            &t,
                        );
                    }
                }
            }
        })?;
        self.last_status = Some(Instant::now());
        self.dirty = false;
        Ok(())
    }

    /// How far the repository is behind the server: 0 when every transaction in the
    /// server's binlog is stored; else the age of the last stored commit (the server's newer
    /// ones are younger). None when the server cannot be asked.
    fn lag(&mut self) -> Option<f64> {
        use coffer_db::mysql_prelude::Queryable;
        let i = self.current;
        if self.lag_conn.as_ref().is_none_or(|(n, _, _)| *n != i) {
            let node = &self.nodes[i];
            self.lag_conn = coffer_db::connect_control(&node.spec, &node.files)
                .ok()
                .and_then(|mut c| {
                    let statement = source::position_statement(&node.spec, &mut c).ok()?;
                    Some((i, c, statement))
                });
        }
        let (_, c, statement) = self.lag_conn.as_mut()?;
        let pos: Option<String> = match c.query_first(*statement) {
            Ok(p) => p,
            Err(_) => {
                self.lag_conn = None;
                return None;
            }
        };
        // MySQL writes a long gtid_executed over several lines.
        let pos = pos.map(|p| p.replace('\n', ""));
        let pos: GtidState = pos.unwrap_or_default().parse().ok()?;
        let durable = self.tracker.end_state().cloned().unwrap_or_default();
        if durable.covers(&pos) {
            return Some(0.0);
        }
        self.tracker.last_time().map(|t| (now() - t).max(0) as f64)
    }
}

/// How long a segment stays open so that its last transaction is durable within `flush`:
/// the heartbeat that notices it is due comes up to one period late, and a fifth of the
/// interval is left for writing it.
fn segment_cut_after(flush: Duration, heartbeat: Duration) -> Duration {
    flush.saturating_sub(heartbeat + flush / 5).max(heartbeat)
}

#[cfg(test)]
mod cut_tests {
    use super::segment_cut_after;
    use std::time::Duration;

    #[test]
    fn segments_are_cut_so_the_heartbeat_and_the_write_fit_in_the_flush_interval() {
        let ms = Duration::from_millis;
        for (flush, heartbeat, cut) in [
            (5_000, 500, 3_500),
            (1_000, 100, 700),
            (60_000, 1_000, 47_000),
            (200, 100, 100),
        ] {
            assert_eq!(
                segment_cut_after(ms(flush), ms(heartbeat)),
                ms(cut),
                "{flush} ms"
            );
        }
    }
}
