//! RBAC sufficiency without a cluster: what an API request needs in RBAC terms (verb, API
//! group, resource and subresource, namespace), and whether the chart's ClusterRoles — bound
//! as the operator binds them, by a RoleBinding in the session's namespace — together with
//! the chart's ClusterRoleBindings grant it. Tests hold the requests a component really made
//! (recorded by an API double) against `deploy/helm/coffer/templates/*.yaml`, so a missing
//! rule fails a test instead of a backup in a cluster.
//!
//! Modelled as the API server's RBAC authorizer decides: a rule matches when its verbs,
//! apiGroups and resources (`*` for all, `resource/subresource` for a subresource) and, when
//! given, resourceNames match; a RoleBinding grants only requests in its namespace — never a
//! cluster-scoped resource such as a Task — while a ClusterRoleBinding grants everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// What one request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// None: a cluster-scoped resource.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Needed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)?;
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " cluster-wide"),
        }
    }
}

/// The RBAC attributes of `method path?query`, as the API server derives them.
pub fn needed(method: &str, path: &str, query: &str) -> Result<Needed, String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(format!("{path} is not a resource path")),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(*s)),
        _ => return Err(format!("{path} is not a resource path")),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => return Err(format!("{m} {path}: no RBAC verb for this method")),
    };
    Ok(Needed {
        verb: verb.into(),
        api_group: group.into(),
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.into(),
        },
        namespace,
        name,
    })
}

/// One PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

impl Rule {
    fn matches(&self, n: &Needed) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == n.resource
                || r.strip_prefix("*/")
                    .is_some_and(|sub| n.resource.split_once('/').is_some_and(|(_, s)| s == sub))
        });
        let named = self.resource_names.is_empty()
            || n.name
                .as_deref()
                .is_some_and(|name| self.resource_names.iter().any(|x| x == name));
        any(&self.verbs, &n.verb) && any(&self.api_groups, &n.api_group) && resource && named
    }
}

/// A ClusterRoleBinding's subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl Subject {
    /// Whether a ServiceAccount `sa` of namespace `ns` is this subject (or in its group).
    fn includes(&self, ns: &str, sa: &str) -> bool {
        match self.kind.as_str() {
            "ServiceAccount" => self.name == sa && self.namespace.as_deref() == Some(ns),
            "Group" => [
                "system:authenticated".to_string(),
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
            ]
            .contains(&self.name),
            _ => false,
        }
    }
}

/// The chart's helpers (deploy/helm/coffer/templates/_helpers.tpl) as they render for a
/// release named `coffer` in namespace `coffer`, default values: what
/// [`ChartRbac::from_chart_dir`] needs to name the operator's roles and ServiceAccount.
pub const RELEASE_COFFER: [(&str, &str); 3] = [
    ("include \"coffer.fullname\" .", "coffer"),
    ("include \"coffer.serviceAccountName\" .", "coffer"),
    (".Release.Namespace", "coffer"),
];

/// A RoleBinding (`namespace` set) or ClusterRoleBinding (`namespace` None).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub namespace: Option<String>,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    pub role: String,
    pub subjects: Vec<Subject>,
}

/// The RBAC objects a chart's templates render: ClusterRoles, Roles and their bindings.
#[derive(Debug, Clone, Default)]
pub struct ChartRbac {
    pub cluster_roles: BTreeMap<String, Vec<Rule>>,
    /// Roles by (namespace, name).
    pub roles: BTreeMap<(String, String), Vec<Rule>>,
    pub bindings: Vec<Binding>,
}

