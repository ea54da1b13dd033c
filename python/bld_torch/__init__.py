"""bld_torch — Byte-Level Distillation losses and the student byte head for PyTorch.

Built from bld's C++ headers by ``/usr/bin/python3 python/build_bld_torch.py --out build-py``;
then ``PYTHONPATH=build-py python3 -c "import bld_torch"``.

Shapes (``...`` = any leading dimensions, e.g. [batch, seq]; they are flattened into tokens):

* ``head_logits``      [..., K, 260] float32/float64 — the byte head's logits, 1 <= K <= 260
* ``teacher_targets``  [..., K, 260] float32/float64 — teacher next-byte probabilities
* ``true_bytes``       [..., K] int32/int64 — the text byte of each slot (0..259)
* ``mask``             [..., K] bool/uint8 — True = active slot; None = all active

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
  bld_torch was built with CUDA (``bld_torch.WITH_CUDA``; python/build_bld_torch.py against a
  CUDA build of torch): the loss then runs bld's CUDA kernels on torch's current stream.
  ``canonical_targets`` runs on the CPU.

Errors are raised as ``bld_torch.Error`` (a RuntimeError) subclasses carrying bld's message:
``ShapeError`` (also ValueError) for shapes, K outside 1..260 and devices, ``DtypeError`` (also
TypeError) for dtypes, ``DomainError`` (also ValueError) for NaN/inf logits, bad probabilities,
out-of-range bytes and bad options.
"""

import math

import torch

from . import _bld_torch as _C

Error = _C.Error
ShapeError = _C.ShapeError
DtypeError = _C.DtypeError
DomainError = _C.DomainError

BYTE_ALPHABET_SIZE = _C.byte_alphabet_size  # 260: 256 bytes, STOP, three reserved
MAX_BYTE_HEADS = _C.max_byte_heads
WITH_CUDA = bool(_C.with_cuda)  # the loss dispatches CUDA tensors to bld's CUDA kernels

__all__ = [
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
]

_DIVERGENCES = ("kl", "forward_kl", "reverse_kl", "jsd", "tvd")
_REDUCTIONS = ("eq5", "slot_mean", "none")


class _ByteLossFunction(torch.autograd.Function):
    """value = bld loss(logits); backward multiplies bld's saved analytic gradient."""

    @staticmethod
    def forward(ctx, logits, targets, true_bytes, mask, mode, kind, temperature, reduction,
                lambda_byte, lambda_kl, target_floor):
        need_grad = bool(ctx.needs_input_grad[0])
        value, grad = _C.loss(logits, targets, true_bytes, mask, mode, kind, float(temperature),
                              reduction, float(lambda_byte), float(lambda_kl),
                              float(target_floor), need_grad)
        ctx.per_slot = reduction == "none"
        if need_grad:
            ctx.save_for_backward(grad)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.per_slot:  # the Jacobian is block-diagonal: one slot's value, one slot's logits
            grad_logits = grad * grad_output.unsqueeze(-1)
        else:
            grad_logits = grad * grad_output
        return (grad_logits,) + (None,) * 10


def _shape(t):
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_tensor(x, name, optional=False):
    if x is None and optional:
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bld_torch: argument `{name}`: expected a torch.Tensor, got {type(x).__name__}")


def _flatten(head_logits, teacher_targets, true_bytes, mask):
    """[..., K, 260] → [T, K, 260] (and [..., K] → [T, K]); returns the leading shape too."""
    if head_logits.dim() < 3:
        raise ShapeError(f"bld_torch: argument `head_logits`: expected [..., K, 260] byte-head "
                         f"logits, got {_shape(head_logits)}")
    lead = tuple(head_logits.shape[:-2])
    k, a = head_logits.shape[-2], head_logits.shape[-1]

    def flat(x, name, tail):
        if x is None:
            return None
        if tuple(x.shape) != lead + tail:
            want = "[" + ", ".join(str(s) for s in lead + tail) + "]"
            raise ShapeError(f"bld_torch: argument `{name}`: expected {want} to match head_logits "
                             f"{_shape(head_logits)}, got {_shape(x)}")
        return x.reshape((tokens,) + tail).contiguous()

    tokens = math.prod(lead)
    z = head_logits.reshape(tokens, k, a).contiguous()
    return (z, flat(teacher_targets, "teacher_targets", (k, a)), flat(true_bytes, "true_bytes", (k,)),
            flat(mask, "mask", (k,)), lead)


