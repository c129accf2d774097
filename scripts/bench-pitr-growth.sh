#!/usr/bin/env bash
# Benchmark of repository growth (issue #12): what a day of a scattered-update workload adds
# to the repository under two regimes, side by side in one run against the same server —
#   daily:  a full backup every day (coffer native by default), into its own repository
#   pitr:   one base backup per week plus `coffer archive` streaming the binlog all along,
#           into a second repository
# A database of S MB (4 tables of sysbench-like rows, loaded without binlog) is updated each
# "day" in single-row transactions hitting 1 % of its rows, chosen at random across all
# tables. After each day the daily regime takes its backup and the pitr regime waits until
# the archive has every transaction of the day (and takes its base on days 0, 7, 14, …).
# A "day" here is minutes, not 24 h: the archive's per-flush overhead over a real day is
# what scripts/bench-archive-layout.sh measures.
#
#   ./scripts/bench-pitr-growth.sh [--size-mb S] [--days D] [--method native|compat|physical]
#                                  [--work DIR] [--keep] [--debug | --coffer PATH]
#
# --debug builds without --release; --coffer uses a binary already built (repository sizes
# do not depend on the build, only the times do).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
size_mb=200
days=7
method=native
work=/var/tmp/coffer-bench-pitr-growth
keep=0
profile=release
coffer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --debug) profile=debug; shift ;;
    --coffer) coffer=$2; shift 2 ;;
    *) echo "usage: $0 [--size-mb S] [--days D] [--method native|compat|physical] [--work DIR] [--keep] [--debug | --coffer PATH]" >&2; exit 2 ;;
  esac
done
case $method in native|compat|physical) ;; *) echo "bench: --method is native, compat or physical" >&2; exit 2 ;; esac
for p in mariadbd mariadb mariadb-install-db restic; do
  command -v $p >/dev/null || [ -x /usr/sbin/$p ] || { echo "bench: $p missing: run ./scripts/install-deps.sh" >&2; exit 1; }
