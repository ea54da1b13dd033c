"""Tokenizers and the teacher's byte targets for a student (``load_tokenizer``, ``Tokenizer``,
``canonical_targets``)."""

import operator

from . import _bld_torch as _C
from .losses import _check_tensor

ShapeError = _C.ShapeError
DomainError = _C.DomainError

Tokenizer = _C.Tokenizer


def load_tokenizer(path, specials=()):
    """Load a tokenizer for bld: a ``tokenizer.json``, a folder with ``encoder.json`` +
    ``vocab.bpe``, or a ``.tiktoken`` rank file (``specials``: ``"NAME=ID"`` strings).

    Returns a ``Tokenizer`` (vocabulary and sorted byte trie) for ``canonical_targets``. It
    knows ``vocab_size``, ``text_tokens``, ``special_ids`` ({name: id}), ``special_id(name)``,
    ``id_of(bytes)``, ``token_bytes(id)``, ``token_kind(id)``, the ``source`` file and its
    ``format``, and the text transformations of the encoder (``dummy_prefix``, ``normalizer``,
    ``decoder_strips_leading_space``, ``notes``)."""
    if isinstance(specials, (str, bytes)):
        raise TypeError("bld_torch.load_tokenizer: specials must be a list of \"NAME=ID\" strings, "
                        "not one string")
    return _C.load_tokenizer(str(path), [str(s) for s in specials])


def canonical_targets(teacher_logits, teacher_ids, student_ids, teacher, student, k=10, text=None,
                      return_dropped=False):
    """Teacher byte targets for every student slot, from one teacher pass (canonical path).

    ``teacher_logits`` [m, n >= teacher vocab] float32, bfloat16 or float16: row j is the
    teacher's logits for teacher token j given the tokens before it (its BOS/prompt included in
    the context, not in the ids). ``teacher_ids`` [m]: the teacher's text tokens;
    ``student_ids`` [T]: the student's tokens (special tokens allowed; their slots are masked) —
    both 1-D int64/int32 tensors; ``teacher`` and ``student``: ``Tokenizer`` objects; ``k``: byte
    heads; ``text`` (bytes, optional): the text both encode, checked against both token streams.

    Returns ``(targets [T, k, 260] float32, mask [T, k] bool, true_bytes [T, k] int64)`` with
    ``true_bytes`` = -1 at masked slots: ready for ``bld_loss`` / ``byte_loss``. With
    ``return_dropped=True`` a fourth tensor follows, ``dropped [T, k]`` float64: the share of the
    teacher's conditioning mass the projection dropped at each slot's byte (0 at masked slots),
    for down-weighting slots whose target rests on little of the teacher's mass.
    Raises ``bld_torch.Error`` subclasses (AlignmentError as ``Error``) naming the first
    differing byte offset when the two token streams do not spell the same text.
    """
    where = "bld_torch.canonical_targets"
    _check_tensor(teacher_logits, "teacher_logits", where)
    _check_tensor(teacher_ids, "teacher_ids", where)
    _check_tensor(student_ids, "student_ids", where)
    for name, tok in (("teacher", teacher), ("student", student)):
        if not isinstance(tok, Tokenizer):
            raise TypeError(f"{where}: argument `{name}`: expected a bld_torch.Tokenizer (from "
                            f"bld_torch.load_tokenizer), got {type(tok).__name__}")
    try:
        heads = operator.index(k)
    except TypeError:
        raise TypeError(f"{where}: argument `k`: expected an int, got {type(k).__name__}") from None
    if text is not None and not isinstance(text, (bytes, bytearray)):
        raise TypeError(f"{where}: argument `text`: expected bytes (the UTF-8 text), got {type(text).__name__}")
    logits = teacher_logits.detach()
    if logits.device.type != "cpu":
        raise ShapeError(f"{where}: argument `teacher_logits`: expected a cpu tensor, got {logits.device}")
    targets, mask, true_bytes, dropped = _C.canonical_targets(logits, teacher_ids, student_ids, teacher, student,
                                                              heads, None if text is None else bytes(text))
    if return_dropped:
        return targets, mask, true_bytes, dropped
    return targets, mask, true_bytes
