//! One BackupSession, start to finish: resolve, open the repository, stream the dump into one
//! snapshot, apply retention, verify integrity, record stats and the repository's status.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use coffer_api::{
    backup::{
        condition as cond, BackupConfiguration, BackupSession, BackupTargetStatus, FileStats,
        HostBackupStats, SessionPhase, SnapshotStats,
    },
    meta::{set_condition, TargetRef},
    repository::Repository,
    Kind, Resource,
};
use coffer_db::{ClientFiles, Clients, DumpStream};
use coffer_repo::{LockError, Repo, RepoLock, Retention, SnapshotInfo, SnapshotMeta, SourceFile};

use crate::{
    catalog::Catalog,
    clock,
    error::{EngineError, EngineResult},
    format,
    patch::StatusWriter,
    progress::Progress,
    resolve::{self, RepoAccess},
    tasks::{self, Builtin, Direction, Step},
    EngineConfig,
};

/// How long to wait for a database that refuses connections before failing (Stash's
/// `waitTimeout` task param overrides it).
pub const DEFAULT_DB_WAIT: Duration = Duration::from_secs(10);

/// The snapshot path of a logical dump, as Stash writes it.
pub const DUMP_PATH: &str = "/dumpfile.sql";

/// Everything a backup needs, resolved from resources.
struct Plan {
    bc: BackupConfiguration,
    repo_res: Repository,
    access: RepoAccess,
    conn: coffer_db::ConnSpec,
    host: String,
    task: tasks::ResolvedTask,
    target_ref: TargetRef,
    vars: BTreeMap<String, String>,
    app_type: Option<String>,
    galera: Option<coffer_api::appbinding::GaleraParameters>,
    sst_tls: Option<coffer_db::sst_tls::SstTls>,
}

pub fn get_bc(
    cat: &dyn Catalog,
    ns: &str,
    name: &str,
    by: &str,
) -> EngineResult<BackupConfiguration> {
    match cat
        .get(Kind::BackupConfiguration, ns, name)
        .map_err(EngineError::from)?
    {
        Some(Resource::BackupConfiguration(bc)) => Ok(bc),
        _ => Err(EngineError::Missing {
            kind: Kind::BackupConfiguration,
            namespace: ns.into(),
            name: name.into(),
            referenced_by: by.into(),
        }),
    }
}

fn plan(cat: &dyn Catalog, session: &BackupSession, cfg: &EngineConfig) -> EngineResult<Plan> {
    let ns = session.metadata.namespace().to_string();
    let by = format!(
        "spec.invoker of BackupSession {ns}/{}",
        session.metadata.name
    );
    let bc = get_bc(cat, &ns, &session.spec.invoker.name, &by)?;
    let bc_label = format!("BackupConfiguration {ns}/{}", bc.metadata.name);
    let repo_ns = bc.spec.repository.namespace.clone().unwrap_or(ns.clone());
    let repo_res = resolve::get_repository(
        cat,
        &repo_ns,
        &bc.spec.repository.name,
        &format!("spec.repository of {bc_label}"),
    )?;
    let access = resolve::repo_access(cat, &repo_res, cfg.local_mount)?;
    let target = bc.spec.target.clone().ok_or_else(|| EngineError::Invalid {
        resource: bc_label.clone(),
        message: "spec.target is required".into(),
    })?;
    let ab = resolve::get_appbinding(
        cat,
        &ns,
        &target.ref_,
        &format!("spec.target.ref of {bc_label}"),
    )?;
    let conn = resolve::conn_spec(cat, &ab)?;
    let host = target
        .alias
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "host-0".into());
    let mut vars = BTreeMap::new();
    vars.insert("NAMESPACE".into(), ns.clone());
    vars.insert("BACKUP_SESSION".into(), session.metadata.name.clone());
    vars.insert("INVOKER_KIND".into(), "BackupConfiguration".into());
    vars.insert("INVOKER_NAME".into(), bc.metadata.name.clone());
    vars.insert("HOSTNAME".into(), host.clone());
    vars.insert("TARGET_NAME".into(), ab.metadata.name.clone());
    vars.insert(
        "TARGET_NAMESPACE".into(),
        ab.metadata.namespace().to_string(),
    );
    vars.insert("TARGET_KIND".into(), "AppBinding".into());
    repo_vars(&mut vars, &repo_res, &access);
    if let Some(rp) = &bc.spec.retention_policy {
        for (k, v) in [
            ("RETENTION_KEEP_LAST", rp.keep_last),
            ("RETENTION_KEEP_HOURLY", rp.keep_hourly),
            ("RETENTION_KEEP_DAILY", rp.keep_daily),
            ("RETENTION_KEEP_WEEKLY", rp.keep_weekly),
            ("RETENTION_KEEP_MONTHLY", rp.keep_monthly),
            ("RETENTION_KEEP_YEARLY", rp.keep_yearly),
        ] {
            if let Some(n) = v.filter(|n| *n > 0) {
                vars.insert(k.into(), n.to_string());
            }
        }
        if !rp.keep_tags.is_empty() {
            vars.insert("RETENTION_KEEP_TAGS".into(), rp.keep_tags.join(","));
        }
        if rp.prune {
            vars.insert("RETENTION_PRUNE".into(), "true".into());
        }
        if rp.dry_run {
            vars.insert("RETENTION_DRY_RUN".into(), "true".into());
        }
    }
    let name = tasks::task_name(
        &bc.spec.task,
        ab.spec.parameters.as_ref(),
        Direction::Backup,
    );
    let task = tasks::resolve(
        cat,
        &name,
        &bc.spec.task.params,
        Direction::Backup,
        &vars,
        &bc_label,
    )?;
    let target_ref = TargetRef {
        api_version: "appcatalog.appscode.com/v1alpha1".into(),
        kind: "AppBinding".into(),
        name: ab.metadata.name.clone(),
        namespace: Some(ab.metadata.namespace().to_string()),
    };
    let galera = ab.spec.galera();
    let sst_tls = match &galera {
        Some(_) => resolve::sst_tls(cat, ab.metadata.namespace(), &task)?,
        None => None,
    };
    Ok(Plan {
        bc,
        repo_res,
        access,
        conn,
        host,
        task,
        target_ref,
        vars,
        app_type: ab.spec.type_.clone(),
        galera,
        sst_tls,
    })
}

