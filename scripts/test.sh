#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need
# (MariaDB, Galera, restic, the Pushgateway, Garage) and runs every test. The tests start their
# own servers on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Two cores: build with both, but run the integration tests (each starts real servers)
# with a bounded number of threads so they do not starve each other.
cargo build --workspace --all-targets
RUST_TEST_THREADS=${RUST_TEST_THREADS:-2} cargo test --workspace
# The offline Kubernetes manifest gate: CRDs, Helm chart, examples and golden objects.
./scripts/validate-k8s.sh
# The offline monitoring gate: alert rules (promtool) and the Grafana dashboard.
./scripts/validate-monitoring.sh
