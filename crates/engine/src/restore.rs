//! One RestoreSession: pick the snapshot, stream it into the target database.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use coffer_api::{
    backup::{condition as cond, SessionPhase},
    meta::set_condition,
    restore::{HostRestoreStats, RestoreSession, RestoreSessionStatus},
    Resource,
};
use coffer_db::{ClientFiles, Clients, LoadSink};
use coffer_repo::{Repo, SnapshotSelector};

use crate::{
    backup::{client_args, db_wait, name_repo, repo_err, repo_vars, DUMP_PATH},
    catalog::Catalog,
    clock,
    error::{EngineError, EngineResult},
    format,
    patch::StatusWriter,
    progress::Progress,
    resolve,
    tasks::{self, Builtin, Direction, Step},
    EngineConfig,
};

/// Runs a RestoreSession to its end and returns it with its final status.
pub fn run_restore(
    cat: &dyn Catalog,
    mut rs: RestoreSession,
    cfg: &EngineConfig,
) -> RestoreSession {
    let started = Instant::now();
    let mut out = StatusWriter::new(cat, Resource::RestoreSession(rs.clone()));
    {
        let st = rs.status_mut();
        st.phase = Some(SessionPhase::Running);
        st.total_hosts = Some(1);
        st.error = None;
        cfg.executor.record(&mut st.agent_pid, &mut st.executor_pod);
    }
    let replicas = rs
        .spec
        .target
        .as_ref()
        .and_then(|t| t.replicas)
        .unwrap_or(1)
        .max(1) as u32;
    match cfg.replica {
        // Every replica's Job writes the same session: each records only its own part, over
        // the stored status (read again on a conflict), so that none undoes another's.
        Some(_) => {
            let mine = rs.status.clone().unwrap_or_default();
            update_restore_status(cat, &rs, &mut |stored| {
                if stored.phase != Some(SessionPhase::Failed) {
                    stored.phase = Some(SessionPhase::Running);
                }
                stored.total_hosts = Some(replicas as i32);
                stored.agent_pid = mine.agent_pid;
                stored.executor_pod = mine.executor_pod.clone();
            });
        }
        None => {
            out.write(Resource::RestoreSession(rs.clone()));
        }
    }
    let hooks = rs.spec.hooks.clone().unwrap_or_default();
    let env = hook_env(&rs);
    let now = clock::now();
    // Hooks the platform cannot run refuse the session before anything runs.
    let refused = crate::hooks::check(
        &cfg.hook_exec,
        &[
            ("preRestore", hooks.pre_restore.as_ref()),
            ("postRestore", hooks.post_restore.as_ref()),
        ],
    )
    .map_err(|e| EngineError::Step(format!("nothing was restored: {e}")));
    let runs_hooks = refused.is_ok();
    let pre = match &hooks.pre_restore {
        _ if refused.is_err() => refused,
        None => Ok(()),
        Some(h) => match crate::hooks::run("preRestore", h, &env, &cfg.hook_exec, target_of(&rs)) {
            Ok(m) => {
                set_condition(
                    &mut rs.status_mut().conditions,
                    cond::PRE_RESTORE_HOOK_EXECUTION_SUCCEEDED,
                    true,
                    "SuccessfullyExecutedPreRestoreHook",
                    &m,
                    &now,
                );
                Ok(())
            }
            Err(e) => {
                set_condition(
                    &mut rs.status_mut().conditions,
                    cond::PRE_RESTORE_HOOK_EXECUTION_SUCCEEDED,
                    false,
                    "FailedToExecutePreRestoreHook",
                    &e.to_string(),
                    &now,
                );
                Err(EngineError::Step(format!(
                    "the preRestore hook failed, so nothing was restored: {e}"
                )))
            }
        },
    };
    let result = pre.and_then(|_| execute(cat, &mut rs, started, cfg));
    let host = match cfg.replica {
        Some(o) => replica_host(&rs_host(&rs), o),
        None => rs_host(&rs),
    };
    let duration = coffer_api::duration::format(Duration::from_secs(started.elapsed().as_secs()));
    let mut ok = result.is_ok();
    {
        let st = rs.status_mut();
        match result {
            Ok(stats) => {
                st.total_hosts = Some(stats.len() as i32);
                st.stats = stats;
            }
            Err(e) => {
                let full = e.to_string();
                tracing::error!("restore session failed: {full}");
                let msg = crate::error::status_reason(&full);
                st.error = Some(msg.clone());
                st.stats = vec![HostRestoreStats {
                    hostname: host,
                    phase: Some(SessionPhase::Failed),
                    duration: Some(duration.clone()),
                    error: Some(msg),
                    ..Default::default()
                }];
            }
        }
    }
    if let Some(h) = hooks.post_restore.as_ref().filter(|_| runs_hooks) {
        if crate::hooks::should_run_post(h, ok, true) {
            let now = clock::now();
            match crate::hooks::run("postRestore", h, &env, &cfg.hook_exec, target_of(&rs)) {
                Ok(m) => set_condition(
                    &mut rs.status_mut().conditions,
                    cond::POST_RESTORE_HOOK_EXECUTION_SUCCEEDED,
                    true,
                    "SuccessfullyExecutedPostRestoreHook",
                    &m,
                    &now,
                ),
                Err(e) => {
                    ok = false;
                    let msg = e.to_string();
                    set_condition(
                        &mut rs.status_mut().conditions,
                        cond::POST_RESTORE_HOOK_EXECUTION_SUCCEEDED,
                        false,
                        "FailedToExecutePostRestoreHook",
                        &msg,
                        &now,
                    );
                    let st = rs.status_mut();
                    st.error.get_or_insert(crate::error::status_reason(&format!(
                        "the postRestore hook failed: {msg}"
                    )));
                }
            }
        }
    }
    let st = rs.status_mut();
    st.phase = Some(if ok {
        SessionPhase::Succeeded
    } else {
        SessionPhase::Failed
    });
    st.session_duration = Some(duration);
    if let Some(url) = cfg.pushgateway.as_deref().filter(|u| !u.is_empty()) {
        let mut m = crate::metrics::Metrics::new();
        crate::metrics::restore_session(&mut m, &rs);
        let job =
            crate::metrics::job_name("RestoreSession", rs.metadata.namespace(), &rs.metadata.name);
        let (pushed, reason, msg) = crate::metrics::push_outcome(url, &job, &m);
        set_condition(
            &mut rs.status_mut().conditions,
            cond::METRICS_PUSHED,
            pushed,
            reason,
            &msg,
            &clock::now(),
        );
    }
    match cfg.replica {
        // The replica's own outcome is returned (its Job succeeds or fails by it); the
        // session's phase is Succeeded only once every replica has.
        Some(_) => {
            let mine = rs.status.clone().unwrap_or_default();
            update_restore_status(cat, &rs, &mut |stored| {
                merge_replica_status(stored, &mine, replicas)
            });
        }
        None => {
            if !out.write(Resource::RestoreSession(rs.clone())) {
                tracing::error!("cannot record the session's final status");
            }
        }
    }
    rs
}

