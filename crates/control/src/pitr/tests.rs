use super::*;

fn g(s: &str) -> Gtid {
    s.parse().unwrap()
}

fn st(s: &str) -> GtidState {
    s.parse().unwrap()
}

/// Where the `i`-th transaction of a segment ends: after a 256-byte header, 100 bytes each.
fn end_of(i: usize) -> u64 {
    256 + 100 * (i as u64 + 1)
}

/// A segment starting at `start` with these `(gtid, commit time)` transactions; its end
/// state follows from them.
fn seg(seq: u64, start: &str, txs: &[(&str, i64)]) -> SegmentMeta {
    let mut end = st(start);
    let transactions: Vec<TxEnd> = txs
        .iter()
        .enumerate()
        .map(|(i, (gt, time))| {
            end.advance(g(gt));
            TxEnd {
                gtid: g(gt),
                time: *time,
                end: end_of(i),
                source_end: end_of(i),
            }
        })
        .collect();
    SegmentMeta {
        archive: "shop".into(),
        seq,
        source_server_id: 1,
        source_address: "db:3306".into(),
        source_file: "bin.000001".into(),
        start_state: st(start),
        end_state: end,
        bytes: end_of(txs.len()),
        transactions,
    }
}

/// (reason, after, before, domain) of each gap.
fn gaps_of(t: &Timeline) -> Vec<(GapReason, u64, u64, Option<u32>)> {
    t.gaps
        .iter()
        .map(|g| {
            (
                g.reason,
                g.after,
                g.before,
                g.domain.and_then(|d| d.mariadb()),
            )
        })
        .collect()
}

#[test]
fn timeline_splits_at_every_kind_of_break() {
    use GapReason::*;
    let a = seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]);
    let b = seg(1, "0-1-2", &[("0-1-3", 120)]);
    type Case = (
        &'static str,
        Vec<SegmentMeta>,
        Vec<(GapReason, u64, u64, Option<u32>)>,
        usize,
    );
    let cases: Vec<Case> = vec![
        ("continuous", vec![a.clone(), b.clone()], vec![], 1),
        (
            "out of order and listed twice",
            vec![b.clone(), a.clone(), b.clone()],
            vec![],
            1,
        ),
        (
            "purged",
            vec![a.clone(), seg(1, "0-1-5", &[("0-1-6", 130)])],
            vec![(Purged, 0, 1, Some(0))],
            2,
        ),
        (
            "same seq from another server",
            vec![a.clone(), seg(1, "0-2-2", &[("0-2-3", 130)])],
            vec![(Diverged, 0, 1, Some(0))],
            2,
        ),
        (
            "regression (RESET MASTER)",
            vec![a.clone(), seg(1, "0-1-0", &[("0-1-1", 130)])],
            vec![(Diverged, 0, 1, Some(0))],
            2,
        ),
        (
            "a domain the server no longer has",
            vec![a.clone(), seg(1, "", &[("5-1-1", 130)])],
            vec![(Diverged, 0, 1, Some(0))],
            2,
        ),
        (
            "a domain never seen",
            vec![a.clone(), seg(1, "0-1-2,7-3-40", &[("7-3-41", 130)])],
            vec![(UnknownDomain, 0, 1, Some(7))],
            2,
        ),
        (
            "a hole in the numbering, states chaining",
            vec![a.clone(), seg(2, "0-1-2", &[("0-1-3", 120)])],
            vec![(MissingSegment, 0, 2, None)],
            2,
        ),
        (
            "two different segments numbered alike",
            vec![a.clone(), seg(0, "", &[("0-1-1", 100)])],
            vec![(Diverged, 0, 0, None)],
            2,
        ),
        (
            "two domains break at once",
            vec![
                seg(0, "", &[("0-1-1", 100), ("1-1-1", 101)]),
                seg(1, "0-1-4,1-2-1", &[("0-1-5", 130)]),
            ],
            vec![(Purged, 0, 1, Some(0)), (Diverged, 0, 1, Some(1))],
            2,
        ),
    ];
    for (name, segments, want_gaps, want_windows) in cases {
        let t = timeline(&segments);
        assert_eq!(gaps_of(&t), want_gaps, "{name}");
        assert_eq!(t.windows.len(), want_windows, "{name}");
    }
}

