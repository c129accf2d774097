//! The web dashboard of `coffer server`, in a real browser: Debian's headless Chromium driven
//! over the DevTools protocol loads the page from a server with real sessions against a real
//! MariaDB, shows the configurations and sessions the API lists with their phases and
//! failure reasons, logs no console error, and shows a session that finishes later within
//! the same page load (no reload). The page's screenshot is kept, and copied to
//! `$COFFER_DASHBOARD_SCREENSHOT` when that is set (how docs/dashboard.png is made).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use coffer_testkit::MariaDb;
use serde_json::{json, Value};

use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

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

/// GET over plain HTTP/1.1; the status code and body (read to Content-Length: Chromium's
/// DevTools server keeps the connection open).
fn http_get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        &s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).ok()?;
    let code = status.split(' ').nth(1)?.parse().ok()?;
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        }
        None => {
            r.read_to_end(&mut body).ok()?;
        }
    }
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // Once reaped, the pid may belong to another process.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A DevTools protocol connection to one page: calls, and the events seen meanwhile.
struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    events: Vec<Value>,
}

impl Page {
    fn connect(ws_url: &str) -> Page {
        let hostport = ws_url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap();
        let tcp = TcpStream::connect(hostport).unwrap();
        // A browser that stops answering fails the test instead of hanging it.
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (ws, _) = tungstenite::client(ws_url, tcp).expect("DevTools websocket handshake");
        Page {
            ws,
            next: 0,
            events: Vec::new(),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().expect("DevTools connection");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Evaluates an expression in the page; its value (JSON-serialisable).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Each row of a table's body as the text of its cells.
    fn rows(&mut self, table: &str) -> Vec<Vec<String>> {
        let v = self.eval(&format!(
            "[...document.querySelectorAll('#{table} tbody tr')]\
             .map(tr => [...tr.cells].map(td => td.innerText))"
        ));
        serde_json::from_value(v).unwrap()
    }

    /// Console errors, uncaught exceptions and browser log errors seen so far.
    fn errors(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Runtime.consoleAPICalled") => {
                    matches!(e["params"]["type"].as_str(), Some("error" | "assert"))
                }
                Some("Log.entryAdded") => e["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .collect()
    }
}

/// Starts headless Chromium with DevTools on a free port; the browser and its page's
/// DevTools websocket address.
fn chromium(profile: &std::path::Path) -> (Killed, String) {
    let mut c = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1400,1300",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} (apt-get install chromium): {e}"));
    let stderr = c.stderr.take().unwrap();
    let browser = Killed(c);
    // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(u) = line.split("DevTools listening on ").nth(1) {
                let _ = tx.send(u.trim().to_string());
            }
        }
    });
    let browser_ws = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("Chromium printed its DevTools address");
    let hostport = browser_ws
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let mut page_ws = None;
    wait_until(Duration::from_secs(20), "Chromium lists its page", || {
        let Some((200, body)) = http_get(&format!("http://{hostport}/json/list")) else {
            return false;
        };
        let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        page_ws = list.as_array().and_then(|l| {
            l.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        page_ws.is_some()
    });
    (browser, page_ws.unwrap())
}

fn row<'a>(rows: &'a [Vec<String>], first: &str) -> Option<&'a Vec<String>> {
    rows.iter()
        .find(|r| r.first().map(String::as_str) == Some(first))
}

