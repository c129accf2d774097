//! The pure decisions around a replication stream, apart from the connection so they are
//! tested without a server: which flavour a server is, whether a MySQL server can serve the
//! archive's GTID state, the GTID set a MySQL dump request carries, and what a dump thread's
//! error 1236 means.

use coffer_api::gtid::{Domain, Flavour, GtidState, Uuid};

use super::stream::CaptureError;

/// Which server family `@@version` names: MariaDB says so, MySQL (and Percona) does not.
pub fn detect_flavour(version: &str) -> Flavour {
    if version.to_ascii_lowercase().contains("mariadb") {
        Flavour::MariaDb
    } else {
        Flavour::MySql
    }
}

/// What a MySQL server says about its GTIDs before a stream is requested.
#[derive(Debug, Clone, Default)]
pub struct MySqlGtidFacts {
    /// `@@gtid_mode`.
    pub gtid_mode: String,
    /// `@@gtid_executed`, `@@gtid_purged`, as the server prints them.
    pub executed: String,
    pub purged: String,
    /// `@@binlog_transaction_compression` (None before MySQL 8.0.20, which has none).
    pub compression: Option<bool>,
}

/// Whether a MySQL server can serve the transactions after `start` over a GTID stream, and
/// its executed state (what "ahead" is measured against). The server itself would refuse a
/// purged start, but silently accepts a start naming a source UUID it never had (it streams
/// everything after it): coffer checks all three itself, before streaming.
pub fn check_mysql(
    target: &str,
    facts: &MySqlGtidFacts,
    start: &GtidState,
) -> Result<GtidState, CaptureError> {
    let unsupported = |reason: String| CaptureError::Unsupported {
        target: target.to_string(),
        reason,
    };
    if !facts.gtid_mode.eq_ignore_ascii_case("ON") {
        return Err(unsupported(format!(
            "its gtid_mode is {}; the binlog archive positions by GTID and does not support \
             file-only positioning (set gtid_mode=ON with enforce_gtid_consistency=ON)",
            facts.gtid_mode
        )));
    }
    if facts.compression == Some(true) {
        return Err(unsupported(
            "binlog_transaction_compression is ON: compressed TRANSACTION_PAYLOAD events are \
             not archived yet (SET GLOBAL binlog_transaction_compression=OFF)"
                .into(),
        ));
    }
    if start.flavour() == Some(Flavour::MariaDb) {
        return Err(unsupported(format!(
            "it is MySQL, and the archive is at the MariaDB GTID state `{start}`: another \
             server's history — give this server its own archive"
        )));
    }
    let state = |what: &str, text: &str| -> Result<GtidState, CaptureError> {
        text.parse()
            .map_err(|e| unsupported(format!("@@{what}: {e}")))
    };
    let executed = state("gtid_executed", &facts.executed)?;
    let purged = state("gtid_purged", &facts.purged)?;
    let missing: Vec<Domain> = start
        .0
        .keys()
        .copied()
        .filter(|d| !executed.0.contains_key(d))
        .collect();
    if !missing.is_empty() {
        return Err(CaptureError::UnknownDomain {
            target: target.to_string(),
            domains: missing,
            state: start.to_string(),
            server_state: executed.to_string(),
        });
    }
    if !executed.covers(start) {
        return Err(CaptureError::Ahead {
            target: target.to_string(),
            state: start.to_string(),
            server_pos: executed.to_string(),
            message: "checked before streaming: @@gtid_executed does not contain it".into(),
        });
    }
    if !start.covers(&purged) {
        return Err(CaptureError::Purged {
            target: target.to_string(),
            state: start.to_string(),
            message: format!(
                "checked before streaming: the server purged `{purged}` (@@gtid_purged)"
            ),
        });
    }
    Ok(executed)
}

/// The GTID set a MySQL `COM_BINLOG_DUMP_GTID` sends: `uuid:1-N` for each source of
/// `start` (what the archive already holds; the server sends everything else). Empty for
/// the empty state: the stream starts at the beginning of the server's oldest binlog.
pub fn sid_block(start: &GtidState) -> Vec<mysql_common::packets::Sid<'static>> {
    use mysql_common::packets::{GnoInterval, Sid};
    start
        .0
        .iter()
        .filter_map(|(d, g)| {
            let uuid = d.mysql()?;
            // GnoInterval's end is exclusive.
            Some(Sid::new(uuid.0).with_interval(GnoInterval::new(1, g.seq + 1)))
        })
        .collect()
}

/// The replica UUID the archive announces to MySQL (`@replica_uuid`): derived from its
/// server_id, so a restarted archive replaces its own stale dump thread (MySQL kills a dump
/// thread with the same replica UUID) and two archives never share one.
pub fn replica_uuid(server_id: u32) -> Uuid {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(b"cofr");
    b[6] = 0x40; // version 4 layout, variant bits below: a well-formed UUID
    b[8] = 0x80;
    b[12..].copy_from_slice(&server_id.to_be_bytes());
    Uuid(b)
}

