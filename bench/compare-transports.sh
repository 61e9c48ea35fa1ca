#!/usr/bin/env bash
# rusher's transports side by side: WebSocket vs pusher-js's HTTP fallbacks
# (xhr_streaming, xhr_polling) vs Server-Sent Events, all on one rusher in one
# run. Prints a markdown table, also written to bench/results/transports.md.
#
# 1. Fan-out (one server): TRANS_SUBS subscribers on one channel over each
#    transport, a fixed-rate run (TRANS_DELIVERIES deliveries/s for TRANS_SECS)
#    and a max-rate run (window TRANS_WINDOW, TRANS_MAX_EVENTS events), each
#    TRANS_ROUNDS times with the transports alternating (a shared machine is
#    noisy): medians of deliveries/s, latency p50/p99 and CPU per delivery,
#    and their ratios to ws.
# 2. Idle sessions (a fresh server per transport, so RSS is the sessions'
#    alone): `connect` with CONNECT_N sessions, each subscribed to one of 100
#    channels: RSS per idle session, ratio to ws.
# 3. Long polling at scale: POLL_N xhr_polling sessions opened and held
#    open together for POLL_HOLD s on a fresh server (each re-polls at once
#    when a poll is answered): failures, sessions the server closed, the
#    peak of rusher_transport_sessions{transport="xhr_polling"} and RSS.
#
# SSE (`GET /apps/{id}/events/stream`) is run only when the server has it:
# a 404 there skips its rows with a note.
#
# Usage: bench/compare-transports.sh [--quick] [--skip-build] [--out DIR] [--transports "ws xhr_streaming xhr_polling sse"]
#
# Sizes (defaults in brackets)
#   TRANS_SUBS [1000] TRANS_DELIVERIES [20000] TRANS_SECS [5]   fixed-rate fan-out
#   TRANS_WINDOW [32] TRANS_MAX_EVENTS [1000]                   max-rate fan-out
#   TRANS_ROUNDS [3]   rounds of both fan-outs
#   CONNECT_N [2000]   idle sessions per transport
#   POLL_N [1000] POLL_HOLD [5]   long-polling sessions held open, seconds held
#   PAYLOAD [100]
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_TAG=transports
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
TRANSPORTS="ws xhr_streaming xhr_polling sse"
parse_compare_args --transports TRANSPORTS "$@"
if [ "$QUICK" = 1 ]; then
  : "${TRANS_SUBS:=100}" "${TRANS_DELIVERIES:=2000}" "${TRANS_SECS:=2}" "${TRANS_MAX_EVENTS:=50}" "${TRANS_ROUNDS:=1}"
  : "${CONNECT_N:=200}" "${POLL_N:=200}" "${POLL_HOLD:=1}"
fi
: "${TRANS_SUBS:=1000}" "${TRANS_DELIVERIES:=20000}" "${TRANS_SECS:=5}"
: "${TRANS_WINDOW:=32}" "${TRANS_MAX_EVENTS:=1000}" "${TRANS_ROUNDS:=3}"
: "${CONNECT_N:=2000}" "${POLL_N:=1000}" "${POLL_HOLD:=5}" "${PAYLOAD:=100}"

APP_ID=app-id APP_KEY=app-key APP_SECRET=app-secret
init_out rusher-transports
raise_nofile
build_release
trap stop_all_pids EXIT

# Room for every session the runs open (default max_sessions is 10000; the
# default activity_timeout, 120 s, is kept: long polls wait 30 s).
most=$(( TRANS_SUBS > CONNECT_N ? TRANS_SUBS : CONNECT_N ))
most=$(( most > POLL_N ? most : POLL_N ))
MAX_SESSIONS=$(( most * 2 > 10000 ? most * 2 : 10000 ))

# Starts a fresh rusher; sets PORT and PID. $1 names its log.
start_rusher() {
  PORT=$(free_port)
  local conf="$WORK/rusher-$1.toml"
  {
    rusher_server_toml "$PORT"
    echo
    echo "[transports]"
    echo "max_sessions = $MAX_SESSIONS"
    echo
    rusher_app_toml
  } >"$conf"
  "$ROOT/target/release/rusher" --config "$conf" >"$OUT/rusher-$1.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  wait_http "$PID" rusher "$PORT" "$OUT/rusher-$1.log" || exit 1
}

# Whether the server on $PORT has the SSE endpoint (anything but 404: a
# stream is cut by the time limit, which is fine).
has_sse() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
    "http://127.0.0.1:$PORT/apps/$APP_ID/events/stream?channels=probe")
  [ "$code" != 404 ] && [ "$code" != 000 ]
}

# Runs the generator: $1 result name, the rest its arguments.
bench_run() {
  local name=$1 rc
  shift
  say "$name: $*"
  "$BENCH" "$@" --port "$PORT" --server-pid "$PID" --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.log"
  rc=$?
  show_problems "$OUT/$name.log"
  [ $rc -le 1 ] || say "  the generator failed (exit $rc), see $OUT/$name.log"
  kill -0 "$PID" 2>/dev/null || { say "rusher died; see $OUT"; exit 1; }
}

