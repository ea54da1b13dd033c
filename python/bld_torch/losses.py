"""The byte losses (``byte_loss``, ``bld_loss``): bld's C++ loss as a torch.autograd.Function.

Shapes and conventions: see the package docstring (``help(bld_torch)``).
"""

import math

import torch

from . import _bld_torch as _C

ShapeError = _C.ShapeError
DtypeError = _C.DtypeError
DomainError = _C.DomainError

BYTE_ALPHABET_SIZE = _C.byte_alphabet_size  # 260: 256 bytes, STOP, three reserved

_DIVERGENCES = ("kl", "forward_kl", "reverse_kl", "jsd", "tvd")
_REDUCTIONS = ("eq5", "slot_mean", "none")
# Computed in float32: autocast's half-precision logits and targets are widened here, so the
# value is float32 and autograd narrows the gradient back to the logits' dtype.
_WIDENED = (torch.float16, torch.bfloat16)
_FLOATS = (torch.float32, torch.float64) + _WIDENED


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


def _check_tensor(x, name, where="bld_torch", optional=False):
    """A short TypeError naming the argument (instead of pybind's dump of every argument)."""
    if x is None and optional:
        return
    if not isinstance(x, torch.Tensor):
        what = "a torch.Tensor" + (" or None" if optional else "")
        raise TypeError(f"{where}: argument `{name}`: expected {what}, got {type(x).__name__}")


def _check_float(x, name, where):
    if x is not None and x.dtype not in _FLOATS:
        raise DtypeError(f"{where}: argument `{name}`: expected float32, float64, float16 or bfloat16, got {x.dtype}")


def _widen(x):
    """float16 / bfloat16 -> float32 (differentiable: the gradient comes back in x's dtype)."""
    return x.float() if x is not None and x.dtype in _WIDENED else x


def _flatten(head_logits, teacher_targets, true_bytes, mask):
    """[..., K, 260] → [T, K, 260] (and [..., K] → [T, K]); returns the leading shape too."""
    if head_logits.dim() < 3 or head_logits.shape[-1] != BYTE_ALPHABET_SIZE:
        raise ShapeError(f"bld_torch: argument `head_logits`: expected [..., K, {BYTE_ALPHABET_SIZE}] byte-head "
                         f"logits (256 bytes, STOP, 3 reserved), got {_shape(head_logits)}")
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


def _call(where, head_logits, teacher_targets, true_bytes, mask, mode, kind, temperature, reduction,
          lambda_byte, lambda_kl, target_floor):
    _check_tensor(head_logits, "head_logits", where)
    _check_tensor(teacher_targets, "teacher_targets", where, optional=True)
    _check_tensor(true_bytes, "true_bytes", where, optional=True)
    _check_tensor(mask, "mask", where, optional=True)
    _check_float(head_logits, "head_logits", where)
    _check_float(teacher_targets, "teacher_targets", where)
    if reduction not in _REDUCTIONS:
        raise DomainError(f"{where}: reduction={reduction!r}: expected one of {', '.join(_REDUCTIONS)}")
    z, p, y, m, lead = _flatten(_widen(head_logits), _widen(teacher_targets), true_bytes, mask)
    value = _ByteLossFunction.apply(z, p, y, m, mode, kind, temperature, reduction, lambda_byte,
                                    lambda_kl, target_floor)
    if reduction == "none":
        value = value.reshape(lead + (z.shape[1],))
    return value


