#!/usr/bin/env bash
# CI compile check of the CUDA kernels (issues 6 and 14): configures bld with -DBLD_ENABLE_CUDA=ON
# and builds every CUDA target for sm_80 and sm_90 — bld_cuda_compile_all (every .cuh, every
# kernel instantiated: row pass, projection, the device projector, dense and compact losses, the
# bld::cuda entries and the host entries' CUDA dispatch, the device token head) and bld_cuda_tests (the GPU tests, which
# ctest reports SKIPPED without a GPU) — then runs bld_cuda_tests once to show it skips cleanly
# (or passes, on a GPU machine); links two CUDA translation units that both include
# <bld/cuda.cuh> (tests/cuda/two_tu_*.cu); links a host-compiled translation unit that calls
# bld::bld_loss on CUDA views (tests/cuda/dispatch_host.cpp, no bld CUDA header) with one that
# registers the backend (dispatch_register.cu) and runs it: without a GPU the call must reach the
# CUDA backend (which reports the missing device); compiles bld_torch's CUDA side.
# No GPU is needed. Without nvcc it says so and exits 0.
#
#   bash scripts/cuda-compile-check.sh
#
# Environment: BLD_JOBS (default 2), BLD_CUDA_BUILD_DIR (default build/cuda),
# BLD_CUDA_ARCHS (default "80;90"), CUDACXX / PATH to pick nvcc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

