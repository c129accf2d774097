use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::*;

/// The CRD's `openAPIV3Schema`, as printed.
fn printed_schema(kind: Kind) -> Value {
    let crd = serde_json::to_value(crd(kind)).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

/// Why a schema is not structural, one line per problem (Kubernetes' rules for
/// `apiextensions.k8s.io/v1`, plus two of ours: no `anyOf`/`oneOf`/`allOf`/`not` at all, and no
/// object node that would prune everything).
fn structural_problems(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    match &schema["properties"]["metadata"] {
        Value::Null => {}
        m if m == &json!({"type": "object"}) => {}
        m => out.push(format!(".metadata: must be just {{type: object}}, is {m}")),
    }
    out
}

fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    let Some(obj) = node.as_object() else {
        out.push(format!("{at}: not a schema object: {node}"));
        return;
    };
    for key in [
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "definitions",
        "$defs",
    ] {
        if obj.contains_key(key) {
            out.push(format!("{at}: has `{key}`"));
        }
    }
    let flag = |k: &str| obj.get(k) == Some(&json!(true));
    let keeps_unknown = flag("x-kubernetes-preserve-unknown-fields");
    let int_or_string = flag("x-kubernetes-int-or-string");
    let type_ = obj.get("type").and_then(Value::as_str);
    match (obj.get("type"), type_) {
        (None, _) if !keeps_unknown && !int_or_string => out.push(format!("{at}: has no type")),
        (None, _) => {}
        (Some(_), Some(t)) if TYPES.contains(&t) => {}
        (Some(t), _) => out.push(format!("{at}: type {t} is not one of {TYPES:?}")),
    }
    if int_or_string && obj.contains_key("type") {
        out.push(format!("{at}: int-or-string with a type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{at}: additionalProperties next to properties"));
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        if values.contains(&Value::Null) && !flag("nullable") {
            out.push(format!("{at}: enum allows null without nullable"));
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), out);
        }
    }
    match type_ {
        Some("array") => match obj.get("items") {
            Some(items) => walk(items, &format!("{path}[]"), out),
            None => out.push(format!("{at}: array without items")),
        },
        Some("object") => {
            match obj.get("additionalProperties") {
                Some(ap @ Value::Object(_)) => walk(ap, &format!("{path}.*"), out),
                Some(other) => out.push(format!("{at}: additionalProperties is {other}")),
                None => {}
            }
            let open = obj.contains_key("properties") || obj.contains_key("additionalProperties");
            if !open && !keeps_unknown && path != ".metadata" {
                out.push(format!(
                    "{at}: object without properties: the API server would prune it empty"
                ));
            }
        }
        _ => {}
    }
}

#[test]
fn every_crd_schema_is_structural() {
    for kind in CRD_KINDS {
        let schema = printed_schema(kind);
        assert_eq!(
            structural_problems(&schema),
            Vec::<String>::new(),
            "{}",
            kind.as_str()
        );
    }
}

#[test]
fn the_structural_check_finds_what_the_api_server_refuses() {
    let bad = json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "properties": {
                    "a": {"$ref": "#/components/schemas/A"},
                    "b": {"description": "untyped"},
                    "c": {"type": ["string", "null"]},
                    "d": {"type": "array"},
                    "e": {"type": "object"},
                    "f": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
            },
        },
    });
    let problems = structural_problems(&bad);
    for want in [
        ".metadata: must be just",
        ".spec: additionalProperties next to properties",
        ".spec.a: has `$ref`",
        ".spec.b: has no type",
        ".spec.c: type [\"string\",\"null\"]",
        ".spec.d: array without items",
        ".spec.e: object without properties",
        ".spec.f: has `anyOf`",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want} not in {problems:#?}"
        );
    }
}

