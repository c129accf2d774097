//! coffer's native logical format: one consistent snapshot read over N connections, tables
//! split into primary-key chunks written as LOAD DATA files, definitions kept apart so that
//! data loads before secondary indexes, triggers and views exist, and a manifest that lists
//! every file with its row count and checksum and the binlog position of the snapshot.
//!
//! Snapshot layout (name order is tree order, and the order the files are made in):
//! `/coffer/0-schema.json`; per chunk a directory `/coffer/1-<chunk>/` of pieces
//! `<piece>.tsv`, which together make the chunk's LOAD DATA file (manifest format 2; format 1
//! had one file `/coffer/1-<chunk>.tsv` per chunk); `/coffer/9-manifest.json`.

pub mod dump;
pub mod load;
pub mod schema;
mod shadow;
pub mod types;

pub use dump::{NativeDump, NativeDumpOptions};
pub use load::{load, LoadOptions, LoadReport};
pub use schema::{Manifest, Position, Schema};

/// The manifest format this coffer writes and the newest it reads. 2 stores a chunk as a
/// directory of pieces; 3 adds sequences, system-versioned history and roles to the schema,
/// which a reader of format 2 would skip without a word, so it must refuse them instead.
pub const MANIFEST_FORMAT: u32 = 3;

pub const DIR: &str = "/coffer";
pub const SCHEMA_PATH: &str = "/coffer/0-schema.json";
pub const MANIFEST_PATH: &str = "/coffer/9-manifest.json";

pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

pub(crate) fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
