#!/usr/bin/env bash
# Benchmark: Stash's reference pipeline (mysqldump | restic backup --stdin, restic dump |
# mysql) against coffer's paths (mysqldump-compatible, native, physical), side by side on
# the same machine in the same run, every restore verified with CHECKSUM TABLE.
#
#   ./scripts/bench.sh [--size-gb N] [--work DIR] [--keep]
#
# The dataset (sysbench tables of about N GB plus a small table of awkward types) is built
# once in DIR (default /var/tmp/coffer-bench) and reused by later runs of the same size.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
size_gb=2
work=/var/tmp/coffer-bench
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size-gb) size_gb=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--size-gb N] [--work DIR] [--keep]" >&2; exit 2 ;;
  esac
done
./scripts/install-deps.sh --database-only >/dev/null
for p in restic sysbench mariabackup; do command -v $p >/dev/null || { echo "bench: $p missing: run ./scripts/install-deps.sh" >&2; exit 1; }; done
{ [ -x /usr/bin/time ] && command -v bc >/dev/null; } || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time bc >/dev/null; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
echo "bench: building coffer (release)"
cargo build -q --release -p coffer
coffer="$root/target/release/coffer"

mkdir -p "$work"; chmod 700 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$keep" = 1 ] || rm -rf "$work/run"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # DIR PORT [init]
  local dir=$1 port=$2
  mkdir -p "$dir/tmp"
  if [ ! -d "$dir/data/mysql" ]; then
    mkdir -p "$dir/data"
    mariadb-install-db --no-defaults --datadir="$dir/data" --user=root --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1
  fi
  /usr/sbin/mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/sock" --port="$port" --bind-address=127.0.0.1 \
    --user=root --tmpdir="$dir/tmp" --log-error="$dir/error.log" --skip-name-resolve \
    --innodb-buffer-pool-size=1G --innodb-log-file-size=512M --innodb-flush-log-at-trx-commit=2 \
    --max-allowed-packet=256M --local-infile=1 2>>"$dir/stderr.log" &
  pids+=($!)
  for _ in $(seq 300); do mariadb --no-defaults --socket="$dir/sock" -e 'SELECT 1' >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "bench: server in $dir did not start" >&2; tail -20 "$dir/error.log" >&2; exit 1
}
sql() { local dir=$1; shift; mariadb --no-defaults --default-character-set=utf8mb4 --socket="$dir/sock" "$@"; }

# --- dataset -------------------------------------------------------------------------------
src="$work/source-${size_gb}g"
src_port=$(free_port)
start_server "$src" "$src_port"
sql "$src" -e "CREATE USER IF NOT EXISTS 'bench'@'%' IDENTIFIED BY 'bench-pass'; GRANT ALL ON *.* TO 'bench'@'%' WITH GRANT OPTION;"
if [ ! -f "$src/.loaded" ]; then
  # sysbench rows take about 230 bytes on disk with their index.
  rows=$(awk "BEGIN { print int($size_gb * 1024 * 1024 * 1024 / 230 / 4) }")
  echo "bench: loading 4 sysbench tables of $rows rows (about ${size_gb} GB) — once"
  sql "$src" -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
  sysbench oltp_read_write --db-driver=mysql --mysql-socket="$src/sock" --mysql-user=root \
    --mysql-db=sbtest --tables=4 --table-size="$rows" --threads=2 prepare >"$src/sysbench.log"
  sql "$src" sbtest <<'SQL'
CREATE TABLE fidelity (id INT PRIMARY KEY, f FLOAT, d DOUBLE, j JSON, b BLOB, t DATETIME(6), num DECIMAL(65,30), s VARCHAR(50) CHARACTER SET utf8mb4);
INSERT INTO fidelity SELECT seq, seq / 7, seq / 3, JSON_OBJECT('n', seq), UNHEX(SHA2(seq, 256)), '2026-11-25 10:00:00.123456', seq / 11, CONCAT('𝄞 café ', seq) FROM seq_1_to_10000;
SQL
  touch "$src/.loaded"