pub(crate) fn repo_vars(
    vars: &mut BTreeMap<String, String>,
    repo: &Repository,
    access: &RepoAccess,
) {
    vars.insert("REPOSITORY_NAME".into(), repo.metadata.name.clone());
    vars.insert(
        "REPOSITORY_NAMESPACE".into(),
        repo.metadata.namespace().to_string(),
    );
    vars.insert("REPOSITORY_PROVIDER".into(), access.provider.into());
    vars.insert("REPOSITORY_BUCKET".into(), access.bucket.clone());
    vars.insert("REPOSITORY_PREFIX".into(), access.prefix.clone());
    vars.insert(
        "REPOSITORY_SECRET_NAME".into(),
        repo.spec.backend.storage_secret_name.clone(),
    );
    vars.insert(
        "REPOSITORY_SECRET_NAMESPACE".into(),
        repo.metadata.namespace().to_string(),
    );
    let b = &repo.spec.backend;
    let endpoint = b
        .azure
        .as_ref()
        .and_then(|a| a.endpoint.clone())
        .or_else(|| b.gcs.as_ref().and_then(|g| g.endpoint.clone()))
        .or_else(|| b.rest.as_ref().map(|r| r.url.clone()));
    if let Some(e) = endpoint {
        vars.insert("REPOSITORY_ENDPOINT".into(), e);
    }
    if let Some(s3) = &repo.spec.backend.s3 {
        vars.insert("REPOSITORY_ENDPOINT".into(), s3.endpoint.clone());
        vars.insert(
            "REPOSITORY_REGION".into(),
            s3.region.clone().unwrap_or_default(),
        );
        vars.insert(
            "REPOSITORY_INSECURE_TLS".into(),
            s3.insecure_tls.unwrap_or(false).to_string(),
        );
    }
}

pub(crate) fn db_wait(task: &tasks::ResolvedTask) -> EngineResult<Duration> {
    Ok(task.typed.wait_timeout.unwrap_or(DEFAULT_DB_WAIT))
}

/// The task param `args` for a client program, split as Stash splits it; options that would
/// redirect the connection, touch this host's files or lift coffer's protections fail the
/// session, naming the task and the option.
pub(crate) fn client_args(
    task: &tasks::ResolvedTask,
    default: &str,
    program: coffer_api::clientargs::ClientProgram,
) -> EngineResult<Vec<String>> {
    coffer_api::clientargs::parse(task.param("args").unwrap_or(default), program).map_err(|e| {
        EngineError::Invalid {
            resource: format!("{} (task {}, param `args`)", task.referenced_by, task.name),
            message: e.to_string(),
        }
    })
}

/// Runs a BackupSession to its end and returns it with its final status (also written to the
/// catalog as it goes). Never panics on a bad resource: every failure becomes a Failed phase
/// with the reason.
pub fn run_backup(
    cat: &dyn Catalog,
    mut session: BackupSession,
    cfg: &EngineConfig,
) -> BackupSession {
    let started = Instant::now();
    let mut out = StatusWriter::new(cat, Resource::BackupSession(session.clone()));
    {
        let st = session.status_mut();
        st.phase = Some(SessionPhase::Running);
        st.error = None;
        cfg.executor.record(&mut st.agent_pid, &mut st.executor_pod);
    }
    out.write(Resource::BackupSession(session.clone()));
    // Hooks the platform cannot run refuse the session before anything runs.
    let mut planned = plan(cat, &session, cfg).and_then(|p| {
        let h = p.bc.spec.hooks.as_ref();
        crate::hooks::check(
            &cfg.hook_exec,
            &[
                ("preBackup", h.and_then(|h| h.pre_backup.as_ref())),
                ("postBackup", h.and_then(|h| h.post_backup.as_ref())),
            ],
        )?;
        Ok(p)
    });
    if let (Ok(p), Some(addr)) = (&mut planned, cfg.listen_address.as_deref()) {
        p.task
            .params
            .entry("listenAddress".into())
            .or_insert_with(|| addr.to_string());
    }
    let result = match &planned {
        Err(e) => Err(EngineError::Step(e.to_string())),
        Ok(p) => pre_hook(&mut session, p, cfg)
            .and_then(|_| execute(cat, &mut out, &mut session, p, started)),
    };
    let succeeded = result.is_ok();
    if let Err(e) = result {
        record_failure(&mut session, &e.to_string());
    }
    if let Ok(p) = &planned {
        post_hook(&mut session, p, succeeded, cfg);
    }
    let st = session.status_mut();
    st.phase = Some(coffer_api::phase::backup_session_phase(st));
    st.session_duration = Some(coffer_api::duration::format(Duration::from_secs(
        started.elapsed().as_secs(),
    )));
    push_metrics(cat, &mut session, planned.as_ref().ok(), cfg);
    if !out.write(Resource::BackupSession(session.clone())) {
        tracing::error!("cannot record the session's final status");
    }
    if let (Ok(p), Some(SessionPhase::Succeeded)) =
        (&planned, session.status.as_ref().and_then(|s| s.phase))
    {
        verify_if_due(cat, p, cfg);
    }
    session
}

