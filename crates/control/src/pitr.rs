//! The decisions of point-in-time recovery, over an archive's segment index
//! ([`SegmentMeta`]): where its timeline breaks, which base backup and which segments a
//! restore replays and where it stops, which segments retention may delete, and what the
//! archive's supervisor does next.
//!
//! Identity is the GTID, never a file name (file names differ between Galera nodes). A
//! segment continues the previous one when its start state equals the previous end state in
//! every domain; anything else is a named [`Gap`], and nothing here ever crosses one.

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    time::Duration,
};

use coffer_api::{
    archive::{ArchiveGap, GapReason, Keep, RecoverableWindow},
    gtid::{Domain, Gtid, GtidState, SegmentMeta, TxEnd},
    restore::PointInTimeTarget,
};

/// Unix seconds as RFC 3339, for messages and statuses.
pub fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("@{t}"))
}

/// A break in an archive's timeline, between two segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub archive: String,
    pub after: u64,
    pub before: u64,
    pub reason: GapReason,
    /// The domain that breaks (none for a missing or doubled segment).
    pub domain: Option<Domain>,
    /// The previous segment's end in that domain, and the next one's start.
    pub expected: Option<Gtid>,
    pub found: Option<Gtid>,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (self.after, self.before);
        write!(f, "archive {}, segments {a}..{b}: ", self.archive)?;
        // "domain 0" for MariaDB, "source <uuid>" for MySQL.
        let d = match self.domain {
            Some(Domain::MySql(u)) => format!("source {u}"),
            Some(d) => format!("domain {d}"),
            None => "domain ?".into(),
        };
        let show = |g: Option<Gtid>| g.map_or("nothing".to_string(), |g| g.to_string());
        match self.reason {
            GapReason::Purged => write!(
                f,
                "{d}: segment {a} ends at {}, segment {b} starts at {}: the transactions \
                 between are missing (the server purged them before they were archived) (Purged)",
                show(self.expected),
                show(self.found)
            ),
            GapReason::Diverged if self.domain.is_none() => write!(
                f,
                "two different segments are numbered {a}: two archivers wrote the same archive \
                 (give each archive its own serverId) (Diverged)"
            ),
            // The source is gone from the next segment's state: the server has none of its
            // history (a reset, or another server; a MySQL segment cannot tell which).
            GapReason::Diverged if self.found.is_none() => write!(
                f,
                "{d}: segment {a} ends at {}, segment {b} starts without it: the server no \
                 longer has this history (RESET MASTER / RESET BINARY LOGS AND GTIDS, or \
                 another server) (Diverged)",
                show(self.expected)
            ),
            GapReason::Diverged => write!(
                f,
                "{d}: segment {a} ends at {}, segment {b} starts at {}: the server's GTID \
                 history is not the archived one (failover to a node that missed transactions, \
                 RESET MASTER, or another server) (Diverged)",
                show(self.expected),
                show(self.found)
            ),
            GapReason::UnknownDomain => write!(
                f,
                "segment {b} starts with {d} at {}, a domain the archive had never seen: \
                 its earlier transactions were never archived (UnknownDomain)",
                show(self.found)
            ),
            GapReason::MissingSegment => write!(
                f,
                "segments {}..{} are missing from the repository (MissingSegment)",
                a + 1,
                b.saturating_sub(1)
            ),
            GapReason::StoppedTooLong | GapReason::Unknown => write!(
                f,
                "the archive stopped for longer than the server keeps binlogs ({})",
                self.reason.as_str()
            ),
        }
    }
}

impl Gap {
    /// The gap as the archive's status lists it.
    pub fn to_status(&self) -> ArchiveGap {
        ArchiveGap {
            reason: self.reason,
            after_segment: Some(self.after),
            before_segment: self.before,
            domain: self.domain.and_then(|d| d.mariadb()),
            source_uuid: self.domain.and_then(|d| d.mysql()).map(|u| u.to_string()),
            expected: self.expected.map(|g| g.to_string()),
            found: self.found.map(|g| g.to_string()),
            message: self.to_string(),
        }
    }
}

