//! The verbs. Each is a thin layer over the store (platform) and the engine.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use coffer_api::{backup::SessionPhase, parse_located, repository::LocalMount, Kind, Resource};
use coffer_platform::local::{
    lifecycle::{self, Start},
    Store,
};

use crate::{home, output, Cli, Command, Format};

pub fn run(cli: Cli) -> Result<i32> {
    // An agent in a Kubernetes Job has no home and no store: everything it reads and writes
    // goes through the API, so it must not open (or create) a local store first.
    if crate::pod::on_kubernetes() {
        match &cli.command {
            Command::Agent { kind, name } => return crate::pod::agent(&cli.namespace, kind, name),
            // The operator's verification CronJob: the same, for spec.verification.schedule.
            Command::Verify {
                backup_configuration,
                output,
            } => return crate::pod::verify(&cli.namespace, backup_configuration, *output),
            // The operator's archive Deployment.
            Command::Archive { binlog_archive } => {
                return crate::pod::archive(&cli.namespace, binlog_archive)
            }
            _ => {}
        }
    }
    let home = home::resolve(cli.home.clone());
    let store = Store::open(&home)?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Apply { files } => apply(&store, &files, ns).map(|_| 0),
        Command::Get {
            kind,
            name,
            output,
            all_namespaces,
        } => get(&store, &kind, name.as_deref(), output, ns, all_namespaces).map(|_| 0),
        Command::Describe { kind, name } => {
            let kind = parse_kind(&kind)?;
            let r = must_get(&store, kind, ns, &name)?;
            print!("{}", output::describe(&r));
            Ok(0)
        }
        Command::Delete { kind, name } => {
            let kind = parse_kind(&kind)?;
            if store.delete(kind, ns, &name)? {
                println!("{} \"{name}\" deleted", kind.as_str().to_ascii_lowercase());
                Ok(0)
            } else {
                bail!("{kind} {ns}/{name} not found");
            }
        }
        Command::Backup {
            backup_configuration,
            wait,
        } => backup(&store, &home, ns, &backup_configuration, wait),
        Command::Restore { file, wait } => {
            let applied = apply(&store, std::slice::from_ref(&file), ns)?;
            let rs: Vec<_> = applied
                .iter()
                .filter(|r| r.kind() == Kind::RestoreSession)
                .collect();
            let [r] = rs.as_slice() else {
                bail!(
                    "{file} must hold exactly one RestoreSession (found {})",
                    rs.len()
                );
            };
            let (rns, name) = (r.namespace().to_string(), r.name().to_string());
            if wait || !home::server_running(&home) {
                wait_session(
                    &store,
                    &home,
                    Kind::RestoreSession,
                    &rns,
                    &name,
                    Duration::MAX,
                )
            } else {
                Ok(0)
            }
        }
        Command::Wait {
            kind,
            name,
            timeout,
        } => {
            let kind = parse_kind(&kind)?;
            if !matches!(kind, Kind::BackupSession | Kind::RestoreSession) {
                bail!("`coffer wait` waits for a BackupSession or a RestoreSession, not a {kind}");
            }
            let timeout =
                coffer_api::duration::parse(&timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
            wait_session(&store, &home, kind, ns, &name, timeout)
        }
        Command::Snapshots { repository, output } => snapshots(&store, ns, &repository, output),
        Command::Unlock {
            repository,
            remove_all,
        } => unlock(&store, ns, &repository, remove_all),
        Command::Check {
            repository,
            read_data,
            subset,
            output,
        } => check(
            &store,
            ns,
            &repository,
            read_data,
            subset.as_deref(),
            output,
        ),
        Command::Verify {
            backup_configuration,
            output,
        } => verify(&store, ns, &backup_configuration, output),
        Command::Pause {
            backup_configuration,
        } => set_paused(&store, ns, &backup_configuration, true),
        Command::Resume {
            backup_configuration,
        } => set_paused(&store, ns, &backup_configuration, false),
        Command::Logs { args } => logs(&store, &home, ns, &args),
        Command::Server {
            pushgateway,
            metrics_address,
            dashboard_address,
            shutdown_grace,
            config,
        } => server(
            home,
            pushgateway,
            Listen {
                metrics: metrics_address,
                dashboard: dashboard_address,
            },
            shutdown_grace,
            config,
        ),
        Command::Agent { kind, name } => agent(&store, ns, &kind, &name),
        Command::Archive { binlog_archive } => archive(&store, ns, &binlog_archive),
        Command::Operator { .. }
        | Command::CreateBackupsession { .. }
        | Command::BenchArchiveLayout { .. } => {
            unreachable!("dispatched in main before the store is opened")
        }
    }
}

