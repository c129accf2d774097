//! The MySQL family, as coffer reaches it: connections with verified TLS, and streaming
//! sources (mysqldump) and sinks (the mysql client). Nothing here knows about repositories.

pub mod binlog;
pub mod client;
pub mod conn;
pub mod galera;
pub mod global_lock;
pub mod mysql_client;
pub mod mysqldump;
pub mod native;
pub mod physical;
pub mod process;
pub mod redact;
pub mod sst_tls;
pub mod xbstream;

pub use client::Clients;
pub use conn::{
    connect, connect_control, ping, ClientFiles, ClientFlavor, ConnSpec, ServerInfo, TlsSpec,
};
pub use mysql::prelude as mysql_prelude;
pub use mysql::Conn as MysqlConn;
pub use mysql::{Error as MysqlError, Row as MysqlRow, Value as MysqlValue};
pub use mysql_client::LoadSink;
pub use mysqldump::DumpStream;

/// What went wrong with a database, on which target, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database of {target} at {address}: {reason}")]
    Connect {
        target: String,
        address: String,
        reason: String,
    },
    #[error(
        "the database of {target} at {address} refused user `{user}`: {reason} — check \
         `username` and `password` in the AppBinding's Secret"
    )]
    Auth {
        target: String,
        address: String,
        user: String,
        reason: String,
    },
    #[error("TLS to the database of {target} at {address} failed: {reason}")]
    Tls {
        target: String,
        address: String,
        reason: String,
    },
    #[error("query on the database of {target} failed: {reason}")]
    Query { target: String, reason: String },
    #[error("the dump of {target} failed: {reason}")]
    Dump { target: String, reason: String },
    #[error("loading into the database of {target} failed: {reason}")]
    Load { target: String, reason: String },
    #[error("the State Snapshot Transfer from {target} failed: {reason}")]
    Sst { target: String, reason: String },
    #[error("restoring the physical backup into {target} failed: {reason}")]
    Physical { target: String, reason: String },
    /// A MariaDB-only step (replay by `mariadb-binlog` or a relay-log SQL thread,
    /// `gtid_slave_pos`, `@slave_connect_state`) was given a MySQL GTID state.
    #[error(
        "{what} works on MariaDB GTIDs only, and `{state}` is a MySQL GTID state: \
         point-in-time replay of a MySQL archive is not implemented yet (restore the base \
         backup alone, or replay the archived segments with mysqlbinlog by hand)"
    )]
    NotMariaDbGtid { what: String, state: String },
    #[error("{0}")]
    Local(String),
}
