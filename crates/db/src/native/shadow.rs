//! Restoring without destroying first: a native restore creates and loads its tables in a
//! shadow database per target database, and only when every file matched its checksum moves
//! them into place with one `RENAME TABLE` (atomic in MariaDB), the target's old tables into a
//! trash database in the same statement. A failed restore drops its shadows and leaves the
//! target as it was.
//!
//! Shadow and trash databases are named `#coffer-<restore id>-<n>` and `#coffer-<restore
//! id>-<n>-old`, and the restore holds the named lock `coffer-restore-<restore id>` while it
//! runs: a database of that shape whose lock is free is a leftover of a killed restore, and
//! the next restore drops it. User databases never take that shape by accident.

use std::collections::{BTreeMap, BTreeSet};

use mysql::{prelude::Queryable, Conn};

use super::quote;
use crate::{
    conn::{classify, ConnSpec},
    DbError,
};

const PREFIX: &str = "#coffer-";

fn lock_name(id: &str) -> String {
    format!("coffer-restore-{id}")
}

/// The restore id of a shadow or trash database's name, if it is one.
fn restore_id(db: &str) -> Option<&str> {
    let rest = db.strip_prefix(PREFIX)?;
    let (id, n) = rest.split_once('-')?;
    let n = n.strip_suffix("-old").unwrap_or(n);
    let hex = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let num = !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit());
    (hex && num).then_some(id)
}

fn fresh_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Random enough to tell concurrent restores apart; no dependency needed for it.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

fn query_err(spec: &ConnSpec, what: &str, e: &mysql::Error) -> DbError {
    match classify(spec, e) {
        DbError::Query { reason, .. } => DbError::Load {
            target: spec.label.clone(),
            reason: format!("{what}: {reason}"),
        },
        other => other,
    }
}

fn exec(spec: &ConnSpec, c: &mut Conn, sql: &str, what: &str) -> Result<(), DbError> {
    c.query_drop(sql).map_err(|e| query_err(spec, what, &e))
}

fn strings(
    spec: &ConnSpec,
    c: &mut Conn,
    sql: &str,
    what: &str,
) -> Result<Vec<Vec<String>>, DbError> {
    let rows: Vec<mysql::Row> = c.query(sql).map_err(|e| query_err(spec, what, &e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                    mysql::Value::NULL => String::new(),
                    other => other.as_sql(true).trim_matches('\'').to_string(),
                })
                .collect()
        })
        .collect())
}