fn update_restore_status(
    cat: &dyn Catalog,
    rs: &RestoreSession,
    change: &mut dyn FnMut(&mut RestoreSessionStatus),
) {
    crate::catalog::update_status(
        cat,
        coffer_api::Kind::RestoreSession,
        rs.metadata.namespace(),
        &rs.metadata.name,
        &mut |r| {
            if let Resource::RestoreSession(stored) = r {
                change(stored.status_mut());
            }
        },
    );
}

/// The stats hostname of one replica of a cluster restore.
fn replica_host(host: &str, ordinal: u32) -> String {
    format!("{host}-replica-{ordinal}")
}

/// Folds one replica's outcome (`mine`) into the session's stored status: its host stats
/// replace any earlier ones of the same host, its conditions those of the same type, its
/// error is kept; the phase is Failed if any replica failed, Succeeded once all `replicas`
/// have, Running until then.
pub fn merge_replica_status(
    stored: &mut RestoreSessionStatus,
    mine: &RestoreSessionStatus,
    replicas: u32,
) {
    stored
        .stats
        .retain(|h| !mine.stats.iter().any(|m| m.hostname == h.hostname));
    stored.stats.extend(mine.stats.iter().cloned());
    stored.stats.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    for c in &mine.conditions {
        stored.conditions.retain(|s| s.type_ != c.type_);
        stored.conditions.push(c.clone());
    }
    if mine.error.is_some() {
        stored.error = mine.error.clone();
    }
    stored.total_hosts = Some(replicas as i32);
    stored.session_duration = mine.session_duration.clone();
    let failed = stored.phase == Some(SessionPhase::Failed)
        || mine.phase == Some(SessionPhase::Failed)
        || stored
            .stats
            .iter()
            .any(|h| h.phase == Some(SessionPhase::Failed));
    let succeeded = stored
        .stats
        .iter()
        .filter(|h| h.phase == Some(SessionPhase::Succeeded))
        .count();
    stored.phase = Some(if failed {
        SessionPhase::Failed
    } else if succeeded >= replicas as usize {
        SessionPhase::Succeeded
    } else {
        SessionPhase::Running
    });
}

