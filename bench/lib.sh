# Shared shell functions of the bench scripts (compare.sh, compare-cluster.sh,
# compare-persistence.sh, compare-history.sh, compare-transports.sh, smoke.sh).
# Sourced, never run:
#   . "$ROOT/bench/lib.sh"
#
# What it gives:
#   say MSG...                 "[$BENCH_TAG] MSG" on stderr (set BENCH_TAG first)
#   parse_compare_args FLAG VAR ARGS...  the compare scripts' options: --quick,
#                              --skip-build, --out DIR, -h/--help (prints the script's
#                              header comment) and the list option FLAG, whose value goes
#                              to VAR; sets QUICK, BUILD, OUT
#   raise_nofile               raise the open-file limit to the hard limit
#   free_port                  a free TCP port on 127.0.0.1
#   stop_pid PID [TENTHS]      SIGTERM, wait up to TENTHS/10 s (default 15 s), then SIGKILL
#   PIDS / stop_all_pids       processes to stop on exit (trap stop_all_pids EXIT)
#   wait_http PID NAME PORT LOG  wait until the server answers HTTP on PORT (30 s)
#   build_release              cargo build rusher and rusher-bench (release), unless BUILD=0
#   init_out NAME              OUT (default a new /tmp/NAME.XXXXXX), WORK=$OUT/work
#   find_sockudo DIR           SOCKUDO = $SOCKUDO_BIN, else DIR/bin/sockudo, else PATH
#   sockudo_exec DIR PORT [VAR=VALUE...]  exec sockudo from DIR with the bench app;
#                              run it in the background (`sockudo_exec ... &`): it replaces
#                              that subshell, so `$!` is sockudo itself (its RSS is measured)
#   rusher_server_toml PORT / rusher_app_toml   the parts of the bench's rusher config
#   show_problems LOG          the generator's PROBLEM/result/error lines, on stderr
#   pin_pid PID CPUS           pin every thread of PID to CPUS (taskset list); no-op when CPUS is empty
#   cpu_ticks PID              utime + stime of PID so far, in clock ticks (/proc/PID/stat)
#   start_redis_cluster N DIR  a Redis Cluster of N masters on free ports (RC_PORTS, RC_PIDS)
#   stop_redis_cluster         stops it
#   load_average, git_commit, git_dirty   for the report header
#
# The scripts set ROOT, APP_ID, APP_KEY, APP_SECRET (and BENCH_TAG) before use.

say() { echo "[$BENCH_TAG] $*" >&2; }

parse_compare_args() {
  local list_flag=$1 list_var=$2
  shift 2
  QUICK=0 BUILD=1 OUT=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick) QUICK=1 ;;
      --skip-build) BUILD=0 ;;
      --out) OUT="$2"; shift ;;
      "$list_flag") printf -v "$list_var" '%s' "$2"; shift ;;
      -h|--help) awk 'NR > 1 { if (!/^#/) exit; print }' "$0"; exit 0 ;;
      *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
  done
}

# Both the generator and the servers need a file descriptor per connection.
raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_pid() {
  local pid=$1 tenths=${2:-150} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 "$tenths"); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

PIDS=()
stop_all_pids() { local p; for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done; }

# Waits until $2 answers HTTP on port $3 (pid $1, log $4); 1 when it died or timed out.
wait_http() {
  local pid=$1 name=$2 port=$3 log=$4 i
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited at start; last lines of $log:"; tail -5 "$log" >&2; return 1
    fi
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then return 0; fi
    sleep 0.1
  done
  say "$name did not answer on port $port within 30 s"; return 1
}

# Builds rusher and the bench in release unless BUILD=0; exits when the build fails.
build_release() {
  [ "$BUILD" = 1 ] || return 0
  say "building rusher and the bench (release)"
  (cd "$ROOT" && nice -n 10 cargo build --release -p rusher && nice -n 10 cargo build --release -p rusher-bench) >&2 || {
    say "build failed"; exit 1; }
}