/// The engine's configuration on the local platform: this process runs the session.
pub fn engine_config() -> coffer_engine::EngineConfig {
    coffer_engine::EngineConfig {
        pushgateway: std::env::var("COFFER_PUSHGATEWAY")
            .ok()
            .filter(|p| !p.is_empty()),
        executor: coffer_engine::Executor::Process(std::process::id()),
        listen_address: None,
        replica: None,
        data_dir_from_volume_mounts: false,
        hook_exec: coffer_engine::hooks::HookExec::Local,
        local_mount: LocalMount::Host,
    }
}

fn set_paused(store: &Store, ns: &str, name: &str, paused: bool) -> Result<i32> {
    let Resource::BackupConfiguration(mut bc) =
        must_get(store, Kind::BackupConfiguration, ns, name)?
    else {
        unreachable!("kind checked")
    };
    bc.spec.paused = paused;
    store.apply(Resource::BackupConfiguration(bc))?;
    println!(
        "backupconfiguration/{name} {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(0)
}

fn logs(store: &Store, home: &Path, ns: &str, args: &[String]) -> Result<i32> {
    let (kinds, name) = match args {
        [name] => (
            vec![Kind::BackupSession, Kind::RestoreSession],
            name.as_str(),
        ),
        [kind, name] => (vec![parse_kind(kind)?], name.as_str()),
        _ => bail!("usage: coffer logs [backupsession|restoresession] NAME"),
    };
    for kind in kinds {
        if store.get(kind, ns, name)?.is_some() {
            let p = coffer_platform::local::runner::log_path(home, kind, ns, name);
            let text = std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "{kind} {ns}/{name} has no log at {} (it has not run yet)",
                    p.display()
                )
            })?;
            print!("{text}");
            return Ok(0);
        }
    }
    bail!("no BackupSession or RestoreSession {ns}/{name}")
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServerFile {
    pushgateway: Option<String>,
    metrics_address: Option<String>,
    dashboard_address: Option<String>,
    shutdown_grace: Option<String>,
}

/// The server's listen addresses as given by flags.
struct Listen {
    metrics: Option<String>,
    dashboard: Option<String>,
}

fn server(
    home: PathBuf,
    pushgateway: Option<String>,
    listen: Listen,
    shutdown_grace: Option<String>,
    config: Option<PathBuf>,
) -> Result<i32> {
    let file: ServerFile = match &config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_yaml::from_str(&text)
                .with_context(|| format!("{}: not a valid server config", p.display()))?
        }
        None => ServerFile::default(),
    };
    let grace = shutdown_grace
        .or(file.shutdown_grace)
        .map(|g| coffer_api::duration::parse(&g).map_err(|e| anyhow!("shutdownGrace: {e}")))
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    let metrics_address = listen
        .metrics
        .or(file.metrics_address)
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let cfg = coffer_platform::local::server::ServerConfig {
        home,
        exe: std::env::current_exe().context("cannot find the coffer executable")?,
        pushgateway: pushgateway.or(file.pushgateway).filter(|p| !p.is_empty()),
        dashboard: coffer_platform::local::dashboard::dashboard_at(
            listen.dashboard.or(file.dashboard_address).as_deref(),
            &metrics_address,
        ),
        metrics_address,
        shutdown_grace: grace,
        tick: Duration::from_millis(250),
    };
    coffer_platform::local::server::run(cfg).map_err(|e| anyhow!(e))?;
    Ok(0)
}

/// `coffer archive NAME`: exit 0 after a clean stop (or when the archive is paused).
fn archive(store: &Store, ns: &str, name: &str) -> Result<i32> {
    must_get(store, Kind::BinlogArchive, ns, name)?;
    match coffer_platform::local::archives::run_foreground(store, ns, name) {
        Ok(coffer_engine::archive::RunEnd::Paused) => {
            println!("binlogarchive/{name} is paused (spec.paused); nothing streamed");
            Ok(0)
        }
        Ok(coffer_engine::archive::RunEnd::Stopped) => Ok(0),
        Err(e) => Err(anyhow!(e)),
    }
}

