"""The student's byte head (``ByteHead``): K parallel linear layers hidden -> 260."""

import math

import torch

from . import _bld_torch as _C
from .losses import _shape

ShapeError = _C.ShapeError
BYTE_ALPHABET_SIZE = _C.byte_alphabet_size
MAX_BYTE_HEADS = _C.max_byte_heads


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