#[test]
fn printed_schemas_lose_nothing_in_jsonschemaprops() {
    // `crd()` goes through k8s-openapi's JSONSchemaProps, which drops keys it does not know;
    // the schema printed must be the schema generated.
    for kind in CRD_KINDS {
        let (spec, status) = schemas(kind);
        assert_eq!(
            printed_schema(kind),
            object_schema(spec, status),
            "{}",
            kind.as_str()
        );
    }
}

#[test]
fn free_form_fields_keep_their_content() {
    let bc = printed_schema(Kind::BackupConfiguration);
    let spec = &bc["properties"]["spec"]["properties"];
    for field in ["runtimeSettings", "tempDir", "interimVolumeTemplate"] {
        assert_eq!(spec[field]["type"], "object", "{field}");
        assert_eq!(
            spec[field]["x-kubernetes-preserve-unknown-fields"], true,
            "{field}"
        );
    }
    let hook = &spec["hooks"]["properties"]["postBackup"]["properties"];
    assert_eq!(
        hook["httpGet"]["properties"]["port"]["x-kubernetes-int-or-string"],
        true
    );
    assert_eq!(
        hook["tcpSocket"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(spec["paused"]["type"], "boolean");
    assert_eq!(
        spec["retentionPolicy"]["properties"]["keepLast"]["type"],
        "integer"
    );
    assert!(spec["retentionPolicy"].get("default").is_none());

    let rs = printed_schema(Kind::RestoreSession);
    let items = &rs["properties"]["spec"]["properties"]["target"]["properties"]
        ["volumeClaimTemplates"]["items"];
    assert_eq!(items["x-kubernetes-preserve-unknown-fields"], true);

    // A local backend is a volume source inlined next to mountPath: kept as given.
    let repo = printed_schema(Kind::Repository);
    let local = &repo["properties"]["spec"]["properties"]["backend"]["properties"]["local"];
    assert_eq!(local["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(local["properties"]["mountPath"]["type"], "string");
    assert!(local.get("additionalProperties").is_none());
    let status = &repo["properties"]["status"]["properties"];
    assert_eq!(status["totalSizeBytes"]["format"], "int64");
    assert_eq!(status["totalSizeBytes"]["minimum"], 0.0);
}

#[test]
fn names_scopes_and_subresources_are_stashs() {
    /// Kind, CRD name, version, scope, plural, short names, status subresource.
    type Row = (
        Kind,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        bool,
    );
    let table: [Row; 8] = [
        (
            Kind::Repository,
            "repositories.stash.appscode.com",
            "v1alpha1",
            "Namespaced",
            "repositories",
            &["repo"],
            true,
        ),
        (
            Kind::BackupConfiguration,
            "backupconfigurations.stash.appscode.com",
            "v1beta1",
            "Namespaced",
            "backupconfigurations",
            &["bc"],
            true,
        ),
        (
            Kind::BackupSession,
            "backupsessions.stash.appscode.com",
            "v1beta1",
            "Namespaced",
            "backupsessions",
            &[],
            true,
        ),
        (
            Kind::RestoreSession,
            "restoresessions.stash.appscode.com",
            "v1beta1",
            "Namespaced",
            "restoresessions",
            &["restore"],
            true,
        ),
        (
            Kind::Task,
            "tasks.stash.appscode.com",
            "v1beta1",
            "Cluster",
            "tasks",
            &["task"],
            false,
        ),
        (
            Kind::Function,
            "functions.stash.appscode.com",
            "v1beta1",
            "Cluster",
            "functions",
            &["fn"],
            false,
        ),
        (
            Kind::AppBinding,
            "appbindings.appcatalog.appscode.com",
            "v1alpha1",
            "Namespaced",
            "appbindings",
            &[],
            false,
        ),
        (
            Kind::BinlogArchive,
            "binlogarchives.coffer.dev",
            "v1alpha1",
            "Namespaced",
            "binlogarchives",
            &["archive"],
            true,
        ),
    ];
    let all = crds();
    assert_eq!(all.len(), table.len());
    for (crd, (kind, name, version, scope, plural, short, status)) in all.iter().zip(table) {
        assert_eq!(crd.metadata.name.as_deref(), Some(name));
        assert_eq!(crd.spec.names.kind, kind.as_str());
        assert_eq!(
            crd.spec.names.list_kind.as_deref(),
            Some(&*format!("{}List", kind.as_str()))
        );
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.singular.as_deref(),
            Some(&*kind.as_str().to_lowercase())
        );
        let shorts: Vec<&str> = crd
            .spec
            .names
            .short_names
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(shorts, short, "{name}");
        assert_eq!(crd.spec.scope, scope, "{name}");
        assert_eq!(
            format!("{}/{}", crd.spec.group, version),
            kind.api_version()
        );
        let [v] = crd.spec.versions.as_slice() else {
            panic!("{name}: one version")
        };
        assert_eq!(
            (v.name.as_str(), v.served, v.storage),
            (version, true, true)
        );
        let has_status = v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        assert_eq!(has_status, status, "{name}");
        let schema = printed_schema(kind);
        assert_eq!(
            schema["properties"].get("status").is_some(),
            status,
            "{name}"
        );
    }
}

#[test]
fn print_columns_are_stashs() {
    let columns = |kind| -> Vec<(String, String, String)> {
        crd(kind).spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.json_path.clone(), c.type_.clone()))
            .collect()
    };
    let cols = |v: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    };
    let age = ("Age", ".metadata.creationTimestamp", "date");
    assert_eq!(
        columns(Kind::Repository),
        cols(&[
            ("Integrity", ".status.integrity", "boolean"),
            ("Size", ".status.totalSize", "string"),
            ("Snapshot-Count", ".status.snapshotCount", "integer"),
            ("Last-Successful-Backup", ".status.lastBackupTime", "date"),
            age,
        ])
    );
    assert_eq!(
        columns(Kind::BackupConfiguration),
        cols(&[
            ("Task", ".spec.task.name", "string"),
            ("Schedule", ".spec.schedule", "string"),
            ("Paused", ".spec.paused", "boolean"),
            ("Phase", ".status.phase", "string"),
            age,
        ])
    );
    assert_eq!(
        columns(Kind::BackupSession),
        cols(&[
            ("Invoker-Type", ".spec.invoker.kind", "string"),
            ("Invoker-Name", ".spec.invoker.name", "string"),
            ("Phase", ".status.phase", "string"),
            ("Duration", ".status.sessionDuration", "string"),
            age,
        ])
    );
    assert_eq!(
        columns(Kind::RestoreSession),
        cols(&[
            ("Repository", ".spec.repository.name", "string"),
            ("Phase", ".status.phase", "string"),
            ("Duration", ".status.sessionDuration", "string"),
            age,
        ])
    );
    assert_eq!(columns(Kind::Task), cols(&[age]));
    assert_eq!(columns(Kind::Function), cols(&[age]));
    assert_eq!(
        columns(Kind::AppBinding),
        cols(&[
            ("Type", ".spec.type", "string"),
            ("Version", ".spec.version", "string"),
            age
        ])
    );
    assert_eq!(
        columns(Kind::BinlogArchive),
        cols(&[
            ("AppBinding", ".spec.appBinding.name", "string"),
            ("Phase", ".status.phase", "string"),
            ("Last-GTID", ".status.lastArchivedGtid", "string"),
            ("Last-Event", ".status.lastEventTime", "date"),
            ("Lag", ".status.lagSeconds", "number"),
            age,
        ])
    );
    // Every column's path is a field of the schema, with the column's type.
    for kind in CRD_KINDS {
        let schema = printed_schema(kind);
        for (name, path, type_) in columns(kind) {
            if path.starts_with(".metadata") {
                continue;
            }
            let mut node = &schema;
            for part in path.trim_start_matches('.').split('.') {
                node = &node["properties"][part];
            }
            let want = if type_ == "date" {
                "string"
            } else {
                type_.as_str()
            };
            assert_eq!(
                node["type"],
                want,
                "{} column {name} ({path})",
                kind.as_str()
            );
        }
    }
}

