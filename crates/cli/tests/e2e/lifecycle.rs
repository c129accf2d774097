//! A session's processes and secrets end with it: a timed-out or killed session leaves no
//! database client running (holding the source's locks) and no file with the password; and
//! the native dump's global read lock gives up instead of stalling the source's writers.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use coffer_testkit::{mysql::prelude::Queryable, MariaDb};

use crate::common::*;

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Other clients' threads on the server, as `id state info`.
fn other_clients(src: &MariaDb, except: &[u32]) -> Vec<String> {
    let except: Vec<String> = except.iter().map(|i| i.to_string()).collect();
    src.query_strings(&format!(
        "SELECT CONCAT_WS(' ', ID, STATE, LEFT(INFO, 80)) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' AND USER <> 'system user' \
         AND ID NOT IN ({})",
        if except.is_empty() {
            "0".to_string()
        } else {
            except.join(",")
        }
    ))
    .unwrap()
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect()
}

/// Live processes started for this test's coffer: their environment names its TMPDIR.
fn processes_of(cf: &Coffer) -> Vec<String> {
    let needle = format!("TMPDIR={}\0", cf.path("tmp").display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        out.push(format!("{pid}: {cmdline}"));
    }
    out
}

/// Files under `dir` whose content holds `secret`.
fn files_holding(dir: &Path, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// A source whose table `app.t` is locked for writing by a connection the caller keeps, so a
/// dump of it waits.
fn locked_source() -> (MariaDb, coffer_testkit::mysql::Conn, u32) {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let mut holder = src.conn().unwrap();
    holder.query_drop("LOCK TABLES app.t WRITE").unwrap();
    let id = holder.connection_id();
    (src, holder, id)
}

fn manifests(cf: &Coffer, src: &MariaDb, extra: &str) -> String {
    [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", src),
        appbinding("src", src, "src-auth"),
        backup_config("blocked", "repo", "src", "--databases app", 5)
            .replace("  schedule: \"0 3 * * *\"\n", "")
            + extra,
    ]
    .join("---\n")
}

fn wait_for_the_blocked_dump(src: &MariaDb, holder: u32) {
    wait_until(
        Duration::from_secs(30),
        "the dump waits for the locked table",
        || {
            other_clients(src, &[holder])
                .iter()
                .any(|c| c.contains("metadata lock"))
        },
    );
}

/// After the session ends: no client of ours on the source, no process of ours on this
/// machine (but `keep`), no file with the password in our TMPDIR.
fn assert_nothing_outlives_it(cf: &Coffer, src: &MariaDb, holder: u32, keep: Option<u32>) {
    wait_until(
        Duration::from_secs(5),
        "the dump's connection is gone from the source",
        || other_clients(src, &[holder]).is_empty(),
    );
    let mut left = processes_of(cf);
    if let Some(k) = keep {
        left.retain(|p| !p.starts_with(&format!("{k}:")));
    }
    assert!(left.is_empty(), "processes outlived the session: {left:#?}");
    let files = files_holding(&cf.path("tmp"), src.root_password());
    assert!(
        files.is_empty(),
        "files with the password remain: {files:?}"
    );
}

#[test]
fn a_timed_out_session_leaves_no_client_and_no_secret_behind() {
    let (src, _holder, holder_id) = locked_source();
    let cf = Coffer::new();
    assert!(
        cf.apply("m.yaml", &manifests(&cf, &src, "  timeOut: 3s\n"))
            .ok
    );
    let port = coffer_testkit::free_port();
    let log = std::fs::File::create(cf.path("server.log")).unwrap();
    let mut server = cf
        .cmd()
        .args(["server", "--metrics-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Before it listens, `coffer backup` would run the session itself.
    wait_until(Duration::from_secs(20), "the server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    cf.ok(&["backup", "blocked"]);
    wait_for_the_blocked_dump(&src, holder_id);
    wait_until(
        Duration::from_secs(30),
        "the session fails on its deadline",
        || {
            let r = cf.ok(&["get", "backupsessions", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            v["items"].as_array().unwrap().iter().any(|s| {
                phase(s) == "Failed"
                    && s["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "DeadlineExceeded"))
            })
        },
    );
    assert_nothing_outlives_it(&cf, &src, holder_id, Some(server.id()));
    // Lock files stay (they hold nothing); the session's scratch directory does not.
    let left: Vec<_> = std::fs::read_dir(cf.path("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "the session left {left:?} in TMPDIR");
    unsafe { libc::kill(server.id() as i32, libc::SIGKILL) };
    let _ = server.wait();
}

/// `coffer backup --wait` without a server supervises the session as the server does: past
/// its timeOut the session ends Failed with DeadlineExceeded (it stayed Running forever), its
/// processes are gone, and the command fails.
#[test]
fn a_timed_out_wait_without_a_server_fails_the_session_on_its_deadline() {
    let (src, _holder, holder_id) = locked_source();
    let cf = Coffer::new();
    assert!(
        cf.apply("m.yaml", &manifests(&cf, &src, "  timeOut: 3s\n"))
            .ok
    );
    let started = Instant::now();
    let r = cf.run(&["backup", "blocked", "--wait"]);
    assert!(!r.ok, "a session past its timeOut succeeded:\n{r}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the command outlived the timeOut by far: {:?}",
        started.elapsed()
    );
    let s = cf.last_session(&r);
    assert_eq!(phase(&s), "Failed", "{s:#}");
    let deadline = s["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DeadlineExceeded"));
    assert!(
        deadline.is_some_and(|c| c["status"] == "True"),
        "no DeadlineExceeded condition: {s:#}"
    );
    assert!(
        error(&s).contains("timeOut"),
        "the error does not say why: {s:#}"
    );
    assert!(
        s["status"]["sessionDeadline"].is_string(),
        "no sessionDeadline recorded: {s:#}"
    );
    assert_nothing_outlives_it(&cf, &src, holder_id, None);
}

/// Without a server, `--wait` carries out the retry `reconcile` asks for, as the server would:
/// the failed session is marked retried and its retry runs here, with one retry fewer.
#[test]
fn a_failed_wait_without_a_server_runs_its_retry() {
    let (src, _holder, holder_id) = locked_source();
    let cf = Coffer::new();
    // Two sessions kept, so that the first can be looked at after its retry.
    let extra =
        "  timeOut: 2s\n  backupHistoryLimit: 2\n  retryConfig:\n    maxRetry: 1\n    delay: 1s\n";
    assert!(cf.apply("m.yaml", &manifests(&cf, &src, extra)).ok);
    let r = cf.run(&["backup", "blocked", "--wait"]);
    assert!(!r.ok, "a session past its timeOut succeeded:\n{r}");
    let first = cf.last_session(&r);
    assert_eq!(phase(&first), "Failed", "{first:#}");
    assert_eq!(first["status"]["retried"], true, "{first:#}");
    let retry = r
        .stdout
        .lines()
        .find_map(|l| l.split(" is retried as backupsession/").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retry in the output:\n{r}"));
    let second = cf.get_json("backupsession", retry);
    assert_eq!(phase(&second), "Failed", "{second:#}");
    assert_eq!(second["spec"]["retryLeft"], 0, "{second:#}");
    assert!(
        r.stdout.contains(&format!("backupsession/{retry} Failed")),
        "the wait did not follow the retry:\n{r}"
    );
    assert_nothing_outlives_it(&cf, &src, holder_id, None);
}

#[test]
fn a_killed_backup_command_leaves_no_client_and_no_secret_behind() {
    let (src, _holder, holder_id) = locked_source();
    let cf = Coffer::new();
    assert!(cf.apply("m.yaml", &manifests(&cf, &src, "")).ok);
    let mut cli = cf
        .cmd()
        .args(["backup", "blocked", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_the_blocked_dump(&src, holder_id);
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert_nothing_outlives_it(&cf, &src, holder_id, None);
}

/// A long write makes FLUSH TABLES WITH READ LOCK wait, and every writer queues behind it: the
/// native dump gives up after its limit, names the statement it waited for, and the writers
/// go on at once.
#[test]
fn the_native_dump_gives_up_its_global_lock_instead_of_stalling_writers() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_100; CREATE TABLE log (x INT);")
        .unwrap();
    let cf = Coffer::new();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("nat", "repo", "src", &[("method", "native")], 5),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    let mut long = src.conn().unwrap();
    let long_write = std::thread::spawn(move || {
        long.query_drop("INSERT INTO app.log SELECT SLEEP(30)")
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut writer = src.conn().unwrap();
    let write = std::thread::spawn(move || {
        // Queued behind the FTWRL, which by now waits behind the long write.
        std::thread::sleep(Duration::from_secs(3));
        writer
            .query_drop("INSERT INTO app.t VALUES (1000, 1)")
            .unwrap();
        started.elapsed()
    });
    let r = cf.run(&["backup", "nat", "--wait"]);
    let failed_after = started.elapsed();
    let wrote_after = write.join().unwrap();
    assert!(!r.ok, "the backup waited out the long write:\n{r}");
    let e = error(&cf.last_session(&r)).to_string();
    assert!(
        e.contains("FLUSH TABLES WITH READ LOCK waited 10 s")
            && e.contains("INSERT INTO app.log SELECT SLEEP(30)")
            && e.contains("KILL QUERY"),
        "{e}"
    );
    assert!(
        failed_after < Duration::from_secs(26),
        "took {failed_after:?}"
    );
    assert!(
        wrote_after < Duration::from_secs(18),
        "a writer waited {wrote_after:?} behind the global read lock"
    );
    long_write.join().unwrap();
}
