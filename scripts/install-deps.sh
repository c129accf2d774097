#!/usr/bin/env bash
# Installs everything coffer's quickstart and test suite need on Debian 12:
# MariaDB (server, client, mariabackup, Galera 4 + garbd), restic, the Prometheus
# Pushgateway, promtool (package prometheus; its service is kept from starting), sysbench,
# and Garage (an S3-compatible server, built once with cargo and reused wherever it is
# already installed), python3-venv for the Kubernetes manifest gate,
# MySQL 9 from Debian sid's packages in a private prefix (scripts/install-mysql.sh),
# the Azure Blob, GCS and restic REST servers of the backends tests, and Chromium (headless,
# for the dashboard test).
# Idempotent; safe to re-run.
set -euo pipefail
# --database-only: just the MariaDB server and clients (what the quickstart needs).
only_db=false
[ "${1:-}" = "--database-only" ] && only_db=true

need_apt=()
pairs="mariadbd:mariadb-server mariadb:mariadb-client"
$only_db || pairs="$pairs mariabackup:mariadb-backup garbd:galera-arbitrator-4 restic:restic \
  prometheus-pushgateway:prometheus-pushgateway sysbench:sysbench socat:socat ss:iproute2 \
  openssl:openssl promtool:prometheus chromium:chromium curl:curl xz:xz-utils"
for pair in $pairs; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/usr/bin/$bin" ] || need_apt+=("$pkg")
done
$only_db || [ -e /usr/lib/galera/libgalera_smm.so ] || need_apt+=(galera-4)
# scripts/validate-k8s.sh keeps its Python tools in a venv: Debian's python3 needs python3-venv.
$only_db || python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt packages: ${need_apt[*]}"
  # Our harness starts its own servers on loopback ports; keep the packages' own
  # services from starting (and from holding 3306 or 9091).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

if $only_db; then echo "install-deps: ok"; exit 0; fi

# Garage: not packaged for Debian, so build it once with cargo. The binary is kept in
# cargo's bin directory and reused by every later run on this machine.
GARAGE_VERSION=2.5.0
garage_bin=${CARGO_HOME:-$HOME/.cargo}/bin/garage
if ! { [ -x "$garage_bin" ] && "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; }; then
  echo "install-deps: building garage $GARAGE_VERSION (once per machine; 10-20 min on 2 cores)"
  # Only what the tests use (the sqlite metadata engine; no LMDB, K2V or metrics), and
  # optimised less: a test server handles kilobytes, and the build is most of the time a
  # fresh machine spends here.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install "garage@$GARAGE_VERSION" --locked --quiet --no-default-features \
    --features bundled-libs,sqlite
fi
# MySQL 9 (mysqld, mysqlbinlog, mysql): Debian 12 has no MySQL package, so sid's .debs are
# unpacked into /opt/coffer-mysql and run through sid's own loader (the system is left
# alone; ~25 s, 58 MiB, once per machine).
"$(dirname "$0")/install-mysql.sh"
# Servers for the backends e2e tests, each in its own prefix under /opt so that nothing of
# the project's is mixed with the system's: Azurite (Azure Blob; npm, with the machine's
# Node.js), gcp-storage-emulator (GCS; PyPI, in a venv) and rustic_server (restic's REST
# protocol; crates.io, built once). Timed on the 2-core machine: azurite ~20 s, the GCS
# emulator ~5 s, rustic_server ~4 min.
AZURITE_VERSION=3.35.0
# (Versions are read into variables first: `cmd | grep -q` fails under pipefail when grep
# stops reading early.)
have=$(/opt/coffer-azurite/bin/azurite-blob --version 2>/dev/null || true)
if [ "$have" != "$AZURITE_VERSION" ]; then
  command -v npm >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  echo "install-deps: azurite $AZURITE_VERSION"
  npm install -g --silent --no-fund --no-audit --prefix /opt/coffer-azurite "azurite@$AZURITE_VERSION" >/dev/null
fi
GCS_EMULATOR_VERSION=2026.7.19
have=$(/opt/coffer-gcs-emulator/bin/pip show gcp-storage-emulator 2>/dev/null || true)
if [[ "$have" != *"Version: $GCS_EMULATOR_VERSION"* ]]; then
  echo "install-deps: gcp-storage-emulator $GCS_EMULATOR_VERSION"
  python3 -m venv /opt/coffer-gcs-emulator
  /opt/coffer-gcs-emulator/bin/pip install -q "gcp-storage-emulator==$GCS_EMULATOR_VERSION"
fi
RUSTIC_SERVER_VERSION=0.4.4
have=$(/opt/coffer-rustic-server/bin/rustic-server --version 2>/dev/null || true)
if [ "$have" != "rustic-server $RUSTIC_SERVER_VERSION" ]; then
  echo "install-deps: building rustic_server $RUSTIC_SERVER_VERSION (once per machine; ~4 min on 2 cores)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install "rustic_server@$RUSTIC_SERVER_VERSION" --locked --quiet --root /opt/coffer-rustic-server
fi
echo "install-deps: ok"
