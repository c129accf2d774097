//! Which servers an archive may read, and the facts about a server the runner asks for
//! outside the replication stream (its current GTID position, where its oldest binlog
//! starts, how long it keeps binlogs).
//!
//! A standalone AppBinding names one server. A Galera AppBinding names one node; the
//! cluster's other nodes are read from it (`wsrep_incoming_addresses`) when the archive
//! starts and kept for the whole run, so the archive can move to another node when the one
//! it reads dies. Which node is eligible is decided by GTIDs alone (pitr.md §5): the stream's
//! `open` refuses a node whose binlog lacks an archived domain or has not reached the
//! archived state.

use coffer_api::{
    appbinding::AppBinding,
    gtid::{Flavour, GtidState},
};
use coffer_control::pitr::BinlogRetention;
use coffer_db::{
    binlog::checks::detect_flavour, mysql_prelude::Queryable, ClientFiles, ClientFlavor, ConnSpec,
    DbError,
};

use crate::{
    catalog::Catalog,
    error::{EngineError, EngineResult},
};

/// One server the archive may read, with its client files (TLS material).
pub struct Node {
    pub spec: ConnSpec,
    pub files: ClientFiles,
}

impl Node {
    fn new(spec: ConnSpec) -> EngineResult<Node> {
        let files = ClientFiles::new(&spec, ClientFlavor::MariaDb)?;
        Ok(Node { spec, files })
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        self.spec.address()
    }
}

/// The servers of an AppBinding, the AppBinding's own first.
pub fn nodes(cat: &dyn Catalog, ab: &AppBinding) -> EngineResult<Vec<Node>> {
    let spec = crate::resolve::conn_spec(cat, ab)?;
    let Some(g) = ab.spec.galera() else {
        return Ok(vec![Node::new(spec)?]);
    };
    let files = ClientFiles::new(&spec, ClientFlavor::MariaDb)?;
    let gcomm_hosts = crate::physical::gcomm_hosts(&g.address);
    let members = match crate::physical::cluster_members(&spec, &files, &g.group, &gcomm_hosts) {
        Ok(m) => m,
        // The AppBinding's node is down: read it alone; reconnecting retries it, and the
        // next run learns the cluster again.
        Err(EngineError::Db(e)) => {
            tracing::warn!(
                "cannot list the nodes of Galera cluster `{}` from {}: {e}; reading that node only",
                g.group,
                spec.address()
            );
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut out = vec![Node {
        spec: spec.clone(),
        files,
    }];
    for m in members {
        if m.conn.address() == spec.address() {
            continue;
        }
        let mut s = m.conn;
        s.label = format!("{} (Galera node {} at {})", spec.label, m.name, s.address());
        tracing::info!("Galera node {} ({}) at {}", m.name, m.state, s.address());
        out.push(Node::new(s)?);
    }
    Ok(out)
}

/// What the runner asks a server outside the stream.
pub struct Facts;

impl Facts {
    /// The state after the last transaction in the server's binlog: MariaDB's
    /// `@@gtid_binlog_pos`, MySQL's `@@gtid_executed`.
    pub fn binlog_pos(node: &Node) -> Result<GtidState, DbError> {
        let mut c = coffer_db::connect_control(&node.spec, &node.files)?;
        let statement = position_statement(&node.spec, &mut c)?;
        let pos: Option<String> = c
            .query_first(statement)
            .map_err(|e| coffer_db::conn::classify(&node.spec, &e))?;
        parse_state(&node.spec, pos.unwrap_or_default())
    }

    /// The GTID state at the start of the server's oldest binlog file: the earliest state a
    /// stream can start from (MySQL: `@@gtid_purged`, exactly that). None when the server
    /// cannot say.
    pub fn oldest_binlog_start(node: &Node) -> Result<Option<GtidState>, DbError> {
        let mut c = coffer_db::connect_control(&node.spec, &node.files)?;
        if flavour(&node.spec, &mut c)? == Flavour::MySql {
            let purged: Option<String> = c
                .query_first("SELECT @@gtid_purged")
                .map_err(|e| coffer_db::conn::classify(&node.spec, &e))?;
            return parse_state(&node.spec, purged.unwrap_or_default()).map(Some);
        }
        // Log_name, File_size.
        let logs: Vec<(String, u64)> = c
            .query("SHOW BINARY LOGS")
            .map_err(|e| coffer_db::conn::classify(&node.spec, &e))?;
        let first = logs.into_iter().next().map(|l| l.0);
        let Some(first) = first else {
            return Ok(None);
        };
        // The file name comes from the server; it is passed as a bound parameter.
        let pos: Option<Option<String>> = c
            .exec_first("SELECT BINLOG_GTID_POS(?, 4)", (first,))
            .map_err(|e| coffer_db::conn::classify(&node.spec, &e))?;
        match pos.flatten() {
            Some(p) => parse_state(&node.spec, p).map(Some),
            None => Ok(None),
        }
    }

    /// How long the server keeps binlogs.
    pub fn retention(node: &Node) -> BinlogRetention {
        let read = || -> Result<BinlogRetention, DbError> {
            let mut c = coffer_db::connect_control(&node.spec, &node.files)?;
            let days: Option<Option<String>> = c
                .query_first("SELECT @@expire_logs_days")
                .map_err(|e| coffer_db::conn::classify(&node.spec, &e))?;
            // MariaDB before 10.6 and MySQL 5.7 have no binlog_expire_logs_seconds.
            let secs: Option<u64> = c
                .query_first::<Option<u64>, _>("SELECT @@binlog_expire_logs_seconds")
                .ok()
                .flatten()
                .flatten();
            Ok(BinlogRetention::from_server(
                days.flatten().and_then(|d| d.parse().ok()),
                secs,
            ))
        };
        read().unwrap_or(BinlogRetention::Unknown)
    }
}

/// The statement that reads the state after the last transaction in the server's binlog.
pub(crate) fn position_statement(
    spec: &ConnSpec,
    c: &mut coffer_db::MysqlConn,
) -> Result<&'static str, DbError> {
    Ok(match flavour(spec, c)? {
        Flavour::MariaDb => "SELECT @@gtid_binlog_pos",
        Flavour::MySql => "SELECT @@gtid_executed",
    })
}

/// MariaDB or MySQL, from `@@version`.
fn flavour(spec: &ConnSpec, c: &mut coffer_db::MysqlConn) -> Result<Flavour, DbError> {
    let version: Option<String> = c
        .query_first("SELECT @@version")
        .map_err(|e| coffer_db::conn::classify(spec, &e))?;
    Ok(detect_flavour(&version.unwrap_or_default()))
}

fn parse_state(spec: &ConnSpec, s: String) -> Result<GtidState, DbError> {
    s.parse().map_err(|e| DbError::Query {
        target: spec.label.clone(),
        reason: format!("its GTID position `{s}` cannot be read: {e}"),
    })
}
