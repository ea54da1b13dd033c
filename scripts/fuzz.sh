#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for SECONDS
# (default 10; docs/errors.md records a 600-second run). Crashes, hangs (timeout 10 s per input)
# and sanitizer reports fail the script; a summary of executions per harness is printed.
#   bash scripts/fuzz.sh [SECONDS] [JOBS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
data=${BLD_DATA_DIR:-$root/.cache/data}
CXX=clang++ CC=clang cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLD_BUILD_FUZZERS=ON \
  -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_EXAMPLES=OFF -DBLD_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/fuzz -j "${BLD_JOBS:-2}"
seeds=build/fuzz/seeds
[ -d "$seeds/npy" ] || /usr/bin/python3 scripts/make_fuzz_seeds.py "$data" "$seeds"
summary=build/fuzz/summary.txt
: > "$summary"
for h in tokenizer_json gpt2 tiktoken projection loss npy; do
  corpus=build/fuzz/corpus/$h
  mkdir -p "$corpus"
  log=build/fuzz/$h.log
  echo "== fuzz_$h for ${secs}s"
  # tests/fuzz/regressions/<harness>: inputs that once failed; run first, every time.
  regress=()
  [ -d "tests/fuzz/regressions/$h" ] && regress=("tests/fuzz/regressions/$h")
  if ! build/fuzz/tests/fuzz/fuzz_$h "$corpus" "$seeds/$h" "${regress[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix=build/fuzz/crash-$h- > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz_$h: FAILED (see $log)"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz_$h: ${secs}s, $execs executions, no crash" | tee -a "$summary"
done
