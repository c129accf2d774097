//! What the archive holds, kept up to date as segments close: the count, the bytes, the
//! timeline (windows and gaps, from `coffer_control::pitr::timeline`) and the last archived
//! state. Memory stays bounded: the timeline is extended one segment at a time, never kept
//! as a list of every segment.
//!
//! Listing a repository gives summaries (an index without the per-transaction list). The
//! timeline only needs each segment's states and its first and last commit time, so a
//! summary is turned into a "light" meta whose transaction list holds just enough entries
//! for that ([`light_summary`]); retention needs the real transactions only of the segments a
//! base backup falls inside, and loads those ([`needs_full_meta`]).

use coffer_api::{
    archive::BinlogArchiveStatus,
    gtid::{GtidState, SegmentMeta, TxEnd},
};
use coffer_control::pitr::{self, BaseBackup, Gap, Window};

use super::store::SegmentSummary;

/// A meta with its transaction list cut to what the timeline and retention read: the first
/// transaction (for its time) and, per domain, the segment's last GTID at the segment's last
/// commit time.
pub fn light(meta: &SegmentMeta) -> SegmentMeta {
    let mut out = SegmentMeta {
        transactions: Vec::new(),
        ..meta.clone()
    };
    if let (Some(first), Some(last)) = (meta.transactions.first(), meta.transactions.last()) {
        out.transactions = ends(&meta.start_state, &meta.end_state, first.time, last.time);
        // Keep the real first GTID: it may be what a base backup's state names.
        out.transactions[0].gtid = first.gtid;
    }
    out
}

/// The same from a listed summary (its meta has no transactions).
pub fn light_summary(s: &SegmentSummary) -> SegmentMeta {
    let mut out = SegmentMeta {
        transactions: Vec::new(),
        ..s.meta.clone()
    };
    if s.transactions > 0 {
        if let (Some(first), Some(last)) = (s.first_time, s.last_time) {
            out.transactions = ends(&s.meta.start_state, &s.meta.end_state, first, last);
        }
    }
    out
}

/// A first entry at `first` and each changed domain's end GTID at `last`.
fn ends(start: &GtidState, end: &GtidState, first: i64, last: i64) -> Vec<TxEnd> {
    let changed: Vec<_> = end
        .0
        .values()
        .filter(|g| start.0.get(&g.domain) != Some(*g))
        .copied()
        .collect();
    let Some(head) = changed.first().copied() else {
        return Vec::new();
    };
    let mut txs = vec![TxEnd {
        gtid: head,
        time: first,
        end: 0,
        source_end: 0,
    }];
    txs.extend(changed.into_iter().map(|gtid| TxEnd {
        gtid,
        time: last,
        end: 0,
        source_end: 0,
    }));
    txs
}

/// Whether a base backup's state falls strictly inside this segment in some domain: then
/// retention must see its real transactions to know which of them the base holds.
pub fn needs_full_meta(s: &SegmentSummary, bases: &[BaseBackup]) -> bool {
    bases.iter().any(|b| {
        b.state.0.values().any(|g| {
            let start = s.meta.start_state.0.get(&g.domain).map_or(0, |x| x.seq);
            let end = s.meta.end_state.0.get(&g.domain).map_or(0, |x| x.seq);
            start < g.seq && g.seq < end
        })
    })
}

/// The archive's contents as the status shows them.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
    pub count: u64,
    pub bytes: u64,
    last: Option<SegmentMeta>,
}

impl Tracker {
    /// From the repository's listing.
    pub fn from_summaries(list: &[SegmentSummary]) -> Tracker {
        let metas: Vec<SegmentMeta> = list.iter().map(light_summary).collect();
        let tl = pitr::timeline(&metas);
        Tracker {
            windows: tl.windows,
            gaps: tl.gaps,
            count: list.len() as u64,
            bytes: list.iter().map(|s| s.meta.bytes).sum(),
            last: metas.into_iter().max_by_key(|m| m.seq),
        }
    }

