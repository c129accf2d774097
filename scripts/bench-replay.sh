#!/usr/bin/env bash
# Benchmark of the point-in-time replay: the same archived segments applied to two servers
# restored from the same base, side by side in one run —
#   coffer:    the segments placed as relay logs, a private server's SQL thread applies them
#              (slave_parallel_mode=optimistic, min(cores,16) threads, UNTIL the last one)
#   reference: mariadb-binlog --skip-gtid-strict-mode SEGMENTS | mariadb
# — and both results verified with CHECKSUM TABLE against the source.
#
#   ./scripts/bench-replay.sh [--size-mb N] [--work DIR] [--keep] [--debug]
#
# N MB (default 500) of binlog is written by small OLTP-like transactions (one insert of a
# ~1 KB row, every 10th an update of an earlier one). --debug builds without --release.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
size_mb=500
work=/var/tmp/coffer-bench-replay
keep=0
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --debug) profile=debug; shift ;;
    *) echo "usage: $0 [--size-mb N] [--work DIR] [--keep] [--debug]" >&2; exit 2 ;;
  esac
done
for p in mariadbd mariadb mariadb-binlog mariadb-install-db; do
  command -v $p >/dev/null || [ -x /usr/sbin/$p ] || { echo "bench: $p missing: run ./scripts/install-deps.sh" >&2; exit 1; }
done
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/sbin"
echo "bench: building the replay driver ($profile)"
if [ "$profile" = release ]; then
  cargo build -q --release -p coffer-db --example replay_bench
else
  cargo build -q -p coffer-db --example replay_bench
fi
driver="${CARGO_TARGET_DIR:-$root/target}/$profile/examples/replay_bench"

rm -rf "$work/run"; mkdir -p "$work/run"; chmod 700 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$keep" = 1 ] || rm -rf "$work/run"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

server_args() { # DIR PORT
  echo --no-defaults --datadir="$1/data" --socket="$1/sock" --port="$2" --bind-address=127.0.0.1 \
    --user=root --tmpdir="$1/tmp" --log-error="$1/error.log" --skip-name-resolve \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=2 \
    --max-allowed-packet=256M
}
start_server() { # DIR PORT [extra args…]
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir/tmp"
  /usr/sbin/mariadbd $(server_args "$dir" "$port") "$@" 2>>"$dir/stderr.log" &
  pids+=($!)
  for _ in $(seq 300); do mariadb --no-defaults --socket="$dir/sock" -e 'SELECT 1' >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "bench: server in $dir did not start" >&2; tail -20 "$dir/error.log" >&2; exit 1
}
stop_server() { # DIR
  mariadb --no-defaults --socket="$1/sock" -e SHUTDOWN
  while [ -S "$1/sock" ]; do sleep 0.2; done
  sleep 0.5
}
sql() { local dir=$1; shift; mariadb --no-defaults --socket="$dir/sock" "$@"; }

# --- the base: one data directory with the schema, copied for every server ------------------
base="$work/run/base"
mkdir -p "$base/data"
mariadb-install-db --no-defaults --datadir="$base/data" --user=root --auth-root-authentication-method=socket \
  --skip-test-db >"$base/install.log" 2>&1
start_server "$base" "$(free_port)"
sql "$base" <<'SQL'
CREATE USER 'bench'@'%' IDENTIFIED BY 'bench-pass'; GRANT ALL ON *.* TO 'bench'@'%' WITH GRANT OPTION;
CREATE DATABASE bench;
CREATE TABLE bench.t (id INT PRIMARY KEY, k INT NOT NULL, pad VARCHAR(1000) NOT NULL, KEY (k)) ENGINE=InnoDB;
DELIMITER //
CREATE PROCEDURE bench.gen(first INT, n INT)
BEGIN
  DECLARE i INT DEFAULT first;
  WHILE i < first + n DO
    INSERT INTO bench.t VALUES (i, i % 1000, REPEAT(CHAR(65 + i % 26), 900 + i % 100));
    IF i % 10 = 0 THEN UPDATE bench.t SET k = k + 1 WHERE id = i DIV 2; END IF;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
