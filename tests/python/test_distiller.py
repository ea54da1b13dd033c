"""Tests of bld_torch.Distiller and Targets: the batch conventions (shift, padding, masks, -100),
dtypes, layouts, the loss on Targets, and errors.

Oracles: the slots' masks and true bytes are recomputed here in plain Python from the tokens'
bytes; the fast projection is held to the fp64 reference path (path="reference"); compact and
dense targets, and the loss on Targets vs the loss on dense tensors, must agree.

Run by scripts/test-python.sh (BLD_TORCH_BUILD, BLD_DATA_DIR).
"""

import os
import pathlib
import sys
import unittest

import torch

_BUILD = os.environ.get("BLD_TORCH_BUILD", str(pathlib.Path(__file__).resolve().parents[2] / "build-py"))
if not os.environ.get("BLD_TORCH_INSTALLED"):
    sys.path.insert(0, _BUILD)

import bld_torch  # noqa: E402

DATA = os.environ.get("BLD_DATA_DIR", str(pathlib.Path(__file__).resolve().parents[2] / ".cache" / "data"))


def load_pair(teacher="llama3", student="gpt2", count=3, max_tokens=30):
    """Tokenizers and `count` (text, teacher ids, student ids) records of the reference encoders."""
    def tok(name):
        path = f"{DATA}/tokenizers/{name}" + ("" if name == "gpt2" else "/tokenizer.json")
        return bld_torch.load_tokenizer(path)

    recs = []
    with open(f"{DATA}/ref/{teacher}.encode.tsv") as ft, open(f"{DATA}/ref/{student}.encode.tsv") as fs:
        for i, (lt, ls) in enumerate(zip(ft, fs)):
            _, text, tids = lt.rstrip("\n").split("\t")
            _, text_s, sids = ls.rstrip("\n").split("\t")
            assert text == text_s
            tids, sids = [int(x) for x in tids.split()], [int(x) for x in sids.split()]
            if i % 5 == 0 and 6 <= len(tids) <= max_tokens and 4 <= len(sids) <= max_tokens:
                recs.append((bytes.fromhex(text), tids, sids))
            if len(recs) == count:
                break
    return tok(teacher), tok(student), recs


def padded(seqs, pad_id, left):
    width = max(len(s) for s in seqs) + 2
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)
    for b, s in enumerate(seqs):
        lo = width - len(s) if left else 0
        ids[b, lo:lo + len(s)] = torch.tensor(s)
        mask[b, lo:lo + len(s)] = 1
    return ids, mask


