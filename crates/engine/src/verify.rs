//! Restore verification: the newest snapshot of a BackupConfiguration restored into a
//! throwaway server that coffer starts on this machine (same server binaries, a private data
//! directory and loopback port, no binary log), checked, and removed again in every case.
//!
//! What is checked: the restored server answers; every user table is readable in full
//! (`CHECKSUM TABLE` gives a value); for native snapshots every table's row count against
//! the rows the dump recorded in its manifest; then every table's row count and
//! `CHECKSUM TABLE` value against what the backup recorded at its consistent point
//! (condition `ChecksumsCompared`, see table_sums.rs: recorded by backups of a configuration
//! with spec.verification, for native, mysqldump and mariabackup snapshots; FLOAT/DOUBLE
//! tables by row count only after a logical restore; a snapshot without sums is said so and
//! not failed); then the user's queries against their expected results.
//!
//! With `spec.verification.binlogArchive` the snapshot is also replayed with that archive's
//! binlogs up to the newest recoverable point (`latest`) before it is checked, the way a
//! point-in-time restore does (crate::pitr_restore: relay logs through a private server on
//! a physical snapshot's data directory, `mariadb-binlog | mariadb` after a load), so the
//! check covers the archive too. The archive is named, not discovered: a configuration and
//! an archive are tied only by naming the same AppBinding and Repository, and an explicit
//! name says which archive is meant where several could match (a paused or retired one),
//! is checked at apply, and needs no listing of the store. A replay stops before a gap in
//! the archive and the verification still succeeds (condition ArchiveReplayed, reason
//! StoppedBeforeGap, naming the gap): what lies before it is what can be recovered, and
//! that is checked. After a replay the counts and checksums recorded at the backup's point
//! no longer apply: ChecksumsCompared is False with reason Replayed, and the native
//! manifest's row counts are not compared either.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use coffer_api::{
    backup::{SessionPhase, VerificationQuery, VerificationStatus},
    meta::set_condition,
    Kind, Resource,
};
use coffer_db::{mysql_prelude::Queryable, native, ClientFiles, Clients, ConnSpec, LoadSink};
use coffer_repo::{Repo, SnapshotInfo, SnapshotSelector};

use crate::{
    backup::{get_bc, name_repo, repo_err, DUMP_PATH},
    catalog::Catalog,
    clock,
    error::{EngineError, EngineResult},
    resolve,
};

pub const SERVER_STARTED: &str = "ServerStarted";
pub const SNAPSHOT_RESTORED: &str = "SnapshotRestored";
pub const TABLES_CHECKED: &str = "TablesChecked";
pub const QUERIES_CHECKED: &str = "QueriesChecked";
pub const SCRIPT_CHECKED: &str = "ScriptChecked";
pub const ARCHIVE_REPLAYED: &str = "ArchiveReplayed";

/// How long the throwaway server may take to answer after it is started.
const START_WAIT: Duration = Duration::from_secs(120);

/// The kind of snapshot, which decides how it is restored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SnapKind {
    Native,
    Dump,
    Physical,
}