/// spec.verification.everyBackups: counts this backup and, when N are reached, verifies the
/// newest snapshot (after the session's final status is written: the backup's outcome does
/// not depend on the verification's).
fn verify_if_due(cat: &dyn Catalog, p: &Plan, cfg: &EngineConfig) {
    // Without a verification section there is nothing to count: the configuration's status
    // is not touched (an agent in a Job is not granted that write).
    if p.bc.spec.verification.is_none() {
        return;
    }
    let ns = p.bc.metadata.namespace().to_string();
    let name = p.bc.metadata.name.clone();
    let mut due = false;
    crate::catalog::update_status(cat, Kind::BackupConfiguration, &ns, &name, &mut |r| {
        let Resource::BackupConfiguration(bc) = r else {
            return;
        };
        let since = bc
            .status
            .as_ref()
            .and_then(|s| s.backups_since_verification);
        if let Some((count, now)) =
            coffer_control::backup::verification_after_backup(bc.spec.verification.as_ref(), since)
        {
            bc.status_mut().backups_since_verification = Some(count);
            due = now;
        }
    });
    if due {
        tracing::info!("verifying the newest snapshot (spec.verification.everyBackups)");
        if let Err(e) = crate::verify::run_verification(
            cat,
            &ns,
            &name,
            cfg.pushgateway.as_deref(),
            cfg.local_mount,
        ) {
            tracing::error!("verification could not run: {e}");
        }
    }
}

fn record_failure(session: &mut BackupSession, msg: &str) {
    tracing::error!("backup session failed: {msg}");
    let msg = &crate::error::status_reason(msg);
    let st = session.status_mut();
    st.error = Some(msg.to_string());
    if st.targets.is_empty() {
        st.targets.push(BackupTargetStatus {
            total_hosts: Some(1),
            ..Default::default()
        });
    }
    let t = &mut st.targets[0];
    t.total_hosts.get_or_insert(1);
    t.phase = Some(SessionPhase::Failed);
    if t.stats.is_empty() {
        t.stats.push(HostBackupStats {
            hostname: "host-0".into(),
            ..Default::default()
        });
    }
    let h = &mut t.stats[0];
    h.phase = Some(SessionPhase::Failed);
    h.error = Some(msg.to_string());
}

/// The AppBinding an exec hook runs in the pod of, on a platform that runs it there.
fn hook_target(p: &Plan) -> Option<crate::hooks::Target<'_>> {
    let ns = p.target_ref.namespace.as_deref()?;
    Some((ns, p.target_ref.name.as_str()))
}

fn hook_env(p: &Plan) -> BTreeMap<String, String> {
    p.vars.clone()
}

fn pre_hook(session: &mut BackupSession, p: &Plan, cfg: &EngineConfig) -> EngineResult<()> {
    let Some(h) = p.bc.spec.hooks.as_ref().and_then(|h| h.pre_backup.as_ref()) else {
        return Ok(());
    };
    let now = clock::now();
    match crate::hooks::run("preBackup", h, &hook_env(p), &cfg.hook_exec, hook_target(p)) {
        Ok(msg) => {
            set_condition(
                &mut session.status_mut().conditions,
                cond::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED,
                true,
                "SuccessfullyExecutedPreBackupHook",
                &msg,
                &now,
            );
            Ok(())
        }
        Err(e) => {
            set_condition(
                &mut session.status_mut().conditions,
                cond::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED,
                false,
                "FailedToExecutePreBackupHook",
                &e.to_string(),
                &now,
            );
            Err(EngineError::Step(format!(
                "the preBackup hook failed, so nothing was backed up: {e}"
            )))
        }
    }
}

fn post_hook(session: &mut BackupSession, p: &Plan, succeeded: bool, cfg: &EngineConfig) {
    let Some(h) =
        p.bc.spec
            .hooks
            .as_ref()
            .and_then(|h| h.post_backup.as_ref())
    else {
        return;
    };
    let final_attempt = session.spec.retry_left.unwrap_or_else(|| {
        p.bc.spec
            .retry_config
            .as_ref()
            .map(|r| r.max_retry.unwrap_or(1))
            .unwrap_or(0)
    }) <= 0;
    if !crate::hooks::should_run_post(h, succeeded, final_attempt) {
        return;
    }
    let now = clock::now();
    match crate::hooks::run(
        "postBackup",
        h,
        &hook_env(p),
        &cfg.hook_exec,
        hook_target(p),
    ) {
        Ok(msg) => set_condition(
            &mut session.status_mut().conditions,
            cond::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED,
            true,
            "SuccessfullyExecutedPostBackupHook",
            &msg,
            &now,
        ),
        Err(e) => {
            let msg = e.to_string();
            set_condition(
                &mut session.status_mut().conditions,
                cond::POST_BACKUP_HOOK_EXECUTION_SUCCEEDED,
                false,
                "FailedToExecutePostBackupHook",
                &msg,
                &now,
            );
            let st = session.status_mut();
            if st.error.is_none() {
                st.error = Some(crate::error::status_reason(&format!(
                    "the postBackup hook failed: {msg}"
                )));
            }
        }
    }
}

