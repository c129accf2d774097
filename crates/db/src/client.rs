//! Finding the client programs and which family they belong to.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    conn::{ClientFlavor, ServerInfo},
    DbError,
};

/// The dump and client programs to run.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dump: PathBuf,
    pub client: PathBuf,
    pub flavor: ClientFlavor,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Clients {
    /// MariaDB's programs when installed (they speak to MySQL servers too), else MySQL's.
    /// `COFFER_MYSQLDUMP` and `COFFER_MYSQL` override the choice.
    pub fn detect() -> Result<Clients, DbError> {
        let pick = |env: &str, names: &[&str]| -> Option<PathBuf> {
            if let Some(p) = std::env::var_os(env) {
                return Some(PathBuf::from(p));
            }
            names.iter().find_map(|n| on_path(n))
        };
        let dump = pick("COFFER_MYSQLDUMP", &["mariadb-dump", "mysqldump"]).ok_or_else(|| {
            DbError::Local(
                "neither mariadb-dump nor mysqldump is on PATH: install the MariaDB or MySQL \
                 client (Debian: apt-get install mariadb-client)"
                    .into(),
            )
        })?;
        let client = pick("COFFER_MYSQL", &["mariadb", "mysql"]).ok_or_else(|| {
            DbError::Local(
                "neither mariadb nor mysql is on PATH: install the MariaDB or MySQL client".into(),
            )
        })?;
        let flavor = flavor_of(&dump);
        Ok(Clients {
            dump,
            client,
            flavor,
        })
    }

    /// The programs to dump `server` (what [`ping`](crate::ping) found) with. A MySQL 8 or
    /// later server is dumped by MySQL's own mysqldump: MariaDB's mariadb-dump predates
    /// MySQL 8's data dictionary and writes none of its GTID state (`GTID_PURGED`) or
    /// replication position (`CHANGE REPLICATION SOURCE`), so when MariaDB's was detected,
    /// MySQL's `mysqldump` is looked for on PATH. `COFFER_MYSQLDUMP` names the one program
    /// to use, so when it names MariaDB's, or PATH has no MySQL mysqldump, this fails
    /// saying what to install or set. MariaDB and MySQL 5.7 servers keep the programs
    /// [`detect`](Self::detect) found. `label` names the server in the error.
    pub fn for_server(self, label: &str, server: &ServerInfo) -> Result<Clients, DbError> {
        if !needs_mysql_dump(server) || self.flavor == ClientFlavor::MySql {
            return Ok(self);
        }
        let explicit = std::env::var_os("COFFER_MYSQLDUMP").is_some();
        if !explicit {
            let found = path_candidates("mysqldump")
                .into_iter()
                .find(|p| flavor_of(p) == ClientFlavor::MySql);
            if let Some(dump) = found {
                tracing::info!(
                    "{label} is MySQL {}: dumping it with MySQL's {}",
                    server.version,
                    dump.display()
                );
                return Ok(Clients {
                    dump,
                    flavor: ClientFlavor::MySql,
                    ..self
                });
            }
        }
        let why = if explicit {
            "COFFER_MYSQLDUMP names"
        } else {
            "the only dump program on PATH is"
        };
        Err(DbError::Dump {
            target: label.to_string(),
            reason: format!(
                "the server is MySQL {}, and {why} MariaDB's ({}), which cannot dump MySQL 8 \
                 and later faithfully (no GTID state, no replication position, MySQL 8's \
                 system schema): install MySQL's client programs so that MySQL's mysqldump is \
                 on PATH (Debian/Ubuntu: mysql-client), or set COFFER_MYSQLDUMP to MySQL's \
                 mysqldump; or back it up with task param `method: native`",
                server.version,
                self.dump.display()
            ),
        })
    }
}

/// MariaDB's programs say so in `--version`; anything else is taken for MySQL's.
fn flavor_of(program: &Path) -> ClientFlavor {
    let version = Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if version.contains("MariaDB") {
        ClientFlavor::MariaDb
    } else {
        ClientFlavor::MySql
    }
}

/// Every `name` on PATH, in PATH order (Debian's MariaDB installs a `mysqldump` that is
/// mariadb-dump, which may come before MySQL's).
fn path_candidates(name: &str) -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .collect()
}

/// A MySQL server of major version 8 or later (an unparsable version counts as one).
fn needs_mysql_dump(server: &ServerInfo) -> bool {
    let major = server
        .version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    !server.is_mariadb && major.is_none_or(|m| m >= 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str) -> ServerInfo {
        ServerInfo {
            version: version.into(),
            is_mariadb: version.contains("MariaDB"),
            log_bin: false,
        }
    }

    #[test]
    fn mysql_8_and_later_need_mysqls_own_dump() {
        for (v, want) in [
            ("10.11.19-MariaDB-log", false),
            ("11.4.2-MariaDB", false),
            ("5.7.44-log", false),
            ("8.0.36", true),
            ("8.4.3", true),
            ("9.7.4-2", true),
            ("", true),
        ] {
            assert_eq!(needs_mysql_dump(&server(v)), want, "{v}");
        }
    }
}
