#!/usr/bin/env bash
# Installs everything bld's build, tests, benchmarks and demo need on Debian 12 (as root).
# Idempotent: apt-get skips what is already installed.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "install-deps.sh: run as root (apt-get)" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(
  build-essential cmake ninja-build git ca-certificates
  libeigen3-dev libxsimd-dev doctest-dev libbenchmark-dev   # bld's declared dependencies
  libsimdjson-dev nlohmann-json3-dev                         # JSON loaders (bld::json)
  fortunes fortunes-de fortunes-zh                           # real text (English, German, Chinese)
  bible-kjv bible-kjv-text python3.11-doc                    # the efficacy corpus (scripts/prepare-efficacy.sh)
  python3 python3-numpy python3-torch libtorch-dev python3-setuptools python3-matplotlib
  libopenblas0-pthread                                       # libtorch's BLAS: OpenBLAS, not the reference one
  pybind11-dev python3-dev                                   # the bld_torch extension (torch/extension.h)
  python3-venv python3-pip python3-wheel                     # pip install ./python (scripts/test-python.sh)
  clang libclang-rt-14-dev                                   # sanitizers / fuzzing with clang
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node.js + npm fetch the npm data and run the JS reference encoders; any install on PATH will do
# (a machine may have a newer Node than Debian's, whose npm package would conflict with it).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps.sh: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps.sh: all packages present"
