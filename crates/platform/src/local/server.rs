//! `coffer server`: the local platform. It watches the store, fires BackupConfigurations on
//! their schedules, admits or skips sessions, runs each as a supervised child process,
//! enforces timeouts, retries, trims history, recovers from its own crashes, runs every
//! binlog archive that is not paused ([`super::archives`]), and serves /metrics, /healthz and
//! the read-only web dashboard. The decisions come from coffer-control; this file only stores
//! resources and runs processes.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::io::AsRawFd,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use coffer_api::{
    backup::{BackupConfiguration, BackupSession, BackupSessionSpec, Invoker, SessionPhase},
    meta::{ObjectMeta, OwnerReference},
    Kind, Resource,
};
use coffer_control::{Action, FailCondition, Readiness, Schedule};
use jiff::Timestamp;

use super::{
    archives::Archives,
    dashboard::{self, DashboardAt},
    lifecycle,
    runner::{self, Agent},
    store::Store,
};

/// How the server runs; flags and the config file fill it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub home: PathBuf,
    pub exe: PathBuf,
    pub pushgateway: Option<String>,
    pub metrics_address: String,
    /// Where the web dashboard is served (`--dashboard-address`).
    pub dashboard: DashboardAt,
    /// How long running sessions may take to finish after SIGTERM before they are stopped.
    pub shutdown_grace: Duration,
    pub tick: Duration,
}

fn now_str() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

type Key = (Kind, String, String);

struct Server {
    cfg: ServerConfig,
    store: Arc<Store>,
    agents: HashMap<Key, Agent>,
    /// Sessions of an earlier server whose agent still runs (only their pid is known).
    adopted: HashMap<Key, u32>,
    last_check: HashMap<(String, String), Timestamp>,
    /// spec.verification.schedule: when each configuration's was last looked at, and the
    /// `coffer verify` it runs (one at a time per configuration).
    last_verify_check: HashMap<(String, String), Timestamp>,
    verifiers: HashMap<(String, String), Verifier>,
    started: Timestamp,
    archives: Archives,
}

/// A scheduled `coffer verify` child and its scratch directory (removed once it is reaped,
/// whatever the child left there).
struct Verifier {
    child: std::process::Child,
    _tmp: Option<tempfile::TempDir>,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(cfg: ServerConfig) -> Result<(), String> {
    fs::create_dir_all(&cfg.home).map_err(|e| e.to_string())?;
    let lock_path = cfg.home.join("server.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another coffer server is running on {} (it holds {})",
            cfg.home.display(),
            lock_path.display()
        ));
    }
    let store = Arc::new(Store::open(&cfg.home).map_err(|e| e.to_string())?);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let on_metrics = cfg.dashboard == DashboardAt::OnMetrics;
    serve_http(
        &cfg.metrics_address,
        store.clone(),
        Routes {
            metrics: true,
            dashboard: on_metrics,
        },
    )?;
    if let DashboardAt::Own(addr) = &cfg.dashboard {
        serve_http(
            addr,
            store.clone(),
            Routes {
                metrics: false,
                dashboard: true,
            },
        )?;
    }
    let board = match &cfg.dashboard {
        DashboardAt::Off => "off".to_string(),
        DashboardAt::OnMetrics => format!("http://{}/", cfg.metrics_address),
        DashboardAt::Own(a) => format!("http://{a}/"),
    };
    tracing::info!(
        "coffer server on {} (metrics on http://{}/metrics, dashboard {board}{})",
        cfg.home.display(),
        cfg.metrics_address,
        cfg.pushgateway
            .as_deref()
            .map(|p| format!(", pushing to {p}"))
            .unwrap_or_default()
    );
    let mut s = Server {
        cfg,
        store,
        agents: HashMap::new(),
        adopted: HashMap::new(),
        last_check: HashMap::new(),
        last_verify_check: HashMap::new(),
        verifiers: HashMap::new(),
        started: Timestamp::now(),
        archives: Archives::default(),
    };
    s.recover();
    let mut last_rev = -1;
    let mut last_full = Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) {
        let rev = s.store.revision().unwrap_or(last_rev);
        // A full pass every second (schedules, deadlines) and at once on any change.
        if rev != last_rev || last_full.elapsed() >= Duration::from_secs(1) {
            last_rev = rev;
            last_full = Instant::now();
            if let Err(e) = s.tick() {
                tracing::error!("reconcile failed: {e}");
            }
        }
        std::thread::sleep(s.cfg.tick);
    }
    s.shutdown();
    drop(lock);
    Ok(())
}

