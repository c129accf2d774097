#!/usr/bin/env bash
# Benchmark of the binlog archive's repository layout (issue #12): simulates DAYS days of
# FLUSH-second flushes (30 days of 5 s: 518,400 segments) in a new local repository, with
# hourly compaction as the archive runner does it, then prints listing, restore planning,
# read and put times. About 3 minutes on 2 cores; the repository is removed afterwards.
#
#   ./scripts/bench-archive-layout.sh [--days N] [--flush-seconds S] [--release] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
days=30
flush=5
profile=dev
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --days) days=$2; shift 2 ;;
    --flush-seconds) flush=$2; shift 2 ;;
    --release) profile=release; shift ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "usage: $0 [--days N] [--flush-seconds S] [--release] [--keep DIR]" >&2; exit 2 ;;
  esac
done
command -v restic >/dev/null || echo "bench-archive-layout: restic not found; the check at the end is skipped" >&2
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
echo "bench-archive-layout: building coffer ($profile)"
cargo build -q --profile "$profile" -p coffer
dir_name=$([ "$profile" = dev ] && echo debug || echo release)
coffer="${CARGO_TARGET_DIR:-target}/$dir_name/coffer"
work=${keep:-$(mktemp -d /var/tmp/coffer-archive-layout.XXXXXX)}
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
COFFER_LOG=warn "$coffer" bench-archive-layout --dir "$work/repo" --days "$days" --flush-seconds "$flush"
if command -v restic >/dev/null; then
  export RESTIC_PASSWORD=bench-archive-layout
  t=$(date +%s%N)
  n=$(restic -r "$work/repo" --no-cache snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  echo "restic snapshots: $n snapshots in $(( ($(date +%s%N) - t) / 1000000 )) ms"
  t=$(date +%s%N)
  restic -r "$work/repo" --no-cache check -q
  echo "restic check: ok in $(( ($(date +%s%N) - t) / 1000000 )) ms"
fi
