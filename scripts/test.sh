#!/usr/bin/env bash
# The README's test command: installs what it needs, fetches the real data, builds everything
# and runs the whole suite:
#   1. ctest: C++ unit / oracle / conformance tests, Python oracle tests, the bld_torch module's
#      tests, consumer builds, docs checks, examples;
#   2. the C++ suite again under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. concurrent projections under ThreadSanitizer;
#   4. each libFuzzer harness briefly (scripts/fuzz.sh; longer runs: bash scripts/fuzz.sh 600);
#   5. the CUDA kernels compiled for sm_80 and sm_90 with nvcc (their GPU tests skip without a GPU);
#   6. the SIMD, projection and loss tests cross-built for AArch64 and run under qemu-user
#      (scripts/test-aarch64.sh: the NEON level against the reference).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
bash scripts/fetch-data.sh
bash scripts/prepare-distill.sh # the distillation example's cached ids (example_distill_smoke)
jobs=${BLD_JOBS:-2}
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON \
  -DBLD_BUILD_BENCHMARKS=ON -DBLD_ENABLE_TORCH=ON
cmake --build build/test -j "$jobs"

echo "== bld_tests under ASan + UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON \
  -DBLD_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake --build build/asan -j "$jobs" --target bld_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/asan/tests/bld_tests

echo "== concurrent projections under TSan"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON \
  -DBLD_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=thread"
cmake --build build/tsan -j "$jobs" --target bld_concurrency_tests
TSAN_OPTIONS=halt_on_error=1 build/tsan/tests/bld_concurrency_tests

echo "== libFuzzer harnesses, ${BLD_FUZZ_SECONDS:-10} s each"
bash scripts/fuzz.sh "${BLD_FUZZ_SECONDS:-10}"

echo "== CUDA headers with nvcc (sm_80, sm_90)"
bash scripts/cuda-compile-check.sh

echo "== aarch64: the header-only tests cross-built, NEON level, under qemu-user"
bash scripts/test-aarch64.sh

echo "== full suite (ctest)"
ctest --test-dir build/test --output-on-failure -j "$jobs"
