"""Tests of token-head distillation from Python: bld_torch.token_head_loss /
Distiller.token_head_loss (the libtorch autograd node bld::autograd::token_head_loss).

Oracles: torch.autograd.gradcheck (central differences of the value against the analytic
backward, float64, the fp64 reference path); invariances that must hold exactly or nearly —
compact and dense targets, student logits in id order and in trie order (columns permuted by
student_permutation), a padded batch (left or right padding, mask or pad ids) against each
sequence alone — and errors for bad input. Tiny tokenizers written here as .tiktoken files.

Run by scripts/test-python.sh (BLD_TORCH_BUILD).
"""

import os
import pathlib
import random
import sys
import tempfile
import unittest

import torch

_BUILD = os.environ.get("BLD_TORCH_BUILD", str(pathlib.Path(__file__).resolve().parents[2] / "build-py"))
if not os.environ.get("BLD_TORCH_INSTALLED"):
    sys.path.insert(0, _BUILD)

import bld_torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from toy_vocab import greedy, write_tiktoken  # noqa: E402

# Student: prefix chains (a, ab, abc), a UTF-8 character split over tokens; teacher: other merges.
STUDENT = [b"a", b"b", b"ab", b"abc", b"c", b"ba", b"ca", b"\xc3", b"\xa9", b"\xc3\xa9"]
TEACHER = [b"a", b"b", b"c", b"bc", b"aab", b"ca", b"\xc3", b"\xa9", b"\xa9a"]
S_BOS, S_EOS, T_BOS = 10, 11, 9


class TokenHeadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        sp, tp = os.path.join(cls.tmp.name, "student.tiktoken"), os.path.join(cls.tmp.name, "teacher.tiktoken")
        write_tiktoken(sp, STUDENT)
        write_tiktoken(tp, TEACHER)
        cls.student = bld_torch.load_tokenizer(sp, [f"<s>={S_BOS}", f"</s>={S_EOS}"])
        cls.teacher = bld_torch.load_tokenizer(tp, [f"<s>={T_BOS}"])
        rng = random.Random(7)
        cls.seqs = []  # (student text ids, teacher text ids)
        for n in (6, 3, 5):
            sids = [rng.randrange(len(STUDENT)) for _ in range(n)]
            text = b"".join(STUDENT[i] for i in sids)
            cls.seqs.append((sids, greedy(TEACHER, text)))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def distiller(self, **kw):
        kw.setdefault("heads", 3)  # the longest student token: every text byte is supervised
        return bld_torch.Distiller(self.teacher, self.student, threads=2, **kw)

    def batch(self, seqs, left=False, pad=0, extra=1, seed=0):
        """Padded ids and masks, BOS first, plus random teacher logits (NaN at padding)."""
        g = torch.Generator().manual_seed(seed)
        s_rows = [[S_BOS] + s for s, _ in seqs]
        t_rows = [[T_BOS] + t for _, t in seqs]

        def pack(rows):
            w = max(len(r) for r in rows) + extra
            ids = torch.full((len(rows), w), pad, dtype=torch.int64)
            mask = torch.zeros((len(rows), w), dtype=torch.int64)
            for b, r in enumerate(rows):
                lo = w - len(r) if left else 0
                ids[b, lo:lo + len(r)] = torch.tensor(r)
                mask[b, lo:lo + len(r)] = 1
            return ids, mask

        t_ids, t_mask = pack(t_rows)
        s_ids, s_mask = pack(s_rows)
        t_logits = torch.randn(*t_ids.shape, len(TEACHER) + 1, generator=g, dtype=torch.float64) * 2
        t_logits[t_mask == 0] = float("nan")
        return t_logits, t_ids, t_mask, s_ids, s_mask

    def student_logits(self, shape, seed=1, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(*shape, self.student.vocab_size + 2, generator=g, dtype=torch.float64) * 1.5).to(dtype)

    def loss_and_grad(self, d, z, s_ids, targets, **kw):
        z = z.detach().clone().requires_grad_(True)
        loss = bld_torch.token_head_loss(d, z, s_ids, targets, **kw)
        loss.backward()
        return loss.detach(), z.grad

    # ---------------------------------------------------------------------------------------

    def test_gradcheck(self):
        for opts in ({}, {"divergence": "jsd", "temperature": 1.5, "reduction": "sum", "weight": 0.5},
                     {"divergence": "reverse_kl", "temperature": 0.8}):
            with self.subTest(**opts):
                d = self.distiller(path="reference")
                t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs[:2])
                targets = d.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
                z = self.student_logits(s_ids.shape).requires_grad_(True)
                fn = lambda x: bld_torch.token_head_loss(d, x, s_ids, targets, student_mask=s_mask, **opts)  # noqa: E731
                self.assertGreater(fn(z).item(), 0.0)
                self.assertTrue(torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7, rtol=1e-5))

    def test_one_autograd_node(self):
        d = self.distiller()
        t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs)
        targets = d.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
        z = self.student_logits(s_ids.shape).requires_grad_(True)
        loss = d.token_head_loss(z, s_ids, targets, student_mask=s_mask)
        self.assertEqual(loss.dim(), 0)
        self.assertEqual(loss.dtype, torch.float64)
        self.assertEqual(type(loss.grad_fn.next_functions[0][0]).__name__, "AccumulateGrad")
        self.assertIs(loss.grad_fn.next_functions[0][0].variable, z)
        # the function form is the method
        self.assertEqual(bld_torch.token_head_loss(d, z, s_ids, targets, student_mask=s_mask).item(), loss.item())
        with torch.no_grad():
            self.assertIsNone(d.token_head_loss(z, s_ids, targets, student_mask=s_mask).grad_fn)
        # bf16 logits: a float32 value and a bf16 gradient near the float one on the same values
        zb = z.detach().to(torch.bfloat16).requires_grad_(True)
        lb = d.token_head_loss(zb, s_ids, targets, student_mask=s_mask)
        self.assertEqual(lb.dtype, torch.float32)
        lb.backward()
        self.assertEqual(zb.grad.dtype, torch.bfloat16)
        lf, gf = self.loss_and_grad(d, zb.detach().float(), s_ids, targets, student_mask=s_mask)
        self.assertAlmostEqual(lb.item(), lf.item(), delta=1e-6 * abs(lf.item()))
        self.assertTrue(torch.all((zb.grad.float() - gf).abs() <= gf.abs() / 256 + 1e-6 * gf.abs().max()))

    def test_layouts_agree(self):
        t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs, left=True)
        z = self.student_logits(s_ids.shape)
        out = {}
        for layout in ("compact", "dense"):
            d = self.distiller(layout=layout)
            targets = d.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
            self.assertEqual(targets.layout, layout)
            out[layout] = self.loss_and_grad(d, z, s_ids, targets, student_mask=s_mask, temperature=1.2)
        self.assertEqual(out["compact"][0].item(), out["dense"][0].item())
        self.assertTrue(torch.equal(out["compact"][1], out["dense"][1]))

    def test_trie_row_order(self):
        t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs)
        z = self.student_logits(s_ids.shape)
        d_id = self.distiller()
        d_trie = self.distiller(student_row_order="trie")
        self.assertEqual(d_trie.student_row_order, "trie")
        perm = d_trie.student_permutation
        self.assertEqual(perm.dtype, torch.int64)
        self.assertEqual(sorted(perm.tolist()), sorted(set(perm.tolist())))
        self.assertTrue(set(range(len(STUDENT))) <= set(perm.tolist()))  # every text token has a column
        targets = d_id.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
        # trie-ordered rows are read on the fast path, from float32 / bf16 / f16 logits
        zf = z.float()
        l_id, g_id = self.loss_and_grad(d_id, zf, s_ids, targets, student_mask=s_mask)
        l_trie, g_trie = self.loss_and_grad(d_trie, zf[..., perm].contiguous(), s_ids, targets, student_mask=s_mask)
        self.assertAlmostEqual(l_id.item(), l_trie.item(), delta=1e-6 * abs(l_id.item()))
        torch.testing.assert_close(g_trie, g_id[..., perm], rtol=1e-4, atol=1e-7 * g_id.abs().max().item())
        # the fp64 reference path on the same values agrees with the fast float one
        d_ref = self.distiller(path="reference")
        l_ref, g_ref = self.loss_and_grad(d_ref, zf.double(), s_ids, targets, student_mask=s_mask)
        self.assertAlmostEqual(l_ref.item(), l_id.item(), delta=1e-5 * abs(l_ref.item()))
        torch.testing.assert_close(g_ref.float(), g_id, rtol=1e-4, atol=1e-6 * g_ref.abs().max().item())

    def test_padded_batch_equals_single_sequences(self):
        d = self.distiller()
        for left in (False, True):
            for how in ("mask", "pad_id", "-100"):
                with self.subTest(left=left, how=how):
                    pad = {"mask": 0, "pad_id": S_EOS, "-100": -100}[how]
                    t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs, left=left, pad=pad, extra=2)
                    t_ids = t_ids.masked_fill(t_mask == 0, 0)
                    targets = d.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
                    z = self.student_logits(s_ids.shape)
                    if how == "mask":
                        loss, grad = self.loss_and_grad(d, z, s_ids, targets, student_mask=s_mask, reduction="sum")
                    else:
                        dp = self.distiller(student_pad_id=S_EOS) if how == "pad_id" else d
                        loss, grad = self.loss_and_grad(dp, z, s_ids, targets, reduction="sum")
                    total = 0.0
                    for b, (ss, ts) in enumerate(self.seqs):
                        cols = s_mask[b].nonzero().flatten()
                        lo, hi = int(cols[0]), int(cols[-1]) + 1
                        tcols = t_mask[b].nonzero().flatten()
                        one_t = d.targets(t_logits[b, int(tcols[0]):int(tcols[-1]) + 1], torch.tensor([T_BOS] + ts),
                                          torch.tensor([S_BOS] + ss))
                        l1, g1 = self.loss_and_grad(d, z[b, lo:hi], torch.tensor([S_BOS] + ss), one_t, reduction="sum")
                        total += l1.item()
                        torch.testing.assert_close(grad[b, lo:hi], g1, rtol=1e-12, atol=1e-15)
                        self.assertEqual(grad[b, :lo].abs().sum().item(), 0.0)
                        self.assertEqual(grad[b, hi:].abs().sum().item(), 0.0)
                    self.assertAlmostEqual(loss.item(), total, delta=1e-12 * abs(total))
                    # mean = sum / supervised text bytes (BOS-led and shifted: every byte but none)
                    mean, _ = self.loss_and_grad(d, z, s_ids, targets, student_mask=s_mask)
                    n_bytes = sum(len(STUDENT[i]) for ss, _ in self.seqs for i in ss)
                    self.assertAlmostEqual(mean.item(), loss.item() / n_bytes, delta=1e-12 * loss.item())

    def test_errors(self):
        d = self.distiller()
        t_logits, t_ids, t_mask, s_ids, s_mask = self.batch(self.seqs)
        targets = d.targets(t_logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
        z = self.student_logits(s_ids.shape, dtype=torch.float32)
        call = lambda **kw: d.token_head_loss(kw.pop("z", z), kw.pop("ids", s_ids), kw.pop("t", targets),  # noqa: E731
                                              student_mask=kw.pop("mask", s_mask), **kw)
        # ids: not matching the logits' shape, an id outside the vocabulary, float ids
        with self.assertRaisesRegex(bld_torch.ShapeError, r"student_ids.*to match student_logits"):
            call(ids=s_ids[:, :-1])
        bad = s_ids.clone()
        bad[1, 1] = 99
        with self.assertRaisesRegex(bld_torch.DomainError, r"sequence 1.*outside the student's vocabulary"):
            call(ids=bad)
        with self.assertRaisesRegex(bld_torch.DtypeError, "student_ids"):
            call(ids=s_ids.float())
        # targets of another batch
        t_logits2, t_ids2, t_mask2, s_ids2, s_mask2 = self.batch(self.seqs[:2])
        other = d.targets(t_logits2, t_ids2, s_ids2, teacher_mask=t_mask2, student_mask=s_mask2)
        with self.assertRaisesRegex(bld_torch.ShapeError, "targets of this batch"):
            call(t=other)
        with self.assertRaisesRegex(TypeError, "bld_torch.Targets"):
            call(t=(targets.values, targets.mask))
        # NaN logits: named by sequence, row and column
        nan = z.clone()
        nan[2, 1, 4] = float("nan")
        with self.assertRaisesRegex(bld_torch.DomainError, "sequence 2"):
            call(z=nan)
        # logits: wrong rank, wrong dtype, too few columns
        with self.assertRaisesRegex(bld_torch.ShapeError, r"\[B, S_s, V_s\]"):
            call(z=z[..., None])
        with self.assertRaisesRegex(bld_torch.DtypeError, "student_logits"):
            call(z=z.to(torch.int32))
        with self.assertRaisesRegex(bld_torch.ShapeError, "narrower"):
            call(z=z[..., :5])
        with self.assertRaisesRegex(TypeError, "student_logits"):
            call(z=z.tolist())
        # masks: a gap, another shape
        gap = s_mask.clone()
        gap[0, 2] = 0
        with self.assertRaisesRegex(bld_torch.DomainError, "one contiguous run"):
            call(mask=gap)
        with self.assertRaisesRegex(bld_torch.ShapeError, "student_mask"):
            call(mask=s_mask[:, 1:])
        # options
        with self.assertRaisesRegex(bld_torch.DomainError, "divergence"):
            call(divergence="kld")
        with self.assertRaisesRegex(bld_torch.DomainError, "reduction"):
            call(reduction="eq5")
        with self.assertRaises(bld_torch.DomainError):
            call(temperature=0.0)
        with self.assertRaisesRegex(bld_torch.DomainError, "student_row_order"):
            self.distiller(student_row_order="sorted")


if __name__ == "__main__":
    unittest.main()
