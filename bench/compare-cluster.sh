#!/usr/bin/env bash
# Two-node fan-out: rusher as a two-node cluster (adapter = "redis") against
# one rusher node, and against sockudo x2 with its Redis adapter (and one
# sockudo node) when it runs.
#
# Starts a redis-server on a free port, then for each setup in turn the
# server(s) on free 127.0.0.1 ports with the same app (app-id / app-key /
# app-secret) and raised limits as compare.sh, and runs the `fanout` scenario:
# subscribers spread round-robin over the nodes (`--ports a,b`), events
# published over the HTTP API of the first node, so half of the deliveries
# cross the Redis bus ("remote") and half do not ("local"). The single-node
# setups run the same scenario on one port for reference. Prints a markdown
# table with ratios (two nodes vs one, rusher vs sockudo), also written to
# bench/results/cluster.md. About 3 minutes with the default sizes.
#
# Usage: bench/compare-cluster.sh [--quick] [--setups "..."] [--skip-build] [--out DIR]
#   --quick       tiny sizes: checks that everything runs
#   --setups      which setups, default "rusher-2 rusher-1 sockudo-2 sockudo-1"
#   --skip-build  use the binaries already in target/release
#   --out DIR     where JSON results and logs go (default: a temp dir)
#
# Sizes (defaults in brackets)
#   CLUSTER_SUBS [6000]            subscribers in all (3000 per node with two)
#   CLUSTER_DELIVERIES [60000]     deliveries/s of the fixed-rate run (rate = this / subscribers)
#   CLUSTER_SECS [10]              length of the fixed-rate run
#   CLUSTER_MAX_RUNS ["4:200 32:600"]  max-rate runs as WINDOW:EVENTS pairs (events not yet
#                                  fully delivered; 4 = round-trip bound, 32 = saturated)
#   PAYLOAD [100]
#   REDIS_SERVER [redis-server]    the redis-server binary
#   SOCKUDO_BIN                    sockudo binary (else /work/tools/sockudo/bin/sockudo, else PATH)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=cluster
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SETUPS="rusher-2 rusher-1 sockudo-2 sockudo-1"
parse_compare_args --setups SETUPS "$@"
if [ "$QUICK" = 1 ]; then
  : "${CLUSTER_SUBS:=200}" "${CLUSTER_DELIVERIES:=10000}" "${CLUSTER_SECS:=2}" "${CLUSTER_MAX_RUNS:=4:50 32:100}"
fi
: "${CLUSTER_SUBS:=6000}" "${CLUSTER_DELIVERIES:=60000}" "${CLUSTER_SECS:=10}" "${CLUSTER_MAX_RUNS:=4:200 32:600}"
: "${PAYLOAD:=100}" "${REDIS_SERVER:=redis-server}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-cluster
raise_nofile

build_release

find_sockudo /work/tools/sockudo

trap stop_all_pids EXIT

# --- Redis --------------------------------------------------------------------
REDIS_PORT=""
REDIS_PID=""
if [[ "$SETUPS" == *-2* ]]; then
  if command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    REDIS_PORT=$(free_port)
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
      --protected-mode no >"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 1 100); do
      redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
      say "redis-server did not start (see $OUT/redis.log): two-node setups are skipped"; REDIS_PORT=""
    else
      say "redis-server on 127.0.0.1:$REDIS_PORT"
    fi
  else
    say "SKIPPING the two-node setups: $REDIS_SERVER not found"
  fi
fi

# Starts node $2 (0, 1) of server $1 (rusher|sockudo) on port $3, clustered
# through Redis when $4 = redis; sets NODE_PID.
start_node() {
  local server=$1 node=$2 port=$3 mode=$4 log="$OUT/$1-$4-node$2.log"
  case "$server" in
    rusher)
      local conf="$WORK/rusher-$mode-$node.toml"
      {
        if [ "$mode" = redis ]; then echo 'adapter = "redis"'; fi
        rusher_server_toml "$port"
        if [ "$mode" = redis ]; then
          printf '\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "bench-%s"\n' "$REDIS_PORT" "$RUN_ID"
        fi
        echo
        rusher_app_toml
      } >"$conf"
      "$ROOT/target/release/rusher" --config "$conf" >"$log" 2>&1 &
      NODE_PID=$! ;;
    sockudo)
      local dir="$WORK/sockudo-$mode-$node" adapter=local
      mkdir -p "$dir"
      [ "$mode" = redis ] && adapter=redis
      # As in compare.sh (environment only, limits raised, rate limiting and
      # metrics off), with the Redis adapter for the two-node setup. Clustered,
      # sockudo refuses a node-local cache unless idempotency (and its Ably
      # compatibility) is off; the fan-out needs neither.
      sockudo_exec "$dir" "$port" \
        ADAPTER_DRIVER="$adapter" REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}" \
        DATABASE_REDIS_HOST=127.0.0.1 DATABASE_REDIS_PORT="${REDIS_PORT:-6379}" \
        DATABASE_REDIS_KEY_PREFIX="bench-$RUN_ID:" \
        APP_MANAGER_DRIVER=memory CACHE_DRIVER=memory QUEUE_DRIVER=memory \
        IDEMPOTENCY_ENABLED=false SOCKUDO_ABLY_COMPAT_ENABLED=false >"$log" 2>&1 &
      NODE_PID=$! ;;
  esac
  PIDS+=("$NODE_PID")
  wait_http "$NODE_PID" "$server node $node" "$port" "$log" || return 1
  # A sockudo built without its redis feature says so and runs alone.
  if [ "$server" = sockudo ] && [ "$mode" = redis ] && grep -q 'not compiled in' "$log"; then
    NOT_CLUSTERED="this sockudo build has no Redis adapter: it logs \"$(grep -o "adapter requested but not compiled in[^[:cntrl:]]*" "$log" | head -1 | sed "s/ *$//")\"; install one built with its redis feature (SOCKUDO_BIN=...)"
    return 1
  fi
}

