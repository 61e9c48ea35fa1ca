#!/usr/bin/env bash
# Persistence on vs off: the same rusher runs with the published channel
# followed by K users (signed POST /apps/{id}/subscribe before publishing, so
# every event is also sequenced, stored and forwarded to K personal-{user}
# channels) and with no followers, with the memory store and, when a
# MongoDB-compatible server is at hand (jongodb from protocol-tests'
# node_modules, or MONGODB_URL), with the MongoDB store.
#
# For each store: a fresh rusher (and jongodb), then for each run first the
# run without followers, then with, each on its own channel. Prints a
# markdown table with the on/off ratios and the target (persistence must not
# cut live delivery throughput by more than 20 %), also written to
# bench/results/persistence.md. About 3 minutes with the default sizes.
#
# Usage: bench/compare-persistence.sh [--quick] [--stores "memory mongodb"] [--skip-build] [--out DIR]
#
# Sizes (defaults in brackets)
#   FOLLOWERS [10]                 users following the channel in the "on" runs
#   PERS_SUBS [2000]               subscribers of the fixed-rate fan-out
#   PERS_DELIVERIES [100000]       its deliveries/s (rate = this / subscribers)
#   PERS_SECS [10]                 its length, and the length of the publish run
#   PERS_MAX_SUBS [5000] PERS_MAX_EVENTS [300] PERS_WINDOW [4]   the max-rate fan-out
#   PUBLISH_CLIENTS [16]           HTTP clients of the publish run (1 subscriber)
#   PAYLOAD [100]
#   JONGODB [protocol-tests/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb]
#   MONGODB_URL                    use this MongoDB instead of starting jongodb
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=persistence
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
STORES="memory mongodb"
parse_compare_args --stores STORES "$@"
if [ "$QUICK" = 1 ]; then
  : "${PERS_SUBS:=200}" "${PERS_DELIVERIES:=10000}" "${PERS_SECS:=2}" "${PERS_MAX_SUBS:=200}" "${PERS_MAX_EVENTS:=50}"
fi
: "${FOLLOWERS:=10}" "${PERS_SUBS:=2000}" "${PERS_DELIVERIES:=100000}" "${PERS_SECS:=10}"
: "${PERS_MAX_SUBS:=5000}" "${PERS_MAX_EVENTS:=300}" "${PERS_WINDOW:=4}" "${PUBLISH_CLIENTS:=16}" "${PAYLOAD:=100}"
: "${JONGODB:=$ROOT/protocol-tests/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-persistence
raise_nofile

build_release

trap stop_all_pids EXIT

# The counters of rusher's /metrics this script reports, as JSON.
scrape() {
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | python3 -c '
import json, sys
want = ["rusher_store_dropped_total", "rusher_store_errors_total", "rusher_slow_client_disconnects_total",
        "rusher_events_published_total", "rusher_frames_sent_total"]
got = {}
for line in sys.stdin:
    parts = line.split()
    if len(parts) >= 2 and parts[0].split("{")[0] in want:
        name = parts[0].split("{")[0]
        got[name] = got.get(name, 0) + float(parts[1])
print(json.dumps(got))'
}

# Starts rusher with store $1 on port $2; sets SERVER_PID.
start_rusher() {
  local store=$1 port=$2 log="$OUT/rusher-$1.log" conf="$WORK/rusher-$1.toml"
  {
    rusher_server_toml "$port"
    cat <<EOF

[store]
backend = "$store"
EOF
    if [ "$store" = mongodb ]; then
      printf 'url = "%s"\ndatabase = "rusher_bench_%s"\n' "$MONGO_URL" "$$"
    fi
    echo
    rusher_app_toml
  } >"$conf"
  "$ROOT/target/release/rusher" --config "$conf" >"$log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_http "$SERVER_PID" "rusher ($store)" "$port" "$log"
}

# Starts jongodb (or takes MONGODB_URL); sets MONGO_URL, or returns 1.
MONGO_URL=""
MONGO_NOTE=""
start_mongo() {
  if [ -n "${MONGODB_URL:-}" ]; then MONGO_URL=$MONGODB_URL; MONGO_NOTE="MongoDB at $MONGODB_URL"; return 0; fi
  if [ ! -x "$JONGODB" ]; then MONGO_NOTE="no jongodb at $JONGODB and no MONGODB_URL"; return 1; fi
  local port i
  port=$(free_port)
  "$JONGODB" --host=127.0.0.1 --port="$port" >"$OUT/jongodb.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then MONGO_NOTE="jongodb exited at start (see $OUT/jongodb.log)"; return 1; fi
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.5).close()" 2>/dev/null; then
      MONGO_URL="mongodb://127.0.0.1:$port"; MONGO_NOTE="jongodb ($(basename "$(dirname "$(dirname "$JONGODB")")")) on port $port"; return 0
    fi
    sleep 0.1
  done
  MONGO_NOTE="jongodb did not listen within 30 s"; return 1
}