fn agent(store: &Store, ns: &str, kind: &str, name: &str) -> Result<i32> {
    let kind = parse_kind(kind)?;
    let r = must_get(store, kind, ns, name)?;
    run_session(store, r, &engine_config())
}

/// Runs a session through the engine on any platform's catalog; exit code 0 only if it
/// Succeeded.
pub fn run_session(
    cat: &dyn coffer_engine::Catalog,
    r: Resource,
    cfg: &coffer_engine::EngineConfig,
) -> Result<i32> {
    let ph = match r {
        Resource::BackupSession(bs) => coffer_engine::run_backup(cat, bs, cfg)
            .status
            .and_then(|s| s.phase),
        Resource::RestoreSession(rs) => coffer_engine::run_restore(cat, rs, cfg)
            .status
            .and_then(|s| s.phase),
        other => bail!("{} is not a session", other.display_name()),
    };
    Ok(if ph == Some(SessionPhase::Succeeded) {
        0
    } else {
        1
    })
}

pub fn parse_kind(s: &str) -> Result<Kind> {
    Kind::parse(s).ok_or_else(|| {
        let known: Vec<&str> = coffer_api::kind::ALL.iter().map(|k| k.plural()).collect();
        anyhow!("unknown kind `{s}`; coffer knows {}", known.join(", "))
    })
}

fn must_get(store: &Store, kind: Kind, ns: &str, name: &str) -> Result<Resource> {
    store.get(kind, ns, name)?.ok_or_else(|| {
        if kind.cluster_scoped() {
            anyhow!("{kind} {name} not found")
        } else {
            anyhow!("{kind} {ns}/{name} not found (use -n to choose the namespace)")
        }
    })
}

