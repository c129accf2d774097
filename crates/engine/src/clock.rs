//! Timestamps as Kubernetes writes them (RFC 3339, whole seconds, UTC).

use jiff::Timestamp;

pub fn now() -> String {
    format_ts(Timestamp::now())
}

pub fn format_ts(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn parse(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn unix(s: &str) -> Option<i64> {
    parse(s).map(|t| t.as_second())
}