/// An unbroken run of segments: what a restore can reach from a base backup on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub first_segment: u64,
    pub last_segment: u64,
    /// The state before the run's first transaction and after its last.
    pub start: GtidState,
    pub end: GtidState,
    /// Commit times of the first and last transaction (none when the run has none).
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
}

impl Window {
    pub fn to_status(&self) -> RecoverableWindow {
        RecoverableWindow {
            earliest: self.first_time.map(rfc3339),
            latest: self.last_time.map(rfc3339),
            start_gtid: self.start.clone(),
            end_gtid: self.end.clone(),
            first_segment: self.first_segment,
            last_segment: self.last_segment,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segments {}..{} ({}..{}, {} to {})",
            self.first_segment,
            self.last_segment,
            self.first_time.map_or("-".into(), rfc3339),
            self.last_time.map_or("-".into(), rfc3339),
            show_state(&self.start),
            show_state(&self.end),
        )
    }
}

fn show_state(s: &GtidState) -> String {
    if s.0.is_empty() {
        "the empty GTID state".into()
    } else {
        s.to_string()
    }
}

/// An archive's timeline: its unbroken runs, oldest first, and the gaps between them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
}

/// Orders the segments by `seq` and splits them where one does not continue the previous.
pub fn timeline(segments: &[SegmentMeta]) -> Timeline {
    let (runs, gaps) = runs(segments);
    Timeline {
        windows: runs.iter().map(|r| window(r)).collect(),
        gaps,
    }
}

fn window(run: &[&SegmentMeta]) -> Window {
    let (first, last) = (run[0], run[run.len() - 1]);
    Window {
        first_segment: first.seq,
        last_segment: last.seq,
        start: first.start_state.clone(),
        end: last.end_state.clone(),
        first_time: run.iter().find_map(|s| s.first_time()),
        last_time: run.iter().rev().find_map(|s| s.last_time()),
    }
}

/// The unbroken runs (each non-empty, in `seq` order) and the gaps between them.
fn runs(segments: &[SegmentMeta]) -> (Vec<Vec<&SegmentMeta>>, Vec<Gap>) {
    let mut sorted: Vec<&SegmentMeta> = segments.iter().collect();
    sorted.sort_by_key(|s| s.seq);
    // The same segment listed twice (two snapshots of it) is one segment.
    sorted.dedup_by(|a, b| a == b);
    let mut runs: Vec<Vec<&SegmentMeta>> = Vec::new();
    let mut gaps = Vec::new();
    let mut current: Vec<&SegmentMeta> = Vec::new();
    for seg in sorted {
        if let Some(prev) = current.last() {
            let found = breaks(prev, seg);
            if !found.is_empty() {
                gaps.extend(found);
                runs.push(std::mem::take(&mut current));
            }
        }
        current.push(seg);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    (runs, gaps)
}

/// Why `next` does not continue `prev`: one gap per broken domain (and one for a hole in the
/// numbering); empty when it continues.
fn breaks(prev: &SegmentMeta, next: &SegmentMeta) -> Vec<Gap> {
    let gap = |reason, domain, expected, found| Gap {
        archive: next.archive.clone(),
        after: prev.seq,
        before: next.seq,
        reason,
        domain,
        expected,
        found,
    };
    if prev.seq == next.seq {
        return vec![gap(GapReason::Diverged, None, None, None)];
    }
    let mut out = Vec::new();
    if next.seq != prev.seq + 1 {
        out.push(gap(GapReason::MissingSegment, None, None, None));
    }
    let (end, start) = (&prev.end_state.0, &next.start_state.0);
    let domains: BTreeSet<Domain> = end.keys().chain(start.keys()).copied().collect();
    for d in domains {
        let (e, s) = (end.get(&d).copied(), start.get(&d).copied());
        let reason = match (e, s) {
            (Some(e), Some(s)) if e == s => continue,
            (Some(e), Some(s)) if s.seq > e.seq => GapReason::Purged,
            // The same sequence number from another server, a regression, or a domain the
            // server no longer has: another history.
            (Some(_), _) => GapReason::Diverged,
            (None, Some(_)) => GapReason::UnknownDomain,
            (None, None) => continue,
        };
        out.push(gap(reason, Some(d), e, s));
    }
    out
}

/// A base backup: its snapshot, the time it is consistent at (Unix seconds), and the GTID
/// state it holds (every backup path records it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    pub snapshot: String,
    pub time: i64,
    pub state: GtidState,
}