#[test]
fn windows_and_gaps_say_what_a_person_needs() {
    let t = timeline(&[
        seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]),
        seg(1, "0-1-2", &[]),
        seg(2, "0-1-2", &[("0-1-3", 120)]),
        seg(3, "0-1-9", &[("0-1-10", 200)]),
    ]);
    assert_eq!(
        t.windows[0],
        Window {
            first_segment: 0,
            last_segment: 2,
            start: GtidState::default(),
            end: st("0-1-3"),
            first_time: Some(100),
            last_time: Some(120),
        }
    );
    assert_eq!(
        (t.windows[1].first_segment, t.windows[1].first_time),
        (3, Some(200))
    );
    let gap = &t.gaps[0];
    assert_eq!(
        (gap.expected, gap.found),
        (Some(g("0-1-3")), Some(g("0-1-9")))
    );
    let msg = gap.to_string();
    assert!(
        msg.starts_with(
            "archive shop, segments 2..3: domain 0: segment 2 ends at 0-1-3, segment 3 starts \
             at 0-1-9"
        ),
        "{msg}"
    );
    assert!(msg.contains("(Purged)"), "{msg}");
    let s = gap.to_status();
    assert_eq!(
        (s.after_segment, s.before_segment, s.expected.as_deref()),
        (Some(2), 3, Some("0-1-3"))
    );
    let w = t.windows[0].to_status();
    assert_eq!(w.earliest.as_deref(), Some("1970-01-01T00:01:40Z"));
    assert_eq!(w.end_gtid, st("0-1-3"));
}

/// Segments 0..=2 unbroken (0-1-1..0-1-5, times 100..140), a Purged gap, segment 3
/// (0-1-9, 0-1-10 at 200, 210).
fn archive() -> Vec<SegmentMeta> {
    vec![
        seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]),
        seg(1, "0-1-2", &[("0-1-3", 120), ("0-1-4", 130)]),
        seg(2, "0-1-4", &[("0-1-5", 140)]),
        seg(3, "0-1-8", &[("0-1-9", 200), ("0-1-10", 210)]),
    ]
}

fn base(snapshot: &str, time: i64, state: &str) -> BaseBackup {
    BaseBackup {
        snapshot: snapshot.into(),
        time,
        state: st(state),
    }
}

fn bases(names: &str) -> Vec<BaseBackup> {
    let all = [
        base("a", 105, "0-1-1"),
        base("b", 125, "0-1-3"),
        base("c", 205, "0-1-9"),
    ];
    all.into_iter()
        .filter(|b| names.contains(b.snapshot.as_str()))
        .collect()
}

fn time(t: i64) -> PointInTimeTarget {
    PointInTimeTarget::Time(t)
}

fn gtid(s: &str, inclusive: bool) -> PointInTimeTarget {
    PointInTimeTarget::Gtid {
        gtid: g(s),
        inclusive,
    }
}

/// What a plan comes to: base, segments, start (segment, offset), stop GTID, reached state,
/// and the gap `latest` stopped before.
type Summary = (
    String,
    Vec<u64>,
    Option<(u64, Option<u64>)>,
    Option<String>,
    String,
    Option<(u64, u64)>,
);

fn summary(p: &RestorePlan) -> Summary {
    (
        p.base.snapshot.clone(),
        p.segments.clone(),
        p.start.as_ref().map(|s| (s.segment, s.offset)),
        p.stop.as_ref().map(|s| s.gtid.to_string()),
        p.reached.to_string(),
        p.stopped_before.as_ref().map(|g| (g.after, g.before)),
    )
}

