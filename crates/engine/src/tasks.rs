//! Tasks and Functions: Stash's built-in task names resolve to coffer's built-in functions;
//! user-defined Functions run their command as a step, after `${VAR}` substitution.

use std::{collections::BTreeMap, process::Command};

use coffer_api::{
    envsubst,
    meta::{Param, TaskRef},
    params::{self, TaskParams},
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
    /// The same params read by the parser `coffer apply` checks them with.
    pub typed: TaskParams,
    /// The resource whose session runs the task, for errors about its params.
    pub referenced_by: String,
}

impl ResolvedTask {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// `mysql-backup-8.0.21` → Some(Backup); `perconaxtradb-restore-5.7` → Some(Restore).
fn builtin_direction(name: &str) -> Option<Direction> {
    params::builtin_task(name).map(|d| match d {
        params::TaskDirection::Backup => Direction::Backup,
        params::TaskDirection::Restore => Direction::Restore,
    })
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
    let dir = match dir {
        Direction::Backup => params::TaskDirection::Backup,
        Direction::Restore => params::TaskDirection::Restore,
    };
    params::task_name(&task.name, addon_parameters, dir)
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
    let step_refs: Vec<FunctionRef> = match &task {
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
    let spec = match &task {
        Some(Resource::Task(t)) => Some(&t.spec),
        _ => None,
    };
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let typed = TaskParams::parse(pairs, params::rules_for(name, spec)).map_err(|errors| {
        let e = &errors[0];
        EngineError::Invalid {
            resource: format!("{referenced_by} (task {name}, param `{}`)", e.name),
            message: e.message.clone(),
        }
    })?;
    Ok(ResolvedTask {
        name: name.to_string(),
        steps,
        params,
        typed,
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

    struct Empty;

    impl Catalog for Empty {
        fn get(
            &self,
            _: Kind,
            _: &str,
            _: &str,
        ) -> Result<Option<Resource>, crate::catalog::CatalogError> {
            Ok(None)
        }
        fn patch_status(&self, res: &Resource) -> Result<Resource, crate::catalog::CatalogError> {
            Ok(res.clone())
        }
    }

    fn resolved(params: &[(&str, &str)]) -> EngineResult<ResolvedTask> {
        let params: Vec<Param> = params
            .iter()
            .map(|(k, v)| Param {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        resolve(
            &Empty,
            "mariadb-backup-10.5.8",
            &params,
            Direction::Backup,
            &BTreeMap::new(),
            "BackupConfiguration demo/app",
        )
    }

    /// The run-time reading is apply's parser: a value the store holds that apply would have
    /// refused (an older coffer, an edited store) fails the session naming the param.
    #[test]
    fn params_are_read_by_the_api_parser() {
        let t = resolved(&[("connections", "4"), ("method", "native")]).unwrap();
        assert_eq!(t.typed.connections, Some(4));
        assert_eq!(t.typed.method, Some(params::Method::Native));
        assert_eq!(
            resolved(&[("chunkMiB", "64MiB")]).unwrap_err().to_string(),
            "BackupConfiguration demo/app (task mariadb-backup-10.5.8, param `chunkMiB`): \
             `64MiB` is not a whole number from 1 to 4096: fix the value or remove the param"
        );
        assert!(resolved(&[("method", "natve")])
            .unwrap_err()
            .to_string()
            .contains("param `method`): `natve` is not one of mysqldump, native or physical"));
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

    #[test]
    fn a_command_past_its_limit_fails_saying_so_with_its_last_words() {
        let cmd: Vec<String> = ["sh", "-c", "echo getting ready >&2; sleep 30"]
            .map(String::from)
            .to_vec();
        let t = std::time::Instant::now();
        let e = run_exec_for(
            "preBackup",
            &cmd,
            None,
            &BTreeMap::new(),
            std::time::Duration::from_millis(500),
        )
        .unwrap_err()
        .to_string();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            e.contains("`sh` did not finish within")
                && e.contains("was stopped with everything it started")
                && e.contains("getting ready"),
            "{e}"
        );
    }
}
