//! GTIDs of both flavours and the index of an archived binlog segment: what point-in-time
//! recovery resolves a target against and checks continuity with. Plain data; the capture
//! (coffer-db), the timeline decisions (coffer-control) and the restore (coffer-engine) all
//! speak it.
//!
//! A replication domain is a MariaDB domain id or a MySQL source UUID ([`Domain`]). A GTID
//! is written `0-1-42` (MariaDB, domain-server-seq) or
//! `3e11fa47-71ca-11e1-9e33-c80aa9429562:42` (MySQL, uuid:seq; MySQL GTIDs carry no server
//! id, so `server` is 0). A [`GtidState`] holds the last GTID of each domain: MariaDB's
//! `gtid_binlog_pos` form for MariaDB, MySQL's GTID set syntax (`uuid:1-42`) for MySQL,
//! which coffer accepts only when every source UUID's executed set is contiguous from 1 (a
//! "last GTID per domain" cannot say anything else). One state never mixes the flavours.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A 16-byte UUID (a MySQL `server_uuid`), written in the 8-4-4-4-12 hex form, lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = String;

    /// The 8-4-4-4-12 form, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a UUID (expected 8-4-4-4-12 hex digits)");
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *slot = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Uuid(out))
    }
}

/// Which server family a GTID comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    MariaDb,
    MySql,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::MariaDb => "MariaDB",
            Flavour::MySql => "MySQL",
        })
    }
}

/// A replication domain: a MariaDB `gtid_domain_id` or a MySQL source UUID. Written as the
/// number or the UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    MariaDb(u32),
    MySql(Uuid),
}

impl Domain {
    pub fn flavour(&self) -> Flavour {
        match self {
            Domain::MariaDb(_) => Flavour::MariaDb,
            Domain::MySql(_) => Flavour::MySql,
        }
    }

    /// The MariaDB domain id (None for a MySQL source UUID).
    pub fn mariadb(&self) -> Option<u32> {
        match self {
            Domain::MariaDb(d) => Some(*d),
            Domain::MySql(_) => None,
        }
    }

    /// The MySQL source UUID (None for a MariaDB domain).
    pub fn mysql(&self) -> Option<Uuid> {
        match self {
            Domain::MariaDb(_) => None,
            Domain::MySql(u) => Some(*u),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::MariaDb(d) => write!(f, "{d}"),
            Domain::MySql(u) => write!(f, "{u}"),
        }
    }
}

impl FromStr for Domain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.parse::<u32>() {
            Ok(d) => Ok(Domain::MariaDb(d)),
            Err(_) => s.parse().map(Domain::MySql).map_err(|_| {
                format!("`{s}` is not a GTID domain (a MariaDB domain id or a MySQL UUID)")
            }),
        }
    }
}

/// One GTID: MariaDB `domain-server-seq`, or MySQL `uuid:seq` (`server` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Gtid {
    pub domain: Domain,
    pub server: u32,
    pub seq: u64,
}

impl Gtid {
    pub fn mariadb(domain: u32, server: u32, seq: u64) -> Gtid {
        Gtid {
            domain: Domain::MariaDb(domain),
            server,
            seq,
        }
    }

    pub fn mysql(source: Uuid, seq: u64) -> Gtid {
        Gtid {
            domain: Domain::MySql(source),
            server: 0,
            seq,
        }
    }

    pub fn flavour(&self) -> Flavour {
        self.domain.flavour()
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.domain {
            Domain::MariaDb(d) => write!(f, "{d}-{}-{}", self.server, self.seq),
            Domain::MySql(u) => write!(f, "{u}:{}", self.seq),
        }
    }
}

impl FromStr for Gtid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((uuid, seq)) = s.split_once(':') {
            let bad = || {
                format!(
                    "`{s}` is not a MySQL GTID (expected uuid:seq, e.g. \
                     3e11fa47-71ca-11e1-9e33-c80aa9429562:42)"
                )
            };
            let uuid: Uuid = uuid.parse().map_err(|_| bad())?;
            let seq: u64 = seq.parse().map_err(|_| bad())?;
            if seq == 0 {
                return Err(bad());
            }
            return Ok(Gtid::mysql(uuid, seq));
        }
        let bad = || {
            format!(
                "`{s}` is not a GTID (expected MariaDB domain-server-seq, e.g. 0-1-42, or MySQL \
                 uuid:seq)"
            )
        };
        let mut it = s.splitn(3, '-');
        let (Some(d), Some(sv), Some(q)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Gtid::mariadb(
            d.parse().map_err(|_| bad())?,
            sv.parse().map_err(|_| bad())?,
            q.parse().map_err(|_| bad())?,
        ))
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
/// GTID_LIST event, `@slave_connect_state`; MySQL's `gtid_executed` when every source's set
/// is contiguous from 1). Written `0-1-42,100-21-7` or `uuid-a:1-42,uuid-b:1-7`; empty is "".
/// Parsing accepts MySQL's own printing (whitespace and newlines after commas); a MySQL set
/// with holes, not starting at 1, or with tagged GTIDs is refused, and so is a state mixing
/// MariaDB and MySQL domains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct GtidState(pub BTreeMap<Domain, Gtid>);

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

    /// The flavour of its domains (None when empty: an empty state fits both).
    pub fn flavour(&self) -> Option<Flavour> {
        self.0.keys().next().map(Domain::flavour)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match g.domain {
                Domain::MariaDb(_) => write!(f, "{g}")?,
                Domain::MySql(u) if g.seq == 1 => write!(f, "{u}:1")?,
                Domain::MySql(u) => write!(f, "{u}:1-{}", g.seq)?,
            }
        }
        Ok(())
    }
}

