#!/usr/bin/env bash
# The README's test command: installs what it needs, fetches the real data, builds everything
# and runs the whole suite (ctest: C++ unit/conformance tests, Python oracle tests, consumer
# builds), then the C++ tests again under ASan + UBSan.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
bash scripts/fetch-data.sh
jobs=${BLD_JOBS:-2}
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON \
  -DBLD_BUILD_BENCHMARKS=ON -DBLD_ENABLE_TORCH=ON
cmake --build build/test -j "$jobs"
# Sanitizers: the core suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBLD_BUILD_TESTS=ON -DBLD_BUILD_EXAMPLES=ON \
  -DBLD_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake --build build/asan -j "$jobs" --target bld_tests
echo "== bld_tests under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/asan/tests/bld_tests
echo "== full suite (ctest)"
ctest --test-dir build/test --output-on-failure -j "$jobs"