impl Server {
    fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Resource> {
        self.store.get(kind, ns, name).ok().flatten()
    }

    /// Sessions left Running by a server that died: adopt those whose agent still runs (a
    /// server stopped with SIGTERM that left them), fail the rest as interrupted and release
    /// the repository locks they held.
    fn recover(&mut self) {
        for kind in [Kind::BackupSession, Kind::RestoreSession] {
            for r in self.store.list(kind, None).unwrap_or_default() {
                let (ph, pid) = session_phase_pid(&r);
                if ph != SessionPhase::Running {
                    continue;
                }
                let key = (kind, r.namespace().to_string(), r.name().to_string());
                match pid {
                    Some(p) if runner::alive(p) && runner::process_is_agent(p) => {
                        tracing::info!("adopting {} (agent pid {p} still runs)", r.display_name());
                        self.adopted.insert(key, p);
                    }
                    _ => {
                        if let Some(p) = pid {
                            // Perhaps still exiting (its command line already gone).
                            runner::wait_gone(p, Duration::from_secs(5));
                        }
                        self.fail_interrupted(
                            r,
                            "interrupted: the process running this session is gone (the coffer \
                         server or machine stopped while it ran); run it again",
                        )
                    }
                }
            }
        }
    }

    fn fail_interrupted(&self, r: Resource, why: &str) {
        lifecycle::mark_failed(
            &self.store,
            self.cfg.pushgateway.as_deref(),
            r,
            why,
            FailCondition::Interrupted,
            None,
        );
    }

    fn bc_of(&self, bs: &BackupSession) -> Option<BackupConfiguration> {
        lifecycle::config_of(&self.store, bs)
    }

