//! What a native dump records about the server, besides the rows.

use serde::{Deserialize, Serialize};

/// Where the snapshot sits in the server's history, for a replica or point-in-time replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Position {
    pub binlog_file: Option<String>,
    pub binlog_position: Option<u64>,
    /// MariaDB `gtid_binlog_pos` or MySQL `gtid_executed`.
    pub gtid: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    /// CREATE TABLE without the secondary indexes in `deferred_indexes`.
    pub create: String,
    /// Index clauses (`KEY ...`, `UNIQUE KEY ...`) added after the data is loaded.
    pub deferred_indexes: Vec<String>,
    /// Stored (non-generated) columns, in the order of the data files.
    pub columns: Vec<Column>,
    /// A system-versioned table whose data files hold every row version (`FOR SYSTEM_TIME
    /// ALL`), its `columns` ending with the period's start and end; loaded with
    /// `system_versioning_insert_history`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

/// A MariaDB sequence: its definition and where it stood.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sequence {
    pub name: String,
    /// SHOW CREATE SEQUENCE.
    pub create: String,
    /// The sequence table's `next_not_cached_value`: the first value no session has been
    /// handed, so values after restore never repeat one the source gave out.
    pub next_value: String,
    /// The sequence table's `cycle_count`.
    pub cycle_count: String,
}

/// A view, trigger, routine or event, with the session context it was created in (needed
/// for an identical SHOW CREATE after restore).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Definition {
    pub kind: String,
    pub name: String,
    pub create: String,
    pub sql_mode: Option<String>,
    pub character_set_client: Option<String>,
    pub collation_connection: Option<String>,
    /// Events remember the session time zone they were created in.
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Database {
    pub name: String,
    pub charset: String,
    pub collation: String,
    pub tables: Vec<Table>,
    pub views: Vec<Definition>,
    /// Procedures, functions, triggers and events.
    pub programs: Vec<Definition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<Sequence>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Schema {
    pub format: u32,
    pub server_version: String,
    pub databases: Vec<Database>,
    /// `CREATE USER`, `CREATE ROLE`, `GRANT` and `SET DEFAULT ROLE` statements, when users
    /// were dumped, in an order that runs: every account and role first, then the grants.
    pub users: Vec<String>,
}

/// One data file of the snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataFile {
    pub path: String,
    pub database: String,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    /// XXH3-64 of the file's bytes, in hex. The repository already authenticates every blob;
    /// this catches a file that is whole but not the one the dump wrote.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub xxh3: String,
    /// SHA-256 of the file's bytes: what snapshots of coffer 0.1 recorded instead of `xxh3`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Manifest format 2: `path` is a directory of this many pieces (`00000000.tsv`, ...),
    /// which together make the chunk; `rows`, `bytes` and `xxh3` are the whole chunk's.
    /// Format 1 (absent): `path` is the one file of the chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub server_version: String,
    pub position: Position,
    pub started: String,
    pub finished: String,
    pub connections: usize,
    pub files: Vec<DataFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_of_an_older_coffer_still_reads() {
        let old = r#"{"format": 1, "server_version": "10.11.6-MariaDB", "users": [],
            "databases": [{"name": "d", "charset": "utf8mb4", "collation": "utf8mb4_general_ci",
              "views": [], "programs": [],
              "tables": [{"name": "t", "create": "CREATE TABLE `t` (`id` int)",
                          "deferred_indexes": [], "columns": [{"name": "id", "data_type": "int"}]}]}]}"#;
        let s: Schema = serde_json::from_str(old).unwrap();
        assert!(!s.databases[0].tables[0].history);
        assert!(s.databases[0].sequences.is_empty());
        // And what this coffer writes for such a schema is what the older one wrote.
        let again = serde_json::to_value(&s).unwrap();
        assert!(again["databases"][0].get("sequences").is_none());
        assert!(again["databases"][0]["tables"][0].get("history").is_none());
    }
}
