//! Reading manifests: YAML (one or many documents) or JSON, into typed resources.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::{
    kind::Kind,
    meta::ObjectMeta,
    validate::{self, Problem},
    AppBinding, BackupConfiguration, BackupSession, BinlogArchive, Function, RestoreSession,
    Secret, Task,
};

/// One resource of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Secret(Secret),
    Repository(crate::Repository),
    AppBinding(AppBinding),
    BackupConfiguration(BackupConfiguration),
    BackupSession(BackupSession),
    RestoreSession(RestoreSession),
    Task(Task),
    Function(Function),
    BinlogArchive(BinlogArchive),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Resource::Secret($r) => $e,
            Resource::Repository($r) => $e,
            Resource::AppBinding($r) => $e,
            Resource::BackupConfiguration($r) => $e,
            Resource::BackupSession($r) => $e,
            Resource::RestoreSession($r) => $e,
            Resource::Task($r) => $e,
            Resource::Function($r) => $e,
            Resource::BinlogArchive($r) => $e,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Secret(_) => Kind::Secret,
            Resource::Repository(_) => Kind::Repository,
            Resource::AppBinding(_) => Kind::AppBinding,
            Resource::BackupConfiguration(_) => Kind::BackupConfiguration,
            Resource::BackupSession(_) => Kind::BackupSession,
            Resource::RestoreSession(_) => Kind::RestoreSession,
            Resource::Task(_) => Kind::Task,
            Resource::Function(_) => Kind::Function,
            Resource::BinlogArchive(_) => Kind::BinlogArchive,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each!(self, r => &r.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, r => &mut r.metadata)
    }

    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// The namespace, or "" for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        if self.kind().cluster_scoped() {
            ""
        } else {
            self.meta().namespace()
        }
    }

    /// `Kind/namespace/name` (or `Kind/name` when cluster-scoped), for messages.
    pub fn display_name(&self) -> String {
        if self.kind().cluster_scoped() {
            format!("{}/{}", self.kind(), self.name())
        } else {
            format!("{}/{}/{}", self.kind(), self.namespace(), self.name())
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        each!(self, r => serde_json::to_value(r).expect("resources serialise"))
    }

    /// Reads a resource of a known kind from JSON, reporting the failing field's path.
    pub fn from_json(kind: Kind, v: serde_json::Value) -> Result<Resource, Problem> {
        fn de<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, Problem> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                Problem::new(
                    if path == "." { String::new() } else { path },
                    clean_serde_message(&e.inner().to_string()),
                )
            })
        }
        Ok(match kind {
            Kind::Secret => Resource::Secret(de(v)?),
            Kind::Repository => Resource::Repository(de(v)?),
            Kind::AppBinding => Resource::AppBinding(de(v)?),
            Kind::BackupConfiguration => Resource::BackupConfiguration(de(v)?),
            Kind::BackupSession => Resource::BackupSession(de(v)?),
            Kind::RestoreSession => Resource::RestoreSession(de(v)?),
            Kind::Task => Resource::Task(de(v)?),
            Kind::Function => Resource::Function(de(v)?),
            Kind::BinlogArchive => Resource::BinlogArchive(de(v)?),
        })
    }
}

fn clean_serde_message(m: &str) -> String {
    // serde's "unknown field `x`, expected one of `a`, `b`" is already actionable; trim the
    // position suffix serde_json adds for values that came from YAML.
    m.split(" at line ").next().unwrap_or(m).to_string()
}

