#!/usr/bin/env bash
# Builds the `bench` preset (Release, -O3) and runs the load benchmark: reading the Gemma-3
# (262k ids, 33 MB) and Llama-3 (128k ids) tokenizer.json files and building their byte tries,
# beside the file-read and simdjson-parse floors. Prints the medians of 5 repetitions and the
# acceptance check: gemma3 load + trie median under $BLD_LOAD_LIMIT_MS (default 500) ms.
#
# Usage: scripts/bench-load.sh [google-benchmark flags, e.g. --benchmark_filter=gemma3]
# Environment: BLD_BENCH_BUILD_DIR  build folder (default: the preset's build/bench)
#              BLD_JOBS             parallel compile jobs (default: nproc)
#              BLD_DATA_DIR         data folder (default: .cache/data, see scripts/fetch-data.sh)
#              BLD_LOAD_LIMIT_MS    acceptance limit in ms (default 500)
# Exit status: 0 when checks and the limit hold; 1 otherwise. Results: <build>/bench_load.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BLD_BENCH_BUILD_DIR:-build/bench}
jobs=${BLD_JOBS:-$(nproc 2>/dev/null || echo 2)}
limit_ms=${BLD_LOAD_LIMIT_MS:-500}
data=${BLD_DATA_DIR:-$root/.cache/data}
if [[ ! -f "$data/tokenizers/gemma3/tokenizer.json" ]]; then
  echo "bench-load: no tokenizers in $data: run \`bash scripts/fetch-data.sh\` first" >&2
  exit 1
fi

cmake --preset bench -B "$build" >/dev/null
cmake --build "$build" --target bld_bench_load -j "$jobs"

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
out="$build/bench_load.json"
"$build/benchmarks/bld_bench_load" --benchmark_out="$out" --benchmark_out_format=json "$@"
echo "== load average after:  $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"

if ! command -v python3 >/dev/null 2>&1; then
  grep -o '"name": "[^"]*_median"' "$out" || true
  echo "bench-load: python3 not found; medians are in the table above and in $out"
  exit 0
fi
python3 - "$out" "$limit_ms" <<'PY'
import json, sys
path, limit_ms = sys.argv[1], float(sys.argv[2])
runs = [b for b in json.load(open(path))["benchmarks"] if b.get("aggregate_name") == "median"]
to_ms = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
print("== medians of 5 repetitions (wall time; CPU time beside it: a gap means a busy machine)")
print(f"{'benchmark':30} {'wall ms':>9} {'cpu ms':>9} {'MB/s':>7} {'Mids/s':>7}")
gemma = None
for b in runs:
    name = b["run_name"].replace("/repeats:5", "").replace("/real_time", "")
    ms = b["real_time"] * to_ms[b["time_unit"]]
    cpu = b["cpu_time"] * to_ms[b["time_unit"]]
    mbs = b.get("bytes_per_second", 0) / 1e6  # 0: the case reads no file
    ids = b.get("items_per_second", 0) / 1e6
    print(f"{name:30} {ms:9.2f} {cpu:9.2f} {mbs:7.0f} {ids:7.2f}")
    if name == "load_and_build_trie/gemma3":
        gemma = ms
if gemma is None:
    print("bench-load: load_and_build_trie/gemma3 was not run (filtered out?)")
    sys.exit(0)
ok = gemma < limit_ms
print(f"== acceptance: gemma3 (262k ids) load + trie median {gemma:.1f} ms "
      f"{'<' if ok else '>='} {limit_ms:.0f} ms: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