fn sum(
    base: &str,
    segs: &[u64],
    start: Option<(u64, Option<u64>)>,
    stop: Option<&str>,
    reached: &str,
    gap: Option<(u64, u64)>,
) -> Summary {
    (
        base.into(),
        segs.to_vec(),
        start,
        stop.map(String::from),
        reached.into(),
        gap,
    )
}

#[test]
fn plans_pick_the_newest_base_before_the_target_and_stop_exactly() {
    let segs = archive();
    let cases: Vec<(&str, PointInTimeTarget, &str, Summary)> = vec![
        (
            "latest from the newest base",
            PointInTimeTarget::Latest,
            "abc",
            sum(
                "c",
                &[3],
                Some((3, Some(end_of(0)))),
                Some("0-1-10"),
                "0-1-10",
                None,
            ),
        ),
        (
            "latest stops before the gap",
            PointInTimeTarget::Latest,
            "ab",
            sum(
                "b",
                &[1, 2],
                Some((1, Some(end_of(0)))),
                Some("0-1-5"),
                "0-1-5",
                Some((2, 3)),
            ),
        ),
        (
            "a time mid-segment",
            time(135),
            "abc",
            sum(
                "b",
                &[1],
                Some((1, Some(end_of(0)))),
                Some("0-1-4"),
                "0-1-4",
                None,
            ),
        ),
        (
            "a time that is the base itself",
            time(125),
            "abc",
            sum("b", &[], None, None, "0-1-3", None),
        ),
        (
            "a time before the newer base uses an older one",
            time(115),
            "abc",
            sum(
                "a",
                &[0],
                Some((0, Some(end_of(0)))),
                Some("0-1-2"),
                "0-1-2",
                None,
            ),
        ),
        (
            "a time on a commit",
            time(140),
            "ab",
            sum(
                "b",
                &[1, 2],
                Some((1, Some(end_of(0)))),
                Some("0-1-5"),
                "0-1-5",
                None,
            ),
        ),
        (
            "a GTID, included",
            gtid("0-1-4", true),
            "abc",
            sum(
                "b",
                &[1],
                Some((1, Some(end_of(0)))),
                Some("0-1-4"),
                "0-1-4",
                None,
            ),
        ),
        (
            "a GTID, excluded, is the base",
            gtid("0-1-4", false),
            "abc",
            sum("b", &[], None, None, "0-1-3", None),
        ),
        (
            "a GTID before the newer base",
            gtid("0-1-2", true),
            "abc",
            sum(
                "a",
                &[0],
                Some((0, Some(end_of(0)))),
                Some("0-1-2"),
                "0-1-2",
                None,
            ),
        ),
        (
            "a GTID whose replay starts at a segment's first event",
            gtid("0-1-5", true),
            "a",
            sum(
                "a",
                &[0, 1, 2],
                Some((0, Some(end_of(0)))),
                Some("0-1-5"),
                "0-1-5",
                None,
            ),
        ),
        (
            "a GTID after the gap, from the base after it",
            gtid("0-1-10", false),
            "abc",
            sum("c", &[], None, None, "0-1-9", None),
        ),
    ];
    for (name, target, names, want) in cases {
        let plan = plan_restore("shop", &target, &bases(names), &segs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary(&plan), want, "{name}");
    }
    // The stop point is the byte offset after the transaction, in its segment.
    let p = plan_restore("shop", &time(135), &bases("b"), &segs).unwrap();
    assert_eq!(
        p.stop,
        Some(StopPoint {
            segment: 1,
            offset: end_of(1),
            gtid: g("0-1-4"),
            time: 130
        })
    );
    // A replay starting at a segment boundary starts at that segment's first event.
    let p = plan_restore(
        "shop",
        &gtid("0-1-5", true),
        &bases("b"),
        &[
            seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]),
            seg(1, "0-1-2", &[("0-1-3", 120)]),
            seg(2, "0-1-3", &[("0-1-4", 130), ("0-1-5", 140)]),
        ],
    )
    .unwrap();
    assert_eq!(
        (p.segments, p.start),
        (
            vec![2],
            Some(StartPoint {
                segment: 2,
                offset: None
            })
        )
    );
}