/// What the API server would say about an object against a CRD schema: wrong types, unknown
/// fields (`kubectl apply` rejects them with its default `--validate=strict`; without it they
/// would be pruned, silently losing what the user wrote), missing required fields, values
/// outside an enum.
fn object_problems(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    let flag = |k: &str| schema.get(k) == Some(&json!(true));
    if value.is_null() {
        if !flag("nullable") {
            out.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!("{at}: {value} is neither an integer nor a string"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let fits = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !fits {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if path == ".metadata" {
        return;
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            object_problems(item, &schema["items"], &format!("{path}[{i}]"), out);
        }
    }
    if let Some(fields) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !fields.contains_key(required.as_str().unwrap_or_default()) {
                out.push(format!("{at}: {required} is required"));
            }
        }
        for (name, child) in fields {
            let child_path = format!("{path}.{name}");
            match (
                schema["properties"].get(name),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) | (None, Some(s)) => object_problems(child, s, &child_path, out),
                (None, None) if flag("x-kubernetes-preserve-unknown-fields") => {}
                (None, None) => out.push(format!("{child_path}: unknown field")),
            }
        }
    }
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).unwrap()))
        .filter_map(|v| v.ok().filter(|v| !v.is_null()))
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn crd_kind_of(doc: &Value) -> Option<Kind> {
    CRD_KINDS
        .into_iter()
        .find(|k| doc["kind"] == k.as_str() && doc["apiVersion"] == k.api_version())
}