/// `{{ … }}` actions in `line` replaced: `.Values.a.b` from `values`, others from `known`
/// (action text, trimmed of `-` and spaces → its rendering). None when the line holds any
/// other action (control flow, labels), which this reader leaves out.
fn render_line(line: &str, values: &Value, known: &[(&str, &str)]) -> Option<String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}")? + start;
        let action = rest[start + 2..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if let Some((_, r)) = known.iter().find(|(a, _)| *a == action) {
            out.push_str(r);
        } else {
            let path = action.strip_prefix(".Values.")?;
            let v = path.split('.').try_fold(values, |v, k| v.get(k))?;
            out.push_str(&match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("{what} is not valid: {e}"))
}

impl ChartRbac {
    /// Reads the RBAC objects of the given templates, with `{{ .Values.… }}` taken from
    /// `values_yaml`, the actions in `known` rendered as given (e.g. the chart's helpers for
    /// one release), and every other template line left out (the chart's conditionals are
    /// taken as true, its labels dropped).
    pub fn from_templates(
        templates: &[&str],
        values_yaml: &str,
        known: &[(&str, &str)],
    ) -> Result<ChartRbac, String> {
        let values: Value = serde_yaml::from_str(values_yaml)
            .map_err(|e| format!("values.yaml is not YAML: {e}"))?;
        let mut rbac = ChartRbac::default();
        for text in templates {
            let rendered: Vec<String> = text
                .lines()
                .filter_map(|l| render_line(l, &values, known))
                .collect();
            for doc in rendered.join("\n").split("\n---") {
                let v: Value = serde_yaml::from_str(doc)
                    .map_err(|e| format!("a rendered template is not YAML: {e}\n{doc}"))?;
                let name = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ns = v["metadata"]["namespace"].as_str().map(String::from);
                let kind = v["kind"].as_str().unwrap_or_default();
                match kind {
                    "ClusterRole" | "Role" => {
                        let rules: Vec<Rule> =
                            parse(&v["rules"], &format!("{kind} {name}: rules"))?;
                        match (kind, ns) {
                            ("ClusterRole", _) => {
                                rbac.cluster_roles.insert(name, rules);
                            }
                            (_, Some(ns)) => {
                                rbac.roles.insert((ns, name), rules);
                            }
                            (_, None) => return Err(format!("Role {name} has no namespace")),
                        }
                    }
                    "ClusterRoleBinding" | "RoleBinding" => {
                        let namespace = match kind {
                            "RoleBinding" => {
                                Some(ns.ok_or(format!("RoleBinding {name} has no namespace"))?)
                            }
                            _ => None,
                        };
                        rbac.bindings.push(Binding {
                            namespace,
                            role_kind: v["roleRef"]["kind"].as_str().unwrap_or_default().into(),
                            role: v["roleRef"]["name"].as_str().unwrap_or_default().into(),
                            subjects: parse(&v["subjects"], &format!("{kind} {name}: subjects"))?,
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(rbac)
    }

    /// The RBAC objects of a chart directory (`templates/*.yaml` with its `values.yaml`),
    /// `known` as for [`ChartRbac::from_templates`].
    pub fn from_chart_dir(
        dir: &std::path::Path,
        known: &[(&str, &str)],
    ) -> Result<ChartRbac, String> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let values = read(&dir.join("values.yaml"))?;
        let mut paths: Vec<_> = std::fs::read_dir(dir.join("templates"))
            .map_err(|e| format!("cannot list {}/templates: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        paths.sort();
        let texts = paths
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        ChartRbac::from_templates(&refs, &values, known)
    }

    /// Whether ServiceAccount `ns/sa` may make the request through the chart's bindings and
    /// `extra` ones; the error names what it needed.
    fn allows_with(
        &self,
        extra: &[Binding],
        ns: &str,
        sa: &str,
        method: &str,
        path: &str,
        query: &str,
    ) -> Result<(), String> {
        let n = needed(method, path, query)?;
        let granted = self.bindings.iter().chain(extra).any(|b| {
            let in_scope = match &b.namespace {
                None => true,
                Some(bns) => n.namespace.as_deref() == Some(bns.as_str()),
            };
            let rules = match (b.role_kind.as_str(), &b.namespace) {
                ("ClusterRole", _) => self.cluster_roles.get(&b.role),
                ("Role", Some(bns)) => self.roles.get(&(bns.clone(), b.role.clone())),
                _ => None,
            };
            in_scope
                && b.subjects.iter().any(|s| s.includes(ns, sa))
                && rules.is_some_and(|rules| rules.iter().any(|r| r.matches(&n)))
        });
        if granted {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} needs {n}, which no binding of ServiceAccount {ns}/{sa} grants"
            ))
        }
    }

    /// Whether ServiceAccount `ns/sa` may make the request through the chart's own bindings
    /// (e.g. the operator's).
    pub fn allows_bound(
        &self,
        ns: &str,
        sa: &str,
        method: &str,
        path: &str,
        query: &str,
    ) -> Result<(), String> {
        self.allows_with(&[], ns, sa, method, path, query)
    }

    /// Whether ServiceAccount `ns/sa`, bound to ClusterRole `role` by a RoleBinding in `ns`
    /// (as the operator binds its CronJobs' and Jobs' ServiceAccounts), may make the request,
    /// with the chart's own bindings besides.
    pub fn allows(
        &self,
        role: &str,
        ns: &str,
        sa: &str,
        method: &str,
        path: &str,
        query: &str,
    ) -> Result<(), String> {
        if !self.cluster_roles.contains_key(role) {
            return Err(format!("the chart has no ClusterRole {role}"));
        }
        let by_operator = Binding {
            namespace: Some(ns.into()),
            role_kind: "ClusterRole".into(),
            role: role.into(),
            subjects: vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa.into(),
                namespace: Some(ns.into()),
            }],
        };
        self.allows_with(&[by_operator], ns, sa, method, path, query)
            .map_err(|e| format!("{e} (ClusterRole {role} is bound in namespace {ns})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_attributes_the_api_server_gives_them() {
        let n = |m, p, q| needed(m, p, q).unwrap();
        let t = |verb: &str, group: &str, resource: &str, ns: Option<&str>| {
            (
                verb.to_string(),
                group.to_string(),
                resource.to_string(),
                ns.map(String::from),
            )
        };
        let a = |x: Needed| (x.verb, x.api_group, x.resource, x.namespace);
        for (got, want) in [
            (
                n("GET", "/api/v1/namespaces/db/secrets/s3", ""),
                t("get", "", "secrets", Some("db")),
            ),
            (
                n("GET", "/apis/stash.appscode.com/v1beta1/tasks/x", ""),
                t("get", "stash.appscode.com", "tasks", None),
            ),
            (
                n(
                    "PATCH",
                    "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions/b/status",
                    "",
                ),
                t(
                    "patch",
                    "stash.appscode.com",
                    "backupsessions/status",
                    Some("db"),
                ),
            ),
            (
                n(
                    "POST",
                    "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions",
                    "",
                ),
                t("create", "stash.appscode.com", "backupsessions", Some("db")),
            ),
            (
                n("GET", "/apis/batch/v1/namespaces/db/jobs", "watch=true&x=1"),
                t("watch", "batch", "jobs", Some("db")),
            ),
            (
                n("GET", "/apis/batch/v1/jobs", ""),
                t("list", "batch", "jobs", None),
            ),
            (
                n("POST", "/api/v1/namespaces/db/pods/p/exec", "command=ls"),
                t("create", "", "pods/exec", Some("db")),
            ),
            (
                n("DELETE", "/apis/batch/v1/namespaces/db/jobs/j", ""),
                t("delete", "batch", "jobs", Some("db")),
            ),
        ] {
            assert_eq!(a(got), want);
        }
        assert!(needed("GET", "/healthz", "").is_err());
    }

    /// Kubernetes lets the operator bind a ClusterRole (the RoleBindings it makes for its
    /// CronJobs' and Jobs' ServiceAccounts) only if it holds every permission the role grants;
    /// and each role grants only what its pod does.
    #[test]
    fn the_operator_holds_every_permission_of_the_roles_it_binds() {
        let chart =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer");
        let rbac = ChartRbac::from_chart_dir(&chart, &RELEASE_COFFER).unwrap();
        let operator = &rbac.cluster_roles["coffer-operator"];
        let s = crate::OperatorSettings::default();
        for role in [
            &s.trigger_cluster_role,
            &s.backup_job_cluster_role,
            &s.restore_job_cluster_role,
            &s.verify_job_cluster_role,
            &s.archive_cluster_role,
        ] {
            let rules = rbac
                .cluster_roles
                .get(role)
                .unwrap_or_else(|| panic!("the chart has no ClusterRole {role}"));
            for r in rules {
                for (verb, group, resource) in r.verbs.iter().flat_map(|v| {
                    r.api_groups
                        .iter()
                        .flat_map(move |g| r.resources.iter().map(move |x| (v, g, x)))
                }) {
                    let n = Needed {
                        verb: verb.clone(),
                        api_group: group.clone(),
                        resource: resource.clone(),
                        namespace: Some("db".into()),
                        name: None,
                    };
                    assert!(
                        operator.iter().any(|o| o.matches(&n)),
                        "ClusterRole {role} grants {n}, which the operator does not hold"
                    );
                }
            }
        }
        // The verification's pod reads its configuration, Repository and Secrets and writes
        // the configuration's status: nothing more.
        let verify = &rbac.cluster_roles[&s.verify_job_cluster_role];
        let mut granted: Vec<String> = verify
            .iter()
            .flat_map(|r| {
                r.verbs
                    .iter()
                    .flat_map(move |v| r.resources.iter().map(move |x| format!("{v} {x}")))
            })
            .collect();
        granted.sort();
        assert_eq!(
            granted,
            [
                "get backupconfigurations",
                "get repositories",
                "get secrets",
                "patch backupconfigurations/status",
            ]
        );
    }

    const ROLES: &str = r#"{{- if .Values.rbac.create }}
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: {{ .Values.rbac.jobRole }}
  labels:
    {{- include "x.labels" . | nindent 4 }}
rules:
  - apiGroups: [stash.appscode.com]
    resources: [backupsessions/status, tasks]
    verbs: [patch, get]
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [only-this]
    verbs: [get]
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: readers
rules:
  - apiGroups: ["*"]
    resources: [functions]
    verbs: ["*"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: readers
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: readers}
subjects:
  - {kind: Group, name: "system:serviceaccounts:db", apiGroup: rbac.authorization.k8s.io}
---
kind: Role
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: leases, namespace: {{ .Release.Namespace }}}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get]}
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: leases, namespace: {{ .Release.Namespace }}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects:
  - {kind: ServiceAccount, name: {{ include "x.sa" . }}, namespace: {{ .Release.Namespace }}}
{{- end }}
"#;

    #[test]
    fn a_role_bound_in_a_namespace_grants_its_rules_there_and_nothing_cluster_wide() {
        let rbac = ChartRbac::from_templates(
            &[ROLES],
            "rbac: {create: true, jobRole: job}\n",
            &[(".Release.Namespace", "ops"), ("include \"x.sa\" .", "op")],
        )
        .unwrap();
        assert_eq!(
            rbac.cluster_roles.keys().collect::<Vec<_>>(),
            ["job", "readers"]
        );
        let allows = |ns: &str, m: &str, p: &str| rbac.allows("job", ns, "sa", m, p, "");
        let bs = "/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions/b";
        assert_eq!(allows("db", "PATCH", &format!("{bs}/status")), Ok(()));
        // Not the session itself, not another namespace's.
        assert!(allows("db", "PATCH", bs).is_err());
        assert!(allows("other", "PATCH", &format!("{bs}/status")).is_err());
        // A cluster-scoped Task is out of a RoleBinding's reach, whatever the role says.
        let err = allows("db", "GET", "/apis/stash.appscode.com/v1beta1/tasks/t").unwrap_err();
        assert!(
            err.contains("get tasks (stash.appscode.com) cluster-wide"),
            "{err}"
        );
        // resourceNames restrict.
        assert_eq!(
            allows("db", "GET", "/api/v1/namespaces/db/secrets/only-this"),
            Ok(())
        );
        assert!(allows("db", "GET", "/api/v1/namespaces/db/secrets/other").is_err());
        // The ClusterRoleBinding covers the namespace's ServiceAccounts, cluster-wide.
        let f = "/apis/stash.appscode.com/v1beta1/functions/f";
        assert_eq!(allows("db", "GET", f), Ok(()));
        assert!(allows("other", "GET", f).is_err());
        assert!(rbac.allows("nope", "db", "sa", "GET", f, "").is_err());
        // A Role's RoleBinding: its ServiceAccount, in its namespace only.
        let lease = |ns: &str| format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/l");
        assert_eq!(
            rbac.allows_bound("ops", "op", "GET", &lease("ops"), ""),
            Ok(())
        );
        assert!(rbac
            .allows_bound("ops", "op", "GET", &lease("db"), "")
            .is_err());
        assert!(rbac
            .allows_bound("ops", "other", "GET", &lease("ops"), "")
            .is_err());
        assert!(rbac
            .allows_bound("ops", "op", "PATCH", &lease("ops"), "")
            .is_err());
    }
}