fn push_metrics(
    cat: &dyn Catalog,
    session: &mut BackupSession,
    p: Option<&Plan>,
    cfg: &EngineConfig,
) {
    let Some(url) = cfg.pushgateway.as_deref().filter(|u| !u.is_empty()) else {
        return;
    };
    let ns = session.metadata.namespace().to_string();
    let bc = match p {
        Some(p) => Some(p.bc.clone()),
        None => get_bc(cat, &ns, &session.spec.invoker.name, "").ok(),
    };
    let now = clock::now();
    let Some(bc) = bc else {
        set_condition(
            &mut session.status_mut().conditions,
            cond::METRICS_PUSHED,
            false,
            "FailedToPushMetrics",
            "the BackupConfiguration is gone, so the metrics have no job to go to",
            &now,
        );
        return;
    };
    let repo = cat
        .get(
            Kind::Repository,
            bc.spec.repository.namespace.as_deref().unwrap_or(&ns),
            &bc.spec.repository.name,
        )
        .ok()
        .flatten()
        .and_then(|r| match r {
            Resource::Repository(r) => Some(r),
            _ => None,
        });
    let mut m = crate::metrics::Metrics::new();
    crate::metrics::backup_session(
        &mut m,
        &bc,
        session,
        repo.as_ref(),
        p.and_then(|p| p.app_type.as_deref()),
    );
    let job = crate::metrics::job_name("BackupConfiguration", &ns, &bc.metadata.name);
    let (ok, reason, msg) = crate::metrics::push_outcome(url, &job, &m);
    set_condition(
        &mut session.status_mut().conditions,
        cond::METRICS_PUSHED,
        ok,
        reason,
        &msg,
        &now,
    );
}

fn execute(
    cat: &dyn Catalog,
    out: &mut StatusWriter<'_>,
    session: &mut BackupSession,
    p: &Plan,
    started: Instant,
) -> EngineResult<()> {
    let now = clock::now();
    {
        let st = session.status_mut();
        st.targets = vec![BackupTargetStatus {
            ref_: p.target_ref.clone(),
            total_hosts: Some(1),
            phase: Some(SessionPhase::Running),
            stats: vec![HostBackupStats {
                hostname: p.host.clone(),
                phase: None,
                ..Default::default()
            }],
            pre_backup_actions: vec!["InitializeBackendRepository".into()],
            post_backup_actions: vec![
                "ApplyRetentionPolicy".into(),
                "VerifyRepositoryIntegrity".into(),
                "SendRepositoryMetrics".into(),
            ],
            conditions: vec![],
        }];
    }
    let opened = Repo::open_or_init(p.access.store.clone(), &p.access.password);
    let repo = match opened {
        Ok((repo, created)) => {
            set_condition(
                &mut session.status_mut().conditions,
                cond::BACKEND_REPOSITORY_INITIALIZED,
                true,
                if created {
                    "RepositoryInitialized"
                } else {
                    "RepositoryExists"
                },
                &format!("repository {} is ready", repo.location()),
                &now,
            );
            repo
        }
        Err(e) => {
            set_condition(
                &mut session.status_mut().conditions,
                cond::BACKEND_REPOSITORY_INITIALIZED,
                false,
                "FailedToInitializeRepository",
                &e.to_string(),
                &now,
            );
            return Err(repo_err(&p.repo_res, e));
        }
    };
    out.write(Resource::BackupSession(session.clone()));
    // Shared, as restic's backup: backups and restores of one repository run side by side, and
    // nobody prunes under them. Retention upgrades it to exclusive (update_status).
    let lock = repo.lock(false).map_err(|e| repo_err(&p.repo_res, e))?;
    // The Repository's rotating data check reads today's slice before the backup writes, so
    // that a damaged pack is taken out before this backup could reuse its blobs.
    let mut data_check = None;
    if let Some(subset) = crate::check::due_subset(&p.repo_res, &clock::now()) {
        tracing::info!("reading the repository's data back (subset {subset})");
        let mut out = crate::check::CheckOutcome::default();
        crate::check::read(&repo, &lock, &p.repo_res, subset, &mut out)?;
        data_check = Some(out);
    }

    let mut snapshot: Option<SnapshotInfo> = None;
    for step in &p.task.steps {
        tracing::info!("step {}", step.function());
        match step {
            Step::Builtin {
                builtin: Builtin::LogicalBackup,
                ..
            } => {
                let tag = format!(
                    "session={}.{}",
                    session.metadata.namespace(),
                    session.metadata.name
                );
                let app = app_tag(p);
                let (s, path) = if let Some(g) = &p.galera {
                    let out = crate::physical::galera_backup(
                        &repo,
                        &p.conn,
                        g,
                        &p.task,
                        &p.host,
                        &tag,
                        &app,
                        db_wait(&p.task)?,
                        p.sst_tls.clone(),
                    )
                    .map_err(|e| name_repo(&p.repo_res, e))?;
                    let h = &mut session.status_mut().targets[0].stats[0];
                    h.donor = out.donor.clone();
                    h.donor_desynced_seconds = Some(out.donor_desynced.as_secs_f64());
                    (out.snapshot, crate::physical::STREAM_PATH)
                } else if p.task.typed.method == Some(coffer_api::params::Method::Native) {
                    let s = crate::native::native_backup(
                        &repo,
                        &p.conn,
                        &p.task,
                        &p.host,
                        [&tag, &app],
                        db_wait(&p.task)?,
                        p.bc.spec.verification.is_some(),
                    )
                    .map_err(|e| name_repo(&p.repo_res, e))?;
                    (s, coffer_db::native::DIR)
                } else if p.task.typed.method == Some(coffer_api::params::Method::Physical) {
                    let s = crate::physical::physical_backup(
                        &repo,
                        &p.conn,
                        &p.host,
                        &tag,
                        &app,
                        db_wait(&p.task)?,
                        p.bc.spec.verification.is_some(),
                    )
                    .map_err(|e| name_repo(&p.repo_res, e))?;
                    (s, crate::physical::STREAM_PATH)
                } else {
                    (logical_backup(&repo, p, session)?, DUMP_PATH)
                };
                record_snapshot(session, p, &s, path, started);
                out.write(Resource::BackupSession(session.clone()));
                snapshot = Some(s);
            }
            Step::Builtin {
                builtin: Builtin::UpdateStatus,
                ..
            } => {
                update_status(cat, &repo, &lock, p, session, data_check.as_ref())?;
            }
            Step::Builtin {
                builtin: Builtin::LogicalRestore,
                function,
            } => {
                return Err(EngineError::Step(format!(
                    "step `{function}` restores; it cannot run in a backup session"
                )))
            }
            Step::Exec {
                function,
                command,
                working_dir,
            } => tasks::run_exec(function, command, working_dir.as_deref(), &p.vars)?,
        }
    }
    let st = session.status_mut();
    let t = &mut st.targets[0];
    t.phase = Some(SessionPhase::Succeeded);
    t.total_hosts = Some(1);
    if let Some(h) = t.stats.first_mut() {
        h.phase = Some(SessionPhase::Succeeded);
        h.duration = Some(coffer_api::duration::format(started.elapsed()));
    }
    if snapshot.is_none() {
        tracing::warn!("task {} produced no snapshot", p.task.name);
    }
    Ok(())
}