fn in_list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    names
        .into_iter()
        .map(|n| super::sql_string(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shadow databases of one restore, by target database.
pub(super) struct Shadows {
    id: String,
    shadows: BTreeMap<String, String>,
}

impl Shadows {
    /// Takes this restore's lock and drops the shadows that killed restores left behind.
    pub(super) fn begin(spec: &ConnSpec, c: &mut Conn) -> Result<Shadows, DbError> {
        let id = fresh_id();
        let got: Result<Option<Option<i64>>, _> = c.query_first(format!(
            "SELECT GET_LOCK({}, 0)",
            super::sql_string(&lock_name(&id))
        ));
        match got {
            Ok(Some(Some(1))) => {}
            Ok(_) => {
                return Err(DbError::Load {
                    target: spec.label.clone(),
                    reason: format!("cannot take the lock `{}`", lock_name(&id)),
                })
            }
            // Galera refuses named locks: without them a running restore cannot be told from
            // a killed one, so leftovers stay for the operator to drop.
            Err(e) => {
                tracing::warn!(
                    "no named lock for this restore ({e}); leftover `{PREFIX}...` databases of \
                     interrupted restores are kept — drop them by hand when no restore runs"
                );
                return Ok(Shadows {
                    id,
                    shadows: BTreeMap::new(),
                });
            }
        }
        let leftovers = strings(
            spec,
            c,
            &format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE {}",
                super::sql_string(&format!("{PREFIX}%"))
            ),
            "list leftover shadow databases",
        )?;
        for db in leftovers.into_iter().filter_map(|r| r.into_iter().next()) {
            let Some(other) = restore_id(&db) else {
                continue;
            };
            let free: Option<Option<i64>> = c
                .query_first(format!(
                    "SELECT IS_FREE_LOCK({})",
                    super::sql_string(&lock_name(other))
                ))
                .map_err(|e| query_err(spec, "check a leftover shadow database", &e))?;
            if free.flatten() == Some(1) {
                tracing::warn!("dropping `{db}`, left behind by an interrupted native restore");
                exec(
                    spec,
                    c,
                    &format!("DROP DATABASE IF EXISTS {}", quote(&db)),
                    &format!("drop the leftover shadow database `{db}`"),
                )?;
            }
        }
        Ok(Shadows {
            id,
            shadows: BTreeMap::new(),
        })
    }

    /// The shadow database that `db`'s tables are loaded into; it is not created here.
    pub(super) fn of(&mut self, db: &str) -> String {
        let n = self.shadows.len();
        let id = &self.id;
        self.shadows
            .entry(db.to_string())
            .or_insert_with(|| format!("{PREFIX}{id}-{n}"))
            .clone()
    }

    /// The error of a failed restore, with the shadows' names replaced by their targets', and
    /// saying whether the target's tables were replaced.
    pub(super) fn failed(&self, spec: &ConnSpec, e: DbError, replaced: bool) -> DbError {
        let mut reason = match e {
            DbError::Load { reason, .. } | DbError::Query { reason, .. } => reason,
            other => other.to_string(),
        };
        for (db, shadow) in &self.shadows {
            reason = reason.replace(&format!("`{shadow}`"), &format!("`{db}`"));
        }
        let reason = if replaced {
            format!("the tables were restored, but {reason}")
        } else {
            // First, so that a status that shortens the reason still says it.
            format!("nothing was replaced, the target's tables are as they were: {reason}")
        };
        DbError::Load {
            target: spec.label.clone(),
            reason,
        }
    }

    fn trash(shadow: &str) -> String {
        format!("{shadow}-old")
    }

    /// Drops every shadow and trash database of this restore; used when it failed, so it
    /// must not fail itself.
    pub(super) fn discard(&self, c: &mut Conn) {
        for s in self.shadows.values() {
            for db in [s.clone(), Self::trash(s)] {
                if let Err(e) = c.query_drop(format!("DROP DATABASE IF EXISTS {}", quote(&db))) {
                    tracing::warn!("cannot drop `{db}` (the next restore will): {e}");
                }
            }
        }
    }

    /// Moves the loaded `(target database, table)`s from their shadows into place, the
    /// target's old tables of those names out to trash databases, in one statement; then
    /// points the foreign keys of the target's other tables at the new tables and drops the
    /// old ones. Until the rename succeeded, the target is as it was.
    pub(super) fn swap(
        &self,
        spec: &ConnSpec,
        c: &mut Conn,
        tables: &[(String, String)],
    ) -> Result<(), Swap> {
        let before = |e: DbError| Swap::Before(e);
        let mut by_db: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (db, t) in tables {
            by_db.entry(db).or_default().push(t);
        }
        let mut renames = Vec::new();
        // Triggers cannot move to another database with their table: the old tables' triggers
        // are dropped first (as dropping the tables would), and put back if the rename fails.
        let mut triggers: Vec<(String, Vec<String>)> = Vec::new();
        for (db, names) in &by_db {
            let shadow = &self.shadows[*db];
            let trash = Self::trash(shadow);
            let existing: BTreeSet<String> = strings(
                spec,
                c,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME IN ({})",
                    super::sql_string(db),
                    in_list(names)
                ),
                "list the tables to replace",
            )
            .map_err(before)?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
            if !existing.is_empty() {
                exec(
                    spec,
                    c,
                    &format!("CREATE DATABASE {}", quote(&trash)),
                    "create the trash database",
                )
                .map_err(before)?;
                for r in strings(
                    spec,
                    c,
                    &format!(
                        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {} AND EVENT_OBJECT_TABLE IN ({})",
                        super::sql_string(db),
                        in_list(&existing)
                    ),
                    "list the triggers of the tables to replace",
                )
                .map_err(before)?
                {
                    let name = r.into_iter().next().unwrap_or_default();
                    let fq = format!("{}.{}", quote(db), quote(&name));
                    let show = strings(
                        spec,
                        c,
                        &format!("SHOW CREATE TRIGGER {fq}"),
                        "read a trigger of a table to replace",
                    )
                    .map_err(before)?;
                    // name, sql_mode, statement, character_set_client, collation_connection, ...
                    let s = show.into_iter().next().unwrap_or_default();
                    let (mode, text) = (s.get(1).cloned(), s.get(2).cloned());
                    if let (Some(mode), Some(text)) = (mode, text) {
                        triggers.push((db.to_string(), vec![mode, text]));
                    }
                    exec(spec, c, &format!("DROP TRIGGER {fq}"), "drop a trigger of a table to replace")
                        .map_err(before)?;
                }
            }
            for t in names {
                if existing.contains(*t) {
                    renames.push(format!(
                        "{}.{} TO {}.{}",
                        quote(db),
                        quote(t),
                        quote(&trash),
                        quote(t)
                    ));
                }
                renames.push(format!(
                    "{}.{} TO {}.{}",
                    quote(shadow),
                    quote(t),
                    quote(db),
                    quote(t)
                ));
            }
        }
        if !renames.is_empty() {
            if let Err(e) = exec(
                spec,
                c,
                &format!("RENAME TABLE {}", renames.join(", ")),
                "move the loaded tables into place",
            ) {
                for (db, t) in &triggers {
                    let put_back = c
                        .query_drop(format!("USE {}", quote(db)))
                        .and_then(|_| {
                            c.query_drop(format!(
                                "SET SESSION sql_mode = {}",
                                super::sql_string(&t[0])
                            ))
                        })
                        .and_then(|_| c.query_drop(&t[1]));
                    if let Err(e) = put_back {
                        tracing::error!("could not put back a trigger of `{db}` after the failed rename: {e}; its text: {}", t[1]);
                    }
                }
                return Err(Swap::Before(e));
            }
        }
        self.repoint(spec, c).map_err(Swap::After)?;
        for s in self.shadows.values() {
            for db in [Self::trash(s), s.clone()] {
                exec(
                    spec,
                    c,
                    &format!("DROP DATABASE IF EXISTS {}", quote(&db)),
                    &format!("drop `{db}` after the restore"),
                )
                .map_err(Swap::After)?;
            }
        }
        Ok(())
    }

    /// The target's own tables that referenced an old table now reference it in the trash
    /// database (InnoDB's foreign keys follow a renamed table): point them at the new one.
    fn repoint(&self, spec: &ConnSpec, c: &mut Conn) -> Result<(), DbError> {
        if self.shadows.is_empty() {
            return Ok(());
        }
        let trash: BTreeMap<String, &String> = self
            .shadows
            .iter()
            .map(|(db, s)| (Self::trash(s), db))
            .collect();
        let refs = strings(
            spec,
            c,
            &format!(
                "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME \
                 FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE UNIQUE_CONSTRAINT_SCHEMA IN ({0}) AND CONSTRAINT_SCHEMA NOT IN ({0})",
                in_list(trash.keys())
            ),
            "list foreign keys into the replaced tables",
        )?;
        for r in refs {
            let [schema, table, name, old_db, referenced] =
                <[String; 5]>::try_from(r).map_err(|_| DbError::Load {
                    target: spec.label.clone(),
                    reason: "REFERENTIAL_CONSTRAINTS has an unexpected shape".into(),
                })?;
            let db = trash[&old_db];
            let what = format!(
                "point the foreign key `{name}` of `{schema}`.`{table}` at the restored `{db}`.`{referenced}`"
            );
            let fq = format!("{}.{}", quote(&schema), quote(&table));
            let create = strings(spec, c, &format!("SHOW CREATE TABLE {fq}"), &what)?
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().nth(1))
                .unwrap_or_default();
            let head = format!("CONSTRAINT {} FOREIGN KEY", quote(&name));
            let Some(line) = create.lines().map(str::trim).find(|l| l.starts_with(&head)) else {
                return Err(DbError::Load {
                    target: spec.label.clone(),
                    reason: format!("{what}: it is not in SHOW CREATE TABLE"),
                });
            };
            let line = line.trim_end_matches(',').replace(
                &format!("{}.{}", quote(&old_db), quote(&referenced)),
                &format!("{}.{}", quote(db), quote(&referenced)),
            );
            exec(
                spec,
                c,
                &format!("ALTER TABLE {fq} DROP FOREIGN KEY {}", quote(&name)),
                &what,
            )?;
            exec(spec, c, &format!("ALTER TABLE {fq} ADD {line}"), &what)?;
        }
        Ok(())
    }
}

