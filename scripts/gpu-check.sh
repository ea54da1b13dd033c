#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds the CUDA tests for this GPU and runs them against the
# CPU path — the row pass, node sums and canonical path (random vocabularies and Llama-3's), the
# byte losses dense and compact through bld::bld_loss & co. (the one entry point) and bld::cuda::,
# the device projector the distiller calls (a batch of sequences, id- and trie-ordered rows,
# float32 and bf16), each within the tolerances tests/cuda/test_cuda_main.cpp states; runs
# tests/cuda/dispatch_host.cpp (a host-compiled bld::bld_loss on device memory, dense and compact,
# against the CPU) and tests/cuda/token_head_host.cpp (distiller::token_head_loss on device student
# logits: value and gradient against the CPU route); runs bld_torch's CUDA tests where a CUDA build of torch sees the GPU (else says
# why it skipped them); runs the row-pass benchmark (4096 rows × 128,256 logits, float32 and
# bf16: GB/s of logits read vs the card's peak bandwidth and a raw-read baseline) and writes
# docs/gpu_report.md.
#
#   bash scripts/gpu-check.sh                 # build in build/gpu, run, write the report
#
# Without a GPU (no nvidia-smi, or it lists no device) it says so, writes nothing and exits 0: no
# number is ever claimed that was not measured. Environment:
#   BLD_JOBS             build parallelism (default: all cores)
#   BLD_GPU_BUILD_DIR    build folder (default build/gpu)
#   BLD_CUDA_ARCHS       CUDA architectures (default: native, i.e. the GPU present)
#   BLD_CUDA_TESTS_BIN   an already built bld_cuda_tests to run instead of building
#   BLD_DATA_DIR         test data (default .cache/data; needs tokenizers/llama3/tokenizer.json
#                        and ref/llama3.encode.tsv from scripts/fetch-data.sh)
#   BLD_GPU_REPORT       where to write the report (default docs/gpu_report.md)
#   BLD_PYTHON           the Python with torch for the bld_torch tests (default python3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() { echo "gpu-check: $*" >&2; exit 1; }

# 1. A GPU, or a clear statement that there is none (exit 0: nothing to check here).
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no GPU: nvidia-smi not found; nothing was built, run or measured (scripts/cuda-compile-check.sh checks that the CUDA code compiles)"
  exit 0
fi
if ! gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1) || [[ -z "$gpus" ]]; then
  echo "gpu-check: no GPU: nvidia-smi lists no device ($gpus); nothing was built, run or measured"
  exit 0
fi
echo "gpu-check: $gpus"

data=${BLD_DATA_DIR:-$root/.cache/data}
for f in tokenizers/llama3/tokenizer.json ref/llama3.encode.tsv; do
  [[ -f "$data/$f" ]] || fail "test data missing: $data/$f (run scripts/fetch-data.sh, or bring .cache/data along)"
done
export BLD_DATA_DIR="$data"

# 2. Build (or take a prebuilt binary).
if [[ -n "${BLD_CUDA_TESTS_BIN:-}" ]]; then
  bin=$BLD_CUDA_TESTS_BIN
  build_note="prebuilt binary $bin"