/// Where a replay starts: the segment, and the byte offset just after the last transaction
/// the base backup already holds (none: from the segment's first event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPoint {
    pub segment: u64,
    pub offset: Option<u64>,
}

/// Where a replay stops: just after this transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPoint {
    pub segment: u64,
    /// Byte offset in the segment just after the transaction.
    pub offset: u64,
    pub gtid: Gtid,
    pub time: i64,
}

/// What a point-in-time restore does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    pub archive: String,
    pub base: BaseBackup,
    /// The segments to replay, in order; empty when the base backup is the target.
    pub segments: Vec<u64>,
    pub start: Option<StartPoint>,
    pub stop: Option<StopPoint>,
    /// The GTID state after the replay.
    pub reached: GtidState,
    /// `latest` stopped before this gap (later transactions exist but cannot be reached
    /// from the base backup).
    pub stopped_before: Option<Gap>,
}

/// Why a restore cannot be planned, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "archive {archive} has no segments yet: nothing to replay; wait until it streams \
         (coffer get archive {archive}), or restore a snapshot without pointInTime"
    )]
    EmptyArchive { archive: String },
    #[error(
        "GTID {gtid} is not in archive {archive} (it holds {archived}); name a GTID it holds, \
         or a time"
    )]
    UnknownGtid {
        archive: String,
        gtid: Gtid,
        archived: String,
    },
    #[error(
        "GTID {gtid} is in two timelines of archive {archive} (segments {first} and {second}): \
         the server's history diverged there; restore to a time instead"
    )]
    AmbiguousGtid {
        archive: String,
        gtid: Gtid,
        first: u64,
        second: u64,
    },
    // What is refused, which gap, and what to do come first: a status keeps only the first
    // 300 characters of an error (the gap's details are in the archive's `describe`).
    #[error(
        "restoring to {target} would cross a {reason} gap (after segment {after}); the latest \
         point before it is {latest}: restore to it or earlier, or to a target after a base \
         backup taken after the gap. {gap}",
        reason = gap.reason.as_str(),
        after = gap.after
    )]
    GapBeforeTarget {
        target: String,
        gap: Box<Gap>,
        latest: String,
    },
    #[error(
        "{time} is after the last transaction of archive {archive} ({latest}): later \
         transactions are not archived (yet); restore to latest, or to a time at or before it"
    )]
    TimeAfterArchive {
        archive: String,
        time: String,
        latest: String,
    },
    #[error(
        "{time} is before everything archive {archive} holds (recoverable: {windows}); \
         restore to a time inside a window"
    )]
    TimeOutsideWindows {
        archive: String,
        time: String,
        windows: String,
    },
    #[error(
        "no base backup lies on archive {archive}'s timeline at or before {target} (base \
         backups: {bases}; recoverable: {windows}); take a base backup while the archive runs, \
         or pick a later target"
    )]
    NoBaseBackup {
        archive: String,
        target: String,
        bases: String,
        windows: String,
    },
}

fn show_target(t: &PointInTimeTarget) -> String {
    match t {
        PointInTimeTarget::Latest => "latest".into(),
        PointInTimeTarget::Time(t) => rfc3339(*t),
        PointInTimeTarget::Gtid { gtid, inclusive } => format!(
            "GTID {gtid} ({})",
            if *inclusive { "included" } else { "excluded" }
        ),
    }
}

/// One run, flattened: its transactions in stream order, each with its segment.
struct Run<'a> {
    segs: Vec<&'a SegmentMeta>,
    txs: Vec<(u64, &'a TxEnd)>,
    gtids: HashSet<Gtid>,
}

