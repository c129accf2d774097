//! The archive's maintenance — compaction of the small per-flush snapshots and retention —
//! on a thread of its own, so that the stream is read, segments are cut and stored while
//! it runs: the flush interval holds during a compaction of months of history (which takes
//! seconds, and would otherwise stall the stream for as long).
//!
//! The worker has its own [`SegmentStore`] on the same repository (puts and a compaction
//! cannot conflict: see the store's module docs). When it ends it hands back the listing it
//! took; the runner rebuilds its [`Tracker`] from it plus the segments stored since the
//! maintenance began ([`Tracker::listed_then`]), so none is lost or counted twice. One
//! maintenance at a time; a failed one is logged and the next is tried one period later. At
//! shutdown the runner cancels it: it stops between two merges (each crash-safe) and is
//! joined, so no thread outlives the run and no repository lock is left behind.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use coffer_api::{archive::Keep, gtid::SegmentMeta};
use coffer_control::pitr;
use coffer_repo::RepoError;

use super::{
    bases::base_backups,
    store::{SegmentStore, SegmentSummary},
    track::{self, Tracker},
};

/// Called by the maintenance thread before it starts its work. For tests that hold a
/// maintenance in progress (to show that the stream goes on meanwhile); None in service.
#[derive(Clone)]
pub struct MaintenanceHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for MaintenanceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaintenanceHook")
    }
}

/// The runner's side of the maintenance thread.
pub(crate) struct Maintainer {
    store: SegmentStore,
    label: String,
    keep: Keep,
    every: Duration,
    hook: Option<MaintenanceHook>,
    /// When the last one began; None: due now (the first runs as soon as the stream does).
    last: Option<Instant>,
    running: Option<InFlight>,
}

struct InFlight {
    handle: JoinHandle<Option<Vec<SegmentSummary>>>,
    cancel: Arc<AtomicBool>,
    /// Segments stored since it began (light metas, a few per flush interval).
    stored: Vec<SegmentMeta>,
}

impl Maintainer {
    pub fn new(
        store: &SegmentStore,
        keep: Keep,
        every: Duration,
        hook: Option<MaintenanceHook>,
    ) -> Maintainer {
        Maintainer {
            store: store.clone(),
            label: store.archive().to_string(),
            keep,
            every,
            hook,
            last: None,
            running: None,
        }
    }

    /// Starts a maintenance when one is due and none runs.
    pub fn start_if_due(&mut self) {
        if self.running.is_some() || self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let cancel = Arc::new(AtomicBool::new(false));
        // Its own store: its own caches, and cancellable.
        let store = SegmentStore::new(self.store.repo().clone(), self.store.archive())
            .cancelled_by(cancel.clone());
        let (label, keep, hook) = (self.label.clone(), self.keep, self.hook.clone());
        let spawned = std::thread::Builder::new()
            .name("coffer-archive-maintenance".into())
            .spawn(move || {
                if let Some(h) = hook {
                    (h.0)();
                }
                maintain(&store, &label, keep)
            });
        match spawned {
            Ok(handle) => {
                self.running = Some(InFlight {
                    handle,
                    cancel,
                    stored: Vec::new(),
                })
            }
            Err(e) => tracing::warn!("archive {}: cannot start maintenance: {e}", self.label),
        }
    }

    /// A segment was stored (the runner's tracker has it): remembered while a maintenance
    /// runs, whose listing may have been taken before it.
    pub fn stored(&mut self, meta: &SegmentMeta) {
        if let Some(r) = &mut self.running {
            r.stored.push(meta.clone());
        }
    }

    /// When the maintenance in progress has ended: the tracker of what the repository now
    /// holds (None: none ended, or its listing failed: the runner's tracker stays).
    pub fn finished(&mut self) -> Option<Tracker> {
        if !self.running.as_ref()?.handle.is_finished() {
            return None;
        }
        self.join()
    }

    /// Stops the maintenance in progress at its next step and waits for it (shutdown, or
    /// the runner must list the repository itself).
    pub fn cancel(&mut self) -> Option<Tracker> {
        self.running.as_ref()?.cancel.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> Option<Tracker> {
        let r = self.running.take()?;
        match r.handle.join() {
            Ok(Some(list)) => Some(Tracker::listed_then(&list, &r.stored)),
            Ok(None) => None,
            Err(_) => {
                tracing::error!("archive {}: the maintenance thread panicked", self.label);
                None
            }
        }
    }
}

impl Drop for Maintainer {
    /// A run that ends (even with an error) leaves no maintenance behind.
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Merges small snapshots, forgets what retention no longer needs, then lists. Failures
/// are logged: the archive goes on and the next maintenance tries again.
fn maintain(store: &SegmentStore, label: &str, keep: Keep) -> Option<Vec<SegmentSummary>> {
    let t = Instant::now();
    match store.compact() {
        Ok(c) if c.merged > 0 => tracing::info!(
            "archive {label}: {} segment snapshots merged into {}",
            c.merged,
            c.written
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("archive {label}: compaction failed: {e}"),
    }
    if store.cancelled() {
        return None;
    }
    if let Err(e) = apply_retention(store, label, keep) {
        tracing::warn!("archive {label}: retention failed: {e}");
    }
    let list = store.list();
    tracing::debug!("archive {label}: maintenance took {:?}", t.elapsed());
    match list {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("archive {label}: listing segments: {e}");
            None
        }
    }
}

fn apply_retention(store: &SegmentStore, label: &str, keep: Keep) -> Result<(), RepoError> {
    let list = store.list()?;
    if list.len() < 2 {
        return Ok(());
    }
    let bases = base_backups(&store.repo().snapshots()?);
    let mut metas = Vec::with_capacity(list.len());
    for s in &list {
        metas.push(if track::needs_full_meta(s, &bases) {
            store.meta(s.meta.seq)?
        } else {
            track::light_summary(s)
        });
    }
    let forget = pitr::retention(&metas, &bases, keep, jiff::Timestamp::now().as_second());
    if !forget.is_empty() {
        tracing::info!(
            "archive {label}: retention ({keep:?}) removes segments {}..={}",
            forget[0],
            forget[forget.len() - 1]
        );
        store.forget(&forget)?;
    }
    Ok(())
}