    fn tick(&mut self) -> Result<(), String> {
        self.supervise();
        let bcs: Vec<BackupConfiguration> = self
            .store
            .list(Kind::BackupConfiguration, None)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|r| match r {
                Resource::BackupConfiguration(b) => Some(b),
                _ => None,
            })
            .collect();
        for bc in &bcs {
            let bc = self.update_readiness(bc);
            self.fire_schedule(&bc);
            self.fire_verification(&bc);
        }
        self.verifiers
            .retain(|(ns, name), v| match v.child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    tracing::info!("scheduled verification of {ns}/{name} ended: {status}");
                    false
                }
                Err(_) => false,
            });
        self.start_backup_sessions();
        self.retry_and_trim(&bcs);
        self.start_restore_sessions();
        self.archives
            .tick(&self.store, &self.cfg.exe, &self.cfg.home);
        Ok(())
    }

    fn update_readiness(&self, bc: &BackupConfiguration) -> BackupConfiguration {
        let ns = bc.metadata.namespace();
        let repo_ns = bc.spec.repository.namespace.as_deref().unwrap_or(ns);
        let repo = self.get(Kind::Repository, repo_ns, &bc.spec.repository.name);
        let repository_found = match &repo {
            Some(_) => Ok(()),
            None => Err(format!(
                "Repository {repo_ns}/{} not found",
                bc.spec.repository.name
            )),
        };
        let backend_secret_found = match &repo {
            Some(Resource::Repository(r)) => {
                let s = &r.spec.backend.storage_secret_name;
                match self.get(Kind::Secret, repo_ns, s) {
                    Some(_) => Ok(()),
                    None => Err(format!(
                        "Secret {repo_ns}/{s} (the repository's storageSecretName) not found"
                    )),
                }
            }
            _ => Err("the Repository is missing".into()),
        };
        let target_found = match bc.spec.target.as_ref() {
            Some(t) => {
                let tns = t.ref_.namespace.as_deref().unwrap_or(ns);
                match self.get(Kind::AppBinding, tns, &t.ref_.name) {
                    Some(_) => Ok(()),
                    None => Err(format!("AppBinding {tns}/{} not found", t.ref_.name)),
                }
            }
            None => Err("spec.target is missing".into()),
        };
        let validation = match &bc.spec.schedule {
            Some(s) => Schedule::parse(s, bc.spec.time_zone.as_deref())
                .map(|_| ())
                .map_err(|e| format!("spec.schedule: {e}")),
            None => Ok(()),
        };
        let r = Readiness {
            repository_found,
            backend_secret_found,
            target_found,
            validation,
            cron_job_created: None,
            verification_cron_job_created: None,
        };
        let mut st = coffer_control::readiness(&r, bc.status.as_ref(), &now_str());
        st.observed_generation = bc.metadata.generation;
        // Keep transition times stable: only write when something other than time changed.
        let changed = bc.status.as_ref().is_none_or(|old| {
            old.phase != st.phase
                || old.observed_generation != st.observed_generation
                || old.conditions.len() != st.conditions.len()
                || old
                    .conditions
                    .iter()
                    .zip(&st.conditions)
                    .any(|(a, b)| a.status != b.status || a.message != b.message)
        });
        let before = bc.clone();
        let mut bc = bc.clone();
        if changed {
            bc.status = Some(st);
            lifecycle::write_status(
                &self.store,
                &Resource::BackupConfiguration(before),
                &Resource::BackupConfiguration(bc.clone()),
            );
        }
        bc
    }

    fn fire_schedule(&mut self, bc: &BackupConfiguration) {
        let Some(expr) = bc.spec.schedule.as_deref() else {
            return;
        };
        let key = (
            bc.metadata.namespace().to_string(),
            bc.metadata.name.clone(),
        );
        let now = Timestamp::now();
        let since = *self.last_check.entry(key.clone()).or_insert(self.started);
        self.last_check.insert(key, now);
        if bc.spec.paused {
            return;
        }
        let Ok(s) = Schedule::parse(expr, bc.spec.time_zone.as_deref()) else {
            return;
        };
        if s.due(since, now) {
            match create_backup_session(&self.store, bc, None) {
                Ok(bs) => tracing::info!(
                    "schedule `{expr}` fired: BackupSession {}/{} created",
                    bs.metadata.namespace(),
                    bs.metadata.name
                ),
                Err(e) => tracing::error!("cannot create a scheduled session: {e}"),
            }
        }
    }

    /// spec.verification.schedule: runs `coffer verify` as a child when the schedule fires.
    fn fire_verification(&mut self, bc: &BackupConfiguration) {
        let Some(expr) = bc
            .spec
            .verification
            .as_ref()
            .and_then(|v| v.schedule.as_deref())
        else {
            return;
        };
        let key = (
            bc.metadata.namespace().to_string(),
            bc.metadata.name.clone(),
        );
        let now = Timestamp::now();
        let since = *self
            .last_verify_check
            .entry(key.clone())
            .or_insert(self.started);
        self.last_verify_check.insert(key.clone(), now);
        if bc.spec.paused || self.verifiers.contains_key(&key) {
            return;
        }
        let Ok(s) = Schedule::parse(expr, bc.spec.time_zone.as_deref()) else {
            return;
        };
        if !s.due(since, now) {
            return;
        }
        let tmp = tempfile::Builder::new()
            .prefix("coffer-verify-session-")
            .tempdir()
            .ok();
        let mut cmd = std::process::Command::new(&self.cfg.exe);
        if let Some(t) = &tmp {
            cmd.env("COFFER_SESSION_TMPDIR", t.path());
        }
        cmd.arg("--home")
            .arg(&self.cfg.home)
            .arg("-n")
            .arg(&key.0)
            .arg("verify")
            .arg(&key.1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .env("COFFER_LOG_COLOR", "never");
        match &self.cfg.pushgateway {
            Some(p) => cmd.env("COFFER_PUSHGATEWAY", p),
            None => cmd.env_remove("COFFER_PUSHGATEWAY"),
        };
        match cmd.spawn() {
            Ok(child) => {
                tracing::info!(
                    "verification schedule `{expr}` fired: verifying {}/{}",
                    key.0,
                    key.1
                );
                self.verifiers.insert(key, Verifier { child, _tmp: tmp });
            }
            Err(e) => tracing::error!("cannot start a scheduled verification: {e}"),
        }
    }

    fn backup_sessions(&self) -> Vec<BackupSession> {
        self.store
            .list(Kind::BackupSession, None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| match r {
                Resource::BackupSession(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn start_backup_sessions(&mut self) {
        let mut all = self.backup_sessions();
        all.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        for i in 0..all.len() {
            let s = all[i].clone();
            let ph = s.status.as_ref().and_then(|x| x.phase).unwrap_or_default();
            if ph != SessionPhase::Pending {
                continue;
            }
            let ns = s.metadata.namespace().to_string();
            let Some(bc) = self.bc_of(&s) else {
                let before = Resource::BackupSession(s.clone());
                let mut s = s;
                let why = format!(
                    "BackupConfiguration {ns}/{} not found (spec.invoker): create it, or delete this session",
                    s.spec.invoker.name
                );
                let st = s.status_mut();
                st.phase = Some(SessionPhase::Failed);
                st.error = Some(why);
                lifecycle::write_status(&self.store, &before, &Resource::BackupSession(s));
                continue;
            };
            let observed = coffer_control::observe(&bc, &s, &all, Timestamp::now());
            match coffer_control::reconcile(&observed).into_iter().next() {
                Some(Action::Skip { reason }) => {
                    all[i] = lifecycle::mark_skipped(&self.store, s, &reason);
                }
                Some(Action::Start { deadline }) => {
                    if !lifecycle::claim(
                        &self.store,
                        Kind::BackupSession,
                        &ns,
                        &s.metadata.name,
                        deadline,
                    ) {
                        continue;
                    }
                    let timeout = observed.time_out;
                    self.spawn(Kind::BackupSession, &ns, &s.metadata.name, timeout);
                    if let Some(st) = all[i].status.as_mut() {
                        st.phase = Some(SessionPhase::Running);
                    } else {
                        all[i].status_mut().phase = Some(SessionPhase::Running);
                    }
                }
                _ => {}
            }
        }
    }

    fn start_restore_sessions(&mut self) {
        for r in self
            .store
            .list(Kind::RestoreSession, None)
            .unwrap_or_default()
        {
            let Resource::RestoreSession(rs) = r else {
                continue;
            };
            let ph = rs.status.as_ref().and_then(|x| x.phase).unwrap_or_default();
            if ph != SessionPhase::Pending {
                continue;
            }
            let ns = rs.metadata.namespace().to_string();
            if !self
                .store
                .claim_session(Kind::RestoreSession, &ns, &rs.metadata.name)
                .unwrap_or(false)
            {
                continue;
            }
            let timeout = rs
                .spec
                .time_out
                .as_deref()
                .and_then(|t| coffer_api::duration::parse(t).ok());
            self.spawn(Kind::RestoreSession, &ns, &rs.metadata.name, timeout);
        }
    }

    fn spawn(&mut self, kind: Kind, ns: &str, name: &str, timeout: Option<Duration>) {
        match runner::spawn(
            &self.cfg.exe,
            &self.cfg.home,
            kind,
            ns,
            name,
            self.cfg.pushgateway.as_deref(),
            timeout,
        ) {
            Ok(a) => {
                tracing::info!("{kind} {ns}/{name} started (agent pid {})", a.pid());
                self.agents
                    .insert((kind, ns.to_string(), name.to_string()), a);
            }
            Err(e) => {
                if let Some(r) = self.get(kind, ns, name) {
                    self.fail_interrupted(r, &format!("cannot start the session's process: {e}"));
                }
            }
        }
    }

    /// Reaps finished agents, enforces deadlines, notices agents that died without a word;
    /// what to do is `coffer_control::reconcile`'s decision.
    fn supervise(&mut self) {
        let keys: Vec<Key> = self.agents.keys().cloned().collect();
        for key in keys {
            let agent = self.agents.get_mut(&key).expect("key exists");
            if lifecycle::supervise_agent(&self.store, self.cfg.pushgateway.as_deref(), agent) {
                self.agents.remove(&key);
            }
        }
        let adopted: Vec<(Key, u32)> = self.adopted.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (key, pid) in adopted {
            if runner::alive(pid) {
                continue;
            }
            self.adopted.remove(&key);
            let Some(r) = self.get(key.0, &key.1, &key.2) else {
                continue;
            };
            lifecycle::fail_vanished(&self.store, self.cfg.pushgateway.as_deref(), r);
        }
    }

    fn retry_and_trim(&mut self, bcs: &[BackupConfiguration]) {
        let all = self.backup_sessions();
        for bc in bcs {
            let ns = bc.metadata.namespace();
            let mine: Vec<BackupSession> = all
                .iter()
                .filter(|s| s.metadata.namespace() == ns && s.spec.invoker.name == bc.metadata.name)
                .cloned()
                .collect();
            let mut trim = None;
            for s in &mine {
                let mut retry = None;
                for action in coffer_control::reconcile(&coffer_control::observe(
                    bc,
                    s,
                    &mine,
                    Timestamp::now(),
                )) {
                    match action {
                        Action::Retry { at, retry_left } => retry = Some((at, retry_left)),
                        Action::TrimHistory { keep } => trim = Some(keep),
                        _ => {}
                    }
                }
                let Some((at, retry_left)) = retry else {
                    continue;
                };
                lifecycle::retry_session(
                    &self.store,
                    s.metadata.namespace(),
                    &s.metadata.name,
                    lifecycle::RetryDue { at, retry_left },
                );
            }
            if let Some(keep) = trim {
                lifecycle::trim_history(&self.store, &self.cfg.home, bc, keep);
            }
        }
    }

    /// SIGTERM: no new sessions; running ones get the grace period to finish, then are stopped
    /// and marked Failed with the reason.
    fn shutdown(&mut self) {
        // Archives first: each stores its open segment within a heartbeat or two.
        self.archives.shutdown(self.cfg.shutdown_grace);
        tracing::info!(
            "stopping: waiting up to {} for {} running session(s)",
            coffer_api::duration::format(self.cfg.shutdown_grace),
            self.agents.len()
        );
        let until = Instant::now() + self.cfg.shutdown_grace;
        while !self.agents.is_empty() && Instant::now() < until {
            self.supervise();
            std::thread::sleep(Duration::from_millis(200));
        }
        let keys: Vec<Key> = self.agents.keys().cloned().collect();
        for key in keys {
            if let Some(mut a) = self.agents.remove(&key) {
                a.kill_group();
            }
            if let Some(r) = self.get(key.0, &key.1, &key.2) {
                if !session_phase_pid(&r).0.is_final() {
                    self.fail_interrupted(
                        r,
                        "interrupted: the coffer server was stopped while this session ran",
                    );
                }
            }
        }
        tracing::info!("stopped");
    }
}

fn session_phase_pid(r: &Resource) -> (SessionPhase, Option<u32>) {
    match r {
        Resource::BackupSession(b) => (
            b.status.as_ref().and_then(|s| s.phase).unwrap_or_default(),
            b.status.as_ref().and_then(|s| s.agent_pid),
        ),
        Resource::RestoreSession(x) => (
            x.status.as_ref().and_then(|s| s.phase).unwrap_or_default(),
            x.status.as_ref().and_then(|s| s.agent_pid),
        ),
        _ => (SessionPhase::Pending, None),
    }
}

/// Creates a BackupSession for a configuration, named and labelled as Stash does.
pub fn create_backup_session(
    store: &Store,
    bc: &BackupConfiguration,
    retry_left: Option<i32>,
) -> Result<BackupSession, String> {
    let ns = bc.metadata.namespace().to_string();
    let name = &bc.metadata.name;
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "coffer".to_string(),
    );
    labels.insert(
        "stash.appscode.com/invoker-type".into(),
        "BackupConfiguration".into(),
    );
    labels.insert("stash.appscode.com/invoker-name".into(), name.clone());
    let retry_left = retry_left.or_else(|| {
        bc.spec
            .retry_config
            .as_ref()
            .map(|r| r.max_retry.unwrap_or(1))
    });
    let ts = Timestamp::now().as_second();
    for attempt in 0..1000 {
        let sname = if attempt == 0 {
            format!("{name}-{ts}")
        } else {
            format!("{name}-{ts}-{attempt}")
        };
        let bs = BackupSession {
            api_version: Kind::BackupSession.api_version().into(),
            kind: Kind::BackupSession.as_str().into(),
            metadata: ObjectMeta {
                name: sname,
                namespace: Some(ns.clone()),
                labels: labels.clone(),
                owner_references: vec![OwnerReference {
                    api_version: Kind::BackupConfiguration.api_version().into(),
                    kind: "BackupConfiguration".into(),
                    name: name.clone(),
                    uid: bc.metadata.uid.clone(),
                    controller: Some(true),
                }],
                ..Default::default()
            },
            spec: BackupSessionSpec {
                invoker: Invoker {
                    api_group: "stash.appscode.com".into(),
                    kind: "BackupConfiguration".into(),
                    name: name.clone(),
                },
                retry_left,
            },
            status: None,
        };
        match store.create(Resource::BackupSession(bs)) {
            Ok(Resource::BackupSession(bs)) => return Ok(bs),
            Ok(_) => unreachable!("created what was given"),
            Err(super::store::StoreError::Exists(_)) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "cannot find a free name for a session of {ns}/{name}"
    ))
}

/// What one HTTP listener serves.
#[derive(Debug, Clone, Copy)]
struct Routes {
    metrics: bool,
    dashboard: bool,
}

/// Serves /metrics (every configuration's latest finished session, repositories, and
/// coffer's own gauges, computed from the store at each scrape) and /healthz, and/or the
/// read-only dashboard (`/` and `/api/overview`). Only GET and HEAD; nothing here writes.
fn serve_http(addr: &str, store: Arc<Store>, routes: Routes) -> Result<(), String> {
    let what = match (routes.metrics, routes.dashboard) {
        (true, true) => "/metrics and the dashboard",
        (true, false) => "/metrics",
        _ => "the dashboard",
    };
    let server = tiny_http::Server::http(addr).map_err(|e| {
        let fix = if routes.metrics {
            "choose another with --metrics-address (metricsAddress in the config file)"
        } else {
            "choose another with --dashboard-address (dashboardAddress in the config file), \
             or turn the dashboard off with --dashboard-address off"
        };
        format!("cannot listen on {addr} for {what}: {e}; {fix}")
    })?;
    std::thread::Builder::new()
        .name("coffer-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let get = matches!(
                    req.method(),
                    tiny_http::Method::Get | tiny_http::Method::Head
                );
                // The query string (a cache buster, say) does not choose the route.
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let (code, body, ctype) = match path.as_str() {
                    _ if !get => (405, "read-only: GET only\n".to_string(), "text/plain"),
                    "/healthz" => match store.revision() {
                        Ok(_) => (200, "ok\n".to_string(), "text/plain"),
                        Err(e) => (500, format!("store unavailable: {e}\n"), "text/plain"),
                    },
                    "/metrics" if routes.metrics => {
                        (200, metrics_text(&store), "text/plain; version=0.0.4")
                    }
                    "/" | "/index.html" if routes.dashboard => {
                        (200, dashboard::PAGE.to_string(), "text/html; charset=utf-8")
                    }
                    "/api/overview" if routes.dashboard => {
                        match dashboard::overview(&store, Timestamp::now()) {
                            Ok(v) => (200, v.to_string(), "application/json"),
                            Err(e) => (
                                500,
                                serde_json::json!({ "error": format!("store unavailable: {e}") })
                                    .to_string(),
                                "application/json",
                            ),
                        }
                    }
                    _ => (404, "not found\n".to_string(), "text/plain"),
                };
                let resp = tiny_http::Response::from_string(body)
                    .with_status_code(code)
                    .with_header(
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                            .expect("valid header"),
                    )
                    .with_header(
                        tiny_http::Header::from_bytes(&b"Cache-Control"[..], &b"no-store"[..])
                            .expect("valid header"),
                    );
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub fn metrics_text(store: &Store) -> String {
    let mut m = coffer_engine::metrics::Metrics::new();
    let sessions: Vec<BackupSession> = store
        .list(Kind::BackupSession, None)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r {
            Resource::BackupSession(b) => Some(b),
            _ => None,
        })
        .collect();
    let mut by_phase: BTreeMap<String, f64> = BTreeMap::new();
    for s in &sessions {
        let p = s.status.as_ref().and_then(|x| x.phase).unwrap_or_default();
        *by_phase.entry(p.to_string()).or_default() += 1.0;
    }
    for (p, n) in by_phase {
        m.set(
            &["coffer_backup_sessions"],
            "BackupSessions in the store by phase",
            &[("phase", p)],
            n,
        );
    }
    for r in store
        .list(Kind::BackupConfiguration, None)
        .unwrap_or_default()
    {
        let Resource::BackupConfiguration(bc) = r else {
            continue;
        };
        let ns = bc.metadata.namespace();
        let latest = sessions
            .iter()
            .filter(|s| s.metadata.namespace() == ns && s.spec.invoker.name == bc.metadata.name)
            .filter(|s| {
                matches!(
                    s.status.as_ref().and_then(|x| x.phase),
                    Some(SessionPhase::Succeeded) | Some(SessionPhase::Failed)
                )
            })
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
        let repo = match store.get(
            Kind::Repository,
            bc.spec.repository.namespace.as_deref().unwrap_or(ns),
            &bc.spec.repository.name,
        ) {
            Ok(Some(Resource::Repository(r))) => Some(r),
            _ => None,
        };
        if let Some(s) = latest {
            coffer_engine::metrics::backup_session(&mut m, &bc, s, repo.as_ref(), None);
        } else if let Some(r) = &repo {
            coffer_engine::metrics::repository(&mut m, r);
        }
        if let Some(st) = bc.status.as_ref() {
            if let Some(v) = &st.last_verification {
                coffer_engine::metrics::verification(
                    &mut m,
                    &bc,
                    v,
                    st.last_verified_time.as_deref(),
                );
            }
        }
    }
    for r in store.list(Kind::BinlogArchive, None).unwrap_or_default() {
        if let Resource::BinlogArchive(a) = r {
            coffer_engine::metrics::binlog_archive(&mut m, &a);
        }
    }
    m.text()
}