/// One `uuid:1-N` part of a MySQL GTID set, as the last GTID of that source.
fn parse_mysql_set_part(part: &str) -> Result<Gtid, String> {
    let (uuid, intervals) = part.split_once(':').expect("called on a part with ':'");
    let uuid: Uuid = uuid
        .trim()
        .parse()
        .map_err(|e| format!("`{part}` is not a MySQL GTID set (uuid:1-N): {e}"))?;
    let refuse = |why: &str| {
        format!(
            "the MySQL GTID set `{part}` of source {uuid} {why}: coffer archives MySQL sources \
             whose executed GTIDs per source UUID are contiguous from 1 (written {uuid}:1-N)"
        )
    };
    let iv: Vec<&str> = intervals.split(':').map(str::trim).collect();
    if iv.len() != 1 {
        if iv
            .iter()
            .any(|i| i.parse::<u64>().is_err() && !i.contains('-'))
        {
            return Err(refuse("has tagged GTIDs"));
        }
        return Err(refuse("has holes"));
    }
    let (lo, hi) = match iv[0].split_once('-') {
        Some((lo, hi)) => (lo.trim(), hi.trim()),
        None => (iv[0], iv[0]),
    };
    let (Ok(lo), Ok(hi)) = (lo.parse::<u64>(), hi.parse::<u64>()) else {
        return Err(refuse("is not an interval of numbers"));
    };
    if lo != 1 || hi < lo {
        return Err(refuse("does not start at 1"));
    }
    Ok(Gtid::mysql(uuid, hi))
}