def _call(head_logits, teacher_targets, true_bytes, mask, mode, kind, temperature, reduction,
          lambda_byte, lambda_kl, target_floor):
    _check_tensor(head_logits, "head_logits")
    _check_tensor(teacher_targets, "teacher_targets", optional=True)
    _check_tensor(true_bytes, "true_bytes", optional=True)
    _check_tensor(mask, "mask", optional=True)
    if reduction not in _REDUCTIONS:
        raise DomainError(f"bld_torch: reduction={reduction!r}: expected one of {', '.join(_REDUCTIONS)}")
    z, p, y, m, lead = _flatten(head_logits, teacher_targets, true_bytes, mask)
    value = _ByteLossFunction.apply(z, p, y, m, mode, kind, temperature, reduction, lambda_byte,
                                    lambda_kl, target_floor)
    if reduction == "none":
        value = value.reshape(lead + (z.shape[1],))
    return value


def byte_loss(head_logits, teacher_targets, mask=None, kind="kl", temperature=1.0, reduction="eq5",
              true_bytes=None, target_floor=1e-12):
    """One byte loss term between the teacher's byte distributions and the byte head.

    Args:
        head_logits: [..., K, 260] float32/float64 logits (gradients flow here).
        teacher_targets: [..., K, 260] teacher probabilities (ignored, may be None, for "ce").
        mask: [..., K] bool/uint8, True = active slot; None = every slot active.
        kind: "kl" (forward KL(p||q), default), "reverse_kl", "jsd", "tvd", or "ce" — byte
            cross-entropy on ``true_bytes``.
        temperature: tau > 0 for the divergences, q = softmax(z / tau), no tau**2 factor.
        reduction: "eq5", "slot_mean" or "none" (see the module docstring).
        true_bytes: [..., K] int32/int64, needed by kind="ce" only.
        target_floor: epsilon in reverse KL's log max(p, epsilon).

    Returns:
        A 0-dim tensor (or [..., K] for reduction="none") of head_logits' dtype.
    """
    if kind == "ce":
        if true_bytes is None:
            raise DomainError("bld_torch.byte_loss: kind='ce' needs true_bytes")
        return _call(head_logits, None, true_bytes, mask, "ce", "kl", 1.0, reduction, 1.0, 0.0,
                     target_floor)
    if kind not in _DIVERGENCES:
        raise DomainError(f"bld_torch.byte_loss: kind={kind!r}: expected one of "
                          f"{', '.join(_DIVERGENCES + ('ce',))}")
    if true_bytes is not None:
        raise DomainError("bld_torch.byte_loss: true_bytes is used by kind='ce' only; "
                          "bld_loss combines the cross-entropy with a divergence")
    if teacher_targets is None:
        raise DomainError(f"bld_torch.byte_loss: kind={kind!r} needs teacher_targets")
    return _call(head_logits, teacher_targets, None, mask, "divergence", kind, temperature,
                 reduction, 0.0, 1.0, target_floor)


def bld_loss(head_logits, teacher_targets, true_bytes, mask=None, lambda_byte=1.0, lambda_kl=0.1,
             kind="kl", temperature=1.0, reduction="eq5", target_floor=1e-12):
    """The BLD byte term: lambda_byte * CE(true bytes) + lambda_kl * D(teacher || student).

    Defaults follow the paper: lambda_byte = 1, lambda_kl = 0.1, forward KL, tau = 1, eq. 5.
    ``kind`` picks the divergence ("kl", "reverse_kl", "jsd", "tvd"); tau applies to it only.
    The token-level cross-entropy of the student's own LM head is the trainer's to add.
    """
    if kind not in _DIVERGENCES:
        raise DomainError(f"bld_torch.bld_loss: kind={kind!r}: expected one of {', '.join(_DIVERGENCES)}")
    if teacher_targets is None or true_bytes is None:
        raise DomainError("bld_torch.bld_loss: needs teacher_targets and true_bytes")
    return _call(head_logits, teacher_targets, true_bytes, mask, "bld", kind, temperature,
                 reduction, lambda_byte, lambda_kl, target_floor)


