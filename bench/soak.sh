#!/usr/bin/env bash
# Long-run robustness of rusher: the soak scenario (connect / subscribe to a
# presence and a public channel / abrupt close, SOAK_CYCLES times; then no
# channel, no connection, no presence member, RSS within 10 % of the
# baseline) and the black-box frame fuzzer (FUZZ_FRAMES random and mutated
# frames from FUZZ_CONNS connections, every answer's class checked; then the
# server still serves, forgot every connection, RSS bounded). Each runs on a
# fresh release rusher started here (fixtures/test-config.toml, a free port),
# so the RSS figures are the scenario's alone. Writes bench/results/soak.md
# and bench/results/frame-fuzz.md; exits non-zero when a check fails.
#
# Usage: bench/soak.sh [--skip-build] [--smoke] [--out DIR]
#   --smoke       CI sizes (300 cycles, 20000 frames; a few seconds each), a
#                 looser RSS bound, no results written (bench/smoke.sh runs this)
#   --skip-build  use the existing target/release binaries
#   --out DIR     where the JSON results go (default a new /tmp directory)
#
# Sizes (defaults in brackets; --smoke in parentheses)
#   SOAK_CYCLES [10000] (300)   SOAK_CONCURRENCY [50] (20)   SOAK_WARMUP [500] (50)
#   SOAK_RSS_TOLERANCE [0.10] (0.50)
#   FUZZ_FRAMES [1000000] (20000)   FUZZ_CONNS [200] (100)   FUZZ_RSS_GROWTH_MIB [256] (64)
#   SEED [1]   the fuzzer's and the soak's seed: a failure is replayed with it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BENCH_TAG=soak
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

SMOKE=0 BUILD=1 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --skip-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) awk 'NR > 1 { if (!/^#/) exit; print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$SMOKE" = 1 ]; then
  # The smoke's baseline is a nearly empty process (about 11 MiB) after 50
  # cycles: a few allocator arenas or thread caches growing by a MiB are
  # already 10 % of it. The exact checks (channels, connections, members,
  # answers) hold as in the long run; the 10 % RSS bound is the long run's.
  : "${SOAK_CYCLES:=300}" "${SOAK_CONCURRENCY:=20}" "${SOAK_WARMUP:=50}" "${SOAK_RSS_TOLERANCE:=0.50}"
  : "${FUZZ_FRAMES:=20000}" "${FUZZ_CONNS:=100}" "${FUZZ_RSS_GROWTH_MIB:=64}"
else
  : "${SOAK_CYCLES:=10000}" "${SOAK_CONCURRENCY:=50}" "${SOAK_WARMUP:=500}" "${SOAK_RSS_TOLERANCE:=0.10}"
  : "${FUZZ_FRAMES:=1000000}" "${FUZZ_CONNS:=200}" "${FUZZ_RSS_GROWTH_MIB:=256}"
fi
: "${SEED:=1}"
CONFIG="$ROOT/fixtures/test-config.toml"
MAX_FRAME_BYTES=65536 # server.max_frame_bytes in that config

if [ "$BUILD" = 1 ]; then
  cargo build --release -p rusher -p rusher-bench
fi
OUT=${OUT:-$(mktemp -d /tmp/rusher-soak.XXXXXX)}
mkdir -p "$OUT"
raise_nofile
trap stop_all_pids EXIT

# Starts a fresh rusher on a free port; sets PORT and SERVER_PID.
start_rusher() {
  PORT=$(free_port)
  RUSHER_PORT="$PORT" RUSHER_LOG_LEVEL=warn "$ROOT/target/release/rusher" --config "$CONFIG" \
    >"$OUT/rusher-$1.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_http "$SERVER_PID" rusher "$PORT" "$OUT/rusher-$1.log"
}

BENCH="$ROOT/target/release/rusher-bench"
rc=0

start_rusher soak
say "soak: $SOAK_CYCLES cycles, concurrency $SOAK_CONCURRENCY (rusher pid $SERVER_PID, port $PORT)"
"$BENCH" soak --port "$PORT" --server-pid "$SERVER_PID" --cycles "$SOAK_CYCLES" \
  --concurrency "$SOAK_CONCURRENCY" --warmup "$SOAK_WARMUP" --rss-tolerance "$SOAK_RSS_TOLERANCE" \
  --seed "$SEED" --json "$OUT/soak.json" >/dev/null || rc=1
stop_pid "$SERVER_PID" 50

start_rusher fuzz
say "frame-fuzz: $FUZZ_FRAMES frames over $FUZZ_CONNS connections, seed $SEED (rusher pid $SERVER_PID, port $PORT)"
"$BENCH" frame-fuzz --port "$PORT" --server-pid "$SERVER_PID" --frames "$FUZZ_FRAMES" \
  --connections "$FUZZ_CONNS" --max-frame-bytes "$MAX_FRAME_BYTES" --seed "$SEED" \
  --rss-growth-mib "$FUZZ_RSS_GROWTH_MIB" --json "$OUT/frame-fuzz.json" >/dev/null || rc=1
stop_pid "$SERVER_PID" 50

if [ "$SMOKE" = 0 ]; then
  python3 "$ROOT/bench/soak_report.py" "$OUT" "$ROOT/bench/results" \
    "$(git_commit)$(git_dirty)" "$(load_average)"
  say "wrote bench/results/soak.md and bench/results/frame-fuzz.md (JSON in $OUT)"
fi
exit $rc
