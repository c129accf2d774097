//! Checks across one `coffer apply`: references between its resources, and the params of the
//! tasks they run (whose rules depend on which Task a name resolves to).
//!
//! A reference to something that exists nowhere yet is a warning, not an error: as with
//! `kubectl apply`, a BackupConfiguration may be applied before its Repository. A reference
//! that can only mean a resource of the wrong kind is an error.

use crate::{
    kind::Kind,
    manifest::{Located, ManifestError, Resource},
    meta::Param,
    params::{self, Rules, TaskDirection},
    validate::{self, Problem},
};

/// What an apply set's cross-checks found.
#[derive(Debug, Default)]
pub struct SetReport {
    /// Refuse the apply.
    pub errors: Vec<ManifestError>,
    /// Print, then apply.
    pub warnings: Vec<String>,
}

/// A resource already stored, outside the apply set: `(kind, namespace, name)`; the namespace
/// is "" for cluster-scoped kinds.
pub type Stored<'a> = &'a dyn Fn(Kind, &str, &str) -> Option<Resource>;

/// What the checks of one resource found.
#[derive(Default)]
struct Found {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

struct Ctx<'a> {
    set: &'a [Located],
    stored: Stored<'a>,
}

impl Ctx<'_> {
    fn find(&self, kind: Kind, ns: &str, name: &str) -> Option<Resource> {
        let ns = if kind.cluster_scoped() { "" } else { ns };
        self.set
            .iter()
            .map(|l| &l.resource)
            .find(|r| r.kind() == kind && r.namespace() == ns && r.name() == name)
            .cloned()
            .or_else(|| (self.stored)(kind, ns, name))
    }

    /// Kinds in the apply set other than `want` that carry this name (where `want` would live).
    fn other_kinds(&self, want: Kind, ns: &str, name: &str) -> Vec<Kind> {
        self.set
            .iter()
            .map(|l| &l.resource)
            .filter(|r| r.kind() != want && r.name() == name)
            .filter(|r| r.kind().cluster_scoped() || want.cluster_scoped() || r.namespace() == ns)
            .map(|r| r.kind())
            .collect()
    }
}

