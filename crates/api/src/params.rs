//! The params of coffer's built-in tasks, read by one parser: `coffer apply` checks them with
//! it and the engine runs with what it returns, so the two cannot disagree about a value.

use std::{fmt, time::Duration};

use crate::task::TaskSpec;

/// Which way a built-in task moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskDirection {
    Backup,
    Restore,
}

impl fmt::Display for TaskDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskDirection::Backup => "backup",
            TaskDirection::Restore => "restore",
        })
    }
}

const DATABASES: [&str; 3] = ["mysql", "mariadb", "perconaxtradb"];

/// Stash's built-in task names: `mysql-backup-8.0.21` → Backup, `perconaxtradb-restore-5.7` →
/// Restore. The same names are the built-in Functions a Task's steps may name.
pub fn builtin_task(name: &str) -> Option<TaskDirection> {
    for db in DATABASES {
        if let Some(rest) = name.strip_prefix(db) {
            if rest == "-backup" || rest.starts_with("-backup-") {
                return Some(TaskDirection::Backup);
            }
            if rest == "-restore" || rest.starts_with("-restore-") {
                return Some(TaskDirection::Restore);
            }
        }
    }
    None
}

/// Whether a Task step may name this Function without a Function resource.
pub fn builtin_function(name: &str) -> bool {
    name == "update-status" || builtin_task(name).is_some()
}

/// The task a session runs: its own, else the AppBinding's Stash addon default, else the
/// generic built-in for the direction.
pub fn task_name(
    task: &str,
    addon_parameters: Option<&serde_json::Value>,
    dir: TaskDirection,
) -> String {
    if !task.is_empty() {
        return task.to_string();
    }
    let key = match dir {
        TaskDirection::Backup => "backupTask",
        TaskDirection::Restore => "restoreTask",
    };
    addon_parameters
        .and_then(|p| p.pointer(&format!("/stash/addon/{key}/name")))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .unwrap_or_else(|| format!("mysql-{dir}"))
}

/// How strictly a task's params are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// A built-in task: every param must be one coffer knows, with a value of its type.
    Strict,
    /// A Task resource with a built-in step: the params coffer knows must have values of their
    /// type; others are for the user's own Functions.
    Typed,
    /// No built-in step reads them: they are only `${VAR}`s for the user's Functions.
    Free,
}

/// The rules for the params of task `name`, given its Task resource when there is one (a
/// Task resource of a built-in name wins over the built-in, as at run time).
pub fn rules_for(name: &str, task: Option<&TaskSpec>) -> Rules {
    match task {
        Some(t) if t.steps.iter().any(|s| builtin_task(&s.name).is_some()) => Rules::Typed,
        Some(_) => Rules::Free,
        None if builtin_task(name).is_some() => Rules::Strict,
        None => Rules::Free,
    }
}

/// How a backup reads the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Mysqldump,
    Native,
    Physical,
}

/// The built-in params, typed. Unset and empty values are `None` / `false` / empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskParams {
    /// `mysqldump` (the default), `native` or `physical`.
    pub method: Option<Method>,
    /// Options for mysqldump (backup) or mysql (restore).
    pub args: Option<String>,
    pub connections: Option<u32>,
    pub chunk_mib: Option<u64>,
    pub databases: Vec<String>,
    pub tables: Vec<String>,
    /// `OLD:NEW` database renames, in the order given.
    pub rename: Vec<(String, String)>,
    pub users: bool,
    pub binlog: bool,
    pub wait_timeout: Option<Duration>,
    pub donor: Option<String>,
    pub listen_address: Option<String>,
    pub listen_port: Option<u16>,
    pub sst_timeout: Option<Duration>,
    /// The whole SST transfer's limit (`sstTimeout` bounds each wait and silence).
    pub sst_deadline: Option<Duration>,
    /// Addresses besides the members' that may send the SST (a donor behind NAT).
    pub sst_peers: Vec<String>,
    /// A Secret with `tls.crt`, `tls.key` (and `ca.crt`): the SST listener speaks TLS.
    pub sst_tls_secret: Option<String>,
    pub data_dir: Option<String>,
    pub replace_data_dir: bool,
    pub keep_cluster_uuid: bool,
    pub owner: Option<String>,
}

/// One param that cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub name: String,
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "param `{}`: {}", self.name, self.message)
    }
}

/// Every param name the built-in tasks read.
pub const KNOWN: [&str; 21] = [
    "method",
    "args",
    "connections",
    "chunkMiB",
    "databases",
    "tables",
    "rename",
    "users",
    "binlog",
    "waitTimeout",
    "donor",
    "listenAddress",
    "listenPort",
    "sstTimeout",
    "sstDeadline",
    "sstPeers",
    "sstTLSSecret",
    "dataDir",
    "replaceDataDir",
    "keepClusterUUID",
    "owner",
];

