#!/usr/bin/env bash
# This tree's row-pass kernels beside a baseline revision's, in one session on this machine:
# builds bld_bench_row_pass at REV (a temporary git worktree) and here, runs the Llama-3 id-order
# SIMD kernels, the trie-ordered kernel and the streaming read of both builds in interleaved
# rounds (BLD_BENCH_ROUNDS, default 3; the machine's speed drifts from minute to minute, so rounds alternate),
# and writes docs/performance_baseline.md: µs per row, the median of the rounds' medians, and
# the ratio this tree / baseline.
#
#   bash scripts/bench-baseline.sh cfa19b6        (needs bash scripts/fetch-data.sh first)
set -euo pipefail
rev=${1:?usage: bench-baseline.sh REV}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BLD_BENCH_BUILD:-build/bench}
jobs=${BLD_JOBS:-2}
reps=${BLD_BENCH_REPS:-5}
out="$build/baseline-results"
base_src="$build/baseline-src"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLD_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" -j "$jobs" --target bld_bench_row_pass
rm -rf "$base_src" "$out"
git worktree prune
git worktree add -q --detach "$base_src" "$rev"
trap 'git worktree remove --force "$base_src" 2>/dev/null || true' EXIT
ln -s "$root/.cache" "$base_src/.cache"   # the benchmark reads the tokenizers from <source>/.cache/data
cmake -S "$base_src" -B "$build/baseline" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLD_BUILD_BENCHMARKS=ON \
    -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build/baseline" -j "$jobs" --target bld_bench_row_pass
mkdir -p "$out"
git -C "$base_src" rev-parse --short HEAD > "$out/baseline_rev.txt"
git rev-parse --short HEAD > "$out/tree_rev.txt"
cut -d' ' -f1-3 /proc/loadavg > "$out/load_before.txt"
filter='row_pass/llama3/(f32|bf16)/(simd_|trie_ordered|stream)'
args=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true --benchmark_min_time=0.2
      --benchmark_out_format=json --benchmark_filter="$filter")
rounds=${BLD_BENCH_ROUNDS:-3}
for round in $(seq 1 "$rounds"); do
    echo "== round $round: baseline $rev"
    "$build/baseline/benchmarks/bld_bench_row_pass" "${args[@]}" --benchmark_out="$out/baseline_old_$round.json"
    echo "== round $round: this tree"
    "$build/benchmarks/bld_bench_row_pass" "${args[@]}" --benchmark_out="$out/baseline_new_$round.json"
done
cut -d' ' -f1-3 /proc/loadavg > "$out/load_after.txt"
/usr/bin/python3 scripts/bench_report.py --baseline "$out" --md docs/performance_baseline.md
echo "== wrote docs/performance_baseline.md (results in $out)"
