//! Physical backups in the engine: a Galera cluster's SST through garbd, a standalone
//! server's mariabackup stream, and restoring either into data directories.

use std::{
    collections::BTreeMap,
    io::Cursor,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use coffer_api::{appbinding::GaleraParameters, envsubst};
use coffer_db::{
    galera::{Sst, SstRequest},
    physical::{self, Extractor, PhysicalStream, PhysicalTools},
    ClientFiles, Clients, ConnSpec,
};
use coffer_repo::{Repo, SnapshotInfo, SnapshotMeta, SourceFile};

use crate::{
    error::{EngineError, EngineResult},
    progress::Progress,
    tasks::ResolvedTask,
};

/// Where a physical stream lives in a snapshot (Stash's name for a Galera SST).
pub const STREAM_PATH: &str = "/xtrabackup.stream";
/// The SST's first stage (the Galera position at request time), beside the stream.
pub const POSITION_PATH: &str = "/galera-position.xbstream";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) gcomm: String,
    pub(crate) conn: ConnSpec,
}

/// Reads the cluster from the AppBinding's server: its group name must be the AppBinding's,
/// and every member's name, state and address are listed.
pub(crate) fn cluster_members(
    conn: &ConnSpec,
    files: &ClientFiles,
    group: &str,
    gcomm_hosts: &[String],
) -> EngineResult<Vec<Member>> {
    use coffer_db::mysql_prelude::Queryable;
    let mut c = coffer_db::connect_control(conn, files)?;
    let q = |c: &mut coffer_db::MysqlConn, sql: &str| -> EngineResult<Option<String>> {
        c.query_first::<Option<String>, _>(sql)
            .map(|v| v.flatten())
            .map_err(|e| EngineError::Db(coffer_db::conn::classify(conn, &e)))
    };
    let name = q(&mut c, "SELECT @@wsrep_cluster_name")?.unwrap_or_default();
    if name != group {
        return Err(EngineError::Invalid {
            resource: conn.label.clone(),
            message: format!(
                "spec.parameters.group is `{group}`, but the cluster at {} is named `{name}` \
                 (wsrep_cluster_name): fix the AppBinding",
                conn.address()
            ),
        });
    }
    let incoming = q(&mut c, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_INCOMING_ADDRESSES'")?
        .unwrap_or_default();
    tracing::info!("cluster `{group}`: members at {incoming}");
    // Nodes that do not know their client address say AUTO; in a cluster where every node
    // serves on the same port (Kubernetes), the group-communication hosts stand in for them.
    let mut addrs: Vec<String> = incoming
        .split(',')
        .filter(|a| {
            a.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0))
        })
        .map(String::from)
        .collect();
    if addrs.is_empty() {
        addrs = gcomm_hosts
            .iter()
            .map(|h| format!("{h}:{}", conn.port))
            .collect();
    }
    let mut out = Vec::new();
    for addr in &addrs {
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let mut spec = conn.clone();
        spec.host = host.to_string();
        spec.port = port;
        let Ok(mut mc) = coffer_db::connect_control(&spec, files) else {
            continue;
        };
        let node = q(&mut mc, "SELECT @@wsrep_node_name")?.unwrap_or_default();
        let gcomm = q(&mut mc, "SELECT @@wsrep_node_address")?.unwrap_or_default();
        let state = q(&mut mc, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'")?
            .unwrap_or_default();
        out.push(Member {
            name: node,
            state,
            gcomm,
            conn: spec,
        });
    }
    Ok(out)
}

pub(crate) fn first_gcomm(address: &str) -> String {
    address
        .trim_start_matches("gcomm://")
        .split(['?', ','])
        .next()
        .unwrap_or("")
        .to_string()
}

/// Watches the donor's state and adds up the time it spends out of Synced.
struct DesyncWatch {
    stop: Arc<AtomicBool>,
    blocked: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DesyncWatch {
    fn start(member: Option<ConnSpec>, files: Arc<ClientFiles>) -> DesyncWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let blocked = Arc::new(Mutex::new(Duration::ZERO));
        let (s, b) = (stop.clone(), blocked.clone());
        let thread = member.and_then(|spec| {
            std::thread::Builder::new()
                .name("coffer-donor-watch".into())
                .spawn(move || {
                    use coffer_db::mysql_prelude::Queryable;
                    let Ok(mut c) = coffer_db::connect_control(&spec, &files) else { return };
                    let mut last = Instant::now();
                    while !s.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(250));
                        let st: Option<String> = c
                            .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'")
                            .ok()
                            .flatten();
                        let now = Instant::now();
                        if st.as_deref().is_some_and(|x| x != "Synced") {
                            *b.lock().unwrap() += now - last;
                        }
                        last = now;
                    }
                })
                .ok()
        });
        DesyncWatch {
            stop,
            blocked,
            thread,
        }
    }

    fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let b = *self.blocked.lock().unwrap();
        b
    }
}

