//! Restore to a point (issue #12): the base backup and the archive's segments a
//! RestoreSession's `spec.target.pointInTime` needs, and the replay up to it.
//!
//! The plan is coffer-control's ([`plan_restore`]), over the archive's listing plus the
//! full index of only the segments a restore can start or stop in ([`segments_to_read`]).
//! The base is restored by the ordinary restore paths; the replay then goes either through
//! the SQL thread of a private server on a physical restore's data directory (relay logs,
//! the fast way, MariaDB only), or through `mariadb-binlog | mariadb` (MySQL: MySQL's
//! `mysqlbinlog`) into any server.

use std::{collections::BTreeMap, path::Path};

use coffer_api::{
    archive::BinlogArchive,
    gtid::{Flavour, GtidState, SegmentMeta},
    meta::ObjectRef,
    restore::{PointInTime, PointInTimeStatus, PointInTimeTarget, RestoreSession},
    Kind, Resource,
};
use coffer_control::pitr::{
    plan_restore, rfc3339, segments_to_read, stand_in, BaseBackup, Listed, RestorePlan,
};
use coffer_db::{
    binlog::replay::{self, Cut, RelayOptions, RelayServer},
    ClientFiles, Clients, ConnSpec, LoadSink,
};
use coffer_repo::{Repo, SnapshotInfo};

use crate::{
    archive::SegmentStore,
    catalog::Catalog,
    error::{EngineError, EngineResult},
};

/// The tag naming the AppBinding a base backup was taken of (`app=<namespace>/<name>`).
pub const APP_TAG: &str = "app=";
/// The tag holding the GTID state a base backup is consistent at.
pub const GTID_TAG: &str = "gtid=";

/// The archive a point-in-time restore replays, and the repository both it and the base
/// backups live in.
pub struct Archive {
    pub name: String,
    pub resource: BinlogArchive,
    pub repository: ObjectRef,
    pub target: PointInTimeTarget,
}