    /// From a listing taken while segments kept being stored (by a maintenance running
    /// beside the stream), plus the segments stored since it began (`later`, in seq order):
    /// those the listing already holds count once, the newer ones are pushed.
    pub fn listed_then(list: &[SegmentSummary], later: &[SegmentMeta]) -> Tracker {
        let mut t = Tracker::from_summaries(list);
        let listed_up_to = list.last().map(|s| s.meta.seq);
        for m in later {
            if listed_up_to.is_none_or(|l| m.seq > l) {
                t.push(m);
            }
        }
        t
    }

    /// A segment was stored.
    pub fn push(&mut self, meta: &SegmentMeta) {
        let m = light(meta);
        self.count += 1;
        self.bytes += m.bytes;
        match self.last.take() {
            None => {
                self.windows = pitr::timeline(std::slice::from_ref(&m)).windows;
            }
            Some(prev) => {
                let tl = pitr::timeline(&[prev, m.clone()]);
                if tl.gaps.is_empty() {
                    if let Some(w) = self.windows.last_mut() {
                        w.last_segment = m.seq;
                        w.end = m.end_state.clone();
                        w.last_time = m.last_time().or(w.last_time);
                        w.first_time = w.first_time.or(m.first_time());
                    }
                } else {
                    self.gaps.extend(tl.gaps);
                    self.windows.extend(tl.windows.into_iter().skip(1));
                }
            }
        }
        self.last = Some(m);
    }

    /// The state after the last stored transaction (where the archive resumes).
    pub fn end_state(&self) -> Option<&GtidState> {
        self.last.as_ref().map(|m| &m.end_state)
    }

    pub fn next_seq(&self) -> u64 {
        self.last.as_ref().map_or(0, |m| m.seq + 1)
    }

    /// Commit time of the last stored transaction.
    pub fn last_time(&self) -> Option<i64> {
        self.windows.iter().rev().find_map(|w| w.last_time)
    }