/// `app=<namespace>/<name>` of the AppBinding the configuration backs up.
fn app_tag(p: &Plan) -> String {
    crate::position::app_tag(
        p.target_ref.namespace.as_deref().unwrap_or_default(),
        &p.target_ref.name,
    )
}

/// Names the Repository in a repository failure raised below the engine.
pub(crate) fn name_repo(repo: &Repository, e: EngineError) -> EngineError {
    match e {
        EngineError::Repo(r) => repo_err(repo, r),
        other => other,
    }
}

pub(crate) fn repo_err(repo: &Repository, e: coffer_repo::RepoError) -> EngineError {
    EngineError::Invalid {
        resource: format!(
            "Repository {}/{}",
            repo.metadata.namespace(),
            repo.metadata.name
        ),
        message: e.to_string(),
    }
}

fn logical_backup(repo: &Repo, p: &Plan, session: &BackupSession) -> EngineResult<SnapshotInfo> {
    let detected = Clients::detect()?;
    let files = Arc::new(ClientFiles::new(&p.conn, detected.flavor)?);
    let info = coffer_db::ping(&p.conn, &files, db_wait(&p.task)?)?;
    tracing::info!(
        "connected to {} at {} (server {})",
        p.conn.label,
        p.conn.address(),
        info.version
    );
    // A MySQL 8+ server needs MySQL's own mysqldump, whose option file spells TLS its way.
    let clients = detected.clone().for_server(&p.conn.label, &info)?;
    let files = if clients.flavor == detected.flavor {
        files
    } else {
        Arc::new(ClientFiles::new(&p.conn, clients.flavor)?)
    };
    let mut args = client_args(
        &p.task,
        "--all-databases",
        coffer_api::clientargs::ClientProgram::Dump,
    )?;
    // The binlog position the dump is consistent at, as mysqldump itself writes it.
    use coffer_api::clientargs::DumpPosition;
    let read_position = match coffer_api::clientargs::dump_position(&args) {
        // MySQL's mysqldump (8.0 to 9) still takes the old name, and writes the position as
        // CHANGE REPLICATION SOURCE and the GTID set as GTID_PURGED.
        DumpPosition::Add if info.log_bin => {
            args.insert(0, "--master-data=2".into());
            true
        }
        DumpPosition::Given => true,
        DumpPosition::Add | DumpPosition::Off => false,
    };
    // The row counts and checksums a verification compares (only with spec.verification: it
    // reads every table once more), at the dump's own point; see table_sums.rs.
    let sums_side =
        p.bc.spec
            .verification
            .is_some()
            .then(|| crate::table_sums::before_mysqldump(&p.conn, &files, &args));
    let mut dump = DumpStream::start(&clients, &p.conn, files, &args)?;
    let sums = sums_side.map(|s| crate::table_sums::follow_mysqldump(s, &mut dump));
    let late = coffer_repo::LateTags::default();
    if read_position {
        dump.on_position(crate::position::into_late_tags(&late));
    }
    let progress = Progress::start("dumped", dump.counter(), Duration::from_secs(10));
    let meta = SnapshotMeta {
        // Stash's path, whatever else the snapshot holds.
        paths: vec![DUMP_PATH.into()],
        host: p.host.clone(),
        tags: vec![
            "coffer".into(),
            "method=mysqldump".into(),
            format!(
                "session={}.{}",
                session.metadata.namespace(),
                session.metadata.name
            ),
            app_tag(p),
            format!("server-version={}", info.version),
        ],
        late_tags: late,
    };
    let mut sources = vec![SourceFile::new(DUMP_PATH, dump)];
    sources.extend(sums.map(|p| p.into_source(crate::table_sums::path_for(DUMP_PATH))));
    let result = repo.backup(sources, &meta);
    drop(progress);
    result.map_err(|e| match e {
        // The dump's own error (mysqldump failed, output truncated) is the cause to report.
        coffer_repo::RepoError::Source(m) => EngineError::Step(m),
        other => repo_err(&p.repo_res, other),
    })
}