#[test]
fn the_dashboard_shows_configurations_and_sessions_and_updates_in_a_browser() {
    let src = MariaDb::start().unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_5000;")
        .unwrap();
    let cf = Coffer::new();
    let dead = coffer_testkit::free_port();
    let manifests = [
        secret("repo-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
        local_repo("repo", &cf.path("repo"), "repo-secret"),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        secret("dead-auth", &[("username", "root"), ("password", "x")]),
        format!(
            "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {{name: dead}}\n\
             spec: {{clientConfig: {{url: \"mysql://127.0.0.1:{dead}/\"}}, secret: {{name: dead-auth}}}}\n"
        ),
        backup_config("nightly", "repo", "src", "--databases app", 10) + "  backupHistoryLimit: 10\n",
        backup_config_with("unreachable", "repo", "dead", &[("args", "--databases app"), ("waitTimeout", "1")], 10),
    ]
    .join("---\n");
    let r = cf.apply("m.yaml", &manifests);
    assert!(r.ok, "{r}");

    // The dashboard on a listener of its own, beside /metrics.
    let metrics = format!("127.0.0.1:{}", coffer_testkit::free_port());
    let board = format!("127.0.0.1:{}", coffer_testkit::free_port());
    let log = std::fs::File::create(cf.path("server.log")).unwrap();
    let server = Killed(
        cf.cmd()
            .args([
                "server",
                "--metrics-address",
                &metrics,
                "--dashboard-address",
                &board,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{board}");
    wait_until(Duration::from_secs(20), "the dashboard answers", || {
        http_get(&format!("{base}/api/overview")).is_some_and(|(c, _)| c == 200)
    });
    // The metrics listener does not serve the dashboard when it has its own.
    assert_eq!(http_get(&format!("http://{metrics}/")).unwrap().0, 404);
    let (code, page) = http_get(&format!("{base}/")).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>coffer</title>"));

    // Real sessions: successes of a growing database, and a failure with its reason.
    for i in 0..3 {
        let r = cf.run(&["backup", "nightly", "--wait"]);
        assert!(r.ok, "{r}");
        src.exec(&format!(
            "USE app; INSERT INTO t SELECT seq, REPEAT(MD5(seq), 8) FROM seq_{}_to_{};",
            10_000 * (i + 1),
            10_000 * (i + 1) + 4_000
        ))
        .unwrap();
    }
    let r = cf.run(&["backup", "unreachable", "--wait"]);
    assert!(!r.ok, "a backup of an unreachable server succeeded: {r}");

    let overview = || -> Value {
        let (code, body) = http_get(&format!("{base}/api/overview")).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_until(
        Duration::from_secs(20),
        "both configurations are Ready in the API",
        || {
            overview()["configurations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["phase"] == "Ready")
                .count()
                == 2
        },
    );
    let api = overview();
    // The API lists what the store holds, with sizes and reasons from the sessions' status.
    let listed: Value =
        serde_json::from_str(&cf.ok(&["get", "backupsessions", "-o", "json"]).stdout).unwrap();
    let mut store_names: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut api_names: Vec<String> = api["backupSessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    store_names.sort();
    api_names.sort();
    assert_eq!(api_names, store_names);
    let sessions = api["backupSessions"].as_array().unwrap().clone();
    let good = sessions
        .iter()
        .rfind(|s| s["configuration"] == "nightly")
        .unwrap();
    assert_eq!(good["phase"], "Succeeded", "{good:#}");
    let stored = cf.get_json("backupsession", good["name"].as_str().unwrap());
    assert_eq!(
        good["totalBytes"],
        stored["status"]["targets"][0]["stats"][0]["snapshots"][0]["totalBytes"]
    );
    assert!(good["durationSeconds"].as_f64().is_some(), "{good:#}");
    let bad = sessions
        .iter()
        .find(|s| s["configuration"] == "unreachable")
        .unwrap();
    assert_eq!(bad["phase"], "Failed", "{bad:#}");
    let reason = bad["reason"].as_str().unwrap().to_string();
    assert!(!reason.is_empty());
    let nightly = api["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nightly")
        .unwrap();
    assert_eq!(nightly["lastSession"]["name"], good["name"]);
    assert!(nightly["newestSucceededAgeSeconds"].as_i64().is_some());
    assert!(nightly["verification"].is_object());
    let repo = &api["repositories"][0];
    assert_eq!(repo["name"], "repo");
    let growth = repo["growth"].as_array().unwrap();
    assert_eq!(growth.len(), 3, "{repo:#}");
    let added: u64 = sessions
        .iter()
        .filter_map(|s| s["uploadedBytes"].as_u64())
        .sum();
    assert_eq!(
        growth[2]["cumulativeBytes"].as_u64(),
        Some(added),
        "{repo:#}"
    );
    // No secret reaches the dashboard: not the repository password, not the database's.
    let text = api.to_string();
    assert!(!text.contains(REPO_PASSWORD));
    assert!(!text.contains(src.root_password()));

    // The page in Chromium.
    let profile = tempfile::tempdir().unwrap();
    let (_browser, page_ws) = chromium(profile.path());
    let mut p = Page::connect(&page_ws);
    p.call("Runtime.enable", json!({}));
    p.call("Log.enable", json!({}));
    p.call("Page.enable", json!({}));
    p.call("Page.navigate", json!({"url": format!("{base}/")}));
    wait_until(
        Duration::from_secs(30),
        "the page rendered the overview",
        || p.eval("Number(document.body && document.body.dataset.updates || 0)") != json!(0),
    );
    // A mark on this page load: a reload would lose it.
    p.eval("window.cofferMark = 'first load'; 1");

    let configs = p.rows("configurations");
    for c in api["configurations"].as_array().unwrap() {
        let r = row(&configs, c["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("configuration {} not shown: {configs:?}", c["name"]));
        assert_eq!(r[2], c["phase"].as_str().unwrap(), "{r:?}");
    }
    let shown = p.rows("backup-sessions");
    for s in &sessions {
        let r = row(&shown, s["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("session {} not shown: {shown:?}", s["name"]));
        assert_eq!(r[1], s["configuration"].as_str().unwrap(), "{r:?}");
        assert_eq!(r[2], s["phase"].as_str().unwrap(), "{r:?}");
    }
    let failed = row(&shown, bad["name"].as_str().unwrap()).unwrap();
    // (innerText folds runs of white space.)
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        words(&failed[7]),
        words(&reason),
        "the failure reason is shown"
    );
    let repos = p.rows("repositories");
    assert!(row(&repos, "repo").is_some(), "{repos:?}");
    // The sessions chart has one dot per session.
    assert_eq!(
        p.eval("document.querySelectorAll('#chart-sessions circle').length"),
        json!(sessions.len())
    );

    // A new session finishes; the same page load shows it.
    let r = cf.run(&["backup", "nightly", "--wait"]);
    assert!(r.ok, "{r}");
    let new = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("backupsession/"))
        .and_then(|l| l.strip_suffix(" created"))
        .unwrap()
        .to_string();
    wait_until(
        Duration::from_secs(30),
        "the page shows the new session as Succeeded",
        || row(&p.rows("backup-sessions"), &new).is_some_and(|r| r[2] == "Succeeded"),
    );
    assert_eq!(
        p.eval("window.cofferMark"),
        json!("first load"),
        "the page was reloaded"
    );
    let configs = p.rows("configurations");
    let nightly = row(&configs, "nightly").unwrap();
    assert!(nightly[4].starts_with(&new), "last session: {nightly:?}");

    let shot = p.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    std::fs::write(cf.path("dashboard.png"), &png).unwrap();
    if let Ok(to) = std::env::var("COFFER_DASHBOARD_SCREENSHOT") {
        std::fs::write(&to, &png).unwrap();
    }

    // Flush events that arrived since the last call, then: nothing went wrong in the page.
    p.eval("1");
    let errors = p.errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    drop(server);
}
