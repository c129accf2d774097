#!/usr/bin/env bash
# coffer's main job, end to end, on the embedded default (local store, local repository):
# installs MariaDB if missing, starts two throwaway servers on free loopback ports, loads sample
# data into the first, backs it up with coffer, restores the snapshot into the second and checks
# that every table's CHECKSUM matches. Everything lives in one temporary directory, removed at
# the end (set KEEP=1 to keep it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
./scripts/install-deps.sh --database-only
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
echo "quickstart: building coffer"
cargo build -q -p coffer
coffer="${CARGO_TARGET_DIR:-$root/target}/debug/coffer"

work=$(mktemp -d /tmp/coffer-quickstart-XXXXXX)
chmod 700 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "quickstart: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)

start_server() { # NAME PORT
  local dir="$work/$1"
  mkdir -p "$dir/data" "$dir/tmp"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
    --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1
  "$mariadbd" --no-defaults --datadir="$dir/data" --socket="$dir/sock" --port="$2" \
    --bind-address=127.0.0.1 --user="$(id -un)" --tmpdir="$dir/tmp" --log-error="$dir/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=64M 2>>"$dir/stderr.log" &
  pids+=($!)
  for _ in $(seq 100); do mariadb --no-defaults --socket="$dir/sock" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb --no-defaults --socket="$dir/sock" -e "CREATE USER 'backup'@'%' IDENTIFIED BY 'quickstart-db-pass';
    GRANT ALL PRIVILEGES ON *.* TO 'backup'@'%' WITH GRANT OPTION;"
}
sql() { mariadb --no-defaults --default-character-set=utf8mb4 --socket="$work/$1/sock" "${@:2}"; }

src_port=$(free_port); dst_port=$(free_port)
echo "quickstart: starting MariaDB servers on 127.0.0.1:$src_port (source) and :$dst_port (target)"
start_server source "$src_port"
start_server target "$dst_port"

echo "quickstart: loading sample data"
sql source <<'SQL'
CREATE DATABASE shop CHARACTER SET utf8mb4;
USE shop;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100), note TEXT, created DATETIME(6));
CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT, total DECIMAL(12,2), payload JSON, blob_data BLOB);
INSERT INTO customers (name, note, created) VALUES ('Zoë', 'café ☕ 𝄞 🎉', '2026-11-25 10:00:00.123456'), ('Bob', NULL, NOW(6));
INSERT INTO orders (customer_id, total, payload, blob_data)
  SELECT 1 + (seq % 2), seq * 1.25, JSON_OBJECT('n', seq), UNHEX(SHA2(seq, 256)) FROM seq_1_to_5000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
SQL

cat > "$work/manifests.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: repo-secret}
stringData: {RESTIC_PASSWORD: quickstart-repo-pass}
---
apiVersion: v1
kind: Secret
metadata: {name: db-auth}
stringData: {username: backup, password: quickstart-db-pass}
---
apiVersion: stash.appscode.com/v1alpha1
kind: Repository
metadata: {name: local-repo}
spec:
  backend:
    local:
      mountPath: /safe/data
      hostPath: {path: $work/repository}
    storageSecretName: repo-secret
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: shop-db}
spec:
  type: mariadb
  clientConfig: {url: "mysql://127.0.0.1:$src_port/"}
  secret: {name: db-auth}
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: restored-db}
spec:
  type: mariadb
  clientConfig: {url: "mysql://127.0.0.1:$dst_port/"}
  secret: {name: db-auth}
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: shop-backup}
spec:
  schedule: "0 3 * * *"
  task:
    name: mariadb-backup-10.5.8
    params: [{name: args, value: --databases shop}]
  repository: {name: local-repo}
  target:
    ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: shop-db}
  retentionPolicy: {name: keep-last-5, keepLast: 5, prune: true}
YAML
cat > "$work/restore.yaml" <<'YAML'
apiVersion: stash.appscode.com/v1beta1
kind: RestoreSession
metadata: {name: shop-restore}
spec:
  task: {name: mariadb-restore-10.5.8}
  repository: {name: local-repo}
  target:
    ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: restored-db}
  rules: [{snapshots: [latest]}]
YAML

export COFFER_HOME="$work/home"
echo "quickstart: coffer apply"
"$coffer" apply -f "$work/manifests.yaml"
echo "quickstart: coffer backup shop-backup --wait"
"$coffer" backup shop-backup --wait
"$coffer" snapshots local-repo
"$coffer" get repository
echo "quickstart: coffer restore -f restore.yaml --wait"
"$coffer" restore -f "$work/restore.yaml" --wait

checksums() { sql "$1" -N -e "CHECKSUM TABLE shop.customers, shop.orders EXTENDED"; }
if [ "$(checksums source)" = "$(checksums target)" ] && [ -n "$(checksums target)" ]; then
  checksums target | sed 's/^/quickstart: restored /'
  echo "quickstart: OK — every table's checksum matches the source"
else
  echo "quickstart: FAILED — checksums differ"; diff <(checksums source) <(checksums target) || true
  exit 1
fi
