//! `coffer server` with a real MariaDB and a real Pushgateway: schedules fire on time, an
//! overlapping session is skipped, a paused configuration produces nothing, a timed-out
//! session is failed and its processes gone, retries and history follow the configuration,
//! hooks run, metrics arrive with their values, and a killed server recovers its orphans.

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use coffer_testkit::{MariaDb, Pushgateway};

use crate::common::*;

struct Server {
    child: Child,
    metrics: String,
}

impl Server {
    fn start(cf: &Coffer, pushgateway: &str, env: &[(&str, &str)]) -> Server {
        let port = coffer_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(cf.path(&format!("server-{port}.log"))).unwrap();
        let mut c = cf.cmd();
        c.args([
            "server",
            "--metrics-address",
            &addr,
            "--pushgateway",
            pushgateway,
            "--shutdown-grace",
            "30s",
        ])
        .stdout(Stdio::null())
        .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let s = Server {
            child,
            metrics: format!("http://{addr}"),
        };
        wait_until(
            Duration::from_secs(20),
            "the server answers /healthz",
            || http_get(&format!("{}/healthz", s.metrics)).is_some_and(|b| b.starts_with("ok")),
        );
        s
    }

    fn signal(&mut self, sig: i32) {
        // Once reaped, the pid may belong to another process (pids wrap on a busy machine).
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn server_logs(cf: &Coffer) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(cf.work.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("server-")
        {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

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

fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn sessions_of(cf: &Coffer, bc: &str) -> Vec<serde_json::Value> {
    let r = cf.ok(&["get", "backupsessions", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["spec"]["invoker"]["name"] == bc)
        .cloned()
        .collect()
}

/// The value of a sample whose line has every given `label="value"`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn hook(kind: &str, body: &str) -> String {
    format!("  hooks:\n    {kind}:\n{body}")
}

/// A tiny HTTP endpoint that records request bodies, for httpPost hooks.
fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).unwrap_or(0);
            g.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).to_string());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn the_server_schedules_skips_times_out_retries_trims_and_pushes_metrics() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_2000;")
        .unwrap();
    let pg = Pushgateway::start().unwrap();
    let (hook_port, hook_calls) = recorder();
    let cf = Coffer::new();
    let dead = coffer_testkit::free_port();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        local_repo("repo2", &cf.path("repo2"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        secret("dead-auth", &[("username", "root"), ("password", "x")]),
        format!(
            "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: dead}}\n\
             spec: {{clientConfig: {{url: \"mysql://127.0.0.1:{dead}/\"}}, secret: {{name: dead-auth}}}}\n"
        ),
        backup_config("minutely", "repo", "src", "--databases app", 10)
            .replace("\"0 3 * * *\"", "\"* * * * *\"")
            + "  backupHistoryLimit: 5\n",
        backup_config("paused", "repo2", "src", "--databases app", 10)
            .replace("\"0 3 * * *\"", "\"* * * * *\"")
            + "  paused: true\n",
        backup_config("slow", "repo2", "src", "--databases app", 10).replace("  schedule: \"0 3 * * *\"\n", "")
            + &hook("preBackup", "      exec: {command: [sleep, \"6\"]}\n"),
        backup_config("timeout", "repo2", "src", "--databases app", 10).replace("  schedule: \"0 3 * * *\"\n", "")
            + "  timeOut: 2s\n"
            + &hook("preBackup", &format!("      exec: {{command: [sh, -c, \"echo $$ > {}; exec sleep 60\"]}}\n", cf.path("hook.pid").display())),
        backup_config_with("retry", "repo2", "dead", &[("args", "--databases app"), ("waitTimeout", "1")], 10)
            .replace("  schedule: \"0 3 * * *\"\n", "")
            + "  retryConfig: {maxRetry: 1, delay: 1s}\n  backupHistoryLimit: 5\n",
        backup_config("history", "repo2", "src", "--databases app", 10).replace("  schedule: \"0 3 * * *\"\n", "")
            + "  backupHistoryLimit: 1\n"
            + &hook(
                "postBackup",
                &format!("      executionPolicy: OnSuccess\n      httpPost: {{host: 127.0.0.1, port: {hook_port}, path: /done, body: \"backup done\"}}\n"),
            ),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");
    let server = Server::start(&cf, &pg.url(), &[]);

    // Configuration status: Ready, or NotReady with the reason.
    wait_until(
        Duration::from_secs(10),
        "BackupConfigurations get a phase",
        || cf.get_json("bc", "minutely")["status"]["phase"] == "Ready",
    );
    assert!(
        cf.apply(
            "broken.yaml",
            &backup_config("broken", "no-such-repo", "src", "--databases app", 1)
        )
        .ok
    );
    wait_until(
        Duration::from_secs(10),
        "a configuration with a missing repository is NotReady",
        || {
            let bc = cf.get_json("bc", "broken");
            bc["status"]["phase"] == "NotReady"
                && bc["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|x| {
                        x["type"] == "RepositoryFound"
                            && x["status"] == "False"
                            && x["message"]
                                .as_str()
                                .unwrap_or("")
                                .contains("Repository default/no-such-repo not found")
                    })
                })
        },
    );

    // Overlap: a second session while the first still runs is Skipped, with the reason.
    cf.ok(&["backup", "slow"]);
    wait_until(Duration::from_secs(15), "the slow session runs", || {
        sessions_of(&cf, "slow")
            .iter()
            .any(|s| phase(s) == "Running")
    });
    cf.ok(&["backup", "slow"]);
    wait_until(
        Duration::from_secs(15),
        "the overlapping session is skipped",
        || {
            sessions_of(&cf, "slow")
                .iter()
                .any(|s| phase(s) == "Skipped")
        },
    );
    let skipped = sessions_of(&cf, "slow")
        .into_iter()
        .find(|s| phase(s) == "Skipped")
        .unwrap();
    assert!(error(&skipped).contains("is still running"), "{skipped:#}");
    assert!(skipped["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "BackupSkipped" && c["status"] == "True"));

    // Timeout: Failed with DeadlineExceeded, and its processes are gone.
    cf.ok(&["backup", "timeout"]);
    wait_until(
        Duration::from_secs(30),
        "the timed-out session fails",
        || {
            sessions_of(&cf, "timeout")
                .iter()
                .any(|s| phase(s) == "Failed")
        },
    );
    let t = &sessions_of(&cf, "timeout")[0];
    assert!(
        t["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "DeadlineExceeded" && c["status"] == "True"),
        "{t:#}"
    );
    let agent = t["status"]["agentPid"].as_u64().unwrap() as i32;
    let hook_pid: i32 = std::fs::read_to_string(cf.path("hook.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for pid in [agent, hook_pid] {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next())
            .unwrap_or(None);
        assert!(
            matches!(state, None | Some('Z')),
            "process {pid} of the timed-out session still runs: {stat}"
        );
    }

    // Retry: one failure makes one retry with one fewer retry left, then no more.
    cf.ok(&["backup", "retry"]);
    wait_until(
        Duration::from_secs(40),
        "the failed session is retried once",
        || {
            let s = sessions_of(&cf, "retry");
            s.len() == 2 && s.iter().all(|x| phase(x) == "Failed")
        },
    );
    let rs = sessions_of(&cf, "retry");
    assert!(rs.iter().any(|s| s["status"]["retried"] == true));
    assert!(rs.iter().any(|s| s["spec"]["retryLeft"] == 0));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sessions_of(&cf, "retry").len(),
        2,
        "maxRetry 1 means one retry"
    );

    // History: three runs, limit 1; the post-backup hook ran after each success.
    for _ in 0..3 {
        let r = cf.run(&["backup", "history", "--wait"]);
        assert!(r.ok, "{r}");
    }
    wait_until(
        Duration::from_secs(10),
        "history is trimmed to one session",
        || sessions_of(&cf, "history").len() == 1,
    );
    assert_eq!(phase(&sessions_of(&cf, "history")[0]), "Succeeded");
    let calls = hook_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls[0].starts_with("POST /done") && calls[0].ends_with("backup done"),
        "{calls:?}"
    );

    // The every-minute schedule fires on time and succeeds; the paused one never fires.
    wait_until(
        Duration::from_secs(75),
        "the every-minute schedule produced a successful session",
        || {
            sessions_of(&cf, "minutely")
                .iter()
                .any(|s| phase(s) == "Succeeded")
        },
    );
    let s = sessions_of(&cf, "minutely")
        .into_iter()
        .find(|s| phase(s) == "Succeeded")
        .unwrap();
    let created: jiff::Timestamp = s["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let second = created.as_second() % 60;
    assert!(
        second <= 3,
        "the session started {second}s after the minute"
    );
    assert!(
        sessions_of(&cf, "paused").is_empty(),
        "a paused configuration fired"
    );
    assert!(
        s["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "MetricsPushed" && c["status"] == "True"),
        "{s:#}"
    );

    // The Pushgateway holds the session's values under Stash's names and job.
    let text = pg.metrics_text().unwrap();
    let job = [("job", "backupconfiguration-default-minutely")];
    assert_eq!(
        sample(&text, "stash_backup_session_success", &job),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "stash_appscode_com_backupsession_success", &job),
        Some(1.0)
    );
    let bytes = s["status"]["targets"][0]["stats"][0]["snapshots"][0]["totalBytes"]
        .as_f64()
        .unwrap();
    assert_eq!(
        sample(
            &text,
            "stash_backup_host_data_size_bytes",
            &[("job", job[0].1), ("hostname", "host-0")]
        ),
        Some(bytes)
    );
    assert_eq!(
        sample(&text, "coffer_backup_bytes_read", &[("job", job[0].1)]),
        Some(bytes)
    );
    let repo = cf.get_json("repository", "repo");
    assert_eq!(
        sample(
            &text,
            "stash_repository_snapshot_count",
            &[("job", job[0].1), ("name", "repo")]
        ),
        repo["status"]["snapshotCount"].as_f64()
    );
    assert_eq!(
        sample(&text, "stash_repository_integrity", &[("job", job[0].1)]),
        Some(1.0)
    );
    let age = sample(
        &text,
        "coffer_backup_newest_good_age_seconds",
        &[("job", job[0].1)],
    )
    .unwrap();
    assert!((0.0..120.0).contains(&age), "{age}");
    let failed_job = [("job", "backupconfiguration-default-retry")];
    assert_eq!(
        sample(&text, "stash_backup_session_success", &failed_job),
        Some(0.0)
    );

    // The server serves the same on /metrics.
    let served = http_get(&format!("{}/metrics", server.metrics)).unwrap();
    assert_eq!(
        sample(
            &served,
            "stash_backup_session_success",
            &[("invoker_name", "minutely")]
        ),
        Some(1.0),
        "{served}"
    );
    assert!(sample(&served, "coffer_backup_sessions", &[("phase", "Succeeded")]).unwrap() >= 2.0);

    // Logs of a session are kept.
    let name = s["metadata"]["name"].as_str().unwrap();
    let logs = cf.ok(&["logs", name]).stdout;
    assert!(
        logs.contains("snapshot") && logs.contains("step update-status"),
        "{logs}"
    );
}

#[test]
fn a_killed_server_recovers_its_orphans_and_sigterm_lets_sessions_finish() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_2000;")
        .unwrap();
    let cf = Coffer::new();
    let repo = cf.path("repo");
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &repo, "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config("bc", "repo", "src", "--databases app", 10)
            .replace("  schedule: \"0 3 * * *\"\n", ""),
    ]
    .join("---\n");
    assert!(cf.apply("m.yaml", &manifests).ok);
    assert!(
        cf.run(&["backup", "bc", "--wait"]).ok,
        "the repository exists"
    );
    let slow = cf.file(
        "slow-dump",
        "#!/bin/bash\nmariadb-dump \"$@\" | { head -c 2000; sleep 4; cat; }\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow_env = [("COFFER_MYSQLDUMP", slow.to_str().unwrap())];
    let dead_pg = format!("http://127.0.0.1:{}", coffer_testkit::free_port());

    // Killed mid-session: the agent dies with it, the lock stays behind.
    let mut a = Server::start(&cf, &dead_pg, &slow_env);
    cf.ok(&["backup", "bc"]);
    let locks = repo.join("locks");
    wait_until(
        Duration::from_secs(20),
        "the session holds the repository lock",
        || std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) > 0,
    );
    a.signal(libc::SIGKILL);
    a.child.wait().unwrap();
    drop(a);
    let orphan = sessions_of(&cf, "bc")
        .into_iter()
        .find(|s| phase(s) == "Running")
        .expect("left Running");
    let name = orphan["metadata"]["name"].as_str().unwrap().to_string();

    // A new server resolves it: Failed as interrupted, lock released.
    let mut b = Server::start(&cf, &dead_pg, &slow_env);
    wait_until(
        Duration::from_secs(15),
        "the orphaned session is resolved",
        || phase(&cf.get_json("backupsession", &name)) == "Failed",
    );
    let s = cf.get_json("backupsession", &name);
    assert!(error(&s).contains("interrupted"), "{s:#}");
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "the dead session's lock was released; server logs:\n{}",
        server_logs(&cf)
    );
    assert_restic_check(repo.to_str().unwrap(), &[]);

    // A Pushgateway that is down does not fail a backup; the session says metrics were not pushed.
    cf.ok(&["backup", "bc"]);
    wait_until(Duration::from_secs(20), "a session runs", || {
        sessions_of(&cf, "bc").iter().any(|s| phase(s) == "Running")
    });
    // SIGTERM while it runs: the server lets it finish, then exits.
    b.signal(libc::SIGTERM);
    let status = b.child.wait().unwrap();
    assert!(status.success(), "server exit: {status}");
    let done: Vec<_> = sessions_of(&cf, "bc")
        .into_iter()
        .filter(|s| phase(s) == "Succeeded")
        .collect();
    assert_eq!(
        done.len(),
        2,
        "the first backup and the one that ran through SIGTERM"
    );
    let last = done
        .iter()
        .max_by_key(|s| {
            s["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let pushed = last["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "MetricsPushed")
        .cloned();
    let pushed = pushed.expect("MetricsPushed condition");
    assert_eq!(pushed["status"], "False", "{pushed}");
    assert!(
        pushed["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the Pushgateway"),
        "{pushed}"
    );
}
