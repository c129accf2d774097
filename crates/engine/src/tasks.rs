//! Tasks and Functions: Stash's built-in task names resolve to coffer's built-in functions;
//! user-defined Functions run their command as a step, after `${VAR}` substitution.

use std::{collections::BTreeMap, process::Command};

use coffer_api::{
    envsubst,
    meta::{Param, TaskRef},
    task::{FunctionRef, FunctionSpec},
    Kind, Resource,
};

use crate::{
    catalog::Catalog,
    error::{EngineError, EngineResult},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backup,
    Restore,
}

/// Work coffer does itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `mysqldump | repository` as `/dumpfile.sql`.
    LogicalBackup,
    /// `repository /dumpfile.sql | mysql`.
    LogicalRestore,
    /// Retention, integrity check and repository status after a backup (Stash's update-status).
    UpdateStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Builtin {
        function: String,
        builtin: Builtin,
    },
    Exec {
        function: String,
        command: Vec<String>,
        working_dir: Option<String>,
    },
}

impl Step {
    pub fn function(&self) -> &str {
        match self {
            Step::Builtin { function, .. } | Step::Exec { function, .. } => function,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedTask {
    pub name: String,
    pub steps: Vec<Step>,
    /// Task params merged over defaults, as the built-in steps read them (`args`, ...).
    pub params: BTreeMap<String, String>,
    /// The resource whose session runs the task, for errors about its params.
    pub referenced_by: String,
}

impl ResolvedTask {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn bad_param(&self, name: &str, value: &str, want: String) -> EngineError {
        EngineError::Invalid {
            resource: format!(
                "{} (task {}, param `{name}`)",
                self.referenced_by, self.name
            ),
            message: format!("`{value}` is not {want}: fix the value or remove the param"),
        }
    }

    /// A whole-number param within `range`; `None` when unset or empty. A value that does
    /// not parse or lies outside the range fails the session instead of being ignored.
    pub fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> EngineResult<Option<u64>> {
        let Some(v) = self.param(name).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(self.bad_param(
                name,
                v,
                format!("a whole number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// A `true`/`false` param; unset or empty is false.
    pub fn flag(&self, name: &str) -> EngineResult<bool> {
        match self.param(name).map(str::trim).unwrap_or("") {
            "" => Ok(false),
            v if v.eq_ignore_ascii_case("true") => Ok(true),
            v if v.eq_ignore_ascii_case("false") => Ok(false),
            v => Err(self.bad_param(name, v, "`true` or `false`".into())),
        }
    }

    /// A duration param (`90s`, `5m`, `1h`, or plain seconds); `None` when unset or empty.
    pub fn duration(&self, name: &str) -> EngineResult<Option<std::time::Duration>> {
        let Some(v) = self.param(name).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if let Ok(secs) = v.parse::<u64>() {
            return Ok(Some(std::time::Duration::from_secs(secs)));
        }
        coffer_api::duration::parse(v)
            .map(Some)
            .map_err(|_| self.bad_param(name, v, "a duration such as `90s`, `5m` or `1h`".into()))
    }
}

const DATABASES: [&str; 3] = ["mysql", "mariadb", "perconaxtradb"];

/// `mysql-backup-8.0.21` → Some(Backup); `perconaxtradb-restore-5.7` → Some(Restore).
fn builtin_direction(name: &str) -> Option<Direction> {
    for db in DATABASES {
        if let Some(rest) = name.strip_prefix(db) {
            if rest == "-backup" || rest.starts_with("-backup-") {
                return Some(Direction::Backup);
            }
            if rest == "-restore" || rest.starts_with("-restore-") {
                return Some(Direction::Restore);
            }
        }
    }
    None
}

fn builtin_function(name: &str) -> Option<Builtin> {
    if name == "update-status" {
        return Some(Builtin::UpdateStatus);
    }
    match builtin_direction(name)? {
        Direction::Backup => Some(Builtin::LogicalBackup),
        Direction::Restore => Some(Builtin::LogicalRestore),
    }
}

/// The task name to use: the session's, else the AppBinding's Stash addon default, else the
/// generic built-in for the direction.
pub fn task_name(
    task: &TaskRef,
    addon_parameters: Option<&serde_json::Value>,
    dir: Direction,
) -> String {
    if !task.name.is_empty() {
        return task.name.clone();
    }
    let key = match dir {
        Direction::Backup => "backupTask",
        Direction::Restore => "restoreTask",
    };
    addon_parameters
        .and_then(|p| p.pointer(&format!("/stash/addon/{key}/name")))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .unwrap_or_else(|| match dir {
            Direction::Backup => "mysql-backup".into(),
            Direction::Restore => "mysql-restore".into(),
        })
}

/// Resolves a task into steps. A Task resource of that name wins; otherwise Stash's built-in
/// task names are known. `vars` are the session's variables for `${VAR}` substitution.
pub fn resolve(
    cat: &dyn Catalog,
    name: &str,
    session_params: &[Param],
    dir: Direction,
    vars: &BTreeMap<String, String>,
    referenced_by: &str,
) -> EngineResult<ResolvedTask> {
    let mut params: BTreeMap<String, String> = session_params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let task = cat
        .get(Kind::Task, "", name)
        .map_err(EngineError::Catalog)?;
    let step_refs: Vec<FunctionRef> = match task {
        Some(Resource::Task(t)) => t.spec.steps.clone(),
        _ => match builtin_direction(name) {
            Some(d) if d == dir => {
                let mut steps = vec![FunctionRef {
                    name: name.to_string(),
                    params: vec![],
                }];
                if dir == Direction::Backup {
                    steps.push(FunctionRef {
                        name: "update-status".into(),
                        params: vec![],
                    });
                }
                steps
            }
            Some(_) => {
                return Err(EngineError::Invalid {
                    resource: referenced_by.into(),
                    message: format!(
                        "task `{name}` is a {} task, but this is a {} session",
                        if dir == Direction::Backup {
                            "restore"
                        } else {
                            "backup"
                        },
                        if dir == Direction::Backup {
                            "backup"
                        } else {
                            "restore"
                        }
                    ),
                })
            }
            None => {
                return Err(EngineError::Invalid {
                    resource: referenced_by.into(),
                    message: format!(
                        "task `{name}` is neither a Task resource nor a built-in task (built-in: \
                         mysql-, mariadb- or perconaxtradb-backup-<version> and -restore-<version>)"
                    ),
                })
            }
        },
    };
    let mut steps = Vec::new();
    for sr in &step_refs {
        // Step params are defaults; the session's own params override them.
        for p in &sr.params {
            params
                .entry(p.name.clone())
                .or_insert_with(|| p.value.clone());
        }
        let function = cat
            .get(Kind::Function, "", &sr.name)
            .map_err(EngineError::Catalog)?;
        let step = match function {
            Some(Resource::Function(f)) if !f.spec.command.is_empty() => {
                let mut fvars = vars.clone();
                for p in &sr.params {
                    fvars.insert(p.name.clone(), p.value.clone());
                }
                for (k, v) in &params {
                    fvars.insert(k.clone(), v.clone());
                }
                exec_step(&sr.name, &f.spec, &fvars)?
            }
            _ => match builtin_function(&sr.name) {
                Some(b) => Step::Builtin {
                    function: sr.name.clone(),
                    builtin: b,
                },
                None => {
                    return Err(EngineError::Invalid {
                        resource: format!("Task {name}"),
                        message: format!(
                            "step Function `{}` does not exist (or has no command to run on \
                             this platform)",
                            sr.name
                        ),
                    })
                }
            },
        };
        steps.push(step);
    }
    Ok(ResolvedTask {
        name: name.to_string(),
        steps,
        params,
        referenced_by: referenced_by.to_string(),
    })
}

fn exec_step(name: &str, f: &FunctionSpec, vars: &BTreeMap<String, String>) -> EngineResult<Step> {
    let sub = |s: &str| {
        envsubst::substitute(s, vars).map_err(|e| EngineError::Invalid {
            resource: format!("Function {name}"),
            message: e,
        })
    };
    let mut command = Vec::new();
    for c in f.command.iter().chain(f.args.iter()) {
        command.push(sub(c)?);
    }
    let working_dir = f.working_dir.as_deref().map(sub).transpose()?;
    Ok(Step::Exec {
        function: name.to_string(),
        command,
        working_dir,
    })
}

/// Runs a user-defined Function's command (or an exec hook): its first output lines go to the
/// session log, its last ones into the error; it may run for [`crate::exec::timeout`], after
/// which it is stopped with everything it started.
pub fn run_exec(
    function: &str,
    command: &[String],
    working_dir: Option<&str>,
    env: &BTreeMap<String, String>,
) -> EngineResult<()> {
    run_exec_for(function, command, working_dir, env, crate::exec::timeout())
}

pub(crate) fn run_exec_for(
    function: &str,
    command: &[String],
    working_dir: Option<&str>,
    env: &BTreeMap<String, String>,
    limit: std::time::Duration,
) -> EngineResult<()> {
    let (prog, args) = command.split_first().ok_or_else(|| EngineError::Invalid {
        resource: format!("Function {function}"),
        message: "spec.command is empty".into(),
    })?;
    let mut cmd = Command::new(prog);
    cmd.args(args).envs(env);
    if let Some(d) = working_dir {
        cmd.current_dir(d);
    }
    let out = crate::exec::run(function, cmd, limit)
        .map_err(|e| EngineError::Step(format!("Function {function}: cannot run `{prog}`: {e}")))?;
    let last_lines = |text: &str| -> String {
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("; ")
    };
    let tail = last_lines(&out.stderr_tail);
    let said = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    let Some(status) = out.status else {
        return Err(EngineError::Step(format!(
            "Function {function}: `{prog}` did not finish within {} and was stopped with \
             everything it started (set COFFER_EXEC_TIMEOUT to allow longer){said}",
            coffer_api::duration::format(limit)
        )));
    };
    if !status.success() {
        return Err(EngineError::Step(format!(
            "Function {function}: `{prog}` {}{said}",
            match status.code() {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".into(),
            },
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with(params: &[(&str, &str)]) -> ResolvedTask {
        ResolvedTask {
            name: "mariadb-backup-10.5.8".into(),
            steps: vec![],
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            referenced_by: "BackupConfiguration demo/app".into(),
        }
    }

    #[test]
    fn typed_params_refuse_what_they_cannot_use() {
        let t = task_with(&[
            ("connections", "4"),
            ("chunkMiB", "64MiB"),
            ("zero", "0"),
            ("users", "TRUE"),
            ("binlog", "yes"),
            ("waitTimeout", "90"),
            ("sstTimeout", "2m"),
            ("bad", "soon"),
            ("empty", ""),
        ]);
        assert_eq!(t.number("connections", 1..=64).unwrap(), Some(4));
        assert_eq!(t.number("missing", 1..=64).unwrap(), None);
        assert_eq!(t.number("empty", 1..=64).unwrap(), None);
        let e = t.number("chunkMiB", 1..=4096).unwrap_err().to_string();
        assert_eq!(
            e,
            "BackupConfiguration demo/app (task mariadb-backup-10.5.8, param `chunkMiB`): \
             `64MiB` is not a whole number from 1 to 4096: fix the value or remove the param"
        );
        assert!(t.number("zero", 1..=64).is_err(), "out of range");
        assert!(t.flag("users").unwrap());
        assert!(!t.flag("missing").unwrap());
        assert!(t
            .flag("binlog")
            .unwrap_err()
            .to_string()
            .contains("`yes` is not `true` or `false`"));
        assert_eq!(
            t.duration("waitTimeout").unwrap(),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            t.duration("sstTimeout").unwrap(),
            Some(std::time::Duration::from_secs(120))
        );
        assert!(t
            .duration("bad")
            .unwrap_err()
            .to_string()
            .contains("param `bad`"));
    }

    #[test]
    fn stash_task_names_are_builtin() {
        assert_eq!(
            builtin_direction("mysql-backup-8.0.21"),
            Some(Direction::Backup)
        );
        assert_eq!(
            builtin_direction("perconaxtradb-backup-5.7"),
            Some(Direction::Backup)
        );
        assert_eq!(
            builtin_direction("mariadb-restore-10.5.8"),
            Some(Direction::Restore)
        );
        assert_eq!(builtin_direction("postgres-backup-13"), None);
        assert_eq!(
            builtin_function("update-status"),
            Some(Builtin::UpdateStatus)
        );
    }

    #[test]
    fn task_name_defaults() {
        let empty = TaskRef::default();
        let params =
            serde_json::json!({"stash":{"addon":{"backupTask":{"name":"mariadb-backup-10.5.8"}}}});
        assert_eq!(
            task_name(&empty, Some(&params), Direction::Backup),
            "mariadb-backup-10.5.8"
        );
        assert_eq!(task_name(&empty, None, Direction::Restore), "mysql-restore");
    }
}