SQL
stop_server "$base"
for d in source relay pipe; do mkdir -p "$work/run/$d"; cp -a "$base/data" "$work/run/$d/data"; done

# --- the source: binlog on, the write load ---------------------------------------------------
src="$work/run/source"; src_port=$(free_port)
start_server "$src" "$src_port" --log-bin=mysql-bin --binlog-format=ROW --server-id=11 --max-binlog-size=256M
from=$(sql "$src" -N -e "SELECT @@gtid_binlog_pos")
echo "bench: writing ${size_mb} MB of binlog (transactions of one ~1 KB row)"
t=$(now); next=1; batch=20000
binlog_mb() { sql "$src" -N -e "SHOW BINARY LOGS" | awk '{s += $2} END {print int(s / 1048576)}'; }
while [ "$(binlog_mb)" -lt "$size_mb" ]; do
  sql "$src" -e "CALL bench.gen($next, $batch)"
  next=$((next + batch))
done
until=$(sql "$src" -N -e "SELECT @@gtid_binlog_pos")
echo "bench: $(binlog_mb) MB of binlog, GTIDs $from .. $until, in $(printf %.0f "$(echo "$(now) - $t" | bc)") s"
want=$(sql "$src" -N -e "CHECKSUM TABLE bench.t" | awk '{print $2}')

# --- archive the segments, and coffer's relay-log replay -------------------------------------
relay="$work/run/relay"
echo "bench: archiving the binlog into segments, then coffer's relay-log replay"
out=$(BENCH_PASSWORD=bench-pass "$driver" "$src_port" bench "$from" "$until" "$work/run/segments" "$relay/data")
echo "$out" | sed 's/^/  /'
relay_s=$(echo "$out" | sed -n 's/^relay_seconds=//p')
apply_s=$(echo "$out" | sed -n 's/^apply_seconds=//p')
start_server "$relay" "$(free_port)"
got_relay=$(sql "$relay" -N -e "CHECKSUM TABLE bench.t" | awk '{print $2}')

# --- the reference: mariadb-binlog | mariadb into a running server ----------------------------
pipe="$work/run/pipe"
start_server "$pipe" "$(free_port)"
echo "bench: mariadb-binlog | mariadb"
t=$(now)
mariadb-binlog --no-defaults --skip-gtid-strict-mode "$work/run/segments"/seg-*.bin \
  | mariadb --no-defaults --socket="$pipe/sock" --binary-mode
pipe_s=$(echo "$(now) - $t" | bc)
sql "$pipe" -e "SET GLOBAL gtid_slave_pos = '$until'"
got_pipe=$(sql "$pipe" -N -e "CHECKSUM TABLE bench.t" | awk '{print $2}')

# --- results ---------------------------------------------------------------------------------
ok() { [ "$1" = "$want" ] && echo "checksum ok" || echo "CHECKSUM MISMATCH ($1 != $want)"; }
txs=$(echo "$out" | sed -n 's/.*transactions=\([0-9]*\).*/\1/p')
printf '\n%-44s %10s %12s  %s\n' "replay of $txs transactions ($(binlog_mb) MB)" "seconds" "trx/s" "result"
printf '%-44s %10.2f %12.0f  %s\n' "coffer relay logs (start+apply+stop)" "$relay_s" "$(echo "$txs / $relay_s" | bc -l)" "$(ok "$got_relay")"
printf '%-44s %10.2f %12.0f\n' "  of which the SQL thread applying" "$apply_s" "$(echo "$txs / $apply_s" | bc -l)"
printf '%-44s %10.2f %12.0f  %s\n' "mariadb-binlog | mariadb" "$pipe_s" "$(echo "$txs / $pipe_s" | bc -l)" "$(ok "$got_pipe")"
printf '%-44s %10.2fx\n' "speed-up (pipe time / coffer time)" "$(echo "$pipe_s / $relay_s" | bc -l)"
[ "$got_relay" = "$want" ] && [ "$got_pipe" = "$want" ]