fi
dump_bytes=$(sql "$src" -N -e "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'")
checksum() { sql "$1" -N -e "CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2, sbtest.sbtest3, sbtest.sbtest4, sbtest.fidelity EXTENDED" | awk '{print $2}' | paste -sd,; }
# mysqldump prints FLOAT with 6 significant digits, so through it the fidelity table can only
# match by its other columns and the FLOATs' printed values (Stash's pipeline has that flaw).
lossy_checksum() {
  sql "$1" -N -e "CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2, sbtest.sbtest3, sbtest.sbtest4 EXTENDED" | awk '{print $2}' | paste -sd,
  sql "$1" -N -e "SET SESSION group_concat_max_len = 1073741824; SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, f, d, j, HEX(b), t, num, s) ORDER BY id)) FROM sbtest.fidelity"
}
want=$(checksum "$src")
want_lossy=$(lossy_checksum "$src")

run="$work/run"; rm -rf "$run"; mkdir -p "$run/tmp"
dst="$run/target"; dst_port=$(free_port)
start_server "$dst" "$dst_port"
sql "$dst" -e "CREATE USER IF NOT EXISTS 'bench'@'%' IDENTIFIED BY 'bench-pass'; GRANT ALL ON *.* TO 'bench'@'%' WITH GRANT OPTION;"
export COFFER_HOME="$run/home" TMPDIR="$run/tmp"
export RESTIC_PASSWORD=bench-repo-pass

cat > "$run/m.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: repo-secret}
stringData: {RESTIC_PASSWORD: bench-repo-pass}
---
apiVersion: v1
kind: Secret
metadata: {name: auth}
stringData: {username: bench, password: bench-pass}
YAML
for r in compat native physical; do cat >> "$run/m.yaml" <<YAML
---
apiVersion: stash.appscode.com/v1alpha1
kind: Repository
metadata: {name: $r}
spec: {backend: {local: {mountPath: $run/repo-$r}, storageSecretName: repo-secret}}
YAML
done
cat >> "$run/m.yaml" <<YAML
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: source}
spec: {clientConfig: {url: "mysql://127.0.0.1:$src_port/"}, secret: {name: auth}}
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: target}
spec: {clientConfig: {url: "mysql://127.0.0.1:$dst_port/"}, secret: {name: auth}}
YAML
for m in compat native physical; do
  case $m in
    compat) params='[{name: args, value: "--databases sbtest"}]' ;;
    native) params='[{name: method, value: native}, {name: databases, value: sbtest}]' ;;
    physical) params='[{name: method, value: physical}]' ;;
  esac
  cat >> "$run/m.yaml" <<YAML
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: bench-$m}
spec:
  task: {name: mariadb-backup-10.5.8, params: $params}
  repository: {name: $m}
  target: {ref: {kind: AppBinding, name: source}}
  retentionPolicy: {name: all, keepLast: 100, prune: false}
YAML
done
"$coffer" apply -f "$run/m.yaml" >/dev/null

# --- measuring -----------------------------------------------------------------------------
results=()
tmp_peak=0
watch_tmp() { local peak=0 s; while :; do s=$(du -sb "$TMPDIR" 2>/dev/null | cut -f1); [ "${s:-0}" -gt "$peak" ] && peak=$s && echo "$peak" > "$run/tmp.peak"; sleep 0.2; done; }
measure() { # NAME COMMAND...  -> appends "name wall cpu rss_mb tmp_mb"
  local name=$1; shift
  echo 0 > "$run/tmp.peak"
  watch_tmp & local w=$!
  /usr/bin/time -f "%e %U %S %M" -o "$run/time.out" bash -c "$*" >"$run/$name.log" 2>&1 || { kill $w; echo "bench: $name FAILED:"; tail -30 "$run/$name.log"; exit 1; }
  kill $w 2>/dev/null; wait $w 2>/dev/null || true
  read -r wall user sys rss < "$run/time.out"
  local tmpb; tmpb=$(cat "$run/tmp.peak"); tmpb=$(( tmpb - 4096 > 0 ? tmpb - 4096 : 0 ))
  results+=("$name $wall $(echo "$user + $sys" | bc) $(( rss / 1024 )) $(( tmpb / 1024 / 1024 ))")
  echo "bench: $name: ${wall}s"
}
reset_target() { sql "$dst" -e "DROP DATABASE IF EXISTS sbtest"; }
verify() {
  local got
  if [ "${2:-}" = lossy ]; then
    got=$(lossy_checksum "$dst")
    [ "$got" = "$want_lossy" ] || { echo "bench: $1 restored WRONG data: $got vs $want_lossy"; exit 1; }
    echo "bench: $1 restore verified (CHECKSUM TABLE equal; FLOAT compared by printed value)"
  else
    got=$(checksum "$dst")
    [ "$got" = "$want" ] || { echo "bench: $1 restored WRONG data: $got vs $want"; exit 1; }
    echo "bench: $1 restore verified (CHECKSUM TABLE equal, bit-exact)"
  fi
}
repo_size() { du -sb "$1" | cut -f1; }