/// Error 1236 (the dump thread gave up) from either flavour, by its message: MariaDB
/// "Could not find GTID state requested by slave in any binlog files" and MySQL "...purged
/// binary logs containing GTIDs that the slave requires" / "the source purged required
/// binary logs" are a purge; any other GTID complaint ("...not in the master's binlog",
/// MySQL's "has more GTIDs than the source has") is the server lagging when `start` is
/// beyond its position `server_pos` in some domain, a diverged history otherwise.
pub fn classify_1236(
    target: &str,
    m: &str,
    start: &GtidState,
    server_pos: &GtidState,
) -> CaptureError {
    let state = start.to_string();
    let target = target.to_string();
    let lower = m.to_ascii_lowercase();
    if m.contains("Could not find GTID state")
        || m.contains("Could not find first log file")
        || lower.contains("purged")
    {
        return CaptureError::Purged {
            target,
            state,
            message: m.to_string(),
        };
    }
    if m.contains("GTID") {
        let ahead = start
            .0
            .values()
            .any(|g| server_pos.0.get(&g.domain).is_some_and(|p| p.seq < g.seq));
        return match ahead {
            true => CaptureError::Ahead {
                target,
                state,
                server_pos: server_pos.to_string(),
                message: m.to_string(),
            },
            false => CaptureError::Diverged {
                target,
                state,
                message: m.to_string(),
            },
        };
    }
    CaptureError::Corrupt {
        target,
        reason: format!("error 1236: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f22ab58-82db-22f2-af44-d91bb9530673";

    fn st(s: &str) -> GtidState {
        s.parse().unwrap()
    }

    #[test]
    fn the_flavour_comes_from_the_version() {
        for (version, flavour) in [
            ("10.11.19-MariaDB-log", Flavour::MariaDb),
            ("11.4.2-MariaDB-ubu2404", Flavour::MariaDb),
            ("5.5.5-10.11.6-MariaDB", Flavour::MariaDb),
            ("8.0.36", Flavour::MySql),
            ("9.7.0", Flavour::MySql),
            ("8.4.3-3 Percona Server", Flavour::MySql),
        ] {
            assert_eq!(detect_flavour(version), flavour, "{version}");
        }
    }

    #[test]
    fn the_sid_block_names_each_source_from_one_to_its_last_gtid() {
        let sids = sid_block(&st(&format!("{B}:1-7,{A}:1")));
        let got: Vec<(String, Vec<(u64, u64)>)> = sids
            .iter()
            .map(|s| {
                (
                    Uuid(s.uuid()).to_string(),
                    s.intervals().iter().map(|i| (i.start(), i.end())).collect(),
                )
            })
            .collect();
        // Ordered by UUID; the interval's end is exclusive.
        assert_eq!(
            got,
            vec![(A.to_string(), vec![(1, 2)]), (B.to_string(), vec![(1, 8)])]
        );
        assert!(sid_block(&GtidState::default()).is_empty());
    }

    #[test]
    fn replica_uuids_are_stable_well_formed_and_distinct() {
        let a = replica_uuid(0x8000_0001);
        assert_eq!(a, replica_uuid(0x8000_0001));
        assert_ne!(a, replica_uuid(0x8000_0002));
        assert_eq!(a.to_string().parse::<Uuid>().unwrap(), a);
        assert_eq!(a.to_string().len(), 36);
    }

    fn facts(executed: &str, purged: &str) -> MySqlGtidFacts {
        MySqlGtidFacts {
            gtid_mode: "ON".into(),
            executed: executed.into(),
            purged: purged.into(),
            compression: Some(false),
        }
    }

    /// What a check came to, for the table.
    fn outcome(r: Result<GtidState, CaptureError>) -> String {
        match r {
            Ok(s) => format!("ok {s}"),
            Err(CaptureError::UnknownDomain { domains, .. }) => format!(
                "unknown {}",
                domains
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(CaptureError::Ahead { .. }) => "ahead".into(),
            Err(CaptureError::Purged { .. }) => "purged".into(),
            Err(CaptureError::Unsupported { reason, .. }) => format!("unsupported: {reason}"),
            Err(e) => format!("other: {e}"),
        }
    }

    #[test]
    fn a_mysql_server_is_checked_before_streaming() {
        let exec = format!("{A}:1-100,\n{B}:1-5");
        // (case, facts, start, outcome prefix)
        let table: Vec<(&str, MySqlGtidFacts, String, String)> = vec![
            (
                "from the beginning, nothing purged",
                facts(&exec, ""),
                String::new(),
                format!("ok {A}:1-100,{B}:1-5"),
            ),
            (
                "resume inside the binlog",
                facts(&exec, &format!("{A}:1-10")),
                format!("{A}:1-50,{B}:1-5"),
                "ok".into(),
            ),
            (
                "resume exactly at the purge boundary",
                facts(&exec, &format!("{A}:1-10")),
                format!("{A}:1-10"),
                "ok".into(),
            ),
            (
                "from the beginning after a purge",
                facts(&exec, &format!("{A}:1-10")),
                String::new(),
                "purged".into(),
            ),
            (
                "resume before the purge boundary",
                facts(&exec, &format!("{A}:1-10")),
                format!("{A}:1-9"),
                "purged".into(),
            ),
            (
                "a source the server never had",
                facts(&exec, ""),
                "5c33bc69-93ec-33f3-b055-ea2cca641784:1-3".into(),
                "unknown 5c33bc69-93ec-33f3-b055-ea2cca641784".into(),
            ),
            (
                "the archive is beyond the server",
                facts(&exec, ""),
                format!("{A}:1-101"),
                "ahead".into(),
            ),
            (
                "gtid_mode off",
                MySqlGtidFacts {
                    gtid_mode: "OFF_PERMISSIVE".into(),
                    ..facts(&exec, "")
                },
                String::new(),
                "unsupported: its gtid_mode is OFF_PERMISSIVE".into(),
            ),
            (
                "compressed transactions",
                MySqlGtidFacts {
                    compression: Some(true),
                    ..facts(&exec, "")
                },
                String::new(),
                "unsupported: binlog_transaction_compression is ON".into(),
            ),
            (
                "compression unknown (before 8.0.20)",
                MySqlGtidFacts {
                    compression: None,
                    ..facts(&exec, "")
                },
                format!("{A}:1-100"),
                "ok".into(),
            ),
            (
                "executed set with holes",
                facts(&format!("{A}:1-10:12-20"), ""),
                String::new(),
                format!("unsupported: @@gtid_executed: the MySQL GTID set `{A}:1-10:12-20`"),
            ),
            (
                "a MariaDB state on a MySQL server",
                facts(&exec, ""),
                "0-1-5".into(),
                "unsupported: it is MySQL, and the archive is at the MariaDB".into(),
            ),
        ];
        for (case, f, start, want) in table {
            let got = outcome(check_mysql("db", &f, &st(&start)));
            assert!(
                got.starts_with(&want),
                "{case}: got `{got}`, want `{want}`…"
            );
        }
    }

    /// RESET BINARY LOGS AND GTIDS and fewer new writes than were archived: the server is
    /// behind the archive's own UUID. Checked, that is Ahead (a lag is possible); once the
    /// archive gives up waiting it is a divergence, and says so without "wait for it".
    #[test]
    fn a_server_behind_the_archive_becomes_a_divergence_at_the_gap() {
        let e = check_mysql(
            "db",
            &facts(&format!("{A}:1-7"), ""),
            &st(&format!("{A}:1-20")),
        )
        .unwrap_err();
        assert!(matches!(e, CaptureError::Ahead { .. }), "{e}");
        let d = e.into_diverged();
        assert!(matches!(d, CaptureError::Diverged { .. }), "{d}");
        let text = d.to_string();
        for want in [
            format!("diverged from the archive at `{A}:1-20`"),
            format!("its binlog ends before it, at `{A}:1-7`"),
            "RESET BINARY LOGS AND GTIDS".to_string(),
        ] {
            assert!(text.contains(&want), "`{want}` in: {text}");
        }
        assert!(!text.contains("catch up"), "{text}");
        // Any other error is left as it is.
        let p = CaptureError::Purged {
            target: "db".into(),
            state: String::new(),
            message: String::new(),
        };
        assert!(matches!(p.into_diverged(), CaptureError::Purged { .. }));
    }

    #[test]
    fn error_1236_is_classified_in_both_flavours() {
        let start = st(&format!("{A}:1-50"));
        let behind = st(&format!("{A}:1-40"));
        let level = st(&format!("{A}:1-60"));
        let kind = |e: CaptureError| match e {
            CaptureError::Purged { .. } => "purged",
            CaptureError::Ahead { .. } => "ahead",
            CaptureError::Diverged { .. } => "diverged",
            CaptureError::Corrupt { .. } => "corrupt",
            _ => "other",
        };
        // (message, server position, kind)
        let table = [
            (
                "The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but \
                 the master has purged binary logs containing GTIDs that the slave requires.",
                &level,
                "purged",
            ),
            (
                "Cannot replicate because the source purged required binary logs. Replicate \
                 the missing transactions from elsewhere, or provision a new replica from \
                 backup.",
                &level,
                "purged",
            ),
            (
                "Could not find GTID state requested by slave in any binlog files.",
                &level,
                "purged",
            ),
            (
                "Could not find first log file name in binary log index file",
                &level,
                "purged",
            ),
            (
                "Slave has more GTIDs than the master has, using the master's SERVER_UUID.",
                &behind,
                "ahead",
            ),
            (
                "Cannot replicate because the source has fewer GTIDs than the replica ...",
                &level,
                "diverged",
            ),
            (
                "Error: connecting slave requested to start from GTID 0-1-50, which is not in \
                 the master's binlog",
                &level,
                "diverged",
            ),
            ("binlog truncated in the middle of event", &level, "corrupt"),
        ];
        for (m, pos, want) in table {
            assert_eq!(kind(classify_1236("db", m, &start, pos)), want, "{m}");
        }
    }
}