/// Checks one apply set after every resource parsed and has its namespace.
pub fn check_set(set: &[Located], stored: Stored<'_>) -> SetReport {
    let cx = Ctx { set, stored };
    let mut report = SetReport::default();
    for l in set {
        let mut out = Found::default();
        let r = &l.resource;
        let ns = r.namespace().to_string();
        match r {
            Resource::Repository(x) => {
                let s = &x.spec.backend.storage_secret_name;
                reference(
                    &cx,
                    &mut out,
                    "spec.backend.storageSecretName",
                    Kind::Secret,
                    &ns,
                    s,
                );
            }
            Resource::AppBinding(a) => {
                if let Some(s) = &a.spec.secret {
                    reference(
                        &cx,
                        &mut out,
                        "spec.secret.name",
                        Kind::Secret,
                        &ns,
                        &s.name,
                    );
                }
                if let Some(s) = &a.spec.tls_secret {
                    reference(
                        &cx,
                        &mut out,
                        "spec.tlsSecret.name",
                        Kind::Secret,
                        &ns,
                        &s.name,
                    );
                }
            }
            Resource::BackupSession(b) => {
                let n = &b.spec.invoker.name;
                reference(
                    &cx,
                    &mut out,
                    "spec.invoker.name",
                    Kind::BackupConfiguration,
                    &ns,
                    n,
                );
            }
            Resource::BackupConfiguration(bc) => {
                let s = &bc.spec;
                let target = s.target.as_ref().map(|t| &t.ref_);
                let session = Session {
                    repository: &s.repository,
                    target,
                    task: &s.task,
                };
                session_refs(&cx, &mut out, &ns, session, TaskDirection::Backup);
                let archive = s
                    .verification
                    .as_ref()
                    .and_then(|v| v.binlog_archive.as_ref());
                if let Some(name) = archive.filter(|n| !n.is_empty() && !n.contains('/')) {
                    let path = "spec.verification.binlogArchive";
                    let found = reference(&cx, &mut out, path, Kind::BinlogArchive, &ns, name);
                    if let Some(Resource::BinlogArchive(a)) = found {
                        let wrong = a.spec.mismatch_with(&ns, &ns, target, &s.repository);
                        if let Some(why) = wrong {
                            out.problems.push(Problem::new(
                                path,
                                format!("BinlogArchive {ns}/{name} cannot serve it: {why}"),
                            ));
                        }
                    }
                }
            }
            Resource::RestoreSession(rs) => {
                let s = &rs.spec;
                let target = s.target.as_ref().map(|t| &t.ref_);
                let session = Session {
                    repository: &s.repository,
                    target,
                    task: &s.task,
                };
                session_refs(&cx, &mut out, &ns, session, TaskDirection::Restore);
                if let Some(pit) = s.point_in_time() {
                    reference(
                        &cx,
                        &mut out,
                        "spec.target.pointInTime.archive",
                        Kind::BinlogArchive,
                        &ns,
                        &pit.archive,
                    );
                }
            }
            Resource::BinlogArchive(a) => {
                let s = &a.spec;
                let rns = s.repository.namespace.as_deref().unwrap_or(&ns);
                reference(
                    &cx,
                    &mut out,
                    "spec.repository.name",
                    Kind::Repository,
                    rns,
                    &s.repository.name,
                );
                let ans = s.app_binding.namespace.as_deref().unwrap_or(&ns);
                reference(
                    &cx,
                    &mut out,
                    "spec.appBinding.name",
                    Kind::AppBinding,
                    ans,
                    &s.app_binding.name,
                );
            }
            Resource::Task(t) => {
                let typed = params::rules_for(r.name(), Some(&t.spec)) != Rules::Free;
                for (i, step) in t.spec.steps.iter().enumerate() {
                    if !params::builtin_function(&step.name) {
                        reference(
                            &cx,
                            &mut out,
                            &format!("spec.steps[{i}].name"),
                            Kind::Function,
                            "",
                            &step.name,
                        );
                    }
                    if typed {
                        let path = format!("spec.steps[{i}].params");
                        let p = validate::task_params(&path, &step.params, Rules::Typed);
                        out.problems.extend(p);
                    }
                }
            }
            Resource::Secret(_) | Resource::Function(_) => {}
        }
        let at = format!(
            "{} (document {}), {}",
            l.source,
            l.document,
            r.display_name()
        );
        let Found { problems, warnings } = out;
        report
            .warnings
            .extend(warnings.into_iter().map(|w| format!("{at}: {w}")));
        if !problems.is_empty() {
            report.errors.push(ManifestError {
                source: l.source.clone(),
                document: l.document,
                resource: Some(r.display_name()),
                problems,
            });
        }
    }
    report
}

/// Resolves one reference: the resource when it exists; an error when the name can only mean
/// a resource of another kind in this apply; a warning when it exists nowhere yet.
/// What a BackupConfiguration and a RestoreSession both refer to.
struct Session<'a> {
    repository: &'a crate::meta::ObjectRef,
    target: Option<&'a crate::meta::TargetRef>,
    task: &'a crate::meta::TaskRef,
}

fn session_refs(cx: &Ctx<'_>, out: &mut Found, ns: &str, s: Session<'_>, dir: TaskDirection) {
    let rns = s.repository.namespace.as_deref().unwrap_or(ns);
    reference(
        cx,
        out,
        "spec.repository.name",
        Kind::Repository,
        rns,
        &s.repository.name,
    );
    let ab = s.target.and_then(|t| {
        let tns = t.namespace.as_deref().unwrap_or(ns);
        reference(
            cx,
            out,
            "spec.target.ref.name",
            Kind::AppBinding,
            tns,
            &t.name,
        )
    });
    task(cx, out, dir, &s.task.name, &s.task.params, ab);
}

fn reference(
    cx: &Ctx<'_>,
    out: &mut Found,
    path: &str,
    want: Kind,
    ns: &str,
    name: &str,
) -> Option<Resource> {
    if name.is_empty() {
        return None; // "required" is reported by the resource's own validation.
    }
    if let Some(r) = cx.find(want, ns, name) {
        return Some(r);
    }
    let others = cx.other_kinds(want, ns, name);
    let shown = if want.cluster_scoped() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    if let Some(other) = others.first() {
        out.problems.push(Problem::new(
            path,
            format!(
                "`{name}` is {} in this apply, not {}: name {}",
                a(*other),
                a(want),
                a(want)
            ),
        ));
    } else {
        out.warnings.push(format!(
            "{path}: {want} {shown} does not exist yet; sessions fail until it is applied"
        ));
    }
    None
}