fn record_snapshot(
    session: &mut BackupSession,
    p: &Plan,
    s: &SnapshotInfo,
    path: &str,
    started: Instant,
) {
    let st = session.status_mut();
    let h = &mut st.targets[0].stats[0];
    h.snapshots = vec![SnapshotStats {
        name: s.id.clone(),
        path: Some(path.into()),
        total_size: Some(format::size(s.total_bytes)),
        uploaded: Some(format::size(s.data_added_packed)),
        processing_time: Some(format::processing_time(started.elapsed())),
        file_stats: Some(FileStats {
            total_files: Some(s.total_files as i64),
            new_files: Some(s.files_new as i64),
            modified_files: Some(s.files_changed as i64),
            unmodified_files: Some(s.files_unmodified as i64),
        }),
        total_bytes: Some(s.total_bytes),
        uploaded_bytes: Some(s.data_added_packed),
        duration_seconds: Some(s.duration_seconds),
    }];
    tracing::info!(
        "snapshot {} of {}: {} read, {} added to the repository",
        s.short_id,
        p.host,
        format::size(s.total_bytes),
        format::size(s.data_added_packed)
    );
}

pub(crate) fn retention_of(rp: &coffer_api::backup::RetentionPolicy) -> Retention {
    let pos = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| n.min(i32::MAX as i64) as i32);
    Retention {
        keep_last: pos(rp.keep_last),
        keep_hourly: pos(rp.keep_hourly),
        keep_daily: pos(rp.keep_daily),
        keep_weekly: pos(rp.keep_weekly),
        keep_monthly: pos(rp.keep_monthly),
        keep_yearly: pos(rp.keep_yearly),
        keep_tags: rp.keep_tags.clone(),
    }
}