    /// Writes what it knows into the status.
    pub fn fill(&self, st: &mut BinlogArchiveStatus) {
        st.segment_count = Some(self.count);
        st.archived_bytes = Some(self.bytes);
        st.recoverable_windows = self.windows.iter().map(Window::to_status).collect();
        st.gaps = self.gaps.iter().map(Gap::to_status).collect();
        if let Some(end) = self.end_state() {
            st.last_archived_gtid = Some(end.clone());
        }
        if let Some(t) = self.last_time() {
            st.last_event_time = Some(pitr::rfc3339(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_api::{archive::GapReason, gtid::Gtid};

    use super::*;

    fn seg(seq: u64, start: &str, gtids: &[&str], t0: i64) -> SegmentMeta {
        let mut st: GtidState = start.parse().unwrap();
        let start_state = st.clone();
        let transactions: Vec<TxEnd> = gtids
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let gtid: Gtid = g.parse().unwrap();
                st.advance(gtid);
                TxEnd {
                    gtid,
                    time: t0 + i as i64,
                    end: 100 * (i as u64 + 1),
                    source_end: 0,
                }
            })
            .collect();
        SegmentMeta {
            archive: "ns/a".into(),
            seq,
            source_server_id: 1,
            source_address: "db:3306".into(),
            source_file: "bin.000001".into(),
            start_state,
            end_state: st,
            transactions,
            bytes: 1000,
        }
    }

    fn summary(m: &SegmentMeta) -> SegmentSummary {
        SegmentSummary {
            meta: SegmentMeta {
                transactions: Vec::new(),
                ..m.clone()
            },
            first_time: m.first_time(),
            last_time: m.last_time(),
            transactions: m.transactions.len() as u64,
        }
    }

    /// The incremental timeline is the one computed over every full meta.
    #[test]
    fn the_tracked_timeline_equals_the_full_one() {
        let segs = vec![
            seg(0, "0-1-0", &["0-1-1", "0-1-2"], 100),
            seg(1, "0-1-2", &["0-1-3"], 200),
            // Purged: 0-1-4..9 missing.
            seg(2, "0-1-9", &["0-1-10"], 300),
            seg(3, "0-1-10", &["0-1-11", "5-7-1"], 400),
            // RESET MASTER: back to nothing in domain 0.
            seg(4, "5-7-1", &["0-1-1"], 500),
        ];
        let full = pitr::timeline(&segs);
        assert_eq!(full.gaps.len(), 2);
        assert_eq!(full.gaps[0].reason, GapReason::Purged);
        assert_eq!(full.gaps[1].reason, GapReason::Diverged);
        // Pushed one by one.
        let mut t = Tracker::default();
        for s in &segs {
            t.push(s);
        }
        assert_eq!(t.windows, full.windows);
        assert_eq!(t.gaps, full.gaps);
        assert_eq!((t.count, t.bytes), (5, 5000));
        // Listed, then one more pushed.
        let sums: Vec<SegmentSummary> = segs[..4].iter().map(summary).collect();
        let mut t2 = Tracker::from_summaries(&sums);
        t2.push(&segs[4]);
        assert_eq!(t2.windows, full.windows);
        assert_eq!(t2.gaps, full.gaps);
        assert_eq!(t2.next_seq(), 5);
        assert_eq!(t2.end_state().unwrap().to_string(), "0-1-1,5-7-1");
        let mut st = BinlogArchiveStatus::default();
        t2.fill(&mut st);
        assert_eq!(st.gaps.len(), 2);
        assert_eq!(st.recoverable_windows.len(), 3);
        assert_eq!(st.last_event_time.as_deref(), Some("1970-01-01T00:08:20Z"));
    }

    /// A listing that already holds some of the segments stored meanwhile, or none of them,
    /// or all: each segment counts once and the timeline is the full one.
    #[test]
    fn a_listing_plus_the_segments_stored_meanwhile_counts_each_once() {
        let segs: Vec<SegmentMeta> = (0..6)
            .map(|i| {
                let g = format!("0-1-{}", i + 1);
                seg(i, &format!("0-1-{i}"), &[g.as_str()], 100 * i as i64)
            })
            .collect();
        let full = pitr::timeline(&segs);
        let sums: Vec<SegmentSummary> = segs.iter().map(summary).collect();
        // (segments listed, segments stored since the maintenance began)
        for (listed, later) in [
            (4, 2),
            (4, 3),
            (4, 4),
            (6, 2),
            (0, 0),
            (6, 0),
            (5, 1),
            (6, 6),
        ] {
            let t = Tracker::listed_then(&sums[..listed], &segs[later..]);
            assert_eq!(t.count, 6, "listed {listed}, later from {later}");
            assert_eq!(t.bytes, 6000, "listed {listed}, later from {later}");
            assert_eq!(
                t.windows, full.windows,
                "listed {listed}, later from {later}"
            );
            assert_eq!(t.next_seq(), 6);
        }
        // Retention removed the oldest while segments were stored: they stay gone.
        let t = Tracker::listed_then(&sums[2..4], &segs[3..]);
        assert_eq!((t.count, t.next_seq()), (4, 6));
    }

    /// Retention decides the same on light metas (full only where a base falls inside) as
    /// on full metas.
    #[test]
    fn retention_on_light_metas_matches_full_metas() {
        let segs = vec![
            seg(0, "0-1-0", &["0-1-1", "0-1-2", "0-1-3"], 100),
            seg(1, "0-1-3", &["0-1-4", "0-1-5", "0-1-6"], 200),
            seg(2, "0-1-6", &["0-1-7", "0-1-8"], 300),
            seg(3, "0-1-8", &["0-1-9"], 400),
        ];
        let sums: Vec<SegmentSummary> = segs.iter().map(summary).collect();
        for base in ["0-1-5", "0-1-6", "0-1-3", "0-1-8", "0-1-1"] {
            let bases = vec![BaseBackup {
                snapshot: "s".into(),
                time: 250,
                state: base.parse().unwrap(),
            }];
            let mixed: Vec<SegmentMeta> = sums
                .iter()
                .zip(&segs)
                .map(|(s, full)| {
                    if needs_full_meta(s, &bases) {
                        full.clone()
                    } else {
                        light_summary(s)
                    }
                })
                .collect();
            for keep in [
                coffer_api::archive::Keep::BaseBackups,
                coffer_api::archive::Keep::For(std::time::Duration::from_secs(10)),
            ] {
                assert_eq!(
                    pitr::retention(&mixed, &bases, keep, 1000),
                    pitr::retention(&segs, &bases, keep, 1000),
                    "base {base}, {keep:?}"
                );
            }
        }
    }
}