done
[ "$method" != physical ] || command -v mariabackup >/dev/null || { echo "bench: mariabackup missing" >&2; exit 1; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/sbin"
if [ -z "$coffer" ]; then
  echo "bench: building coffer ($profile)"
  if [ "$profile" = release ]; then cargo build -q --release -p coffer; else cargo build -q -p coffer; fi
  coffer="${CARGO_TARGET_DIR:-$root/target}/$profile/coffer"
fi
coffer=$(realpath "$coffer")

rm -rf "$work/run"; mkdir -p "$work/run/tmp"; chmod 700 "$work"
run="$work/run"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$keep" = 1 ] || rm -rf "$work/run"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sql() { local dir=$1; shift; mariadb --no-defaults --socket="$dir/sock" "$@"; }
now() { date +%s.%N; }
size() { du -sb "$1" | cut -f1; }
mb() { printf %.2f "$(echo "$1 / 1048576" | bc -l)"; }

# --- the source: binlog on (ROW, as the archive needs) ----------------------------------------
src="$run/source"; src_port=$(free_port)
mkdir -p "$src/data" "$src/tmp"
mariadb-install-db --no-defaults --datadir="$src/data" --user=root --auth-root-authentication-method=socket \
  --skip-test-db >"$src/install.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$src/data" --socket="$src/sock" --port="$src_port" \
  --bind-address=127.0.0.1 --user=root --tmpdir="$src/tmp" --log-error="$src/error.log" --skip-name-resolve \
  --innodb-buffer-pool-size=512M --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=2 \
  --max-allowed-packet=256M --log-bin=mysql-bin --binlog-format=ROW --server-id=11 \
  --max-binlog-size=256M 2>>"$src/stderr.log" &
pids+=($!)
for _ in $(seq 300); do sql "$src" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
sql "$src" -e 'SELECT 1' >/dev/null || { echo "bench: the source did not start" >&2; tail -20 "$src/error.log" >&2; exit 1; }

# About 250 bytes a row on disk with its secondary index: 4 tables of S MB / 4.
rows=$(( size_mb * 1048576 / 250 / 4 ))
echo "bench: loading 4 tables of $rows rows (about $size_mb MB), without binlog"
t=$(now)
{
  echo "SET SESSION sql_log_bin = 0; CREATE USER 'bench'@'%' IDENTIFIED BY 'bench-pass';"
  echo "GRANT ALL ON *.* TO 'bench'@'%' WITH GRANT OPTION; CREATE DATABASE bench; USE bench;"
  for n in 1 2 3 4; do
    echo "CREATE TABLE bench.t$n (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY (k)) ENGINE=InnoDB;"
    echo "INSERT INTO bench.t$n SELECT seq, FLOOR(RAND(seq) * $rows), LEFT(SHA2(RAND(), 512), 120), LPAD(seq, 60, '0') FROM seq_1_to_$rows;"
  done
  # One day's writes: single-row transactions (the worst case for the binlog's per-event
  # overhead), each a random row of a random table.
  cat <<SQL
DELIMITER //
CREATE PROCEDURE bench.day(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  DECLARE r INT;
  WHILE i < n DO
    SET r = 1 + FLOOR(RAND() * $rows);
    CASE FLOOR(RAND() * 4)
      WHEN 0 THEN UPDATE bench.t1 SET k = k + 1, c = LEFT(SHA2(RAND(), 512), 120) WHERE id = r;
      WHEN 1 THEN UPDATE bench.t2 SET k = k + 1, c = LEFT(SHA2(RAND(), 512), 120) WHERE id = r;
      WHEN 2 THEN UPDATE bench.t3 SET k = k + 1, c = LEFT(SHA2(RAND(), 512), 120) WHERE id = r;
      ELSE UPDATE bench.t4 SET k = k + 1, c = LEFT(SHA2(RAND(), 512), 120) WHERE id = r;
    END CASE;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
SQL
} | sql "$src"
# One binlogged transaction, so the first base has a GTID state to start the archive at (as any
# real server has).
sql "$src" -e "CREATE TABLE bench.marker (id INT PRIMARY KEY) ENGINE=InnoDB"
# The tablespaces' size on disk (information_schema's figures are sampled estimates).
table_bytes=$(size "$src/data/bench")
per_day=$(( rows * 4 / 100 ))
echo "bench: $(mb "$table_bytes") MiB of tables in $(printf %.0f "$(echo "$(now) - $t" | bc)") s; $per_day updates a day"

# --- two repositories, one backup configuration each, the archive on the second -----------------
export COFFER_HOME="$run/home" TMPDIR="$run/tmp" COFFER_LOG=warn
case $method in
  compat) params='[{name: args, value: "--databases bench"}]' ;;
  native) params='[{name: method, value: native}, {name: databases, value: bench}]' ;;
  physical) params='[{name: method, value: physical}]' ;;
esac
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
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: source}
spec: {clientConfig: {url: "mysql://127.0.0.1:$src_port/"}, secret: {name: auth}}
YAML
for r in daily pitr; do cat >> "$run/m.yaml" <<YAML
---
apiVersion: stash.appscode.com/v1alpha1
kind: Repository
metadata: {name: $r}
spec: {backend: {local: {mountPath: $run/repo-$r}, storageSecretName: repo-secret}}
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: $r}
spec:
  task: {name: mariadb-backup-10.5.8, params: $params}
  repository: {name: $r}
  target: {ref: {kind: AppBinding, name: source}}
  retentionPolicy: {name: all, keepLast: 1000, prune: false}
YAML
done
cat >> "$run/m.yaml" <<YAML
---
apiVersion: coffer.dev/v1alpha1
kind: BinlogArchive
metadata: {name: pitr}
spec: {appBinding: {name: source}, repository: {name: pitr}}
YAML
"$coffer" apply -f "$run/m.yaml" >/dev/null

backup() { # REPO
  "$coffer" backup "$1" --wait >"$run/backup-$1.log" 2>&1 || { echo "bench: backup $1 FAILED:" >&2; tail -30 "$run/backup-$1.log" >&2; exit 1; }
}
archived() {
  "$coffer" get archive pitr -o json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("lastArchivedGtid") or "")' 2>/dev/null || true
}
archive_log="$run/archive.log"
start_archive() {
  "$coffer" archive pitr >/dev/null 2>>"$archive_log" &
  archive_pid=$!
  pids+=($archive_pid)
}
wait_archived() { # GTID_STATE
  local t; t=$(now)
  until [ "$(archived)" = "$1" ]; do
    if ! kill -0 "$archive_pid" 2>/dev/null; then echo "bench: coffer archive exited:" >&2; tail -30 "$archive_log" >&2; exit 1; fi
    if [ "$(echo "$(now) - $t > 600" | bc)" = 1 ]; then
      echo "bench: the archive did not reach $1 in 600 s (at '$(archived)'):" >&2; tail -30 "$archive_log" >&2; exit 1
    fi
    sleep 0.5
  done
}