nvcc=${CUDACXX:-$(command -v nvcc || true)}
if [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$nvcc" ]]; then
  echo "cuda-compile-check: nvcc not found (no CUDA toolkit): CUDA compile check skipped"
  exit 0
fi
echo "cuda-compile-check: $("$nvcc" --version | tail -n 2 | head -n 1)"

build=${BLD_CUDA_BUILD_DIR:-build/cuda}
jobs=${BLD_JOBS:-2}
archs=${BLD_CUDA_ARCHS:-80;90}
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

start=$(date +%s)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBLD_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$archs" \
  -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON -DBLD_BUILD_BENCHMARKS=OFF -DBLD_ENABLE_TORCH=OFF
cmake --build "$build" -j "$jobs" --target bld_cuda_compile_all bld_cuda_tests
end=$(date +%s)
echo "cuda-compile-check: CUDA targets built for sm_${archs//;/, sm_} in $((end - start)) s"

# Runs the GPU tests where there is a GPU; elsewhere they must skip (exit 77), not fail.
set +e
"$build/bld_cuda_tests"
rc=$?
set -e
if [[ $rc -eq 77 ]]; then
  echo "cuda-compile-check: no GPU here: bld_cuda_tests skipped (exit 77), as designed"
elif [[ $rc -ne 0 ]]; then
  echo "cuda-compile-check: bld_cuda_tests FAILED (exit $rc)"
  exit "$rc"
fi

# Two CUDA translation units that include <bld/cuda.cuh> link into one executable, for every
# architecture, with separate compilation off (whole-program) and on (-rdc=true, device link):
# a kernel or host function defined non-inline in a header would be a duplicate symbol. The
# executable is never run (no GPU needed).
start=$(date +%s)
two_tu="$build/two_tu"
mkdir -p "$two_tu"
gencode=()
for arch in ${archs//;/ }; do gencode+=(-gencode "arch=compute_$arch,code=sm_$arch"); done
for rdc in false true; do
  pids=()
  for part in a b; do
    "$nvcc" -std=c++20 -O1 --expt-relaxed-constexpr "${gencode[@]}" -rdc="$rdc" -Iinclude \
      -c "tests/cuda/two_tu_$part.cu" -o "$two_tu/two_tu_$part.rdc_$rdc.o" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  "$nvcc" "${gencode[@]}" -rdc="$rdc" "$two_tu/two_tu_a.rdc_$rdc.o" "$two_tu/two_tu_b.rdc_$rdc.o" \
    -o "$two_tu/bld_two_tu_cuda.rdc_$rdc"
done
echo "cuda-compile-check: two CUDA translation units including bld/cuda.cuh link (sm_${archs//;/, sm_}; -rdc=false and true) in $(( $(date +%s) - start )) s"

# The one loss entry point across compilers (issue 14): the host compiler builds
# tests/cuda/dispatch_host.cpp (bld.hpp and the CUDA runtime's C API only), nvcc builds
# dispatch_register.cu (which includes <bld/cuda.cuh>) for every architecture; linked and run.
start=$(date +%s)
disp="$build/dispatch"
mkdir -p "$disp"
cudainc_for_host=$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include
[[ -f "$cudainc_for_host/cuda_runtime_api.h" ]] || cudainc_for_host=/usr/local/cuda/include
"${CXX:-c++}" -std=c++20 -O1 -Wall -Wextra -Werror -Iinclude -I"$cudainc_for_host" -c tests/cuda/dispatch_host.cpp \
  -o "$disp/dispatch_host.o"
"$nvcc" -std=c++20 -O1 --expt-relaxed-constexpr "${gencode[@]}" -Iinclude -c tests/cuda/dispatch_register.cu \
  -o "$disp/dispatch_register.o"
"$nvcc" "${gencode[@]}" "$disp/dispatch_host.o" "$disp/dispatch_register.o" -o "$disp/bld_dispatch_host"
"$disp/bld_dispatch_host"
# The distiller on CUDA teacher logits (tests/cuda/distill_host.cpp: <bld/cpu.hpp>, host compiler)
# reaches the device projector the same registering TU provides.
"${CXX:-c++}" -std=c++20 -O1 -Wall -Wextra -Werror -Iinclude -I"$cudainc_for_host" -c tests/cuda/distill_host.cpp \
  -o "$disp/distill_host.o"
"$nvcc" "${gencode[@]}" "$disp/distill_host.o" "$disp/dispatch_register.o" -o "$disp/bld_distill_host"
"$disp/bld_distill_host"
# The token-head loss on CUDA student logits (tests/cuda/token_head_host.cpp, host compiler)
# reaches the device token head (bld/backends/cuda/token_head.cuh) the same TU registers.
"${CXX:-c++}" -std=c++20 -O1 -Wall -Wextra -Werror -Iinclude -I"$cudainc_for_host" -c tests/cuda/token_head_host.cpp \
  -o "$disp/token_head_host.o"
"$nvcc" "${gencode[@]}" "$disp/token_head_host.o" "$disp/dispatch_register.o" -o "$disp/bld_token_head_host"
"$disp/bld_token_head_host"
echo "cuda-compile-check: a host-compiled bld::bld_loss on CUDA views, bld::distiller on CUDA logits and its token-head loss on CUDA student logits link with a registering CUDA TU and reach the backend (sm_${archs//;/, sm_}) in $(( $(date +%s) - start )) s"

# bld_torch's CUDA side (issue 6 item 5, issue 14): python/bld_torch_cuda.cu with nvcc for the same
# architectures (it only registers bld's CUDA backend: CUDA tensors take the module's one loss
# path), and python/bld_torch.cpp with BLD_TORCH_WITH_CUDA (syntax only; bld/torch/loss.hpp then
# reads torch's current stream from c10/cuda) against
# Debian's torch headers. Debian's torch is a CPU build whose c10/cuda headers lack the one
# CMake-generated file, c10/cuda/impl/cuda_cmake_macros.h: a stand-in defines what it would.
start=$(date +%s)
obj="$build/bld_torch_cuda"
mkdir -p "$obj"
for arch in ${archs//;/ }; do
  "$nvcc" -std=c++20 -O2 --expt-relaxed-constexpr -arch="sm_$arch" -DBLD_TORCH_WITH_CUDA \
    -Iinclude -Ipython -c python/bld_torch_cuda.cu -o "$obj/bld_torch_cuda.sm_$arch.o"
done
py=/usr/bin/python3
if "$py" -c "import torch" 2>/dev/null; then
  stub="$obj/c10stub"
  mkdir -p "$stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
  mapfile -t torch_inc < <("$py" -c "import torch.utils.cpp_extension as c; print('\n'.join(c.include_paths()))" 2>/dev/null)
  pyinc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  # The CUDA runtime headers torch's CUDA headers include. nvcc may be a symlink or a wrapper
  # outside the toolkit (e.g. /usr/local/bin/nvcc), so ask nvcc where its headers are first.
  cudainc=""
  mapfile -t cand < <("$nvcc" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 |
    sed -n 's/^#\$ INCLUDES=//p' | grep -o -- '-I[^" ]*' | sed 's/^-I//')
  cand+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")/include")
  [[ -n "${CUDA_HOME:-}" ]] && cand+=("$CUDA_HOME/include")
  cand+=(/usr/local/cuda/include)
  for dir in "${cand[@]}"; do
    if [[ -f "$dir/cuda_runtime_api.h" ]]; then cudainc=$dir; break; fi
  done
  if [[ -z "$cudainc" ]]; then
    echo "cuda-compile-check: cuda_runtime_api.h not found next to $nvcc (looked in: ${cand[*]})" >&2
    exit 1
  fi
  c++ -std=c++20 -fsyntax-only -Wall -Wno-deprecated-declarations -DBLD_TORCH_WITH_CUDA \
    -DTORCH_EXTENSION_NAME=_bld_torch -DTORCH_API_INCLUDE_EXTENSION_H "${torch_inc[@]/#/-I}" -I"$stub" -I"$pyinc" \
    -I"$cudainc" -Iinclude -Ipython python/bld_torch.cpp
  echo "cuda-compile-check: bld_torch CUDA dispatch compiled (nvcc sm_${archs//;/, sm_}; g++ with torch headers) in $(( $(date +%s) - start )) s"
else
  echo "cuda-compile-check: bld_torch CUDA dispatch: nvcc side compiled; no torch here for the g++ side"
fi
