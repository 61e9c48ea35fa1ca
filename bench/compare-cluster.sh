#!/usr/bin/env bash
# Two-node fan-out: rusher as a two-node cluster (adapter = "redis") on one
# Redis and on a Redis Cluster, against one rusher node, and against sockudo
# x2 with its Redis adapter (and one sockudo node) when it runs; with the CPU
# time every process used, for the deliveries per CPU-second of the nodes.
#
# Starts a redis-server on a free port (and a 3-master Redis Cluster for
# rusher-2c), then, CLUSTER_ROUNDS times, each setup in turn (the order
# reversed every other round, so no setup always runs on a warmer or quieter
# machine): the server(s) on free 127.0.0.1 ports with the same app
# (app-id / app-key / app-secret) and raised limits as compare.sh, and the
# `fanout` scenario: subscribers spread round-robin over the nodes
# (`--ports a,b`), events published over the HTTP API of the first node, so
# half of the deliveries cross the Redis bus ("remote") and half do not
# ("local"). The single-node setups run the same scenario on one port for
# reference. Writes a markdown summary (min / median / max over the rounds of
# deliveries/s and of deliveries per CPU-second of the server processes, the
# latter against one node's) and the detailed table of the last round to
# bench/results/cluster.md. About 3 minutes per round with the default sizes.
#
# CPU: the generator reads utime + stime (/proc/PID/stat) of every node and
# of redis-server(s) (`--cpu-pid`) at the first measured publish and at the
# end of the drain, so connection set-up is left out.
#
# Pinning (BENCH_PIN=1, the default, when taskset works): the generator gets
# a core of its own, because whether a node writes many events per socket
# write (cheap) or one (about 7x the CPU per delivery) depends on it: sharing
# the nodes' cores, it slows every write cycle down until each socket gets one
# frame per write (measured on 2 cores: 2.3 frames per sendto against 21 with
# the generator alone on a core; see bench/results/cluster.md). So
#   CLUSTER_LAYOUT=auto (default): with 3 cores or more, node 1 (or the single
#     node) on cpu 0, node 2 on cpu 1, the generator on cpu 2, Redis on cpu 3
#     and up (unpinned with 3); with 2 cores, the node(s) on cpu 0 (two nodes
#     share it: the same CPU budget as one node, so deliveries per CPU-second
#     compare like for like), the generator on cpu 1, Redis unpinned.
#   CLUSTER_LAYOUT=spread: node 1 on cpu 0, node 2 on cpu 1, the generator and
#     Redis wherever the scheduler puts them (the layout of the first runs: on
#     2 cores the generator then competes with both nodes).
# BENCH_PIN=0: nothing is pinned.
#
# Usage: bench/compare-cluster.sh [--quick] [--setups "..."] [--skip-build] [--out DIR]
#   --quick       tiny sizes, one round: checks that everything runs
#   --setups      which setups, default "rusher-1 rusher-2 rusher-2c sockudo-1 sockudo-2":
#                 NAME-N runs N nodes (N > 1: through one Redis), NAME-Nc N nodes on a
#                 3-master Redis Cluster (`cluster = true`; skipped with a message when
#                 the binary refuses it). NAME: rusher, sockudo, or base (rusher from
#                 BASE_BIN, e.g. an earlier build: --setups "rusher-1 rusher-2 base-1 base-2")
#   --skip-build  use the binaries already in target/release
#   --out DIR     where JSON results and logs go (default: a temp dir)
#
# Sizes (defaults in brackets)
#   CLUSTER_ROUNDS [3]             rounds (each runs every setup once)
#   CLUSTER_SUBS [6000]            subscribers in all (3000 per node with two)
#   CLUSTER_DELIVERIES [60000]     deliveries/s of the fixed-rate run (rate = this / subscribers)
#   CLUSTER_SECS [10]              length of the fixed-rate run
#   CLUSTER_MAX_RUNS ["4:200 32:600"]  max-rate runs as WINDOW:EVENTS pairs (events not yet
#                                  fully delivered; 4 = round-trip bound, 32 = saturated)
#   PAYLOAD [100]
#   BENCH_PIN [1]                  pin processes with taskset (see above)
#   CLUSTER_LAYOUT [auto]          auto or spread (see Pinning above)
#   BASE_BIN                       the rusher binary of the base-N setups
#   REDIS_SERVER [redis-server]    the redis-server binary
#   SOCKUDO_BIN                    sockudo binary (else ~/.cache/rusher-bench/sockudo/bin/sockudo, else PATH)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=cluster
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SETUPS="rusher-1 rusher-2 rusher-2c sockudo-1 sockudo-2"
parse_compare_args --setups SETUPS "$@"
if [ "$QUICK" = 1 ]; then
  : "${CLUSTER_SUBS:=200}" "${CLUSTER_DELIVERIES:=10000}" "${CLUSTER_SECS:=2}" "${CLUSTER_MAX_RUNS:=4:50 32:100}"
  : "${CLUSTER_ROUNDS:=1}"
