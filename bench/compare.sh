#!/usr/bin/env bash
# Compare rusher with sockudo and with the bare broadcast server (the limit).
#
# Builds rusher and the bench in release, starts each server in turn on a
# free 127.0.0.1 port with the same app (app-id / app-key / app-secret) and
# raised limits, runs the same scenarios against each, and prints one
# markdown table (absolute figures, rusher/sockudo, rusher/bare), also
# written to bench/results/latest.md. Runs ROUNDS rounds (3 by default); in
# each, every server runs every scenario, so a burst of load from elsewhere
# hits one round of each server rather than all of one. The table shows the
# median of the rounds with min–max, and the ratios are of the medians.
# Takes about 6 minutes per round with the default sizes on a 2-core
# machine (not counting builds).
#
# Pinning (BENCH_PIN=1, the default, when the machine has 2+ cores and
# taskset works): each server starts on SERVER_CPUS and the generator on
# GEN_CPUS (by default the first and the second half of the cores; on 2
# cores cpu 0 and cpu 1), so the generator never takes the server's core;
# servers size their thread pools to what they are given. BENCH_PIN=0
# leaves scheduling to the kernel (both share every core).
#
# Usage: bench/compare.sh [--quick] [--servers "rusher sockudo bare"] [--skip-build] [--out DIR]
#   --quick       tiny sizes: checks that everything runs, figures mean little
#   --servers     which servers to run (the table always has all three columns)
#   --skip-build  use the binaries already in target/release
#   --out DIR     where the JSON results and logs go (default: a temp dir)
#
# Bigger runs: set any of these (defaults in brackets)
#   CONNECT_N [10000]            idle connections of `connect`
#   FANOUT_SIZES ["1000 5000 10000"]  subscribers of the fixed-rate fan-outs
#   FANOUT_DELIVERIES [100000]   deliveries/s of each fixed-rate fan-out (rate = this / subscribers)
#   FANOUT_SECS [10]             length of each fixed-rate fan-out
#   FANOUT_MAX_SUBS [10000]      subscribers of the max-rate fan-outs
#   FANOUT_MAX_RUNS ["4:300 32:800"]  max-rate fan-outs, as WINDOW:EVENTS pairs. The
#                                window is how many events may be not yet fully delivered:
#                                with 4 the run is bound by each event's round trip (a
#                                latency test under load); with 32 every server is saturated,
#                                which is what "max rate" means (see bench/README.md)
#   PAYLOAD [100]                bytes of event data
#   CHANNELS_N [5000]            connections (one channel each) of `channels`
#   CHANNELS_RATE [1000]         triggers/s of `channels`, 10 channels each
#   CHANNELS_SECS [10]
#   PUBLISH_CLIENTS [16]         concurrent HTTP clients of `publish`
#   PUBLISH_SECS [10]
#   PRESENCE_CHANNELS [10] PRESENCE_OBSERVERS [20] PRESENCE_CHURNERS [5]
#   PRESENCE_JOINS [20000] PRESENCE_SECS [10]
#   SOCKUDO_BIN                  sockudo binary to use (else $SOCKUDO_ROOT/bin/sockudo, else PATH)
#   RUSHER_BIN [target/release/rusher]  the rusher binary (e.g. an older build, for a before/after table)
#   ROUNDS [3; 1 with --quick]   rounds of every scenario on every server
#   BENCH_PIN [1] SERVER_CPUS GEN_CPUS   pinning (see above)
#   SOCKUDO_ROOT [~/.cache/rusher-bench/sockudo]  where `cargo install sockudo` puts it when missing
#   INSTALL_SOCKUDO [1]          0 = never build sockudo, skip it when missing
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=compare
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SERVERS="rusher sockudo bare"
parse_compare_args --servers SERVERS "$@"

if [ "$QUICK" = 1 ]; then
  : "${CONNECT_N:=1000}" "${FANOUT_SIZES:=100 500}" "${FANOUT_DELIVERIES:=10000}" "${FANOUT_SECS:=2}"
  : "${FANOUT_MAX_SUBS:=1000}" "${FANOUT_MAX_RUNS:=4:100 32:200}" "${CHANNELS_N:=500}" "${CHANNELS_RATE:=200}"
  : "${CHANNELS_SECS:=2}" "${PUBLISH_SECS:=2}" "${PRESENCE_JOINS:=2000}" "${PRESENCE_SECS:=2}"
