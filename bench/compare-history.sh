#!/usr/bin/env bash
# History on vs off: one rusher process with two apps that differ only in
# `history = true` (app "hist-app"), so both sides run on the same binary, in
# the same process, in one run. Each pair of fan-outs (off, then on; each on
# its own channel) is repeated ROUNDS times, alternating, to average out the
# noise of a shared machine. Prints a markdown table with the on/off ratio of
# deliveries/s (issue 12's target: on ≥ 0.9× off), also written to
# bench/results/history.md (whose "On a Redis cluster" part,
# bench/compare-history-cluster.sh, is kept).
#
# Then recovery (issue 12: "recovery of 1,000 missed events for 1,000
# reconnecting clients completes"): a fresh rusher with outgoing_queue 2048
# and history_size 1000; `rusher-bench recovery` subscribes REC_CLIENTS
# clients, closes them, publishes REC_EVENTS events, and reconnects them all
# at once with `since`: time until every client holds every event (count and
# order checked), server RSS before / peak / after. Also records what the
# default outgoing_queue says to history_size 1000 (rusher --check-config).
#
# Usage: bench/compare-history.sh [--quick] [--skip-build] [--out DIR]
#
# Sizes (defaults in brackets)
#   HIST_SUBS [2000] HIST_EVENTS [300] HIST_WINDOW [32]   the max-rate fan-out
#   ROUNDS [3]    off/on pairs
#   PAYLOAD [100]
#   REC_CLIENTS [1000] REC_EVENTS [1000] REC_QUEUE [2048]  the recovery run
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=history
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
UNUSED=""
parse_compare_args --unused UNUSED "$@"
if [ "$QUICK" = 1 ]; then
  : "${HIST_SUBS:=200}" "${HIST_EVENTS:=50}" "${ROUNDS:=1}" "${REC_CLIENTS:=100}" "${REC_EVENTS:=100}"
fi
: "${REC_CLIENTS:=1000}" "${REC_EVENTS:=1000}" "${REC_QUEUE:=2048}"
: "${HIST_SUBS:=2000}" "${HIST_EVENTS:=300}" "${HIST_WINDOW:=32}" "${ROUNDS:=3}" "${PAYLOAD:=100}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-history
raise_nofile
build_release
trap stop_all_pids EXIT

port=$(free_port)
conf="$WORK/rusher-history.toml"
{
  rusher_server_toml "$port"
  echo
  rusher_app_toml
  echo
  APP_ID=hist-app APP_KEY=hist-key APP_SECRET=hist-secret rusher_app_toml
  echo 'history = true'
} >"$conf"
"$ROOT/target/release/rusher" --config "$conf" >"$OUT/rusher.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_http "$pid" rusher "$port" "$OUT/rusher.log" || exit 1

