#!/usr/bin/env bash
# bld's performance run: the Google Benchmark suite (row pass, projections, beam, loss), bld-cli
# bench-rows, and the numpy baseline, in one session on this machine; then docs/performance.md
# (Markdown tables, acceptance lines) and docs/performance.png.
#
#   bash scripts/bench.sh            # Release build in build/bench, 5 repetitions
#   BLD_BENCH_REPS=9 BLD_BENCH_BUILD=build-simd bash scripts/bench.sh
#   BLD_BENCH_BASELINE=cfa19b6 bash scripts/bench.sh
#                                    # also runs scripts/bench-baseline.sh cfa19b6: that
#                                    # revision's row-pass kernels beside this tree's
#   BLD_BENCH_ONLY=targets bash scripts/bench.sh
#                                    # only the trainer route (bld_bench_targets, bld-cli
#                                    # bench-targets, a few minutes): rewrites that section and
#                                    # its acceptance block of docs/performance.md in place,
#                                    # keeping the other sections (and their dated header)
#   BLD_BENCH_ONLY=token_head bash scripts/bench.sh
#                                    # only token-head distillation (bld_bench_token_head, and a
#                                    # perf profile where perf exists): rewrites that section
#
# Needs the real data (bash scripts/fetch-data.sh), Google Benchmark, /usr/bin/python3 with
# numpy and matplotlib (Debian: libbenchmark-dev python3-numpy python3-matplotlib). Run it on a
# quiet machine: the load average before and after is recorded in the report.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BLD_BENCH_BUILD:-build/bench}
jobs=${BLD_JOBS:-2}
reps=${BLD_BENCH_REPS:-5}
only=${BLD_BENCH_ONLY:-}
case "$only" in
    "") out="$build/bench-results" ;;
    targets) out="$build/bench-results-targets" ;;
    token_head) out="$build/bench-results-token-head" ;;
    *) echo "bench.sh: BLD_BENCH_ONLY must be empty, 'targets' or 'token_head', not '$only'" >&2; exit 2 ;;
esac
py=/usr/bin/python3

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLD_BUILD_BENCHMARKS=ON -DBLD_BUILD_EXAMPLES=ON >/dev/null
if [ "$only" = targets ]; then
    targets=(bld_bench_targets bld-cli)
elif [ "$only" = token_head ]; then
    targets=(bld_bench_token_head)
else
    targets=(bld_bench_row_pass bld-cli)
    if grep -q "bench_loss" benchmarks/CMakeLists.txt; then targets+=(bld_bench_loss); fi
    if grep -q "bench_targets" benchmarks/CMakeLists.txt; then targets+=(bld_bench_targets); fi
    if grep -q "bench_token_head" benchmarks/CMakeLists.txt; then targets+=(bld_bench_token_head); fi
fi
# The commit the binaries are built from (HEAD may move while the benchmarks run).
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -uno)" ]; then commit="$commit (dirty)"; fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
rm -rf "$out"
mkdir -p "$out/export"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average before: $load_before"

gb_args=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true --benchmark_min_time=0.2
         --benchmark_out_format=json)
# The trainer route: teacher rows -> bld::distiller -> compact targets (Llama-3 teacher, GPT-2
# student, real text), beside the streaming read of the same rows, canonical_targets and the
# loss on compact vs dense targets; then bld-cli bench-targets in id / trie order, 1 / 2 threads.
run_targets() {
    echo "== bld_bench_targets"
    "$build/benchmarks/bld_bench_targets" "${gb_args[@]}" --benchmark_out="$out/targets.json"
    echo "== bld-cli bench-targets"
    local tdir=.cache/data/tokenizers order t flag
    for order in id trie; do
        flag=(); [ "$order" = trie ] && flag=(--trie-order)
        for t in 1 2; do
            "$build/examples/bld-cli" bench-targets --teacher "$tdir/llama3/tokenizer.json" --student "$tdir/gpt2" \
                --threads "$t" --repeats 9 "${flag[@]}" | tee "$out/cli_targets_${order}_t${t}.json"
        done
    done
    # The Python route on the same batch as bld-cli bench-targets (scripts/bench_python_route.py),
    # where a bld_torch build exists (BLD_TORCH_BUILD, default build-py: python/build_bld_torch.py).
    local pyb=${BLD_TORCH_BUILD:-build-py}
    if [ -f "$pyb/bld_torch/__init__.py" ]; then
        echo "== Python route (bld_torch.Distiller) vs bld-cli bench-targets"
        for t in 1 2; do
            BLD_TORCH_BUILD="$pyb" /usr/bin/python3 scripts/bench_python_route.py --cli "$build/examples/bld-cli" \
                --threads "$t" --repeats 9 --out "$out/python_route_t${t}.json"
        done
    else
        echo "== Python route skipped: no bld_torch in $pyb (python/build_bld_torch.py --out $pyb)"
    fi
}