/// Reads manifests from files, directories (their .yaml/.yml/.json files, sorted) or stdin.
fn read_sources(files: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read manifests from standard input")?;
            out.push(("-".to_string(), s));
            continue;
        }
        let p = PathBuf::from(f);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("cannot read directory {f}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for e in entries {
                let text = std::fs::read_to_string(&e)
                    .with_context(|| format!("cannot read {}", e.display()))?;
                out.push((e.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {f}"))?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

/// Parses everything first and applies nothing unless every manifest is valid and the set's
/// references and task params check out; references to what does not exist yet only warn.
fn apply(store: &Store, files: &[String], ns: &str) -> Result<Vec<Resource>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (source, text) in read_sources(files)? {
        match parse_located(&text, &source) {
            Ok(rs) => all.extend(rs),
            Err(es) => errors.extend(es),
        }
    }
    for l in &mut all {
        let r = &mut l.resource;
        if !r.kind().cluster_scoped() && r.meta().namespace.is_none() {
            r.meta_mut().namespace = Some(ns.to_string());
        }
    }
    let mut warnings = Vec::new();
    if errors.is_empty() {
        let stored = |kind: Kind, ns: &str, name: &str| store.get(kind, ns, name).ok().flatten();
        let report = coffer_api::references::check_set(&all, &stored);
        errors = report.errors;
        warnings = report.warnings;
    }
    if !errors.is_empty() {
        let msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "nothing was applied; fix these manifests first:\n{}",
            msg.join("\n")
        );
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut applied = Vec::new();
    for l in all {
        let r = l.resource;
        let outcome = store.apply(r.clone())?;
        println!(
            "{}/{} {}",
            r.kind().as_str().to_ascii_lowercase(),
            r.name(),
            outcome.as_str()
        );
        applied.push(r);
    }
    Ok(applied)
}

fn get(
    store: &Store,
    kind: &str,
    name: Option<&str>,
    format: Format,
    ns: &str,
    all_namespaces: bool,
) -> Result<()> {
    let kind = parse_kind(kind)?;
    let items = match name {
        Some(n) => vec![must_get(store, kind, ns, n)?],
        None => store.list(kind, if all_namespaces { None } else { Some(ns) })?,
    };
    match format {
        Format::Table => {
            if items.is_empty() {
                eprintln!("No resources found in {ns} namespace.");
            } else {
                print!("{}", output::table(kind, &items, all_namespaces));
            }
        }
        Format::Json | Format::Yaml => {
            let values: Vec<serde_json::Value> = items.iter().map(output::printable).collect();
            let v = if name.is_some() {
                values.into_iter().next().unwrap_or_default()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
            };
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", serde_yaml::to_string(&v)?);
            }
        }
    }
    Ok(())
}

fn backup(store: &Store, home: &Path, ns: &str, bc: &str, wait: bool) -> Result<i32> {
    let Resource::BackupConfiguration(config) = must_get(store, Kind::BackupConfiguration, ns, bc)?
    else {
        unreachable!("kind checked")
    };
    let bs = coffer_platform::local::server::create_backup_session(store, &config, None)
        .map_err(|e| anyhow!(e))?;
    let name = bs.metadata.name.clone();
    println!("backupsession/{name} created");
    if !wait && home::server_running(home) {
        return Ok(0);
    }
    wait_session(store, home, Kind::BackupSession, ns, &name, Duration::MAX)
}

/// Runs a claimed session as a child agent, supervised as the server does (timeOut,
/// interruption), with its log kept, and waits for it.
fn run_here(store: &Store, home: &Path, kind: Kind, ns: &str, name: &str) -> Result<Resource> {
    let timeout = match must_get(store, kind, ns, name)? {
        Resource::BackupSession(bs) => {
            match store.get(Kind::BackupConfiguration, ns, &bs.spec.invoker.name)? {
                Some(Resource::BackupConfiguration(bc)) => bc.spec.time_out,
                _ => None,
            }
        }
        Resource::RestoreSession(rs) => rs.spec.time_out,
        other => bail!("{} is not a session", other.display_name()),
    };
    let timeout = timeout.and_then(|t| coffer_api::duration::parse(&t).ok());
    let exe = std::env::current_exe().context("cannot find the coffer executable")?;
    let pushgateway = engine_config().pushgateway;
    let mut agent = coffer_platform::local::runner::spawn(
        &exe,
        home,
        kind,
        ns,
        name,
        pushgateway.as_deref(),
        timeout,
    )
    .context("cannot start the session's process")?;
    let log = coffer_platform::local::runner::log_path(home, kind, ns, name);
    let mut shown = 0u64;
    loop {
        shown = echo_log(&log, shown);
        // The server's supervision step: past its timeOut the agent's process session is
        // killed and the session marked Failed (DeadlineExceeded); an agent that ended without
        // a final status fails it as interrupted.
        if lifecycle::supervise_agent(store, pushgateway.as_deref(), &mut agent) {
            echo_log(&log, shown);
            return must_get(store, kind, ns, name);
        }
        // Short: the command returns this late after the session ends.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies what the session log gained since `from` to stderr; returns the new offset.
fn echo_log(path: &Path, from: u64) -> u64 {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return from;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut buf = Vec::new();
    let n = f.read_to_end(&mut buf).unwrap_or(0) as u64;
    eprint!("{}", String::from_utf8_lossy(&buf));
    from + n
}

fn session_phase(r: &Resource) -> Option<SessionPhase> {
    match r {
        Resource::BackupSession(b) => b.status.as_ref().and_then(|s| s.phase),
        Resource::RestoreSession(x) => x.status.as_ref().and_then(|s| s.phase),
        _ => None,
    }
}

fn session_error(r: &Resource) -> Option<String> {
    match r {
        Resource::BackupSession(b) => b.status.as_ref().and_then(|s| s.error.clone()),
        Resource::RestoreSession(x) => x.status.as_ref().and_then(|s| s.error.clone()),
        _ => None,
    }
}

/// Waits until a session is final. With no server running, a Pending session is run here,
/// and so is the retry `reconcile` asks for when it fails (as a server would).
fn wait_session(
    store: &Store,
    home: &Path,
    kind: Kind,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<i32> {
    let start = Instant::now();
    let mut name = name.to_string();
    let mut pending_since: Option<Instant> = None;
    let mut due = None;
    loop {
        let r = must_get(store, kind, ns, &name)?;
        let ph = session_phase(&r).unwrap_or_default();
        let r = if ph == SessionPhase::Pending {
            let since = *pending_since.get_or_insert_with(Instant::now);
            // A server picks sessions up within a second or two; without one, run it here.
            let server = home::server_running(home);
            if !server || since.elapsed() > Duration::from_secs(30) {
                let ran = match lifecycle::start_pending(store, kind, ns, &name) {
                    Start::Claimed => Some(run_here(store, home, kind, ns, &name)?),
                    Start::Skipped => Some(must_get(store, kind, ns, &name)?),
                    Start::Lost => None,
                };
                if ran.is_some() {
                    due = lifecycle::finished(store, home, kind, ns, &name);
                }
                ran
            } else {
                None
            }
        } else {
            ph.is_final().then_some(r)
        };
        if let Some(r) = r {
            let ph = session_phase(&r).unwrap_or_default();
            if ph.is_final() {
                println!("{}/{name} {ph}", kind.as_str().to_ascii_lowercase());
                if ph == SessionPhase::Succeeded {
                    return Ok(0);
                }
                if let Some(e) = session_error(&r) {
                    eprintln!("reason: {e}");
                }
                if let Some(d) = due.take() {
                    if let Some(next) = retry_here(store, home, ns, &name, d, start, timeout) {
                        name = next;
                        pending_since = None;
                        continue;
                    }
                }
                return Ok(1);
            }
        }
        if start.elapsed() > timeout {
            bail!("{kind} {ns}/{name} is still {ph} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Carries out the retry of a failed session this process ran, when it is due (waiting for it
/// if that fits in the wait's timeout). Returns the retry session's name, or None when there
/// is none (after saying why).
fn retry_here(
    store: &Store,
    home: &Path,
    ns: &str,
    name: &str,
    due: lifecycle::RetryDue,
    start: Instant,
    timeout: Duration,
) -> Option<String> {
    let wait =
        Duration::try_from(due.at.duration_since(jiff::Timestamp::now())).unwrap_or_default();
    if home::server_running(home) {
        // A server started meanwhile: it retries; this wait ends with this session.
        return None;
    }
    if start.elapsed().saturating_add(wait) > timeout {
        eprintln!(
            "its retry is due at {}, after this wait's timeout; a coffer server would run it",
            due.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        return None;
    }
    if !wait.is_zero() {
        println!(
            "retrying in {} (retryConfig.delay)",
            coffer_api::duration::format(wait)
        );
        std::thread::sleep(wait);
    }
    match lifecycle::retry_session(store, ns, name, due) {
        lifecycle::Retried::Created(new) => {
            println!(
                "backupsession/{name} is retried as backupsession/{} ({} retries left after it)",
                new.metadata.name, due.retry_left
            );
            Some(new.metadata.name)
        }
        lifecycle::Retried::Later(_) | lifecycle::Retried::NotDone => None,
    }
}

fn open_repo(store: &Store, ns: &str, name: &str) -> Result<coffer_repo::Repo> {
    let r = match must_get(store, Kind::Repository, ns, name)? {
        Resource::Repository(r) => r,
        _ => unreachable!(),
    };
    let access = coffer_engine::resolve::repo_access(store, &r, LocalMount::Host)?;
    let repo = coffer_repo::Repo::open(access.store, &access.password)
        .map_err(|e| anyhow!("Repository {ns}/{name}: {e}"))?;
    Ok(repo)
}

fn snapshots(store: &Store, ns: &str, name: &str, format: Format) -> Result<i32> {
    let repo = open_repo(store, ns, name)?;
    let snaps = repo
        .snapshots()
        .map_err(|e| anyhow!("Repository {ns}/{name}: {e}"))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&snaps)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&snaps)?),
        Format::Table => {
            let header: Vec<String> = ["ID", "TIME", "HOST", "PATHS", "SIZE", "TAGS"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let rows: Vec<Vec<String>> = snaps
                .iter()
                .map(|s| {
                    vec![
                        s.short_id.clone(),
                        s.time.clone(),
                        s.hostname.clone(),
                        s.paths.join(","),
                        if s.total_bytes > 0 {
                            coffer_engine::format::size(s.total_bytes)
                        } else {
                            "-".into()
                        },
                        s.tags.join(","),
                    ]
                })
                .collect();
            print!("{}", output::render(&header, &rows));
        }
    }
    Ok(0)
}

/// `--subset`: `N/M`, or `daily/M` for today's slice of a period of M days.
fn parse_subset(s: &str) -> Result<coffer_repo::DataSubset> {
    if let Some(m) = s.strip_prefix("daily/") {
        let m: u32 =
            m.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                anyhow!("--subset {s}: daily/M needs a period M of at least 1 day")
            })?;
        return Ok(coffer_repo::DataSubset::today(m));
    }
    coffer_repo::DataSubset::parse(s).map_err(|e| anyhow!("--subset: {e}"))
}

fn check(
    store: &Store,
    ns: &str,
    name: &str,
    read_data: bool,
    subset: Option<&str>,
    format: Format,
) -> Result<i32> {
    let Resource::Repository(r) = must_get(store, Kind::Repository, ns, name)? else {
        unreachable!("kind checked")
    };
    let subset = match (read_data, subset) {
        (_, Some(s)) => Some(parse_subset(s)?),
        (true, None) => Some(coffer_repo::DataSubset::ALL),
        (false, None) => None,
    };
    let out = coffer_engine::check::run_check(store, &r, subset, LocalMount::Host)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&out)?),
        Format::Table => print!("{}", check_text(ns, name, &out)),
    }
    Ok(if out.healthy() { 0 } else { 1 })
}

fn verify(store: &Store, ns: &str, name: &str, format: Format) -> Result<i32> {
    must_get(store, Kind::BackupConfiguration, ns, name)?;
    verify_in(store, ns, name, format, LocalMount::Host)
}

/// `coffer verify` through `cat` (the local store, or the API in a pod): prints the outcome;
/// exit 1 when the verification failed.
pub fn verify_in(
    cat: &dyn coffer_engine::Catalog,
    ns: &str,
    name: &str,
    format: Format,
    at: LocalMount,
) -> Result<i32> {
    let pushgateway = engine_config().pushgateway;
    let st = coffer_engine::verify::run_verification(cat, ns, name, pushgateway.as_deref(), at)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&st)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&st)?),
        Format::Table => {
            println!(
                "verification of BackupConfiguration {ns}/{name}: {}",
                st.phase.map(|p| format!("{p:?}")).unwrap_or_default()
            );
            if let Some(s) = &st.snapshot {
                println!("snapshot {s}");
            }
            if let Some(r) = st.recovery_seconds {
                println!("recovery time {r:.1}s");
            }
            if let Some(p) = &st.point_in_time {
                println!(
                    "replayed to {} (last transaction at {})",
                    p.reached_gtid
                        .as_ref()
                        .map(|g| g.to_string())
                        .unwrap_or_default(),
                    p.last_transaction_time.as_deref().unwrap_or("-")
                );
            }
            for c in &st.conditions {
                println!("{} {}: {}", c.type_, c.status, c.message);
            }
            if let Some(r) = &st.reason {
                println!("failed: {r}");
            }
        }
    }
    Ok(
        if st.phase == Some(coffer_api::backup::SessionPhase::Succeeded) {
            0
        } else {
            1
        },
    )
}

