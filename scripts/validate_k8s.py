"""The offline manifest gate: every Kubernetes object coffer ships or creates, checked against
the API's published schemas, without a cluster (run through scripts/validate-k8s.sh).

1. The CRDs (deploy/helm/coffer/crds/crds.yaml, which a Rust test holds equal to
   `coffer operator crds`) are valid CustomResourceDefinitions.
2. The Helm chart lints, renders offline (default values; the Pushgateway on) and every
   rendered object passes kubernetes-validate --strict for each Kubernetes version; the
   operator's ClusterRole covers every permission it grants (Kubernetes' escalation check).
3. Every manifest in examples/ and crates/kubernetes/fixtures/stash/ validates: custom
   resources against coffer's CRD schema (strictly: a field the schema lacks is an error, as
   `kubectl apply` reports it), other objects with kubernetes-validate --strict.
4. Every object under crates/kubernetes/fixtures/**/expected/ (the decide functions' golden
   output) validates the same way.

Any problem prints the file, the object and the error, and the exit status is 1.
"""

import glob
import os
import sys
import time

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kv
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CHART = os.path.join(ROOT, "deploy/helm/coffer")
CRDS = os.path.join(CHART, "crds/crds.yaml")
VERSIONS = os.environ.get("COFFER_K8S_VERSIONS", "1.30 1.33").split()

problems = []
checked = {"kubernetes-validate": 0, "crd-schema": 0}


def rel(path):
    return os.path.relpath(path, ROOT)


def problem(where, what):
    problems.append(f"{where}: {what}")


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'}"


def load_yaml(text, where):
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        problem(where, f"not YAML: {e}")
        return []