/// The replicas this run restores: all of them, or the one the platform asked for.
fn replica_ordinals(
    replicas: u32,
    only: Option<u32>,
    label: &str,
) -> EngineResult<std::ops::Range<u32>> {
    match only {
        None => Ok(0..replicas),
        Some(o) if o < replicas => Ok(o..o + 1),
        Some(o) => Err(EngineError::Invalid {
            resource: label.into(),
            message: format!(
                "replica {o} was asked for (POD_ORDINAL), but spec.target.replicas is {replicas}"
            ),
        }),
    }
}

/// The AppBinding an exec hook runs in the pod of, on a platform that runs it there.
fn target_of(rs: &RestoreSession) -> Option<crate::hooks::Target<'_>> {
    let t = rs.spec.target.as_ref()?;
    let ns = t
        .ref_
        .namespace
        .as_deref()
        .unwrap_or(rs.metadata.namespace());
    Some((ns, t.ref_.name.as_str()))
}

fn hook_env(rs: &RestoreSession) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("NAMESPACE".into(), rs.metadata.namespace().to_string());
    env.insert("RESTORE_SESSION".into(), rs.metadata.name.clone());
    if let Some(t) = &rs.spec.target {
        env.insert("TARGET_NAME".into(), t.ref_.name.clone());
    }
    env
}

fn rs_host(rs: &RestoreSession) -> String {
    rs.spec
        .target
        .as_ref()
        .and_then(|t| t.alias.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "host-0".into())
}

