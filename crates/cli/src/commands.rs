//! The verbs. Each is a thin layer over the store (platform) and the engine.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use coffer_api::{
    backup::{phase, BackupSession, BackupSessionSpec, Invoker},
    meta::{ObjectMeta, OwnerReference},
    parse_manifests, Kind, Resource,
};
use coffer_platform::local::Store;

use crate::{home, output, Cli, Command, Format};

pub fn run(cli: Cli) -> Result<i32> {
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
    }
}

fn parse_kind(s: &str) -> Result<Kind> {
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

/// Parses everything first and applies nothing unless every manifest is valid.
fn apply(store: &Store, files: &[String], ns: &str) -> Result<Vec<Resource>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (source, text) in read_sources(files)? {
        match parse_manifests(&text, &source) {
            Ok(rs) => all.extend(rs),
            Err(es) => errors.extend(es),
        }
    }
    if !errors.is_empty() {
        let msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "nothing was applied; fix these manifests first:\n{}",
            msg.join("\n")
        );
    }
    let mut applied = Vec::new();
    for mut r in all {
        if !r.kind().cluster_scoped() && r.meta().namespace.is_none() {
            r.meta_mut().namespace = Some(ns.to_string());
        }
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

/// Creates a BackupSession for a BackupConfiguration, named and labelled as Stash does.
fn new_backup_session(store: &Store, ns: &str, bc_name: &str) -> Result<BackupSession> {
    let bc = match must_get(store, Kind::BackupConfiguration, ns, bc_name)? {
        Resource::BackupConfiguration(bc) => bc,
        _ => unreachable!("kind checked"),
    };
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("app.kubernetes.io/managed-by".into(), "coffer".into());
    labels.insert(
        "stash.appscode.com/invoker-type".into(),
        "BackupConfiguration".into(),
    );
    labels.insert("stash.appscode.com/invoker-name".into(), bc_name.into());
    let ts = jiff::Timestamp::now().as_second();
    let mut attempt = 0;
    loop {
        let name = if attempt == 0 {
            format!("{bc_name}-{ts}")
        } else {
            format!("{bc_name}-{ts}-{attempt}")
        };
        let bs = BackupSession {
            api_version: Kind::BackupSession.api_version().into(),
            kind: Kind::BackupSession.as_str().into(),
            metadata: ObjectMeta {
                name,
                namespace: Some(ns.into()),
                labels: labels.clone(),
                owner_references: vec![OwnerReference {
                    api_version: Kind::BackupConfiguration.api_version().into(),
                    kind: "BackupConfiguration".into(),
                    name: bc_name.into(),
                    uid: bc.metadata.uid.clone(),
                    controller: Some(true),
                }],
                ..Default::default()
            },
            spec: BackupSessionSpec {
                invoker: Invoker {
                    api_group: "stash.appscode.com".into(),
                    kind: "BackupConfiguration".into(),
                    name: bc_name.into(),
                },
                retry_left: None,
            },
            status: None,
        };
        match store.create(Resource::BackupSession(bs)) {
            Ok(Resource::BackupSession(bs)) => return Ok(bs),
            Ok(_) => unreachable!(),
            Err(coffer_platform::local::StoreError::Exists(_)) if attempt < 100 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

fn backup(store: &Store, home: &Path, ns: &str, bc: &str, wait: bool) -> Result<i32> {
    let bs = new_backup_session(store, ns, bc)?;
    let name = bs.metadata.name.clone();
    println!("backupsession/{name} created");
    if !wait && home::server_running(home) {
        return Ok(0);
    }
    wait_session(store, home, Kind::BackupSession, ns, &name, Duration::MAX)
}

/// Runs a claimed session here, in this process.
fn run_here(store: &Store, kind: Kind, ns: &str, name: &str) -> Result<Resource> {
    let r = must_get(store, kind, ns, name)?;
    Ok(match r {
        Resource::BackupSession(bs) => Resource::BackupSession(coffer_engine::run_backup(
            store,
            bs,
            &coffer_engine::EngineConfig::default(),
        )),
        Resource::RestoreSession(rs) => Resource::RestoreSession(coffer_engine::run_restore(
            store,
            rs,
            &coffer_engine::EngineConfig::default(),
        )),
        other => bail!("{} is not a session", other.display_name()),
    })
}

fn session_phase(r: &Resource) -> Option<String> {
    match r {
        Resource::BackupSession(b) => b.status.as_ref().and_then(|s| s.phase.clone()),
        Resource::RestoreSession(x) => x.status.as_ref().and_then(|s| s.phase.clone()),
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

/// Waits until a session is final. With no server running, a Pending session is run here.
fn wait_session(
    store: &Store,
    home: &Path,
    kind: Kind,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<i32> {
    let start = Instant::now();
    let mut pending_since: Option<Instant> = None;
    loop {
        let r = must_get(store, kind, ns, name)?;
        let ph = session_phase(&r).unwrap_or_default();
        let r = if ph.is_empty() || ph == phase::PENDING {
            let since = *pending_since.get_or_insert_with(Instant::now);
            // A server picks sessions up within a second or two; without one, run it here.
            let server = home::server_running(home);
            if (!server || since.elapsed() > Duration::from_secs(30))
                && store.claim_session(kind, ns, name)?
            {
                Some(run_here(store, kind, ns, name)?)
            } else {
                None
            }
        } else {
            phase::is_final(&ph).then_some(r)
        };
        if let Some(r) = r {
            let ph = session_phase(&r).unwrap_or_default();
            if phase::is_final(&ph) {
                println!("{}/{name} {ph}", kind.as_str().to_ascii_lowercase());
                if ph == phase::SUCCEEDED {
                    return Ok(0);
                }
                if let Some(e) = session_error(&r) {
                    eprintln!("reason: {e}");
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

fn open_repo(store: &Store, ns: &str, name: &str) -> Result<coffer_repo::Repo> {
    let r = match must_get(store, Kind::Repository, ns, name)? {
        Resource::Repository(r) => r,
        _ => unreachable!(),
    };
    let access = coffer_engine::resolve::repo_access(store, &r)?;
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
