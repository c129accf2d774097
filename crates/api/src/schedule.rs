//! Reading a BackupConfiguration's schedule: five cron fields (or `@hourly`-style), in the
//! server's time zone unless `timeZone` or a `CRON_TZ=`/`TZ=` prefix names one. `coffer apply`
//! and the scheduler both read it here, so what apply accepts is what the scheduler can run.

use jiff::tz::TimeZone;

/// A parsed schedule: the cron pattern and the zone its wall-clock times are read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub cron: croner::Cron,
    pub tz: TimeZone,
}

/// Parses `expr` (with an optional `CRON_TZ=Zone ` prefix) read in `time_zone`. The error
/// names the value and what is wrong with it.
pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<CronSchedule, String> {
    let mut body = expr.trim();
    let mut tz_name = time_zone.map(str::to_string);
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = body.strip_prefix(prefix) {
            let (tz, b) = rest.split_once(' ').unwrap_or((rest, ""));
            tz_name = Some(tz.to_string());
            body = b.trim();
        }
    }
    let tz = match &tz_name {
        Some(n) => TimeZone::get(n).map_err(|_| {
            format!("unknown time zone `{n}`: use an IANA name such as UTC or Europe/Paris")
        })?,
        None => TimeZone::system(),
    };
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(body)
        .map_err(|e| {
            format!(
                "`{expr}` is not a valid cron schedule ({e}); expected five fields: minute \
                 (0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-7), or \
                 @hourly, @daily, @weekly, @monthly, @yearly"
            )
        })?;
    Ok(CronSchedule { cron, tz })
}

/// Checks a time zone name alone.
pub fn time_zone(name: &str) -> Result<(), String> {
    parse("@daily", Some(name)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_schedules() {
        for ok in [
            "*/5 * * * *",
            "0 3 * * *",
            "@hourly",
            "CRON_TZ=Europe/Paris 0 3 * * *",
            "0 3 * * MON-FRI",
        ] {
            assert!(parse(ok, Some("UTC")).is_ok(), "{ok}");
        }
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * * *",
            "* * * * * *",
            "@fortnightly",
        ] {
            let e = parse(bad, Some("UTC")).unwrap_err();
            assert!(
                e.starts_with(&format!("`{bad}` is not a valid cron schedule")),
                "{e}"
            );
        }
        assert_eq!(
            parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err(),
            "unknown time zone `Mars/Olympus`: use an IANA name such as UTC or Europe/Paris"
        );
        assert!(parse("CRON_TZ=Nowhere/Here 0 3 * * *", None).is_err());
        assert!(time_zone("America/New_York").is_ok());
    }
}
