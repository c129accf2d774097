//! MariaDB GTIDs and the index of an archived binlog segment: what point-in-time recovery
//! resolves a target against and checks continuity with. Plain data; the capture (coffer-db),
//! the timeline decisions (coffer-control) and the restore (coffer-engine) all speak it.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One MariaDB GTID, `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Gtid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a GTID (expected domain-server-seq, e.g. 0-1-42)");
        let mut it = s.trim().splitn(3, '-');
        let (Some(d), Some(sv), Some(q)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        })
    }
}

impl From<Gtid> for String {
    fn from(g: Gtid) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for Gtid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A GTID state: the last GTID of each replication domain (MariaDB's `gtid_binlog_pos`, a
/// GTID_LIST event, `@slave_connect_state`). Written `0-1-42,100-21-7`; empty is "".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct GtidState(pub BTreeMap<u32, Gtid>);

impl GtidState {
    /// The state after `g` was applied.
    pub fn advance(&mut self, g: Gtid) {
        self.0.insert(g.domain, g);
    }

    /// Every domain of `other` is here, at the same or a later sequence number.
    pub fn covers(&self, other: &GtidState) -> bool {
        other
            .0
            .iter()
            .all(|(d, g)| self.0.get(d).is_some_and(|mine| mine.seq >= g.seq))
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(Gtid::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for GtidState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut st = GtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = part.parse()?;
            if st.0.insert(g.domain, g).is_some() {
                return Err(format!("`{s}` names domain {} twice", g.domain));
            }
        }
        Ok(st)
    }
}

impl From<GtidState> for String {
    fn from(g: GtidState) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for GtidState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Where one transaction ends in a segment: what a time or GTID target resolves against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEnd {
    pub gtid: Gtid,
    /// Commit time, Unix seconds (the event header's timestamp).
    pub time: i64,
    /// Byte offset in the segment file just after the transaction's last event.
    pub end: u64,
    /// The transaction's end in the source's binlog file (`source_file` of its segment, the
    /// last event's `log_pos`): what `START SLAVE UNTIL MASTER_LOG_POS` stops at when the
    /// segments are replayed as relay logs. 0 when unknown.
    #[serde(default)]
    pub source_end: u64,
}

/// The index of one archived segment: a valid binlog file (`\xfebin`, the source's format
/// description, an artificial Rotate naming the source file, then the events byte-exact) that
/// `mariadb-binlog` reads directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMeta {
    /// The archive (BinlogArchive name) and this segment's number in it, from 0, no holes.
    pub archive: String,
    pub seq: u64,
    /// The server it was read from: `server_id`, address, and its binlog file at the first
    /// event (file names differ between Galera nodes: never an identity).
    pub source_server_id: u32,
    pub source_address: String,
    pub source_file: String,
    /// The GTID state before the first transaction (the connect state) and after the last
    /// complete one. A segment continues the previous one when its start equals the
    /// previous end in every domain.
    pub start_state: GtidState,
    pub end_state: GtidState,
    /// Complete transactions, in stream order. A transaction cut by a stream error is not in
    /// the segment (the next one starts from `end_state`).
    pub transactions: Vec<TxEnd>,
    /// Size of the segment file in bytes.
    pub bytes: u64,
}

impl SegmentMeta {
    pub fn first_time(&self) -> Option<i64> {
        self.transactions.first().map(|t| t.time)
    }

    pub fn last_time(&self) -> Option<i64> {
        self.transactions.last().map(|t| t.time)
    }

    /// The first and last GTID of each domain in this segment.
    pub fn gtid_range(&self) -> BTreeMap<u32, (Gtid, Gtid)> {
        let mut out: BTreeMap<u32, (Gtid, Gtid)> = BTreeMap::new();
        for t in &self.transactions {
            out.entry(t.gtid.domain)
                .and_modify(|r| r.1 = t.gtid)
                .or_insert((t.gtid, t.gtid));
        }
        out
    }
}

/// GTIDs and GTID states are strings in manifests and statuses (`0-1-42`, `0-1-42,100-21-7`).
macro_rules! string_schema {
    ($t:ty, $name:literal, $pattern:literal) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "pattern": $pattern})
            }
        }
    };
}

string_schema!(Gtid, "Gtid", "^[0-9]+-[0-9]+-[0-9]+$");
string_schema!(
    GtidState,
    "GtidState",
    "^([0-9]+-[0-9]+-[0-9]+(,[0-9]+-[0-9]+-[0-9]+)*)?$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_and_states_round_trip_and_compare() {
        let g: Gtid = "0-11-42".parse().unwrap();
        assert_eq!((g.domain, g.server, g.seq), (0, 11, 42));
        assert_eq!(g.to_string(), "0-11-42");
        assert!("0-11".parse::<Gtid>().is_err());
        assert!("a-1-2".parse::<Gtid>().is_err());
        let st: GtidState = "100-21-7,0-11-42".parse().unwrap();
        assert_eq!(st.to_string(), "0-11-42,100-21-7");
        assert!("0-1-1,0-1-2".parse::<GtidState>().is_err());
        assert_eq!("".parse::<GtidState>().unwrap(), GtidState::default());
        let older: GtidState = "0-11-40".parse().unwrap();
        assert!(st.covers(&older));
        assert!(!older.covers(&st));
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(json, "\"0-11-42,100-21-7\"");
    }
}
