#!/usr/bin/env bash
# Cross-builds bld's header-only C++ tests for AArch64 and runs them under qemu-user: the NEON
# level (xsimd::neon64, the AArch64 baseline) and the scalar level against the fp64 reference
# (tests/test_simd.cpp), the projection oracles (tests/test_projection.cpp) and the byte loss
# (tests/test_loss.cpp). Only files that need bld::bld alone: the JSON loaders link simdjson, an
# x86 library here, so test_simd.cpp is built without its real-data case
# (BLD_TEST_NO_REAL_DATA). Exits non-zero on a failed test or if NEON is not the level in use.
# Installs its tools itself (as root; idempotent, like scripts/install-deps.sh).
#   bash scripts/test-aarch64.sh            # BLD_JOBS=2 compile jobs by default
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

pkgs=(g++-aarch64-linux-gnu qemu-user libxsimd-dev doctest-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "test-aarch64.sh: needs ${missing[*]}; run as root (apt-get)" >&2; exit 1; fi
  echo "test-aarch64.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

out=build/aarch64
sysroot=/usr/aarch64-linux-gnu
# The header-only dependencies, and nothing else of /usr/include: on the cross compiler's path
# the x86 glibc and libstdc++ headers there would shadow the AArch64 ones.
mkdir -p "$out/include" "$out/obj"
ln -sfn /usr/include/doctest "$out/include/doctest"
ln -sfn /usr/include/xsimd "$out/include/xsimd"

cxx=aarch64-linux-gnu-g++
flags=(-std=gnu++20 -O2 -Wall -Wextra -Wpedantic -Iinclude -isystem "$out/include"
       -DBLD_TEST_NO_REAL_DATA -DBLD_SOURCE_DIR="\"$root\"" -DBLD_DATA_DIR="\"$root/.cache/data\"")
sources=(tests/main.cpp tests/test_simd.cpp tests/test_projection.cpp tests/test_loss.cpp)
jobs=${BLD_JOBS:-2}
echo "== aarch64: $cxx $($cxx -dumpversion), ${#sources[@]} files, $jobs jobs"
# (xargs appends one source to the compiler command: "$@" is the command, the last word the file)
printf '%s\n' "${sources[@]}" | xargs -P "$jobs" -n 1 bash -c \
  'src=${!#}; exec "${@:1:$#-1}" -c "$src" -o "'"$out"'/obj/$(basename "$src" .cpp).o"' _ "$cxx" "${flags[@]}"
objs=()
for s in "${sources[@]}"; do objs+=("$out/obj/$(basename "$s" .cpp).o"); done
"$cxx" "${objs[@]}" -pthread -o "$out/bld_tests_aarch64"

echo "== aarch64: bld_tests under qemu-aarch64"
log="$out/bld_tests_aarch64.log"
set +e
qemu-aarch64 -L "$sysroot" "$out/bld_tests_aarch64" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then echo "test-aarch64.sh: the tests failed under qemu-aarch64 (exit $rc)" >&2; exit "$rc"; fi
# tests/test_simd.cpp reports the levels; NEON must be both the detected and the default one.
if ! grep -q "detected SIMD level: neon; default level: neon" "$log"; then
  echo "test-aarch64.sh: NEON is not the SIMD level the AArch64 build runs (see $log)" >&2
  exit 1
fi
echo "test-aarch64.sh: AArch64 tests pass; SIMD level neon"
