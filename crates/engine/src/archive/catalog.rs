//! What an archive snapshot says about its segments without its trees being read: the
//! segments' summaries, written compactly into the snapshot file's `description`, and how
//! a listing picks one copy of a segment that several snapshots hold (a compaction that
//! stopped half-way).

use std::collections::BTreeMap;

use coffer_api::gtid::{GtidState, SegmentMeta};
use serde::{Deserialize, Serialize};

use super::store::SegmentSummary;

/// The description's format version.
pub const FORMAT: u32 = 1;

/// The JSON in an archive snapshot's description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Description {
    /// [`FORMAT`]; a description of another version is read from the trees instead.
    #[serde(rename = "cofferBinlog")]
    pub format: u32,
    /// `SegmentMeta::archive` of the segments.
    pub archive: String,
    /// 0 for a put, n + 1 for a merge of level-n snapshots.
    pub level: u32,
    /// The index file this snapshot's own packs are listed in (and the packs of the index
    /// files it consolidated): what the next merge consolidates.
    pub index: String,
    pub segments: Vec<Row>,
}

/// One segment's summary as a JSON array (about 100 bytes: a day of 5 s flushes is 2 MB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row(
    /// seq
    pub u64,
    /// source server id, address, file
    pub u32,
    pub String,
    pub String,
    /// start and end GTID state
    pub GtidState,
    pub GtidState,
    /// bytes, first and last commit time, transactions
    pub u64,
    pub Option<i64>,
    pub Option<i64>,
    pub u64,
);

impl Row {
    pub fn of(m: &SegmentMeta) -> Row {
        Row(
            m.seq,
            m.source_server_id,
            m.source_address.clone(),
            m.source_file.clone(),
            m.start_state.clone(),
            m.end_state.clone(),
            m.bytes,
            m.first_time(),
            m.last_time(),
            m.transactions.len() as u64,
        )
    }

    pub fn from_summary(s: &SegmentSummary) -> Row {
        let m = &s.meta;
        Row(
            m.seq,
            m.source_server_id,
            m.source_address.clone(),
            m.source_file.clone(),
            m.start_state.clone(),
            m.end_state.clone(),
            m.bytes,
            s.first_time,
            s.last_time,
            s.transactions,
        )
    }

    pub fn summary(&self, archive: &str) -> SegmentSummary {
        SegmentSummary {
            meta: SegmentMeta {
                archive: archive.to_string(),
                seq: self.0,
                source_server_id: self.1,
                source_address: self.2.clone(),
                source_file: self.3.clone(),
                start_state: self.4.clone(),
                end_state: self.5.clone(),
                transactions: Vec::new(),
                bytes: self.6,
            },
            first_time: self.7,
            last_time: self.8,
            transactions: self.9,
        }
    }
}

/// One archive snapshot as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full snapshot id.
    pub snapshot: String,
    pub level: u32,
    /// Index file to consolidate when this snapshot is merged (None when unknown).
    pub index: Option<String>,
    pub segments: Vec<SegmentSummary>,
}

/// Which copy of each segment counts: `(seq, entry number, summary)` in seq order.
///
/// Copies of one seq are normally identical (a merge wrote the new snapshot, then stopped
/// before deleting the old ones): the one in the highest level is taken (then the lowest
/// entry number), so that the next compaction drops the small snapshots left behind. Copies
/// that differ (a segment stored twice, the first put having succeeded unseen) are told
/// apart by continuity: the copy whose end state is where the next chosen segment starts,
/// else the one with the most transactions.
pub fn choose(entries: &[Entry]) -> Vec<(u64, usize, SegmentSummary)> {
    let mut by_seq: BTreeMap<u64, Vec<(usize, &SegmentSummary)>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        for s in &e.segments {
            by_seq.entry(s.meta.seq).or_default().push((i, s));
        }
    }
    let mut out: Vec<(u64, usize, SegmentSummary)> = Vec::with_capacity(by_seq.len());
    let mut next_start: Option<(u64, GtidState)> = None;
    for (seq, copies) in by_seq.into_iter().rev() {
        let first = copies[0];
        let pick = if copies.iter().all(|(_, s)| *s == first.1) {
            *copies
                .iter()
                .max_by_key(|(i, _)| (entries[*i].level, std::cmp::Reverse(*i)))
                .expect("at least one copy")
        } else {
            let continuing = next_start
                .as_ref()
                .filter(|(n, _)| *n == seq + 1)
                .and_then(|(_, start)| copies.iter().find(|(_, s)| s.meta.end_state == *start));
            match continuing {
                Some(c) => *c,
                None => *copies
                    .iter()
                    .max_by_key(|(i, s)| (s.transactions, std::cmp::Reverse(*i)))
                    .expect("at least one copy"),
            }
        };
        if copies.len() > 1 && copies.iter().any(|(_, s)| *s != pick.1) {
            tracing::warn!(
                seq,
                copies = copies.len(),
                "archive segment stored in differing copies; using the one that continues"
            );
        }
        next_start = Some((seq, pick.1.meta.start_state.clone()));
        out.push((seq, pick.0, pick.1.clone()));
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u64, start: &str, end: &str, n: u64) -> SegmentSummary {
        SegmentSummary {
            meta: SegmentMeta {
                archive: "ns/a".into(),
                seq,
                source_server_id: 1,
                source_address: "db:3306".into(),
                source_file: "bin.000001".into(),
                start_state: start.parse().unwrap(),
                end_state: end.parse().unwrap(),
                transactions: vec![],
                bytes: 100,
            },
            first_time: Some(1),
            last_time: Some(2),
            transactions: n,
        }
    }

    fn entry(id: &str, segs: Vec<SegmentSummary>) -> Entry {
        Entry {
            snapshot: id.into(),
            level: u32::from(id == "merged"),
            index: None,
            segments: segs,
        }
    }

    #[test]
    fn identical_copies_count_once_and_differing_ones_by_continuity() {
        let entries = vec![
            entry("small-0", vec![seg(0, "", "0-1-5", 5)]),
            entry(
                "merged",
                vec![seg(0, "", "0-1-5", 5), seg(1, "0-1-5", "0-1-7", 2)],
            ),
            // Seq 1 stored again with more transactions; seq 2 continues from it.
            entry("small-1", vec![seg(1, "0-1-5", "0-1-9", 4)]),
            entry("small-2", vec![seg(2, "0-1-9", "0-1-10", 1)]),
        ];
        let chosen: Vec<(u64, usize)> = choose(&entries).iter().map(|c| (c.0, c.1)).collect();
        assert_eq!(chosen, vec![(0, 1), (1, 2), (2, 3)]);

        // Without a next segment the copy with more transactions wins.
        let chosen: Vec<(u64, usize)> = choose(&entries[..3]).iter().map(|c| (c.0, c.1)).collect();
        assert_eq!(chosen, vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn a_row_round_trips_a_summary() {
        let s = seg(7, "0-1-5,1-2-3", "0-1-9,1-2-3", 4);
        let json = serde_json::to_string(&Row::from_summary(&s)).unwrap();
        assert!(json.starts_with("[7,1,"), "{json}");
        let back: Row = serde_json::from_str(&json).unwrap();
        assert_eq!(back.summary("ns/a"), s);
    }
}