fn bad(value: &str, want: &str) -> String {
    format!("`{value}` is not {want}: fix the value or remove the param")
}

fn number(v: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(
            v,
            &format!("a whole number from {} to {}", range.start(), range.end()),
        )),
    }
}

fn flag(v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(bad(v, "`true` or `false`"))
    }
}

/// `90` (seconds), `90s`, `5m`, `1h`.
fn duration(v: &str) -> Result<Duration, String> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    crate::duration::parse(v).map_err(|_| bad(v, "a duration such as `90s`, `5m` or `1h`"))
}

fn list(v: &str) -> Vec<String> {
    v.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn rename(v: &str) -> Result<Vec<(String, String)>, String> {
    list(v)
        .into_iter()
        .map(|pair| match pair.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
            _ => Err(format!(
                "`{pair}` is not OLD:NEW (databases to rename, comma-separated)"
            )),
        })
        .collect()
}

fn method(v: &str) -> Result<Method, String> {
    match v {
        "mysqldump" => Ok(Method::Mysqldump),
        "native" => Ok(Method::Native),
        "physical" => Ok(Method::Physical),
        _ => Err(bad(v, "one of mysqldump, native or physical")),
    }
}

/// The known name closest to a misspelt one, when it is close.
fn did_you_mean(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|k| {
            (
                edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl TaskParams {
    /// Reads `(name, value)` pairs under `rules`; every problem is returned, each naming its
    /// param. A later pair of the same name wins, as when the engine merges them.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        rules: Rules,
    ) -> Result<TaskParams, Vec<ParamError>> {
        let mut p = TaskParams::default();
        let mut errors = Vec::new();
        if rules == Rules::Free {
            return Ok(p);
        }
        for (name, value) in pairs {
            let v = value.trim();
            let res = match name {
                // Given empty, args still replaces the default database selection.
                "args" => {
                    p.args = Some(value.to_string());
                    Ok(())
                }
                _ if v.is_empty() && KNOWN.contains(&name) => Ok(()),
                "method" => method(v).map(|m| p.method = Some(m)),
                "connections" => number(v, 1..=64).map(|n| p.connections = Some(n as u32)),
                "chunkMiB" => number(v, 1..=4096).map(|n| p.chunk_mib = Some(n)),
                "databases" => {
                    p.databases = list(v);
                    Ok(())
                }
                "tables" => {
                    p.tables = list(v);
                    Ok(())
                }
                "rename" => rename(v).map(|r| p.rename = r),
                "users" => flag(v).map(|b| p.users = b),
                "binlog" => flag(v).map(|b| p.binlog = b),
                "waitTimeout" => duration(v).map(|d| p.wait_timeout = Some(d)),
                "donor" => {
                    p.donor = Some(v.to_string());
                    Ok(())
                }
                "listenAddress" => {
                    p.listen_address = Some(v.to_string());
                    Ok(())
                }
                "listenPort" => number(v, 0..=65535).map(|n| p.listen_port = Some(n as u16)),
                "sstTimeout" => duration(v).map(|d| p.sst_timeout = Some(d)),
                "sstDeadline" => duration(v).map(|d| p.sst_deadline = Some(d)),
                "sstPeers" => {
                    p.sst_peers = list(v);
                    Ok(())
                }
                "sstTLSSecret" => {
                    p.sst_tls_secret = Some(v.to_string());
                    Ok(())
                }
                "dataDir" => {
                    p.data_dir = Some(v.to_string());
                    Ok(())
                }
                "replaceDataDir" => flag(v).map(|b| p.replace_data_dir = b),
                "keepClusterUUID" => flag(v).map(|b| p.keep_cluster_uuid = b),
                "owner" => {
                    p.owner = Some(v.to_string());
                    Ok(())
                }
                _ if rules == Rules::Strict => Err(match did_you_mean(name) {
                    Some(k) => format!("not a param of the built-in tasks; did you mean `{k}`?"),
                    None => format!(
                        "not a param of the built-in tasks (they read {})",
                        KNOWN.join(", ")
                    ),
                }),
                _ => Ok(()),
            };
            if let Err(message) = res {
                errors.push(ParamError {
                    name: name.to_string(),
                    message,
                });
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], rules: Rules) -> Result<TaskParams, Vec<ParamError>> {
        TaskParams::parse(pairs.iter().copied(), rules)
    }

    fn one_error(pairs: &[(&str, &str)]) -> String {
        let e = parse(pairs, Rules::Strict).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].to_string()
    }

    #[test]
    fn typed_values() {
        let p = parse(
            &[
                ("method", "native"),
                ("connections", "4"),
                ("chunkMiB", "16"),
                ("users", "TRUE"),
                ("binlog", "false"),
                ("waitTimeout", "90"),
                ("sstTimeout", "2m"),
                ("listenPort", "4444"),
                ("rename", "a:b, c:d"),
                ("tables", "db.t1,db.t2"),
                ("dataDir", "/d-${POD_ORDINAL}"),
                ("owner", ""),
            ],
            Rules::Strict,
        )
        .unwrap();
        assert_eq!(p.method, Some(Method::Native));
        assert_eq!(p.connections, Some(4));
        assert_eq!(p.chunk_mib, Some(16));
        assert!(p.users && !p.binlog);
        assert_eq!(p.wait_timeout, Some(Duration::from_secs(90)));
        assert_eq!(p.sst_timeout, Some(Duration::from_secs(120)));
        assert_eq!(p.listen_port, Some(4444));
        assert_eq!(
            p.rename,
            vec![("a".into(), "b".into()), ("c".into(), "d".into())]
        );
        assert_eq!(p.tables, vec!["db.t1", "db.t2"]);
        assert_eq!(p.owner, None, "empty is unset");
    }

    #[test]
    fn each_bad_value_names_its_param() {
        for (pairs, want) in [
            (
                &[("method", "natve")][..],
                "param `method`: `natve` is not one of mysqldump, native or physical: fix the \
                 value or remove the param",
            ),
            (
                &[("connections", "0")],
                "param `connections`: `0` is not a whole number from 1 to 64: fix the value or \
                 remove the param",
            ),
            (
                &[("chunkMiB", "64MiB")],
                "param `chunkMiB`: `64MiB` is not a whole number from 1 to 4096: fix the value \
                 or remove the param",
            ),
            (
                &[("users", "yes")],
                "param `users`: `yes` is not `true` or `false`: fix the value or remove the param",
            ),
            (
                &[("sstTimeout", "soon")],
                "param `sstTimeout`: `soon` is not a duration such as `90s`, `5m` or `1h`: fix \
                 the value or remove the param",
            ),
            (
                &[("listenPort", "70000")],
                "param `listenPort`: `70000` is not a whole number from 0 to 65535: fix the \
                 value or remove the param",
            ),
            (
                &[("rename", "old")],
                "param `rename`: `old` is not OLD:NEW (databases to rename, comma-separated)",
            ),
            (
                &[("conections", "4")],
                "param `conections`: not a param of the built-in tasks; did you mean \
                 `connections`?",
            ),
        ] {
            assert_eq!(one_error(pairs), want);
        }
        let e = one_error(&[("zzz", "1")]);
        assert!(e.contains("they read method, args"), "{e}");
    }

    #[test]
    fn rules_decide_what_is_refused() {
        assert!(parse(&[("note", "x")], Rules::Typed).is_ok());
        assert!(parse(&[("note", "x")], Rules::Strict).is_err());
        assert!(parse(&[("connections", "x")], Rules::Typed).is_err());
        assert!(parse(&[("connections", "x")], Rules::Free).is_ok());
        let all = parse(&[("method", "x"), ("users", "y")], Rules::Strict).unwrap_err();
        assert_eq!(all.len(), 2, "every problem, not the first");
    }

    #[test]
    fn rules_follow_the_task() {
        use crate::task::FunctionRef;
        let step = |n: &str| FunctionRef {
            name: n.into(),
            params: vec![],
        };
        assert_eq!(rules_for("mariadb-backup-10.5.8", None), Rules::Strict);
        assert_eq!(rules_for("custom", None), Rules::Free);
        let with_builtin = TaskSpec {
            steps: vec![step("stamp"), step("mysql-backup-8.0.21")],
            volumes: vec![],
        };
        assert_eq!(rules_for("custom", Some(&with_builtin)), Rules::Typed);
        let only_exec = TaskSpec {
            steps: vec![step("stamp")],
            volumes: vec![],
        };
        assert_eq!(
            rules_for("mariadb-backup-10.5.8", Some(&only_exec)),
            Rules::Free
        );
    }

    #[test]
    fn stash_task_names() {
        assert_eq!(
            builtin_task("mysql-backup-8.0.21"),
            Some(TaskDirection::Backup)
        );
        assert_eq!(
            builtin_task("mariadb-restore-10.5.8"),
            Some(TaskDirection::Restore)
        );
        assert_eq!(builtin_task("postgres-backup-13"), None);
        assert!(builtin_function("update-status"));
        assert_eq!(task_name("", None, TaskDirection::Restore), "mysql-restore");
    }
}