class Batch:
    """A shifted (causal-LM) batch: teacher [BOS, text...] left-padded, student [BOS, text...]
    right-padded, random teacher logits (NaN at padding: never read)."""

    def __init__(self, teacher, student, recs, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.bos_t = teacher.special_id("<|begin_of_text|>")
        self.bos_s = student.special_id("<|endoftext|>")
        self.texts = [r[0] for r in recs]
        self.t_seqs = [[self.bos_t] + r[1] for r in recs]
        self.s_seqs = [[self.bos_s] + r[2] for r in recs]
        self.t_ids, self.t_mask = padded(self.t_seqs, self.bos_t, left=True)
        self.s_ids, self.s_mask = padded(self.s_seqs, self.bos_s, left=False)
        B, S = self.t_ids.shape
        self.logits = torch.randn(B, S, teacher.vocab_size, generator=g) * 3
        self.logits[self.t_mask == 0] = float("nan")


def expected_slots(student, s_seqs, s_mask, heads):
    """[B, S, K] mask and true bytes in plain Python: position p holds the bytes of student token
    p + 1 (shifted), the first K of them; special tokens have none."""
    B, S = s_mask.shape
    mask = torch.zeros(B, S, heads, dtype=torch.bool)
    true_bytes = torch.full((B, S, heads), -1, dtype=torch.int32)
    for b, seq in enumerate(s_seqs):
        lo = int(s_mask[b].nonzero()[0])
        for q in range(len(seq) - 1):
            tb = student.token_bytes(seq[q + 1])
            for k in range(min(heads, len(tb))):
                mask[b, lo + q, k] = True
                true_bytes[b, lo + q, k] = tb[k]
    return mask, true_bytes


class DistillerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.teacher, cls.student, cls.recs = load_pair()
        cls.batch = Batch(cls.teacher, cls.student, cls.recs)

    def test_slots_match_the_tokens_bytes_and_fast_matches_reference(self):
        b = self.batch
        for heads in (1, 4, 10):
            fast = bld_torch.Distiller(self.teacher, self.student, heads=heads)
            ref = bld_torch.Distiller(self.teacher, self.student, heads=heads, path="reference")
            t = fast.targets(b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask, texts=b.texts)
            r = ref.targets(b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
            mask, true_bytes = expected_slots(self.student, b.s_seqs, b.s_mask, heads)
            self.assertEqual(t.shape, tuple(b.s_ids.shape) + (heads,))
            self.assertTrue(torch.equal(t.mask, mask))
            self.assertTrue(torch.equal(t.true_bytes, true_bytes))
            self.assertEqual(t.active_slots, int(mask.sum()))
            self.assertTrue(torch.equal(t.slots, mask.flatten().nonzero().flatten()))
            torch.testing.assert_close(t.values, r.values, rtol=2e-5, atol=1e-7)
            sums = t.values.double().sum(-1)
            torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-5)

    def test_conventions_give_the_same_targets(self):
        """Masks vs -100 / pad ids; left vs right padding; shifted vs unshifted; one sequence."""
        b = self.batch
        d = bld_torch.Distiller(self.teacher, self.student, heads=6)
        want = d.targets(b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
        # -100 marks the student's padding; the teacher's pad id is BOS, named at construction.
        dp = bld_torch.Distiller(self.teacher, self.student, heads=6, teacher_pad_id=-5)
        s100 = b.s_ids.masked_fill(b.s_mask == 0, -100)
        t100 = b.t_ids.masked_fill(b.t_mask == 0, -5)
        got = dp.targets(b.logits, t100, s100)
        self.assertTrue(torch.equal(got.values, want.values) and torch.equal(got.slots, want.slots))
        # One sequence at a time, unpadded ([S, V] logits, [S] ids), is the batch's row.
        d1 = bld_torch.Distiller(self.teacher, self.student, heads=6, dtype=torch.float32, layout="dense")
        dense = d1.targets(b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
        for i in range(len(self.recs)):
            t_lo, s_len = int(b.t_mask[i].nonzero()[0]), len(b.s_seqs[i])
            one = d1.targets(b.logits[i, t_lo:], b.t_ids[i, t_lo:], b.s_ids[i, :s_len])
            self.assertTrue(torch.equal(one.values[0], dense.values[i, :s_len]))
        # Unshifted: row j is the distribution of token j itself, slots of position p are token p's.
        du = bld_torch.Distiller(self.teacher, self.student, heads=6, shifted=False, layout="dense")
        i = 0
        t_lo = int(b.t_mask[i].nonzero()[0])
        rows = b.logits[i, t_lo:t_lo + len(b.t_seqs[i]) - 1]            # the outputs after BOS .. before the end
        u = du.targets(rows, torch.tensor(b.t_seqs[i][1:]), torch.tensor(b.s_seqs[i][1:]))
        s_len = len(b.s_seqs[i]) - 1
        self.assertTrue(torch.equal(u.values[0, :s_len], dense.values[i, :s_len]))

    def test_layouts_dtypes_and_the_loss_on_targets(self):
        b = self.batch
        compact = bld_torch.Distiller(self.teacher, self.student, heads=5).targets(
            b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
        dense = bld_torch.Distiller(self.teacher, self.student, heads=5, layout="dense").targets(
            b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
        self.assertTrue(torch.equal(compact.dense(), dense.values))
        B, S, K = compact.shape
        z = torch.randn(B, S, K, 260, dtype=torch.float64, requires_grad=True)
        for kw in ({}, {"lambda_kl": 0.7, "reduction": "slot_mean"}, {"kind": "jsd", "temperature": 2.0}):
            values = []
            grads = []
            for t in (compact, dense):
                z.grad = None
                v = bld_torch.bld_loss(z, t, **kw)
                v.backward()
                values.append(v.detach())
                grads.append(z.grad.clone())
            z.grad = None
            v = bld_torch.bld_loss(z, dense.values.double(), dense.true_bytes.long().clamp(min=0), dense.mask, **kw)
            v.backward()
            torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=0)
            torch.testing.assert_close(values[0], v.detach(), rtol=1e-12, atol=0)
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)
            torch.testing.assert_close(grads[0], z.grad, rtol=1e-12, atol=0)
        # Per-slot values keep the [B, S, K] shape; bfloat16 logits give float32 values and
        # gradients in bfloat16.
        self.assertEqual(tuple(bld_torch.bld_loss(z, compact, reduction="none").shape), (B, S, K))
        zb = z.detach().to(torch.bfloat16).requires_grad_()
        vb = bld_torch.bld_loss(zb, compact)
        vb.backward()
        self.assertEqual(vb.dtype, torch.float32)
        self.assertEqual(zb.grad.dtype, torch.bfloat16)
        # bfloat16 / float16 teacher logits and bfloat16 targets.
        ref = bld_torch.Distiller(self.teacher, self.student, heads=5, path="reference")
        for dt in (torch.bfloat16, torch.float16):
            low = b.logits.to(dt)
            t = bld_torch.Distiller(self.teacher, self.student, heads=5).targets(
                low, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
            r = ref.targets(low.float(), b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
            torch.testing.assert_close(t.values, r.values, rtol=2e-5, atol=1e-7)
        t16 = bld_torch.Distiller(self.teacher, self.student, heads=5, dtype=torch.bfloat16).targets(
            b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=b.s_mask)
        self.assertEqual(t16.values.dtype, torch.bfloat16)
        torch.testing.assert_close(t16.values.float(), compact.values, rtol=1 / 128, atol=1e-6)

    def test_threads_give_the_same_bits_and_trie_order_the_same_targets(self):
        b = self.batch
        one = bld_torch.Distiller(self.teacher, self.student, heads=4, threads=1)
        two = bld_torch.Distiller(self.teacher, self.student, heads=4, threads=2)
        args = (b.logits, b.t_ids, b.s_ids)
        kw = {"teacher_mask": b.t_mask, "student_mask": b.s_mask}
        self.assertTrue(torch.equal(one.targets(*args, **kw).values, two.targets(*args, **kw).values))
        trie = bld_torch.Distiller(self.teacher, self.student, heads=4, row_order="trie")
        perm = trie.permutation
        self.assertEqual(trie.row_width, perm.numel())
        self.assertEqual(sorted(set(perm.tolist())), sorted(perm.tolist()))
        t = trie.targets(b.logits[..., perm], b.t_ids, b.s_ids, **kw)
        torch.testing.assert_close(t.values, one.targets(*args, **kw).values, rtol=2e-5, atol=1e-7)

    def test_aligned_windows_spell_the_same_text(self):
        teacher, student, recs = load_pair("llama2", "llama3", count=3, max_tokens=60)
        for text, tids, sids in recs:
            for max_tokens in (4, 9, 100):
                try:
                    windows = bld_torch.aligned_windows(teacher, student, tids, sids, max_tokens)
                except ValueError:
                    self.assertLess(max_tokens, 100)  # no shared boundary close enough
                    continue
                self.assertEqual(windows[0][0][0], 0)
                self.assertEqual(windows[-1][0][1], len(tids))
                self.assertEqual(windows[-1][1][1], len(sids))
                for (t0, t1), (s0, s1) in windows:
                    self.assertLessEqual(t1 - t0, max_tokens)
                    self.assertLessEqual(s1 - s0, max_tokens)
                    tb = b"".join(teacher.token_bytes(i) for i in tids[t0:t1])
                    sb = b"".join(student.token_bytes(i) for i in sids[s0:s1])
                    self.assertEqual(tb.lstrip(b" ") if t0 == 0 else tb, sb.lstrip(b" ") if s0 == 0 else sb)
        with self.assertRaises(ValueError):
            bld_torch.aligned_windows(teacher, student, recs[0][1], recs[1][2], 10)

    def test_errors_name_the_argument(self):
        b = self.batch
        d = bld_torch.Distiller(self.teacher, self.student, heads=4)
        kw = {"teacher_mask": b.t_mask, "student_mask": b.s_mask}
        with self.assertRaisesRegex(TypeError, "teacher_ids"):
            d.targets(b.logits, b.t_ids.tolist(), b.s_ids, **kw)
        with self.assertRaisesRegex(bld_torch.ShapeError, "batch sizes differ"):
            d.targets(b.logits, b.t_ids, b.s_ids[:1], teacher_mask=b.t_mask, student_mask=b.s_mask[:1])
        with self.assertRaisesRegex(bld_torch.ShapeError, "teacher_ids"):
            d.targets(b.logits[:, :-1], b.t_ids, b.s_ids, **kw)
        holes = b.s_mask.clone()
        holes[0, 2] = 0
        with self.assertRaisesRegex(bld_torch.Error, "contiguous"):
            d.targets(b.logits, b.t_ids, b.s_ids, teacher_mask=b.t_mask, student_mask=holes)
        with self.assertRaisesRegex(bld_torch.Error, "sequence 1"):
            d.targets(b.logits, b.t_ids, b.s_ids, texts=[b.texts[0], b"not the text", b.texts[2]], **kw)
        with self.assertRaisesRegex(bld_torch.Error, "narrower"):
            d.targets(b.logits[..., :1000].contiguous(), b.t_ids, b.s_ids, **kw)
        with self.assertRaisesRegex(bld_torch.ShapeError, "non-contiguous.*contiguous"):  # no hidden [tokens, V] copy
            d.targets(b.logits[..., :1000], b.t_ids, b.s_ids, **kw)
        with self.assertRaisesRegex(bld_torch.DtypeError, "teacher_logits"):
            d.targets(b.logits.to(torch.int32), b.t_ids, b.s_ids, **kw)
        t = d.targets(b.logits, b.t_ids, b.s_ids, **kw)
        with self.assertRaisesRegex(bld_torch.ShapeError, "head_logits"):
            bld_torch.bld_loss(torch.randn(2, 3, 4, 260), t)
        # Two devices: byte-head logits elsewhere than the targets, teacher logits on a device bld
        # cannot read (the meta device stands in for any other device on this CPU-only machine).
        with self.assertRaisesRegex(bld_torch.ShapeError, "head_logits.*on meta.*targets on cpu"):
            bld_torch.bld_loss(torch.empty(t.shape + (260,), device="meta"), t)
        with self.assertRaisesRegex(bld_torch.ShapeError, "teacher_logits.*meta"):
            d.targets(b.logits.to("meta"), b.t_ids, b.s_ids, **kw)
        with self.assertRaisesRegex(bld_torch.DomainError, "no mask"):
            bld_torch.bld_loss(torch.randn(t.shape + (260,)), t, mask=t.mask)
        with self.assertRaises(TypeError):
            bld_torch.Distiller(self.teacher, "gpt2")
        with self.assertRaisesRegex(bld_torch.DtypeError, "float32 or torch.bfloat16"):
            bld_torch.Distiller(self.teacher, self.student, dtype=torch.float16)
        with self.assertRaisesRegex(bld_torch.Error, "heads"):
            bld_torch.Distiller(self.teacher, self.student, heads=0)
        self.assertIn("heads=4", repr(d))
        self.assertIn("active slots", repr(t))


if __name__ == "__main__":
    unittest.main()