impl FromStr for GtidState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut st = GtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: Gtid = if part.contains(':') {
                parse_mysql_set_part(part)?
            } else {
                part.parse()?
            };
            if let Some(f) = st.flavour() {
                if f != g.flavour() {
                    return Err(format!(
                        "`{s}` mixes MariaDB and MySQL GTIDs: one archive reads one flavour"
                    ));
                }
            }
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
    pub fn gtid_range(&self) -> BTreeMap<Domain, (Gtid, Gtid)> {
        let mut out: BTreeMap<Domain, (Gtid, Gtid)> = BTreeMap::new();
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

// The patterns accept both flavours; parsing is what refuses a mixed state or a MySQL set
// with holes (a pattern would be unreadable).
string_schema!(
    Gtid,
    "Gtid",
    "^([0-9]+-[0-9]+-[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]+)$"
);
string_schema!(
    GtidState,
    "GtidState",
    "^\\s*(([0-9]+-[0-9]+-[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]+(-[0-9]+)?)(\\s*,\\s*([0-9]+-[0-9]+-[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]+(-[0-9]+)?))*)?\\s*$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_and_states_round_trip_and_compare() {
        let g: Gtid = "0-11-42".parse().unwrap();
        assert_eq!((g.domain, g.server, g.seq), (Domain::MariaDb(0), 11, 42));
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

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f22ab58-82db-22f2-af44-d91bb9530673";

    #[test]
    fn uuids_parse_in_either_case_and_print_lower_case() {
        let u: Uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562".parse().unwrap();
        assert_eq!(u.to_string(), A);
        assert_eq!(u.0[0], 0x3e);
        assert_eq!(u.0[15], 0x62);
        for bad in [
            "",
            "3e11fa4771ca11e19e33c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa942956",
            "3e11fa47-71ca-11e1-9e33-c80aa94295620",
            "3e11fa47-71ca-11e1-9e33-c80aa942956g",
            "3e11fa4-771ca-11e1-9e33-c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa94295é",
        ] {
            assert!(bad.parse::<Uuid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gtids_of_both_flavours_parse_and_print() {
        // (input, canonical form, flavour)
        let ok = [
            ("0-1-42", "0-1-42", Flavour::MariaDb),
            (" 100-21-7 ", "100-21-7", Flavour::MariaDb),
            (&format!("{A}:42"), &format!("{A}:42"), Flavour::MySql),
            (
                &format!("{}:1", A.to_uppercase()),
                &format!("{A}:1"),
                Flavour::MySql,
            ),
        ];
        for (input, canon, flavour) in ok {
            let g: Gtid = input.parse().unwrap();
            assert_eq!(g.to_string(), *canon, "{input}");
            assert_eq!(g.flavour(), flavour, "{input}");
        }
        let g: Gtid = format!("{A}:42").parse().unwrap();
        assert_eq!(g, Gtid::mysql(A.parse().unwrap(), 42));
        assert_eq!(g.server, 0);
        for bad in [
            format!("{A}:0"),
            format!("{A}:x"),
            format!("{A}:1-5"),
            A.to_string(),
            "zz:4".to_string(),
            "0-1".to_string(),
        ] {
            assert!(bad.parse::<Gtid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mysql_states_are_gtid_sets_contiguous_from_one() {
        // (input, canonical form)
        let ok = [
            (format!("{A}:1-42"), format!("{A}:1-42")),
            (format!("{A}:1"), format!("{A}:1")),
            (format!("{A}:1-1"), format!("{A}:1")),
            // MySQL prints @@gtid_executed with a newline after each comma.
            (
                format!("{B}:1-7,\n{}:1-42", A.to_uppercase()),
                format!("{A}:1-42,{B}:1-7"),
            ),
            (format!(" {A}:1-42 ,\n"), format!("{A}:1-42")),
        ];
        for (input, canon) in &ok {
            let st: GtidState = input.parse().unwrap();
            assert_eq!(&st.to_string(), canon, "{input}");
            assert_eq!(st.flavour(), Some(Flavour::MySql));
            assert_eq!(&canon.parse::<GtidState>().unwrap(), &st);
        }
        let st: GtidState = format!("{A}:1-42").parse().unwrap();
        assert_eq!(
            st.0[&Domain::MySql(A.parse().unwrap())],
            Gtid::mysql(A.parse().unwrap(), 42)
        );
        // Refused, and the message names the source and the rule.
        for (input, why) in [
            (format!("{A}:1-5:7-9"), "has holes"),
            (format!("{A}:3-42"), "does not start at 1"),
            (format!("{A}:42"), "does not start at 1"),
            (format!("{A}:5-1"), "does not start at 1"),
            (format!("{A}:tag:1-5"), "tagged"),
            (format!("{A}:1-x"), "not an interval"),
        ] {
            let e = input.parse::<GtidState>().unwrap_err();
            assert!(e.contains(why), "{input}: {e}");
            assert!(e.contains(A), "{input}: {e}");
            assert!(e.contains("contiguous from 1"), "{input}: {e}");
        }
        let e = format!("{A}:1-4,{A}:1-5").parse::<GtidState>().unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_state_never_mixes_the_flavours() {
        for input in [format!("0-1-5,{A}:1-3"), format!("{A}:1-3,0-1-5")] {
            let e = input.parse::<GtidState>().unwrap_err();
            assert!(e.contains("mixes MariaDB and MySQL"), "{e}");
        }
        assert_eq!(GtidState::default().flavour(), None);
        assert_eq!(
            "0-1-5".parse::<GtidState>().unwrap().flavour(),
            Some(Flavour::MariaDb)
        );
    }

    #[test]
    fn covers_and_advance_work_per_domain_in_both_flavours() {
        let s = |x: String| x.parse::<GtidState>().unwrap();
        // (state, other, state covers other)
        let table = [
            (s(format!("{A}:1-42")), s(format!("{A}:1-40")), true),
            (s(format!("{A}:1-40")), s(format!("{A}:1-42")), false),
            (s(format!("{A}:1-42,{B}:1")), s(format!("{B}:1")), true),
            (s(format!("{A}:1-42")), s(format!("{B}:1")), false),
            (s(format!("{A}:1-42")), GtidState::default(), true),
            (s("0-1-42".into()), s("0-2-40".into()), true),
            (s("0-1-42".into()), s("1-1-1".into()), false),
        ];
        for (i, (a, b, want)) in table.iter().enumerate() {
            assert_eq!(a.covers(b), *want, "row {i}: {a} covers {b}");
        }
        let mut st = GtidState::default();
        st.advance(Gtid::mysql(A.parse().unwrap(), 1));
        st.advance(Gtid::mysql(A.parse().unwrap(), 2));
        st.advance(Gtid::mysql(B.parse().unwrap(), 1));
        assert_eq!(st.to_string(), format!("{A}:1-2,{B}:1"));
    }

    #[test]
    fn both_flavours_round_trip_through_serde() {
        for text in [
            format!("{A}:1-42,{B}:1"),
            "0-11-42,100-21-7".to_string(),
            String::new(),
        ] {
            let st: GtidState = text.parse().unwrap();
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<GtidState>(&json).unwrap(), st);
        }
        let g = Gtid::mysql(A.parse().unwrap(), 9);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, format!("\"{A}:9\""));
        assert_eq!(serde_json::from_str::<Gtid>(&json).unwrap(), g);
        assert!(serde_json::from_str::<GtidState>(&format!("\"{A}:2-9\"")).is_err());
    }
}
