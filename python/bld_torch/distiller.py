"""The trainer's route: ``Distiller`` turns a batch of teacher logits into byte targets for the
student's byte head, returned as a ``Targets`` object that ``bld_loss`` / ``byte_loss`` take.

The C++ object behind it (``bld::distiller``, include/bld/targets/distiller.hpp) owns the
teacher's sorted byte trie and SIMD row plan; one call projects every sequence of the batch on
the canonical path (threads over sequences) and writes each active slot's target once.
docs/06_trainers.md walks through the Hugging Face route.
"""

import operator

import torch

from . import _bld_torch as _C
from .losses import _DIVERGENCES, _check_tensor

ShapeError = _C.ShapeError
DtypeError = _C.DtypeError
DomainError = _C.DomainError
Tokenizer = _C.Tokenizer

_TARGET_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _shape(t):
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class Targets:
    """Byte targets of a batch: slots [B, S, K] (sequence, student position, byte head).

    * ``values``: the teacher's next-byte distributions (probabilities over 260 symbols), only
      for the active slots — [A, 260] with ``layout == "compact"`` (the default) — or for every
      slot, [B, S, K, 260], with ``layout == "dense"``; float32 or bfloat16.
    * ``slots`` [A] int64: the flat slot index (b·S + s)·K + k of each compact row (increasing).
    * ``mask`` [B, S, K] bool: active slots; ``true_bytes`` [B, S, K] int32: the text byte of
      each slot (-1 where inactive); ``dropped`` [B, S, K] float32: the share of the teacher's
      conditioning mass the projection dropped at the slot's byte.

    Pass it as the targets of ``bld_torch.bld_loss(head_logits, targets)`` with byte-head logits
    [B, S, K, 260]. ``dense()`` expands compact values (for inspection; the loss reads them as
    they are).
    """

    __slots__ = ("values", "slots", "mask", "true_bytes", "dropped", "layout")

    def __init__(self, values, slots, mask, true_bytes, dropped, layout):
        self.values, self.slots, self.mask = values, slots, mask
        self.true_bytes, self.dropped, self.layout = true_bytes, dropped, layout

    @property
    def shape(self):
        """(B, S, K)."""
        return tuple(self.mask.shape)

    @property
    def heads(self):
        return self.mask.shape[-1]

    @property
    def active_slots(self):
        return int(self.slots.numel()) if self.layout == "compact" else int(self.mask.sum())

    @property
    def device(self):
        return self.mask.device

    def to(self, device, non_blocking=False):
        """The same targets on another device."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Targets(move(self.values), move(self.slots), move(self.mask), move(self.true_bytes),
                       move(self.dropped), self.layout)

    def dense(self):
        """[B, S, K, 260] values (zeros at inactive slots)."""
        if self.layout == "dense":
            return self.values
        out = torch.zeros(self.shape + (self.values.shape[-1],), dtype=self.values.dtype, device=self.values.device)
        out.view(-1, self.values.shape[-1])[self.slots] = self.values
        return out

    def __repr__(self):
        b, s, k = self.shape
        return (f"<bld_torch.Targets [{b}, {s}, {k}] {self.layout}, {self.active_slots} active slots, "
                f"{self.values.dtype}, on {self.device}>")


class CoveringTargets:
    """What ``Distiller.covering_targets`` computed for a batch of texts.

    * ``bytes``: one float64 tensor [L_i, 260] per text: row j is the teacher's distribution of
      byte j of the text given the bytes before it (256 = STOP: the mass of special tokens).
    * ``dropped``: one float64 tensor [L_i] per text: the share of the mass the method dropped
      (the canonical path's single hypothesis) or pruned (the beam's ε and K) at each byte; 0
      everywhere for exact covering.
    * ``teacher_rows``: per text, the next-token rows (contexts) the method asked the model for.
    * ``targets``: the student's slot ``Targets`` (as ``Distiller.targets`` returns them), each
      active slot reading the distribution of the byte it predicts; None without student ids.
    * ``cost``: what the model was asked in all: ``calls`` (of the method), ``contexts`` (rows
      read), ``sequences`` (contexts forwarded: those that are no prefix of another in the same
      call), ``positions`` (model positions computed, Σ (|sequence| + 1)), ``batches`` (model calls).
    """

    __slots__ = ("bytes", "dropped", "teacher_rows", "targets", "cost")

    def __init__(self, bytes_, dropped, teacher_rows, targets, cost):
        self.bytes, self.dropped, self.teacher_rows = bytes_, dropped, teacher_rows
        self.targets, self.cost = targets, cost

    def __repr__(self):
        return (f"<bld_torch.CoveringTargets texts={len(self.bytes)} bytes={sum(len(b) for b in self.bytes)} "
                f"teacher_rows={sum(self.teacher_rows)} cost={self.cost}>")


class Distiller:
    """Teacher logits -> byte targets for the student's byte head (see the module docstring).

    Args:
        teacher, student: ``Tokenizer`` objects (``bld_torch.load_tokenizer``).
        heads: K, the student's byte heads (1..260).
        shifted: the models' outputs at position i predict token i + 1 (what a causal LM such as
            a Hugging Face ``...ForCausalLM`` returns). Then ``teacher_logits[:, i]`` is read as
            the teacher's distribution of ``teacher_ids[:, i + 1]``, and ``targets[:, i]`` holds the
            slots of student token i + 1 — the token that the student's hidden state i predicts, so
            ``byte_head(hidden_states[-1])`` lines up with the targets. With ``shifted=False`` row i
            is the distribution of token i itself and ``targets[:, i]`` are token i's slots.
        layout: "compact" (only the active slots' distributions; the default) or "dense".
        dtype: torch.float32 or torch.bfloat16 target values.
        row_order: "id" (the teacher's logits as they come) or "trie" (columns permuted once by
            ``permutation``: a teacher whose unembedding rows were permuted with it gives such
            logits for free, and the projection reads them faster).
        path: "fast" (SIMD row pass; CUDA kernels for CUDA logits when built with CUDA) or
            "reference" (the fp64 scalar reference, for tests).
        threads: worker threads over the batch's sequences (0: every core). Results are
            bit-identical for any thread count.
        teacher_pad_id, student_pad_id: padding ids, used with -100 to find the valid tokens when
            no attention mask is given.
        student_row_order: column order of the student's own logits for ``token_head_loss``: "id"
            (as they come) or "trie" (columns permuted once by ``student_permutation``, as
            ``row_order`` does for the teacher's).
    """

    def __init__(self, teacher, student, heads=10, *, shifted=True, layout="compact", dtype=torch.float32,
                 row_order="id", path="fast", threads=1, teacher_pad_id=None, student_pad_id=None,
                 student_row_order="id"):
        where = "bld_torch.Distiller"
        for name, tok in (("teacher", teacher), ("student", student)):
            if not isinstance(tok, Tokenizer):
                raise TypeError(f"{where}: argument `{name}`: expected a bld_torch.Tokenizer (from "
                                f"bld_torch.load_tokenizer), got {type(tok).__name__}")
        if dtype not in _TARGET_DTYPES:
            raise DtypeError(f"{where}: dtype: targets are torch.float32 or torch.bfloat16, got {dtype}")
        try:
            heads = operator.index(heads)
            threads = operator.index(threads)
        except TypeError:
            raise TypeError(f"{where}: heads and threads must be integers") from None
        self.teacher, self.student = teacher, student
        self.heads, self.shifted, self.layout, self.dtype = heads, bool(shifted), str(layout), dtype
        self.row_order, self.path, self.threads = str(row_order), str(path), threads
        self.teacher_pad_id, self.student_pad_id = teacher_pad_id, student_pad_id
        self.student_row_order = str(student_row_order)
        self._d = _C.make_distiller(teacher, student, heads, self.layout, _TARGET_DTYPES[dtype], self.row_order,
                                    self.path, self.shifted, threads, self.student_row_order)

    @property
    def permutation(self):
        """[n] int64: with ``row_order="trie"``, column k of a teacher row holds the logit of id
        ``permutation[k]``. Permute the teacher's unembedding (output embedding) rows once,
        ``W_sorted = W[permutation]``, and its logits arrive in trie order."""
        return torch.as_tensor(self._d.permutation(), dtype=torch.int64)

    @property
    def student_permutation(self):
        """[n] int64: with ``student_row_order="trie"``, column k of a student logits row (the
        input of ``token_head_loss``) holds the logit of student id ``student_permutation[k]``:
        permute the student's unembedding rows once, ``W_sorted = W[student_permutation]``."""
        return torch.as_tensor(self._d.student_permutation(), dtype=torch.int64)

    @property
    def row_width(self):
        """Columns a teacher row needs (wider rows are fine: extra columns are ignored)."""
        return self._d.row_width()

    def __repr__(self):
        return (f"<bld_torch.Distiller heads={self.heads} shifted={self.shifted} layout={self.layout} "
                f"dtype={self.dtype} row_order={self.row_order} student_row_order={self.student_row_order} "
                f"path={self.path} threads={self.threads}\n"
                f"  teacher {self.teacher!r}\n  student {self.student!r}>")

    def targets(self, teacher_logits, teacher_ids, student_ids, *, teacher_mask=None, student_mask=None, texts=None):
        """Byte targets for a batch.

        Args:
            teacher_logits: [B, S_t, V] (or one sequence [S_t, V]) float32, bfloat16, float16 or
                float64, on the CPU or (bld_torch built with CUDA) a CUDA device; contiguous. Rows
                of padding positions are never read.
            teacher_ids: [B, S_t] the teacher's input ids (BOS and other leading special tokens are
                context; trailing ones, e.g. EOS, too).
            student_ids: [B, S_s] the student's input ids (special tokens allowed: their slots are
                inactive).
            teacher_mask, student_mask: [B, S] attention masks (1 = token; left or right padding,
                one contiguous run per sequence). Without one, ids equal to -100 or the pad id
                given at construction are padding.
            texts: optional list of B ``bytes``: each sequence's text, checked against both token
                streams (an AlignmentError names the first differing byte).

        Returns:
            ``Targets`` with slots [B, S_s, K], on the logits' device.
        """
        where = "bld_torch.Distiller.targets"
        _check_tensor(teacher_logits, "teacher_logits", where)
        _check_tensor(teacher_ids, "teacher_ids", where)
        _check_tensor(student_ids, "student_ids", where)
        _check_tensor(teacher_mask, "teacher_mask", where, optional=True)
        _check_tensor(student_mask, "student_mask", where, optional=True)
        logits = teacher_logits.detach()
        if logits.dtype not in _LOGIT_DTYPES:
            raise DtypeError(f"{where}: argument `teacher_logits`: expected float32, bfloat16, float16 or float64, "
                             f"got {logits.dtype}")
        single = logits.dim() == 2
        if single:
            logits = logits.unsqueeze(0)
        if logits.dim() != 3:
            raise ShapeError(f"{where}: argument `teacher_logits`: expected [B, S_t, V] (or one sequence [S_t, V]), "
                             f"got {_shape(teacher_logits)}")
        tids = self._ids(teacher_ids, "teacher_ids", single, where)
        sids = self._ids(student_ids, "student_ids", single, where)
        if tids.shape[0] != logits.shape[0] or sids.shape[0] != logits.shape[0]:
            raise ShapeError(f"{where}: batch sizes differ: teacher_logits {_shape(logits)}, teacher_ids "
                             f"{_shape(tids)}, student_ids {_shape(sids)}")
        if tids.shape[1] != logits.shape[1]:
            raise ShapeError(f"{where}: argument `teacher_ids`: expected [B, {logits.shape[1]}] to match "
                             f"teacher_logits {_shape(logits)} (one logits row per input position), got {_shape(tids)}")
        tmask = self._mask(teacher_mask, tids, self.teacher_pad_id, "teacher_mask", single, where)
        smask = self._mask(student_mask, sids, self.student_pad_id, "student_mask", single, where)
        if texts is not None:
            if isinstance(texts, (bytes, bytearray)):
                texts = [texts]
            texts = list(texts)
            if len(texts) != logits.shape[0] or not all(isinstance(t, (bytes, bytearray)) for t in texts):
                raise TypeError(f"{where}: texts must be a list of {logits.shape[0]} bytes objects (UTF-8 text)")
            texts = [bytes(t) for t in texts]
        if logits.device.type not in ("cpu", "cuda"):
            raise ShapeError(f"{where}: argument `teacher_logits`: device {logits.device} is not supported (cpu, cuda)")
        if logits.device.type == "cuda" and not _C.with_cuda:
            raise ShapeError(f"{where}: argument `teacher_logits`: on {logits.device}, but this bld_torch was built "
                             f"without CUDA (build it against a CUDA torch), or pass the logits on the CPU")
        values, slots, mask, true_bytes, dropped = _C.distill(self._d, logits, tids, sids, tmask, smask, texts)
        t = Targets(values, slots, mask, true_bytes, dropped, self.layout)
        return t.to(logits.device) if logits.device.type != "cpu" else t

    def covering_targets(self, model, teacher_ids, student_ids=None, *, method="beam", beam=10, epsilon=0.01,
                         threshold=0.05, texts=None, vocab_size=None, device="cpu", pad_id=0, max_batch=64):
        """The paper's teacher targets with a model as the teacher: the covering beam over every
        teacher token sequence that spells the text (``method="beam"``, K = ``beam``, pruning at
        ``epsilon``), the canonical path repaired by a local beam where it drops at least
        ``threshold`` of the mass (``"repair"``: 1 = the canonical path, 0 = the beam everywhere),
        or exact covering (``"exact"``, small vocabularies and short texts only). The method asks
        the model for the next-token rows of the token contexts it follows, in batches: contexts
        that are a prefix of another in the same batch are read from its forward pass.

        Args:
            model: a callable ``model(ids, lengths)``: ids [B, T] int64 on ``device`` (teacher text
                ids, right-padded with ``pad_id``), lengths [B] int64 on the CPU; returns logits
                [B, >= T + 1, >= V] (any float dtype, any device) whose row r of sequence b is the
                next-token logits after its first r tokens — the model adds its own BOS or prompt.
                It is called without autograd, from this thread.
            teacher_ids: B sequences of the teacher's ids (1-D int64 tensors or lists): the text
                each spells (special tokens at either end are left out) and, for ``"repair"``, the
                canonical path it follows.
            student_ids: optional B sequences of student ids: then ``targets`` holds the slot
                targets of the student (this distiller's heads, layout, dtype and ``shifted``).
            texts: optional B ``bytes``: each sequence's text, checked against the ids.
            vocab_size: logits read per row (default: the teacher tokenizer's vocabulary size).
            max_batch: at most this many sequences per model call.

        Returns:
            ``CoveringTargets``.
        """
        where = "bld_torch.Distiller.covering_targets"
        if not callable(model):
            raise TypeError(f"{where}: argument `model`: expected a callable model(ids, lengths) -> logits, "
                            f"got {type(model).__name__}")

        def as_list(seqs, name):
            if isinstance(seqs, torch.Tensor):
                if seqs.dim() != 2:
                    raise ShapeError(f"{where}: argument `{name}`: a tensor must be [B, S] (one row per sequence), "
                                     f"got {_shape(seqs)}")
                seqs = list(seqs)
            out = []
            for i, s in enumerate(seqs):
                t = s if isinstance(s, torch.Tensor) else torch.as_tensor(list(s), dtype=torch.int64)
                if t.dtype not in (torch.int64, torch.int32):
                    raise DtypeError(f"{where}: argument `{name}[{i}]`: expected int64 or int32 token ids, got {t.dtype}")
                out.append(t.detach().to("cpu", torch.int64).reshape(-1).contiguous())
            return out

        tids = as_list(teacher_ids, "teacher_ids")
        sids = None if student_ids is None else as_list(student_ids, "student_ids")
        if texts is not None:
            if isinstance(texts, (bytes, bytearray)):
                texts = [texts]
            texts = list(texts)
            if not all(isinstance(t, (bytes, bytearray)) for t in texts):
                raise TypeError(f"{where}: texts must be a list of bytes objects (UTF-8 text)")
            texts = [bytes(t) for t in texts]
        try:
            beam, max_batch, pad_id = operator.index(beam), operator.index(max_batch), operator.index(pad_id)
        except TypeError:
            raise TypeError(f"{where}: beam, max_batch and pad_id must be integers") from None
        width = len(self.teacher) if vocab_size is None else operator.index(vocab_size)
        bytes_, dropped, rows, targets, cost = _C.covering(
            self._d, model, width, str(torch.device(device)), pad_id, max_batch, tids, sids, texts, str(method),
            beam, float(epsilon), float(threshold))
        if targets is not None:
            targets = Targets(*targets, self.layout)
        return CoveringTargets(list(bytes_), list(dropped), list(rows), targets, dict(cost))

    def token_head_loss(self, student_logits, student_ids, targets, *, student_mask=None, divergence="forward_kl",
                        temperature=1.0, weight=1.0, reduction="mean", target_floor=1e-12):
        """Token-head distillation: the student's own token logits, projected to next-byte
        distributions along its tokenization (the canonical path, as for the teacher), against the
        teacher's byte targets of the same batch — differentiable with respect to
        ``student_logits`` (docs/06_trainers.md, "Token-head distillation").

        Args:
            student_logits: [B, S_s, V_s] (or one sequence [S_s, V_s]) float32, bfloat16, float16 or
                float64: the student's LM-head output for ``student_ids`` (row p is its output at
                input position p; with ``shifted`` it predicts token p + 1, as a causal LM's).
                Columns in id order, or in ``student_permutation`` order with
                ``student_row_order="trie"``; wider rows are fine.
            student_ids: [B, S_s] the student's input ids — the ones ``targets()`` was given.
            targets: the ``Targets`` that ``targets()`` returned for this batch (read on the CPU).
            student_mask: [B, S_s] attention mask (left or right padding); without one, ids equal
                to -100 or ``student_pad_id`` are padding, as in ``targets()``.
            divergence: "forward_kl" (KL(p||q), the default; also "kl"), "reverse_kl", "jsd" or "tvd".
            temperature: tau > 0, applied to the student's byte distributions, q_tau ∝ q^(1/tau).
            weight: lambda >= 0, multiplies the value and the gradient.
            reduction: "mean" over the supervised text bytes (the default) or "sum".
            target_floor: epsilon of reverse KL (log max(p, epsilon)).

        A text byte is supervised where its slot is active: byte k of a token has a slot for k < K
        only, so build the distiller with heads >= the student's longest token to supervise every
        byte. Returns a 0-dim tensor (float32; float64 for float64 logits) whose backward gives
        the gradient in the logits' dtype (one autograd node, bld::autograd::token_head_loss).
        """
        where = "bld_torch.Distiller.token_head_loss"
        _check_tensor(student_logits, "student_logits", where)
        _check_tensor(student_ids, "student_ids", where)
        _check_tensor(student_mask, "student_mask", where, optional=True)
        if not isinstance(targets, Targets):
            raise TypeError(f"{where}: argument `targets`: expected bld_torch.Targets (from Distiller.targets), "
                            f"got {type(targets).__name__}")
        if student_logits.dtype not in _LOGIT_DTYPES:
            raise DtypeError(f"{where}: argument `student_logits`: expected float32, bfloat16, float16 or float64, "
                             f"got {student_logits.dtype}")
        logits = student_logits
        single = logits.dim() == 2
        if single:
            logits = logits.unsqueeze(0)
        if logits.dim() != 3:
            raise ShapeError(f"{where}: argument `student_logits`: expected [B, S_s, V_s] (or one sequence "
                             f"[S_s, V_s]), got {_shape(student_logits)}")
        sids = self._ids(student_ids, "student_ids", single, where)
        if tuple(sids.shape) != tuple(logits.shape[:2]):
            raise ShapeError(f"{where}: argument `student_ids`: expected [{logits.shape[0]}, {logits.shape[1]}] to "
                             f"match student_logits {_shape(logits)} (one logits row per input position), "
                             f"got {_shape(sids)}")
        if targets.shape[:2] != tuple(sids.shape) or targets.heads != self.heads:
            raise ShapeError(f"{where}: argument `targets`: expected the targets of this batch, slots "
                             f"[{sids.shape[0]}, {sids.shape[1]}, {self.heads}], got {list(targets.shape)}")
        if targets.layout != self.layout:
            raise ShapeError(f"{where}: argument `targets`: {targets.layout} targets, but this distiller makes "
                             f"{self.layout} ones")
        smask = self._mask(student_mask, sids, self.student_pad_id, "student_mask", single, where)
        if divergence not in _DIVERGENCES:
            raise DomainError(f"{where}: divergence={divergence!r}: expected one of {', '.join(_DIVERGENCES)}")
        if reduction not in ("mean", "sum"):
            raise DomainError(f"{where}: reduction={reduction!r}: expected 'mean' or 'sum'")
        if targets.device.type != "cpu":
            targets = targets.to("cpu")  # the host walks the slots
        if not logits.is_contiguous():
            logits = logits.contiguous()
        compact = targets.layout == "compact"
        return _C.token_head_loss(self._d, logits, sids, targets.values.contiguous(), targets.slots.contiguous(),
                                  targets.mask.contiguous(), targets.true_bytes.contiguous(), compact, smask,
                                  divergence, float(temperature), float(weight), reduction, float(target_floor))

    @staticmethod
    def _ids(ids, name, single, where):
        if ids.dtype not in (torch.int64, torch.int32):
            raise DtypeError(f"{where}: argument `{name}`: expected int64 or int32 token ids, got {ids.dtype}")
        ids = ids.detach().to("cpu", torch.int64)
        if single and ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ShapeError(f"{where}: argument `{name}`: expected [B, S] token ids, got {_shape(ids)}")
        return ids.contiguous()

    @staticmethod
    def _mask(mask, ids, pad_id, name, single, where):
        if mask is None:
            valid = ids != -100
            if pad_id is not None:
                valid &= ids != int(pad_id)
            return valid.to(torch.uint8).contiguous()
        mask = mask.detach().to("cpu")
        if single and mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != tuple(ids.shape):
            raise ShapeError(f"{where}: argument `{name}`: expected {_shape(ids)} like the ids, got {_shape(mask)}")
        return (mask != 0).to(torch.uint8).contiguous()


class _TargetsLossFunction(torch.autograd.Function):
    """value = bld loss(logits, Targets); backward multiplies bld's saved analytic gradient."""

    @staticmethod
    def forward(ctx, logits, values, slots, mask, true_bytes, compact, mode, kind, temperature, reduction,
                lambda_byte, lambda_kl, target_floor):
        need_grad = bool(ctx.needs_input_grad[0])
        value, grad = _C.loss_on_targets(logits, values, slots, mask, true_bytes, compact, mode, kind,
                                         float(temperature), reduction, float(lambda_byte), float(lambda_kl),
                                         float(target_floor), need_grad)
        ctx.per_slot = reduction == "none"
        if need_grad:
            ctx.save_for_backward(grad)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        grad_logits = grad * (grad_output.unsqueeze(-1) if ctx.per_slot else grad_output)
        return (grad_logits,) + (None,) * 12


def _targets_loss(where, head_logits, targets, mode, kind, temperature, reduction, lambda_byte, lambda_kl,
                  target_floor):
    """A loss on ``Targets``: head_logits [B, S, K, 260] (or [B·S, K, 260]) against slots [B, S, K]."""
    _check_tensor(head_logits, "head_logits", where)
    b, s, k = targets.shape
    a = targets.values.shape[-1]
    want = (b, s, k, a)
    if tuple(head_logits.shape) not in (want, (b * s, k, a)):
        raise ShapeError(f"{where}: argument `head_logits`: expected [{b}, {s}, {k}, {a}] byte-head logits to match "
                         f"the targets' slots [{b}, {s}, {k}], got {_shape(head_logits)}")
    if head_logits.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise DtypeError(f"{where}: argument `head_logits`: expected float32, float64, float16 or bfloat16, "
                         f"got {head_logits.dtype}")
    if head_logits.device != targets.device:
        raise ShapeError(f"{where}: argument `head_logits` is on {head_logits.device}, the targets on "
                         f"{targets.device} (move them with targets.to(device))")
    z = head_logits.float() if head_logits.dtype in (torch.float16, torch.bfloat16) else head_logits
    z = z.reshape(b * s, k, a).contiguous()
    compact = targets.layout == "compact"
    values = targets.values if compact else targets.values.reshape(b * s * k, a)
    value = _TargetsLossFunction.apply(z, values.contiguous(), targets.slots, targets.mask.reshape(b * s, k),
                                       targets.true_bytes.reshape(b * s, k), compact, mode, kind, temperature,
                                       reduction, lambda_byte, lambda_kl, target_floor)
    if reduction == "none":
        value = value.reshape(tuple(head_logits.shape[:-2]) + (k,))
    return value


def aligned_windows(teacher, student, teacher_ids, student_ids, max_tokens):
    """Cuts one text's two tokenizations into windows that spell the same text.

    ``teacher_ids`` / ``student_ids``: the text's ids from each tokenizer (1-D, without special
    tokens). A window may end only at a byte offset where *both* streams have a token boundary,
    so the teacher's and the student's ids of each window decode to the same bytes. Windows are
    taken greedily, each as long as possible with at most ``max_tokens`` tokens on either side.

    Returns a list of ``((t0, t1), (s0, s1))`` index ranges into the two id sequences. Raises
    ValueError when the streams spell different texts, or when no shared boundary lies within
    ``max_tokens`` tokens (raise ``max_tokens``).
    """
    where = "bld_torch.aligned_windows"
    for name, tok in (("teacher", teacher), ("student", student)):
        if not isinstance(tok, Tokenizer):
            raise TypeError(f"{where}: argument `{name}`: expected a bld_torch.Tokenizer, got {type(tok).__name__}")
    t = [int(i) for i in (teacher_ids.tolist() if isinstance(teacher_ids, torch.Tensor) else teacher_ids)]
    s = [int(i) for i in (student_ids.tolist() if isinstance(student_ids, torch.Tensor) else student_ids)]
    if int(max_tokens) < 1:
        raise ValueError(f"{where}: max_tokens must be >= 1, got {max_tokens}")

    def ends(tok, ids):
        out, o = [], 0
        for i in ids:
            o += len(tok.token_bytes(i))
            out.append(o)
        return out

    te, se = ends(teacher, t), ends(student, s)
    tb = b"".join(teacher.token_bytes(i) for i in t)
    sb = b"".join(student.token_bytes(i) for i in s)
    # A dummy prefix (SentencePiece's leading space) on one side only is not text.
    tp = sp = 0
    if tb != sb:
        if tb[:1] == b" " and tb[1:] == sb:
            tp = 1
        elif sb[:1] == b" " and sb[1:] == tb:
            sp = 1
        else:
            d = next((i for i, (x, y) in enumerate(zip(tb, sb)) if x != y), min(len(tb), len(sb)))
            raise ValueError(f"{where}: the two id sequences spell different texts (first difference at byte {d})")
    shared = {e - tp for e in te} & {e - sp for e in se}
    t_at = {e - tp: i + 1 for i, e in enumerate(te)}  # text offset -> tokens up to it
    s_at = {e - sp: i + 1 for i, e in enumerate(se)}
    cuts = sorted(shared)
    windows, t0, s0 = [], 0, 0
    k = 0
    while t0 < len(t) or s0 < len(s):
        best = None
        while k < len(cuts) and t_at[cuts[k]] - t0 <= max_tokens and s_at[cuts[k]] - s0 <= max_tokens:
            if t_at[cuts[k]] > t0 and s_at[cuts[k]] > s0:
                best = cuts[k]
            k += 1
        if best is None:
            raise ValueError(f"{where}: no byte offset within {max_tokens} tokens of teacher token {t0} and student "
                             f"token {s0} is a boundary of both tokenizations; raise max_tokens")
        windows.append(((t0, t_at[best]), (s0, s_at[best])))
        t0, s0 = t_at[best], s_at[best]
    return windows
