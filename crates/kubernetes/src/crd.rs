//! The CustomResourceDefinitions of Stash's kinds, generated from coffer-api's own spec and
//! status types. Names, scopes, short names, categories and print columns are Stash's (from
//! stashed/apimachinery's and kmodules/custom-resources' CRDs), so that a cluster where Stash's
//! CRDs are installed and one where coffer's are serve the same resources. BinlogArchive
//! (point-in-time recovery) is coffer's own kind in coffer's own group, `coffer.dev`.
//!
//! The schemas are structural (every node typed, no `$ref`, no `additionalProperties` next to
//! `properties`), as the API server requires of `apiextensions.k8s.io/v1` CRDs.

use coffer_api::{
    appbinding::AppBindingSpec,
    archive::{BinlogArchiveSpec, BinlogArchiveStatus},
    backup::{
        BackupConfigurationSpec, BackupConfigurationStatus, BackupSessionSpec, BackupSessionStatus,
    },
    repository::{RepositorySpec, RepositoryStatus},
    restore::{RestoreSessionSpec, RestoreSessionStatus},
    task::{FunctionSpec, TaskSpec},
    Kind,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Map, Value};

use crate::kinds::api_resource;

/// The kinds coffer defines CRDs for (every kind but the core Secret), in the order
/// `crds_yaml` prints them. BinlogArchive is coffer's own kind, in coffer's own group
/// (`coffer.dev`); Stash has no such CRD.
pub const CRD_KINDS: [Kind; 8] = [
    Kind::Repository,
    Kind::BackupConfiguration,
    Kind::BackupSession,
    Kind::RestoreSession,
    Kind::Task,
    Kind::Function,
    Kind::AppBinding,
    Kind::BinlogArchive,
];

/// A print column: name, JSON path, type (and format).
struct Column(
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

const AGE: Column = Column("Age", ".metadata.creationTimestamp", "date", None);

/// What Stash's CRD of a kind says beyond group, version, kind and plural.
struct Names {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    columns: &'static [Column],
    /// Stash's CRD labels (`app.kubernetes.io/name`): kept, so that applying coffer's CRDs over
    /// Stash's does not relabel them.
    app_label: &'static str,
}

fn names(kind: Kind) -> Names {
    const STASH: &[&str] = &["stash", "appscode"];
    const STASH_ALL: &[&str] = &["stash", "appscode", "all"];
    let stash = |short_names, categories, columns| Names {
        short_names,
        categories,
        columns,
        app_label: "stash",
    };
    match kind {
        Kind::Repository => stash(
            &["repo"],
            STASH,
            &[
                Column("Integrity", ".status.integrity", "boolean", None),
                Column("Size", ".status.totalSize", "string", None),
                Column("Snapshot-Count", ".status.snapshotCount", "integer", None),
                Column(
                    "Last-Successful-Backup",
                    ".status.lastBackupTime",
                    "date",
                    Some("date-time"),
                ),
                AGE,
            ],
        ),
        Kind::BackupConfiguration => stash(
            &["bc"],
            STASH_ALL,
            &[
                Column("Task", ".spec.task.name", "string", None),
                Column("Schedule", ".spec.schedule", "string", None),
                Column("Paused", ".spec.paused", "boolean", None),
                Column("Phase", ".status.phase", "string", None),
                AGE,
            ],
        ),
        // Stash's BackupSession CRD has no short name (coffer's CLI accepts `bs` on its own).
        Kind::BackupSession => stash(
            &[],
            STASH_ALL,
            &[
                Column("Invoker-Type", ".spec.invoker.kind", "string", None),
                Column("Invoker-Name", ".spec.invoker.name", "string", None),
                Column("Phase", ".status.phase", "string", None),
                Column("Duration", ".status.sessionDuration", "string", None),
                AGE,
            ],
        ),
        Kind::RestoreSession => stash(
            &["restore"],
            STASH_ALL,
            &[
                Column("Repository", ".spec.repository.name", "string", None),
                Column("Phase", ".status.phase", "string", None),
                Column("Duration", ".status.sessionDuration", "string", None),
                AGE,
            ],
        ),
        Kind::Task => stash(&["task"], STASH, &[AGE]),
        Kind::Function => stash(&["fn"], STASH, &[AGE]),
        Kind::AppBinding => Names {
            short_names: &[],
            categories: &["catalog", "appscode", "all"],
            columns: &[
                Column("Type", ".spec.type", "string", None),
                Column("Version", ".spec.version", "string", None),
                AGE,
            ],
            app_label: "catalog",
        },
        Kind::BinlogArchive => Names {
            short_names: &["archive"],
            categories: &["coffer", "all"],
            columns: &[
                Column("AppBinding", ".spec.appBinding.name", "string", None),
                Column("Phase", ".status.phase", "string", None),
                Column("Last-GTID", ".status.lastArchivedGtid", "string", None),
                Column(
                    "Last-Event",
                    ".status.lastEventTime",
                    "date",
                    Some("date-time"),
                ),
                Column("Lag", ".status.lagSeconds", "number", None),
                AGE,
            ],
            app_label: "coffer",
        },
        Kind::Secret => unreachable!("Secret is a core kind; it has no CRD"),
    }
}

/// The spec schema and, for kinds with a status subresource, the status schema.
fn schemas(kind: Kind) -> (Value, Option<Value>) {
    match kind {
        Kind::Repository => (
            schema_of::<RepositorySpec>(),
            Some(schema_of::<RepositoryStatus>()),
        ),
        Kind::BackupConfiguration => (
            schema_of::<BackupConfigurationSpec>(),
            Some(schema_of::<BackupConfigurationStatus>()),
        ),
        Kind::BackupSession => (
            schema_of::<BackupSessionSpec>(),
            Some(schema_of::<BackupSessionStatus>()),
        ),
        Kind::RestoreSession => (
            schema_of::<RestoreSessionSpec>(),
            Some(schema_of::<RestoreSessionStatus>()),
        ),
        // Stash's Task, Function and AppBinding have no status.
        Kind::Task => (schema_of::<TaskSpec>(), None),
        Kind::Function => (schema_of::<FunctionSpec>(), None),
        Kind::AppBinding => (schema_of::<AppBindingSpec>(), None),
        Kind::BinlogArchive => (
            schema_of::<BinlogArchiveSpec>(),
            Some(schema_of::<BinlogArchiveStatus>()),
        ),
        Kind::Secret => unreachable!("Secret is a core kind; it has no CRD"),
    }
}

/// The OpenAPI v3 schema of a type, rewritten into a structural one: subschemas inlined,
/// enums and `Option`s in the shapes the API server accepts (kube's transforms), then
/// `normalize`.
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(root) = schema.as_object_mut() {
        root.remove("title");
    }
    normalize(&mut schema);
    schema
}

