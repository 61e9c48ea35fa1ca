#!/usr/bin/env bash
# The console's cost on fan-out (issue 15: with one console open, fan-out
# must stay >= 0.95x of without). One rusher (no config file: the console
# is on for the built-in app), then ROUNDS alternating fan-out runs, without
# and with one console's live stream open on the app (logged in, read by
# curl as a browser would), each reporting deliveries/s and the server's CPU
# microseconds per delivery. Prints a Markdown table and the ratios.
#
#   bench/compare-console.sh [ROUNDS] [SUBSCRIBERS] [EVENTS] [RATE]
#   (defaults 3 500 1000 5000; BUILD=0 skips the release build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=console
. "$ROOT/bench/lib.sh"
ROUNDS=${1:-3} SUBS=${2:-500} EVENTS=${3:-1000} RATE=${4:-5000}
[ "${BUILD:-1}" = 0 ] || (cd "$ROOT" && cargo build --release -p rusher -p rusher-bench >&2)
raise_nofile
OUT=$(mktemp -d /tmp/compare-console.XXXXXX)
PORT=$(free_port)
RUSHER_PORT=$PORT RUSHER_HOST=127.0.0.1 RUSHER_LOG_LEVEL=warn \
  "$ROOT/target/release/rusher" >"$OUT/rusher.log" 2>&1 &
SERVER=$!
PIDS=("$SERVER")
trap 'for p in "${PIDS[@]}"; do stop_pid "$p" 20; done' EXIT
wait_http "$SERVER" rusher "$PORT" "$OUT/rusher.log"
BASE="http://127.0.0.1:$PORT"
curl -sf -c "$OUT/cookies" -H 'Content-Type: application/json' \
  -d '{"app_id":"app-id","secret":"app-secret"}' "$BASE/console/api/login" >/dev/null

run() { # label round
  "$ROOT/target/release/rusher-bench" fanout --port "$PORT" --subscribers "$SUBS" \
    --events "$EVENTS" --rate "$RATE" --server-pid "$SERVER" \
    --channel "console-bench-$1-$2" --json "$OUT/$1-$2.json" >"$OUT/$1-$2.log" 2>&1
}
for round in $(seq 1 "$ROUNDS"); do
  say "round $round: without a console"
  run off "$round"
  say "round $round: with one console open"
  curl -sN -b "$OUT/cookies" "$BASE/console/api/apps/app-id/live" >"$OUT/live-$round.txt" &
  LIVE=$!
  sleep 1
  run on "$round"
  kill "$LIVE" 2>/dev/null; wait "$LIVE" 2>/dev/null || true
  # The stream did carry the run's events.
  grep -q '"kind":"api_event"' "$OUT/live-$round.txt" || { say "the console saw no event"; exit 1; }
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def metric(path, name):
    d = json.load(open(path))
    return next(m["value"] for m in d["metrics"] if m["name"] == name)
rows = {"off": [], "on": []}
print("| round | console | deliveries/s | server CPU µs/delivery |")
print("|---|---|---|---|")
for r in range(1, rounds + 1):
    for label in ("off", "on"):
        f = f"{out}/{label}-{r}.json"
        dps, cpu = metric(f, "deliveries_per_s"), metric(f, "server_cpu_us_per_delivery")
        rows[label].append((dps, cpu))
        print(f"| {r} | {'open' if label == 'on' else 'none'} | {dps:.0f} | {cpu if cpu is None else f'{cpu:.2f}'} |")
med = lambda xs: statistics.median(xs)
dps = med([x[0] for x in rows["on"]]) / med([x[0] for x in rows["off"]])
print(f"\nmedian deliveries/s, console open / none: {dps:.3f}x")
cpus = [x[1] for x in rows["on"] + rows["off"]]
if all(c is not None for c in cpus):
    cpu = med([x[1] for x in rows["off"]]) / med([x[1] for x in rows["on"]])
    print(f"median server CPU per delivery, none / console open: {cpu:.3f}x")
PY