else
  nvcc=${CUDACXX:-$(command -v nvcc || true)}
  if [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
  [[ -n "$nvcc" ]] || fail "nvcc not found: cannot build the CUDA tests (set CUDACXX or BLD_CUDA_TESTS_BIN)"
  build=${BLD_GPU_BUILD_DIR:-build/gpu}
  archs=${BLD_CUDA_ARCHS:-native}
  jobs=${BLD_JOBS:-$(nproc)}
  generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBLD_ENABLE_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$archs" -DBLD_DATA_DIR="$data" \
    -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON -DBLD_BUILD_BENCHMARKS=OFF -DBLD_ENABLE_TORCH=OFF
  cmake --build "$build" -j "$jobs" --target bld_cuda_tests
  bin=$build/bld_cuda_tests
  build_note="$("$nvcc" --version | tail -n 2 | head -n 1), CMAKE_CUDA_ARCHITECTURES=$archs, Release"
  # The host-compiled entry point on device memory (tests/cuda/dispatch_host.cpp).
  arch_flag=-arch=native
  [[ "$archs" != native ]] && arch_flag="-arch=sm_${archs%%;*}"
  cudainc=$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include
  "${CXX:-c++}" -std=c++20 -O2 -Iinclude -I"$cudainc" -c tests/cuda/dispatch_host.cpp -o "$build/dispatch_host.o"
  "$nvcc" -std=c++20 -O2 --expt-relaxed-constexpr "$arch_flag" -Iinclude -c tests/cuda/dispatch_register.cu \
    -o "$build/dispatch_register.o"
  "$nvcc" "$arch_flag" "$build/dispatch_host.o" "$build/dispatch_register.o" -o "$build/bld_dispatch_host"
  dispatch_bin=$build/bld_dispatch_host
  # The distiller on device logits against the host (tests/cuda/distill_host.cpp).
  "${CXX:-c++}" -std=c++20 -O2 -Iinclude -I"$cudainc" -c tests/cuda/distill_host.cpp -o "$build/distill_host.o"
  "$nvcc" "$arch_flag" "$build/distill_host.o" "$build/dispatch_register.o" -o "$build/bld_distill_host"
  distill_bin=$build/bld_distill_host
  # The token-head loss on device student logits against the host (tests/cuda/token_head_host.cpp).
  "${CXX:-c++}" -std=c++20 -O2 -Iinclude -I"$cudainc" -c tests/cuda/token_head_host.cpp -o "$build/token_head_host.o"
  "$nvcc" "$arch_flag" "$build/token_head_host.o" "$build/dispatch_register.o" -o "$build/bld_token_head_host"
  token_head_bin=$build/bld_token_head_host
fi

# 3. Tests, then the benchmark.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set +e
"$bin" 2>&1 | tee "$work/tests.txt"
tests_rc=${PIPESTATUS[0]}
"$bin" --bench "$work/bench.md" 2>&1 | tee "$work/bench.txt"
bench_rc=${PIPESTATUS[0]}
dispatch_rc=0
dispatch_note="not built (prebuilt bld_cuda_tests given)"
if [[ -n "${dispatch_bin:-}" ]]; then
  "$dispatch_bin" 2>&1 | tee "$work/dispatch.txt"
  dispatch_rc=${PIPESTATUS[0]}
  dispatch_note="$([[ $dispatch_rc -eq 0 ]] && echo passed || echo "FAILED (exit $dispatch_rc)") — $(tail -n 1 "$work/dispatch.txt")"
fi
distill_rc=0
distill_note="not built (prebuilt bld_cuda_tests given)"
if [[ -n "${distill_bin:-}" ]]; then
  "$distill_bin" 2>&1 | tee "$work/distill.txt"
  distill_rc=${PIPESTATUS[0]}
  distill_note="$([[ $distill_rc -eq 0 ]] && echo passed || echo "FAILED (exit $distill_rc)") — $(tail -n 1 "$work/distill.txt")"
fi
token_head_rc=0
token_head_note="not built (prebuilt bld_cuda_tests given)"
if [[ -n "${token_head_bin:-}" ]]; then
  "$token_head_bin" 2>&1 | tee "$work/token_head.txt"
  token_head_rc=${PIPESTATUS[0]}
  token_head_note="$([[ $token_head_rc -eq 0 ]] && echo passed || echo "FAILED (exit $token_head_rc)") — $(tail -n 1 "$work/token_head.txt")"
fi
set -e
if [[ $tests_rc -eq 77 ]]; then fail "no GPU: bld_cuda_tests found no usable CUDA device ($(head -n 1 "$work/tests.txt"))"; fi

# bld_torch's CUDA dispatch, where this machine has a CUDA build of torch (Debian's is not):
# build the module with CUDA and run its CUDA-vs-CPU tests.
py=${BLD_PYTHON:-python3}
torch_note="skipped: $("$py" -c "import torch; print('torch', torch.__version__, 'is a CPU build' if not torch.version.cuda else ('CUDA ' + torch.version.cuda + ', torch.cuda.is_available() = ' + str(torch.cuda.is_available())))" 2>/dev/null || echo "no torch for $py")"
if "$py" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" 2>/dev/null; then
  set +e
  "$py" python/build_bld_torch.py --cuda on --out "$work/py" > "$work/torch.txt" 2>&1 &&
    BLD_TORCH_BUILD="$work/py" PYTHONPATH=tests/python "$py" -m unittest -v test_bld_torch.CudaDispatchTest >> "$work/torch.txt" 2>&1
  torch_rc=$?
  set -e
  torch_note="$([[ $torch_rc -eq 0 ]] && echo passed || echo "FAILED (exit $torch_rc)") — $(grep -E '^(Ran|OK|FAILED)' "$work/torch.txt" | paste -sd ';' -)"
fi
echo "gpu-check: bld_torch on CUDA tensors: $torch_note"

# 4. The report.
report=${BLD_GPU_REPORT:-docs/gpu_report.md}
fraction=$(grep -o 'float32 row pass: [0-9.]*%' "$work/bench.txt" | grep -o '[0-9.]*' || echo "?")
target="not measured"
if [[ "$fraction" != "?" ]]; then
  if awk -v f="$fraction" 'BEGIN { exit !(f >= 70) }'; then target="met ($fraction% ≥ 70%)"; else target="NOT met ($fraction% < 70%)"; fi
fi
{
  echo "# GPU report (issues 6 and 14)"
  echo
  echo "Written by \`scripts/gpu-check.sh\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')."
  echo
  echo "* GPU: $gpus"
  echo "* $(head -n 1 "$work/tests.txt")"
  echo "* Build: $build_note"
  echo "* CUDA tests: $([[ $tests_rc -eq 0 ]] && echo passed || echo "FAILED (exit $tests_rc)") — $(grep -E '^\[doctest\] (test cases|assertions)' "$work/tests.txt" | sed 's/\[doctest\] //' | tr -s ' ' | paste -sd ';' -)"
  echo "* Host-compiled bld::bld_loss on device memory, dense and compact (tests/cuda/dispatch_host.cpp): $dispatch_note"
  echo "* bld::distiller on device logits vs the host (tests/cuda/distill_host.cpp): $distill_note"
  echo "* distiller::token_head_loss on device student logits vs the host (tests/cuda/token_head_host.cpp): $token_head_note"
  echo "* bld_torch on CUDA tensors (tests/python CudaDispatchTest): $torch_note"
  echo "* Acceptance (row pass, float32, 4096 × 128,256, ≥ 70% of peak bandwidth): $target"
  echo
  echo "## Row-pass benchmark"
  echo
  if [[ -f "$work/bench.md" ]]; then cat "$work/bench.md"; else echo "The benchmark did not run (exit $bench_rc)."; fi
  echo
  echo "## Test output"
  echo
  echo '```text'
  tail -n 40 "$work/tests.txt"
  echo '```'
} > "$report"
echo "gpu-check: report written to $report"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 && $dispatch_rc -eq 0 && $distill_rc -eq 0 && $token_head_rc -eq 0 && ${torch_rc:-0} -eq 0 ]] ||
  fail "tests exit $tests_rc, benchmark exit $bench_rc, dispatch exit $dispatch_rc, distiller exit $distill_rc, token head exit $token_head_rc, bld_torch exit ${torch_rc:-0} (see $report)"