# Sets OUT (a new temp dir /tmp/$1.XXXXXX unless given), WORK and BENCH.
init_out() {
  [ -n "$OUT" ] || OUT=$(mktemp -d "/tmp/$1.XXXXXX")
  mkdir -p "$OUT"
  WORK="$OUT/work"; mkdir -p "$WORK"
  BENCH="$ROOT/target/release/rusher-bench"
}

# Sets SOCKUDO to $SOCKUDO_BIN, else $1/bin/sockudo, else the one on PATH; 1 when none.
find_sockudo() {
  SOCKUDO=""
  if [ -n "${SOCKUDO_BIN:-}" ] && [ -x "$SOCKUDO_BIN" ]; then SOCKUDO="$SOCKUDO_BIN"
  elif [ -x "$1/bin/sockudo" ]; then SOCKUDO="$1/bin/sockudo"
  elif command -v sockudo >/dev/null 2>&1; then SOCKUDO=$(command -v sockudo)
  else return 1
  fi
}

# Runs $SOCKUDO from directory $1 (empty, so no config/config.{toml,json} is
# read) on port $2; everything comes from the environment: the bench app,
# limits raised, rate limiting and metrics off, plus the VAR=VALUE arguments
# (drivers, adapter). Meant to be started in the background.
sockudo_exec() {
  local dir=$1 port=$2
  shift 2
  cd "$dir" || return 1
  exec env HOST=127.0.0.1 PORT="$port" RUST_LOG=warn \
    METRICS_ENABLED=false RATE_LIMITER_ENABLED=false \
    "$@" \
    SOCKUDO_MAX_CONNECTIONS=0 \
    SOCKUDO_DEFAULT_APP_ID="$APP_ID" SOCKUDO_DEFAULT_APP_KEY="$APP_KEY" SOCKUDO_DEFAULT_APP_SECRET="$APP_SECRET" \
    SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 \
    SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=100000000 \
    SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND=1000 \
    SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND=100000000 \
    SOCKUDO_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL=1000 \
    SOCKUDO_DEFAULT_APP_MAX_PRESENCE_MEMBER_SIZE_IN_KB=10 \
    SOCKUDO_DEFAULT_APP_MAX_EVENT_CHANNELS_AT_ONCE=100 \
    SOCKUDO_DEFAULT_APP_MAX_EVENT_PAYLOAD_IN_KB=100 \
    "$SOCKUDO"
}

# The [server] section of the bench's rusher config, on port $1.
rusher_server_toml() {
  cat <<EOF
[server]
host = "127.0.0.1"
port = $1
log_level = "warn"
max_request_bytes = 10485760
metrics = true
EOF
}

# The bench app of the rusher config: limits raised (as for sockudo and bare).
rusher_app_toml() {
  cat <<EOF
[[apps]]
id = "$APP_ID"
key = "$APP_KEY"
secret = "$APP_SECRET"
max_connections = 0
max_event_data_bytes = 102400
max_channels_per_event = 100
max_channels_per_connection = 1000
max_presence_members = 1000
max_presence_user_info_bytes = 10240
client_event_rate = 1000
EOF
}

# The generator's PROBLEM / result / error lines of log $1, indented, on stderr.
show_problems() {
  grep -v '^\[' "$1" | grep -E 'PROBLEM|result|error' | sed "s/^/[$BENCH_TAG]   /" >&2
}

# Pins every thread of $1 (those it starts later inherit it) to CPU list $2.
pin_pid() {
  [ -n "${2:-}" ] || return 0
  taskset -a -cp "$2" "$1" >/dev/null 2>&1 || say "could not pin pid $1 to cpu $2"
}

# utime + stime of process $1 so far, in clock ticks (fields 14 and 15 of
# /proc/$1/stat, counted after the command name's closing parenthesis).
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $(( ${12} + ${13} ))
}

