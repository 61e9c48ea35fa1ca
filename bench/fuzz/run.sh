#!/usr/bin/env bash
# The long fuzzing run of issue 17: every target of bench/fuzz for
# RUNS inputs each (default 1000000; 8 targets = 8 million inputs).
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`); CI does not
# run it (the property tests in `cargo test` are its fast cousin).
#
#   bench/fuzz/run.sh                  # every target, RUNS inputs each
#   RUNS=1000000 bench/fuzz/run.sh config client_frame
#
# Built without a sanitizer (`-s none`): the code is safe Rust, so ASan
# finds nothing the panics do not, and it would halve the speed. Debug
# assertions and overflow checks are on (cargo fuzz's default), so an
# arithmetic overflow is a crash. -timeout and -rss_limit_mb turn a
# quadratic blow-up or an unbounded allocation into a crash too.
#
# New inputs go to bench/fuzz/target/corpus/<target> (ignored by git);
# the committed seeds (bench/fuzz/corpus/<target>, made by seeds.py) are
# read, never written. A crash leaves its input in
# bench/fuzz/artifacts/<target>/ and stops the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

RUNS="${RUNS:-1000000}"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(client_frame channel_name member_data http_request sse_request xhr_send redis_message config)
fi

cargo +nightly fuzz build --fuzz-dir bench/fuzz -s none

total=0
for target in "${TARGETS[@]}"; do
  work="bench/fuzz/target/corpus/$target"
  mkdir -p "$work"
  log="bench/fuzz/target/$target.log"
  echo "==> $target: $RUNS inputs"
  rc=0
  cargo +nightly fuzz run --fuzz-dir bench/fuzz -s none "$target" "$work" "bench/fuzz/corpus/$target" -- \
    -runs="$RUNS" -timeout=5 -rss_limit_mb=2048 -max_len=65536 -len_control=0 -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|thread .* panicked)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    echo "$target: crashed (exit $rc), see $log and bench/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  total=$((total + ${runs:-0}))
done
echo "==> $total inputs, 0 crashes"
