#!/usr/bin/env bash
# The offline manifest gate (no cluster needed): coffer's CRDs, the Helm chart's rendered
# objects, examples/, Stash's manifests and the operator's golden objects, checked against
# Kubernetes' schemas and coffer's CRD schemas. See scripts/validate_k8s.py for what is checked.
#
# Python tools live in a venv (${COFFER_VENV:-~/.cache/coffer-venv}), created and filled from
# scripts/k8s-requirements.txt on first use and whenever that file changes.
# COFFER_K8S_VERSIONS="1.30 1.33" picks the Kubernetes versions.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${COFFER_VENV:-$HOME/.cache/coffer-venv}
reqs=scripts/k8s-requirements.txt
stamp=$venv/.coffer-requirements
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$reqs" "$stamp"; then
  echo "validate-k8s: installing $reqs into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$stamp"
fi
exec "$venv/bin/python" scripts/validate_k8s.py
