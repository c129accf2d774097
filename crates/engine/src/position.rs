//! The tags that say where a backup stands: which AppBinding it is of, and the binlog
//! position and MariaDB GTID state its data is consistent at (issue #12), for point-in-time
//! recovery to start from.

use coffer_api::gtid::GtidState;
use coffer_db::{mysqldump::OnPosition, native::Position};
use coffer_repo::LateTags;

/// `app=<namespace>/<name>` of the AppBinding a backup is of.
pub fn app_tag(namespace: &str, name: &str) -> String {
    format!("app={namespace}/{name}")
}

/// `binlog=<file>:<pos>` where both are known, and `gtid=<state>` where the server has
/// GTIDs: a MariaDB GTID state in [`GtidState`]'s form, or MySQL's `gtid_executed` set
/// (`uuid:1-N[,uuid:...]`) as the server wrote it without its line breaks. Readers of the
/// tag skip a value they cannot parse, so a MySQL set never passes for a MariaDB state.
///
/// An empty state is recorded too (`gtid=`) when the binlog position is known: the server
/// binlogs and has not written a transaction yet (a fresh server, its data loaded without
/// the binlog). That backup is the base every later transaction replays onto; without the
/// tag a fresh server's first backups could never anchor a point-in-time restore.
pub fn position_tags(p: &Position) -> Vec<String> {
    let mut tags = Vec::new();
    let mut binlog = false;
    if let (Some(f), Some(pos)) = (p.binlog_file.as_deref(), p.binlog_position) {
        if !f.is_empty() {
            tags.push(format!("binlog={f}:{pos}"));
            binlog = true;
        }
    }
    match p.gtid.as_deref().map(str::parse::<GtidState>) {
        Some(Ok(g)) if !g.0.is_empty() || binlog => tags.push(format!("gtid={g}")),
        Some(Err(e)) => match p.gtid.as_deref().and_then(mysql_gtid_set) {
            Some(set) => tags.push(format!("gtid={set}")),
            None => tracing::warn!("the backup's GTID position is not recorded: {e}"),
        },
        _ => {}
    }
    tags
}