LOAD_BEFORE=$(load_average)
STARTED=$(date +%s)
args="fanout --subscribers $HIST_SUBS --rate 0 --window $HIST_WINDOW --events $HIST_EVENTS --duration 60 --payload $PAYLOAD"
for round in $(seq 1 "$ROUNDS"); do
  for side in off on; do
    if [ "$side" = on ]; then app=(--app-id hist-app --app-key hist-key --app-secret hist-secret)
    else app=(--app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET"); fi
    name="$side-$round"
    say "round $round, history $side ($args)"
    # shellcheck disable=SC2086
    "$BENCH" $args --channel "bench-history-$name" --port "$port" "${app[@]}" \
      --server-pid "$pid" --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.log"
    rc=$?
    show_problems "$OUT/$name.log"
    [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $OUT/$name.log"
    kill -0 "$pid" 2>/dev/null || { say "rusher died; see $OUT/rusher.log"; exit 1; }
  done
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)
HISTORY_EVENTS=$(curl -s --max-time 2 "http://127.0.0.1:$port/metrics" | awk '$1 == "rusher_history_events" {print $2}')

TABLE=$(history_onoff_table "$OUT" "$ROUNDS")
# Recovery: a fresh server, so its RSS is the recovery's alone.
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
rec_port=$(free_port)
rec_conf="$WORK/rusher-recovery.toml"
{
  rusher_server_toml "$rec_port"
  echo "outgoing_queue = $REC_QUEUE"
  echo
  rusher_app_toml
  echo 'history = true'
  echo "history_size = $REC_EVENTS"
} >"$rec_conf"
# What the default queue (1024) says to this history_size.
{ rusher_server_toml 6001; echo; rusher_app_toml; echo 'history = true'; echo "history_size = $REC_EVENTS"; } >"$WORK/default-queue.toml"
DEFAULT_QUEUE_CHECK=$("$ROOT/target/release/rusher" --check-config --config "$WORK/default-queue.toml" 2>&1 | tail -1)
"$ROOT/target/release/rusher" --config "$rec_conf" >"$OUT/rusher-recovery.log" 2>&1 &
rec_pid=$!
PIDS+=("$rec_pid")
wait_http "$rec_pid" rusher "$rec_port" "$OUT/rusher-recovery.log" || exit 1
say "recovery: $REC_CLIENTS clients, $REC_EVENTS missed events, outgoing_queue $REC_QUEUE"
"$BENCH" recovery --clients "$REC_CLIENTS" --events "$REC_EVENTS" --payload "$PAYLOAD" \
  --connect-concurrency "$REC_CLIENTS" --port "$rec_port" --server-pid "$rec_pid" \
  --json "$OUT/recovery.json" >/dev/null 2>"$OUT/recovery.log"
show_problems "$OUT/recovery.log"
RECOVERY=$(python3 - "$OUT/recovery.json" <<'EOF'
import json, sys
try:
    run = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("The recovery run left no result; see recovery.log."); sys.exit()
m = {x["name"]: x["value"] for x in run["metrics"]}
p = run["params"]
f = lambda v, fmt: fmt.format(v) if v is not None else "n/a"
print("| clients | missed events | all recovered in | per client p50 / p99 | replayed events/s | server RSS before / peak / after | failed |")
print("|---|---|---|---|---|---|---|")
print(f"| {p['clients']} | {p['events']} | {f(m['recovery_all_s'], '{:.2f} s')} | "
      f"{f(m['recovery_p50_ms'], '{:.0f}')} / {f(m['recovery_p99_ms'], '{:.0f}')} ms | {f(m['replayed_per_s'], '{:.0f}')} | "
      f"{f(m['rss_before_mib'], '{:.1f}')} / {f(m['rss_peak_mib'], '{:.1f}')} / {f(m['rss_after_mib'], '{:.1f}')} MiB | {m['failed']:.0f} |")
print()
print("OK: every client got every event once, in serial order." if run["ok"] else "PROBLEMS: " + "; ".join(run["problems"]))
EOF
)
kill -0 "$rec_pid" 2>/dev/null || say "rusher (recovery) died; see $OUT/rusher-recovery.log"

{
  echo "# History on vs off (rusher, one node)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher $(git_commit)$(git_dirty); $(nproc) cores, $(uname -sr)."
  echo "One rusher process, two apps differing only in \`history = true\` (history_size 100, ttl 300 s);"
  echo "max-rate fan-out: $HIST_SUBS subscribers, $HIST_EVENTS events, window $HIST_WINDOW, payload $PAYLOAD B;"
  echo "off and on alternate, $ROUNDS rounds. Generator and server share the machine (shared with other"
  echo "jobs: noisy); everything on 127.0.0.1. Runs took ${ELAPSED}s; load average before: ${LOAD_BEFORE},"
  echo "after: ${LOAD_AFTER}. rusher_history_events at the end: ${HISTORY_EVENTS:-?}. Raw results: $OUT"
  echo
  echo "$TABLE"
  echo
  echo "## Recovery: $REC_CLIENTS clients reconnect at once, $REC_EVENTS missed events each"
  echo
  echo "A fresh rusher: \`outgoing_queue = $REC_QUEUE\`, \`history_size = $REC_EVENTS\`. \`rusher-bench recovery\`"
  echo "subscribes $REC_CLIENTS raw clients, takes the serial of a marker event, closes them, publishes"
  echo "$REC_EVENTS events (payload $PAYLOAD B), then reconnects all $REC_CLIENTS at once (handshakes in"
  echo "parallel) with \`since\`; a client is done when it holds serials since+1 … since+$REC_EVENTS in"
  echo "order (any gap, reorder or \`pusher:recovery_failed\` fails it). Time from the first reconnect; RSS"
  echo "sampled every 10 ms."
  echo
  echo "$RECOVERY"
  echo
  case "$DEFAULT_QUEUE_CHECK" in
    "config OK"*) echo "With the default \`outgoing_queue\` (1024), \`history_size = $REC_EVENTS\` is accepted." ;;
    *) echo "With the default \`outgoing_queue\` (1024), \`history_size = $REC_EVENTS\` is refused at startup"
       echo "(a replay must fit in the queue beside live traffic): \`$DEFAULT_QUEUE_CHECK\`" ;;
  esac
} >"$OUT/history.md"
mkdir -p "$ROOT/bench/results"
# Keep the Redis cluster part (bench/compare-history-cluster.sh) if there is one.
python3 - "$ROOT/bench/results/history.md" "$OUT/history.md" <<'EOF'
import sys
path, mine = sys.argv[1], open(sys.argv[2]).read()
try:
    old = open(path).read()
except OSError:
    old = ""
marker = "## On a Redis cluster"
cluster = marker + old.split(marker, 1)[1] if marker in old else ""
open(path, "w").write(mine.rstrip() + ("\n\n" + cluster if cluster else "\n"))
EOF
cat "$OUT/history.md"
say "table written to bench/results/history.md; JSON results and logs in $OUT"