#[test]
fn plans_refuse_what_they_cannot_do_and_say_why() {
    let segs = archive();
    let err = |target: PointInTimeTarget, names: &str| {
        plan_restore("shop", &target, &bases(names), &segs).unwrap_err()
    };
    // Across the gap from the bases before it.
    let e = err(time(170), "ab");
    let PlanError::GapBeforeTarget { gap, latest, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (gap.after, gap.before, gap.reason),
        (2, 3, GapReason::Purged)
    );
    assert!(latest.contains("0-1-5"), "{latest}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "restoring to 1970-01-01T00:02:50Z would cross a Purged gap (after segment 2)"
        ),
        "the refusal names the gap first: {msg}"
    );
    assert!(
        msg.contains("1970-01-01T00:02:20Z (GTID 0-1-5, segment 2)"),
        "{msg}"
    );
    // …even when a newer base exists but is after the target.
    assert!(matches!(
        err(time(170), "abc"),
        PlanError::GapBeforeTarget { .. }
    ));
    assert!(matches!(
        err(gtid("0-1-10", true), "ab"),
        PlanError::GapBeforeTarget { .. }
    ));
    // After everything archived.
    let e = err(time(300), "abc");
    assert!(matches!(e, PlanError::TimeAfterArchive { .. }), "{e}");
    assert!(e.to_string().contains("1970-01-01T00:03:30Z"), "{e}");
    // Before everything archived.
    let e = err(time(50), "abc");
    assert!(matches!(e, PlanError::TimeOutsideWindows { .. }), "{e}");
    // A GTID the archive never had, by sequence or by server.
    for missing in ["0-1-7", "0-2-4", "3-1-1"] {
        let e = err(gtid(missing, true), "abc");
        assert!(matches!(e, PlanError::UnknownGtid { .. }), "{e}");
        assert!(e.to_string().contains("it holds 0-1-1..0-1-10"), "{e}");
    }
    // No base backup, or none on the archive's history.
    let e = err(PointInTimeTarget::Latest, "");
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
    assert!(e.to_string().contains("base backups: none"), "{e}");
    let e = plan_restore(
        "shop",
        &PointInTimeTarget::Latest,
        &[base("x", 130, "0-2-3")],
        &segs,
    )
    .unwrap_err();
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
    // The target before every base.
    let e = err(gtid("0-1-1", false), "bc");
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
    // Nothing archived.
    let e = plan_restore("shop", &PointInTimeTarget::Latest, &bases("a"), &[]).unwrap_err();
    assert_eq!(
        e,
        PlanError::EmptyArchive {
            archive: "shop".into()
        }
    );
    // The same GTID in two histories (RESET MASTER between).
    let reset = vec![
        seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]),
        seg(1, "", &[("0-1-1", 200), ("0-1-2", 210)]),
    ];
    let e = plan_restore("shop", &gtid("0-1-2", true), &bases("a"), &reset).unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::AmbiguousGtid {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn plans_follow_each_domain_and_ignore_domains_never_archived() {
    // Two domains interleaved in the stream; the base was taken on a node where domain 1's
    // transaction came before domain 0's second one, and it has a local domain 9 the archive
    // never saw.
    let segs = vec![
        seg(0, "", &[("0-1-1", 100), ("1-2-1", 101), ("0-1-2", 102)]),
        seg(1, "0-1-2,1-2-1", &[("1-2-2", 110), ("0-1-3", 111)]),
    ];
    let b = base("n2", 103, "0-1-1,1-2-1,9-5-77");
    let p = plan_restore(
        "shop",
        &PointInTimeTarget::Latest,
        std::slice::from_ref(&b),
        &segs,
    )
    .unwrap();
    assert_eq!(
        summary(&p),
        sum(
            "n2",
            &[0, 1],
            Some((0, Some(end_of(1)))),
            Some("0-1-3"),
            "0-1-3,1-2-2,9-5-77",
            None
        )
    );
    // A base that has a domain's transaction the archive lacks is not on its history.
    let off = base("off", 103, "0-1-1,1-2-9");
    let e = plan_restore("shop", &PointInTimeTarget::Latest, &[off], &segs).unwrap_err();
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
    // A base missing a domain the archive started with is before the archive began.
    let early = base("early", 99, "");
    let late_start = vec![seg(0, "0-1-5", &[("0-1-6", 100)])];
    let e = plan_restore("shop", &PointInTimeTarget::Latest, &[early], &late_start).unwrap_err();
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
}

#[test]
fn retention_deletes_only_what_no_base_backup_needs() {
    let segs = archive();
    let hour = Duration::from_secs(3600);
    let cases: Vec<(&str, &str, Keep, i64, Vec<u64>)> = vec![
        (
            "no base backup yet: nothing",
            "",
            Keep::BaseBackups,
            1000,
            vec![],
        ),
        (
            "the oldest base needs segment 0",
            "abc",
            Keep::BaseBackups,
            1000,
            vec![],
        ),
        (
            "b needs segment 1 on",
            "bc",
            Keep::BaseBackups,
            1000,
            vec![0],
        ),
        (
            "c needs segment 3 only",
            "c",
            Keep::BaseBackups,
            1000,
            vec![0, 1, 2],
        ),
        ("young segments stay", "", Keep::For(hour), 1000, vec![]),
        (
            "old segments go, never the newest",
            "",
            Keep::For(Duration::from_secs(10)),
            1000,
            vec![0, 1, 2],
        ),
        (
            "old but needed by b",
            "b",
            Keep::For(Duration::from_secs(10)),
            1000,
            vec![0],
        ),
        (
            "only a prefix older than the cutoff",
            "",
            Keep::For(Duration::from_secs(875)),
            1000,
            vec![0],
        ),
    ];
    for (name, names, keep, now, want) in cases {
        assert_eq!(retention(&segs, &bases(names), keep, now), want, "{name}");
    }
    // A base at the very end needs nothing archived, but the newest segment stays.
    assert_eq!(
        retention(&segs, &[base("z", 215, "0-1-10")], Keep::BaseBackups, 1000),
        vec![0, 1, 2]
    );
    // A segment without transactions is as old as the one before it; a hole stops deletion.
    let quiet = vec![
        seg(0, "", &[("0-1-1", 100)]),
        seg(1, "0-1-1", &[]),
        seg(2, "0-1-1", &[("0-1-2", 900)]),
        seg(3, "0-1-2", &[("0-1-3", 950)]),
    ];
    assert_eq!(
        retention(&quiet, &[], Keep::For(Duration::from_secs(500)), 1000),
        vec![0, 1]
    );
    assert!(retention(&[], &bases("a"), Keep::BaseBackups, 1000).is_empty());
}

fn observed() -> ArchiveObserved {
    ArchiveObserved {
        archive: "shop".into(),
        paused: false,
        running: false,
        failures: 0,
        last_exit: None,
        last_streaming: None,
        binlog_retention: BinlogRetention::Unknown,
        now: 1000,
    }
}

#[test]
fn the_supervisor_restarts_with_backoff_and_stops_when_paused() {
    let b = Backoff::default();
    let cases: Vec<(&str, ArchiveObserved, RunnerAction)> = vec![
        ("first start", observed(), RunnerAction::Start),
        (
            "running stays",
            ArchiveObserved {
                running: true,
                ..observed()
            },
            RunnerAction::Nothing,
        ),
        (
            "paused stops it",
            ArchiveObserved {
                paused: true,
                running: true,
                ..observed()
            },
            RunnerAction::Stop,
        ),
        (
            "paused and stopped",
            ArchiveObserved {
                paused: true,
                ..observed()
            },
            RunnerAction::Nothing,
        ),
        (
            "third failure waits 4s",
            ArchiveObserved {
                failures: 3,
                last_exit: Some(998),
                ..observed()
            },
            RunnerAction::StartAt(1002),
        ),
        (
            "…then starts",
            ArchiveObserved {
                failures: 3,
                last_exit: Some(996),
                ..observed()
            },
            RunnerAction::Start,
        ),
        (
            "the delay is capped",
            ArchiveObserved {
                failures: 40,
                last_exit: Some(990),
                ..observed()
            },
            RunnerAction::StartAt(1050),
        ),
    ];
    for (name, o, want) in cases {
        let s = supervise(&o, &b);
        assert_eq!(s.action, want, "{name}");
        assert_eq!(s.stopped_too_long, None, "{name}");
    }
    assert_eq!(b.delay(0), Duration::ZERO);
    assert_eq!(b.delay(1), Duration::from_secs(1));
    assert_eq!(b.delay(7), Duration::from_secs(60));
}

#[test]
fn stopped_too_long_compares_with_the_servers_binlog_retention() {
    assert_eq!(
        BinlogRetention::from_server(Some(7.0), Some(0)),
        BinlogRetention::Seconds(7 * 86_400)
    );
    assert_eq!(
        BinlogRetention::from_server(Some(7.0), Some(3600)),
        BinlogRetention::Seconds(3600)
    );
    assert_eq!(
        BinlogRetention::from_server(Some(0.5), None),
        BinlogRetention::Seconds(43_200)
    );
    assert_eq!(
        BinlogRetention::from_server(Some(0.0), Some(0)),
        BinlogRetention::Never
    );
    assert_eq!(
        BinlogRetention::from_server(None, None),
        BinlogRetention::Unknown
    );
    let day = BinlogRetention::Seconds(86_400);
    let cases = [
        ("within retention", Some(1000 - 86_400), day, false),
        ("beyond retention", Some(1000 - 86_401), day, true),
        (
            "never expires",
            Some(-1_000_000),
            BinlogRetention::Never,
            false,
        ),
        (
            "unknown retention",
            Some(-1_000_000),
            BinlogRetention::Unknown,
            false,
        ),
        ("never streamed", None, day, false),
    ];
    for (name, last, retention, want) in cases {
        let o = ArchiveObserved {
            last_streaming: last,
            binlog_retention: retention,
            paused: true,
            ..observed()
        };
        let s = supervise(&o, &Backoff::default());
        assert_eq!(s.stopped_too_long.is_some(), want, "{name}");
    }
    let s = supervise(
        &ArchiveObserved {
            last_streaming: Some(0),
            binlog_retention: BinlogRetention::Seconds(600),
            ..observed()
        },
        &Backoff::default(),
    );
    let too_long = s.stopped_too_long.unwrap();
    assert_eq!((too_long.down_for, too_long.retention), (1000, 600));
    let msg = too_long.to_string();
    assert!(
        msg.starts_with(
            "archive shop has not streamed since 1970-01-01T00:00:00Z (1000s), longer than the \
             server keeps binlogs (600s)"
        ),
        "{msg}"
    );
}

/// Planning from the listing (stand-ins) plus the full index of only the segments
/// `segments_to_read` names gives the plan the full index gives, for every kind of target.
#[test]
fn two_pass_planning_reads_few_segments_and_plans_as_the_full_index() {
    // Three transactions per segment, one per 10 s; a purge gap before segment 5.
    let mut segs = Vec::new();
    let mut state = String::new();
    let mut n = 0u64;
    for seq in 0..8u64 {
        if seq == 5 {
            n += 10;
            state = format!("0-1-{n}");
        }
        let txs: Vec<(String, i64)> = (0..3)
            .map(|_| {
                n += 1;
                (format!("0-1-{n}"), 1000 + 10 * n as i64)
            })
            .collect();
        let refs: Vec<(&str, i64)> = txs.iter().map(|(g, t)| (g.as_str(), *t)).collect();
        segs.push(seg(seq, &state, &refs));
        state = format!("0-1-{n}");
    }
    let listed_metas: Vec<SegmentMeta> = segs
        .iter()
        .map(|s| SegmentMeta {
            transactions: vec![],
            ..s.clone()
        })
        .collect();
    let listed: Vec<Listed> = listed_metas
        .iter()
        .zip(&segs)
        .map(|(m, s)| Listed {
            meta: m,
            first_time: s.first_time(),
            last_time: s.last_time(),
        })
        .collect();
    let bases = [
        BaseBackup {
            snapshot: "b1".into(),
            time: 1000,
            state: st("0-1-4"),
        },
        BaseBackup {
            snapshot: "b2".into(),
            time: 1265,
            state: st("0-1-26"),
        },
    ];
    let gt = |s: &str, inclusive| PointInTimeTarget::Gtid {
        gtid: g(s),
        inclusive,
    };
    // (target, segments read)
    let cases: Vec<(PointInTimeTarget, Vec<u64>)> = vec![
        (PointInTimeTarget::Latest, vec![1, 4, 5, 7]),
        (PointInTimeTarget::Time(1085), vec![1, 2, 5]),
        (PointInTimeTarget::Time(1125), vec![1, 3, 5]),
        (gt("0-1-8", true), vec![1, 2, 5]),
        (gt("0-1-7", false), vec![1, 2, 5]),
        (gt("0-1-30", true), vec![1, 5, 6]),
    ];
    for (target, want) in cases {
        let read = segments_to_read(&listed, &target, &bases);
        assert_eq!(read.iter().copied().collect::<Vec<_>>(), want, "{target:?}");
        let mixed: Vec<SegmentMeta> = listed
            .iter()
            .zip(&segs)
            .map(|(l, s)| {
                if read.contains(&s.seq) {
                    s.clone()
                } else {
                    stand_in(l)
                }
            })
            .collect();
        let full = plan_restore("shop", &target, &bases, &segs);
        let two = plan_restore("shop", &target, &bases, &mixed);
        assert_eq!(two, full, "{target:?}");
    }
    // Across the gap: refused the same way, naming it.
    let target = gt("0-1-27", true);
    let one = bases[..1].to_vec();
    let read = segments_to_read(&listed, &target, &one);
    let mixed: Vec<SegmentMeta> = listed
        .iter()
        .zip(&segs)
        .map(|(l, s)| {
            if read.contains(&s.seq) {
                s.clone()
            } else {
                stand_in(l)
            }
        })
        .collect();
    let e = plan_restore("shop", &target, &one, &mixed).unwrap_err();
    assert_eq!(e, plan_restore("shop", &target, &one, &segs).unwrap_err());
    assert!(e.to_string().contains("segments 4..5"), "{e}");
}

/// A base of a server that had not binlogged a transaction (the empty state) is the start of
/// an archive that began there; when two runs begin with the empty state (RESET MASTER
/// between them) nothing says which one it was taken on, so it is not used.
#[test]
fn an_empty_base_starts_the_run_that_starts_empty_and_only_one() {
    let first = seg(0, "", &[("0-1-1", 100), ("0-1-2", 110)]);
    let p = plan_restore(
        "shop",
        &PointInTimeTarget::Latest,
        &[base("e", 90, "")],
        std::slice::from_ref(&first),
    )
    .unwrap();
    assert_eq!(
        summary(&p),
        sum("e", &[0], Some((0, None)), Some("0-1-2"), "0-1-2", None)
    );
    let reset = [first, seg(1, "", &[("0-1-1", 200)])];
    let e = plan_restore("shop", &time(105), &[base("e", 90, "")], &reset).unwrap_err();
    assert!(matches!(e, PlanError::NoBaseBackup { .. }), "{e}");
}

/// A verification's replay: to the archive's end, stopped before a gap (named, and not a
/// failure), or nothing to replay.
#[test]
fn a_verification_says_how_far_its_replay_went_and_names_a_gap() {
    let segs = archive();
    // (base, reason, parts of the message)
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "c",
            "Replayed",
            vec![
                "archive shop: 1 segment(s) replayed after snapshot c up to 0-1-10",
                "the last transaction (0-1-10) committed at 1970-01-01T00:03:30Z",
            ],
        ),
        (
            "b",
            "StoppedBeforeGap",
            vec![
                "2 segment(s) replayed after snapshot b up to 0-1-5",
                "stopped there, before a gap: archive shop, segments 2..3: domain 0",
                "(Purged)",
                "take a new base backup",
            ],
        ),
    ];
    for (name, reason, parts) in cases {
        let p = plan_restore("shop", &PointInTimeTarget::Latest, &bases(name), &segs).unwrap();
        let (r, msg) = verification_replay(&p, name);
        assert_eq!(r, reason, "{msg}");
        for part in parts {
            assert!(msg.contains(part), "`{part}` in `{msg}`");
        }
    }
    // A base at the archive's newest point: nothing to replay.
    let at_end = [base("d", 300, "0-1-10")];
    let p = plan_restore("shop", &PointInTimeTarget::Latest, &at_end, &segs).unwrap();
    let (r, msg) = verification_replay(&p, "d");
    assert_eq!(r, "NothingToReplay", "{msg}");
    assert!(
        msg.contains("nothing to replay after snapshot d (it holds 0-1-10"),
        "{msg}"
    );
}