/// The outcome of a Galera backup, beyond the snapshot.
pub struct GaleraOutcome {
    pub snapshot: SnapshotInfo,
    pub donor: Option<String>,
    pub donor_desynced: Duration,
}

#[allow(clippy::too_many_arguments)] // each is one resolved input of the session
pub fn galera_backup(
    repo: &Repo,
    conn: &ConnSpec,
    g: &GaleraParameters,
    task: &ResolvedTask,
    host: &str,
    session_tag: &str,
    app_tag: &str,
    db_wait: Duration,
    tls: Option<coffer_db::sst_tls::SstTls>,
) -> EngineResult<GaleraOutcome> {
    let clients = Clients::detect()?;
    let files = Arc::new(ClientFiles::new(conn, clients.flavor)?);
    coffer_db::ping(conn, &files, db_wait)?;
    let gcomm_hosts = gcomm_hosts(&g.address);
    let mut members = cluster_members(conn, &files, &g.group, &gcomm_hosts)?;
    members.dedup_by(|a, b| a.name == b.name);
    let first = first_gcomm(&g.address);
    let donor = match task.param("donor").filter(|d| !d.is_empty()) {
        Some(d) => Some(d.to_string()),
        // A Synced node that is not the first: the first usually takes the writes.
        None => members
            .iter()
            .find(|m| m.state == "Synced" && m.gcomm != first)
            .or_else(|| members.iter().find(|m| m.state == "Synced"))
            .map(|m| m.name.clone()),
    };
    let donor_conn = donor
        .as_ref()
        .and_then(|d| members.iter().find(|m| &m.name == d))
        .map(|m| m.conn.clone());
    let method = if g.sst_method.is_empty()
        || g.sst_method == "mariabackup"
        || g.sst_method == "xtrabackup-v2"
    {
        if g.sst_method.is_empty() {
            "mariabackup".to_string()
        } else {
            g.sst_method.clone()
        }
    } else {
        g.sst_method.clone()
    };
    let listen_host = task
        .param("listenAddress")
        .unwrap_or("127.0.0.1")
        .to_string();
    let timeout = task.typed.sst_timeout.unwrap_or(Duration::from_secs(120));
    let deadline = task
        .typed
        .sst_deadline
        .unwrap_or(Duration::from_secs(12 * 3600));
    // Only the members may send the SST: the AppBinding's gcomm hosts, the addresses the
    // members report for themselves, and any the task adds (a donor behind NAT).
    let mut node_addresses: Vec<String> = members.iter().map(|m| m.gcomm.clone()).collect();
    node_addresses.extend(task.typed.sst_peers.iter().cloned());
    let peers = coffer_db::galera::member_addresses(&g.address, &node_addresses);
    let req = SstRequest {
        address: g.address.clone(),
        group: g.group.clone(),
        sst_method: method.clone(),
        donor: donor.clone(),
        listen_host: listen_host.clone(),
        listen_port: task.typed.listen_port.unwrap_or(0),
        garbd_host: listen_host,
        garbd_port: free_port(),
        timeout,
        deadline,
        peers,
        label: conn.label.clone(),
        tls,
    };
    let donor_at = donor_conn.clone();
    let watch = DesyncWatch::start(donor_conn, files.clone());
    let sst = Sst::start(req);
    let sst = match sst {
        Ok(s) => s,
        Err(e) => {
            watch.finish();
            return Err(e.into());
        }
    };
    let position = sst.requested_position();
    let stage1 = sst.stage1().to_vec();
    let mut stream = sst.into_stream();
    // The donor's mariabackup records the donor's binlog position (under BACKUP STAGE
    // BLOCK_COMMIT, so exactly that of the data sent) in its stream, when the donor writes
    // a binlog. Its GTID field is empty there (the donor rotates its binlog for the
    // transfer), so the donor is asked for the GTID state at that position. With
    // wsrep_gtid_mode every member gives the cluster's writes the same GTIDs, so the state
    // holds for the cluster, not only for the donor. The Galera seqno of the first stage
    // (sst-request-position) is not a GTID: it also counts write-sets that write none.
    let late = coffer_repo::LateTags::default();
    match donor_at {
        Some(spec) => stream.on_position(crate::position::into_late_tags_at_server(
            &late,
            spec,
            files.clone(),
        )),
        None => stream.on_position(crate::position::into_late_tags_of_stream(&late)),
    }
    let progress = Progress::start("received", stream.counter(), Duration::from_secs(10));
    let mut tags = vec![
        "coffer".to_string(),
        "method=galera-sst".to_string(),
        format!("sst-method={method}"),
        session_tag.to_string(),
        app_tag.to_string(),
    ];
    if let Some(d) = &donor {
        tags.push(format!("donor={d}"));
    }
    if let Some(p) = &position {
        tags.push(format!("sst-request-position={p}"));
    }
    let result = repo.backup(
        vec![
            SourceFile::buffered(POSITION_PATH, Cursor::new(stage1)),
            SourceFile::new(STREAM_PATH, stream),
        ],
        &SnapshotMeta {
            paths: Vec::new(),
            host: host.to_string(),
            tags,
            late_tags: late,
        },
    );
    drop(progress);
    let blocked = watch.finish();
    let snapshot = result.map_err(|e| match e {
        coffer_repo::RepoError::Source(m) => EngineError::Step(m),
        other => EngineError::Repo(other),
    })?;
    tracing::info!(
        "Galera SST from {} stored; the donor was out of Synced for {:.1}s",
        donor.as_deref().unwrap_or("the donor"),
        blocked.as_secs_f64()
    );
    Ok(GaleraOutcome {
        snapshot,
        donor,
        donor_desynced: blocked,
    })
}

