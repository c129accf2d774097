//! Finding the client programs and which family they belong to.

use std::{path::PathBuf, process::Command};

use crate::{conn::ClientFlavor, DbError};

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
        let version = Command::new(&dump)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let flavor = if version.contains("MariaDB") {
            ClientFlavor::MariaDb
        } else {
            ClientFlavor::MySql
        };
        Ok(Clients {
            dump,
            client,
            flavor,
        })
    }
}
