//! Cron schedules: standard five fields (or @hourly-style), read in the server's time zone
//! unless the BackupConfiguration says otherwise (`timeZone`, or a `CRON_TZ=` prefix).

use jiff::{tz::TimeZone, Timestamp};

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
    text: String,
}

impl Schedule {
    /// Parses through coffer_api::schedule, the parser `coffer apply` checks with.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let coffer_api::schedule::CronSchedule { cron, tz } =
            coffer_api::schedule::parse(expr, time_zone)?;
        Ok(Schedule {
            cron,
            tz,
            text: expr.to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|n| n.timestamp())
    }

    /// Whether a fire time fell in (since, now]. Missed fires coalesce into one, as a cron
    /// job that was not running does not catch up.
    pub fn due(&self, since: Timestamp, now: Timestamp) -> bool {
        self.next_after(since).is_some_and(|n| n <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_fires_on_the_minute() {
        let s = Schedule::parse("* * * * *", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T10:00:30Z")),
            Some(ts("2026-11-25T10:01:00Z"))
        );
        assert!(s.due(ts("2026-11-25T10:00:59Z"), ts("2026-11-25T10:01:00Z")));
        assert!(!s.due(ts("2026-11-25T10:01:00Z"), ts("2026-11-25T10:01:59Z")));
    }

    #[test]
    fn time_zones_are_honoured() {
        let s = Schedule::parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        // 03:00 in Paris is 02:00 UTC in winter.
        assert_eq!(
            s.next_after(ts("2026-11-25T00:00:00Z")),
            Some(ts("2026-11-25T02:00:00Z"))
        );
        let s = Schedule::parse("CRON_TZ=America/New_York 30 1 * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T00:00:00Z")),
            Some(ts("2026-11-25T06:30:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(Schedule::parse("61 * * * *", Some("UTC")).is_err());
        assert!(
            Schedule::parse("* * * * * *", Some("UTC")).is_err(),
            "seconds are not cron"
        );
        assert!(Schedule::parse("0 3 * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .contains("unknown time zone"));
        assert!(Schedule::parse("@hourly", Some("UTC")).is_ok());
    }
}