/// `mariabackup --backup --stream` of a standalone server on this machine.
/// mariabackup copies MariaDB's data files and redo log; MySQL's (8.0 and later, with its own
/// redo log and data dictionary) it cannot read, and would fail late, after a repository
/// was opened and part of a stream written. A MySQL server is refused before anything runs,
/// saying what backs it up instead.
pub(crate) fn only_mariadb(conn: &ConnSpec, info: &coffer_db::ServerInfo) -> EngineResult<()> {
    if info.is_mariadb {
        return Ok(());
    }
    Err(EngineError::Invalid {
        resource: conn.label.clone(),
        message: format!(
            "the server is MySQL {} (not MariaDB): a physical backup (method `physical`, \
             mariabackup) can only copy MariaDB servers; back it up logically instead: \
             task param `method: native`, or no method (mysqldump)",
            info.version
        ),
    })
}

pub fn physical_backup(
    repo: &Repo,
    conn: &ConnSpec,
    host: &str,
    session_tag: &str,
    app_tag: &str,
    db_wait: Duration,
    with_sums: bool,
) -> EngineResult<SnapshotInfo> {
    let clients = Clients::detect()?;
    let files = Arc::new(ClientFiles::new(conn, clients.flavor)?);
    let info = coffer_db::ping(conn, &files, db_wait)?;
    only_mariadb(conn, &info)?;
    let tools = PhysicalTools::detect()?;
    // The row counts and checksums a verification compares: a snapshot started while
    // mariabackup blocks commits, kept if its position is the one mariabackup records.
    let (pos_tx, pos_rx) = std::sync::mpsc::channel::<Option<String>>();
    let (watch, sums) = if with_sums {
        let (w, p) = crate::table_sums::for_mariabackup(conn, &files, pos_rx);
        (w, Some(p))
    } else {
        (None, None)
    };
    let mut stream = PhysicalStream::start_watching(&tools, files.clone(), &conn.label, watch)?;
    // mariabackup writes the position its data is consistent at near the stream's end.
    let late = coffer_repo::LateTags::default();
    let tags = crate::position::into_late_tags_at_server(&late, conn.clone(), files);
    stream.on_position(Box::new(move |p| {
        let _ = pos_tx.send(
            p.binlog_file
                .as_ref()
                .zip(p.binlog_position)
                .map(|(f, n)| format!("{f}:{n}")),
        );
        tags(p)
    }));
    let mut sources = vec![SourceFile::new(STREAM_PATH, stream)];
    sources.extend(sums.map(|p| p.into_source(crate::table_sums::path_for(STREAM_PATH))));
    repo.backup(
        sources,
        &SnapshotMeta {
            // Stash's path, whatever else the snapshot holds.
            paths: vec![STREAM_PATH.into()],
            host: host.to_string(),
            tags: vec![
                "coffer".into(),
                "method=mariabackup".into(),
                session_tag.to_string(),
                app_tag.to_string(),
                format!("server-version={}", info.version),
            ],
            late_tags: late,
        },
    )
    .map_err(|e| match e {
        coffer_repo::RepoError::Source(m) => EngineError::Step(m),
        other => EngineError::Repo(other),
    })
}

