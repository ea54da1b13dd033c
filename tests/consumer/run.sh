#!/usr/bin/env bash
# Builds and runs the consumer project in tests/consumer against bld in three ways:
#   1. bld configured alone and installed (`cmake --install`) into <work-dir>/prefix, then
#      find_package(bld CONFIG REQUIRED) with CMAKE_PREFIX_PATH=<work-dir>/prefix;
#   2. add_subdirectory(<bld-source-dir>);
#   3. FetchContent_Declare(bld SOURCE_DIR <bld-source-dir>) + FetchContent_MakeAvailable.
# Usage: tests/consumer/run.sh <bld-source-dir> <work-dir>
# Uses Ninja when it is installed, $CXX when set, $BLD_CMAKE (default: cmake on PATH) and at
# most $BLD_CONSUMER_JOBS (default 2) parallel jobs. Any failure stops the script with a
# message naming the step and the tail of that step's log (all logs stay in <work-dir>).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <bld-source-dir> <work-dir>" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
consumer="$src/tests/consumer"
jobs=${BLD_CONSUMER_JOBS:-2}
cmake=${BLD_CMAKE:-cmake}
[[ -f "$src/CMakeLists.txt" && -f "$consumer/CMakeLists.txt" ]] || {
  echo "bld consumers: $src is not bld's source tree" >&2
  exit 2
}

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

step=""
# shellcheck disable=SC2154 # rc is assigned inside the trap string
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo "bld consumers: FAILED at step: $step (exit $rc); logs in $work" >&2; fi' EXIT

# Runs a command with its output in <work>/<log>.log; on failure prints the log's tail.
logged() {
  local log="$work/$1.log"
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "---- $step: last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

# Fresh folders each run: a stale cache would hide a broken package.
rm -rf "$work/bld-build" "$work/prefix" "$work/find_package" "$work/subdirectory" "$work/fetchcontent"

step="configure bld alone for install"
logged bld-configure "$cmake" -S "$src" -B "$work/bld-build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$work/prefix" \
  -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_BENCHMARKS=OFF -DBLD_BUILD_EXAMPLES=OFF
step="build bld alone"
logged bld-build "$cmake" --build "$work/bld-build" -j "$jobs"
step="install bld into $work/prefix"
logged bld-install "$cmake" --install "$work/bld-build"
for f in include/bld/bld.hpp include/bld/io/json.hpp; do
  [[ -f "$work/prefix/$f" ]] || { echo "bld consumers: install lacks $f" >&2; exit 1; }
done
config=$(find "$work/prefix" -name bldConfig.cmake -print -quit)
[[ -n "$config" ]] || { echo "bld consumers: install lacks bldConfig.cmake" >&2; exit 1; }
for f in bldConfigVersion.cmake bldTargets.cmake; do
  [[ -f "$(dirname "$config")/$f" ]] || { echo "bld consumers: install lacks $f" >&2; exit 1; }
done

for mode in find_package subdirectory fetchcontent; do
  dir="$work/$mode"
  extra=(-DBLD_SOURCE_DIR="$src")
  if [[ $mode == find_package ]]; then extra+=(-DCMAKE_PREFIX_PATH="$work/prefix"); fi
  step="$mode: configure"
  logged "$mode-configure" "$cmake" -S "$consumer" -B "$dir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DBLD_CONSUMER_MODE="$mode" "${extra[@]}"
  step="$mode: build"
  logged "$mode-build" "$cmake" --build "$dir" -j "$jobs"
  # Nothing of bld's own (tests, benchmarks, examples) was built.
  step="$mode: check that only the consumer was built"
  if find "$dir" -type f \( -name 'bld_tests' -o -name 'bld_two_tu' -o -name 'bld-cli' -o -name 'bld_bench*' \) | grep -q .; then
    echo "bld consumers: $mode built bld's own tests/benchmarks/examples:" >&2
    find "$dir" -type f \( -name 'bld_tests' -o -name 'bld_two_tu' -o -name 'bld-cli' -o -name 'bld_bench*' \) >&2
    exit 1
  fi
  step="$mode: run"
  "$dir/bld_consumer"
  echo "bld consumers: $mode OK"
done

# 4. The optional bld::torch component (where libtorch's CMake package is installed): bld
#    configured with BLD_ENABLE_TORCH=ON and installed, then find_package(bld COMPONENTS torch).
if "$cmake" --find-package -DNAME=Torch -DCOMPILER_ID=GNU -DLANGUAGE=CXX -DMODE=EXIST >/dev/null 2>&1 ||
   [[ -n "$(find /usr/lib /usr/share /usr/local -maxdepth 5 -name TorchConfig.cmake -print -quit 2>/dev/null)" ]]; then
  rm -rf "$work/bld-torch-build" "$work/prefix-torch" "$work/torch"
  step="bld::torch: configure and install bld with BLD_ENABLE_TORCH=ON"
  logged bld-torch-configure "$cmake" -S "$src" -B "$work/bld-torch-build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$work/prefix-torch" -DBLD_ENABLE_TORCH=ON \
    -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_BENCHMARKS=OFF -DBLD_BUILD_EXAMPLES=OFF
  logged bld-torch-install "$cmake" --install "$work/bld-torch-build"
  step="bld::torch: configure the consumer (find_package(bld COMPONENTS torch))"
  logged torch-configure "$cmake" -S "$consumer/torch" -B "$work/torch" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix-torch"
  step="bld::torch: build"
  logged torch-build "$cmake" --build "$work/torch" -j "$jobs"
  step="bld::torch: run"
  "$work/torch/bld_torch_consumer"
  echo "bld consumers: find_package(bld COMPONENTS torch) OK"
else
  echo "bld consumers: no libtorch CMake package here: the bld::torch component was not checked"
fi
step=""
echo "bld consumers: all three ways OK"
