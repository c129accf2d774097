#!/usr/bin/env bash
# Offline checks of coffer's monitoring files: the Prometheus alert rules
# (deploy/prometheus/coffer-alerts.yaml) with promtool from Debian's prometheus package
# (scripts/install-deps.sh installs it without starting its service), and the Grafana
# dashboard (deploy/grafana/coffer-dashboard.json): structure, PromQL syntax, and that every
# metric either file names is one coffer exports. See scripts/validate_monitoring.py.
set -euo pipefail
cd "$(dirname "$0")/.."
promtool check rules deploy/prometheus/coffer-alerts.yaml
exec python3 scripts/validate_monitoring.py