/// A failed swap: before the rename (the target is as it was) or after it.
pub(super) enum Swap {
    Before(DbError),
    After(DbError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shadow_names_are_taken_for_leftovers() {
        assert_eq!(
            restore_id("#coffer-0123456789abcdef-0"),
            Some("0123456789abcdef")
        );
        assert_eq!(
            restore_id("#coffer-0123456789abcdef-12-old"),
            Some("0123456789abcdef")
        );
        for user in [
            "#coffer-0123456789abcdef",
            "#coffer-0123456789abcdeg-0",
            "#coffer-0123456789abcdef-0-new",
            "#coffer-0123456789abcdef-",
            "coffer-0123456789abcdef-0",
            "#coffer-x-0",
        ] {
            assert_eq!(restore_id(user), None, "{user}");
        }
    }

    #[test]
    fn shadow_names_fit_and_are_distinct() {
        let mut s = Shadows {
            id: fresh_id(),
            shadows: BTreeMap::new(),
        };
        let (a, b) = (s.of("a"), s.of("b"));
        assert_ne!(a, b);
        assert_eq!(s.of("a"), a);
        assert!(restore_id(&a).is_some() && restore_id(&Shadows::trash(&b)).is_some());
        assert!(Shadows::trash(&a).len() <= 64);
        assert_ne!(fresh_id(), fresh_id());
    }
}