fn execute(
    cat: &dyn Catalog,
    rs: &mut RestoreSession,
    started: Instant,
    cfg: &EngineConfig,
) -> EngineResult<Vec<HostRestoreStats>> {
    let ns = rs.metadata.namespace().to_string();
    let label = format!("RestoreSession {ns}/{}", rs.metadata.name);
    // A point-in-time restore takes its base backup and segments from the archive's
    // repository.
    let pitr = match rs.spec.point_in_time() {
        Some(p) => Some(crate::pitr_restore::resolve(cat, rs, p, &label)?),
        None => None,
    };
    let (repo_ns, repo_name) = match &pitr {
        Some(a) => (
            a.repository.namespace.clone().unwrap_or(ns.clone()),
            a.repository.name.clone(),
        ),
        None => (
            rs.spec.repository.namespace.clone().unwrap_or(ns.clone()),
            rs.spec.repository.name.clone(),
        ),
    };
    let repo_res = resolve::get_repository(
        cat,
        &repo_ns,
        &repo_name,
        &format!("spec.repository of {label}"),
    )?;
    let access = resolve::repo_access(cat, &repo_res, cfg.local_mount)?;
    let target = rs.spec.target.clone().ok_or_else(|| EngineError::Invalid {
        resource: label.clone(),
        message: "spec.target is required".into(),
    })?;
    let ab = resolve::get_appbinding(
        cat,
        &ns,
        &target.ref_,
        &format!("spec.target.ref of {label}"),
    )?;
    let conn = resolve::conn_spec(cat, &ab)?;
    let host = rs_host(rs);
    let rule = rs.spec.rule_for(&host).cloned().unwrap_or_default();
    let selector = SnapshotSelector {
        snapshot: rule
            .snapshots
            .first()
            .cloned()
            .unwrap_or_else(|| "latest".into()),
        host: rule
            .source_host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| target.alias.clone().filter(|a| !a.is_empty())),
        path: Some(DUMP_PATH.into()),
    };
    let mut vars = BTreeMap::new();
    vars.insert("NAMESPACE".into(), ns.clone());
    vars.insert("RESTORE_SESSION".into(), rs.metadata.name.clone());
    vars.insert("INVOKER_KIND".into(), "RestoreSession".into());
    vars.insert("INVOKER_NAME".into(), rs.metadata.name.clone());
    vars.insert("HOSTNAME".into(), host.clone());
    vars.insert(
        "SOURCE_HOSTNAME".into(),
        rule.source_host.clone().unwrap_or_default(),
    );
    vars.insert("RESTORE_SNAPSHOTS".into(), rule.snapshots.join(","));
    vars.insert("TARGET_NAME".into(), ab.metadata.name.clone());
    vars.insert(
        "TARGET_NAMESPACE".into(),
        ab.metadata.namespace().to_string(),
    );
    vars.insert("TARGET_KIND".into(), "AppBinding".into());
    vars.insert(
        "TARGET_APP_REPLICAS".into(),
        target.replicas.unwrap_or(1).to_string(),
    );
    repo_vars(&mut vars, &repo_res, &access);
    let name = tasks::task_name(
        &rs.spec.task,
        ab.spec.parameters.as_ref(),
        Direction::Restore,
    );
    let mut task = tasks::resolve(
        cat,
        &name,
        &rs.spec.task.params,
        Direction::Restore,
        &vars,
        &label,
    )?;

    let repo =
        Repo::open(access.store.clone(), &access.password).map_err(|e| repo_err(&repo_res, e))?;
    // Held to the end of the restore, as restic's restore holds one: prune (coffer's retention,
    // restic's) needs the repository exclusively, so no pack this restore reads goes away.
    let _lock = repo.lock(false).map_err(|e| repo_err(&repo_res, e))?;
    let mut stats = HostRestoreStats {
        hostname: host.clone(),
        ..Default::default()
    };
    let mut volume_root = false;
    if cfg.data_dir_from_volume_mounts && task.param("dataDir").is_none_or(str::is_empty) {
        if let Some(path) = target
            .volume_mounts
            .first()
            .and_then(|m| m.get("mountPath"))
            .and_then(|p| p.as_str())
        {
            task.params.insert("dataDir".into(), path.to_string());
            volume_root = true;
        }
    }
    let physical = task.param("dataDir").is_some_and(|d| !d.is_empty());
    let mut selector = selector;
    if physical {
        selector.path = Some(crate::physical::STREAM_PATH.into());
    }
    let planned = match &pitr {
        Some(archive) => {
            let kind = if physical {
                crate::pitr_restore::BaseKind::Physical
            } else if task.typed.method == Some(coffer_api::params::Method::Native) {
                crate::pitr_restore::BaseKind::Native
            } else {
                crate::pitr_restore::BaseKind::Logical
            };
            let snapshots = repo.snapshots().map_err(|e| repo_err(&repo_res, e))?;
            let named = rule
                .snapshots
                .first()
                .filter(|s| !s.is_empty() && s.as_str() != "latest")
                .map(String::as_str);
            let bases = crate::pitr_restore::bases(
                &snapshots,
                &crate::pitr_restore::app_of(archive),
                kind,
                named,
            );
            let store = crate::pitr_restore::store(&repo, archive);
            let planned = crate::pitr_restore::plan(
                store,
                &archive.target,
                &bases,
                &label,
                "spec.target.pointInTime",
            )
            .map_err(|e| name_repo(&repo_res, e))?;
            // The base is the plan's, whatever host or "latest" the rule says.
            selector.snapshot = planned.plan.base.snapshot.clone();
            selector.host = None;
            Some(planned)
        }
        None => None,
    };
    let mut native_selector = selector.clone();
    native_selector.path = Some(coffer_db::native::DIR.into());
    // A native snapshot is restored natively when asked to, or when it is the only kind the
    // selector finds; decided once, not per step.
    let native = !physical
        && (task.typed.method == Some(coffer_api::params::Method::Native)
            || (repo.find(&native_selector).is_ok() && repo.find(&selector).is_err()));
    let mut replica_stats = Vec::new();
    for step in &task.steps {
        tracing::info!("step {}", step.function());
        match step {
            Step::Builtin {
                builtin: Builtin::LogicalRestore,
                ..
            } if physical => {
                let snap = repo.find(&selector).map_err(|e| repo_err(&repo_res, e))?;
                let galera = snap
                    .paths
                    .iter()
                    .any(|p| p == crate::physical::POSITION_PATH)
                    || snap.tags.iter().any(|t| t == "method=galera-sst");
                let replicas = target.replicas.unwrap_or(1).max(1) as u32;
                let ordinals = replica_ordinals(replicas, cfg.replica, &label)?;
                // One replica per run has its own data directory: no ${POD_ORDINAL} needed.
                let dirs = if cfg.replica.is_some() { 1 } else { replicas };
                let mut plan =
                    crate::physical::PhysicalRestore::from_task(&task, dirs, galera, &label)?;
                plan.volume_root = volume_root;
                for ordinal in ordinals {
                    let t0 = Instant::now();
                    let crate::physical::RestoredReplica {
                        dir,
                        bytes,
                        position: pos,
                    } = crate::physical::restore_replica_then(
                        &repo,
                        &snap.id,
                        &plan,
                        ordinal,
                        &label,
                        &|dir| match &planned {
                            Some(p) => crate::pitr_restore::replay_relay(p, dir, &label),
                            None => Ok(()),
                        },
                    )
                    .map_err(|e| name_repo(&repo_res, e))?;
                    tracing::info!(
                        "replica {ordinal}: {} prepared in {}{}",
                        dir.display(),
                        format::size(bytes),
                        pos.map(|(u, s)| format!(", Galera position {u}:{s}"))
                            .unwrap_or_default()
                    );
                    replica_stats.push(HostRestoreStats {
                        hostname: replica_host(&host, ordinal),
                        phase: Some(SessionPhase::Succeeded),
                        duration: Some(coffer_api::duration::format(t0.elapsed())),
                        snapshot: Some(snap.id.clone()),
                        restored_bytes: Some(bytes),
                        ..Default::default()
                    });
                }
            }
            Step::Builtin {
                builtin: Builtin::LogicalRestore,
                ..
            } if native => {
                let snap = repo
                    .find(&native_selector)
                    .map_err(|e| repo_err(&repo_res, e))?;
                tracing::info!(
                    "restoring native snapshot {} into {}",
                    snap.short_id,
                    conn.label
                );
                let r =
                    crate::native::native_restore(&repo, &snap.id, &conn, &task, db_wait(&task)?)
                        .map_err(|e| name_repo(&repo_res, e))?;
                let pos = [
                    r.position
                        .binlog_file
                        .as_ref()
                        .zip(r.position.binlog_position)
                        .map(|(f, p)| format!("binlog {f}:{p}")),
                    r.position.gtid.as_ref().map(|g| format!("gtid {g}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
                tracing::info!(
                    "loaded {} rows into {} tables ({}); the data is at {}",
                    r.rows,
                    r.tables,
                    format::size(r.bytes),
                    if pos.is_empty() {
                        "an unknown position (binlog off)"
                    } else {
                        &pos
                    }
                );
                stats.snapshot = Some(snap.id.clone());
                stats.restored_bytes = Some(r.bytes);
                stats.restored_rows = Some(r.rows);
                stats.position = (!pos.is_empty()).then_some(pos);
                replay_into(rs, planned.as_ref(), &conn)?;
            }
            Step::Builtin {
                builtin: Builtin::LogicalRestore,
                ..
            } => {
                let snap = repo.find(&selector).map_err(|e| repo_err(&repo_res, e))?;
                tracing::info!(
                    "restoring snapshot {} (host {}, {}) into {}",
                    snap.short_id,
                    snap.hostname,
                    snap.time,
                    conn.label
                );
                let clients = Clients::detect()?;
                let files = Arc::new(ClientFiles::new(&conn, clients.flavor)?);
                coffer_db::ping(&conn, &files, db_wait(&task)?)?;
                let args = client_args(&task, "", coffer_api::clientargs::ClientProgram::Load)?;
                let sink = LoadSink::start(&clients, &conn, files, &args)?;
                let bytes = load(&repo, &snap.id, sink).map_err(|e| name_repo(&repo_res, e))?;
                stats.snapshot = Some(snap.id.clone());
                stats.restored_bytes = Some(bytes);
                tracing::info!("restored {}", format::size(bytes));
                replay_into(rs, planned.as_ref(), &conn)?;
            }
            Step::Builtin { function, .. } => {
                return Err(EngineError::Step(format!(
                    "step `{function}` backs up; it cannot run in a restore session"
                )))
            }
            Step::Exec {
                function,
                command,
                working_dir,
            } => tasks::run_exec(function, command, working_dir.as_deref(), &vars)?,
        }
    }
    if let Some(p) = &planned {
        if !replica_stats.is_empty() {
            rs.status_mut().point_in_time = Some(crate::pitr_restore::status(p));
        }
    }
    if !replica_stats.is_empty() {
        return Ok(replica_stats);
    }
    stats.phase = Some(SessionPhase::Succeeded);
    stats.duration = Some(coffer_api::duration::format(started.elapsed()));
    Ok(vec![stats])
}

/// Replays the archive into the server the base was loaded into, and records how far.
fn replay_into(
    rs: &mut RestoreSession,
    planned: Option<&crate::pitr_restore::Planned>,
    conn: &coffer_db::ConnSpec,
) -> EngineResult<()> {
    let Some(p) = planned else {
        return Ok(());
    };
    let note = crate::pitr_restore::replay_pipe(p, conn)?;
    let mut st = crate::pitr_restore::status(p);
    if let Some(n) = note {
        st.note = Some(match st.note {
            Some(before) => format!("{before}; {n}"),
            None => n,
        });
    }
    rs.status_mut().point_in_time = Some(st);
    Ok(())
}

/// Streams a dump into the client. mysql's own error, when it has one, is the cause to report:
/// a broken pipe on our side only echoes it.
pub(crate) fn load(repo: &Repo, snapshot: &str, sink: LoadSink) -> EngineResult<u64> {
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("restored", counter.clone(), Duration::from_secs(10));
    let mut w = CountingSink {
        sink,
        counter: counter.clone(),
    };
    let dumped = repo.dump(snapshot, DUMP_PATH, &mut w);
    drop(progress);
    let CountingSink { sink, .. } = w;
    match dumped {
        Ok(_) => Ok(sink.finish()?),
        Err(e) => {
            let said = sink.abort();
            if said.is_empty() {
                Err(EngineError::Repo(e))
            } else {
                Err(EngineError::Step(format!(
                    "loading stopped: mysql said: {said}"
                )))
            }
        }
    }
}

struct CountingSink {
    sink: LoadSink,
    counter: Arc<AtomicU64>,
}

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sink.write(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, ph: SessionPhase) -> HostRestoreStats {
        HostRestoreStats {
            hostname: name.into(),
            phase: Some(ph),
            ..Default::default()
        }
    }

    fn status(ph: Option<SessionPhase>, stats: Vec<HostRestoreStats>) -> RestoreSessionStatus {
        RestoreSessionStatus {
            phase: ph,
            stats,
            ..Default::default()
        }
    }

    #[test]
    fn replica_outcomes_fold_into_one_session_status() {
        let (s, f, r) = (
            SessionPhase::Succeeded,
            SessionPhase::Failed,
            SessionPhase::Running,
        );
        // (stored, mine, replicas) -> (phase, hosts)
        let cases = [
            (
                status(Some(r), vec![]),
                status(Some(s), vec![host("h-replica-0", s)]),
                2,
                r,
                vec!["h-replica-0"],
            ),
            (
                status(Some(r), vec![host("h-replica-0", s)]),
                status(Some(s), vec![host("h-replica-1", s)]),
                2,
                s,
                vec!["h-replica-0", "h-replica-1"],
            ),
            (
                status(Some(r), vec![host("h-replica-1", s)]),
                status(Some(f), vec![host("h-replica-0", f)]),
                2,
                f,
                vec!["h-replica-0", "h-replica-1"],
            ),
            // A retried replica replaces its earlier failure, but the session stays Failed.
            (
                status(Some(f), vec![host("h-replica-0", f)]),
                status(Some(s), vec![host("h-replica-0", s)]),
                1,
                f,
                vec!["h-replica-0"],
            ),
        ];
        for (mut stored, mine, replicas, want, hosts) in cases {
            merge_replica_status(&mut stored, &mine, replicas);
            assert_eq!(stored.phase, Some(want));
            let got: Vec<&str> = stored.stats.iter().map(|h| h.hostname.as_str()).collect();
            assert_eq!(got, hosts);
            assert_eq!(stored.total_hosts, Some(replicas as i32));
        }
    }

    #[test]
    fn a_point_in_time_restore_without_its_archive_is_refused_not_run_as_a_snapshot_restore() {
        let cat = crate::catalog::MemoryCatalog::new();
        let rs = coffer_api::parse_manifests(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\n\
             metadata: {name: r, namespace: demo}\n\
             spec: {repository: {name: repo}, target: {ref: {kind: AppBinding, name: db}, \
             pointInTime: {latest: true, archive: a}}}\n",
            "t.yaml",
        )
        .unwrap()
        .remove(0);
        let Resource::RestoreSession(mut rs) = rs else {
            unreachable!()
        };
        let cfg = crate::EngineConfig {
            pushgateway: None,
            executor: crate::Executor::Process(1),
            listen_address: None,
            replica: None,
            data_dir_from_volume_mounts: false,
            hook_exec: crate::hooks::HookExec::Local,
            local_mount: coffer_api::repository::LocalMount::Host,
        };
        let e = execute(&cat, &mut rs, Instant::now(), &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("RestoreSession demo/r"), "{msg}");
        assert!(msg.contains("BinlogArchive"), "{msg}");
        assert!(msg.contains("spec.target.pointInTime.archive"), "{msg}");
    }

    #[test]
    fn a_replica_run_restores_only_its_ordinal() {
        assert_eq!(replica_ordinals(3, None, "rs").unwrap(), 0..3);
        assert_eq!(replica_ordinals(3, Some(1), "rs").unwrap(), 1..2);
        let e = replica_ordinals(2, Some(2), "RestoreSession db/r").unwrap_err();
        assert!(e.to_string().contains("spec.target.replicas is 2"), "{e}");
    }
}