/// A manifest that cannot be applied, with everything wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestError {
    /// The file (or `-` for standard input).
    pub source: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind/namespace/name` when known.
    pub resource: Option<String>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if self.document > 0 {
            write!(f, " (document {})", self.document)?;
        }
        if let Some(r) = &self.resource {
            write!(f, ", {r}")?;
        }
        write!(f, ":")?;
        if self.problems.len() == 1 {
            write!(f, " {}", self.problems[0])
        } else {
            for p in &self.problems {
                write!(f, "\n  - {p}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for ManifestError {}

/// A resource and where it was written, for messages about it after parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub source: String,
    /// 1-based document number within the file.
    pub document: usize,
    pub resource: Resource,
}

/// Parses every document of a manifest file and validates each resource. Any problem in any
/// document refuses the whole file: nothing is applied from a file with a mistake in it.
pub fn parse_manifests(text: &str, source: &str) -> Result<Vec<Resource>, Vec<ManifestError>> {
    parse_located(text, source).map(|l| l.into_iter().map(|l| l.resource).collect())
}

/// [`parse_manifests`], keeping each resource's file and document.
pub fn parse_located(text: &str, source: &str) -> Result<Vec<Located>, Vec<ManifestError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let err = |document: usize, resource: Option<String>, problems: Vec<Problem>| ManifestError {
        source: source.to_string(),
        document,
        resource,
        problems,
    };
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value: serde_yaml::Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(
                    document,
                    None,
                    vec![Problem::new("", format!("not valid YAML: {e}"))],
                ));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let json: serde_json::Value = match serde_json::to_value(&value) {
            Ok(j) => j,
            Err(e) => {
                errors.push(err(
                    document,
                    None,
                    vec![Problem::new(
                        "",
                        format!("cannot be read as an object: {e}"),
                    )],
                ));
                continue;
            }
        };
        // A `kind: List` holds resources in `items`, as `kubectl get -o yaml` writes them.
        let items = if json.get("kind").and_then(|k| k.as_str()) == Some("List") {
            json.get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default()
        } else {
            vec![json]
        };
        for item in items {
            match parse_one(item) {
                Ok(resource) => out.push(Located {
                    source: source.to_string(),
                    document,
                    resource,
                }),
                Err((resource, problems)) => errors.push(err(document, resource, problems)),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

type ParseFailure = (Option<String>, Vec<Problem>);

fn parse_one(v: serde_json::Value) -> Result<Resource, ParseFailure> {
    let Some(obj) = v.as_object() else {
        return Err((
            None,
            vec![Problem::new(
                "",
                "expected a mapping with apiVersion, kind, metadata",
            )],
        ));
    };
    let kind_str = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or(crate::meta::DEFAULT_NAMESPACE);
    if kind_str.is_empty() {
        return Err((None, vec![Problem::new("kind", "required")]));
    }
    let Some(kind) = Kind::from_manifest_kind(kind_str) else {
        let known: Vec<&str> = crate::kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err((
            Some(format!("{kind_str}/{name}")),
            vec![Problem::new(
                "kind",
                format!(
                    "unknown kind `{kind_str}`; coffer knows {}",
                    known.join(", ")
                ),
            )],
        ));
    };
    let label = if kind.cluster_scoped() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    };
    if !kind.accepted_api_versions().contains(&api_version) {
        let why = if api_version.is_empty() {
            "required".to_string()
        } else {
            format!("`{api_version}` is not an apiVersion of {kind}")
        };
        return Err((
            Some(label),
            vec![Problem::new(
                "apiVersion",
                format!(
                    "{why}; expected {}",
                    kind.accepted_api_versions().join(" or ")
                ),
            )],
        ));
    }
    let mut res =
        Resource::from_json(kind, v.clone()).map_err(|p| (Some(label.clone()), vec![p]))?;
    let problems = validate::validate(&res, &v);
    if !problems.is_empty() {
        return Err((Some(label), problems));
    }
    if let Resource::Secret(s) = &mut res {
        s.normalise();
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: repo-secret, namespace: demo}
stringData: {RESTIC_PASSWORD: "s3cret"}
---
apiVersion: stash.appscode.com/v1alpha1
kind: Repository
metadata: {name: local-repo, namespace: demo}
spec:
  backend:
    local: {mountPath: /safe/data, hostPath: {path: /tmp/repo}}
    storageSecretName: repo-secret
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: db-backup, namespace: demo}
spec:
  schedule: "*/5 * * * *"
  task: {name: mysql-backup-8.0.21}
  repository: {name: local-repo}
  target:
    ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: db}
  retentionPolicy: {name: keep-last-5, keepLast: 5, prune: true}
"#;

    #[test]
    fn parses_multi_document_yaml() {
        let rs = parse_manifests(GOOD, "good.yaml").unwrap();
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].display_name(), "Secret/demo/repo-secret");
        let Resource::Secret(s) = &rs[0] else {
            panic!()
        };
        assert_eq!(s.get("RESTIC_PASSWORD").as_deref(), Some("s3cret"));
        assert!(s.string_data.is_empty(), "stringData is folded into data");
        let Resource::BackupConfiguration(bc) = &rs[2] else {
            panic!()
        };
        assert_eq!(
            bc.spec.retention_policy.as_ref().unwrap().keep_last,
            Some(5)
        );
    }

    #[test]
    fn unknown_kind_and_version_are_named() {
        let e = parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "f.yaml")
            .unwrap_err();
        assert!(e[0].to_string().contains("unknown kind `Pod`"), "{}", e[0]);
        let e = parse_manifests(
            "apiVersion: stash.appscode.com/v1\nkind: Repository\nmetadata: {name: x}\n",
            "f.yaml",
        )
        .unwrap_err();
        let msg = e[0].to_string();
        assert!(
            msg.contains("f.yaml (document 1), Repository/default/x: apiVersion"),
            "{msg}"
        );
        assert!(msg.contains("stash.appscode.com/v1alpha1"), "{msg}");
    }

    #[test]
    fn malformed_yaml_is_refused() {
        let e = parse_manifests("kind: [unclosed\n", "bad.yaml").unwrap_err();
        assert!(e[0].to_string().contains("not valid YAML"), "{}", e[0]);
    }

    #[test]
    fn type_errors_carry_the_field_path() {
        let text = GOOD.replace("keepLast: 5", "keepLast: five");
        let e = parse_manifests(&text, "f.yaml").unwrap_err();
        let msg = e[0].to_string();
        assert!(msg.contains("spec.retentionPolicy.keepLast"), "{msg}");
        assert!(msg.contains("BackupConfiguration/demo/db-backup"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_refused_with_the_known_ones() {
        let text = GOOD.replace("schedule:", "schedulee:");
        let e = parse_manifests(&text, "f.yaml").unwrap_err();
        let msg = e[0].to_string();
        assert!(msg.contains("unknown field `schedulee`"), "{msg}");
        assert!(msg.contains("schedule"), "{msg}");
    }

    #[test]
    fn one_bad_document_refuses_the_file() {
        let text = GOOD.replace("storageSecretName: repo-secret", "");
        let e = parse_manifests(&text, "f.yaml").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string().contains("spec.backend.storageSecretName"),
            "{}",
            e[0]
        );
    }
}
