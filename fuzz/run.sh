#!/usr/bin/env bash
# Builds the fuzz targets (nightly, cargo-fuzz) and runs each for FUZZ_SECONDS
# (default 60), FUZZ_JOBS (default 2) at a time. Any crash fails the run: the
# target, the input's file and the crash's first lines are printed, the input
# stays in fuzz/artifacts/<target>/ (turn it into a regression test, README.md).
#   fuzz/run.sh                          # every target, 60 s each (the test suite)
#   FUZZ_SECONDS=3600 fuzz/run.sh manifest component   # long runs of some targets
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-2}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo +nightly fuzz list)
TRIPLE=x86_64-unknown-linux-gnu

started=$(date +%s)
# No sanitizer: the host is safe Rust, and ASan would double the build and slow
# every execution; debug assertions stay on (overflow checks). 16 codegen units
# (cargo-fuzz's default is 1): the cold build of wasmtime and sqlx with coverage
# instrumentation is most of this step's time in CI, and a somewhat slower
# execution costs a minute-long run little.
BUILD_FLAGS=(-O -s none --debug-assertions --codegen-units 16)
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
built=$(date +%s)
echo "fuzz: built in $((built - started)) s"

# The component target mutates real components: the guests the build made.
mkdir -p corpus/component
cp -n ../target/wasm32-wasip2/release/*.wasm corpus/component/ 2>/dev/null || true

run_one() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  "target/$TRIPLE/release/$target" "corpus/$target" \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=20 -rss_limit_mb=3072 \
    -artifact_prefix="artifacts/$target/" >"logs/$target.log" 2>&1
}

mkdir -p logs
failed=()
for ((i = 0; i < ${#TARGETS[@]}; i += JOBS)); do
  pids=()
  for target in "${TARGETS[@]:i:JOBS}"; do
    run_one "$target" &
    pids+=("$!:$target")
  done
  for entry in "${pids[@]}"; do
    wait "${entry%%:*}" || failed+=("${entry#*:}")
  done
done

printf '%-22s %12s %8s\n' target executions crashes
for target in "${TARGETS[@]}"; do
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "artifacts/$target" -type f | wc -l)
  printf '%-22s %12s %8s\n' "$target" "${execs:-0}" "$crashes"
done | tee last-run.txt
echo "fuzz: ran ${#TARGETS[@]} targets for ${SECONDS_EACH} s each, $JOBS at a time, in $(($(date +%s) - built)) s; $(($(date +%s) - started)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  for target in "${failed[@]}"; do
    echo "FUZZ CRASH in target $target" >&2
    input=$(grep -o 'Test unit written to .*' "logs/$target.log" | tail -n 1 | sed 's/Test unit written to //')
    if [ -n "$input" ]; then
      echo "  input: fuzz/$input" >&2
      echo "  reproduce: cd fuzz && cargo +nightly fuzz run $target ${BUILD_FLAGS[*]} $input" >&2
    fi
    echo "  the crash (fuzz/logs/$target.log):" >&2
    grep -m 1 -A 12 -E "panicked at|==[0-9]+== ERROR|ERROR: libFuzzer" "logs/$target.log" >&2 ||
      tail -n 30 "logs/$target.log" >&2
  done
  exit 1
fi