# The runs: label, then the generator's arguments (without ports).
rate=$(python3 -c "print(max(1, $CLUSTER_DELIVERIES / $CLUSTER_SUBS))")
events=$(python3 -c "print(int(max(1, $CLUSTER_DELIVERIES / $CLUSTER_SUBS) * $CLUSTER_SECS))")
RUNS=()
RUNS+=("fixed|fanout --subscribers $CLUSTER_SUBS --rate $rate --events $events --duration $((CLUSTER_SECS * 3)) --payload $PAYLOAD")
MAX_LABELS=()
for run in $CLUSTER_MAX_RUNS; do
  window=${run%%:*} max_events=${run#*:}
  MAX_LABELS+=("max-w$window")
  RUNS+=("max-w$window|fanout --subscribers $CLUSTER_SUBS --rate 0 --window $window --events $max_events --duration 120 --payload $PAYLOAD")
done

LOAD_BEFORE=$(load_average)
STARTED=$(date +%s)
SKIPPED=()
for setup in $SETUPS; do
  server=${setup%-*}; nodes=${setup##*-}
  mode=local; [ "$nodes" -gt 1 ] && mode=redis
  if [ "$server" = sockudo ] && [ -z "$SOCKUDO" ]; then
    SKIPPED+=("$setup: sockudo not installed"); say "SKIPPING $setup: sockudo not installed"; continue
  fi
  if [ "$mode" = redis ] && [ -z "$REDIS_PORT" ]; then
    SKIPPED+=("$setup: no redis-server"); say "SKIPPING $setup: no redis-server"; continue
  fi
  RUN_ID="$setup-$$"; NOT_CLUSTERED=""
  ports=(); pids=(); started=1
  for node in $(seq 0 $((nodes - 1))); do
    port=$(free_port)
    if ! start_node "$server" "$node" "$port" "$mode"; then started=0; break; fi
    ports+=("$port"); pids+=("$NODE_PID")
  done
  if [ "$started" = 0 ]; then
    why=${NOT_CLUSTERED:-a node did not start (logs in $OUT)}
    SKIPPED+=("$setup: $why")
    say "SKIPPING $setup: $why"
    for p in "${pids[@]}" "$NODE_PID"; do stop_pid "$p"; done
    continue
  fi
  ports_csv=$(IFS=,; echo "${ports[*]}")
  say "== $setup on 127.0.0.1:$ports_csv"
  sleep 1  # let clustered nodes see each other (heartbeats)
  for run in "${RUNS[@]}"; do
    label=${run%%|*}; args=${run#*|}
    if [ "$nodes" -gt 1 ]; then where="--ports $ports_csv"; else where="--port ${ports[0]}"; fi
    say "$setup: $label ($args $where)"
    # shellcheck disable=SC2086
    "$BENCH" $args $where --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET" \
      --server-pid "${pids[0]}" --json "$OUT/$setup-$label.json" >/dev/null 2>"$OUT/$setup-$label.log"
    rc=$?
    show_problems "$OUT/$setup-$label.log"
    [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $OUT/$setup-$label.log"
    for i in "${!pids[@]}"; do
      kill -0 "${pids[$i]}" 2>/dev/null || say "$setup node $i died during $label (log $OUT/$server-$mode-node$i.log)"
    done
  done
  # Errors the nodes logged (warn level and above), for the report.
  for i in "${!pids[@]}"; do
    n=$(grep -ciE 'warn|error' "$OUT/$server-$mode-node$i.log" 2>/dev/null || true)
    [ "${n:-0}" -gt 0 ] && say "$setup node $i logged $n warning/error lines (see $OUT/$server-$mode-node$i.log)"
  done
  for p in "${pids[@]}"; do stop_pid "$p"; done
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)

SOCKUDO_VERSION="not installed"
[ -n "$SOCKUDO" ] && SOCKUDO_VERSION=$("$SOCKUDO" --version 2>/dev/null | head -1)
COMMIT=$(git_commit)
DIRTY=$(git_dirty)
REDIS_VERSION=$("$REDIS_SERVER" --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')
SKIPPED_TEXT=$(printf '%s\n' "${SKIPPED[@]+"${SKIPPED[@]}"}")
TABLE=$(SKIPPED_TEXT="$SKIPPED_TEXT" python3 - "$OUT" "${MAX_LABELS[@]}" <<'EOF'
import json, os, sys
out = sys.argv[1]
setups = ["rusher-2", "rusher-1", "sockudo-2", "sockudo-1"]
names = {"rusher-2": "rusher ×2", "rusher-1": "rusher ×1", "sockudo-2": "sockudo ×2", "sockudo-1": "sockudo ×1"}
def load(setup, label):
    try:
        with open(os.path.join(out, f"{setup}-{label}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def metric(run, name):
    if not run: return None
    for m in run["metrics"]:
        if m["name"] == name: return m["value"]
    return None
def num(v):
    if v is None: return "—"
    if v == 0: return "0"
    if abs(v) >= 1000: return f"{v:.0f}"
    if abs(v) >= 10: return f"{v:.1f}"
    return f"{v:.3f}"
def ratio(a, b):
    return "—" if a is None or b in (None, 0) else f"{a / b:.2f}×"
rows = ["deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
        "local_deliveries_per_s", "local_p50_ms", "local_p99_ms",
        "remote_deliveries_per_s", "remote_p50_ms", "remote_p99_ms",
        "publish_per_s", "lost", "remote_lost", "dropped_connections"]
print("| run | metric | " + " | ".join(names[s] for s in setups)
      + " | rusher ×2/×1 | sockudo ×2/×1 | rusher/sockudo ×2 |")
print("|---|---|" + "---|" * len(setups) + "---|---|---|")
notes = []
for label in ["fixed"] + sys.argv[2:]:
    runs = {s: load(s, label) for s in setups}
    ref = next((r for r in runs.values() if r), None)
    if not ref:
        continue
    p = ref["params"]
    desc = (f"{p['subscribers']} subs, {p['rate']:g} ev/s, {p['payload_bytes']} B" if p["rate"] > 0
            else f"{p['subscribers']} subs, max rate (window {p['window']})")
    for s, r in runs.items():
        if r and not r["ok"]:
            notes.append(f"- {names[s]}, {desc}: " + "; ".join(r["problems"]))
    for i, name in enumerate(rows):
        v = {s: metric(runs[s], name) for s in setups}
        if all(x is None for x in v.values()):
            continue
        cells = [num(v[s]) + (" ⚠" if runs[s] and not runs[s]["ok"] else "") for s in setups]
        # Against one node: the same metric, or its overall latency for the
        # local/remote latency rows; none for the per-side counts.
        ref_name = {"local_p50_ms": "latency_p50_ms", "local_p99_ms": "latency_p99_ms",
                    "remote_p50_ms": "latency_p50_ms", "remote_p99_ms": "latency_p99_ms"}.get(
            name, None if name.startswith(("local_", "remote_")) else name)
        single = lambda s: metric(runs[s], ref_name) if ref_name else None
        print(f"| {desc if i == 0 else ''} | {name} | " + " | ".join(cells)
              + f" | {ratio(v['rusher-2'], single('rusher-1'))} | {ratio(v['sockudo-2'], single('sockudo-1'))}"
              + f" | {ratio(v['rusher-2'], v['sockudo-2'])} |")
if notes:
    print("\n⚠ = the run was not clean:")
    print("\n".join(notes))
skipped = [l for l in os.environ.get("SKIPPED_TEXT", "").splitlines() if l.strip()]
if skipped:
    print("\nSkipped: " + "; ".join(skipped))
print("\nRatios: ×2/×1 compares the two-node cluster with one node (local/remote latency rows against the"
      " single node's overall latency); rusher/sockudo compares the two-node clusters."
      " Throughput: higher is better; latency: lower is better.")
EOF
)
{
  echo "# Two-node fan-out: rusher cluster (Redis adapter) vs one node vs sockudo"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher ${COMMIT}${DIRTY}, sockudo: ${SOCKUDO_VERSION}, redis ${REDIS_VERSION:-?}; $(nproc) cores, $(uname -sr)."
  echo "Subscribers round-robin over the nodes, events published to the first node's HTTP API;"
  echo "local = subscribers of that node, remote = the other node's (through Redis pub/sub)."
  echo "Generator, Redis and every node share the machine; everything on 127.0.0.1. Runs took ${ELAPSED}s;"
  echo "load average before: ${LOAD_BEFORE}, after: ${LOAD_AFTER}. Raw results: $OUT"
  echo
  echo "$TABLE"
} >"$OUT/cluster.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/cluster.md" "$ROOT/bench/results/cluster.md"
cat "$OUT/cluster.md"
say "table written to bench/results/cluster.md; JSON results and logs in $OUT"