#[test]
fn stash_and_example_manifests_validate_against_the_crds() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(&manifest_dir.join("fixtures/stash"), &mut files);
    yaml_files(&manifest_dir.join("../../examples"), &mut files);
    files.sort();
    let mut checked = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for file in &files {
        for doc in yaml_documents(file) {
            let Some(kind) = crd_kind_of(&doc) else {
                assert_eq!(
                    doc["kind"],
                    "Secret",
                    "{}: a kind without a CRD",
                    file.display()
                );
                continue;
            };
            checked.insert(kind.as_str());
            let mut found = Vec::new();
            object_problems(&doc, &printed_schema(kind), "", &mut found);
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("{}: {p}", file.display())),
            );
            // …and coffer reads the same manifest.
            if let Err(e) = coffer_api::Resource::from_json(kind, doc.clone()) {
                problems.push(format!("{}: coffer-api refuses it: {e:?}", file.display()));
            }
        }
    }
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(
        checked.len(),
        CRD_KINDS.len(),
        "every kind has an example: {checked:?}"
    );
}

#[test]
fn the_manifest_check_refuses_what_the_api_server_would() {
    let schema = printed_schema(Kind::BackupConfiguration);
    let doc = json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "x", "labels": {"a": "b"}},
        "spec": {
            "paused": "no",
            "schedul": "* * * * *",
            "task": {"params": [{"value": "v"}]},
            "hooks": {"postBackup": {"httpGet": {"port": 1.5}}},
            "runtimeSettings": {"anything": {"goes": 1}},
        },
    });
    let mut problems = Vec::new();
    object_problems(&doc, &schema, "", &mut problems);
    for want in [
        ".spec.paused: \"no\" is not of type \"boolean\"",
        ".spec.schedul: unknown field",
        ".spec.task.params[0]: \"name\" is required",
        ".spec.hooks.postBackup.httpGet.port: 1.5 is neither",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn the_helm_chart_carries_these_crds() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer/crds/crds.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crds_yaml(),
        "{} is not what `coffer operator crds` prints; regenerate it with\n  \
         cargo run -p coffer -- operator crds > deploy/helm/coffer/crds/crds.yaml",
        path.display()
    );
}

#[test]
fn the_yaml_stream_holds_every_crd() {
    let text = crds_yaml();
    let docs: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| CustomResourceDefinition::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs, crds());
}