LOAD_BEFORE=$(load_average)
STARTED=$(date +%s)
SKIPPED=""

# 1. Fan-out, one server.
start_rusher fanout
RUN=""
for t in $TRANSPORTS; do
  if [ "$t" = sse ] && ! has_sse; then
    SKIPPED="sse"; say "sse: the server answers 404 on /apps/{id}/events/stream; skipped"; continue
  fi
  RUN="$RUN $t"
done
rate=$(python3 -c "print(max($TRANS_DELIVERIES / $TRANS_SUBS, 0.1))")
events=$(python3 -c "print(int($rate * $TRANS_SECS))")
for round in $(seq 1 "$TRANS_ROUNDS"); do
  for t in $RUN; do
    bench_run "fixed-$t-$round" fanout --transport "$t" --subscribers "$TRANS_SUBS" --rate "$rate" \
      --events "$events" --duration $(( TRANS_SECS + 10 )) --payload "$PAYLOAD" --channel "bench-fixed-$t-$round"
  done
  for t in $RUN; do
    bench_run "max-$t-$round" fanout --transport "$t" --subscribers "$TRANS_SUBS" --rate 0 \
      --window "$TRANS_WINDOW" --events "$TRANS_MAX_EVENTS" --duration 60 --payload "$PAYLOAD" --channel "bench-max-$t-$round"
  done
done
stop_pid "$PID"

# 2. Idle sessions, a fresh server each (long polling is part 3).
for t in $RUN; do
  [ "$t" = xhr_polling ] && continue
  start_rusher "connect-$t"
  bench_run "connect-$t" connect --transport "$t" --connections "$CONNECT_N" --subscribe-channels 100 --settle 3
  stop_pid "$PID"
done

# 3. POLL_N long-polling sessions held open at once; the server's own count
# of open sessions is sampled meanwhile.
start_rusher polling
( peak=0
  while kill -0 "$PID" 2>/dev/null && [ ! -e "$WORK/poll-done" ]; do
    n=$(curl -s --max-time 1 "http://127.0.0.1:$PORT/metrics" |
      awk '$1 == "rusher_transport_sessions{transport=\"xhr_polling\"}" {print int($2)}')
    [ -n "$n" ] && [ "$n" -gt "$peak" ] && peak=$n && echo "$peak" >"$WORK/poll-peak"
    sleep 0.2
  done ) &
SAMPLER=$!
bench_run polling-hold connect --transport xhr_polling --connections "$POLL_N" --subscribe-channels 100 --settle "$POLL_HOLD"
touch "$WORK/poll-done"
wait "$SAMPLER" 2>/dev/null
POLL_PEAK=$(cat "$WORK/poll-peak" 2>/dev/null || echo "?")
stop_pid "$PID"

ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(load_average)