impl<'a> Run<'a> {
    fn new(segs: Vec<&'a SegmentMeta>) -> Self {
        let txs: Vec<(u64, &TxEnd)> = segs
            .iter()
            .flat_map(|s| s.transactions.iter().map(move |t| (s.seq, t)))
            .collect();
        let gtids = txs.iter().map(|(_, t)| t.gtid).collect();
        Run { segs, txs, gtids }
    }

    fn start(&self) -> &GtidState {
        &self.segs[0].start_state
    }

    fn last_seq(&self) -> u64 {
        self.segs[self.segs.len() - 1].seq
    }

    fn last_time(&self) -> Option<i64> {
        self.txs.last().map(|(_, t)| t.time)
    }

    /// The state after the first `k` transactions.
    fn state_at(&self, k: usize) -> GtidState {
        let mut st = self.start().clone();
        for (_, t) in &self.txs[..k] {
            st.advance(t.gtid);
        }
        st
    }

    /// Whether `base` is a state of this run's history: every domain the run starts with is
    /// in it, at the run's start or at one of the run's transactions (the GTID, server
    /// included, not just the sequence number), and so is every other domain the archive
    /// knows. Domains the archive never saw (a Galera node's local writes) are not checked.
    fn holds(&self, base: &GtidState, known: &BTreeSet<Domain>) -> bool {
        let start = &self.start().0;
        let on_run = |g: &Gtid| start.get(&g.domain) == Some(g) || self.gtids.contains(g);
        start.keys().all(|d| base.0.contains_key(d))
            && base
                .0
                .values()
                .filter(|g| known.contains(&g.domain))
                .all(on_run)
    }
}

fn covered(base: &GtidState, g: Gtid) -> bool {
    base.0.get(&g.domain).is_some_and(|b| b.seq >= g.seq)
}

/// `state` is at or after `base` in every domain the archive knows.
fn at_or_after(state: &GtidState, base: &GtidState, known: &BTreeSet<Domain>) -> bool {
    base.0
        .values()
        .filter(|g| known.contains(&g.domain))
        .all(|g| covered(state, *g))
}

