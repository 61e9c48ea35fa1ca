#!/usr/bin/env bash
# History on vs off on a two-node Redis cluster: one redis-server and two
# rusher nodes (adapter = "redis") with two apps that differ only in
# `history = true` (app "hist-app"), so both sides run on the same binaries,
# in the same processes, in one run. Subscribers are spread over both nodes
# (`--ports a,b`), events are published through the first node: with history
# on every event goes through the history script (INCR + XADD + PUBLISH) and
# every node, the publishing one included, delivers it from the bus. Each
# pair of fan-outs (off, then on; each on its own channel) is repeated ROUNDS
# times, alternating. Prints a markdown table with the on/off ratio of
# deliveries/s (issue 12's target: on ≥ 0.9× off), also written to
# bench/results/history-cluster.md and into bench/results/history.md (its
# "On a Redis cluster" part).
#
# Usage: bench/compare-history-cluster.sh [--quick] [--skip-build] [--out DIR]
#
# Sizes (defaults in brackets)
#   HIST_SUBS [2000] HIST_EVENTS [300] HIST_WINDOW [32]   the max-rate fan-out
#   ROUNDS [3]    off/on pairs
#   PAYLOAD [100]
#   REDIS_SERVER [redis-server]
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=history-cluster
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
UNUSED=""
parse_compare_args --unused UNUSED "$@"
if [ "$QUICK" = 1 ]; then
  : "${HIST_SUBS:=200}" "${HIST_EVENTS:=50}" "${ROUNDS:=1}"
fi
: "${HIST_SUBS:=2000}" "${HIST_EVENTS:=300}" "${HIST_WINDOW:=32}" "${ROUNDS:=3}" "${PAYLOAD:=100}"
: "${REDIS_SERVER:=redis-server}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-history-cluster
raise_nofile
build_release
trap stop_all_pids EXIT

command -v "$REDIS_SERVER" >/dev/null 2>&1 || { say "$REDIS_SERVER not found"; exit 1; }
REDIS_PORT=$(free_port)
"$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --protected-mode no >"$OUT/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { say "redis-server did not start (see $OUT/redis.log)"; exit 1; }

ports=(); pids=()
for node in 0 1; do
  port=$(free_port)
  conf="$WORK/rusher-$node.toml"
  {
    echo 'adapter = "redis"'
    rusher_server_toml "$port"
    printf '\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "bench-history-%s"\n' "$REDIS_PORT" "$$"
    echo
    rusher_app_toml
    echo
    APP_ID=hist-app APP_KEY=hist-key APP_SECRET=hist-secret rusher_app_toml
    echo 'history = true'
  } >"$conf"
  "$ROOT/target/release/rusher" --config "$conf" >"$OUT/rusher-$node.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "$pid" "rusher node $node" "$port" "$OUT/rusher-$node.log" || exit 1
  ports+=("$port"); pids+=("$pid")
done
ports_csv=$(IFS=,; echo "${ports[*]}")
sleep 1  # let the nodes join the bus

LOAD_BEFORE=$(load_average)
STARTED=$(date +%s)
args="fanout --subscribers $HIST_SUBS --rate 0 --window $HIST_WINDOW --events $HIST_EVENTS --duration 60 --payload $PAYLOAD"
for round in $(seq 1 "$ROUNDS"); do
  for side in off on; do
    if [ "$side" = on ]; then app=(--app-id hist-app --app-key hist-key --app-secret hist-secret)
    else app=(--app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET"); fi
    name="$side-$round"
    say "round $round, history $side ($args --ports $ports_csv)"
    # shellcheck disable=SC2086
    "$BENCH" $args --channel "bench-history-$name" --ports "$ports_csv" "${app[@]}" \
      --server-pid "${pids[0]}" --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.log"
    rc=$?
    show_problems "$OUT/$name.log"
    [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $OUT/$name.log"
    for i in 0 1; do
      kill -0 "${pids[$i]}" 2>/dev/null || { say "rusher node $i died; see $OUT/rusher-$i.log"; exit 1; }
    done
  done
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)
STREAM_LEN=$(redis-cli -p "$REDIS_PORT" --raw XLEN "bench-history-$$:history:{hist-app:bench-history-on-1}" 2>/dev/null)

TABLE=$(history_onoff_table "$OUT" "$ROUNDS")
{
  echo "## On a Redis cluster (two nodes)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher $(git_commit)$(git_dirty); $(nproc) cores, $(uname -sr);"
  echo "redis $("$REDIS_SERVER" --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')."
  echo "Two rusher nodes on one redis-server (\`bench/compare-history-cluster.sh\`), two apps differing"
  echo "only in \`history = true\`; max-rate fan-out: $HIST_SUBS subscribers spread over both nodes, $HIST_EVENTS"
  echo "events published through node 0, window $HIST_WINDOW, payload $PAYLOAD B; off and on alternate,"
  echo "$ROUNDS rounds. Everything shares the machine (noisy). Runs took ${ELAPSED}s; load average"
  echo "before: ${LOAD_BEFORE}, after: ${LOAD_AFTER}. Entries in the first \"on\" channel's stream at the end:"
  echo "${STREAM_LEN:-?} (MAXLEN ~ 100). Raw results: $OUT"
  echo
  echo "$TABLE"
} >"$OUT/history-cluster.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/history-cluster.md" "$ROOT/bench/results/history-cluster.md"
# history.md keeps the one-node table (compare-history.sh) and this part.
python3 - "$ROOT/bench/results/history.md" "$OUT/history-cluster.md" <<'EOF'
import sys
path, part = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(path).read()
except OSError:
    text = ""
marker = "## On a Redis cluster"
text = text.split(marker)[0].rstrip() + "\n\n" + part if text else part
open(path, "w").write(text)
EOF
cat "$OUT/history-cluster.md"
say "table written to bench/results/history-cluster.md and bench/results/history.md; JSON results and logs in $OUT"