# --- the days ------------------------------------------------------------------------------
rows_out=()
sum_daily=0; sum_arch=0; sum_base=0; n_base=0
for day in $(seq 0 "$days"); do
  # Measured before the day's writes: the archive streams them while they happen.
  pitr_before=$(size "$run/repo-pitr" 2>/dev/null || echo 0)
  if [ "$day" -gt 0 ]; then
    t=$(now)
    sql "$src" -e "CALL bench.day($per_day)"
    upd_s=$(echo "$(now) - $t" | bc)
  else
    upd_s=0
  fi
  pos=$(sql "$src" -N -e "SELECT @@gtid_binlog_pos")
  before=$(size "$run/repo-daily" 2>/dev/null || echo 0)
  backup daily
  daily_add=$(( $(size "$run/repo-daily") - before ))

  base_add=0
  arch_add=0
  before=$pitr_before
  if [ "$day" -gt 0 ]; then
    wait_archived "$pos"
    arch_add=$(( $(size "$run/repo-pitr") - before ))
    before=$(size "$run/repo-pitr")
  fi
  if [ $(( day % 7 )) = 0 ]; then
    backup pitr
    base_add=$(( $(size "$run/repo-pitr") - before ))
    n_base=$((n_base + 1)); sum_base=$((sum_base + base_add))
    # The archive starts at the newest base's state: started after the first base.
    [ "$day" -gt 0 ] || start_archive
  fi
  if [ "$day" -gt 0 ]; then sum_daily=$((sum_daily + daily_add)); sum_arch=$((sum_arch + arch_add)); fi
  rows_out+=("$day $upd_s $daily_add $arch_add $base_add")
  echo "bench: day $day: daily full +$(mb $daily_add) MiB; archive +$(mb $arch_add) MiB, base +$(mb $base_add) MiB"
done
kill -INT "$archive_pid" 2>/dev/null || true
wait "$archive_pid" 2>/dev/null || true

# --- report --------------------------------------------------------------------------------
printf '\ncoffer repository growth — %s MiB of tablespaces (%s rows), %s updates a day (1 %%), %s days, method %s, %s\n\n' \
  "$(mb "$table_bytes")" "$((rows * 4))" "$per_day" "$days" "$method" "$(date -u +%Y-%m-%dT%H:%MZ)"
printf '%4s %10s %18s %18s %16s\n' day "update s" "daily full MiB" "archive MiB" "weekly base MiB"
for r in "${rows_out[@]}"; do
  read -r d u a b c <<<"$r"
  printf '%4s %10.1f %18s %18s %16s\n' "$d" "$u" "$(mb "$a")" "$(mb "$b")" "$(mb "$c")"
done
avg_daily=$(echo "$sum_daily / $days" | bc -l)
avg_arch=$(echo "$sum_arch / $days" | bc -l)
# The base's cost spread over the 7 days it serves (day 0's base: the first one).
base_mean=$(echo "$sum_base / $n_base" | bc -l)
avg_pitr=$(echo "$avg_arch + $base_mean / 7" | bc -l)
printf '\n%-52s %10s\n' "added per day (days 1..$days)" "MiB"
printf '%-52s %10.2f\n' "(a) daily full backup" "$(mb "$avg_daily")"
printf '%-52s %10.2f\n' "(b) binlog archive" "$(mb "$avg_arch")"
printf '%-52s %10.2f\n' "(b) archive + weekly base / 7" "$(mb "$avg_pitr")"
printf '%-52s %10.1fx\n' "ratio (a) / (b archive)" "$(echo "$avg_daily / $avg_arch" | bc -l)"
printf '%-52s %10.1fx\n' "ratio (a) / (b archive + base / 7)" "$(echo "$avg_daily / $avg_pitr" | bc -l)"
printf '%-52s %10.2f\n' "first full backup (both regimes' day 0)" "$(mb "${rows_out[0]##* }")"