# Token-head distillation (issue 15): bld::token_head_loss forward + backward on one text of 64
# student rows (GPT-2, Llama-3), id and trie order, beside the streaming read; then, where perf
# exists, where the Llama-3 forward + backward spends its time (perf starts after the setup).
run_token_head() {
    echo "== bld_bench_token_head"
    "$build/benchmarks/bld_bench_token_head" "${gb_args[@]}" --benchmark_out="$out/token_head.json"
    if command -v perf >/dev/null; then
        local order
        for order in id trie; do
            perf record -q -D 4000 -o "$out/perf_$order.data" "$build/benchmarks/bld_bench_token_head" \
                --benchmark_filter="token_head/llama3/f32/fwd_bwd/$order/" --benchmark_min_time=4 >/dev/null 2>&1 &&
                perf report -q -i "$out/perf_$order.data" --no-children --sort symbol --percent-limit 2 --stdio \
                    2>/dev/null | grep '%' >"$out/profile_$order.txt" || true
            rm -f "$out/perf_$order.data"
        done
    fi
}

if [ "$only" = targets ]; then
    run_targets
elif [ "$only" = token_head ]; then
    run_token_head
else
    # Inputs and bld's results for the numpy baseline (which checks itself against them).
    BLD_BENCH_EXPORT="$out/export" "$build/benchmarks/bld_bench_row_pass"
    if [ -x "$build/benchmarks/bld_bench_loss" ]; then BLD_BENCH_EXPORT="$out/export" "$build/benchmarks/bld_bench_loss"; fi
    echo "== bld_bench_row_pass"
    "$build/benchmarks/bld_bench_row_pass" "${gb_args[@]}" --benchmark_out="$out/row_pass.json"
    if [ -x "$build/benchmarks/bld_bench_loss" ]; then
        echo "== bld_bench_loss"
        "$build/benchmarks/bld_bench_loss" "${gb_args[@]}" --benchmark_out="$out/loss.json"
    fi
    echo "== numpy baseline"
    "$py" scripts/bench_numpy.py --export "$out/export" --repeats 7 --out "$out/numpy.json"
    cat "$out/numpy.json"
    if [ -n "${BLD_BENCH_BASELINE:-}" ]; then
        BLD_BENCH_BUILD="$build" BLD_BENCH_REPS="$reps" bash scripts/bench-baseline.sh "$BLD_BENCH_BASELINE"
    fi
    echo "== bld-cli bench-rows"
    tok=.cache/data/tokenizers/llama3/tokenizer.json
    "$build/examples/bld-cli" bench-rows --tokenizer "$tok" --rows 64 --threads 1 --repeats 9 | tee "$out/cli_t1.json"
    "$build/examples/bld-cli" bench-rows --tokenizer "$tok" --rows 64 --threads 2 --repeats 9 | tee "$out/cli_t2.json"
    if [ -x "$build/benchmarks/bld_bench_targets" ]; then run_targets; fi
    if [ -x "$build/benchmarks/bld_bench_token_head" ]; then run_token_head; fi
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average after: $load_after"
"$py" - "$out/machine.json" "$load_before" "$load_after" "$reps" "$commit" <<'EOF'
import json, os, platform, subprocess, sys, datetime
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
cpu = sh("lscpu | sed -n 's/^Model name:[ \t]*//p' | head -1")
family = sh("grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2").strip()
model = sh("grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2").strip()
mhz = sh("grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2").strip()
# AMD's families name the core generation; it decides how wide AVX-512 runs (Zen 4 executes a
# 512-bit operation as two 256-bit halves, Zen 5 in one), which moves every compute-bound ratio.
vendor = sh("grep -m1 'vendor_id' /proc/cpuinfo | cut -d: -f2").strip()
avx512 = "avx512f" in sh("grep -m1 '^flags' /proc/cpuinfo")
core = ""
if vendor == "AuthenticAMD":
    core = {"25": "Zen 4" if avx512 else "Zen 3", "26": "Zen 5"}.get(family, "")
m = {
    "cpu": cpu + " (family " + family + " model " + model + (", " + core if core else "") + ", " + mhz + " MHz nominal)",
    "cores": sh("nproc"),
    "memory": sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
    "os": sh(". /etc/os-release && echo $PRETTY_NAME") + ", kernel " + platform.release(),
    "compiler": sh("c++ --version | head -1"),
    "commit": sys.argv[5],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "load_before": sys.argv[2],
    "load_after": sys.argv[3],
    "repetitions": int(sys.argv[4]),
}
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
if [ "$only" = targets ]; then
    "$py" scripts/bench_report.py --targets-only --results "$out" --md docs/performance.md
    echo "== rewrote the trainer-route section of docs/performance.md (results in $out)"
elif [ "$only" = token_head ]; then
    "$py" scripts/bench_report.py --token-head-only --results "$out" --md docs/performance.md
    echo "== rewrote the token-head section of docs/performance.md (results in $out)"
else
    "$py" scripts/bench_report.py --results "$out" --md docs/performance.md --png docs/performance.png
    echo "== wrote docs/performance.md and docs/performance.png (results in $out)"
fi