fi
: "${CONNECT_N:=10000}" "${FANOUT_SIZES:=1000 5000 10000}" "${FANOUT_DELIVERIES:=100000}" "${FANOUT_SECS:=10}"
: "${FANOUT_MAX_SUBS:=10000}" "${FANOUT_MAX_RUNS:=4:300 32:800}" "${PAYLOAD:=100}"
: "${CHANNELS_N:=5000}" "${CHANNELS_RATE:=1000}" "${CHANNELS_SECS:=10}"
: "${PUBLISH_CLIENTS:=16}" "${PUBLISH_SECS:=10}"
: "${PRESENCE_CHANNELS:=10}" "${PRESENCE_OBSERVERS:=20}" "${PRESENCE_CHURNERS:=5}"
: "${PRESENCE_JOINS:=20000}" "${PRESENCE_SECS:=10}"
: "${SOCKUDO_ROOT:=${XDG_CACHE_HOME:-$HOME/.cache}/rusher-bench/sockudo}" "${INSTALL_SOCKUDO:=1}"
if [ "$QUICK" = 1 ]; then : "${ROUNDS:=1}"; fi
: "${ROUNDS:=3}" "${BENCH_PIN:=1}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-compare

# Both the generator and the servers need a file descriptor per connection.
NEED=$((CONNECT_N + CHANNELS_N + 1000))
raise_nofile
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED" ]; then
  say "warning: open-file limit is $(ulimit -n), below the ~$NEED this run needs; raise the hard limit (ulimit -Hn) as root"
fi

build_release

# --- sockudo: find it, or build it, or skip it -------------------------------
SOCKUDO=""
if [[ " $SERVERS " == *" sockudo "* ]]; then
  if find_sockudo "$SOCKUDO_ROOT"; then :
  elif [ "$INSTALL_SOCKUDO" = 1 ] && command -v protoc >/dev/null 2>&1; then
    say "sockudo not found: building it with cargo install (this takes a long time; log $OUT/sockudo-install.log)"
    if nice -n 10 cargo install --locked sockudo --root "$SOCKUDO_ROOT" >"$OUT/sockudo-install.log" 2>&1; then
      SOCKUDO="$SOCKUDO_ROOT/bin/sockudo"
    else
      say "SKIPPING sockudo: cargo install sockudo failed (see $OUT/sockudo-install.log)"
    fi
  elif [ "$INSTALL_SOCKUDO" = 1 ]; then
    say "SKIPPING sockudo: not installed, and building it needs protoc (apt-get install protobuf-compiler)"
  else
    say "SKIPPING sockudo: not installed and INSTALL_SOCKUDO=0"
  fi
fi

# --- pinning -----------------------------------------------------------------
CORES=$(nproc)
SERVER_PIN=() GEN_PIN=()
if [ "$BENCH_PIN" = 1 ] && [ "$CORES" -ge 2 ] && taskset -c 0 true 2>/dev/null; then
  half=$((CORES / 2))
  : "${SERVER_CPUS:=0-$((half - 1))}" "${GEN_CPUS:=$half-$((CORES - 1))}"
  SERVER_PIN=(taskset -c "$SERVER_CPUS") GEN_PIN=(taskset -c "$GEN_CPUS")
  LAYOUT="servers on cpus $SERVER_CPUS, generator on cpus $GEN_CPUS (taskset; $CORES cores)"
else
  LAYOUT="nothing pinned: generator and server share all $CORES cores (BENCH_PIN=$BENCH_PIN)"
fi
say "layout: $LAYOUT"

# Starts server $1 on port $2 (pinned to SERVER_CPUS); sets SERVER_PID.
# Logs to $OUT/$1-server.log (appended: each round starts it again).
start_server() {
  local name=$1 port=$2 log="$OUT/$1-server.log"
  case "$name" in
    rusher)
      {
        echo "# The bench's rusher config: one app, limits raised (as for sockudo and bare)."
        rusher_server_toml "$port"
        echo
        rusher_app_toml
      } >"$WORK/rusher.toml"
      "${SERVER_PIN[@]}" "${RUSHER_BIN:-$ROOT/target/release/rusher}" --config "$WORK/rusher.toml" >>"$log" 2>&1 &
      SERVER_PID=$! ;;
    sockudo)
      # In-memory drivers only (sockudo_exec: environment only, limits raised).
      mkdir -p "$WORK/sockudo"
      (
        # The subshell pins itself, then becomes sockudo (`$!` is sockudo).
        [ ${#SERVER_PIN[@]} = 0 ] || taskset -cp "$SERVER_CPUS" "$BASHPID" >/dev/null
        sockudo_exec "$WORK/sockudo" "$port" \
          ADAPTER_DRIVER=local APP_MANAGER_DRIVER=memory CACHE_DRIVER=memory QUEUE_DRIVER=memory
      ) >>"$log" 2>&1 &
      SERVER_PID=$! ;;
    bare)
      "${SERVER_PIN[@]}" "$ROOT/target/release/bare-server" --host 127.0.0.1 --port "$port" >>"$log" 2>&1 &
      SERVER_PID=$! ;;
  esac
  wait_http "$SERVER_PID" "$name" "$port" "$log"
}