restic -r "$run/repo-ref" init >/dev/null
measure ref-backup "mariadb-dump --defaults-file=<(printf '[client]\nuser=bench\npassword=bench-pass\nhost=127.0.0.1\nport=$src_port\nprotocol=TCP\n') --single-transaction --databases sbtest | restic -r $run/repo-ref --no-cache backup --stdin --stdin-filename dumpfile.sql --host host-0 --quiet"
for m in compat native physical; do measure "$m-backup" "$coffer backup bench-$m --wait"; done
# A second backup of an unchanged database: how much does it add?
before=$(repo_size "$run/repo-native"); "$coffer" backup bench-native --wait >/dev/null 2>&1; after=$(repo_size "$run/repo-native")
second_native=$(( after - before ))
first_native=$before

reset_target
measure ref-restore "restic -r $run/repo-ref --no-cache dump latest /dumpfile.sql | mariadb --defaults-file=<(printf '[client]\nuser=bench\npassword=bench-pass\nhost=127.0.0.1\nport=$dst_port\nprotocol=TCP\n')"
verify reference lossy
for m in compat native; do
  reset_target
  p=""; [ $m = native ] && p='[{name: method, value: native}]'
  cat > "$run/rs-$m.yaml" <<YAML
apiVersion: stash.appscode.com/v1beta1
kind: RestoreSession
metadata: {name: restore-$m}
spec:
  task: {name: mariadb-restore-10.5.8, params: ${p:-[]}}
  repository: {name: $m}
  target: {ref: {kind: AppBinding, name: target}}
YAML
  measure "$m-restore" "$coffer restore -f $run/rs-$m.yaml --wait"
  if [ $m = compat ]; then verify "$m" lossy; else verify "$m"; fi
done
cat > "$run/rs-physical.yaml" <<YAML
apiVersion: stash.appscode.com/v1beta1
kind: RestoreSession
metadata: {name: restore-physical}
spec:
  task: {name: mariadb-restore-10.5.8, params: [{name: dataDir, value: $run/physical/data}]}
  repository: {name: physical}
  target: {ref: {kind: AppBinding, name: target}}
YAML
measure physical-restore "$coffer restore -f $run/rs-physical.yaml --wait"
start_server "$run/physical" "$(free_port)"
[ "$(checksum "$run/physical")" = "$want" ] && echo "bench: physical restore verified (CHECKSUM TABLE equal)" || { echo "bench: physical restore WRONG"; exit 1; }

# --- report --------------------------------------------------------------------------------
mb=$(( dump_bytes / 1024 / 1024 ))
printf '\ncoffer benchmark — %s GB dataset (%s MiB of tables), %s cores, %s\n\n' "$size_gb" "$mb" "$(nproc)" "$(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-18s %8s %10s %8s %9s %9s %10s %8s\n' PATH WALL_S MiB/s CPU_S RSS_MiB TMP_MiB REPO_MiB VS_REF
ref_b=""; ref_r=""
for r in "${results[@]}"; do set -- $r; case $1 in ref-backup) ref_b=$2;; ref-restore) ref_r=$2;; esac; done
for r in "${results[@]}"; do
  set -- $r
  name=$1 wall=$2 cpu=$3 rss=$4 tmp=$5
  case $name in *backup) ref=$ref_b ;; *) ref=$ref_r ;; esac
  repo=${name%-*}; [ "$repo" = ref ] && repo=ref
  rs=$(( $(repo_size "$run/repo-$repo") / 1024 / 1024 ))
  printf '%-18s %8.1f %10.1f %8.1f %9s %9s %10s %7.2fx\n' "$name" "$wall" "$(echo "$mb / $wall" | bc -l)" "$cpu" "$rss" "$tmp" "$rs" "$(echo "$ref / $wall" | bc -l)"
done
printf '\nsecond native backup of an unchanged database added %s bytes (%.2f%% of the first)\n' "$second_native" "$(echo "100 * $second_native / $first_native" | bc -l)"
printf 'RSS is the peak of the measured command and everything it waited for (mysqldump/mariabackup included);\n'
printf 'TMP is the peak growth of TMPDIR during the run; VS_REF > 1 means faster than the reference.\n'
