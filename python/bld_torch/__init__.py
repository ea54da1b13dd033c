"""bld_torch — Byte-Level Distillation losses and the student byte head for PyTorch.

Install (offline, against Debian's python3-torch), from the repository's root::

    python3 -m venv --system-site-packages V && V/bin/pip install --no-build-isolation ./python

or build in place for development with ``/usr/bin/python3 python/build_bld_torch.py --out
build-py``, then ``PYTHONPATH=build-py python3 -c "import bld_torch"``.

Modules: ``bld_torch.losses`` (``byte_loss``, ``bld_loss``), ``bld_torch.head`` (``ByteHead``),
``bld_torch.targets`` (``load_tokenizer``, ``Tokenizer``, ``canonical_targets``),
``bld_torch.distiller`` (``Distiller``, ``Targets``, ``CoveringTargets``; ``token_head_loss`` on the student's own
token logits); all of them are importable from ``bld_torch`` itself.

Shapes (``...`` = any leading dimensions, e.g. [batch, seq]; they are flattened into tokens):

* ``head_logits``      [..., K, 260] float32/float64 — the byte head's logits, 1 <= K <= 260
* ``teacher_targets``  [..., K, 260] float32/float64 — teacher next-byte probabilities
* ``true_bytes``       [..., K] int32/int64 — the text byte of each slot (0..259)
* ``mask``             [..., K] bool/uint8 — True = active slot; None = all active

float16 and bfloat16 logits and targets (autocast) are computed in float32: the loss is float32
and the gradient flows back in the logits' own dtype.

Conventions (the same as the C++ library, ``bld/loss/byte_loss.hpp``):

* temperature tau applies to the student logits of the divergence term only,
  ``q = softmax(head_logits / tau)``; the teacher targets are used as given; there is no tau**2
  factor (multiply lambda_kl by tau**2 for Hinton-style scaling). The byte cross-entropy always
  uses tau = 1.
* divergences per active slot: ``kl`` = KL(p||q) (forward, the default), ``reverse_kl`` =
  KL(q||p) with log p floored at log(target_floor), ``jsd`` (natural log), ``tvd``; ``ce`` is
  -log softmax(z)[true byte]. 0·log 0 = 0.
* reductions: ``eq5`` = sum over the active heads of a token, averaged over the tokens with at
  least one active slot (the paper's eq. 5); ``slot_mean`` = mean over active slots;
  ``none`` = per-slot values [..., K] (0 at inactive slots). Nothing active gives 0.
* the gradient w.r.t. head_logits is bld's analytic one, computed in the same pass as the
  value; no gradient flows into teacher_targets (they are constants of the loss).
* inputs are made contiguous; they must all be on the CPU, or all on one CUDA device when
  bld_torch was built with CUDA (``bld_torch.WITH_CUDA``; built against a CUDA build of torch
  with nvcc present): the loss then runs bld's CUDA kernels on torch's current stream.
  ``canonical_targets`` runs on the CPU.

Errors are raised as ``bld_torch.Error`` (a RuntimeError) subclasses carrying bld's message:
``ShapeError`` (also ValueError) for shapes, K outside 1..260 and devices, ``DtypeError`` (also
TypeError) for dtypes, ``DomainError`` (also ValueError) for NaN/inf logits, bad probabilities,
out-of-range bytes and bad options. An argument that is not a tensor at all is a plain
TypeError naming it; ``Tokenizer`` lookups raise KeyError / IndexError.
"""

from ._version import __version__
from . import _bld_torch as _C

Error = _C.Error
ShapeError = _C.ShapeError
DtypeError = _C.DtypeError
DomainError = _C.DomainError

BYTE_ALPHABET_SIZE = _C.byte_alphabet_size  # 260: 256 bytes, STOP, three reserved
MAX_BYTE_HEADS = _C.max_byte_heads
WITH_CUDA = bool(_C.with_cuda)  # the loss dispatches CUDA tensors to bld's CUDA kernels

from .losses import bld_loss, byte_loss  # noqa: E402
from .head import ByteHead  # noqa: E402
from .targets import Tokenizer, canonical_targets, load_tokenizer  # noqa: E402
from .distiller import CoveringTargets, Distiller, Targets, aligned_windows  # noqa: E402


def token_head_loss(distiller, student_logits, student_ids, targets, **kwargs):
    """``distiller.token_head_loss(student_logits, student_ids, targets, **kwargs)``: token-head
    distillation of the student's own logits against the distiller's targets (see
    ``Distiller.token_head_loss``)."""
    if not isinstance(distiller, Distiller):
        raise TypeError(f"bld_torch.token_head_loss: argument `distiller`: expected a bld_torch.Distiller, "
                        f"got {type(distiller).__name__}")
    return distiller.token_head_loss(student_logits, student_ids, targets, **kwargs)


__all__ = [
    "Distiller",
    "Targets",
    "CoveringTargets",
    "aligned_windows",
    "token_head_loss",
    "Tokenizer",
    "load_tokenizer",
    "canonical_targets",
    "byte_loss",
    "bld_loss",
    "ByteHead",
    "Error",
    "ShapeError",
    "DtypeError",
    "DomainError",
    "BYTE_ALPHABET_SIZE",
    "MAX_BYTE_HEADS",
    "WITH_CUDA",
    "__version__",
]
