#!/usr/bin/env bash
# Installs the bld_torch Python module with pip, runs its tests against the installed package,
# then builds it the developer way and runs the docs' example; exits non-zero on any failure.
#
#   scripts/test-python.sh            # everything under build-py/
#   BLD_TORCH_BUILD=/tmp/x scripts/test-python.sh
#
# 1. pip: a fresh virtual environment OUT/.venv that sees Debian's python3-torch
#    (--system-site-packages), `pip install --no-build-isolation ./python` offline (objects kept
#    in OUT/pip-build, so a rerun recompiles only what changed); bld_torch imported from it
#    outside the source tree, one small loss.
# 2. the test suites (tests/python/test_bld_torch.py, test_distiller.py, test_token_head_oracle.py, test_token_head.py,
#    test_covering.py)
#    against that installed package, and the Hugging Face-style training step (examples/hf_train_step.py).
# 3. the developer route, python/build_bld_torch.py --out OUT (PYTHONPATH=OUT), checked by the
#    docs' PyTorch example (docs/02_embedding.md).
#
# Needs Debian's python3-torch, libtorch-dev, ninja-build, g++, python3-venv and python3-pip;
# python3-pytest if present (plain unittest otherwise). PYTHON overrides the interpreter (default
# /usr/bin/python3: the one Debian's torch is installed for).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-/usr/bin/python3}"
out="${BLD_TORCH_BUILD:-$repo/build-py}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
venv="$out/.venv"
elsewhere="$out/cwd"  # an empty working directory: nothing importable from the tree or OUT

# ---- 1. pip install into a fresh venv: the commands of the README / docs/06_trainers.md --------
# They name python3 and ./python: here python3 is $python (Debian's, with torch) and ./python a
# link to the repository's python/ in OUT, so the venv lands in OUT and the tree stays clean.
python3() { command "$python" "$@"; }
rm -rf "$venv" "$elsewhere"
mkdir -p "$elsewhere"
ln -sfn "$repo/python" "$out/python"
echo "test-python.sh: pip install --no-build-isolation $repo/python (into $venv)"
(
    cd "$out"
    export BLD_TORCH_BUILD_DIR="$out/pip-build" PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_QUIET=1
    python3 -m venv --system-site-packages .venv
    .venv/bin/pip install --no-build-isolation ./python
)
(cd "$elsewhere" && "$venv/bin/python" - "$repo" <<'EOF'
import pathlib
import sys

import torch

import bld_torch

where = pathlib.Path(bld_torch.__file__).resolve()
repo = pathlib.Path(sys.argv[1]).resolve()
assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), f"bld_torch imported from {where}, not the venv"
assert not where.is_relative_to(repo / "python"), f"bld_torch imported from the source tree: {where}"
z = torch.zeros(2, 3, 260, requires_grad=True)
p = torch.full((2, 3, 260), 1.0 / 260, dtype=torch.float64)
loss = bld_torch.byte_loss(z, p)  # uniform student, uniform teacher: KL = 0
loss.backward()
assert abs(loss.item()) < 1e-6 and z.grad.abs().max().item() < 1e-6, (loss.item(), z.grad.abs().max().item())
print(f"test-python.sh: bld_torch {bld_torch.__version__} installed at {where.parent}; a small loss ran")
EOF
)

# The developer route's build (step 3) compiles one translation unit on one core: it runs in
# the background while the suites below (mostly one core) run against the installed package.
dev_log="$out/dev-build.log"
"$python" "$repo/python/build_bld_torch.py" --out "$out" >"$dev_log" 2>&1 &
dev_pid=$!
trap 'kill "$dev_pid" 2>/dev/null || true' EXIT

# ---- 2. the test suites against the installed package; the Hugging Face-style step ----------
export BLD_TORCH_INSTALLED=1
export BLD_DATA_DIR="${BLD_DATA_DIR:-$repo/.cache/data}"
for suite in test_bld_torch.py test_distiller.py test_token_head_oracle.py test_token_head.py test_covering.py; do
    if "$venv/bin/python" -c "import pytest" 2>/dev/null; then
        (cd "$elsewhere" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/python/$suite")
    else
        (cd "$elsewhere" && "$venv/bin/python" -m unittest discover -s "$repo/tests/python" -p "$suite" -v)
    fi
done
# docs/06_trainers.md's training step (tiny models standing in for pretrained ones).
(cd "$elsewhere" && "$venv/bin/python" "$repo/examples/hf_train_step.py")
unset BLD_TORCH_INSTALLED

# ---- 3. the developer route: build_bld_torch.py, checked by the docs' example ---------------
if ! wait "$dev_pid"; then
    cat "$dev_log" >&2
    echo "test-python.sh: python/build_bld_torch.py --out $out failed" >&2
    exit 1
fi
cat "$dev_log"
PYTHONPATH="$out" "$python" "$repo/examples/bld_torch_example.py"