/// The decisions are the same for MySQL archives: a domain is a source UUID, and a state is
/// `uuid:1-N`.
#[test]
fn mysql_timelines_and_plans_follow_source_uuids() {
    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let a = |n: u64| format!("{A}:{n}");
    let s0 = seg(0, "", &[(&a(1), 100), (&a(2), 110)]);
    let s1 = seg(1, &format!("{A}:1-2"), &[(&a(3), 120)]);
    // Purged: the next segment starts after 3..=4 were lost.
    let s2 = seg(2, &format!("{A}:1-4"), &[(&a(5), 140)]);
    let t = timeline(&[s0.clone(), s1.clone(), s2.clone()]);
    assert_eq!(t.gaps.len(), 1, "{:?}", t.gaps);
    let gap = &t.gaps[0];
    let uuid: coffer_api::gtid::Uuid = A.parse().unwrap();
    assert_eq!(
        (gap.reason, gap.after, gap.before, gap.domain),
        (GapReason::Purged, 1, 2, Some(Domain::MySql(uuid)))
    );
    let status = gap.to_status();
    assert_eq!(status.domain, None);
    assert_eq!(status.source_uuid.as_deref(), Some(A));
    assert_eq!(status.expected, Some(a(3)));
    assert_eq!(status.found, Some(format!("{A}:4")));
    assert!(
        status.message.contains(&format!("source {A}")),
        "{}",
        status.message
    );
    assert_eq!(t.windows[0].end.to_string(), format!("{A}:1-3"));

    // The source gone from the next segment (RESET BINARY LOGS AND GTIDS, or another
    // server): Diverged, and the message says the server no longer has that history.
    const B: &str = "4f22ab58-82db-22f2-af44-d91bb9530673";
    let other = seg(2, "", &[(&format!("{B}:1"), 140)]);
    let t = timeline(&[s0.clone(), s1.clone(), other]);
    let gap = t.gaps[0].to_status();
    assert_eq!(
        (gap.reason, gap.source_uuid.as_deref(), gap.found.as_deref()),
        (GapReason::Diverged, Some(A), None)
    );
    assert!(
        gap.message.contains(&format!(
            "segment 1 ends at {A}:3, segment 2 starts without it: the server no longer has \
             this history (RESET MASTER / RESET BINARY LOGS AND GTIDS, or another server)"
        )),
        "{}",
        gap.message
    );

    // A plan from a base at uuid:1-1 to the GTID uuid:3 replays segments 0 and 1.
    let bases = vec![base("b", 105, &format!("{A}:1"))];
    let p = plan_restore("shop", &gtid(&a(3), true), &bases, &[s0, s1, s2]).unwrap();
    assert_eq!(p.segments, vec![0, 1]);
    assert_eq!(p.reached.to_string(), format!("{A}:1-3"));
}