TABLES=$(RUN="$RUN" ROUNDS="$TRANS_ROUNDS" POLL_PEAK="$POLL_PEAK" POLL_HOLD="$POLL_HOLD" python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
run = os.environ["RUN"].split()
def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def metric(r, name):
    return next((m["value"] for m in r["metrics"] if m["name"] == name), None) if r else None
def num(v, fmt="{:.0f}"):
    return fmt.format(v) if v is not None else "n/a"
def ratio(v, base):
    return f"{v / base:.2f}×" if v is not None and base else "n/a"
def flag(r):
    return "" if r is None or r["ok"] else " ⚠"
notes = []
rounds = int(os.environ["ROUNDS"])
def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
names = ("deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "server_cpu_us_per_delivery",
         "generator_cpu_us_per_delivery", "lost", "dropped_connections")
def summary(kind, t):
    runs = [load(f"{kind}-{t}-{r}") for r in range(1, rounds + 1)]
    for r, one in enumerate(runs, 1):
        if one is None:
            notes.append(f"⚠ {kind} {t} round {r}: no result (see {kind}-{t}-{r}.log)")
        elif not one["ok"]:
            notes.append(f"⚠ {kind} {t} round {r}: " + "; ".join(one["problems"]))
    m = {n: median([metric(one, n) for one in runs]) for n in names}
    for n in ("lost", "dropped_connections"):
        m[n] = sum(metric(one, n) or 0 for one in runs if one)
    rates = [metric(one, "deliveries_per_s") for one in runs if one]
    m["range"] = f"{min(rates):.0f}–{max(rates):.0f}" if rates else "n/a"
    m["clean"] = all(one and one["ok"] for one in runs)
    return m
for kind, title in (("fixed", "fixed rate"), ("max", "max rate")):
    print(f"**Fan-out, {title}** (medians of {rounds} rounds)")
    print()
    print("| transport | deliveries/s | ×ws | per round | p50 ms | ×ws | p99 ms | ×ws | server CPU µs/delivery | ×ws | generator CPU µs/delivery | lost | dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ws = summary(kind, "ws") if "ws" in run else {}
    for t in run:
        m = summary(kind, t)
        print(f"| {t}{'' if m['clean'] else ' ⚠'} | {num(m['deliveries_per_s'])} | {ratio(m['deliveries_per_s'], ws.get('deliveries_per_s'))} | "
              f"{m['range']} | "
              f"{num(m['latency_p50_ms'], '{:.2f}')} | {ratio(m['latency_p50_ms'], ws.get('latency_p50_ms'))} | "
              f"{num(m['latency_p99_ms'], '{:.2f}')} | {ratio(m['latency_p99_ms'], ws.get('latency_p99_ms'))} | "
              f"{num(m['server_cpu_us_per_delivery'], '{:.2f}')} | {ratio(m['server_cpu_us_per_delivery'], ws.get('server_cpu_us_per_delivery'))} | "
              f"{num(m['generator_cpu_us_per_delivery'], '{:.2f}')} | {num(m['lost'])} | {num(m['dropped_connections'])} |")
    print()
print("**Idle sessions** (fresh server each; every session subscribed to one of 100 channels)")
print()
print("| transport | sessions | sessions/s | open p50 / p99 ms | RSS per session KiB | ×ws | server RSS MiB | failed |")
print("|---|---|---|---|---|---|---|---|")
ws = load("connect-ws")
for t in [t for t in run if t != "xhr_polling"]:
    r = load(f"connect-{t}")
    rss = metric(r, "rss_per_conn_kib")
    n = r["params"]["connections"] if r else "n/a"
    print(f"| {t}{flag(r)} | {n} | {num(metric(r, 'connections_per_s'))} | "
          f"{num(metric(r, 'connect_p50_ms'), '{:.1f}')} / {num(metric(r, 'connect_p99_ms'), '{:.1f}')} | "
          f"{num(rss, '{:.1f}')} | {ratio(rss, metric(ws, 'rss_per_conn_kib'))} | "
          f"{num(metric(r, 'server_rss_mib'), '{:.1f}')} | {num(metric(r, 'failed'))} |")
    if r and not r["ok"]:
        notes.append(f"⚠ connect {t}: " + "; ".join(r["problems"]))
print()
r = load("polling-hold")
print(f"**Long polling: sessions held open at once for {os.environ['POLL_HOLD']} s** (fresh server)")
print()
print("| sessions | opened | failed | closed or dropped by the server | peak open (server metric) | RSS per session KiB | server RSS MiB |")
print("|---|---|---|---|---|---|---|")
if r:
    d = r["details"]
    c = d["connections"]
    lost = sum(c["closed_by_server"].values()) + c["dropped"]
    print(f"| {r['params']['connections']}{flag(r)} | {d['ready']} | {d['failed']} | {lost} | {os.environ['POLL_PEAK']} | "
          f"{num(metric(r, 'rss_per_conn_kib'), '{:.1f}')} | {num(metric(r, 'server_rss_mib'), '{:.1f}')} |")
    print()
    errors = d["failed"] + lost
    print(f"Errors: {errors}." if r["ok"] else "PROBLEMS: " + "; ".join(r["problems"]))
else:
    print("| n/a | | | | | | |")
    print()
    print("No result (see polling-hold.log).")
if notes:
    print()
    for n in notes:
        print(n)
        print()
EOF
)

{
  echo "# Transports: WebSocket vs HTTP fallbacks (rusher, one node)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), rusher $(git_commit)$(git_dirty); $(nproc) cores, $(uname -sr)."
  echo "\`bench/compare-transports.sh\`. Fan-out: one rusher, $TRANS_SUBS subscribers on one channel per"
  echo "transport; fixed rate $TRANS_DELIVERIES deliveries/s (${rate} events/s, ${TRANS_SECS} s), max rate window"
  echo "$TRANS_WINDOW, $TRANS_MAX_EVENTS events; payload $PAYLOAD B; $TRANS_ROUNDS rounds, transports alternating."
  echo "Latency is end to end (HTTP trigger → frame"
  echo "parsed by the subscriber); a long-polling subscriber re-polls at once after each answer."
  echo "CPU per delivery: user+system time of the server and of the generator from the first"
  echo "publish to the end of the drain (set-up excluded) over the deliveries; on 2 cores both"
  echo "compete, so a transport that costs the generator more also slows the max-rate run."
  echo "Generator and server share the machine (shared with other jobs: noisy); everything on"
  echo "127.0.0.1. Runs took ${ELAPSED}s; load average before: ${LOAD_BEFORE}, after: ${LOAD_AFTER}."
  echo "Raw results: $OUT"
  [ -n "$SKIPPED" ] && { echo; echo "SSE: skipped — this server answers 404 on \`/apps/{id}/events/stream\` (not built in yet); \`--transport sse\` runs once it is."; }
  echo
  echo "$TABLES"
} >"$OUT/transports.md"
mkdir -p "$ROOT/bench/results"
cp "$OUT/transports.md" "$ROOT/bench/results/transports.md"
cat "$OUT/transports.md"
say "table written to bench/results/transports.md; JSON results and logs in $OUT"
