#!/usr/bin/env bash
# Build the bld_torch Python module and run its tests; exits non-zero on any failure.
#
#   scripts/test-python.sh            # builds into build-py/
#   BLD_TORCH_BUILD=/tmp/x scripts/test-python.sh
#
# Needs Debian's python3-torch, libtorch-dev, ninja-build and g++; python3-pytest if present
# (plain unittest otherwise). PYTHON overrides the interpreter (default /usr/bin/python3: the
# one Debian's torch is installed for).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-/usr/bin/python3}"
out="${BLD_TORCH_BUILD:-$repo/build-py}"

"$python" "$repo/python/build_bld_torch.py" --out "$out"
export BLD_TORCH_BUILD="$out"

if "$python" -c "import pytest" 2>/dev/null; then
    "$python" -m pytest -q "$repo/tests/python/test_bld_torch.py"
else
    "$python" -m unittest discover -s "$repo/tests/python" -p "test_bld_torch.py" -v
fi
# The docs' PyTorch example (docs/02_embedding.md) runs against the module just built.
PYTHONPATH="$out" "$python" "$repo/examples/bld_torch_example.py"