/// Stash's update-status: retention, integrity, repository status.
fn update_status(
    cat: &dyn Catalog,
    repo: &Repo,
    lock: &RepoLock,
    p: &Plan,
    session: &mut BackupSession,
    data_check: Option<&crate::check::CheckOutcome>,
) -> EngineResult<()> {
    let now = clock::now();
    let rp = p.bc.spec.retention_policy.clone().unwrap_or_default();
    let rules = retention_of(&rp);
    let failed = |session: &mut BackupSession, e: coffer_repo::RepoError| {
        set_condition(
            &mut session.status_mut().conditions,
            cond::RETENTION_POLICY_APPLIED,
            false,
            "FailedToApplyRetentionPolicy",
            &e.to_string(),
            &now,
        );
        repo_err(&p.repo_res, e)
    };
    // What the policy would remove, found under the shared lock; removing snapshots or data
    // takes the repository for itself, as restic's forget and prune do, so that no restore (or
    // restic command) loses the packs it is reading.
    let mut forget = repo.forget(&rules, true).map_err(|e| failed(session, e))?;
    let mut postponed = None;
    if !rp.dry_run && !forget.removed.is_empty() {
        match lock.upgrade() {
            Ok(()) => forget = repo.forget(&rules, false).map_err(|e| failed(session, e))?,
            Err(LockError::Locked { holder, .. }) => postponed = Some(holder),
            Err(e) => return Err(failed(session, e.into())),
        }
    }
    if let Some(holder) = &postponed {
        let msg = format!(
            "policy {}: {} snapshot(s) to remove, postponed: the repository is in use ({holder}); \
             the next backup that finds it free removes them",
            rp.name,
            forget.removed.len()
        );
        tracing::warn!("retention {msg}");
        set_condition(
            &mut session.status_mut().conditions,
            cond::RETENTION_POLICY_APPLIED,
            false,
            cond::REASON_RETENTION_POSTPONED,
            &msg,
            &now,
        );
        // Nothing was removed: they all still count.
        let waiting = std::mem::take(&mut forget.removed);
        forget.kept.extend(waiting);
    } else if rp.prune && !rp.dry_run && !forget.removed.is_empty() {
        if let Err(e) = repo.prune() {
            set_condition(
                &mut session.status_mut().conditions,
                cond::RETENTION_POLICY_APPLIED,
                false,
                "FailedToApplyRetentionPolicy",
                &format!("prune failed: {e}"),
                &now,
            );
            return Err(repo_err(&p.repo_res, e));
        }
    }
    if postponed.is_none() {
        set_condition(
            &mut session.status_mut().conditions,
            cond::RETENTION_POLICY_APPLIED,
            true,
            "SuccessfullyAppliedRetentionPolicy",
            &format!(
                "policy {}: kept {}, {} {}",
                rp.name,
                forget.kept.len(),
                if rp.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                forget.removed.len()
            ),
            &now,
        );
    }
    let mut problems = repo.check(false).map_err(|e| repo_err(&p.repo_res, e))?;
    // Packs a data check found damaged but could not take out of the index (the repository
    // was in use) are not fixed by a structural check that passes.
    let earlier = p
        .repo_res
        .status
        .as_ref()
        .map(|s| s.damaged_packs.clone())
        .unwrap_or_default();
    let still = repo
        .indexed_packs(&earlier)
        .map_err(|e| repo_err(&p.repo_res, e))?;
    if !still.is_empty() {
        problems.push(format!(
            "pack(s) {} were found damaged by a data check and are still in the index: run \
             `coffer check --read-data` to take them out",
            still.join(", ")
        ));
    }
    // Damage the data check found before this backup wrote is recorded (integrity false,
    // the packs and snapshots named) but does not fail this session: the damaged packs were
    // taken out first, so its own snapshot does not depend on them, and the structural check
    // above says whether any snapshot still does. The next check that finds the repository
    // whole sets integrity back to true.
    if let Some(holder) = data_check.and_then(|d| d.removal_postponed.as_ref()) {
        // This backup may have reused the damaged blobs.
        problems.push(format!(
            "the damaged pack(s) could not be taken out before this backup (the repository \
             is in use: {holder}); run `coffer check --read-data` when it is free, then back \
             up again"
        ));
    }
    let structural = problems.clone();
    let report = data_check.and_then(|d| d.data.as_ref());
    if report.is_some_and(|r| !r.is_clean()) {
        problems.insert(0, data_check.map(|d| d.reason()).unwrap_or_default());
    }
    let found: Vec<String> = report
        .iter()
        .flat_map(|r| r.damaged.iter().map(|d| d.id.clone()))
        .collect();
    let integrity = problems.is_empty();
    // The session's condition is Stash's (a false one fails the session): it says whether the
    // repository is whole now, this backup's snapshot included. Damage the data check found
    // and took out before the backup wrote is told in its message and recorded on the
    // Repository (integrity false until a later check finds it whole).
    let whole = structural.is_empty();
    set_condition(
        &mut session.status_mut().conditions,
        cond::REPOSITORY_INTEGRITY_VERIFIED,
        whole,
        if whole {
            "SuccessfullyVerifiedRepositoryIntegrity"
        } else {
            "FailedToVerifyRepositoryIntegrity"
        },
        &if integrity {
            "no errors were found".to_string()
        } else if whole {
            format!(
                "no errors were found after the data check took damaged data out: {}",
                problems.join("; ")
            )
        } else {
            problems.join("; ")
        },
        &now,
    );
    let size = repo.size().map_err(|e| repo_err(&p.repo_res, e))?;
    let created = session
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or_else(|| now.clone());
    // Only the fields this backup measured: another session may write the Repository's status
    // meanwhile (a conflict applies this change again on what it wrote).
    let written = crate::catalog::update_status(
        cat,
        Kind::Repository,
        p.repo_res.metadata.namespace(),
        &p.repo_res.metadata.name,
        &mut |r| {
            let Resource::Repository(current) = r else {
                return;
            };
            let rs = current.status_mut();
            rs.integrity = Some(integrity);
            if integrity {
                // Whatever a data check found damaged has been written again.
                rs.integrity_reason = None;
                rs.damaged_packs.clear();
            } else {
                rs.integrity_reason = Some(problems.join("; "));
                for id in &found {
                    if !rs.damaged_packs.contains(id) {
                        rs.damaged_packs.push(id.clone());
                    }
                }
            }
            if let Some(r) = report {
                rs.last_data_check_time = Some(now.clone());
                rs.last_data_check_subset = Some(r.subset.clone());
            }
            rs.total_size = Some(format::size(size));
            rs.total_size_bytes = Some(size);
            rs.snapshot_count = Some(forget.kept.len() as i64);
            rs.snapshots_removed_on_last_cleanup = Some(if rp.dry_run {
                0
            } else {
                forget.removed.len() as i64
            });
            rs.last_backup_time = Some(created.clone());
            if rs.first_backup_time.is_none() {
                rs.first_backup_time = Some(created.clone());
            }
        },
    );
    if written.is_none() {
        return Err(EngineError::Step(format!(
            "the status of Repository {}/{} could not be written (see the log)",
            p.repo_res.metadata.namespace(),
            p.repo_res.metadata.name
        )));
    }
    if !structural.is_empty() {
        return Err(EngineError::Step(format!(
            "the repository's integrity check found problems: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::MemoryCatalog;

    /// Everything a backup session of `demo/app` needs, in the catalog.
    fn catalog(repo_dir: &std::path::Path) -> MemoryCatalog {
        catalog_with(repo_dir, "")
    }

    /// The same, with `extra` (flow-style fields, each followed by `, `) in the
    /// configuration's spec.
    fn catalog_with(repo_dir: &std::path::Path, extra: &str) -> MemoryCatalog {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: repo-secret, namespace: demo}}\n\
             stringData: {{RESTIC_PASSWORD: pw}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: db-auth, namespace: demo}}\n\
             stringData: {{username: root, password: sesame}}\n\
             ---\napiVersion: stash.appscode.com/v1alpha1\nkind: Repository\n\
             metadata: {{name: repo, namespace: demo}}\n\
             spec: {{backend: {{local: {{mountPath: /safe/data, hostPath: {{path: {}}}}}, \
             storageSecretName: repo-secret}}}}\n\
             ---\napiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\n\
             metadata: {{name: db, namespace: demo}}\n\
             spec: {{type: kubedb.com/mariadb, clientConfig: {{url: 'mysql://db.example:3307/'}}, \
             secret: {{name: db-auth}}}}\n\
             ---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {{name: app, namespace: demo}}\n\
             spec: {{{extra}task: {{name: mariadb-backup-10.5.8, params: [{{name: args, value: --databases app}}]}}, \
             repository: {{name: repo}}, \
             target: {{alias: primary, ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: db}}}}, \
             retentionPolicy: {{name: keep, keepLast: 3, prune: true}}}}\n\
             ---\napiVersion: stash.appscode.com/v1beta1\nkind: BackupSession\n\
             metadata: {{name: app-1, namespace: demo}}\n\
             spec: {{invoker: {{apiGroup: stash.appscode.com, kind: BackupConfiguration, name: app}}}}\n",
            repo_dir.display()
        );
        MemoryCatalog::with(coffer_api::parse_manifests(&yaml, "t.yaml").expect("parses"))
    }

    fn session(cat: &MemoryCatalog) -> BackupSession {
        match cat.get(Kind::BackupSession, "demo", "app-1") {
            Ok(Some(Resource::BackupSession(b))) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_platform_refusing_exec_hooks_fails_the_session_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("hook-ran");
        let cat = catalog_with(
            dir.path(),
            &format!(
                "hooks: {{preBackup: {{httpGet: {{port: 1, path: /}}}}, \
                 postBackup: {{exec: {{command: [touch, '{}']}}}}}}, ",
                ran.display()
            ),
        );
        let cfg = EngineConfig {
            pushgateway: None,
            executor: crate::Executor::Pod("stash-backup-app-1-0-x7k2p".into()),
            listen_address: None,
            replica: None,
            data_dir_from_volume_mounts: true,
            hook_exec: crate::hooks::HookExec::Refused,
            local_mount: coffer_api::repository::LocalMount::Pod,
        };
        let done = run_backup(&cat, session(&cat), &cfg);
        let st = done.status.unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Failed));
        let err = st.error.unwrap_or_default();
        assert!(
            err.contains("postBackup hook has an exec handler") && err.contains("pods/exec"),
            "{err}"
        );
        assert!(!ran.exists(), "the exec hook ran");
        // Not even the preBackup hook ran (it would have failed: nothing listens on port 1).
        assert!(
            st.conditions
                .iter()
                .all(|c| c.type_ != cond::PRE_BACKUP_HOOK_EXECUTION_SUCCEEDED),
            "{:?}",
            st.conditions
        );
        assert_eq!(
            st.executor_pod.as_deref(),
            Some("stash-backup-app-1-0-x7k2p")
        );
    }

    /// The engine as it runs on one machine.
    fn one_machine() -> EngineConfig {
        EngineConfig {
            pushgateway: None,
            executor: crate::Executor::Process(1),
            listen_address: None,
            replica: None,
            data_dir_from_volume_mounts: false,
            hook_exec: crate::hooks::HookExec::Local,
            local_mount: coffer_api::repository::LocalMount::Host,
        }
    }

    #[test]
    fn a_session_is_planned_from_its_configuration_and_references() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let p = plan(&cat, &session(&cat), &one_machine()).expect("planned");
        assert_eq!(p.host, "primary");
        assert_eq!(p.task.name, "mariadb-backup-10.5.8");
        assert_eq!(p.task.param("args"), Some("--databases app"));
        assert_eq!((p.conn.host.as_str(), p.conn.port), ("db.example", 3307));
        assert_eq!(
            (p.conn.user.as_str(), p.conn.password.as_str()),
            ("root", "sesame")
        );
        assert_eq!(p.access.password, "pw");
        assert_eq!(p.access.provider, "local");
        assert_eq!(p.target_ref.name, "db");
        assert_eq!(p.target_ref.namespace.as_deref(), Some("demo"));
        for (k, v) in [
            ("NAMESPACE", "demo"),
            ("BACKUP_SESSION", "app-1"),
            ("INVOKER_NAME", "app"),
            ("HOSTNAME", "primary"),
            ("TARGET_NAME", "db"),
            ("REPOSITORY_NAME", "repo"),
            ("RETENTION_KEEP_LAST", "3"),
            ("RETENTION_PRUNE", "true"),
        ] {
            assert_eq!(p.vars.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(p.galera.is_none() && p.sst_tls.is_none());
    }

    #[test]
    fn a_missing_reference_is_named_with_who_refers_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        cat.remove(Kind::AppBinding, "demo", "db");
        let e = plan(&cat, &session(&cat), &one_machine())
            .err()
            .expect("no plan")
            .to_string();
        assert_eq!(
            e,
            "AppBinding demo/db not found (spec.target.ref of BackupConfiguration demo/app): \
             create it, or fix the reference"
        );
        let cat = catalog(dir.path());
        cat.remove(Kind::Secret, "demo", "repo-secret");
        let e = plan(&cat, &session(&cat), &one_machine())
            .err()
            .expect("no plan")
            .to_string();
        assert!(
            e.starts_with("Secret demo/repo-secret not found (spec.backend.storageSecretName of Repository demo/repo)"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_without_the_repository_password_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        cat.put(
            coffer_api::parse_manifests(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: repo-secret, namespace: demo}\n\
                 stringData: {OTHER: x}\n",
                "t.yaml",
            )
            .unwrap()
            .remove(0),
        );
        let e = plan(&cat, &session(&cat), &one_machine())
            .err()
            .expect("no plan")
            .to_string();
        assert!(
            e.contains("Secret demo/repo-secret: has no RESTIC_PASSWORD"),
            "{e}"
        );
    }

    #[test]
    fn the_engines_status_writes_keep_a_concurrent_writers_change() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        let mut out = StatusWriter::new(&cat, Resource::BackupSession(session(&cat)));
        let mut mine = session(&cat);
        mine.status_mut().phase = Some(SessionPhase::Running);
        assert!(out.write(Resource::BackupSession(mine.clone())));
        // Meanwhile the supervisor records a deadline; the engine's next write keeps it.
        crate::catalog::update_status(&cat, Kind::BackupSession, "demo", "app-1", &mut |r| {
            if let Resource::BackupSession(b) = r {
                b.status_mut().session_deadline = Some("2026-01-01T00:00:00Z".into());
            }
        })
        .expect("written");
        mine.status_mut().error = Some("it broke".into());
        assert!(out.write(Resource::BackupSession(mine)));
        let st = session(&cat).status.expect("status");
        assert_eq!(st.phase, Some(SessionPhase::Running));
        assert_eq!(st.error.as_deref(), Some("it broke"));
        assert_eq!(st.session_deadline.as_deref(), Some("2026-01-01T00:00:00Z"));
    }
}