# Starts a Redis Cluster of $1 masters, no replicas, on free 127.0.0.1 ports
# (data, config and logs under $2): each redis-server with cluster mode on,
# no persistence, its bus port chosen free too (port + 10000 may be out of
# range), then `redis-cli --cluster create`; waits for cluster_state:ok on
# every node. Sets RC_PORTS and RC_PIDS (also added to PIDS); 1, with a
# message, when it did not come up.
start_redis_cluster() {
  local masters=$1 dir=$2 i port pid addrs=() ok
  RC_PORTS=() RC_PIDS=()
  mkdir -p "$dir"
  for i in $(seq 1 "$masters"); do
    port=$(free_port)
    mkdir -p "$dir/$port"
    "${REDIS_SERVER:-redis-server}" --bind 127.0.0.1 --port "$port" --dir "$dir/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "$(free_port)" \
      --cluster-require-full-coverage no --save '' --appendonly no --protected-mode no \
      >"$dir/redis-$port.log" 2>&1 &
    pid=$!
    RC_PIDS+=("$pid"); PIDS+=("$pid"); RC_PORTS+=("$port"); addrs+=("127.0.0.1:$port")
  done
  for port in "${RC_PORTS[@]}"; do
    for i in $(seq 1 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -p "$port" ping >/dev/null 2>&1 || {
      say "redis-server on port $port did not start (see $dir/redis-$port.log)"; return 1; }
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    >"$dir/create.log" 2>&1 || {
    say "redis-cli --cluster create failed (see $dir/create.log)"; return 1; }
  for i in $(seq 1 200); do
    ok=1
    for port in "${RC_PORTS[@]}"; do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { ok=0; break; }
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  say "the Redis Cluster on ${RC_PORTS[*]} did not reach cluster_state:ok within 20 s"
  return 1
}

stop_redis_cluster() {
  local pid
  for pid in "${RC_PIDS[@]+"${RC_PIDS[@]}"}"; do stop_pid "$pid"; done
  RC_PIDS=() RC_PORTS=()
}

load_average() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }
git_commit() { (cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown); }
git_dirty() { (cd "$ROOT" && git status --porcelain 2>/dev/null | grep -q . && echo " (with uncommitted changes)"); }

# The history on/off table of `rounds` alternating runs in `out` (off-N.json,
# on-N.json from rusher-bench), with the mean ratio against the 0.90x target.
# Usage: history_onoff_table OUT ROUNDS
history_onoff_table() {
  ROUNDS="$2" python3 - "$1" <<'EOF'
import json, os, sys
out, rounds = sys.argv[1], int(os.environ["ROUNDS"])
def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def metric(run, name):
    return next((m["value"] for m in run["metrics"] if m["name"] == name), None) if run else None
print("| round | history off: deliveries/s | on: deliveries/s | on/off | off p50 / p99 ms | on p50 / p99 ms | lost off / on |")
print("|---|---|---|---|---|---|---|")
ratios = []
for r in range(1, rounds + 1):
    off, on = load(f"off-{r}"), load(f"on-{r}")
    d_off, d_on = metric(off, "deliveries_per_s"), metric(on, "deliveries_per_s")
    ratio = d_on / d_off if d_on and d_off else None
    if ratio: ratios.append(ratio)
    lat = lambda run: f"{metric(run, 'latency_p50_ms') or 0:.2f} / {metric(run, 'latency_p99_ms') or 0:.2f}"
    print(f"| {r} | {d_off or 0:.0f} | {d_on or 0:.0f} | {ratio or 0:.2f}× | {lat(off)} | {lat(on)} | "
          f"{metric(off, 'lost')} / {metric(on, 'lost')} |")
if ratios:
    mean = sum(ratios) / len(ratios)
    print(f"\nMean on/off ratio of deliveries/s: {mean:.2f}× ({'PASS' if mean >= 0.9 else 'FAIL'}; target ≥ 0.90×).")
EOF
}