fn a(kind: Kind) -> String {
    let article = if kind.as_str().starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// The task of a BackupConfiguration or RestoreSession: it must run the session's way, and its
/// params must read under the rules of the Task it resolves to.
fn task(
    cx: &Ctx<'_>,
    out: &mut Found,
    dir: TaskDirection,
    name: &str,
    given: &[Param],
    appbinding: Option<Resource>,
) {
    let Found { problems, warnings } = out;
    let addon = match &appbinding {
        Some(Resource::AppBinding(a)) => a.spec.parameters.clone(),
        _ => None,
    };
    // Without its AppBinding, an unnamed task may be the AppBinding's custom default.
    let unknown_default = name.is_empty() && appbinding.is_none();
    let resolved = params::task_name(name, addon.as_ref(), dir);
    let rules = match cx.find(Kind::Task, "", &resolved) {
        Some(Resource::Task(t)) => params::rules_for(&resolved, Some(&t.spec)),
        _ => match params::builtin_task(&resolved) {
            Some(d) if d != dir => {
                problems.push(Problem::new(
                    "spec.task.name",
                    format!("`{resolved}` is a {d} task; this {dir} needs a {dir} task"),
                ));
                Rules::Free
            }
            Some(_) if unknown_default => Rules::Typed,
            Some(_) => Rules::Strict,
            None => {
                let others = cx.other_kinds(Kind::Task, "", &resolved);
                if let Some(other) = others.first() {
                    problems.push(Problem::new(
                        "spec.task.name",
                        format!(
                            "`{resolved}` is {} in this apply, not a Task: name a Task \
                             (whose steps name Functions) or a built-in task",
                            a(*other)
                        ),
                    ));
                } else {
                    warnings.push(format!(
                        "spec.task.name: Task {resolved} does not exist yet and is not a \
                         built-in task; sessions fail until it is applied"
                    ));
                }
                Rules::Free
            }
        },
    };
    problems.extend(validate::task_params("spec.task.params", given, rules));
    // The built-in steps hand `args` to the client programs; a user's own Functions get it
    // as a variable in commands the user wrote, so only the built-in steps are held to it.
    if rules != Rules::Free {
        let program = match dir {
            TaskDirection::Backup => crate::clientargs::ClientProgram::Dump,
            TaskDirection::Restore => crate::clientargs::ClientProgram::Load,
        };
        if let Some((field, why)) =
            crate::clientargs::refused_param("spec.task.params", given, program)
        {
            problems.push(Problem::new(field, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_located;

    fn none(_: Kind, _: &str, _: &str) -> Option<Resource> {
        None
    }

    fn check(text: &str) -> (String, Vec<String>) {
        let set = parse_located(text, "f.yaml").expect("parses");
        let r = check_set(&set, &none);
        let errors: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        (errors.join("\n"), r.warnings)
    }

    const AB: &str = "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\n\
                      metadata: {name: db}\nspec: {clientConfig: {url: 'mysql://h:3306/'}, \
                      secret: {name: auth}}\n";
    const REPO: &str = "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\n\
                        metadata: {name: repo}\nspec: {backend: {storageSecretName: rs, \
                        local: {mountPath: /x, hostPath: {path: /tmp/r}}}}\n";
    const SECRETS: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: auth}\n---\n\
                           apiVersion: v1\nkind: Secret\nmetadata: {name: rs}\n";

    fn bc(task: &str, params: &str, repo: &str) -> String {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {{name: bc}}\nspec:\n  task: {{name: {task}, params: [{params}]}}\n  \
             repository: {{name: {repo}}}\n  target: {{ref: {{kind: AppBinding, name: db}}}}\n  \
             retentionPolicy: {{name: k, keepLast: 1, prune: true}}\n"
        )
    }

    #[test]
    fn params_of_builtin_tasks_are_refused_with_the_field() {
        let text = [
            SECRETS,
            AB,
            REPO,
            &bc(
                "mariadb-backup-10.5.8",
                "{name: method, value: natve}, {name: connections, value: '0'}, \
                 {name: conections, value: '2'}",
                "repo",
            ),
        ]
        .join("---\n");
        let (e, w) = check(&text);
        assert_eq!(
            e,
            "f.yaml (document 5), BackupConfiguration/default/bc:\n  \
             - spec.task.params.method: `natve` is not one of mysqldump, native or physical: \
             fix the value or remove the param\n  \
             - spec.task.params.connections: `0` is not a whole number from 1 to 64: fix the \
             value or remove the param\n  \
             - spec.task.params.conections: not a param of the built-in tasks; did you mean \
             `connections`?"
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn args_that_redirect_the_client_are_refused_at_apply() {
        let text = [
            SECRETS,
            AB,
            REPO,
            &bc(
                "mariadb-backup-10.5.8",
                "{name: args, value: '--databases shop --host=evil'}",
                "repo",
            ),
        ]
        .join("---\n");
        let (e, _) = check(&text);
        assert!(
            e.starts_with(
                "f.yaml (document 5), BackupConfiguration/default/bc: spec.task.params[0].value: "
            ) && e.contains("--host"),
            "{e}"
        );
        // A user's own Function takes `args` as its author wrote it.
        let task = "apiVersion: stash.appscode.com/v1beta1\nkind: Task\nmetadata: {name: t}\n\
                    spec: {steps: [{name: stamp}]}\n";
        let func = "apiVersion: stash.appscode.com/v1beta1\nkind: Function\n\
                    metadata: {name: stamp}\nspec: {command: [/bin/true]}\n";
        let own = [
            SECRETS,
            AB,
            REPO,
            task,
            func,
            &bc("t", "{name: args, value: '--host=elsewhere'}", "repo"),
        ]
        .join("---\n");
        let (e, w) = check(&own);
        assert!(e.is_empty() && w.is_empty(), "{e} {w:?}");
    }

    #[test]
    fn a_task_of_the_other_direction_is_refused() {
        let text = [SECRETS, AB, REPO, &bc("mysql-restore-8.0.21", "", "repo")].join("---\n");
        let (e, _) = check(&text);
        assert_eq!(
            e,
            "f.yaml (document 5), BackupConfiguration/default/bc: spec.task.name: \
             `mysql-restore-8.0.21` is a restore task; this backup needs a backup task"
        );
    }

    #[test]
    fn custom_tasks_keep_their_own_params() {
        let task = "apiVersion: stash.appscode.com/v1beta1\nkind: Task\nmetadata: {name: t}\n\
                    spec: {steps: [{name: stamp}, {name: mysql-backup-8.0.21}]}\n";
        let func = "apiVersion: stash.appscode.com/v1beta1\nkind: Function\n\
                    metadata: {name: stamp}\nspec: {command: [/bin/true]}\n";
        let ok = [
            SECRETS,
            AB,
            REPO,
            task,
            func,
            &bc("t", "{name: note, value: x}", "repo"),
        ]
        .join("---\n");
        let (e, w) = check(&ok);
        assert!(e.is_empty() && w.is_empty(), "{e} {w:?}");
        // A built-in step still reads `connections`, so its type is checked.
        let bad = ok.replace("{name: note, value: x}", "{name: connections, value: many}");
        let (e, _) = check(&bad);
        assert!(e.contains("spec.task.params.connections: `many`"), "{e}");
    }

    #[test]
    fn wrong_kinds_are_errors_and_missing_ones_warnings() {
        // `db` is the AppBinding, not a Repository.
        let (e, _) = check(&[SECRETS, AB, REPO, &bc("mysql-backup", "", "db")].join("---\n"));
        assert_eq!(
            e,
            "f.yaml (document 5), BackupConfiguration/default/bc: spec.repository.name: `db` \
             is an AppBinding in this apply, not a Repository: name a Repository"
        );
        // Applying a configuration before its Repository is fine, as in Stash.
        let (e, w) = check(&[SECRETS, AB, &bc("mysql-backup", "", "later")].join("---\n"));
        assert!(e.is_empty(), "{e}");
        assert_eq!(
            w,
            vec![
                "f.yaml (document 4), BackupConfiguration/default/bc: spec.repository.name: \
                 Repository default/later does not exist yet; sessions fail until it is applied"
            ]
        );
        // A Task whose step names no Function, built-in or applied.
        let task = "apiVersion: stash.appscode.com/v1beta1\nkind: Task\nmetadata: {name: t}\n\
                    spec: {steps: [{name: nowhere}, {name: update-status}]}\n";
        let (e, w) = check(task);
        assert!(e.is_empty(), "{e}");
        assert_eq!(
            w,
            vec![
                "f.yaml (document 1), Task/t: spec.steps[0].name: Function nowhere does not \
                 exist yet; sessions fail until it is applied"
            ]
        );
    }

    #[test]
    fn archives_and_point_in_time_restores_name_their_resources() {
        let archive = |ab: &str, repo: &str| {
            format!(
                "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {{name: arc}}\n\
                 spec: {{appBinding: {{name: {ab}}}, repository: {{name: {repo}}}}}\n"
            )
        };
        let (e, w) = check(&[SECRETS, AB, REPO, &archive("db", "repo")].join("---\n"));
        assert!(e.is_empty() && w.is_empty(), "{e} {w:?}");
        let (e, _) = check(&[SECRETS, AB, REPO, &archive("repo", "repo")].join("---\n"));
        assert_eq!(
            e,
            "f.yaml (document 5), BinlogArchive/default/arc: spec.appBinding.name: `repo` is \
             a Repository in this apply, not an AppBinding: name an AppBinding"
        );
        let restore = |arc: &str| {
            format!(
                "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\n\
                 metadata: {{name: rs}}\nspec:\n  task: {{name: mysql-restore}}\n  \
                 repository: {{name: repo}}\n  target:\n    ref: {{kind: AppBinding, name: db}}\n    \
                 pointInTime: {{latest: true, archive: {arc}}}\n"
            )
        };
        let (e, w) =
            check(&[SECRETS, AB, REPO, &archive("db", "repo"), &restore("arc")].join("---\n"));
        assert!(e.is_empty() && w.is_empty(), "{e} {w:?}");
        let (e, _) = check(&[SECRETS, AB, REPO, &restore("db")].join("---\n"));
        assert_eq!(
            e,
            "f.yaml (document 5), RestoreSession/default/rs: spec.target.pointInTime.archive: \
             `db` is an AppBinding in this apply, not a BinlogArchive: name a BinlogArchive"
        );
        let (_, w) = check(&[SECRETS, AB, REPO, &restore("later")].join("---\n"));
        assert_eq!(
            w,
            vec![
                "f.yaml (document 5), RestoreSession/default/rs: \
                 spec.target.pointInTime.archive: BinlogArchive default/later does not exist \
                 yet; sessions fail until it is applied"
            ]
        );
    }

    #[test]
    fn a_verification_archive_must_archive_the_configurations_server_into_its_repository() {
        let archive = |ab: &str| {
            format!(
                "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {{name: arc}}\n\
                 spec: {{appBinding: {{name: {ab}}}, repository: {{name: repo}}}}\n"
            )
        };
        let verified = |arc: &str| {
            bc("mariadb-backup-10.5.8", "", "repo")
                + &format!("  verification: {{everyBackups: 1, binlogArchive: {arc}}}\n")
        };
        let (e, w) = check(&[SECRETS, AB, REPO, &archive("db"), &verified("arc")].join("---\n"));
        assert!(e.is_empty() && w.is_empty(), "{e} {w:?}");
        let (e, _) = check(&[SECRETS, AB, REPO, &archive("db"), &verified("db")].join("---\n"));
        assert!(
            e.contains("spec.verification.binlogArchive: `db` is an AppBinding in this apply"),
            "{e}"
        );
        let other = "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\n\
                     metadata: {name: other}\nspec: {clientConfig: {url: 'mysql://h2:3306/'}, \
                     secret: {name: auth}}\n";
        let (e, _) = check(
            &[
                SECRETS,
                AB,
                other,
                REPO,
                &archive("other"),
                &verified("arc"),
            ]
            .join("---\n"),
        );
        assert!(
            e.contains(
                "BackupConfiguration/default/bc: spec.verification.binlogArchive: BinlogArchive \
                 default/arc cannot serve it: it archives AppBinding default/other, the \
                 configuration backs up AppBinding default/db"
            ),
            "{e}"
        );
        let (_, w) = check(&[SECRETS, AB, REPO, &verified("later")].join("---\n"));
        assert!(
            w.iter().any(|w| w.contains(
                "spec.verification.binlogArchive: BinlogArchive default/later does not exist yet"
            )),
            "{w:?}"
        );
    }

    #[test]
    fn stored_resources_count() {
        let set = parse_located(&bc("mysql-backup", "", "repo"), "f.yaml").unwrap();
        let stored = |k: Kind, ns: &str, n: &str| -> Option<Resource> {
            let text = match (k, ns, n) {
                (Kind::Repository, "default", "repo") => REPO,
                (Kind::AppBinding, "default", "db") => AB,
                _ => return None,
            };
            parse_located(text, "s").ok()?.pop().map(|l| l.resource)
        };
        let r = check_set(&set, &stored);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
    }
}
