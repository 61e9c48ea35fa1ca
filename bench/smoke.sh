#!/usr/bin/env bash
# Smoke run of the load generator against rusher, for CI: a few seconds,
# tiny sizes, exits non-zero when a delivery or member event is lost, when
# nothing was delivered, or when a connection or request fails. Fan-out runs
# over WebSocket, xhr_streaming and xhr_polling. Then `bench/soak.sh --smoke`:
# 300 soak cycles and 20000 fuzz frames, each on a fresh rusher of its own
# (exact counts and RSS need a server no other client uses).
#
# Usage: bench/smoke.sh
#   BENCH_PORT=6001 bench/smoke.sh   use a rusher already listening on that port
#                                    (app app-id/app-key/app-secret)
#   RUSHER_BIN=path                  the rusher binary to start (default target/release/rusher)
#   RUSHER_CONFIG=path               its config (default fixtures/test-config.toml)
#   BENCH_SKIP_BUILD=1               use the existing target/release/rusher-bench
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BENCH="$ROOT/target/release/rusher-bench"

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
  cargo build --release -p rusher-bench
fi

PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    stop_pid "$PID" 50
  fi
}
trap cleanup EXIT

PORT="${BENCH_PORT:-}"
if [ -z "$PORT" ]; then
  PORT=$(free_port)
  RUSHER_PORT="$PORT" RUSHER_LOG_LEVEL=warn "${RUSHER_BIN:-$ROOT/target/release/rusher}" \
    --config "${RUSHER_CONFIG:-$ROOT/fixtures/test-config.toml}" &
  PID=$!
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { echo "smoke: rusher did not start" >&2; exit 1; }
    sleep 0.1
  done
fi

run() {
  echo "smoke: rusher-bench $*" >&2
  "$BENCH" "$@" --port "$PORT" --drain-secs 5 >/dev/null
}
run fanout --subscribers 20 --events 20 --rate 100
# pusher-js's HTTP fallbacks under the generator (subscribe over xhr_send,
# frames parsed from the lines; a poll is repeated at once when answered).
run fanout --subscribers 5 --events 20 --rate 50 --transport xhr_streaming --channel smoke-xhr-streaming
run fanout --subscribers 5 --events 20 --rate 50 --transport xhr_polling --channel smoke-xhr-polling
run channels --connections 20 --channels-per-event 5 --events 40 --rate 100
run publish --clients 2 --events 200 --duration 5 --subscribers 2
run presence --channels 2 --observers 3 --churners 2 --joins 40 --duration 5
run connect --connections 50 --settle 0.2 ${PID:+--server-pid "$PID"}
echo "smoke: bench/soak.sh --smoke" >&2
bash "$ROOT/bench/soak.sh" --smoke --skip-build
echo "smoke: OK" >&2
