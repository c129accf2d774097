//! The archive's maintenance (compaction of the small per-flush snapshots, retention) runs
//! beside the stream: the flush interval holds while it runs. The runner is driven in this
//! process with a hook that holds each maintenance until the test lets it go, so "while it
//! runs" is a state the test controls, not a race it hopes to win.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{atomic::AtomicBool, mpsc, Arc, Mutex},
    time::Duration,
};

use coffer_api::gtid::{Domain, GtidState};
use coffer_engine::archive::{run_archive, MaintenanceHook, RunEnd, RunOptions, SegmentStore};
use coffer_platform::local::Store;
use coffer_repo::{LocalStore, Repo};

use crate::{archive::*, common::*};

const LIMIT: Duration = Duration::from_secs(90);

/// The end state of the archive's newest listed segment (None: nothing listed, or the
/// listing failed).
fn archived_up_to(repo: &Path) -> Option<GtidState> {
    let r = Repo::open(Arc::new(LocalStore::new(repo)), REPO_PASSWORD).ok()?;
    let list = SegmentStore::new(r, "default/shop").list().ok()?;
    list.last().map(|s| s.meta.end_state.clone())
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `restic dump` of the level-0 snapshot holding segment `seq`, through `mariadb-binlog`.
fn restic_dump_binlog(repo: &Path, seq: u64) -> String {
    let tag = format!("segments={seq}-{seq}");
    let snaps = restic(
        repo.to_str().unwrap(),
        &["snapshots", "--json", "--tag", &tag],
    );
    assert!(snaps.ok, "{snaps}");
    let snaps: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    let id = snaps[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot tagged {tag}: {snaps}"))
        .to_string();
    let path = format!("/coffer-binlog/default/shop/{seq:020}.binlog");
    let mut dump = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(["--no-cache", "dump", &id, &path])
        .env("RESTIC_PASSWORD", REPO_PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("restic is installed");
    let out = Command::new("mariadb-binlog")
        .args(["-v", "-"])
        .stdin(dump.stdout.take().unwrap())
        .output()
        .expect("mariadb-binlog is installed");
    assert!(dump.wait().unwrap().success(), "restic dump {id} {path}");
    assert!(out.status.success(), "mariadb-binlog: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// While a maintenance is held in progress, transactions committed on the source are
/// archived (a segment holding them is listed, and `restic dump | mariadb-binlog` reads
/// it); when it ends, the runner's count is every segment once, those stored meanwhile
/// included; a stop while one is in progress ends it cleanly (the run returns, no lock is
/// left, the repository checks). Before maintenance ran on its own thread, the stream
/// stood still while it ran: nothing was archived until the hook let go.
#[test]
fn segments_are_stored_while_a_maintenance_runs() {
    let db = binlog_source();
    let cf = Coffer::new();
    let repo = setup(&cf, &db);
    db.exec(SCHEMA).unwrap();
    let start = pos(&db);

    // Each maintenance says it began, then waits for the test's word (or for the test to
    // drop its sender).
    let (began_tx, began) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (began_tx, go_rx) = (Mutex::new(began_tx), Mutex::new(go_rx));
    let hook = MaintenanceHook(Arc::new(move || {
        let _ = began_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv();
    }));
    let opts = RunOptions {
        // One after the other: the next begins as soon as the last is picked up.
        maintenance_every: Duration::ZERO,
        maintenance_hook: Some(hook),
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let home = cf.home.path().to_path_buf();
    let end = std::thread::scope(|s| {
        let run = s.spawn(|| {
            let store = Store::open(&home).unwrap();
            run_archive(&store, "default", "shop", &stop, &opts)
        });
        // A failing assertion below stops the run too (and drops `go`, which lets a held
        // maintenance go), so the test fails instead of hanging.
        let _stop_on_panic = StopOnDrop(&stop);
        began
            .recv_timeout(LIMIT)
            .expect("the first maintenance began");

        // Held: the load is archived all the same, in three batches (so at least three
        // segments, which the maintenance merges once let go).
        let mut held = start.clone();
        for batch in 0..3 {
            load(&db, batch * 10, 10);
            held = pos(&db);
            wait_until(
                LIMIT,
                "the transactions committed during the maintenance are stored",
                || archived_up_to(&repo).is_some_and(|e| e.covers(&held)),
            );
        }
        let segs = segments(&repo, "shop");
        let last = segs.last().unwrap();
        let gtid = format!("0-{SOURCE_ID}-{}", held.0[&Domain::MariaDb(0)].seq);
        assert!(
            last.0
                .transactions
                .iter()
                .any(|t| t.gtid.to_string() == gtid),
            "segment {} holds {gtid}",
            last.0.seq
        );
        let text = restic_dump_binlog(&repo, last.0.seq);
        assert!(text.contains(&format!("GTID {gtid}")), "{text}");

        // Let it go (it compacts the segments stored meanwhile); the next one begins only
        // once the runner took the first one's listing.
        go.send(()).unwrap();
        began
            .recv_timeout(LIMIT)
            .expect("the second maintenance began");
        load(&db, 30, 20);
        let end = pos(&db);
        wait_until(LIMIT, "the second load is stored", || {
            archived_up_to(&repo).is_some_and(|e| e.covers(&end))
        });
        wait_until(LIMIT, "the status names the last GTID", || {
            status(&cf, "shop")["lastArchivedGtid"] == end.to_string()
        });

        // Stop while the second is held, then let it go: the run stops it and waits.
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        go.send(()).unwrap();
        drop(go);
        let ended = run.join().unwrap();
        assert!(matches!(ended, Ok(RunEnd::Stopped)), "{ended:?}");
        end
    });

    let locks: Vec<_> = std::fs::read_dir(repo.join("locks")).unwrap().collect();
    assert!(locks.is_empty(), "a lock outlived the run: {locks:?}");
    let segs = segments(&repo, "shop");
    assert_chained(&segs);
    assert_eq!(segs[0].0.start_state, start);
    let want: Vec<String> = (start.0[&Domain::MariaDb(0)].seq + 1..=end.0[&Domain::MariaDb(0)].seq)
        .map(|s| format!("0-{SOURCE_ID}-{s}"))
        .collect();
    assert_eq!(gtids(&segs), want, "every transaction once, in order");
    let st = status(&cf, "shop");
    assert_eq!(st["lastArchivedGtid"], end.to_string(), "{st}");
    assert_eq!(
        st["segmentCount"].as_u64(),
        Some(segs.len() as u64),
        "each segment counted once: {st}"
    );
    assert_eq!(
        st["archivedBytes"].as_u64(),
        Some(segs.iter().map(|s| s.0.bytes).sum::<u64>()),
        "{st}"
    );
    let snaps = restic_snapshots(repo.to_str().unwrap(), &[]);
    assert!(
        snaps.len() < segs.len(),
        "the first maintenance merged the segments stored while it was held: {} snapshots, \
         {} segments",
        snaps.len(),
        segs.len()
    );
    assert_restic_check(repo.to_str().unwrap(), &[]);
}