/// What a physical restore does to each replica's data directory.
pub struct PhysicalRestore {
    pub data_dir_template: String,
    pub replicas: u32,
    pub replace: bool,
    pub keep_cluster_uuid: bool,
    pub owner: Option<String>,
    pub galera: bool,
    /// The data directory is the root of a volume (a replica's PVC mounted there): the new
    /// tree is built inside it and swapped in entry by entry (see volume_swap.rs).
    pub volume_root: bool,
}

/// How the prepared tree takes the data directory's place.
enum Swap {
    Dir(crate::swap::DirSwap),
    Volume(crate::volume_swap::VolumeSwap),
}

impl Swap {
    fn recover(&self) -> Result<Vec<String>, String> {
        match self {
            Swap::Dir(s) => s.recover(),
            Swap::Volume(s) => s.recover(),
        }
    }
    fn staging(&self) -> PathBuf {
        match self {
            Swap::Dir(s) => s.staging().to_path_buf(),
            Swap::Volume(s) => s.staging(),
        }
    }
    fn commit(&self) -> Result<(), String> {
        match self {
            Swap::Dir(s) => s.commit(),
            Swap::Volume(s) => s.commit(),
        }
    }
}

impl PhysicalRestore {
    pub fn from_task(
        task: &ResolvedTask,
        replicas: u32,
        galera: bool,
        label: &str,
    ) -> EngineResult<PhysicalRestore> {
        let dir = task
            .param("dataDir")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| EngineError::Invalid {
                resource: label.into(),
                message: "a physical snapshot restores into data directories: set the task param \
                      `dataDir` (with ${POD_ORDINAL} when target.replicas > 1), e.g. \
                      /var/lib/mysql-restore-${POD_ORDINAL}"
                    .into(),
            })?;
        if replicas > 1 && !dir.contains("${POD_ORDINAL}") {
            return Err(EngineError::Invalid {
                resource: label.into(),
                message: format!("task param dataDir `{dir}` must contain ${{POD_ORDINAL}} for {replicas} replicas"),
            });
        }
        Ok(PhysicalRestore {
            data_dir_template: dir.to_string(),
            replicas,
            replace: task.typed.replace_data_dir,
            keep_cluster_uuid: task.typed.keep_cluster_uuid,
            owner: task
                .param("owner")
                .filter(|o| !o.is_empty())
                .map(String::from),
            galera,
            volume_root: false,
        })
    }

    pub fn dir(&self, ordinal: u32) -> EngineResult<PathBuf> {
        let mut vars = BTreeMap::new();
        vars.insert("POD_ORDINAL".to_string(), ordinal.to_string());
        envsubst::substitute(&self.data_dir_template, &vars)
            .map(PathBuf::from)
            .map_err(EngineError::Step)
    }
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// One restored replica.
pub struct RestoredReplica {
    pub dir: PathBuf,
    pub bytes: u64,
    /// The Galera position of the prepared data, if it is a Galera backup.
    pub position: Option<(String, i64)>,
}

/// Restores one replica: download into a staging directory beside the target, extract,
/// prepare, write Galera state; only then does the prepared directory replace the target.
pub fn restore_replica(
    repo: &Repo,
    snapshot: &str,
    plan: &PhysicalRestore,
    ordinal: u32,
    label: &str,
) -> EngineResult<RestoredReplica> {
    restore_replica_then(repo, snapshot, plan, ordinal, label, &|_| Ok(()))
}