fi
: "${CLUSTER_SUBS:=6000}" "${CLUSTER_DELIVERIES:=60000}" "${CLUSTER_SECS:=10}" "${CLUSTER_MAX_RUNS:=4:200 32:600}"
: "${CLUSTER_ROUNDS:=3}" "${PAYLOAD:=100}" "${REDIS_SERVER:=redis-server}" "${BENCH_PIN:=1}"
: "${CLUSTER_LAYOUT:=auto}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-cluster
raise_nofile

build_release

find_sockudo "${SOCKUDO_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/rusher-bench/sockudo}"

trap stop_all_pids EXIT

# --- Redis --------------------------------------------------------------------
REDIS_PORT=""
REDIS_PID=""
# setup_nodes SETUP / setup_mode SETUP: its node count; local, redis or rcluster.
setup_nodes() { local tail=${1##*-}; echo "${tail%c}"; }
setup_mode() {
  case "${1##*-}" in
    *c) echo rcluster ;;
    1) echo local ;;
    *) echo redis ;;
  esac
}
NEEDS_REDIS=0 NEEDS_RCLUSTER=0
for setup in $SETUPS; do
  case $(setup_mode "$setup") in
    redis) NEEDS_REDIS=1 ;;
    rcluster) NEEDS_RCLUSTER=1 ;;
  esac
done

# --- Pinning ------------------------------------------------------------------
CORES=$(nproc)
NODE_CPUS=("" "") GEN_CPUS="" REDIS_CPUS=""
if [ "$BENCH_PIN" = 1 ] && [ "$CORES" -ge 2 ] && taskset -c 0 true 2>/dev/null; then
  case "$CLUSTER_LAYOUT" in
    spread)
      NODE_CPUS=(0 1)
      if [ "$CORES" -ge 4 ]; then GEN_CPUS=2 REDIS_CPUS="3-$((CORES - 1))"; fi ;;
    auto)
      if [ "$CORES" -ge 3 ]; then
        NODE_CPUS=(0 1) GEN_CPUS=2
        if [ "$CORES" -ge 4 ]; then REDIS_CPUS="3-$((CORES - 1))"; fi
      else
        NODE_CPUS=(0 0) GEN_CPUS=1
      fi ;;
    *) say "CLUSTER_LAYOUT must be auto or spread, not $CLUSTER_LAYOUT"; exit 2 ;;
  esac
  if [ "${NODE_CPUS[0]}" = "${NODE_CPUS[1]}" ]; then
    nodes_text="the node (or both nodes, sharing it) on cpu ${NODE_CPUS[0]}"
  else
    nodes_text="node 1 (or the single node) on cpu ${NODE_CPUS[0]}, node 2 on cpu ${NODE_CPUS[1]}"
  fi
  LAYOUT="$nodes_text, generator on ${GEN_CPUS:+cpu }${GEN_CPUS:-any cpu}, redis-server(s) on ${REDIS_CPUS:+cpus }${REDIS_CPUS:-any cpu} (taskset; $CORES cores; CLUSTER_LAYOUT=$CLUSTER_LAYOUT)"
else
  LAYOUT="nothing pinned ($CORES cores; BENCH_PIN=$BENCH_PIN)"
fi
say "layout: $LAYOUT"
# Socket writes of the nodes: write, writev and sendto syscalls counted by
# `perf stat` (tracepoints; needs perf and perf_event_paranoid <= 1 or root).
WRITE_EVENTS="syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg"
PERF_WRITES=0
if command -v perf >/dev/null 2>&1 && perf stat -x, -e "$WRITE_EVENTS" -o /dev/null -- true >/dev/null 2>&1; then
  PERF_WRITES=1
else
  say "perf cannot count syscalls here: no deliveries-per-write column"
fi
GEN_PIN=()
[ -n "$GEN_CPUS" ] && GEN_PIN=(taskset -c "$GEN_CPUS")

if [ "$NEEDS_REDIS" = 1 ]; then
  if command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    REDIS_PORT=$(free_port)
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
      --protected-mode no >"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    pin_pid "$REDIS_PID" "$REDIS_CPUS"
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