/// Finds the archive; the RestoreSession's repository must be the archive's (or unset).
pub fn resolve(
    cat: &dyn Catalog,
    rs: &RestoreSession,
    pit: &PointInTime,
    label: &str,
) -> EngineResult<Archive> {
    let ns = rs.metadata.namespace();
    let invalid = |message: String| EngineError::Invalid {
        resource: label.to_string(),
        message,
    };
    let target = pit.target().map_err(|problems| {
        invalid(
            problems
                .iter()
                .map(|(f, m)| format!("spec.target.pointInTime{}{f}: {m}", dot(f)))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let resource = get_archive(
        cat,
        ns,
        &pit.archive,
        format!("spec.target.pointInTime.archive of {label}"),
    )?;
    let mut repository = resource.spec.repository.clone();
    repository.namespace.get_or_insert_with(|| ns.to_string());
    let given = &rs.spec.repository;
    if !given.name.is_empty()
        && (given.name != repository.name
            || given.namespace.as_deref().unwrap_or(ns)
                != repository.namespace.as_deref().unwrap_or(ns))
    {
        return Err(invalid(format!(
            "spec.repository is {}/{}, but BinlogArchive {ns}/{} archives into {}/{}: a \
             point-in-time restore takes its base backup from the archive's repository; set \
             spec.repository to it (or leave it out)",
            given.namespace.as_deref().unwrap_or(ns),
            given.name,
            pit.archive,
            repository.namespace.as_deref().unwrap_or(ns),
            repository.name
        )));
    }
    Ok(Archive {
        name: format!("{ns}/{}", pit.archive),
        resource,
        repository,
        target,
    })
}

/// The BinlogArchive `ns/name`, or an error naming the field that referred to it.
fn get_archive(
    cat: &dyn Catalog,
    ns: &str,
    name: &str,
    referenced_by: String,
) -> EngineResult<coffer_api::archive::BinlogArchive> {
    match cat
        .get(Kind::BinlogArchive, ns, name)
        .map_err(EngineError::Catalog)?
    {
        Some(Resource::BinlogArchive(a)) => Ok(a),
        _ => Err(EngineError::Missing {
            kind: Kind::BinlogArchive,
            namespace: ns.into(),
            name: name.into(),
            referenced_by,
        }),
    }
}

/// The archive spec.verification.binlogArchive names, for a verification to replay to
/// `latest`. It must archive the configuration's AppBinding into its Repository (the
/// snapshots it continues are there); the error names both resources otherwise.
pub fn resolve_for_verification(
    cat: &dyn Catalog,
    bc: &coffer_api::backup::BackupConfiguration,
    name: &str,
    label: &str,
) -> EngineResult<Archive> {
    let ns = bc.metadata.namespace();
    let field = "spec.verification.binlogArchive";
    let resource = get_archive(cat, ns, name, format!("{field} of {label}"))?;
    let target = bc.spec.target.as_ref().map(|t| &t.ref_);
    if let Some(why) = resource
        .spec
        .mismatch_with(ns, ns, target, &bc.spec.repository)
    {
        return Err(EngineError::Invalid {
            resource: label.to_string(),
            message: format!(
                "{field}: BinlogArchive {ns}/{name} cannot serve this configuration's \
                 verification: {why}; name an archive of this configuration's AppBinding and \
                 Repository"
            ),
        });
    }
    let mut repository = resource.spec.repository.clone();
    repository.namespace.get_or_insert_with(|| ns.to_string());
    Ok(Archive {
        name: format!("{ns}/{name}"),
        resource,
        repository,
        target: PointInTimeTarget::Latest,
    })
}

fn dot(f: &str) -> &'static str {
    if f.is_empty() {
        ""
    } else {
        "."
    }
}

/// What kind of snapshot the restore path can take as its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// A `mariabackup` stream (or a Galera SST): restored into a data directory.
    Physical,
    /// A dump or a native snapshot, loaded into a server.
    Logical,
    /// Only a native snapshot (the task asks for `method: native`).
    Native,
}

/// The snapshots that can be a base: tagged with the GTID state they hold, of the archive's
/// AppBinding, of the kind the restore path takes, and the one the rule names if it names
/// one. A snapshot without an `app=` tag (taken before coffer tagged them) is a candidate
/// too: the plan accepts it only if its GTID state — every GTID, server id included — is a
/// state of the archive's history, which another server's backup is not.
pub fn bases(
    snapshots: &[SnapshotInfo],
    app: &str,
    kind: BaseKind,
    named: Option<&str>,
) -> Vec<BaseBackup> {
    let tag = |s: &SnapshotInfo, p: &str| {
        s.tags
            .iter()
            .find_map(|t| t.strip_prefix(p).map(str::to_string))
    };
    snapshots
        .iter()
        .filter(|s| tag(s, APP_TAG).is_none_or(|a| a == app))
        .filter(|s| {
            // A base named by the id it had before its tags changed (a verification tags).
            named.is_none_or(|n| {
                s.id.starts_with(n) || s.original.as_ref().is_some_and(|o| o.starts_with(n))
            })
        })
        .filter(|s| {
            let has = |p: &str| s.paths.iter().any(|x| x == p);
            match kind {
                BaseKind::Physical => has(crate::physical::STREAM_PATH),
                BaseKind::Logical => has(crate::backup::DUMP_PATH) || has(coffer_db::native::DIR),
                BaseKind::Native => has(coffer_db::native::DIR),
            }
        })
        .filter_map(|s| {
            let state: GtidState = tag(s, GTID_TAG)?.parse().ok()?;
            Some(BaseBackup {
                snapshot: s.id.clone(),
                time: s.unix_time,
                state,
            })
        })
        .collect()
}

/// A planned point-in-time restore.
pub struct Planned {
    pub store: SegmentStore,
    pub plan: RestorePlan,
    /// The full index of the segments the replay starts and stops in.
    pub read: BTreeMap<u64, SegmentMeta>,
}

/// Plans in two passes: the listing, then the full index of the segments the restore can
/// start or stop in (and any other the plan then starts or stops in). A plan that cannot be
/// made is an error of `label`'s `field` (the one that asked for the point).
pub fn plan(
    store: SegmentStore,
    target: &PointInTimeTarget,
    bases: &[BaseBackup],
    label: &str,
    field: &str,
) -> EngineResult<Planned> {
    let listing = store.list()?;
    let listed: Vec<Listed> = listing
        .iter()
        .map(|s| Listed {
            meta: &s.meta,
            first_time: s.first_time,
            last_time: s.last_time,
        })
        .collect();
    let mut read: BTreeMap<u64, SegmentMeta> = BTreeMap::new();
    let mut want = segments_to_read(&listed, target, bases);
    loop {
        for seq in want {
            if let std::collections::btree_map::Entry::Vacant(e) = read.entry(seq) {
                e.insert(store.meta(seq)?);
            }
        }
        let metas: Vec<SegmentMeta> = listed
            .iter()
            .map(|l| {
                read.get(&l.meta.seq)
                    .cloned()
                    .unwrap_or_else(|| stand_in(l))
            })
            .collect();
        let plan = plan_restore(store.archive(), target, bases, &metas).map_err(|e| {
            EngineError::Invalid {
                resource: label.to_string(),
                message: format!("{field}: {e}"),
            }
        })?;
        let ends = [
            plan.start.as_ref().map(|s| s.segment),
            plan.stop.as_ref().map(|s| s.segment),
        ];
        want = ends
            .into_iter()
            .flatten()
            .filter(|s| !read.contains_key(s))
            .collect();
        if want.is_empty() {
            // A base of one family cannot be continued by an archive of the other.
            let family = |st: &GtidState| st.flavour();
            if let (Some(b), Some(a)) = (family(&plan.base.state), family(&plan.reached)) {
                if a != b {
                    return Err(EngineError::Invalid {
                        resource: label.to_string(),
                        message: format!(
                            "{field}: base backup {} holds a {b} GTID state ({}), but archive \
                             {} holds {a} binlogs",
                            plan.base.snapshot,
                            plan.base.state,
                            store.archive()
                        ),
                    });
                }
            }
            tracing::info!(
                "point in time: base {} ({}), {} segment(s) to replay, {} index(es) read of {}",
                plan.base.snapshot,
                plan.base.state,
                plan.segments.len(),
                read.len(),
                listing.len()
            );
            return Ok(Planned { store, plan, read });
        }
    }
}

impl Planned {
    /// Whose binlogs the replay applies: MariaDB's unless a state of the plan or of a read
    /// segment is MySQL's (an empty archive's states say nothing; nothing is replayed then).
    pub fn flavour(&self) -> Flavour {
        let states = [&self.plan.reached, &self.plan.base.state]
            .into_iter()
            .chain(
                self.read
                    .values()
                    .flat_map(|m| [&m.start_state, &m.end_state]),
            );
        states
            .filter_map(GtidState::flavour)
            .next()
            .unwrap_or(Flavour::MariaDb)
    }
}

/// The status of the restore once the replay reached its stop.
pub fn status(p: &Planned) -> PointInTimeStatus {
    PointInTimeStatus {
        base_snapshot: Some(p.plan.base.snapshot.clone()),
        reached_gtid: Some(p.plan.reached.clone()),
        last_transaction_time: p.plan.stop.as_ref().map(|s| rfc3339(s.time)),
        segments: Some(p.plan.segments.len() as u64),
        note: p
            .plan
            .stopped_before
            .as_ref()
            .map(|g| format!("stopped at the last transaction before a gap in the archive: {g}")),
    }
}

/// Which bytes of segment `seq` the replay applies.
fn cut(plan: &RestorePlan, seq: u64) -> Cut {
    Cut {
        from: plan
            .start
            .as_ref()
            .filter(|s| s.segment == seq)
            .and_then(|s| s.offset),
        to: plan
            .stop
            .as_ref()
            .filter(|s| s.segment == seq)
            .map(|s| s.offset),
    }
}

fn io_err(e: coffer_repo::RepoError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Replays the plan into a running server through `mariadb-binlog | mariadb` (a MySQL
/// archive: MySQL's `mysqlbinlog | client`), one decoder per segment into one client
/// session, then records the reached state: MariaDB as `gtid_slave_pos` (the replay leaves
/// it untouched on a server without binlog: pitr.md §4 trap 5); MySQL in `gtid_executed`,
/// which the replayed `SET GTID_NEXT`s fill on a target with `gtid_mode=ON` (checked after).
/// Returns a note when the state could not be recorded.
pub fn replay_pipe(p: &Planned, conn: &ConnSpec) -> EngineResult<Option<String>> {
    if p.plan.segments.is_empty() {
        return Ok(None);
    }
    let flavour = p.flavour();
    let mut tool = replay::binlog_tool(flavour)?;
    let clients = Clients::detect()?;
    let files = std::sync::Arc::new(ClientFiles::new(conn, clients.flavor)?);
    use coffer_db::mysql_prelude::Queryable;
    if flavour == Flavour::MySql {
        // MySQL's GTIDs are replayed as GTID_NEXT, which a target with gtid_mode other
        // than ON refuses: there they are left out, and the reached state is not recorded.
        let mode: Option<String> = coffer_db::connect_control(conn, &files).and_then(|mut c| {
            c.query_first("SELECT @@GLOBAL.gtid_mode")
                .map_err(|e| coffer_db::conn::classify(conn, &e))
        })?;
        tool.skip_gtids = mode.as_deref() != Some("ON");
        if !tool.skip_gtids {
            record_base_gtids(conn, &files, &p.plan.base.state)?;
        }
        tracing::info!(
            "MySQL archive: replaying through {} into {} (the relay-log replay is MariaDB's \
             only){}",
            tool.path.display(),
            conn.label,
            if tool.skip_gtids {
                ", without GTIDs: the target's gtid_mode is not ON"
            } else {
                ""
            }
        );
    }
    let mut sink = LoadSink::start(&clients, conn, files.clone(), &[])?;
    for &seq in &p.plan.segments {
        let store = p.store.clone();
        let r = replay::pipe_segment(&tool, &mut sink, cut(&p.plan, seq), move |w| {
            store.read(seq, w).map_err(io_err)
        });
        if let Err(e) = r {
            let said = sink.abort();
            return Err(EngineError::Step(format!(
                "replaying segment {seq} of archive {} into {}: {e}{}",
                p.store.archive(),
                conn.label,
                if said.is_empty() {
                    String::new()
                } else {
                    format!("; the client said: {said}")
                }
            )));
        }
        tracing::info!("segment {seq} replayed");
    }
    sink.finish()?;
    let reached = &p.plan.reached;
    if flavour == Flavour::MySql {
        if tool.skip_gtids {
            return Ok(Some(format!(
                "the target's gtid_mode is not ON: the replayed transactions carry no GTIDs \
                 there, and the reached state {reached} is not recorded in its gtid_executed"
            )));
        }
        let executed: Option<String> =
            coffer_db::connect_control(conn, &files).and_then(|mut c| {
                c.query_first("SELECT @@GLOBAL.gtid_executed")
                    .map_err(|e| coffer_db::conn::classify(conn, &e))
            })?;
        let text = executed.unwrap_or_default().replace('\n', "");
        let covers = text.parse::<GtidState>().is_ok_and(|st| st.covers(reached));
        if !covers {
            return Err(EngineError::Step(format!(
                "after replaying archive {} into {}, its gtid_executed is `{text}`, which \
                 does not hold the reached state {reached}: transactions were skipped or lost",
                p.store.archive(),
                conn.label
            )));
        }
        return Ok(None);
    }
    let set = coffer_db::connect_control(conn, &files).and_then(|mut c| {
        c.query_drop(format!("SET GLOBAL gtid_slave_pos = '{reached}'"))
            .map_err(|e| coffer_db::conn::classify(conn, &e))
    });
    Ok(set.err().map(|e| {
        tracing::warn!("the replay is complete, but gtid_slave_pos was not set: {e}");
        format!(
            "gtid_slave_pos could not be set to {reached} ({e}); set it before making this \
             server a replica"
        )
    }))
}

/// A MySQL base's GTID set, which a native or mysqldump load does not carry over, added to
/// the target's `gtid_purged` before the replay: the replayed GTIDs then continue it, and
/// the target's gtid_executed is the reached state (not only the replayed part). Skipped
/// when the target already holds it (a load that set GTID_PURGED itself).
fn record_base_gtids(conn: &ConnSpec, files: &ClientFiles, base: &GtidState) -> EngineResult<()> {
    use coffer_db::mysql_prelude::Queryable;
    if base.0.is_empty() {
        return Ok(());
    }
    let mut c = coffer_db::connect_control(conn, files)?;
    let executed: Option<String> = c
        .query_first("SELECT @@GLOBAL.gtid_executed")
        .map_err(|e| coffer_db::conn::classify(conn, &e))?;
    let text = executed.unwrap_or_default().replace('\n', "");
    if text.parse::<GtidState>().is_ok_and(|st| st.covers(base)) {
        return Ok(());
    }
    // The set comes from the backup's own tag, parsed: uuids and numbers only.
    c.query_drop(format!("SET GLOBAL gtid_purged = '+{base}'"))
        .map_err(|e| {
            EngineError::Step(format!(
                "recording the base backup's GTID set {base} in the gtid_purged of {} before \
                 the replay: {} — a target whose gtid_executed overlaps it cannot take this \
                 restore; use a fresh server",
                conn.label,
                coffer_db::conn::classify(conn, &e)
            ))
        })
}

/// Replays the plan into the prepared data directory `datadir` with a private server's SQL
/// thread: each segment is placed (cut) as a relay log, applied with
/// `slave_parallel_mode=optimistic` and min(cores, 16) threads up to the stop's source
/// position, checked, and the replica configuration removed again.
pub fn replay_relay(p: &Planned, datadir: &Path, label: &str) -> EngineResult<()> {
    if p.plan.segments.is_empty() {
        return Ok(());
    }
    if p.flavour() == Flavour::MySql {
        return Err(EngineError::Invalid {
            resource: label.to_string(),
            message: format!(
                "archive {} holds MySQL binlogs: the replay into a data directory (a private \
                 mariadbd's SQL thread over relay logs) is MariaDB's only; restore a logical or \
                 native base into a running MySQL server instead (the replay then pipes \
                 MySQL's mysqlbinlog into it)",
                p.store.archive()
            ),
        });
    }
    let place = |n: usize, seq: u64| -> EngineResult<()> {
        let path = RelayServer::relay_path(datadir, n);
        let f = std::fs::File::create(&path)
            .map_err(|e| EngineError::Step(format!("cannot create {}: {e}", path.display())))?;
        let mut t = replay::Trim::new(std::io::BufWriter::new(f), cut(&p.plan, seq));
        p.store.read(seq, &mut t)?;
        use std::io::Write;
        t.flush()
            .map_err(|e| EngineError::Step(format!("cannot write {}: {e}", path.display())))?;
        Ok(())
    };
    for (i, &seq) in p.plan.segments.iter().enumerate() {
        place(i + 1, seq)?;
    }
    RelayServer::write_index(datadir, p.plan.segments.len())
        .map_err(|e| EngineError::Step(format!("cannot write the relay log index: {e}")))?;
    let stop = p
        .plan
        .stop
        .as_ref()
        .expect("segments to replay have a stop");
    let stop_meta = &p.read[&stop.segment];
    let source_end = stop_meta
        .transactions
        .iter()
        .find(|t| t.gtid == stop.gtid)
        .map(|t| t.source_end)
        .filter(|e| *e > 0);
    // UNTIL compares source file names by their number: only meaningful when the replayed
    // files come from one server's one sequence. The last relay log ends at the stop anyway.
    let until = source_end
        .filter(|_| files_in_order(p))
        .map(|e| (stop_meta.source_file.as_str(), e));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let opts = RelayOptions {
        server_id: replay_server_id(p),
        parallel_threads: cores.clamp(1, 16),
    };
    let mut stop_state = GtidState::default();
    stop_state.advance(stop.gtid);
    let mut server = RelayServer::start(datadir, opts, label)?;
    server.apply(until, &stop_state, &p.plan.reached)?;
    server.shutdown()?;
    Ok(())
}

/// Every replayed segment comes from the same server, and their files in ascending order.
fn files_in_order(p: &Planned) -> bool {
    let known: Vec<&SegmentMeta> = p.read.values().collect();
    let same_server = known
        .windows(2)
        .all(|w| w[0].source_server_id == w[1].source_server_id);
    let files: Vec<&str> = known.iter().map(|m| m.source_file.as_str()).collect();
    same_server && files.windows(2).all(|w| w[0] <= w[1])
}

/// A server_id for the private server that no replayed event carries (pitr.md §4 trap 4).
fn replay_server_id(p: &Planned) -> u32 {
    let mut used: std::collections::BTreeSet<u32> = p
        .read
        .values()
        .flat_map(|m| {
            std::iter::once(m.source_server_id)
                .chain(m.transactions.iter().map(|t| t.gtid.server))
                .chain(m.start_state.0.values().map(|g| g.server))
                .chain(m.end_state.0.values().map(|g| g.server))
        })
        .collect();
    used.extend(p.plan.reached.0.values().map(|g| g.server));
    (1..u32::MAX)
        .rev()
        .find(|id| !used.contains(id))
        .unwrap_or(1)
}

/// The archive's store in the opened repository.
pub fn store(repo: &Repo, archive: &Archive) -> SegmentStore {
    SegmentStore::new(repo.clone(), &archive.name)
}

/// `namespace/name` of the archive's AppBinding, as base backups are tagged.
pub fn app_of(archive: &Archive) -> String {
    let spec = &archive.resource.spec.app_binding;
    let ns = spec
        .namespace
        .as_deref()
        .unwrap_or(archive.resource.metadata.namespace());
    format!("{ns}/{}", spec.name)
}