rate=$(python3 -c "print(max(1, $PERS_DELIVERIES / $PERS_SUBS))")
events=$(python3 -c "print(int(max(1, $PERS_DELIVERIES / $PERS_SUBS) * $PERS_SECS))")
RUNS=()
RUNS+=("fanout-fixed|fanout --subscribers $PERS_SUBS --rate $rate --events $events --duration $((PERS_SECS * 3)) --payload $PAYLOAD")
RUNS+=("fanout-max|fanout --subscribers $PERS_MAX_SUBS --rate 0 --window $PERS_WINDOW --events $PERS_MAX_EVENTS --duration 60 --payload $PAYLOAD")
RUNS+=("publish|publish --clients $PUBLISH_CLIENTS --duration $PERS_SECS --events 100000000 --subscribers 1 --payload $PAYLOAD")

LOAD_BEFORE=$(load_average)
STARTED=$(date +%s)
SKIPPED=()
for store in $STORES; do
  if [ "$store" = mongodb ] && ! start_mongo; then
    SKIPPED+=("mongodb: $MONGO_NOTE"); say "SKIPPING the MongoDB store: $MONGO_NOTE"; continue
  fi
  port=$(free_port)
  if ! start_rusher "$store" "$port"; then SKIPPED+=("$store: rusher did not start"); continue; fi
  pid=$SERVER_PID
  say "== rusher, $store store, on 127.0.0.1:$port"
  for run in "${RUNS[@]}"; do
    label=${run%%|*}; args=${run#*|}
    for side in off on; do
      followers=0; [ "$side" = on ] && followers=$FOLLOWERS
      name="$store-$label-$side"
      say "$store: $label, $followers followers ($args)"
      scrape "$port" >"$OUT/$name.before.json"
      # shellcheck disable=SC2086
      "$BENCH" $args --channel "bench-persist-$label-$side" --followers "$followers" --port "$port" \
        --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET" \
        --server-pid "$pid" --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.log"
      rc=$?
      sleep 0.5  # the store writer catches up before the counters are read
      scrape "$port" >"$OUT/$name.after.json"
      show_problems "$OUT/$name.log"
      [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $OUT/$name.log"
      if ! kill -0 "$pid" 2>/dev/null; then
        say "rusher died during $name; last lines of its log:"; tail -5 "$OUT/rusher-$store.log" >&2; break 2
      fi
    done
  done
  n=$(grep -ciE 'warn|error' "$OUT/rusher-$store.log" 2>/dev/null || true)
  [ "${n:-0}" -gt 0 ] && say "rusher ($store) logged $n warning/error lines (see $OUT/rusher-$store.log)"
  stop_pid "$pid"
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)

COMMIT=$(git_commit)
DIRTY=$(git_dirty)
SKIPPED_TEXT=$(printf '%s\n' "${SKIPPED[@]+"${SKIPPED[@]}"}")
TABLE=$(SKIPPED_TEXT="$SKIPPED_TEXT" FOLLOWERS="$FOLLOWERS" python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
k = os.environ["FOLLOWERS"]
stores = ["memory", "mongodb"]
def load(name, suffix=".json"):
    try:
        with open(os.path.join(out, name + suffix)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def metric(run, name):
    if not run: return None
    for m in run["metrics"]:
        if m["name"] == name: return m["value"]
    return None
def counter(name, key):
    a, b = load(name, ".before.json"), load(name, ".after.json")
    if a is None or b is None: return None
    return b.get(key, 0) - a.get(key, 0)
def num(v):
    if v is None: return "—"
    if v == 0: return "0"
    if abs(v) >= 1000: return f"{v:.0f}"
    if abs(v) >= 10: return f"{v:.1f}"
    return f"{v:.3f}"
def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b
def rtext(r):
    return "—" if r is None else f"{r:.2f}×"
rows = {
    "fanout-fixed": ["deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "publish_per_s", "lost", "dropped_connections"],
    "fanout-max": ["deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "publish_per_s", "lost", "dropped_connections"],
    "publish": ["publish_per_s", "request_p50_ms", "request_p99_ms", "deliveries_per_s", "lost", "dropped_connections"],
}
counters = [("stored_for_follower_0", None), ("rusher_store_dropped_total", "store_dropped (server)"),
            ("rusher_store_errors_total", "store_errors (server)")]
header = "| run | metric |"
for s in stores:
    header += f" {s}: off | {s}: {k} followers | on/off |"
print(header)
print("|---|---|" + "---|---|---|" * len(stores))
notes, checks = [], []
for label, metrics in rows.items():
    runs = {(s, side): load(f"{s}-{label}-{side}") for s in stores for side in ("off", "on")}
    ref = next((r for r in runs.values() if r), None)
    if not ref:
        continue
    p = ref["params"]
    if label == "publish":
        desc = f"publish: {p['publishers']} HTTP clients, {p['subscribers']} subs"
    elif p["rate"] > 0:
        desc = f"fanout: {p['subscribers']} subs, {p['rate']:g} ev/s"
    else:
        desc = f"fanout: {p['subscribers']} subs, max rate (window {p['window']})"
    for (s, side), r in runs.items():
        if r and not r["ok"]:
            notes.append(f"- {s} {side}, {desc}: " + "; ".join(r["problems"]))
    lines = []
    for name in metrics:
        cells = []
        for s in stores:
            off, on = metric(runs[(s, "off")], name), metric(runs[(s, "on")], name)
            flag = lambda r: " ⚠" if r and not r["ok"] else ""
            cells += [num(off) + flag(runs[(s, "off")]), num(on) + flag(runs[(s, "on")]), rtext(ratio(on, off))]
            headline = "publish_per_s" if label == "publish" else "deliveries_per_s"
            if name == headline and ratio(on, off) is not None:
                r = ratio(on, off)
                checks.append(f"- {s} store, {desc}: {name} with {k} followers / without = {r:.2f}× "
                              + ("PASS" if r >= 0.8 else "FAIL") + " (target ≥ 0.80×)")
        lines.append((name, cells))
    for name, key in counters:
        cells = []
        for s in stores:
            vals = []
            for side in ("off", "on"):
                n = f"{s}-{label}-{side}"
                if key is None:
                    r = runs[(s, side)]
                    v = r["details"]["persistence"].get("stored_for_first_follower") if r else None
                    if v is not None:
                        v = f"{v}/{r['details']['persistence'].get('stored_expected')}"
                    vals.append(v if v is not None else "—")
                else:
                    v = counter(n, name)
                    vals.append(num(v))
                    if v:
                        notes.append(f"- {s} {side}, {desc}: {name} rose by {v:.0f} during the run")
            cells += vals + [""]
        lines.append((key or name, cells))
    for i, (name, cells) in enumerate(lines):
        print(f"| {desc if i == 0 else ''} | {name} | " + " | ".join(cells) + " |")
print(f"\nTarget: persistence must not cut live delivery throughput by more than 20 % ({k} followers vs none):")
print("\n".join(checks) if checks else "- no pair of runs to compare")
if notes:
    print("\n⚠ = the run was not clean:")
    print("\n".join(notes))
skipped = [l for l in os.environ.get("SKIPPED_TEXT", "").splitlines() if l.strip()]
if skipped:
    print("\nSkipped: " + "; ".join(skipped))
print("\nstored_for_follower_0 = messages the first follower (`{channel}-follower-0`) has kept (GET /apps/{id}/users/{user}/messages?limit=1000)"
      " / what it should have (published events incl. warm-up, at most 1000); store_dropped / store_errors ="
      " increase of rusher_store_dropped_total / rusher_store_errors_total during the run (messages not stored"
      " because the write queue was full / failed store operations).")
EOF
)
{
  echo "# Persistence on vs off (rusher)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher ${COMMIT}${DIRTY}; $(nproc) cores, $(uname -sr)."
  echo "\"on\": the published channel is followed by $FOLLOWERS users (POST /apps/{id}/subscribe before publishing;"
  echo "nobody connected to their personal channels), so each event is also sequenced, queued for the store and"
  echo "forwarded to $FOLLOWERS personal channels. \"off\": no followers. MongoDB store: ${MONGO_NOTE:-not run}."
  echo "Generator and server share the machine; everything on 127.0.0.1. Runs took ${ELAPSED}s;"
  echo "load average before: ${LOAD_BEFORE}, after: ${LOAD_AFTER}. Raw results: $OUT"
  echo
  echo "$TABLE"
} >"$OUT/persistence.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/persistence.md" "$ROOT/bench/results/persistence.md"
cat "$OUT/persistence.md"
say "table written to bench/results/persistence.md; JSON results and logs in $OUT"