/// `s` without whitespace if it is a non-empty MySQL GTID set: comma-separated
/// `uuid[:tag]:interval[:interval...]`, each interval `n` or `n-m`. MySQL breaks
/// `@@gtid_executed` into lines, one per server UUID; a tag holds no whitespace.
fn mysql_gtid_set(s: &str) -> Option<String> {
    let set: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let uuid = |u: &str| {
        u.len() == 36
            && u.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let interval = |i: &str| match i.split_once('-') {
        Some((a, b)) => number(a) && number(b),
        None => number(i),
    };
    // MySQL 8.4's tagged GTIDs: `uuid:1-5:tag:1-2`, a tag is [a-z_][a-z0-9_]{0,31}.
    let tag = |t: &str| {
        t.len() <= 32
            && t.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let valid = !set.is_empty()
        && set.split(',').all(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            // A tag names the intervals after it: it is never last.
            parts.len() > 1
                && uuid(parts[0])
                && parts[1..].iter().all(|p| interval(p) || tag(p))
                && parts.last().is_some_and(|p| interval(p))
        });
    valid.then_some(set)
}

/// A position known only when the stream ends goes into the snapshot's late tags.
pub fn into_late_tags(late: &LateTags) -> OnPosition {
    late_tags_with(late, None, false)
}

/// Like [`into_late_tags`], for a mariabackup stream whose server cannot be asked: its GTID
/// field, when empty, may be a rotated binlog's and not the server's state, so an empty one
/// is not recorded.
pub fn into_late_tags_of_stream(late: &LateTags) -> OnPosition {
    late_tags_with(late, None, true)
}

/// Like [`into_late_tags`], for a mariabackup stream: its GTID field is the state only while
/// the current binlog file has a transaction in it (after a rotation, such as the one a
/// Galera donor makes for the transfer, it is empty although the server has GTIDs), so the
/// state is asked of the server that wrote the binlog: `BINLOG_GTID_POS` of the recorded file
/// and position is exact, and is what mysqldump records too. The stream's own field stands
/// where the server cannot answer (the file already purged, no privilege).
pub fn into_late_tags_at_server(
    late: &LateTags,
    server: coffer_db::ConnSpec,
    files: std::sync::Arc<coffer_db::ClientFiles>,
) -> OnPosition {
    late_tags_with(late, Some((server, files)), true)
}

fn binlog_gtid_pos(
    server: &coffer_db::ConnSpec,
    files: &coffer_db::ClientFiles,
    file: &str,
    pos: u64,
) -> Result<Option<String>, String> {
    use coffer_db::mysql_prelude::Queryable;
    let mut c = coffer_db::connect_control(server, files).map_err(|e| e.to_string())?;
    c.exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
        .map(Option::flatten)
        .map_err(|e| e.to_string())
}

/// A stream's own GTID field is empty after a binlog rotation although the server has GTIDs:
/// unconfirmed by the server, an empty one is unknown, not the empty state.
fn forget_empty(p: &mut Position) {
    if p.gtid.as_deref().is_some_and(|g| g.trim().is_empty()) {
        p.gtid = None;
    }
}

fn late_tags_with(
    late: &LateTags,
    server: Option<(coffer_db::ConnSpec, std::sync::Arc<coffer_db::ClientFiles>)>,
    stream_field: bool,
) -> OnPosition {
    let late = late.clone();
    Box::new(move |mut p: Position| {
        let mut unconfirmed = stream_field && server.is_none();
        if let (Some((spec, files)), Some(file), Some(pos)) =
            (&server, p.binlog_file.as_deref(), p.binlog_position)
        {
            match binlog_gtid_pos(spec, files, file, pos) {
                Ok(Some(g)) => p.gtid = Some(g),
                Ok(None) => {
                    unconfirmed = true;
                    tracing::warn!(
                        "{}: BINLOG_GTID_POS({file}, {pos}) is NULL (the file is gone?); the \
                         backup's own GTID field is recorded",
                        spec.label
                    )
                }
                Err(e) => {
                    unconfirmed = true;
                    tracing::warn!(
                    "{}: cannot ask BINLOG_GTID_POS({file}, {pos}): {e}; the backup's own GTID \
                         field is recorded",
                        spec.label
                    )
                }
            }
        }
        if unconfirmed {
            forget_empty(&mut p);
        }
        let tags = position_tags(&p);
        tracing::info!("the backup is consistent at {}", tags.join(" "));
        late.lock().unwrap_or_else(|e| e.into_inner()).extend(tags);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: Option<&str>, at: Option<u64>, gtid: Option<&str>) -> Position {
        Position {
            binlog_file: file.map(String::from),
            binlog_position: at,
            gtid: gtid.map(String::from),
        }
    }

    #[test]
    fn tags_name_what_is_known_and_nothing_else() {
        for (p, want) in [
            (
                pos(Some("bin.000002"), Some(774), Some("100-21-7, 0-1-42")),
                vec!["binlog=bin.000002:774", "gtid=0-1-42,100-21-7"],
            ),
            (
                pos(Some("bin.000001"), Some(4), Some("")),
                vec!["binlog=bin.000001:4", "gtid="],
            ),
            (pos(None, None, Some("")), vec![]),
            (pos(None, None, Some("0-1-5")), vec!["gtid=0-1-5"]),
            (pos(Some("bin.000001"), None, None), vec![]),
            (pos(Some(""), Some(4), None), vec![]),
            (
                pos(
                    Some("b.1"),
                    Some(9),
                    Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"),
                ),
                vec![
                    "binlog=b.1:9",
                    "gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
                ],
            ),
            // MySQL's @@gtid_executed of two servers, as it prints it, and a tagged one.
            (
                pos(
                    Some("mysql-bin.000002"),
                    Some(1557),
                    Some(
                        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,\n\
                         4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3:ops:1-2",
                    ),
                ),
                vec![
                    "binlog=mysql-bin.000002:1557",
                    "gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,\
                     4e11fa47-71ca-11e1-9e33-c80aa9429562:1-3:ops:1-2",
                ],
            ),
            // Neither a MariaDB state nor a MySQL set: not recorded.
            (
                pos(Some("b.1"), Some(9), Some("3e11fa47:1-5")),
                vec!["binlog=b.1:9"],
            ),
            (
                pos(
                    Some("b.1"),
                    Some(9),
                    Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:Ops:1"),
                ),
                vec!["binlog=b.1:9"],
            ),
        ] {
            assert_eq!(position_tags(&p), want, "{p:?}");
        }
        assert_eq!(app_tag("demo", "db"), "app=demo/db");
    }

    /// A mariabackup stream's empty GTID field is not the empty state unless its server says
    /// so (a rotated binlog leaves it empty).
    #[test]
    fn an_unconfirmed_empty_stream_gtid_is_not_recorded() {
        let late = LateTags::default();
        into_late_tags_of_stream(&late)(pos(Some("bin.000002"), Some(385), Some("")));
        assert_eq!(*late.lock().unwrap(), vec!["binlog=bin.000002:385"]);
    }

    #[test]
    fn a_late_position_lands_in_the_late_tags() {
        let late = LateTags::default();
        into_late_tags(&late)(pos(Some("bin.000003"), Some(1117), Some("0-1-5")));
        assert_eq!(
            *late.lock().unwrap(),
            vec!["binlog=bin.000003:1117", "gtid=0-1-5"]
        );
    }
}
