#!/usr/bin/env bash
# What issue 17's hardening costs: the same scenarios against an earlier
# rusher binary (BASE_BIN, e.g. one built from the commit before the
# hardening), the current one with default options (the always-on parts:
# the half-open gate, the next-head watch, the frame-header guard, the
# subscribe rate), and the current one with the opt-in features on
# (subscription counting, a per-IP and per-app connection rate high enough
# never to refuse). The three alternate, HARD_ROUNDS times (the machine is
# shared); one table per round, written to bench/results/hardening.md.
#
# Usage: BASE_BIN=/path/to/old/rusher bench/compare-hardening.sh [--skip-build] [--out DIR]
#   HARD_ROUNDS [2]  CONNECT_N [5000]  PUBLISH_SECS [5]  FANOUT_SUBS [5000]
#   PRESENCE_JOINS [10000]
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=hardening
APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
SERVERS="head base features"
parse_compare_args --servers SERVERS "$@"
: "${BASE_BIN:?set BASE_BIN to an earlier rusher binary}"
: "${HARD_ROUNDS:=2}" "${CONNECT_N:=5000}" "${PUBLISH_SECS:=5}" "${FANOUT_SUBS:=5000}" "${PRESENCE_JOINS:=10000}"
build_release
init_out compare-hardening
raise_nofile
trap stop_all_pids EXIT

RUNS=(
  "connect-$CONNECT_N|connect --connections $CONNECT_N --settle 2"
  "fanout-$FANOUT_SUBS-max-w4|fanout --subscribers $FANOUT_SUBS --rate 0 --window 4 --events 300 --duration 60 --payload 100"
  "publish|publish --clients 16 --duration $PUBLISH_SECS --events 100000000 --subscribers 1 --payload 100"
  "presence|presence --channels 10 --observers 20 --churners 5 --joins $PRESENCE_JOINS --duration 10"
)
LABELS=()
for run in "${RUNS[@]}"; do LABELS+=("${run%%|*}"); done

start_one() {
  local name=$1 port=$2 dir=$3 bin="$ROOT/target/release/rusher"
  {
    rusher_server_toml "$port"
    if [ "$name" = features ]; then
      printf '\n[limits]\nconnection_rate_per_ip = 1000000\nconnection_burst_per_ip = 1000000\n'
    fi
    echo
    rusher_app_toml
    if [ "$name" = features ]; then
      printf 'subscription_count = true\nconnection_rate = 1000000\nconnection_burst = 1000000\n'
    fi
  } >"$WORK/$name.toml"
  [ "$name" = base ] && bin=$BASE_BIN
  "$bin" --config "$WORK/$name.toml" >"$dir/$name-server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_http "$SERVER_PID" "$name" "$port" "$dir/$name-server.log"
}

LOAD_BEFORE=$(load_average)
{
  echo "# Cost of issue 17's hardening"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher $(git_commit)$(git_dirty) (head, features) vs BASE_BIN $BASE_BIN (base); $(nproc) cores; load average before: $LOAD_BEFORE."
  echo "features = head with subscription_count on and connection_rate(_per_ip) set high enough never to refuse. Ratios are head/base and head/features."
} >"$OUT/hardening.md"
for round in $(seq 1 "$HARD_ROUNDS"); do
  dir="$OUT/round-$round"; mkdir -p "$dir"
  for server in $SERVERS; do
    port=$(free_port)
    say "round $round: $server on 127.0.0.1:$port"
    start_one "$server" "$port" "$dir" || continue
    for run in "${RUNS[@]}"; do
      label=${run%%|*}; args=${run#*|}
      # shellcheck disable=SC2086
      "$BENCH" $args --port "$port" --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET" \
        --server-pid "$SERVER_PID" --json "$dir/$server-$label.json" >/dev/null 2>"$dir/$server-$label.log"
      show_problems "$dir/$server-$label.log"
    done
    stop_pid "$SERVER_PID"
  done
  labels_csv=$(IFS=,; echo "${LABELS[*]}")
  { echo; echo "## Round $round"; echo
    "$BENCH" table --dir "$dir" --servers head,base,features --labels "$labels_csv"; } >>"$OUT/hardening.md"
done
echo >>"$OUT/hardening.md"
echo "Load average after: $(load_average). Raw results: $OUT" >>"$OUT/hardening.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/hardening.md" "$ROOT/bench/results/hardening.md"
cat "$OUT/hardening.md"