def byte_loss(head_logits, teacher_targets, mask=None, kind="kl", temperature=1.0, reduction="eq5",
              true_bytes=None, target_floor=1e-12):
    """One byte loss term between the teacher's byte distributions and the byte head.

    Args:
        head_logits: [..., K, 260] float32/float64 logits (gradients flow here); float16 and
            bfloat16 (autocast) are computed in float32.
        teacher_targets: [..., K, 260] teacher probabilities (ignored, may be None, for "ce").
        mask: [..., K] bool/uint8, True = active slot; None = every slot active.
        kind: "kl" (forward KL(p||q), default), "reverse_kl", "jsd", "tvd", or "ce" — byte
            cross-entropy on ``true_bytes``.
        temperature: tau > 0 for the divergences, q = softmax(z / tau), no tau**2 factor.
        reduction: "eq5", "slot_mean" or "none" (see the module docstring).
        true_bytes: [..., K] int32/int64, needed by kind="ce" only.
        target_floor: epsilon in reverse KL's log max(p, epsilon).

    Returns:
        A 0-dim tensor (or [..., K] for reduction="none") of head_logits' dtype (float32 for
        float16 / bfloat16 logits).
    """
    where = "bld_torch.byte_loss"
    targets = _distiller_targets(teacher_targets)
    if targets is not None:  # a Distiller's Targets carry the mask and the true bytes
        if mask is not None or true_bytes is not None:
            raise DomainError(f"{where}: with Distiller targets, pass no mask / true_bytes (the targets carry them)")
        if kind == "ce":
            return targets_loss(where, head_logits, targets, "bld", "kl", 1.0, reduction, 1.0, 0.0, target_floor)
        if kind not in _DIVERGENCES:
            raise DomainError(f"{where}: kind={kind!r}: expected one of {', '.join(_DIVERGENCES + ('ce',))}")
        return targets_loss(where, head_logits, targets, "divergence", _kind(kind), temperature, reduction, 0.0, 1.0,
                            target_floor)
    if kind == "ce":
        if true_bytes is None:
            raise DomainError(f"{where}: kind='ce' needs true_bytes")
        return _call(where, head_logits, None, true_bytes, mask, "ce", "kl", 1.0, reduction, 1.0, 0.0,
                     target_floor)
    if kind not in _DIVERGENCES:
        raise DomainError(f"{where}: kind={kind!r}: expected one of {', '.join(_DIVERGENCES + ('ce',))}")
    if true_bytes is not None:
        raise DomainError(f"{where}: true_bytes is used by kind='ce' only; "
                          "bld_loss combines the cross-entropy with a divergence")
    if teacher_targets is None:
        raise DomainError(f"{where}: kind={kind!r} needs teacher_targets")
    return _call(where, head_logits, teacher_targets, None, mask, "divergence", kind, temperature,
                 reduction, 0.0, 1.0, target_floor)


def bld_loss(head_logits, teacher_targets, true_bytes=None, mask=None, lambda_byte=1.0, lambda_kl=0.1,
             kind="kl", temperature=1.0, reduction="eq5", target_floor=1e-12):
    """The BLD byte term: lambda_byte * CE(true bytes) + lambda_kl * D(teacher || student).

    ``teacher_targets`` is either a ``Distiller``'s ``Targets`` (then ``head_logits`` is
    [B, S, K, 260] for its [B, S, K] slots, and the targets carry the mask and the true bytes:
    ``bld_loss(byte_head(hidden), targets)``), or dense [..., K, 260] probabilities with
    ``true_bytes`` [..., K] and an optional ``mask`` [..., K].

    Defaults follow the paper: lambda_byte = 1, lambda_kl = 0.1, forward KL, tau = 1, eq. 5.
    ``kind`` picks the divergence ("kl", "reverse_kl", "jsd", "tvd"); tau applies to it only.
    float16 / bfloat16 logits and targets are computed in float32 (the value is float32, the
    gradient comes back in the logits' dtype).
    The token-level cross-entropy of the student's own LM head is the trainer's to add.
    """
    where = "bld_torch.bld_loss"
    if kind not in _DIVERGENCES:
        raise DomainError(f"{where}: kind={kind!r}: expected one of {', '.join(_DIVERGENCES)}")
    targets = _distiller_targets(teacher_targets)
    if targets is not None:
        if mask is not None or true_bytes is not None:
            raise DomainError(f"{where}: with Distiller targets, pass no mask / true_bytes (the targets carry them)")
        if reduction not in _REDUCTIONS:
            raise DomainError(f"{where}: reduction={reduction!r}: expected one of {', '.join(_REDUCTIONS)}")
        return targets_loss(where, head_logits, targets, "bld", _kind(kind), temperature, reduction, lambda_byte,
                            lambda_kl, target_floor)
    if teacher_targets is None or true_bytes is None:
        raise DomainError(f"{where}: needs teacher_targets and true_bytes")
    return _call(where, head_logits, teacher_targets, true_bytes, mask, "bld", kind, temperature,
                 reduction, lambda_byte, lambda_kl, target_floor)


def _distiller_targets(x):
    """x if it is a Distiller's Targets, else None (imported late: distiller.py imports this module)."""
    from .distiller import Targets
    return x if isinstance(x, Targets) else None


def _kind(kind):
    return "forward_kl" if kind == "kl" else kind


def targets_loss(*args):
    from .distiller import _targets_loss
    return _targets_loss(*args)
