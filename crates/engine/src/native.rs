//! The native logical path in the engine: a parallel consistent dump into one snapshot of
//! many files, and a parallel load back, checked against the dump's manifest.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use coffer_db::{
    native::{self, LoadOptions, LoadReport, Manifest, NativeDump, NativeDumpOptions, Schema},
    ClientFiles, Clients, ConnSpec,
};
use coffer_repo::{Repo, SnapshotInfo, SnapshotMeta, SourceFile};

use crate::{
    error::{EngineError, EngineResult},
    tasks::ResolvedTask,
};

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Connections: the task's `connections`, else `default`.
fn connections(task: &ResolvedTask, default: usize) -> usize {
    task.typed
        .connections
        .map(|c| c as usize)
        .unwrap_or(default.clamp(1, 64))
}

pub fn native_backup(
    repo: &Repo,
    conn: &ConnSpec,
    task: &ResolvedTask,
    host: &str,
    // The session's and the AppBinding's tags.
    origin_tags: [&str; 2],
    db_wait: Duration,
    with_sums: bool,
) -> EngineResult<SnapshotInfo> {
    let clients = Clients::detect()?;
    let files = ClientFiles::new(conn, clients.flavor)?;
    let info = coffer_db::ping(conn, &files, db_wait)?;
    let opts = NativeDumpOptions {
        // One more than the cores: a worker waits on its server thread from time to time, and
        // the spare one keeps the cores busy (2 cores: 3 connections were 4-7 % faster than 2).
        connections: connections(task, cores() + 1),
        chunk_bytes: task.typed.chunk_mib.unwrap_or(64) << 20,
        databases: task.typed.databases.clone(),
        users: task.typed.users,
        // Pieces the repository stores whole skip its content-defined chunking, the largest
        // single cost of a backup.
        piece_bytes: repo.unchunked_file_limit()? as usize,
        extra_connection: with_sums,
    };
    let mut dump = NativeDump::prepare(conn, &files, &opts)?;
    let pos = dump.position().clone();
    tracing::info!(
        "native dump: {} chunks over {} connections; snapshot at binlog {}:{} gtid {}",
        dump.chunk_count(),
        opts.connections,
        pos.binlog_file.as_deref().unwrap_or("-"),
        pos.binlog_position
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        pos.gtid.as_deref().unwrap_or("-")
    );
    let mut tags = vec![
        "coffer".to_string(),
        "method=native".to_string(),
        origin_tags[0].to_string(),
        origin_tags[1].to_string(),
        format!("server-version={}", info.version),
    ];
    tags.extend(crate::position::position_tags(&pos));
    // The row counts and checksums a verification compares, read on one more connection
    // of the dump's own snapshot (see table_sums.rs).
    let sums = with_sums.then(|| {
        let (rec, pending) = crate::table_sums::pending("native");
        match dump.take_extra() {
            Some(c) => crate::table_sums::measure_in_background(
                c,
                pos.binlog_file
                    .as_ref()
                    .zip(pos.binlog_position)
                    .map(|(f, p)| format!("{f}:{p}")),
                crate::table_sums::Scope::databases(&opts.databases),
                rec,
            ),
            None => rec.fail("the dump opened no connection for the checksums".into()),
        }
        pending.into_source(crate::table_sums::NATIVE_PATH.into())
    });
    let sources = dump
        .stream()
        .map(|f| SourceFile {
            path: f.path,
            reader: f.reader,
            size: f.size,
        })
        .chain(sums);
    repo.backup_stream(
        Box::new(sources),
        &SnapshotMeta {
            host: host.to_string(),
            tags,
            paths: vec![native::DIR.to_string()],
            late_tags: Default::default(),
        },
    )
    .map_err(|e| match e {
        coffer_repo::RepoError::Source(m) => EngineError::Step(m),
        other => EngineError::Repo(other),
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    reader: &coffer_repo::SnapshotReader,
    path: &str,
) -> EngineResult<T> {
    let mut buf = Vec::new();
    reader.dump(path, &mut buf)?;
    serde_json::from_slice(&buf)
        .map_err(|e| EngineError::Step(format!("{path} in the snapshot is not readable: {e}")))
}

pub fn native_restore(
    repo: &Repo,
    snapshot: &str,
    conn: &ConnSpec,
    task: &ResolvedTask,
    db_wait: Duration,
) -> EngineResult<LoadReport> {
    let reader = Arc::new(repo.reader(snapshot)?);
    let schema: Schema = read_json(&reader, native::SCHEMA_PATH)?;
    let manifest: Manifest = read_json(&reader, native::MANIFEST_PATH)?;
    let clients = Clients::detect()?;
    let files = ClientFiles::new(conn, clients.flavor)?;
    coffer_db::ping(conn, &files, db_wait)?;
    let rename: BTreeMap<String, String> = task.typed.rename.iter().cloned().collect();
    let opts = LoadOptions {
        // A load waits on the server's I/O, so it gets more connections than a dump.
        connections: connections(task, 2 * cores()),
        databases: task.typed.databases.clone(),
        tables: task.typed.tables.clone(),
        rename,
        binlog: task.typed.binlog,
        users: task.typed.users,
    };
    let r = reader.clone();
    let fetch: native::load::Fetch = Arc::new(move |path: &str, w: &mut dyn std::io::Write| {
        r.dump(path, w).map_err(std::io::Error::other)
    });
    Ok(native::load(
        conn, &files, &schema, &manifest, fetch, &opts,
    )?)
}