# The runs, in order: label, then the generator's arguments.
RUNS=()
RUNS+=("connect-$CONNECT_N|connect --connections $CONNECT_N --settle 3")
for n in $FANOUT_SIZES; do
  rate=$(python3 -c "print(max(1, $FANOUT_DELIVERIES / $n))")
  events=$(python3 -c "print(int(max(1, $FANOUT_DELIVERIES / $n) * $FANOUT_SECS))")
  RUNS+=("fanout-$n|fanout --subscribers $n --rate $rate --events $events --duration $((FANOUT_SECS * 3)) --payload $PAYLOAD")
done
for run in $FANOUT_MAX_RUNS; do
  window=${run%%:*} events=${run#*:}
  RUNS+=("fanout-$FANOUT_MAX_SUBS-max-w$window|fanout --subscribers $FANOUT_MAX_SUBS --rate 0 --window $window --events $events --duration 120 --payload $PAYLOAD")
done
RUNS+=("channels-$CHANNELS_N|channels --connections $CHANNELS_N --channels-per-event 10 --rate $CHANNELS_RATE --events $((CHANNELS_RATE * CHANNELS_SECS)) --duration $((CHANNELS_SECS * 3)) --payload $PAYLOAD")
RUNS+=("publish|publish --clients $PUBLISH_CLIENTS --duration $PUBLISH_SECS --events 100000000 --subscribers 1 --payload $PAYLOAD")
RUNS+=("presence|presence --channels $PRESENCE_CHANNELS --observers $PRESENCE_OBSERVERS --churners $PRESENCE_CHURNERS --joins $PRESENCE_JOINS --duration $PRESENCE_SECS")

LABELS=()
for run in "${RUNS[@]}"; do LABELS+=("${run%%|*}"); done

# The machine may be shared: other work skews every figure. Say so.
LOAD_BEFORE=$(load_average)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l > 0.5) }' 2>/dev/null; then
  say "warning: load average is $LOAD_BEFORE before the runs; other work on this machine will skew the figures"
fi
STARTED=$(date +%s)
LOADS=()
for round in $(seq 1 "$ROUNDS"); do
  for server in $SERVERS; do
    if [ "$server" = sockudo ] && [ -z "$SOCKUDO" ]; then continue; fi
    port=$(free_port)
    say "== round $round/$ROUNDS: $server on 127.0.0.1:$port (load average $(load_average))"
    if ! start_server "$server" "$port"; then say "SKIPPING $server: it did not start"; continue; fi
    pid=$SERVER_PID
    for run in "${RUNS[@]}"; do
      label=${run%%|*}; args=${run#*|}
      result="$OUT/$server-$label-r$round"
      say "$server: $label ($args)"
      # shellcheck disable=SC2086
      "${GEN_PIN[@]}" "$BENCH" $args --port "$port" --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET" \
        --server-pid "$pid" --json "$result.json" >/dev/null 2>"$result.log"
      rc=$?
      show_problems "$result.log"
      [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $result.log"
      if ! kill -0 "$pid" 2>/dev/null; then
        say "$server died during $label; last lines of its log:"; tail -5 "$OUT/$server-server.log" >&2
        start_server "$server" "$port" || break
        pid=$SERVER_PID
      fi
    done
    stop_pid "$pid"
  done
  LOADS+=("round $round: $(load_average)")
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)

labels_csv=$(IFS=,; echo "${LABELS[*]}")
TABLE=$("$BENCH" table --dir "$OUT" --servers rusher,sockudo,bare --labels "$labels_csv")
SOCKUDO_VERSION="not run"
[ -n "$SOCKUDO" ] && SOCKUDO_VERSION=$("$SOCKUDO" --version 2>/dev/null | head -1)
COMMIT=$(git_commit)
DIRTY=$(git_dirty)
# Another binary than this checkout's build: the table says which.
[ -z "${RUSHER_BIN:-}" ] || { COMMIT="$RUSHER_BIN"; DIRTY=""; }
{
  echo "# rusher vs sockudo vs bare"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher ${COMMIT}${DIRTY}, sockudo: ${SOCKUDO_VERSION}; $(nproc) cores, $(uname -sr)."
  echo "Everything on 127.0.0.1; $LAYOUT. $ROUNDS round(s): each cell is the"
  echo "median, with (min–max) over the rounds; ratios are of the medians. Runs took ${ELAPSED}s;"
  echo "load average before: ${LOAD_BEFORE}; after each round: $(IFS=';'; echo "${LOADS[*]}")"
  echo "(the generator and the server alone make about 2: well above that, other work skewed the figures)."
  echo "Raw results: $OUT"
  echo
  echo "$TABLE"
} >"$OUT/table.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/table.md" "$ROOT/bench/results/latest.md"
cat "$OUT/table.md"
say "table written to bench/results/latest.md; JSON results and logs in $OUT"