/// What the generic transforms leave that a CRD must not have:
/// - an untyped node (a `serde_json::Value` field) becomes an object whose unknown fields
///   are kept, so that Stash's free-form fields (runtimeSettings, volumeClaimTemplates, …)
///   survive pruning;
/// - `default`s are dropped: coffer applies its defaults when it reads a resource, and the
///   API server would otherwise write them into every stored object (Stash's CRDs have none);
/// - unsigned integer formats become `int64` with `minimum: 0`, the format Kubernetes knows.
fn normalize(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    obj.remove("default");
    let keeps_unknown = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !obj.contains_key("type") && !keeps_unknown && !int_or_string {
        obj.insert("type".into(), json!("object"));
        obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    if let Some(Value::String(format)) = obj.get("format") {
        if format.starts_with("uint") {
            obj.insert("format".into(), json!("int64"));
            obj.insert("minimum".into(), json!(0.0));
            obj.remove("maximum");
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(normalize);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get_mut(key) {
            normalize(child);
        }
    }
}

/// The whole object's schema: apiVersion, kind, metadata (the API server validates it
/// itself), spec and status.
fn object_schema(spec: Value, status: Option<Value>) -> Value {
    let mut properties = Map::new();
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), json!({"type": "object"}));
    properties.insert("spec".into(), spec);
    if let Some(status) = status {
        properties.insert("status".into(), status);
    }
    json!({"type": "object", "properties": properties})
}

/// The CRD of one of `CRD_KINDS`.
pub fn crd(kind: Kind) -> CustomResourceDefinition {
    let ar = api_resource(kind);
    let n = names(kind);
    let (spec, status) = schemas(kind);
    let has_status = status.is_some();
    let schema: JSONSchemaProps = serde_json::from_value(object_schema(spec, status))
        .unwrap_or_else(|e| panic!("the {} schema is not a JSONSchemaProps: {e}", kind.as_str()));
    let strings = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", ar.plural, ar.group)),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_string(),
                    n.app_label.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: ar.group.clone(),
            names: CustomResourceDefinitionNames {
                kind: ar.kind.clone(),
                list_kind: Some(format!("{}List", ar.kind)),
                plural: ar.plural.clone(),
                singular: Some(ar.kind.to_lowercase()),
                short_names: strings(n.short_names),
                categories: strings(n.categories),
            },
            scope: if kind.cluster_scoped() {
                "Cluster"
            } else {
                "Namespaced"
            }
            .into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: ar.version.clone(),
                served: true,
                storage: true,
                additional_printer_columns: Some(
                    n.columns
                        .iter()
                        .map(
                            |Column(name, path, type_, format)| CustomResourceColumnDefinition {
                                name: name.to_string(),
                                json_path: path.to_string(),
                                type_: type_.to_string(),
                                format: format.map(str::to_string),
                                ..Default::default()
                            },
                        )
                        .collect(),
                ),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                subresources: has_status.then(|| CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// Every CRD coffer serves.
pub fn crds() -> Vec<CustomResourceDefinition> {
    CRD_KINDS.into_iter().map(crd).collect()
}

/// Every CRD as one multi-document YAML stream (`coffer operator crds`; the Helm chart's
/// `crds/`).
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# coffer's CRDs for Stash's kinds and coffer's BinlogArchive. Generated by \
         `coffer operator crds`; do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests;