/// Plans a point-in-time restore: the newest base backup at or before the target on the
/// archive's timeline, the segments from it to the target with no gap crossed, and the stop
/// point. A time target stops after the last transaction (in stream order) committed at or
/// before it; a GTID target after that transaction, or before it when not inclusive;
/// `latest` at the end of the base's unbroken run, saying which gap it stopped before.
pub fn plan_restore(
    archive: &str,
    target: &PointInTimeTarget,
    bases: &[BaseBackup],
    segments: &[SegmentMeta],
) -> Result<RestorePlan, PlanError> {
    let (runs, gaps) = runs(segments);
    if runs.is_empty() {
        return Err(PlanError::EmptyArchive {
            archive: archive.into(),
        });
    }
    let window_list: Vec<Window> = runs.iter().map(|r| window(r)).collect();
    let windows = || {
        window_list
            .iter()
            .map(Window::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let runs: Vec<Run> = runs.into_iter().map(Run::new).collect();
    let gap_after = |r: &Run| gaps.iter().find(|g| g.after == r.last_seq()).cloned();
    let known: BTreeSet<Domain> = segments
        .iter()
        .flat_map(|s| {
            s.start_state
                .0
                .keys()
                .chain(s.end_state.0.keys())
                .copied()
                .chain(s.transactions.iter().map(|t| t.gtid.domain))
        })
        .collect();
    let latest_of = |r: &Run| match r.txs.last() {
        Some((seq, t)) => format!(
            "{} (GTID {}, segment {seq})",
            rfc3339(t.time),
            show_state(&r.state_at(r.txs.len()))
        ),
        None => format!("{} (no transaction after it)", show_state(r.start())),
    };

    // A GTID target is found first: it names its run.
    let gtid_at = match target {
        PointInTimeTarget::Gtid { gtid, .. } => {
            let found: Vec<(usize, usize)> = runs
                .iter()
                .enumerate()
                .flat_map(|(ri, r)| {
                    r.txs
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, t))| t.gtid == *gtid)
                        .map(move |(i, _)| (ri, i))
                })
                .collect();
            match found.as_slice() {
                [] => {
                    let archived = archived_ranges(segments);
                    return Err(PlanError::UnknownGtid {
                        archive: archive.into(),
                        gtid: *gtid,
                        archived,
                    });
                }
                [one] => Some(*one),
                [a, b, ..] => {
                    return Err(PlanError::AmbiguousGtid {
                        archive: archive.into(),
                        gtid: *gtid,
                        first: runs[a.0].txs[a.1].0,
                        second: runs[b.0].txs[b.1].0,
                    })
                }
            }
        }
        _ => None,
    };

    let mut sorted: Vec<&BaseBackup> = bases.iter().collect();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.time));
    for base in sorted {
        // The latest run that holds the base (a run after a hole whose states still chain
        // holds the same state as the end of the one before).
        let holding: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].holds(&base.state, &known))
            .collect();
        let Some(&ri) = holding.last() else {
            continue;
        };
        // The empty state begins every history: when two runs start with it (RESET MASTER
        // between them) nothing says which one the base was taken on.
        if base.state.0.is_empty() && holding.len() > 1 {
            continue;
        }
        let run = &runs[ri];
        let beyond = |target: String| {
            gap_after(run).map(|gap| PlanError::GapBeforeTarget {
                target,
                gap: Box::new(gap),
                latest: latest_of(run),
            })
        };
        let k = match *target {
            PointInTimeTarget::Latest => run.txs.len(),
            PointInTimeTarget::Time(t) => {
                if base.time > t {
                    continue;
                }
                if run.last_time().is_none_or(|last| last < t) {
                    return Err(beyond(show_target(target)).unwrap_or(
                        PlanError::TimeAfterArchive {
                            archive: archive.into(),
                            time: rfc3339(t),
                            latest: latest_of(run),
                        },
                    ));
                }
                run.txs
                    .iter()
                    .rposition(|(_, tx)| tx.time <= t)
                    .map_or(0, |j| j + 1)
            }
            PointInTimeTarget::Gtid { inclusive, .. } => {
                let (gr, i) = gtid_at.expect("a GTID target was found above");
                if gr < ri {
                    continue; // the base is on a later run: after the target
                }
                if gr > ri {
                    if let Some(e) = beyond(show_target(target)) {
                        return Err(e);
                    }
                    continue;
                }
                if inclusive {
                    i + 1
                } else {
                    i
                }
            }
        };
        if !at_or_after(&run.state_at(k), &base.state, &known) {
            continue; // the base is after the target
        }
        return Ok(plan(
            archive,
            base,
            run,
            k,
            match target {
                PointInTimeTarget::Latest => gap_after(run),
                _ => None,
            },
        ));
    }
    let bases_shown = if bases.is_empty() {
        "none".to_string()
    } else {
        bases
            .iter()
            .map(|b| {
                format!(
                    "{} at {} ({})",
                    b.snapshot,
                    rfc3339(b.time),
                    show_state(&b.state)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let PointInTimeTarget::Time(t) = *target {
        let first = runs
            .iter()
            .filter_map(|r| r.txs.first())
            .map(|(_, tx)| tx.time)
            .min();
        if first.is_none_or(|f| t < f) {
            return Err(PlanError::TimeOutsideWindows {
                archive: archive.into(),
                time: rfc3339(t),
                windows: windows(),
            });
        }
    }
    Err(PlanError::NoBaseBackup {
        archive: archive.into(),
        target: show_target(target),
        bases: bases_shown,
        windows: windows(),
    })
}

fn plan(
    archive: &str,
    base: &BaseBackup,
    run: &Run,
    k: usize,
    stopped_before: Option<Gap>,
) -> RestorePlan {
    let mut reached = base.state.clone();
    let first = (0..k).find(|&j| !covered(&base.state, run.txs[j].1.gtid));
    let (segments, start, stop) = match first {
        None => (Vec::new(), None, None),
        Some(j) => {
            let start_seg = run.txs[j].0;
            let offset = (j > 0 && run.txs[j - 1].0 == start_seg).then(|| run.txs[j - 1].1.end);
            let (stop_seg, last) = run.txs[k - 1];
            for (_, t) in &run.txs[j..k] {
                if !covered(&reached, t.gtid) {
                    reached.advance(t.gtid);
                }
            }
            let segments = run
                .segs
                .iter()
                .map(|s| s.seq)
                .filter(|s| (start_seg..=stop_seg).contains(s))
                .collect();
            (
                segments,
                Some(StartPoint {
                    segment: start_seg,
                    offset,
                }),
                Some(StopPoint {
                    segment: stop_seg,
                    offset: last.end,
                    gtid: last.gtid,
                    time: last.time,
                }),
            )
        }
    };
    RestorePlan {
        archive: archive.into(),
        base: base.clone(),
        segments,
        start,
        stop,
        reached,
        stopped_before,
    }
}

/// How a restore verification with a binlog archive reports its replay (condition
/// ArchiveReplayed, always True once the replay ran): the reason and the message. Stopping
/// before a gap does not fail the verification — what lies before the gap is recoverable
/// and is what was checked — but the reason says so and the message names the gap.
pub fn verification_replay(p: &RestorePlan, snapshot: &str) -> (&'static str, String) {
    let reached = show_state(&p.reached);
    let done = match &p.stop {
        None => format!(
            "archive {}: nothing to replay after snapshot {snapshot} (it holds {reached}, the \
             newest archived point{})",
            p.archive,
            if p.stopped_before.is_some() {
                " before a gap"
            } else {
                ""
            }
        ),
        Some(stop) => format!(
            "archive {}: {} segment(s) replayed after snapshot {snapshot} up to {reached}, \
             the last transaction ({}) committed at {}",
            p.archive,
            p.segments.len(),
            stop.gtid,
            rfc3339(stop.time)
        ),
    };
    match &p.stopped_before {
        Some(gap) => (
            "StoppedBeforeGap",
            format!(
                "{done}; stopped there, before a gap: {gap}. Later transactions cannot be \
                 recovered from this snapshot: take a new base backup"
            ),
        ),
        None if p.stop.is_none() => ("NothingToReplay", done),
        None => ("Replayed", done),
    }
}

/// A segment as the repository lists it: its index without the transaction list, and the
/// commit times of its first and last transaction.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    pub meta: &'a SegmentMeta,
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
}

/// Planning reads an archive in two passes: the listing (no transaction lists), then the
/// full index of only the segments a restore can start or stop inside. These are they: a
/// segment a base backup's state falls strictly inside; for `latest`, the last segment of
/// every unbroken run; for a time, every segment whose commit times span it and the last
/// one that starts at or before it in each run; for a GTID, the segment that holds it.
pub fn segments_to_read(
    listed: &[Listed],
    target: &PointInTimeTarget,
    bases: &[BaseBackup],
) -> BTreeSet<u64> {
    let mut sorted: Vec<&Listed> = listed.iter().collect();
    sorted.sort_by_key(|l| l.meta.seq);
    let mut out = BTreeSet::new();
    let inside = |m: &SegmentMeta, g: &Gtid| {
        let lo = m.start_state.0.get(&g.domain).map_or(0, |s| s.seq);
        let hi = m.end_state.0.get(&g.domain).map_or(0, |s| s.seq);
        lo < g.seq && g.seq < hi
    };
    for (i, l) in sorted.iter().enumerate() {
        let next = sorted
            .get(i + 1)
            .filter(|n| breaks(l.meta, n.meta).is_empty());
        let m = l.meta;
        if bases
            .iter()
            .any(|b| b.state.0.values().any(|g| inside(m, g)))
        {
            out.insert(m.seq);
        }
        let read = match *target {
            PointInTimeTarget::Latest => next.is_none(),
            PointInTimeTarget::Time(t) => {
                let starts_before = l.first_time.is_some_and(|f| f <= t);
                let spans = starts_before && l.last_time.is_some_and(|e| e >= t);
                let last_before =
                    starts_before && next.is_none_or(|n| n.first_time.is_none_or(|f| f > t));
                spans || last_before
            }
            PointInTimeTarget::Gtid { gtid, .. } => {
                let lo = m.start_state.0.get(&gtid.domain).map_or(0, |s| s.seq);
                let hi = m.end_state.0.get(&gtid.domain).map_or(0, |s| s.seq);
                lo < gtid.seq && gtid.seq <= hi
            }
        };
        if read {
            out.insert(m.seq);
        }
    }
    out
}

/// A listed segment whose transactions were not read, standing in for its index in
/// [`plan_restore`]: one transaction per domain it moves, ending where the segment ends, at
/// its last commit time. The run's states, gaps and end are exact; a restore that would
/// start or stop inside it needs its real index ([`segments_to_read`]).
pub fn stand_in(listed: &Listed) -> SegmentMeta {
    let mut m = listed.meta.clone();
    m.transactions = m
        .end_state
        .0
        .values()
        .filter(|g| m.start_state.0.get(&g.domain) != Some(g))
        .map(|g| TxEnd {
            gtid: *g,
            time: listed.last_time.unwrap_or_default(),
            end: m.bytes,
            source_end: 0,
        })
        .collect();
    m
}

/// The first and last archived GTID of each domain, for a message.
fn archived_ranges(segments: &[SegmentMeta]) -> String {
    let mut ranges: std::collections::BTreeMap<Domain, (Gtid, Gtid)> = Default::default();
    for s in segments {
        for (d, (a, b)) in s.gtid_range() {
            ranges
                .entry(d)
                .and_modify(|r| {
                    if a.seq < r.0.seq {
                        r.0 = a;
                    }
                    if b.seq > r.1.seq {
                        r.1 = b;
                    }
                })
                .or_insert((a, b));
        }
    }
    if ranges.is_empty() {
        return "no transaction".into();
    }
    ranges
        .values()
        .map(|(a, b)| format!("{a}..{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The segments retention deletes, oldest first: only a prefix of the archive (never a hole),
/// never the newest segment (its end state is where the archive resumes), never one a base
/// backup needs to reach any point after it. `Keep::BaseBackups` deletes what no base backup
/// needs, and nothing while no base backup lies on the timeline (the first one may still be
/// running); `Keep::For` deletes segments whose last transaction is older than `now - d`.
pub fn retention(segments: &[SegmentMeta], bases: &[BaseBackup], keep: Keep, now: i64) -> Vec<u64> {
    let (runs, _) = runs(segments);
    let Some(newest) = runs.last().and_then(|r| r.last()).map(|s| s.seq) else {
        return Vec::new();
    };
    let known: BTreeSet<Domain> = segments
        .iter()
        .flat_map(|s| s.start_state.0.keys().chain(s.end_state.0.keys()).copied())
        .chain(
            segments
                .iter()
                .flat_map(|s| s.transactions.iter().map(|t| t.gtid.domain)),
        )
        .collect();
    let runs: Vec<Run> = runs.into_iter().map(Run::new).collect();
    // The oldest segment a base backup needs: the one holding its first transaction the base
    // does not have (or, when it has them all, the one after its run).
    let needed_from = bases
        .iter()
        .filter_map(|b| {
            let run = runs.iter().rev().find(|r| r.holds(&b.state, &known))?;
            Some(
                run.txs
                    .iter()
                    .find(|(_, t)| !covered(&b.state, t.gtid))
                    .map_or(run.last_seq() + 1, |(seq, _)| *seq),
            )
        })
        .min();
    let mut all: Vec<&SegmentMeta> = runs.iter().flat_map(|r| r.segs.iter().copied()).collect();
    all.sort_by_key(|s| s.seq);
    let mut out = Vec::new();
    let mut last_time = None;
    for s in all {
        if s.seq == newest {
            break;
        }
        let deletable = match keep {
            Keep::BaseBackups => needed_from.is_some_and(|n| s.seq < n),
            Keep::For(d) => {
                last_time = s.last_time().or(last_time);
                let cutoff = now.saturating_sub(d.as_secs() as i64);
                last_time.is_some_and(|t| t < cutoff) && needed_from.is_none_or(|n| s.seq < n)
            }
        };
        if !deletable {
            break;
        }
        out.push(s.seq);
    }
    out
}

/// How long the server keeps binlogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinlogRetention {
    /// Not known (the variables could not be read).
    Unknown,
    /// Binlogs are never expired.
    Never,
    Seconds(u64),
}

impl BinlogRetention {
    /// From the server's variables: `binlog_expire_logs_seconds` when set and non-zero wins
    /// (MySQL 8, MariaDB 10.6+), else `expire_logs_days` (fractional in MariaDB); 0 in both
    /// means never.
    pub fn from_server(
        expire_logs_days: Option<f64>,
        binlog_expire_logs_seconds: Option<u64>,
    ) -> Self {
        match (binlog_expire_logs_seconds, expire_logs_days) {
            (Some(s), _) if s > 0 => BinlogRetention::Seconds(s),
            (_, Some(d)) if d > 0.0 => BinlogRetention::Seconds((d * 86_400.0) as u64),
            (None, None) => BinlogRetention::Unknown,
            _ => BinlogRetention::Never,
        }
    }
}

/// What the supervisor of one archive sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveObserved {
    pub archive: String,
    pub paused: bool,
    /// A runner is running now.
    pub running: bool,
    /// Consecutive runs that ended in an error (the runner resets it once a run archives).
    pub failures: u32,
    /// When the last run ended (Unix seconds).
    pub last_exit: Option<i64>,
    /// The last time the archive was streaming (Unix seconds); none if it never has.
    pub last_streaming: Option<i64>,
    pub binlog_retention: BinlogRetention,
    pub now: i64,
}

/// Restart delays: `initial`, doubled per consecutive failure, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s: the RPO is seconds, so a broken stream is retried soon, but a
    /// server that is down is not hammered.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before the next start after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }
}

/// What to do with an archive's runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerAction {
    /// Start it now.
    Start,
    /// Start it at this time (Unix seconds): backing off after failures.
    StartAt(i64),
    /// Stop it: the archive is paused.
    Stop,
    /// Leave it as it is (running, or paused and stopped).
    Nothing,
}

/// The archive has not streamed for longer than the server keeps binlogs: transactions may
/// have been purged before they were archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "archive {archive} has not streamed since {} ({down_for}s), longer than the server keeps \
     binlogs ({retention}s): transactions may have been purged unarchived; start it (unpause), \
     and take a new base backup if a Purged gap appears",
    rfc3339(*since)
)]
pub struct StoppedTooLong {
    pub archive: String,
    pub since: i64,
    pub down_for: u64,
    pub retention: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    pub action: RunnerAction,
    /// Set the GapDetected condition with reason StoppedTooLong.
    pub stopped_too_long: Option<StoppedTooLong>,
}

/// The supervisor's decision for one archive.
pub fn supervise(o: &ArchiveObserved, backoff: &Backoff) -> Supervision {
    let action = match (o.paused, o.running) {
        (true, true) => RunnerAction::Stop,
        (true, false) | (false, true) => RunnerAction::Nothing,
        (false, false) => {
            let delay = backoff.delay(o.failures).as_secs() as i64;
            match o.last_exit {
                Some(exit) if o.failures > 0 && exit + delay > o.now => {
                    RunnerAction::StartAt(exit + delay)
                }
                _ => RunnerAction::Start,
            }
        }
    };
    let stopped_too_long = match (o.last_streaming, o.binlog_retention) {
        (Some(since), BinlogRetention::Seconds(retention)) => {
            let down_for = o.now.saturating_sub(since).max(0) as u64;
            (down_for > retention).then(|| StoppedTooLong {
                archive: o.archive.clone(),
                since,
                down_for,
                retention,
            })
        }
        _ => None,
    };
    Supervision {
        action,
        stopped_too_long,
    }
}

#[cfg(test)]
mod tests;
