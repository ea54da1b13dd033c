# Sourced by scripts that run libtorch on the CPU (scripts/distill-demo.sh): Debian 12's OpenBLAS
# (0.3.21) picks its kernels by CPU model and falls back to its SSE3 "Prescott" kernels on models
# newer than it knows (e.g. Intel model 207, Emerald Rapids) — measured on the development
# machine: the efficacy teacher trains 2.6× slower than with the AVX-512 kernels. When OpenBLAS
# reports Prescott on a CPU with AVX-512 (or AVX2), this names that kernel family in
# OPENBLAS_CORETYPE; a value already set is left alone, and nothing changes where OpenBLAS knows
# the CPU or is not the BLAS in use.
if [[ -z "${OPENBLAS_CORETYPE:-}" && -r /proc/cpuinfo ]]; then
  _bld_blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
  _bld_core=""
  [[ "$_bld_blas" == *openblas* ]] &&
    _bld_core=$(OPENBLAS_VERBOSE=2 /usr/bin/python3 -c "import ctypes; ctypes.CDLL('$_bld_blas')" 2>&1 || true)
  if [[ "$_bld_core" == *"Core: Prescott"* ]]; then
    if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
      export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then
      export OPENBLAS_CORETYPE=Haswell
    fi
    [[ -n "${OPENBLAS_CORETYPE:-}" ]] && echo "note: OpenBLAS does not know this CPU model; using its ${OPENBLAS_CORETYPE} kernels (OPENBLAS_CORETYPE)"
  fi
  unset _bld_blas _bld_core
fi