fn find_executable(env: &str, names: &[&str], fixed: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find_map(|n| {
            std::env::split_paths(&path)
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
        .or_else(|| fixed.iter().map(PathBuf::from).find(|p| p.is_file()))
}

fn free_port() -> EngineResult<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EngineError::Step(format!("no free loopback port: {e}")))
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The throwaway server: its process and its directory go when it is dropped, however the
/// verification ended. Its process is started bound to ours (killed if we die, see
/// coffer_db::process::spawn_bound) and its directory lies in the session's scratch
/// directory, which the process that started the session removes.
pub struct Throwaway {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub port: u16,
    password: String,
}

impl Throwaway {
    fn new() -> EngineResult<Throwaway> {
        let scratch = coffer_db::process::scratch_dir();
        sweep(&scratch);
        let dir = tempfile::Builder::new()
            .prefix(&format!("coffer-verify-{}-", std::process::id()))
            .tempdir_in(&scratch)
            .map_err(|e| {
                EngineError::Step(format!("cannot create a verification directory: {e}"))
            })?;
        Ok(Throwaway {
            dir: Some(dir),
            child: None,
            // Chosen now: the client files for the server are written before it starts.
            port: free_port()?,
            password: random_hex(16),
        })
    }

    pub fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    fn datadir(&self) -> PathBuf {
        self.root().join("data")
    }

    fn conn(&self) -> ConnSpec {
        ConnSpec {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "coffer_verify".into(),
            password: self.password.clone(),
            tls: None,
            label: format!("the verification server on 127.0.0.1:{}", self.port),
        }
    }

    /// The statements that create the verification account (the password is random hex).
    fn account_sql(&self) -> String {
        format!(
            "CREATE OR REPLACE USER 'coffer_verify'@'127.0.0.1' IDENTIFIED BY '{}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'coffer_verify'@'127.0.0.1' WITH GRANT OPTION;\n",
            self.password
        )
    }

    /// An empty server's data directory (for logical and native snapshots).
    fn install(&self) -> EngineResult<()> {
        let bin = find_executable(
            "COFFER_MARIADB_INSTALL_DB",
            &["mariadb-install-db", "mysql_install_db"],
            &["/usr/bin/mariadb-install-db"],
        )
        .ok_or_else(|| {
            EngineError::Step(
                "mariadb-install-db is not on PATH: install the MariaDB server".into(),
            )
        })?;
        let mut cmd = Command::new(bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir().display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve");
        if is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EngineError::Step(format!("mariadb-install-db: {e}")))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            return Err(EngineError::Step(format!(
                "mariadb-install-db failed: {}",
                said.lines().rev().take(3).collect::<Vec<_>>().join("; ")
            )));
        }
        Ok(())
    }

    /// Starts mariadbd on the data directory with an account of its own (created by the
    /// init file, which only the server's owner can read), and waits until it answers.
    fn start(&mut self, files: &ClientFiles) -> EngineResult<()> {
        let bin = find_executable(
            "COFFER_MARIADBD",
            &["mariadbd", "mysqld"],
            &["/usr/sbin/mariadbd", "/usr/sbin/mysqld"],
        )
        .ok_or_else(|| EngineError::Step("mariadbd is not on PATH or in /usr/sbin".into()))?;
        let root = self.root().to_path_buf();
        let init = root.join("init.sql");
        write_private(&init, &self.account_sql())?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| EngineError::Step(e.to_string()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir().display()))
            .arg(format!("--socket={}", root.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", root.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", root.join("error.log").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--init-file={}", init.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--skip-networking=0",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--skip-slave-start",
                "--wsrep-on=OFF",
                "--innodb-buffer-pool-size=64M",
                "--max-allowed-packet=256M",
            ]);
        if is_root() {
            cmd.arg("--user=root");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = coffer_db::process::spawn_bound(cmd)
            .map_err(|e| EngineError::Step(format!("cannot start mariadbd: {e}")))?;
        self.child = Some(child);
        let conn = self.conn();
        if let Err(e) = coffer_db::ping(&conn, files, START_WAIT) {
            let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(EngineError::Step(format!(
                "the verification server did not answer: {e}; its log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        if let Some(d) = self.dir.take() {
            let path = d.path().to_path_buf();
            if let Err(e) = d.close() {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the directories of verifications whose coffer died without removing them (killed:
/// its server died with it, by the parent-death signal, but a directory cannot).
fn sweep(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("coffer-verify-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(
                "removing {} left by an ended verification",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write_private(path: &Path, text: &str) -> EngineResult<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EngineError::Step(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| EngineError::Step(format!("cannot write {}: {e}", path.display())))
}

/// The newest snapshot of `host` of any kind coffer restores.
fn newest(repo: &Repo, host: &str) -> Option<(SnapshotInfo, SnapKind)> {
    [
        (native::DIR, SnapKind::Native),
        (crate::physical::STREAM_PATH, SnapKind::Physical),
        (DUMP_PATH, SnapKind::Dump),
    ]
    .into_iter()
    .filter_map(|(path, kind)| {
        repo.find(&SnapshotSelector {
            snapshot: "latest".into(),
            host: Some(host.into()),
            path: Some(path.into()),
        })
        .ok()
        .map(|s| (s, kind))
    })
    .max_by_key(|(s, _)| s.unix_time)
}

/// Renders a result as `mariadb --batch --skip-column-names` prints it.
fn render(rows: Vec<coffer_db::MysqlRow>) -> String {
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    coffer_db::MysqlValue::NULL => "NULL".to_string(),
                    coffer_db::MysqlValue::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => other.as_sql(true).trim_matches('\'').to_string(),
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the user's queries; the first that fails or gives another result is named.
pub fn check_queries(
    c: &mut coffer_db::MysqlConn,
    queries: &[VerificationQuery],
) -> Result<(), String> {
    for q in queries {
        let rows: Vec<coffer_db::MysqlRow> = c
            .query(&q.sql)
            .map_err(|e| format!("query `{}` failed: {e}", q.name))?;
        let got = render(rows);
        if got.trim() != q.expect.trim() {
            return Err(format!(
                "query `{}` returned `{}`, expected `{}`",
                q.name,
                got.trim(),
                q.expect.trim()
            ));
        }
    }
    Ok(())
}

/// Row counts the native dump recorded, by `db.table`.
fn recorded_rows(manifest: &native::Manifest) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in &manifest.files {
        *m.entry(format!("{}.{}", f.database, f.table)).or_insert(0) += f.rows;
    }
    m
}

fn quote(id: &str) -> String {
    format!("`{}`", id.replace('`', "``"))
}

/// Every user table readable (CHECKSUM TABLE gives a value) and, where the backup recorded
/// them, its row count as recorded. Returns the number of tables checked.
fn check_tables(
    c: &mut coffer_db::MysqlConn,
    recorded: Option<&BTreeMap<String, u64>>,
) -> Result<usize, String> {
    let tables: Vec<(String, String)> = c
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql','information_schema','performance_schema','sys') \
             ORDER BY 1, 2",
        )
        .map_err(|e| format!("cannot list the restored tables: {e}"))?;
    if let Some(rec) = recorded {
        for name in rec.keys() {
            let (d, t) = name.split_once('.').unwrap_or((name, ""));
            if !tables.iter().any(|(a, b)| a == d && b == t) {
                return Err(format!(
                    "table {name}: in the snapshot ({} rows) but not in the restored server",
                    rec[name]
                ));
            }
        }
    }
    for (d, t) in &tables {
        let q = format!("{}.{}", quote(d), quote(t));
        let sum: Option<(String, Option<u64>)> = c
            .query_first(format!("CHECKSUM TABLE {q} EXTENDED"))
            .map_err(|e| format!("table {d}.{t}: CHECKSUM TABLE failed: {e}"))?;
        if sum.and_then(|s| s.1).is_none() {
            return Err(format!(
                "table {d}.{t}: CHECKSUM TABLE gave no value (unreadable)"
            ));
        }
        if let Some(want) = recorded.and_then(|r| r.get(&format!("{d}.{t}"))) {
            let got: Option<u64> = c
                .query_first(format!("SELECT COUNT(*) FROM {q}"))
                .map_err(|e| format!("table {d}.{t}: counting failed: {e}"))?;
            let got = got.unwrap_or(0);
            if got != *want {
                return Err(format!(
                    "table {d}.{t}: {got} rows restored, the backup recorded {want}"
                ));
            }
        }
    }
    Ok(tables.len())
}

/// Verifies the newest snapshot of BackupConfiguration `ns/name`, records the outcome on its
/// status and returns it. An Err is a verification that could not run at all (no such
/// configuration); everything after that is a Failed outcome in the returned status.
pub fn run_verification(
    cat: &dyn Catalog,
    ns: &str,
    name: &str,
    pushgateway: Option<&str>,
    at: coffer_api::repository::LocalMount,
) -> EngineResult<VerificationStatus> {
    let bc = get_bc(cat, ns, name, "coffer verify")?;
    let started = Instant::now();
    let now = clock::now();
    let mut st = VerificationStatus {
        time: Some(now.clone()),
        phase: Some(SessionPhase::Running),
        ..Default::default()
    };
    let result = verify(cat, &bc, &mut st, started, at);
    match result {
        Ok(()) => {
            st.phase = Some(SessionPhase::Succeeded);
            tracing::info!(
                "verification of snapshot {} succeeded; recovery took {:.1}s",
                st.snapshot.as_deref().unwrap_or("?"),
                st.recovery_seconds.unwrap_or(0.0)
            );
        }
        Err(e) => {
            let msg = crate::error::status_reason(&e.to_string());
            tracing::error!("verification failed: {msg}");
            st.phase = Some(SessionPhase::Failed);
            st.reason = Some(msg);
        }
    }
    let ok = st.phase == Some(SessionPhase::Succeeded);
    let rec = st.clone();
    let written =
        crate::catalog::update_status(cat, Kind::BackupConfiguration, ns, name, &mut |r| {
            if let Resource::BackupConfiguration(b) = r {
                let s = b.status_mut();
                s.last_verification = Some(rec.clone());
                s.backups_since_verification = Some(0);
                if ok {
                    s.last_verified_time = rec.time.clone();
                }
            }
        });
    if let Some(url) = pushgateway.filter(|u| !u.is_empty()) {
        let mut m = crate::metrics::Metrics::new();
        let last_ok = if ok {
            st.time.clone()
        } else {
            bc.status
                .as_ref()
                .and_then(|s| s.last_verified_time.clone())
        };
        crate::metrics::verification(&mut m, &bc, &st, last_ok.as_deref());
        let job = crate::metrics::job_name("BackupConfiguration", ns, &format!("{name}-verify"));
        let (pushed, _, msg) = crate::metrics::push_outcome(url, &job, &m);
        if !pushed {
            tracing::warn!("verification metrics not pushed: {msg}");
        }
    }
    // An outcome nobody can see is no outcome: the caller (a CronJob's pod, the local server)
    // must fail rather than report a verification the configuration does not show.
    if written.is_none() {
        return Err(EngineError::Step(format!(
            "the verification {} (snapshot {}), but its outcome could not be written to the \
             status of BackupConfiguration {ns}/{name} (see the error logged before); run it \
             again once the status can be written",
            if ok { "succeeded" } else { "failed" },
            st.snapshot.as_deref().unwrap_or("none"),
        )));
    }
    Ok(st)
}

fn verify(
    cat: &dyn Catalog,
    bc: &coffer_api::backup::BackupConfiguration,
    st: &mut VerificationStatus,
    started: Instant,
    at: coffer_api::repository::LocalMount,
) -> EngineResult<()> {
    let ns = bc.metadata.namespace().to_string();
    let label = format!("BackupConfiguration {ns}/{}", bc.metadata.name);
    let repo_ns = bc.spec.repository.namespace.clone().unwrap_or(ns.clone());
    let repo_res = resolve::get_repository(
        cat,
        &repo_ns,
        &bc.spec.repository.name,
        &format!("spec.repository of {label}"),
    )?;
    let access = resolve::repo_access(cat, &repo_res, at)?;
    let host = bc
        .spec
        .target
        .as_ref()
        .and_then(|t| t.alias.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "host-0".into());
    let archive = match bc
        .spec
        .verification
        .as_ref()
        .and_then(|v| v.binlog_archive.as_deref())
    {
        Some(name) => Some(
            crate::pitr_restore::resolve_for_verification(cat, bc, name, &label)
                .inspect_err(|e| replay_failed(st, &e.to_string()))?,
        ),
        None => None,
    };
    let repo =
        Repo::open(access.store.clone(), &access.password).map_err(|e| repo_err(&repo_res, e))?;
    let lock = repo.lock(false).map_err(|e| repo_err(&repo_res, e))?;
    let (snap, kind) = newest(&repo, &host).ok_or_else(|| {
        EngineError::Step(format!(
            "{label}: the repository has no snapshot of host {host} to verify: back up first"
        ))
    })?;
    st.snapshot = Some(snap.id.clone());
    // A replay that cannot be planned says nothing about the snapshot: it keeps its tags.
    let replay = match &archive {
        Some(a) => Some(
            plan_replay(&repo, &repo_res, a, &snap, kind, &label)
                .inspect_err(|e| replay_failed(st, &e.to_string()))?,
        ),
        None => None,
    };
    let checked = check_snapshot(
        bc,
        &repo,
        &repo_res,
        &label,
        &snap,
        kind,
        replay.as_ref(),
        st,
        started,
    );
    // The throwaway server is gone by now: the repository is taken for itself only briefly.
    crate::verify_tag::record(&repo, &lock, &snap, checked.is_ok(), st);
    checked
}

fn replay_failed(st: &mut VerificationStatus, msg: &str) {
    set_condition(
        &mut st.conditions,
        ARCHIVE_REPLAYED,
        false,
        "Failed",
        msg,
        &clock::now(),
    );
}

/// The replay of `archive` from `snap` to `latest`: `snap` must be a base of the archive
/// (of its AppBinding, with the GTID state it holds recorded, on the archive's timeline).
fn plan_replay(
    repo: &Repo,
    repo_res: &coffer_api::repository::Repository,
    archive: &crate::pitr_restore::Archive,
    snap: &SnapshotInfo,
    kind: SnapKind,
    label: &str,
) -> EngineResult<crate::pitr_restore::Planned> {
    use crate::pitr_restore::{self as pitr, BaseKind};
    let base_kind = match kind {
        SnapKind::Physical => BaseKind::Physical,
        SnapKind::Native => BaseKind::Native,
        SnapKind::Dump => BaseKind::Logical,
    };
    let snapshots = repo.snapshots().map_err(|e| repo_err(repo_res, e))?;
    let app = pitr::app_of(archive);
    let bases = pitr::bases(&snapshots, &app, base_kind, Some(&snap.id));
    if bases.is_empty() {
        return Err(EngineError::Invalid {
            resource: label.to_string(),
            message: format!(
                "spec.verification.binlogArchive: snapshot {} (the newest) cannot start a \
                 replay of BinlogArchive {}: it records no GTID state (no `gtid=` tag: was the \
                 server's binary log on?) or it is of another AppBinding than {app}",
                snap.short_id, archive.name
            ),
        });
    }
    let store = pitr::store(repo, archive);
    let field = "spec.verification.binlogArchive";
    pitr::plan(store, &archive.target, &bases, label, field).map_err(|e| name_repo(repo_res, e))
}

/// Records how far the replay went (lastVerification.pointInTime, ArchiveReplayed).
fn replayed(
    st: &mut VerificationStatus,
    p: &crate::pitr_restore::Planned,
    snap: &SnapshotInfo,
    note: Option<String>,
) {
    let mut pit = crate::pitr_restore::status(p);
    if let Some(n) = note {
        pit.note = Some(match pit.note {
            Some(before) => format!("{before}; {n}"),
            None => n,
        });
    }
    st.point_in_time = Some(Box::new(pit));
    let (reason, msg) = coffer_control::pitr::verification_replay(&p.plan, &snap.short_id);
    tracing::info!("{msg}");
    set_condition(
        &mut st.conditions,
        ARCHIVE_REPLAYED,
        true,
        reason,
        &msg,
        &clock::now(),
    );
}

/// Restores `snap` into a throwaway server (replayed with `replay`), and checks it; the
/// server is gone on return.
#[allow(clippy::too_many_arguments)]
fn check_snapshot(
    bc: &coffer_api::backup::BackupConfiguration,
    repo: &Repo,
    repo_res: &coffer_api::repository::Repository,
    label: &str,
    snap: &SnapshotInfo,
    kind: SnapKind,
    replay: Option<&crate::pitr_restore::Planned>,
    st: &mut VerificationStatus,
    started: Instant,
) -> EngineResult<()> {
    tracing::info!("verifying snapshot {} ({kind:?})", snap.short_id);
    let mut server = Throwaway::new()?;
    let clients = Clients::detect()?;
    let cond = |st: &mut VerificationStatus, t: &str, ok: bool, msg: &str| {
        let reason = if ok { "Succeeded" } else { "Failed" };
        set_condition(&mut st.conditions, t, ok, reason, msg, &clock::now());
    };
    let mut recorded = None;
    let relay_failed = std::cell::Cell::new(false);
    let restore_physical = || -> EngineResult<()> {
        let galera = snap
            .paths
            .iter()
            .any(|p| p == crate::physical::POSITION_PATH)
            || snap.tags.iter().any(|t| t == "method=galera-sst");
        let plan = crate::physical::PhysicalRestore {
            data_dir_template: server.datadir().display().to_string(),
            replicas: 1,
            replace: false,
            keep_cluster_uuid: false,
            owner: None,
            galera,
            volume_root: false,
        };
        // The archive is replayed into the prepared data directory by a private server.
        let relay = |dir: &Path| match replay {
            Some(p) => crate::pitr_restore::replay_relay(p, dir, label).inspect_err(|_| {
                relay_failed.set(true);
            }),
            None => Ok(()),
        };
        crate::physical::restore_replica_then(repo, &snap.id, &plan, 0, label, &relay)
            .map_err(|e| name_repo(repo_res, e))?;
        Ok(())
    };
    // A physical snapshot is the data directory itself; the others load into an empty one.
    let prepared = if kind == SnapKind::Physical {
        restore_physical()
    } else {
        server.install()
    };
    if let Err(e) = prepared {
        if relay_failed.get() {
            replay_failed(st, &e.to_string());
        } else {
            cond(st, SNAPSHOT_RESTORED, false, &e.to_string());
        }
        return Err(e);
    }
    if let (Some(p), SnapKind::Physical) = (replay, kind) {
        replayed(st, p, snap, None);
    }
    let conn = server.conn();
    let files = Arc::new(ClientFiles::new(&conn, clients.flavor)?);
    if let Err(e) = server.start(&files) {
        cond(st, SERVER_STARTED, false, &e.to_string());
        return Err(e);
    }
    cond(
        st,
        SERVER_STARTED,
        true,
        &format!("mariadbd on 127.0.0.1:{}", server.port),
    );
    let loaded = match kind {
        SnapKind::Physical => Ok(()),
        SnapKind::Native => (|| {
            let reader = Arc::new(repo.reader(&snap.id)?);
            let schema: native::Schema = crate::native::read_json(&reader, native::SCHEMA_PATH)?;
            let manifest: native::Manifest =
                crate::native::read_json(&reader, native::MANIFEST_PATH)?;
            recorded = Some(recorded_rows(&manifest));
            let r = reader.clone();
            let fetch: native::load::Fetch =
                Arc::new(move |path: &str, w: &mut dyn std::io::Write| {
                    r.dump(path, w).map_err(std::io::Error::other)
                });
            let opts = native::LoadOptions {
                connections: 2,
                ..Default::default()
            };
            native::load(&conn, &files, &schema, &manifest, fetch, &opts)?;
            Ok(())
        })(),
        SnapKind::Dump => (|| {
            // A dump of every database brings the source's accounts along and reloads them:
            // a connection made before keeps its privileges and gives the account back.
            let mut keep = coffer_db::connect(&conn, &files)?;
            let sink = LoadSink::start(&clients, &conn, files.clone(), &[])?;
            crate::restore::load(repo, &snap.id, sink)?;
            keep.query_drop(server.account_sql()).map_err(|e| {
                EngineError::Step(format!(
                    "cannot give the verification account back after the load: {e}"
                ))
            })?;
            Ok(())
        })(),
    };
    if let Err(e) = loaded {
        let e = name_repo(repo_res, e);
        cond(st, SNAPSHOT_RESTORED, false, &e.to_string());
        return Err(e);
    }
    if let (Some(p), false) = (replay, kind == SnapKind::Physical) {
        match crate::pitr_restore::replay_pipe(p, &conn) {
            Ok(note) => replayed(st, p, snap, note),
            Err(e) => {
                let e = name_repo(repo_res, e);
                replay_failed(st, &e.to_string());
                return Err(e);
            }
        }
    }
    // Transactions replayed after the snapshot changed rows: what the backup recorded at
    // its point no longer applies (with nothing replayed, it still does).
    let moved = replay.filter(|p| p.plan.stop.is_some());
    if moved.is_some() {
        recorded = None;
    }
    let mut c = coffer_db::connect(&conn, &files)?;
    // The recovery time ends when the server answers a query over the restored data.
    let answered: Result<Option<u64>, _> = c.query_first(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN \
         ('mysql','information_schema','performance_schema','sys')",
    );
    if let Err(e) = answered {
        let msg = format!("the restored server does not answer: {e}");
        cond(st, SNAPSHOT_RESTORED, false, &msg);
        return Err(EngineError::Step(msg));
    }
    st.recovery_seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    cond(
        st,
        SNAPSHOT_RESTORED,
        true,
        &format!("snapshot {} ({kind:?}) restored", snap.short_id),
    );
    match check_tables(&mut c, recorded.as_ref()) {
        Ok(n) => cond(
            st,
            TABLES_CHECKED,
            true,
            &format!(
                "{n} table(s) readable{}",
                if recorded.is_some() {
                    ", row counts as the backup recorded"
                } else if moved.is_some() {
                    " (row counts not compared: the archive was replayed after the snapshot)"
                } else {
                    " (this kind of snapshot records no row counts)"
                }
            ),
        ),
        Err(m) => {
            cond(st, TABLES_CHECKED, false, &m);
            return Err(EngineError::Step(m));
        }
    }
    // The row counts and checksums the backup recorded at its consistent point.
    let main = match kind {
        SnapKind::Native => native::DIR,
        SnapKind::Physical => crate::physical::STREAM_PATH,
        SnapKind::Dump => DUMP_PATH,
    };
    let logical = kind != SnapKind::Physical;
    let sums = match moved {
        Some(p) => Ok((
            false,
            "Replayed",
            format!(
                "not compared: the archive's transactions after the snapshot were replayed \
                 (up to {}), so the row counts and checksums the backup recorded at its point \
                 no longer apply",
                p.plan.reached
            ),
        )),
        None => crate::table_sums::verify(repo, &snap.id, main, logical, &mut c),
    };
    match sums {
        Ok((compared, reason, msg)) => {
            tracing::info!("table checksums: {msg}");
            let sums = crate::table_sums::CHECKSUMS_COMPARED;
            set_condition(
                &mut st.conditions,
                sums,
                compared,
                reason,
                &msg,
                &clock::now(),
            );
        }
        Err(m) => {
            cond(st, crate::table_sums::CHECKSUMS_COMPARED, false, &m);
            return Err(EngineError::Step(m));
        }
    }
    let queries = bc
        .spec
        .verification
        .as_ref()
        .map(|v| v.queries.clone())
        .unwrap_or_default();
    match check_queries(&mut c, &queries) {
        Ok(()) => cond(
            st,
            QUERIES_CHECKED,
            true,
            &format!("{} query(ies) gave the expected result", queries.len()),
        ),
        Err(m) => {
            cond(st, QUERIES_CHECKED, false, &m);
            return Err(EngineError::Step(m));
        }
    }
    drop(c);
    if let Some(sc) = bc
        .spec
        .verification
        .as_ref()
        .and_then(|v| v.script.as_ref())
    {
        let conf = format!("{}/{}", bc.metadata.namespace(), bc.metadata.name);
        match server.script(sc, &snap.id, &conf) {
            Ok(m) => cond(st, SCRIPT_CHECKED, true, &m),
            Err(m) => {
                cond(st, SCRIPT_CHECKED, false, &m);
                return Err(EngineError::Step(m));
            }
        }
    }
    server.stop();
    Ok(())
}

impl Throwaway {
    /// Runs spec.verification.script against this server (see crate::verify_script).
    fn script(
        &self,
        sc: &coffer_api::backup::VerificationScript,
        snapshot: &str,
        configuration: &str,
    ) -> Result<String, String> {
        let conn = self.conn();
        let cnf = self.root().join("client.cnf");
        let text = crate::verify_script::defaults_file_text(
            &conn.host,
            conn.port,
            &conn.user,
            &conn.password,
        );
        write_private(&cnf, &text).map_err(|e| e.to_string())?;
        let target = crate::verify_script::Target {
            host: &conn.host,
            port: conn.port,
            user: &conn.user,
            defaults_file: &cnf,
            snapshot,
            configuration,
        };
        crate::verify_script::run(sc, &target, self.root())
    }
}