fn check_text(ns: &str, name: &str, out: &coffer_engine::check::CheckOutcome) -> String {
    let mut t = String::new();
    if let Some(d) = &out.data {
        t.push_str(&format!(
            "read {} of {} pack(s) (subset {}), {}\n",
            d.packs_read,
            d.packs_total,
            d.subset,
            coffer_engine::format::size(d.bytes_read)
        ));
        for p in &d.damaged {
            t.push_str(&format!("damaged pack {}: {}\n", p.id, p.reason));
            if p.snapshots.is_empty() {
                t.push_str("  no snapshot depends on its damaged blobs\n");
            }
            for s in &p.snapshots {
                t.push_str(&format!("  snapshot {s} depends on it\n"));
            }
        }
        if let Some(r) = &out.removal {
            t.push_str(&format!(
                "removed {} damaged pack(s) from the repository: {} intact blob(s) salvaged, {} \
                 lost; the next backup writes the lost blobs again\n",
                r.packs_removed.len(),
                r.blobs_salvaged,
                r.blobs_dropped
            ));
        }
    }
    for p in &out.problems {
        t.push_str(&format!("structural check: {p}\n"));
    }
    if out.healthy() {
        t.push_str(&format!("Repository {ns}/{name}: no errors were found\n"));
    } else {
        t.push_str(&format!(
            "Repository {ns}/{name} is damaged: {}\n",
            out.reason()
        ));
    }
    t
}

fn unlock(store: &Store, ns: &str, name: &str, all: bool) -> Result<i32> {
    let repo = open_repo(store, ns, name)?;
    let removed = repo
        .unlock(all)
        .map_err(|e| anyhow!("Repository {ns}/{name}: {e}"))?;
    if removed.is_empty() {
        println!("no {}locks to remove", if all { "" } else { "stale " });
    }
    for r in removed {
        println!("removed {r}");
    }
    Ok(0)
}
