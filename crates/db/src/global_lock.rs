//! `FLUSH TABLES WITH READ LOCK` without stalling the server's writers for long.
//!
//! FTWRL takes the global read lock first and then waits for running writes (on MySQL also
//! for long SELECTs, through the table flush) — and while it waits, every new write on the
//! server queues behind it. So the wait is bounded twice: the server's own `lock_wait_timeout`
//! (measured on MariaDB 10.11: it ends an FTWRL stuck behind a running INSERT … SELECT), and a
//! watchdog on a second connection that `KILL QUERY`s the FTWRL a moment later, for waits the
//! server does not bound that way. Giving up fails the backup with the statements it waited
//! for, named.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mysql::{prelude::Queryable, Conn};

use crate::{
    conn::{classify, connect_control, ClientFiles, ConnSpec},
    DbError,
};

/// How long the native dump's FTWRL may wait: every writer on the source waits as long.
pub const FTWRL_WAIT: Duration = Duration::from_secs(10);

/// The watchdog's margin over `lock_wait_timeout`, so the server's own timeout normally wins.
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// Runs FTWRL on `lock`, giving up after about `wait`.
pub fn flush_tables_with_read_lock(
    spec: &ConnSpec,
    files: &ClientFiles,
    lock: &mut Conn,
    wait: Duration,
) -> Result<(), DbError> {
    let secs = wait.as_secs().max(1);
    lock.query_drop(format!("SET SESSION lock_wait_timeout = {secs}"))
        .map_err(|e| classify(spec, &e))?;
    let lock_id = lock.connection_id();
    // Opened before the FTWRL: at the deadline, connecting could itself be slow.
    let watch = match connect_control(spec, files) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no watchdog connection for the global read lock ({e}); relying on lock_wait_timeout");
            None
        }
    };
    // `None` while the FTWRL runs; the watchdog kills only under this lock, so its KILL QUERY
    // cannot reach a later statement of the lock connection.
    let done: Arc<Mutex<Option<bool>>> = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = watch.map(|mut c| {
        let done = done.clone();
        std::thread::spawn(move || {
            let timed_out = matches!(
                stop_rx.recv_timeout(Duration::from_secs(secs) + WATCHDOG_GRACE),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            let mut g = done.lock().unwrap();
            if timed_out && g.is_none() {
                let killed = c.query_drop(format!("KILL QUERY {lock_id}")).is_ok();
                *g = Some(killed);
            }
            drop(g);
            c
        })
    });
    let result = lock.query_drop("FLUSH TABLES WITH READ LOCK");
    let killed = {
        let mut g = done.lock().unwrap();
        let killed = g.unwrap_or(false);
        *g = Some(false);
        killed
    };
    let _ = stop_tx.send(());
    let mut watch = watchdog.and_then(|t| t.join().ok());
    let Err(e) = result else {
        return Ok(());
    };
    let gave_up =
        killed || matches!(&e, mysql::Error::MySqlError(me) if me.code == 1205 || me.code == 1317);
    if !gave_up {
        return Err(match classify(spec, &e) {
            DbError::Query { target, reason } => DbError::Query {
                target,
                reason: format!(
                    "{reason} — the native dump needs the RELOAD privilege for its brief global \
                     read lock"
                ),
            },
            other => other,
        });
    }
    let blockers = match watch.as_mut() {
        Some(c) => running_statements(c, lock_id),
        None => connect_control(spec, files)
            .ok()
            .map(|mut c| running_statements(&mut c, lock_id))
            .unwrap_or_default(),
    };
    Err(DbError::Dump {
        target: spec.label.clone(),
        reason: gave_up_message(secs, &blockers),
    })
}

/// A statement running on the server: thread id, user, seconds, text.
#[derive(Debug, Clone, PartialEq)]
struct Running {
    id: u64,
    user: String,
    secs: u64,
    info: String,
}

/// The longest-running statements of other threads (all of them only with the PROCESS
/// privilege; a user without it sees its own).
fn running_statements(c: &mut Conn, lock_id: u32) -> Vec<Running> {
    let sql = format!(
        "SELECT ID, USER, TIME, LEFT(INFO, 160) FROM information_schema.PROCESSLIST \
         WHERE ID <> {lock_id} AND ID <> CONNECTION_ID() AND INFO IS NOT NULL \
         AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Killed') \
         ORDER BY TIME DESC LIMIT 3"
    );
    c.query_map(sql, |(id, user, secs, info): (u64, String, u64, String)| {
        Running {
            id,
            user,
            secs,
            info,
        }
    })
    .unwrap_or_default()
}

fn gave_up_message(secs: u64, blockers: &[Running]) -> String {
    // A status reason is kept to a line or two: the oldest blocker is named, with the start of
    // its statement; the rest are counted.
    let Some(first) = blockers.first() else {
        return format!(
            "FLUSH TABLES WITH READ LOCK waited {secs} s behind statements this user cannot see \
             and gave up so that writers are not stalled: retry later, or grant PROCESS to have \
             them named"
        );
    };
    let words = first.info.split_whitespace().collect::<Vec<_>>().join(" ");
    let statement: String = if words.chars().count() > 60 {
        format!("{}…", words.chars().take(59).collect::<String>())
    } else {
        words
    };
    let more = match blockers.len() - 1 {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "FLUSH TABLES WITH READ LOCK waited {secs} s behind thread {} (`{}`, {} s: `{statement}`){more} \
         and gave up so that writers are not stalled: retry when it ends, or KILL QUERY {}",
        first.id, first.user, first.secs, first.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_blocking_statement_and_what_to_do() {
        let m = gave_up_message(
            10,
            &[Running {
                id: 42,
                user: "app".into(),
                secs: 35,
                info: "INSERT INTO log\n  SELECT SLEEP(20)".into(),
            }],
        );
        assert!(m.contains("waited 10 s"), "{m}");
        assert!(
            m.contains("thread 42 (`app`, 35 s: `INSERT INTO log SELECT SLEEP(20)`)"),
            "{m}"
        );
        assert!(m.ends_with("KILL QUERY 42"), "{m}");
        // It fits a status reason (300 characters) with the resource named before it, however
        // long and many the statements.
        let long = Running {
            id: 7,
            user: "app".into(),
            secs: 99,
            info: "SELECT ".repeat(200),
        };
        let m = gave_up_message(10, &[long.clone(), long.clone(), long]);
        assert!(m.contains(" and 2 more "), "{m}");
        assert!(m.chars().count() < 240, "{} chars: {m}", m.chars().count());
        let m = gave_up_message(10, &[]);
        assert!(m.contains("grant PROCESS"), "{m}");
    }
}
