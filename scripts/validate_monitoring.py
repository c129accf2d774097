#!/usr/bin/env python3
"""Offline checks of coffer's monitoring files (run by scripts/validate-monitoring.sh).

1. deploy/grafana/coffer-dashboard.json is a Grafana dashboard: valid JSON with a title and
   uid, unique panel ids, each panel placed on the 24-column grid, each query panel with a
   Prometheus target whose expression PromQL accepts (promtool parses them as recording rules).
2. Every coffer_* or stash_* metric named in the dashboard or in
   deploy/prometheus/coffer-alerts.yaml is one that coffer exports (a string literal in the
   Rust sources that set metrics), or one of the restore-verification metrics the alert file
   names ahead of them.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DASHBOARD = os.path.join(ROOT, "deploy/grafana/coffer-dashboard.json")
ALERTS = os.path.join(ROOT, "deploy/prometheus/coffer-alerts.yaml")
SOURCES = [
    "crates/engine/src/metrics.rs",
    "crates/platform/src/local/server.rs",
    "crates/kubernetes/src/operator/mod.rs",
]
# Metrics named ahead of the code that exports them (none at present).
AHEAD = set()
METRIC = re.compile(r"\b((?:coffer|stash)_[a-z0-9_]+)\b")

errors = []


def exported():
    names = set()
    for rel in SOURCES:
        path = os.path.join(ROOT, rel)
        if not os.path.exists(path):
            continue
        text = open(path, encoding="utf-8").read()
        names.update(re.findall(r'"((?:coffer|stash)_[a-z0-9_]+)"', text))
    return names


def check_names(where, expr, known):
    for name in METRIC.findall(expr):
        if name not in known and name not in AHEAD:
            errors.append(f"{where}: metric {name} is not one coffer exports")


def main():
    known = exported()
    if "stash_repository_integrity" not in known:
        errors.append("found no metric names in the sources: " + ", ".join(SOURCES))
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    for field in ("title", "uid", "panels"):
        if field not in dash:
            errors.append(f"dashboard: no {field}")
    ids = set()
    exprs = []
    for p in dash.get("panels", []):
        where = f"dashboard panel {p.get('id')} ({p.get('title')!r})"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            errors.append(f"{where}: gridPos needs integer x, y, w, h")
        elif g["x"] + g["w"] > 24:
            errors.append(f"{where}: wider than the 24-column grid")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no query")
        for t in targets:
            expr = t.get("expr", "")
            if not expr:
                errors.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            check_names(where, expr, known)
            exprs.append((where, expr))
    for tv in dash.get("templating", {}).get("list", []):
        q = tv.get("query")
        if isinstance(q, dict):
            check_names(f"dashboard variable {tv.get('name')}", q.get("query", ""), known)
    with open(ALERTS, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.lstrip().startswith("expr:"):
                check_names(f"coffer-alerts.yaml line {n}", line, known)
    # PromQL syntax of the dashboard's queries: promtool parses recording rules offline.
    # Grafana's variables become what they stand for.
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (where, expr) in enumerate(exprs):
        e = expr.replace("$namespace", ".*").replace("${datasource}", "prometheus")
        rules["groups"][0]["rules"].append({"record": f"coffer:dashboard:q{i}", "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append("dashboard queries do not parse:\n" + r.stdout + r.stderr)
    finally:
        os.unlink(path)
    if errors:
        for e in errors:
            print("validate-monitoring:", e, file=sys.stderr)
        sys.exit(1)
    print(f"validate-monitoring: dashboard ok ({len(exprs)} queries), alert metric names ok")


main()