class ByteHead(torch.nn.Module):
    """The student's byte head: K parallel linear layers hidden -> 260.

    ``forward(hidden [..., hidden_size]) -> logits [..., K, 260]``; head j predicts byte j of
    the student token whose hidden state it reads. Parameters ``weight`` [K, 260, hidden_size]
    and ``bias`` [K, 260], initialized like K ``torch.nn.Linear`` layers (uniform in
    +-1/sqrt(hidden_size)); the same layout as the C++ ``bld::byte_head``.
    """

    def __init__(self, hidden_size, k=10, *, device=None, dtype=None):
        super().__init__()
        if int(hidden_size) < 1:
            raise ValueError(f"ByteHead: hidden_size must be >= 1, got {hidden_size}")
        if not 1 <= int(k) <= MAX_BYTE_HEADS:
            raise ValueError(f"ByteHead: k must be in 1..{MAX_BYTE_HEADS}, got {k}")
        self.hidden_size = int(hidden_size)
        self.k = int(k)
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(self.k, BYTE_ALPHABET_SIZE, self.hidden_size, **factory))
        self.bias = torch.nn.Parameter(torch.empty(self.k, BYTE_ALPHABET_SIZE, **factory))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, hidden):
        if hidden.dim() < 1 or hidden.shape[-1] != self.hidden_size:
            raise ShapeError(f"bld_torch.ByteHead: argument `hidden`: expected [..., {self.hidden_size}], "
                             f"got {_shape(hidden)}")
        flat = torch.nn.functional.linear(
            hidden, self.weight.reshape(self.k * BYTE_ALPHABET_SIZE, self.hidden_size),
            self.bias.reshape(self.k * BYTE_ALPHABET_SIZE))
        return flat.unflatten(-1, (self.k, BYTE_ALPHABET_SIZE))

    def extra_repr(self):
        return f"hidden_size={self.hidden_size}, k={self.k}"


Tokenizer = _C.Tokenizer


def load_tokenizer(path, specials=()):
    """Load a tokenizer for bld: a ``tokenizer.json``, a folder with ``encoder.json`` +
    ``vocab.bpe``, or a ``.tiktoken`` rank file (``specials``: ``"NAME=ID"`` strings).
    Returns a ``Tokenizer`` (vocabulary and sorted byte trie) for ``canonical_targets``."""
    return _C.load_tokenizer(str(path), [str(s) for s in specials])


def canonical_targets(teacher_logits, teacher_ids, student_ids, teacher, student, k=10, text=None,
                      return_dropped=False):
    """Teacher byte targets for every student slot, from one teacher pass (canonical path).

    ``teacher_logits`` [m, n >= teacher vocab] float32 or bfloat16: row j is the teacher's
    logits for teacher token j given the tokens before it (its BOS/prompt included in the
    context, not in the ids). ``teacher_ids`` [m]: the teacher's text tokens; ``student_ids``
    [T]: the student's tokens (special tokens allowed; their slots are masked); ``teacher`` and
    ``student``: ``Tokenizer`` objects; ``k``: byte heads; ``text`` (bytes, optional): the text
    both encode, checked against both token streams.

    Returns ``(targets [T, k, 260] float32, mask [T, k] bool, true_bytes [T, k] int64)`` with
    ``true_bytes`` = -1 at masked slots: ready for ``bld_loss`` / ``byte_loss``. With
    ``return_dropped=True`` a fourth tensor follows, ``dropped [T, k]`` float64: the share of the
    teacher's conditioning mass the projection dropped at each slot's byte (0 at masked slots),
    for down-weighting slots whose target rests on little of the teacher's mass.
    Raises ``bld_torch.Error`` subclasses (AlignmentError as ``Error``) naming the first
    differing byte offset when the two token streams do not spell the same text.
    """
    if not isinstance(teacher, Tokenizer) or not isinstance(student, Tokenizer):
        raise TypeError("bld_torch.canonical_targets: teacher and student must be bld_torch.Tokenizer "
                        "(from bld_torch.load_tokenizer)")
    if text is not None and not isinstance(text, (bytes, bytearray)):
        raise TypeError("bld_torch.canonical_targets: text must be bytes (the UTF-8 text)")
    logits = teacher_logits.detach()
    if logits.device.type != "cpu":
        raise ShapeError(f"bld_torch.canonical_targets: argument `teacher_logits`: expected a cpu tensor, "
                         f"got {logits.device}")
    targets, mask, true_bytes, dropped = _C.canonical_targets(logits, teacher_ids, student_ids, teacher, student,
                                                              int(k), None if text is None else bytes(text))
    if return_dropped:
        return targets, mask, true_bytes, dropped
    return targets, mask, true_bytes