/// [`restore_replica`], with `then` run on the prepared directory before it replaces the
/// target (a point-in-time restore replays the archive there): if it fails, the target is
/// left as it was.
pub fn restore_replica_then(
    repo: &Repo,
    snapshot: &str,
    plan: &PhysicalRestore,
    ordinal: u32,
    label: &str,
    then: &dyn Fn(&Path) -> EngineResult<()>,
) -> EngineResult<RestoredReplica> {
    let dir = plan.dir(ordinal)?;
    if plan.volume_root && !dir.is_dir() {
        return Err(EngineError::Invalid {
            resource: label.into(),
            message: format!(
                "no volume is mounted at {} (spec.target.volumeMounts): the replica's PVC \
                 must be mounted there",
                dir.display()
            ),
        });
    }
    let swap = if plan.volume_root {
        Swap::Volume(crate::volume_swap::VolumeSwap::new(&dir))
    } else {
        Swap::Dir(crate::swap::DirSwap::new(&dir))
    };
    // An earlier restore of this directory may have been interrupted: its leftovers are
    // resolved first, so that the checks below see the data directory it left.
    swap.recover().map_err(EngineError::Step)?;
    let holds_data = match &swap {
        Swap::Dir(_) => dir.exists() && !is_empty_dir(&dir),
        Swap::Volume(v) => !v.is_empty(),
    };
    if holds_data && !plan.replace {
        return Err(EngineError::Invalid {
            resource: label.into(),
            message: format!(
                "data directory {} is not empty; set the task param replaceDataDir: \"true\" to \
                 replace it (it is replaced only after the new one is complete)",
                dir.display()
            ),
        });
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .map_err(|e| EngineError::Step(format!("cannot create {}: {e}", parent.display())))?;
    let staging = swap.staging();
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| EngineError::Step(format!("cannot clear {}: {e}", staging.display())))?;
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| EngineError::Step(format!("cannot create {}: {e}", staging.display())))?;
    let result = (|| {
        let tools = PhysicalTools::detect()?;
        let mut ex = Extractor::start(&tools, &staging, label)?;
        let bytes = match repo.dump(snapshot, STREAM_PATH, &mut ex) {
            Ok(b) => b,
            Err(e) => {
                return Err(ex.abort().map_or(EngineError::Repo(e), EngineError::Db));
            }
        };
        ex.finish()?;
        physical::prepare(&tools, &staging, label)?;
        let pos = physical::prepared_galera_position(&staging);
        if plan.galera {
            match (&pos, plan.keep_cluster_uuid) {
                (Some((uuid, seqno)), true) => {
                    physical::write_grastate(&staging, uuid, *seqno, ordinal == 0)
                        .map_err(|e| EngineError::Step(e.to_string()))?
                }
                // A new history: the node bootstraps (or joins) without the old cluster's UUID.
                _ => {
                    let _ = std::fs::remove_file(staging.join("grastate.dat"));
                }
            }
        }
        then(&staging)?;
        if let Some(owner) = &plan.owner {
            let out = std::process::Command::new("chown")
                .arg("-R")
                .arg(format!("{owner}:{owner}"))
                .arg(&staging)
                .output()
                .map_err(|e| EngineError::Step(format!("chown: {e}")))?;
            if !out.status.success() {
                return Err(EngineError::Step(format!(
                    "chown -R {owner} {} failed: {}",
                    staging.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok((bytes, pos))
    })();
    let (bytes, pos) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The old directory goes only now that the new one is complete and prepared, and a
    // crash at any point of the swap leaves a complete data directory or a journal that the
    // next restore resolves (see swap.rs).
    if let Err(e) = swap.commit() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(EngineError::Step(e));
    }
    Ok(RestoredReplica {
        dir,
        bytes,
        position: pos,
    })
}

/// The hosts of a `gcomm://host[:port],...[?options]` cluster address, ports dropped.
pub(crate) fn gcomm_hosts(address: &str) -> Vec<String> {
    address
        .trim_start_matches("gcomm://")
        .split('?')
        .next()
        .unwrap_or("")
        .split(',')
        .map(|a| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str) -> coffer_db::ServerInfo {
        coffer_db::ServerInfo {
            version: version.into(),
            is_mariadb: version.contains("MariaDB"),
            log_bin: true,
        }
    }

    #[test]
    fn a_physical_backup_of_mysql_is_refused_naming_what_to_use() {
        let conn = ConnSpec {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: "secret-pw".into(),
            tls: None,
            label: "AppBinding demo/shop".into(),
        };
        assert!(only_mariadb(&conn, &info("10.11.19-MariaDB-log")).is_ok());
        let e = only_mariadb(&conn, &info("9.7.4")).unwrap_err().to_string();
        for want in [
            "AppBinding demo/shop",
            "MySQL 9.7.4",
            "mariabackup",
            "native",
        ] {
            assert!(e.contains(want), "{want} missing: {e}");
        }
        assert!(!e.contains("secret-pw"), "{e}");
    }
}
