//! Printing resources: kubectl-style tables, YAML, JSON, and `describe`.

use coffer_api::{
    backup::{BackupSession, BackupTargetStatus},
    meta::Condition,
    Kind, Resource,
};

pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".into(),
    }
}

/// Column headers and one row per resource, as Stash's printer columns show them.
pub fn table(kind: Kind, items: &[Resource], all_namespaces: bool) -> String {
    let header: Vec<&str> = match kind {
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::Repository => vec![
            "NAME",
            "INTEGRITY",
            "SIZE",
            "SNAPSHOT-COUNT",
            "LAST-SUCCESSFUL-BACKUP",
            "AGE",
        ],
        Kind::AppBinding => vec!["NAME", "TYPE", "VERSION", "AGE"],
        Kind::BackupConfiguration => vec!["NAME", "TASK", "SCHEDULE", "PAUSED", "PHASE", "AGE"],
        Kind::BackupSession => vec![
            "NAME",
            "INVOKER-TYPE",
            "INVOKER-NAME",
            "PHASE",
            "DURATION",
            "AGE",
        ],
        Kind::RestoreSession => vec!["NAME", "REPOSITORY", "PHASE", "DURATION", "AGE"],
        Kind::Task | Kind::Function => vec!["NAME", "AGE"],
        Kind::BinlogArchive => vec![
            "NAME",
            "APPBINDING",
            "PHASE",
            "LAST-GTID",
            "LAST-EVENT",
            "LAG",
            "RECOVERABLE",
            "AGE",
        ],
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in items {
        let created = r.meta().creation_timestamp.as_deref();
        let mut row = match r {
            Resource::Secret(s) => vec![
                s.metadata.name.clone(),
                or_dash(s.type_.as_deref()),
                s.keys().len().to_string(),
            ],
            Resource::Repository(x) => {
                let st = x.status.clone().unwrap_or_default();
                vec![
                    x.metadata.name.clone(),
                    st.integrity.map(|b| b.to_string()).unwrap_or_default(),
                    st.total_size.unwrap_or_default(),
                    st.snapshot_count.map(|n| n.to_string()).unwrap_or_default(),
                    st.last_backup_time
                        .as_deref()
                        .map(|t| age(Some(t)))
                        .unwrap_or_default(),
                ]
            }
            Resource::AppBinding(a) => vec![
                a.metadata.name.clone(),
                or_dash(a.spec.type_.as_deref()),
                or_dash(a.spec.version.as_deref()),
            ],
            Resource::BackupConfiguration(b) => vec![
                b.metadata.name.clone(),
                b.spec.task.name.clone(),
                b.spec.schedule.clone().unwrap_or_default(),
                b.spec.paused.to_string(),
                b.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            ],
            Resource::BackupSession(b) => {
                let st = b.status.clone().unwrap_or_default();
                vec![
                    b.metadata.name.clone(),
                    b.spec.invoker.kind.clone(),
                    b.spec.invoker.name.clone(),
                    st.phase.unwrap_or_default().to_string(),
                    st.session_duration.unwrap_or_default(),
                ]
            }
            Resource::RestoreSession(x) => {
                let st = x.status.clone().unwrap_or_default();
                vec![
                    x.metadata.name.clone(),
                    x.spec.repository.name.clone(),
                    st.phase.unwrap_or_default().to_string(),
                    st.session_duration.unwrap_or_default(),
                ]
            }
            Resource::Task(t) => vec![t.metadata.name.clone()],
            Resource::Function(f) => vec![f.metadata.name.clone()],
            Resource::BinlogArchive(a) => {
                let st = a.status.clone().unwrap_or_default();
                vec![
                    a.metadata.name.clone(),
                    a.spec.app_binding.name.clone(),
                    st.phase.map(|p| p.to_string()).unwrap_or_default(),
                    or_dash(st.last_archived_gtid.map(|g| g.to_string()).as_deref()),
                    or_dash(st.last_event_time.as_deref()),
                    st.lag_seconds
                        .map(|l| format!("{l:.0}s"))
                        .unwrap_or_else(|| "-".into()),
                    recoverable(&st.recoverable_windows),
                ]
            }
        };
        row.push(age(created));
        if all_namespaces && !kind.cluster_scoped() {
            row.insert(0, r.namespace().to_string());
        }
        rows.push(row);
    }
    let mut header: Vec<String> = header.into_iter().map(String::from).collect();
    if all_namespaces && !kind.cluster_scoped() {
        header.insert(0, "NAMESPACE".into());
    }
    render(&header, &rows)
}

pub fn render(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// What may be printed of a resource: Secret values are never shown.
pub fn printable(r: &Resource) -> serde_json::Value {
    match r {
        Resource::Secret(s) => Resource::Secret(s.redacted()).to_json(),
        other => other.to_json(),
    }
}

fn conditions(out: &mut String, conds: &[Condition]) {
    if conds.is_empty() {
        return;
    }
    out.push_str("Conditions:\n");
    let header: Vec<String> = ["TYPE", "STATUS", "REASON", "MESSAGE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = conds
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    for l in render(&header, &rows).lines() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
}

fn targets(out: &mut String, ts: &[BackupTargetStatus]) {
    for t in ts {
        out.push_str(&format!(
            "Target: {} {}\n  Phase: {}\n",
            t.ref_.kind,
            t.ref_.name,
            t.phase.map_or("-", |p| p.as_str())
        ));
        for h in &t.stats {
            out.push_str(&format!(
                "  Host {}: {}{}\n",
                h.hostname,
                h.phase.map_or("-", |p| p.as_str()),
                h.duration
                    .as_deref()
                    .map(|d| format!(" in {d}"))
                    .unwrap_or_default()
            ));
            for s in &h.snapshots {
                out.push_str(&format!(
                    "    Snapshot {} {}: size {}, uploaded {}, processing time {}\n",
                    &s.name.chars().take(8).collect::<String>(),
                    s.path.as_deref().unwrap_or(""),
                    s.total_size.as_deref().unwrap_or("-"),
                    s.uploaded.as_deref().unwrap_or("-"),
                    s.processing_time.as_deref().unwrap_or("-"),
                ));
            }
            if let Some(e) = &h.error {
                out.push_str(&format!("    Error: {e}\n"));
            }
        }
    }
}

fn session_head(out: &mut String, r: &Resource) {
    out.push_str(&format!(
        "Name:       {}\nNamespace:  {}\nKind:       {}\nCreated:    {}\n",
        r.name(),
        r.namespace(),
        r.kind(),
        r.meta().creation_timestamp.as_deref().unwrap_or("-")
    ));
}

/// The recoverable windows in one cell: `earliest..latest`, several joined by `, `.
fn recoverable(ws: &[coffer_api::archive::RecoverableWindow]) -> String {
    if ws.is_empty() {
        return "-".into();
    }
    ws.iter()
        .map(|w| {
            format!(
                "{}..{}",
                w.earliest.as_deref().unwrap_or("?"),
                w.latest.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_archive(out: &mut String, r: &Resource, a: &coffer_api::BinlogArchive) {
    session_head(out, r);
    let st = a.status.clone().unwrap_or_default();
    let s = &a.spec;
    out.push_str(&format!(
        "AppBinding: {}\nRepository: {}\nPaused:     {}\nPhase:      {}\n",
        s.app_binding.name,
        s.repository.name,
        s.paused,
        st.phase.map_or("-", |p| p.as_str()),
    ));
    out.push_str(&format!(
        "Flush:      every {}\nSegments:   at most {}\nKeep:       {}\n",
        s.flush_interval.as_deref().unwrap_or("5s"),
        s.segment_max_size.as_deref().unwrap_or("64Mi"),
        s.keep.as_deref().unwrap_or("BaseBackups"),
    ));
    if let Some(src) = &st.source {
        out.push_str(&format!("Source:     {src}\n"));
    }
    out.push_str(&format!(
        "Last GTID:  {}\nLast event: {}\nLag:        {}\n",
        or_dash(
            st.last_archived_gtid
                .as_ref()
                .map(|g| g.to_string())
                .as_deref()
        ),
        or_dash(st.last_event_time.as_deref()),
        st.lag_seconds
            .map(|l| format!("{l:.1}s"))
            .unwrap_or_else(|| "-".into()),
    ));
    if let (Some(n), Some(b)) = (st.segment_count, st.archived_bytes) {
        out.push_str(&format!("Archived:   {n} segments, {b} bytes\n"));
    }
    if let Some(e) = &st.error {
        out.push_str(&format!("Reason:     {e}\n"));
    }
    if !st.recoverable_windows.is_empty() {
        out.push_str("Recoverable windows:\n");
        let header: Vec<String> = ["EARLIEST", "LATEST", "START-GTID", "END-GTID", "SEGMENTS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows: Vec<Vec<String>> = st
            .recoverable_windows
            .iter()
            .map(|w| {
                vec![
                    or_dash(w.earliest.as_deref()),
                    or_dash(w.latest.as_deref()),
                    or_dash(Some(&w.start_gtid.to_string())),
                    or_dash(Some(&w.end_gtid.to_string())),
                    format!("{}-{}", w.first_segment, w.last_segment),
                ]
            })
            .collect();
        for l in render(&header, &rows).lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    if !st.gaps.is_empty() {
        out.push_str("Gaps:\n");
        let header: Vec<String> = [
            "REASON", "BETWEEN", "DOMAIN", "EXPECTED", "FOUND", "MESSAGE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows: Vec<Vec<String>> = st
            .gaps
            .iter()
            .map(|g| {
                vec![
                    g.reason.as_str().to_string(),
                    format!(
                        "{}..{}",
                        g.after_segment.map_or("-".into(), |s| s.to_string()),
                        g.before_segment
                    ),
                    g.domain
                        .map(|d| d.to_string())
                        .or_else(|| g.source_uuid.clone())
                        .unwrap_or_else(|| "-".into()),
                    or_dash(g.expected.as_deref()),
                    or_dash(g.found.as_deref()),
                    g.message.clone(),
                ]
            })
            .collect();
        for l in render(&header, &rows).lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    conditions(out, &st.conditions);
}

/// A person's view of one resource.
pub fn describe(r: &Resource) -> String {
    let mut out = String::new();
    match r {
        Resource::BackupSession(b) => {
            describe_backup_session(&mut out, r, b);
        }
        Resource::RestoreSession(x) => {
            session_head(&mut out, r);
            let st = x.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "Repository: {}\nTarget:     {}\nPhase:      {}\nDuration:   {}\n",
                x.spec.repository.name,
                x.spec
                    .target
                    .as_ref()
                    .map(|t| format!("{} {}", t.ref_.kind, t.ref_.name))
                    .unwrap_or_default(),
                st.phase.unwrap_or_default().as_str(),
                st.session_duration.as_deref().unwrap_or("-")
            ));
            if let Some(pit) = x.spec.point_in_time() {
                let target = match (&pit.time, &pit.gtid) {
                    (Some(t), _) => t.clone(),
                    (_, Some(g)) if pit.inclusive == Some(false) => format!("GTID {g} (excluded)"),
                    (_, Some(g)) => format!("GTID {g}"),
                    _ => "latest".to_string(),
                };
                out.push_str(&format!(
                    "Point in time: {target}, archive {}\n",
                    pit.archive
                ));
            }
            if let Some(p) = &st.point_in_time {
                out.push_str(&format!(
                    "Reached:    {} (last transaction {}, base snapshot {})\n",
                    or_dash(p.reached_gtid.as_ref().map(|g| g.to_string()).as_deref()),
                    or_dash(p.last_transaction_time.as_deref()),
                    or_dash(p.base_snapshot.as_deref()),
                ));
                if let Some(n) = &p.note {
                    out.push_str(&format!("Note:       {n}\n"));
                }
            }
            if let Some(e) = &st.error {
                out.push_str(&format!("Reason:     {e}\n"));
            }
            for h in &st.stats {
                out.push_str(&format!(
                    "Host {}: {}{}{}\n",
                    h.hostname,
                    h.phase.map_or("-", |p| p.as_str()),
                    h.snapshot
                        .as_deref()
                        .map(|s| format!(", snapshot {}", &s[..s.len().min(8)]))
                        .unwrap_or_default(),
                    h.restored_bytes
                        .map(|b| format!(", {b} bytes"))
                        .unwrap_or_default()
                ));
            }
            conditions(&mut out, &st.conditions);
        }
        Resource::BackupConfiguration(b) => {
            session_head(&mut out, r);
            let st = b.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "Schedule:   {}\nPaused:     {}\nRepository: {}\nTarget:     {}\nPhase:      {}\n",
                b.spec.schedule.as_deref().unwrap_or("-"),
                b.spec.paused,
                b.spec.repository.name,
                b.spec
                    .target
                    .as_ref()
                    .map(|t| format!("{} {}", t.ref_.kind, t.ref_.name))
                    .unwrap_or_default(),
                st.phase.map_or("-", |p| p.as_str()),
            ));
            conditions(&mut out, &st.conditions);
        }
        Resource::BinlogArchive(a) => describe_archive(&mut out, r, a),
        other => {
            out.push_str(&serde_yaml::to_string(&printable(other)).unwrap_or_default());
        }
    }
    out
}

fn describe_backup_session(out: &mut String, r: &Resource, b: &BackupSession) {
    session_head(out, r);
    let st = b.status.clone().unwrap_or_default();
    out.push_str(&format!(
        "Invoker:    {} {}\nPhase:      {}\nDuration:   {}\n",
        b.spec.invoker.kind,
        b.spec.invoker.name,
        st.phase.unwrap_or_default().as_str(),
        st.session_duration.as_deref().unwrap_or("-")
    ));
    if let Some(e) = &st.error {
        out.push_str(&format!("Reason:     {e}\n"));
    }
    targets(out, &st.targets);
    conditions(out, &st.conditions);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Resource {
        let mut r = coffer_api::parse_manifests(
            "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\n\
             metadata: {name: shop, namespace: demo}\n\
             spec: {appBinding: {name: db}, repository: {name: repo}}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        let Resource::BinlogArchive(a) = &mut r else {
            unreachable!()
        };
        let st = a.status_mut();
        st.phase = Some(coffer_api::archive::ArchivePhase::Streaming);
        st.last_archived_gtid = Some("0-1-42".parse().unwrap());
        st.last_event_time = Some("2024-05-01T12:00:00Z".into());
        st.lag_seconds = Some(1.4);
        st.recoverable_windows = vec![coffer_api::archive::RecoverableWindow {
            earliest: Some("2024-05-01T10:00:00Z".into()),
            latest: Some("2024-05-01T12:00:00Z".into()),
            first_segment: 3,
            last_segment: 9,
            ..Default::default()
        }];
        st.gaps = vec![coffer_api::archive::ArchiveGap {
            reason: coffer_api::archive::GapReason::Purged,
            after_segment: Some(2),
            before_segment: 3,
            domain: Some(0),
            source_uuid: None,
            expected: Some("0-1-10".into()),
            found: Some("0-1-20".into()),
            message: "transactions are missing".into(),
        }];
        r
    }

    #[test]
    fn restores_show_their_point_in_time_target() {
        let r = coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\n\
             metadata: {name: r, namespace: demo}\n\
             spec: {repository: {name: repo}, target: {ref: {kind: AppBinding, name: db}, \
             pointInTime: {gtid: 0-1-42, inclusive: false, archive: shop}}}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        let d = describe(&r);
        assert!(
            d.contains("Point in time: GTID 0-1-42 (excluded), archive shop\n"),
            "{d}"
        );
    }

    #[test]
    fn archives_show_their_position_lag_windows_and_gaps() {
        let t = table(Kind::BinlogArchive, &[archive()], false);
        let mut lines = t.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "APPBINDING",
                "PHASE",
                "LAST-GTID",
                "LAST-EVENT",
                "LAG",
                "RECOVERABLE",
                "AGE"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row[..7],
            [
                "shop",
                "db",
                "Streaming",
                "0-1-42",
                "2024-05-01T12:00:00Z",
                "1s",
                "2024-05-01T10:00:00Z..2024-05-01T12:00:00Z"
            ]
        );
        let d = describe(&archive());
        for want in [
            "AppBinding: db\n",
            "Last GTID:  0-1-42\n",
            "Lag:        1.4s\n",
            "Recoverable windows:\n",
            "Gaps:\n",
            "Purged   2..3",
            "0-1-10     0-1-20",
        ] {
            assert!(d.contains(want), "{want:?} not in\n{d}");
        }
    }
}