RC_PORTS=()
if [ "$NEEDS_RCLUSTER" = 1 ]; then
  if command -v "$REDIS_SERVER" >/dev/null 2>&1 && start_redis_cluster 3 "$WORK/redis-cluster"; then
    say "Redis Cluster on 127.0.0.1:${RC_PORTS[*]}"
    for pid in "${RC_PIDS[@]}"; do pin_pid "$pid" "$REDIS_CPUS"; done
  else
    say "no Redis Cluster: the setups on one are skipped"; RC_PORTS=()
  fi
fi

# Starts node $2 (0, 1) of server $1 (rusher|base|sockudo) on port $3:
# alone ($4 = local), clustered through Redis ($4 = redis) or a Redis
# Cluster ($4 = rcluster); pins it; sets NODE_PID, and NOT_CLUSTERED when
# the server cannot cluster that way.
start_node() {
  local server=$1 node=$2 port=$3 mode=$4 log="$OUT/$1-$4-node$2.log"
  case "$server" in
    rusher|base)
      local conf="$WORK/$server-$mode-$node.toml" bin="$ROOT/target/release/rusher"
      [ "$server" = base ] && bin=$BASE_BIN
      {
        if [ "$mode" != local ]; then echo 'adapter = "redis"'; fi
        rusher_server_toml "$port"
        if [ "$mode" = redis ]; then
          printf '\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "bench-%s"\n' "$REDIS_PORT" "$RUN_ID"
        elif [ "$mode" = rcluster ]; then
          printf '\n[redis]\nurl = "redis://127.0.0.1:%s"\ncluster = true\nprefix = "bench-%s"\n' "${RC_PORTS[0]}" "$RUN_ID"
        fi
        echo
        rusher_app_toml
      } >"$conf"
      "$bin" --config "$conf" >"$log" 2>&1 &
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
  if ! wait_http "$NODE_PID" "$server node $node" "$port" "$log"; then
    if [ "$mode" = rcluster ] && grep -q 'cluster' "$log"; then
      NOT_CLUSTERED="this rusher refuses \`cluster = true\` in [redis] (Redis Cluster support not in this build): $( (grep -m1 'unknown field `cluster`' "$log" || grep -m1 -i 'cluster' "$log") | cut -c1-200)"
    fi
    return 1
  fi
  pin_pid "$NODE_PID" "${NODE_CPUS[$node]}"
  # A sockudo built without its redis feature says so and runs alone.
  if [ "$server" = sockudo ] && [ "$mode" != local ] && grep -q 'not compiled in' "$log"; then
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
skip() {  # remembers (once) and says why setup $1 is skipped
  [[ " ${SKIPPED[*]+"${SKIPPED[*]}"} " == *" $1:"* ]] || SKIPPED+=("$1: $2")
  say "SKIPPING $1: $2"
}
ORDER=($SETUPS)
for round in $(seq 1 "$CLUSTER_ROUNDS"); do
  dir="$OUT/round-$round"; mkdir -p "$dir"
  # Every other round the other way round: no setup always goes first.
  setups=("${ORDER[@]}")
  if [ $((round % 2)) = 0 ]; then
    setups=(); for ((k = ${#ORDER[@]} - 1; k >= 0; k--)); do setups+=("${ORDER[$k]}"); done
  fi
  for setup in "${setups[@]}"; do
    server=${setup%-*}; nodes=$(setup_nodes "$setup"); mode=$(setup_mode "$setup")
    case "$server" in
      rusher) ;;
      base) [ -n "${BASE_BIN:-}" ] && [ -x "$BASE_BIN" ] || { skip "$setup" "BASE_BIN is not set to a rusher binary"; continue; } ;;
      sockudo)
        [ -n "$SOCKUDO" ] || { skip "$setup" "sockudo not installed"; continue; }
        [ "$mode" != rcluster ] || { skip "$setup" "this script runs sockudo on one Redis only"; continue; } ;;
      *) skip "$setup" "unknown server $server (rusher, base, sockudo)"; continue ;;
    esac
    if [ "$mode" = redis ] && [ -z "$REDIS_PORT" ]; then skip "$setup" "no redis-server"; continue; fi
    if [ "$mode" = rcluster ] && [ ${#RC_PORTS[@]} = 0 ]; then skip "$setup" "no Redis Cluster"; continue; fi
    RUN_ID="$setup-$$-$round"; NOT_CLUSTERED=""
    ports=(); pids=(); started=1; NODE_PID=""
    for node in $(seq 0 $((nodes - 1))); do
      port=$(free_port)
      if ! start_node "$server" "$node" "$port" "$mode"; then started=0; break; fi
      ports+=("$port"); pids+=("$NODE_PID")
    done
    if [ "$started" = 0 ]; then
      skip "$setup" "${NOT_CLUSTERED:-a node did not start (logs in $OUT)}"
      for p in "${pids[@]+"${pids[@]}"}" $NODE_PID; do stop_pid "$p"; done
      continue
    fi
    ports_csv=$(IFS=,; echo "${ports[*]}")
    say "== round $round: $setup on 127.0.0.1:$ports_csv"
    sleep 1  # let clustered nodes see each other (heartbeats)
    # Whose CPU time the generator reads: the nodes, and Redis when used.
    cpu_args=()
    for i in "${!pids[@]}"; do cpu_args+=(--cpu-pid "node$i=${pids[$i]}"); done
    case "$mode" in
      redis) cpu_args+=(--cpu-pid "redis=$REDIS_PID") ;;
      rcluster) for i in "${!RC_PIDS[@]}"; do cpu_args+=(--cpu-pid "redis$i=${RC_PIDS[$i]}"); done ;;
    esac
    for run in "${RUNS[@]}"; do
      label=${run%%|*}; args=${run#*|}
      if [ "$nodes" -gt 1 ]; then where="--ports $ports_csv"; else where="--port ${ports[0]}"; fi
      say "round $round, $setup: $label ($args $where)"
      # The nodes' socket writes over the run (perf's syscall counters, when
      # this machine lets us read them), for deliveries per write.
      perf_pid=""
      if [ "$PERF_WRITES" = 1 ]; then
        perf stat -x, -e "$WRITE_EVENTS" -p "$(IFS=,; echo "${pids[*]}")" \
          -o "$dir/$setup-$label.writes" >/dev/null 2>&1 &
        perf_pid=$!
      fi
      # shellcheck disable=SC2086
      "${GEN_PIN[@]+"${GEN_PIN[@]}"}" "$BENCH" $args $where --app-id "$APP_ID" --app-key "$APP_KEY" \
        --app-secret "$APP_SECRET" --server-pid "${pids[0]}" "${cpu_args[@]}" \
        --json "$dir/$setup-$label.json" >/dev/null 2>"$dir/$setup-$label.log"
      rc=$?
      if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null; fi
      show_problems "$dir/$setup-$label.log"
      [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $dir/$setup-$label.log"
      for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || say "$setup node $i died during $label (log $OUT/$server-$mode-node$i.log)"
      done
    done
    # Errors the nodes logged (warn level and above), for the report.
    for i in "${!pids[@]}"; do
      n=$(grep -ciE 'warn|error' "$OUT/$server-$mode-node$i.log" 2>/dev/null || true)
      [ "${n:-0}" -gt 0 ] && say "$setup node $i logged $n warning/error lines (see $OUT/$server-$mode-node$i.log)"
      cp "$OUT/$server-$mode-node$i.log" "$dir/" 2>/dev/null
    done
    for p in "${pids[@]}"; do stop_pid "$p"; done
  done
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)

SOCKUDO_VERSION="not installed"
[ -n "$SOCKUDO" ] && SOCKUDO_VERSION=$("$SOCKUDO" --version 2>/dev/null | head -1)
COMMIT=$(git_commit)
DIRTY=$(git_dirty)
REDIS_VERSION=$("$REDIS_SERVER" --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')
SKIPPED_TEXT=$(printf '%s\n' "${SKIPPED[@]+"${SKIPPED[@]}"}")

# Per setup and run, over the rounds: min / median / max of deliveries/s and
# of deliveries per CPU-second of the server processes, the median of the
# latter against one node of the same server (the target: two nodes >= 0.7x).
SUMMARY=$(python3 - "$OUT" "$CLUSTER_ROUNDS" "fixed" "${MAX_LABELS[@]}" -- $SETUPS <<'EOF'
import json, os, statistics, sys
args = sys.argv[1:]
out, rounds = args[0], int(args[1])
split = args.index("--")
labels, setups = args[2:split], args[split + 1:]
def load(r, setup, label):
    try:
        with open(os.path.join(out, f"round-{r}", f"{setup}-{label}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def metric(run, name):
    return next((m["value"] for m in run["metrics"] if m["name"] == name), None)
def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—", None
    med = statistics.median(values)
    f = lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return f"{f(min(values))} / **{f(med)}** / {f(max(values))}", med
def writes(r, setup, label):
    # Sum of the counters perf stat -x, wrote (value,unit,event,...), or None.
    try:
        with open(os.path.join(out, f"round-{r}", f"{setup}-{label}.writes")) as f:
            counts = [line.split(",")[0] for line in f if "syscalls:" in line]
        return sum(int(c) for c in counts if c.isdigit()) or None
    except OSError:
        return None
print("| run | setup | rounds | deliveries/s min / **median** / max | server CPU s (median) | deliveries per server CPU-second min / **median** / max | per CPU-s vs ×1 | deliveries per socket write (median) | redis CPU s (median) | generator CPU s (median) | lost |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
verdicts = []
for label in labels:
    rows = {}
    for setup in setups:
        runs = [load(r, setup, label) for r in range(1, rounds + 1)]
        runs = [run for run in runs if run]
        if not runs:
            continue
        rates, node_cpu, eff, redis_cpu, gen_cpu, lost = [], [], [], [], [], 0
        per_write = []
        for r in range(1, rounds + 1):
            run, w = load(r, setup, label), writes(r, setup, label)
            if run and w:
                per_write.append(run["details"]["deliveries"]["received"] / w)
        for run in runs:
            delivered = run["details"]["deliveries"]["received"]
            cpu = run["details"].get("cpu_seconds_publish_and_drain", {})
            procs = cpu.get("processes", {})
            nodes = [v for k, v in procs.items() if k.startswith("node") and v is not None]
            redis = [v for k, v in procs.items() if k.startswith("redis") and v is not None]
            rates.append(metric(run, "deliveries_per_s"))
            if nodes:
                node_cpu.append(sum(nodes))
                if sum(nodes) > 0:
                    eff.append(delivered / sum(nodes))
            if redis:
                redis_cpu.append(sum(redis))
            gen_cpu.append(cpu.get("generator"))
            lost += metric(run, "lost") or 0
        rows[setup] = (runs, rates, node_cpu, eff, redis_cpu, gen_cpu, lost, per_write)
    first = True
    for setup, (runs, rates, node_cpu, eff, redis_cpu, gen_cpu, lost, per_write) in rows.items():
        med = lambda xs: "—" if not [x for x in xs if x is not None] else f"{statistics.median([x for x in xs if x is not None]):.2f}"
        rate_text, _ = spread(rates)
        eff_text, eff_med = spread(eff)
        single_row = rows.get(setup.split("-")[0] + "-1")
        single = spread(single_row[3])[1] if single_row else None
        ratio = "—"
        if eff_med and single and not setup.endswith("-1"):
            ratio = f"{eff_med / single:.2f}×"
            if label != "fixed":
                verdicts.append(f"{setup}, {label}: {eff_med / single:.2f}× of one node's deliveries per CPU-second"
                                f" ({'PASS' if eff_med / single >= 0.7 else 'FAIL'}; target ≥ 0.70×)")
        p = runs[0]["params"]
        desc = (f"{p['subscribers']} subs, {p['rate']:g} ev/s" if p["rate"] > 0
                else f"{p['subscribers']} subs, max rate (window {p['window']})")
        bad = sum(1 for run in runs if not run["ok"])
        print(f"| {desc if first else ''} | {setup} | {len(runs)}{f' ({bad} ⚠)' if bad else ''} | {rate_text}"
              f" | {med(node_cpu)} | {eff_text} | {ratio} | {med(per_write)} | {med(redis_cpu)} | {med(gen_cpu)} | {lost:g} |")
        first = False
if verdicts:
    print()
    print("\n".join(f"- {v}" for v in verdicts))
EOF
)
TABLE=$(SKIPPED_TEXT="$SKIPPED_TEXT" python3 - "$OUT/round-$CLUSTER_ROUNDS" "${MAX_LABELS[@]}" <<'EOF'
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
  echo "Pinning: ${LAYOUT}."
  echo
  echo "## Over ${CLUSTER_ROUNDS} round(s), setups alternating"
  echo
  echo "Server CPU = utime + stime of the node(s) (rusher or sockudo) from the first measured publish to the end of"
  echo "the drain (/proc/PID/stat, 10 ms ticks); redis = the redis-server(s) over the same span."
  echo "Deliveries per server CPU-second = deliveries ÷ server CPU; \"vs ×1\" = its median against one node's."
  echo "Deliveries per socket write = deliveries ÷ the nodes' write/writev/sendto/sendmsg syscalls over the whole"
  echo "generator run (perf stat; connection set-up included: about 2 writes per subscriber); — when perf cannot count."
  echo
  echo "$SUMMARY"
  echo
  echo "## Round ${CLUSTER_ROUNDS} in detail"
  echo
  echo "$TABLE"
} >"$OUT/cluster.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/cluster.md" "$ROOT/bench/results/cluster.md"
cat "$OUT/cluster.md"
say "table written to bench/results/cluster.md; JSON results and logs in $OUT"