def to_jsonschema(node, path=""):
    """A CRD's structural schema as plain JSON Schema: nullable and int-or-string spelled out,
    and closed objects (an unknown field is an error) unless unknown fields are preserved."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v, f"{path}.{k}") for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
            out["additionalProperties"] = False
    if isinstance(node.get("items"), dict):
        out["items"] = to_jsonschema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(node["additionalProperties"], f"{path}.*")
    return out


def load_crd_schemas():
    with open(CRDS) as f:
        docs = load_yaml(f.read(), rel(CRDS))
    if not docs:
        problem(rel(CRDS), "no CRDs")
    schemas = {}
    for crd in docs:
        validate_builtin(crd, rel(CRDS))
        spec = crd.get("spec", {})
        for version in spec.get("versions", []):
            api_version = f"{spec['group']}/{version['name']}"
            schema = version["schema"]["openAPIV3Schema"]
            schemas[(api_version, spec["names"]["kind"])] = to_jsonschema(schema)
    return schemas


def validate_builtin(doc, where):
    """kubernetes-validate --strict for every version; a kind it has no schema for is an error
    (the CLI only warns), so a misspelt kind cannot pass unchecked."""
    for version in VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
            checked["kubernetes-validate"] += 1
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problem(where, f"{name_of(doc)} is invalid for Kubernetes {e.version}: {path}: {e.message}")
        except kv.SchemaNotFoundError:
            problem(where, f"{name_of(doc)}: no schema for {doc.get('apiVersion')} {doc.get('kind')} "
                           f"in Kubernetes {version} (misspelt kind or apiVersion?)")
            return


def validate_object(doc, where, crd_schemas):
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        problem(where, "a document without apiVersion and kind: only whole objects belong here")
        return
    meta = doc.get("metadata") or {}
    if not (meta.get("name") or meta.get("generateName")):
        problem(where, f"{name_of(doc)}: metadata has neither name nor generateName")
    schema = crd_schemas.get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        validate_builtin(doc, where)
        return
    checked["crd-schema"] += 1
    for e in sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in e.absolute_path)
        problem(where, f"{name_of(doc)} does not fit coffer's CRD: .{path}: {e.message}")


def validate_files(pattern, crd_schemas, must_match):
    files = sorted(set(glob.glob(os.path.join(ROOT, pattern), recursive=True)))
    if must_match and not files:
        problem(pattern, "no files")
    for path in files:
        with open(path) as f:
            docs = load_yaml(f.read(), rel(path))
        if not docs:
            problem(rel(path), "no objects")
        for doc in docs:
            validate_object(doc, rel(path), crd_schemas)
    return len(files)


def rules(role):
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    yield group, resource, verb, tuple(rule.get("resourceNames", []))


def covers(holder, wanted):
    group, resource, verb, names = wanted
    return any(g in (group, "*") and r in (resource, "*") and v in (verb, "*") and (not n or set(names) <= set(n))
               for g, r, v, n in rules(holder))


EXPECTED_KINDS = {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"}


def validate_chart():
    chart = helm.Chart.load(CHART)
    report = helm.lint(CHART, strict=True)
    for err in report.get("errors", []):
        problem(rel(CHART), f"helm lint: {err}")
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            problem(rel(CHART), f"helm lint: {m.get('path')}: {m.get('error')}")
    scenarios = [
        ("default values", {}),
        ("Pushgateway on, pull secret, external names", {
            "pushgateway": {"enabled": True},
            "imagePullSecrets": [{"name": "regcred"}],
            "operator": {"replicas": 2, "nodeSelector": {"kubernetes.io/os": "linux"}},
            "serviceAccount": {"annotations": {"example.com/role": "backup"}},
        }),
    ]
    for label, values in scenarios:
        where = f"{rel(CHART)} ({label})"
        try:
            rendered = chart.render(values, name="coffer", namespace="coffer-system")
        except helm.HelmError as e:
            problem(where, f"helm render: {e}")
            continue
        objects = []
        for template, text in sorted(rendered.items()):
            if template.endswith("NOTES.txt"):
                continue
            objects += [(template, d) for d in load_yaml(text, f"{where} {template}")]
        for template, doc in objects:
            validate_object(doc, f"{where} {template}", {})
        kinds = {d.get("kind") for _, d in objects}
        if not EXPECTED_KINDS <= kinds:
            problem(where, f"renders no {sorted(EXPECTED_KINDS - kinds)}")
        if values.get("pushgateway", {}).get("enabled"):
            names = {d["metadata"]["name"] for _, d in objects if d.get("kind") in ("Deployment", "Service")}
            if "coffer-pushgateway" not in names:
                problem(where, "no coffer-pushgateway Deployment/Service with pushgateway.enabled")
        roles = {d["metadata"]["name"]: d for _, d in objects if d.get("kind") == "ClusterRole"}
        operator = roles.get("coffer-operator")
        if operator is None:
            problem(where, "no coffer-operator ClusterRole")
            continue
        for name, role in roles.items():
            for wanted in rules(role):
                if not covers(operator, wanted):
                    problem(where, f"ClusterRole coffer-operator lacks {wanted[:3]} that it grants through {name}: "
                                   "the API server would refuse the RoleBinding")
    for crd in chart.crds:
        for doc in load_yaml(crd["data"], f"{rel(CHART)} {crd['name']}"):
            validate_builtin(doc, f"{rel(CHART)} {crd['name']}")


def main():
    start = time.monotonic()
    crd_schemas = load_crd_schemas()
    validate_chart()
    n_examples = validate_files("examples/**/*.y*ml", crd_schemas, must_match=True)
    n_stash = validate_files("crates/kubernetes/fixtures/stash/*.y*ml", crd_schemas, must_match=True)
    n_expected = validate_files("crates/kubernetes/fixtures/**/expected/**/*.y*ml", crd_schemas, must_match=False)
    elapsed = time.monotonic() - start
    for p in problems:
        print(f"ERROR {p}")
    print(f"validate-k8s: Kubernetes {', '.join(VERSIONS)}; {len(crd_schemas)} CRDs; "
          f"{n_examples} example, {n_stash} Stash and {n_expected} golden files; "
          f"{checked['kubernetes-validate']} kubernetes-validate and {checked['crd-schema']} CRD-schema checks; "
          f"{len(problems)} problems; {elapsed:.1f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
