"""Tests of the bld_torch module: gradcheck, agreement with a plain PyTorch implementation of the
same formulas (written here), ByteHead, and clear errors for bad input.

Run: scripts/test-python.sh, or after building
    BLD_TORCH_BUILD=build-py /usr/bin/python3 -m pytest tests/python
(or `-m unittest discover -s tests/python` where pytest is missing). With BLD_TORCH_INSTALLED=1
the tests import the bld_torch that the interpreter has installed (pip install ./python) and
check that it is that one, not the source tree's.
"""

import itertools
import json
import os
import pathlib
import re
import sys
import unittest

import torch

_REPO = pathlib.Path(__file__).resolve().parents[2]
_INSTALLED = os.environ.get("BLD_TORCH_INSTALLED") == "1"
if not _INSTALLED:
    _BUILD = os.environ.get("BLD_TORCH_BUILD", str(_REPO / "build-py"))
    sys.path.insert(0, _BUILD)

import bld_torch  # noqa: E402

_DATA = os.environ.get("BLD_DATA_DIR", str(_REPO / ".cache" / "data"))

A = 260
KINDS = ("kl", "reverse_kl", "jsd", "tvd")
REDUCTIONS = ("eq5", "slot_mean", "none")


# ---- the plain PyTorch reference ---------------------------------------------------------

def ref_slot_values(z, p, y, kind, tau=1.0, floor=1e-12):
    """Per-slot values [..., K], straight from the formulas."""
    if kind == "ce":
        return -torch.log_softmax(z, -1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    lq = torch.log_softmax(z / tau, -1)
    q = lq.exp()
    if kind == "kl":
        return (torch.xlogy(p, p) - p * lq).sum(-1)
    if kind == "reverse_kl":
        return (q * (lq - torch.log(p.clamp(min=floor)))).sum(-1)
    if kind == "jsd":
        m = 0.5 * (p + q)
        return 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) + 0.5 * (q * (lq - torch.log(m))).sum(-1)
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(kind)


def ref_reduce(v, mask, reduction):
    m = mask.to(v.dtype)
    v = v * m
    if reduction == "none":
        return v
    if reduction == "slot_mean":
        return v.sum() / m.sum().clamp(min=1)
    tokens = (m.sum(-1) > 0).to(v.dtype).sum()  # eq5: tokens with an active slot
    return v.sum() / tokens.clamp(min=1)


def ref_loss(z, p, y, mask, kind, tau, reduction):
    return ref_reduce(ref_slot_values(z, p, y, kind, tau), mask, reduction)


def ref_bld(z, p, y, mask, lambda_byte, lambda_kl, kind, tau, reduction):
    v = lambda_byte * ref_slot_values(z, p, y, "ce") + lambda_kl * ref_slot_values(z, p, y, kind, tau)
    return ref_reduce(v, mask, reduction)


def make_batch(lead, k, dtype=torch.float64, seed=0):
    """Logits, teacher distributions with exact zeros (one one-hot slot), true bytes (-100 where
    masked) and a mask with a fully inactive token."""
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(*lead, k, A, generator=g, dtype=torch.float64)
    raw = torch.randn(*lead, k, A, generator=g, dtype=torch.float64).mul(2).exp()
    raw = raw * (torch.rand(*lead, k, A, generator=g, dtype=torch.float64) > 0.6)
    p = raw / raw.sum(-1, keepdim=True)
    flat = p.reshape(-1, k, A)
    flat[0, 0] = 0.0
    flat[0, 0, 7] = 1.0
    y = torch.randint(0, 257, (*lead, k), generator=g)
    mask = torch.rand(*lead, k, generator=g) < 0.8
    mflat = mask.reshape(-1, k)
    mflat[0, 0] = True
    mflat[-1, :] = False
    y = torch.where(mask, y, torch.full_like(y, -100))
    return z.to(dtype), p.to(dtype), y, mask


class GradcheckTest(unittest.TestCase):
    """torch.autograd.gradcheck on bld_torch's analytic backward, fp64."""

    def setUp(self):
        self.z, self.p, self.y, self.mask = make_batch((3,), 2, seed=1)

    def check(self, fn):
        z = self.z.clone().requires_grad_(True)
        self.assertTrue(torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7, rtol=1e-5))

    def test_divergences(self):
        for kind, reduction, tau in itertools.product(KINDS, REDUCTIONS, (1.0, 1.7)):
            with self.subTest(kind=kind, reduction=reduction, tau=tau):
                self.check(lambda z: bld_torch.byte_loss(z, self.p, self.mask, kind=kind, temperature=tau,
                                                         reduction=reduction))

    def test_cross_entropy(self):
        for reduction in REDUCTIONS:
            with self.subTest(reduction=reduction):
                self.check(lambda z: bld_torch.byte_loss(z, None, self.mask, kind="ce", reduction=reduction,
                                                         true_bytes=self.y))

    def test_bld_term(self):
        for reduction, tau in itertools.product(REDUCTIONS, (1.0, 0.6)):
            with self.subTest(reduction=reduction, tau=tau):
                self.check(lambda z: bld_torch.bld_loss(z, self.p, self.y, self.mask, kind="jsd",
                                                        temperature=tau, reduction=reduction))

    def test_leading_dimensions(self):
        z, p, y, mask = make_batch((2, 2), 2, seed=4)
        zz = z.clone().requires_grad_(True)
        self.assertTrue(torch.autograd.gradcheck(
            lambda x: bld_torch.bld_loss(x, p, y, mask, reduction="none"), (zz,), eps=1e-6, atol=1e-7, rtol=1e-5))


class ReferenceTest(unittest.TestCase):
    """Values and gradients equal the plain PyTorch formulas to 1e-5."""

    def compare(self, ours, theirs, z_ours, z_theirs, upstream=None):
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-5)
        go = upstream if upstream is not None else torch.ones_like(ours)
        (g1,) = torch.autograd.grad(ours, z_ours, go)
        (g2,) = torch.autograd.grad(theirs, z_theirs, go)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)

    def test_every_kind_reduction_temperature_and_dtype(self):
        for dtype in (torch.float64, torch.float32):
            z, p, y, mask = make_batch((2, 3), 4, dtype=dtype, seed=7)
            up = torch.rand(2, 3, 4, dtype=dtype) + 0.5
            for kind, reduction, tau in itertools.product(KINDS + ("ce",), REDUCTIONS, (1.0, 0.7, 2.5)):
                if kind == "ce" and tau != 1.0:
                    continue
                with self.subTest(dtype=dtype, kind=kind, reduction=reduction, tau=tau):
                    z1 = z.clone().requires_grad_(True)
                    z2 = z.clone().requires_grad_(True)
                    if kind == "ce":
                        ours = bld_torch.byte_loss(z1, None, mask, kind="ce", reduction=reduction, true_bytes=y)
                    else:
                        ours = bld_torch.byte_loss(z1, p, mask, kind=kind, temperature=tau, reduction=reduction)
                    theirs = ref_loss(z2, p, y, mask, kind, tau, reduction)
                    self.assertEqual(ours.dtype, dtype)
                    self.assertEqual(ours.shape, theirs.shape)
                    self.compare(ours, theirs, z1, z2, up if reduction == "none" else None)

    def test_bld_term_and_its_defaults(self):
        z, p, y, mask = make_batch((4,), 5, seed=9)
        for (lb, lk), kind, reduction, tau in itertools.product(((1.0, 0.1), (0.3, 2.0), (0.0, 1.0), (1.0, 0.0)),
                                                                 KINDS, REDUCTIONS, (1.0, 1.9)):
            with self.subTest(lb=lb, lk=lk, kind=kind, reduction=reduction, tau=tau):
                z1 = z.clone().requires_grad_(True)
                z2 = z.clone().requires_grad_(True)
                ours = bld_torch.bld_loss(z1, p, y, mask, lambda_byte=lb, lambda_kl=lk, kind=kind,
                                          temperature=tau, reduction=reduction)
                theirs = ref_bld(z2, p, y, mask, lb, lk, kind, tau, reduction)
                self.compare(ours, theirs, z1, z2, torch.rand_like(theirs) if reduction == "none" else None)
        default = bld_torch.bld_loss(z, p, y, mask)
        explicit = ref_bld(z, p, y, mask, 1.0, 0.1, "kl", 1.0, "eq5")
        torch.testing.assert_close(default, explicit, rtol=1e-12, atol=1e-12)

    def test_masks_and_layouts(self):
        z, p, y, mask = make_batch((3,), 4, seed=3)
        all_on = bld_torch.byte_loss(z, p, torch.ones(3, 4, dtype=torch.bool))
        self.assertEqual(bld_torch.byte_loss(z, p).item(), all_on.item())
        self.assertEqual(bld_torch.byte_loss(z, p, mask).item(), bld_torch.byte_loss(z, p, mask.to(torch.uint8)).item())
        nothing = bld_torch.byte_loss(z, p, torch.zeros(3, 4, dtype=torch.bool))
        self.assertEqual(nothing.item(), 0.0)
        # Non-contiguous inputs are accepted (made contiguous), with the same result.
        zt = z.transpose(0, 1).contiguous().transpose(0, 1)
        pt = p.transpose(0, 1).contiguous().transpose(0, 1)
        self.assertFalse(zt.is_contiguous())
        self.assertEqual(bld_torch.byte_loss(zt, pt, mask).item(), bld_torch.byte_loss(z, p, mask).item())
        # int32 true bytes work like int64.
        ce64 = bld_torch.byte_loss(z, None, mask, kind="ce", true_bytes=y)
        ce32 = bld_torch.byte_loss(z, None, mask, kind="ce", true_bytes=y.to(torch.int32))
        self.assertEqual(ce64.item(), ce32.item())
        # Masked slots are never read.
        zn = z.clone()
        zn[~mask] = float("nan")
        self.assertEqual(bld_torch.byte_loss(zn, p, mask).item(), bld_torch.byte_loss(z, p, mask).item())

    def test_zero_mass_teacher_is_finite(self):
        z, p, y, mask = make_batch((2,), 3, seed=5)
        z = z.clone()
        z[0, 0, 3] = 800.0  # q underflows to 0 elsewhere
        for kind in KINDS:
            with self.subTest(kind=kind):
                zz = z.clone().requires_grad_(True)
                v = bld_torch.byte_loss(zz, p, mask, kind=kind)
                v.backward()
                self.assertTrue(torch.isfinite(v).item())
                self.assertTrue(torch.isfinite(zz.grad).all().item())

    def test_no_gradient_into_the_teacher(self):
        z, p, y, mask = make_batch((2,), 2, seed=6)
        z = z.clone().requires_grad_(True)
        p = p.clone().requires_grad_(True)
        bld_torch.byte_loss(z, p, mask).backward()
        self.assertIsNotNone(z.grad)
        self.assertIsNone(p.grad)

    def test_deterministic(self):
        z, p, y, mask = make_batch((4,), 3, seed=8)
        a = bld_torch.bld_loss(z, p, y, mask, kind="jsd", temperature=0.9)
        b = bld_torch.bld_loss(z, p, y, mask, kind="jsd", temperature=0.9)
        self.assertEqual(a.item(), b.item())


class ByteHeadTest(unittest.TestCase):
    def test_shapes_layers_and_init(self):
        torch.manual_seed(0)
        head = bld_torch.ByteHead(16, k=4)
        self.assertEqual(tuple(head.weight.shape), (4, 260, 16))
        self.assertEqual(tuple(head.bias.shape), (4, 260))
        self.assertLessEqual(head.weight.abs().max().item(), 0.25)
        self.assertEqual(bld_torch.ByteHead(8).k, 10)
        x = torch.randn(2, 3, 16)
        out = head(x)
        self.assertEqual(tuple(out.shape), (2, 3, 4, 260))
        for j in range(4):
            torch.testing.assert_close(out[..., j, :], torch.nn.functional.linear(x, head.weight[j], head.bias[j]))

    def test_trains_with_byte_loss(self):
        torch.manual_seed(1)
        head = bld_torch.ByteHead(8, k=3).double()
        hidden = torch.randn(2, 5, 8, dtype=torch.float64)
        targets = torch.softmax(3 * torch.randn(2, 5, 3, 260, dtype=torch.float64), -1)
        y = targets.argmax(-1)
        opt = torch.optim.SGD(head.parameters(), lr=0.5)
        losses = []
        for _ in range(10):
            opt.zero_grad()
            loss = bld_torch.bld_loss(head(hidden), targets, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.assertLess(losses[-1], losses[0])

    def test_errors(self):
        with self.assertRaises(ValueError):
            bld_torch.ByteHead(16, k=261)
        with self.assertRaises(ValueError):
            bld_torch.ByteHead(0)
        with self.assertRaises(ValueError):
            bld_torch.ByteHead(16)(torch.randn(2, 15))


class BadInputTest(unittest.TestCase):
    def setUp(self):
        self.z, self.p, self.y, self.mask = make_batch((3,), 2, seed=2)

    def assert_raises(self, cls, fn, *parts):
        with self.assertRaises(cls) as cm:
            fn()
        self.assertIsInstance(cm.exception, bld_torch.Error)
        for part in parts:
            self.assertIn(part, str(cm.exception))

    def test_dtypes(self):
        self.assert_raises(TypeError, lambda: bld_torch.byte_loss(self.z.long(), self.p), "head_logits", "int64")
        self.assert_raises(bld_torch.DtypeError, lambda: bld_torch.byte_loss(self.z.to(torch.complex64), self.p),
                           "complex64", "bfloat16")
        self.assert_raises(TypeError, lambda: bld_torch.byte_loss(self.z, self.p.long()), "teacher_targets")
        self.assert_raises(TypeError, lambda: bld_torch.byte_loss(self.z, self.p, self.mask.float()), "mask")
        self.assert_raises(TypeError, lambda: bld_torch.byte_loss(self.z, None, kind="ce", true_bytes=self.y.float()),
                           "true_bytes")
        with self.assertRaises(TypeError):
            bld_torch.byte_loss(self.z.numpy(), self.p)

    def test_shapes(self):
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, self.p[:2]), "teacher_targets", "[3, 2, 260]")
        self.assert_raises(bld_torch.ShapeError, lambda: bld_torch.byte_loss(self.z, self.p, self.mask[:, :1]), "mask")
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z[..., :259], self.p[..., :259]), "260")
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z[0], self.p[0]), "[..., K, 260]")
        big = torch.zeros(2, 261, 260, dtype=torch.float64)
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(big, big), "K = 261", "1 <= K <= 260")

    def test_device(self):
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z.to("meta"), self.p.to("meta")), "device")

    def test_values(self):
        z = self.z.clone()
        z[1, 1, 4] = float("nan")
        self.mask[1, 1] = True
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(z, self.p, self.mask), "token 1, head 1, byte 4", "NaN")
        z[1, 1, 4] = float("inf")
        self.assert_raises(bld_torch.DomainError, lambda: bld_torch.byte_loss(z, self.p, self.mask), "+inf")
        y = self.y.clone()
        y[0, 0] = 300
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, None, self.mask, kind="ce", true_bytes=y),
                           "true byte 300")
        p = self.p.clone()
        p[0, 0, 0] = -0.5
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, p, self.mask), "token 0, head 0, byte 0")

    def test_options(self):
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, self.p, temperature=0.0), "temperature")
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, self.p, kind="kld"), "kld")
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, self.p, reduction="mean"), "mean")
        self.assert_raises(ValueError, lambda: bld_torch.byte_loss(self.z, self.p, kind="ce"), "true_bytes")
        self.assert_raises(ValueError, lambda: bld_torch.bld_loss(self.z, self.p, self.y, lambda_kl=-1.0), "lambda_kl")


@unittest.skipUnless(bld_torch.WITH_CUDA and torch.cuda.is_available(),
                     "needs bld_torch built with CUDA (a CUDA build of torch) and a GPU")
class CudaDispatchTest(unittest.TestCase):
    """CUDA tensors run bld's CUDA kernels: values and gradients equal the CPU path's (1e-12
    relative in fp64, the kernels' stated tolerance; float32 1e-5), errors carry the same text."""

    def setUp(self):
        self.z, self.p, self.y, self.mask = make_batch((4, 3), 5, seed=7)

    def both(self, fn, dtype):
        cpu = [t.to(dtype) if t.is_floating_point() else t for t in (self.z, self.p)] + [self.y, self.mask]
        zc = cpu[0].clone().requires_grad_(True)
        zg = cpu[0].cuda().requires_grad_(True)
        vc = fn(zc, *cpu[1:])
        vg = fn(zg, *[t.cuda() for t in cpu[1:]])
        self.assertEqual(vg.device.type, "cuda")
        vc.sum().backward()
        vg.sum().backward()
        return vc.detach(), vg.detach().cpu(), zc.grad, zg.grad.cpu()

    def test_cuda_equals_cpu(self):
        for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            for kind, reduction, tau in itertools.product(KINDS, REDUCTIONS, (1.0, 1.7)):
                with self.subTest(dtype=dtype, kind=kind, reduction=reduction, tau=tau):
                    vc, vg, gc, gg = self.both(lambda z, p, y, m: bld_torch.byte_loss(
                        z, p, m, kind=kind, temperature=tau, reduction=reduction), dtype)
                    torch.testing.assert_close(vg, vc, rtol=rtol, atol=1e-12)
                    torch.testing.assert_close(gg, gc, rtol=rtol, atol=1e-12)
            vc, vg, gc, gg = self.both(lambda z, p, y, m: bld_torch.bld_loss(z, p, y, m, lambda_kl=0.3), dtype)
            torch.testing.assert_close(vg, vc, rtol=rtol, atol=1e-12)
            torch.testing.assert_close(gg, gc, rtol=rtol, atol=1e-12)
            vc, vg, gc, gg = self.both(lambda z, p, y, m: bld_torch.byte_loss(z, None, m, kind="ce", true_bytes=y), dtype)
            torch.testing.assert_close(vg, vc, rtol=rtol, atol=1e-12)

    def test_cuda_errors(self):
        z = self.z.clone()
        z[1, 2, 3, 4] = float("nan")
        with self.assertRaises(bld_torch.DomainError) as cm:
            bld_torch.byte_loss(z.cuda(), self.p.cuda())
        self.assertIn("logit is NaN", str(cm.exception))
        with self.assertRaises(bld_torch.ShapeError) as cm:
            bld_torch.byte_loss(self.z.cuda(), self.p)
        self.assertIn("teacher_targets", str(cm.exception))


class CanonicalTargets(unittest.TestCase):
    """bld_torch.canonical_targets on real tokenizers (Llama-3 teacher, GPT-2 student)."""

    @classmethod
    def setUpClass(cls):
        data = _DATA
        cls.data = data
        cls.teacher = bld_torch.load_tokenizer(os.path.join(data, "tokenizers", "llama3", "tokenizer.json"))
        cls.student = bld_torch.load_tokenizer(os.path.join(data, "tokenizers", "gpt2"))

        def first(name):
            with open(os.path.join(data, "ref", name + ".encode.tsv"), encoding="utf-8") as f:
                line = f.readline().rstrip("\n").split("\t")
            return bytes.fromhex(line[1]), torch.tensor([int(x) for x in line[2].split()], dtype=torch.int64)

        cls.text, cls.tids = first("llama3")
        _, cls.sids = first("gpt2")

    def test_one_hot_teacher_recovers_true_bytes(self):
        m = len(self.tids)
        logits = torch.full((m, self.teacher.vocab_size), -20.0)
        logits[torch.arange(m), self.tids] = 20.0  # the teacher is sure of its own tokens
        targets, mask, true_bytes = bld_torch.canonical_targets(logits, self.tids, self.sids, self.teacher,
                                                                self.student, k=6, text=self.text)
        self.assertEqual(tuple(targets.shape), (len(self.sids), 6, 260))
        self.assertTrue(mask.any())
        # Every active slot's byte is the text byte at that student offset; a sure teacher puts
        # (almost) all its mass on it.
        offsets = [0]
        for t in self.sids.tolist():
            offsets.append(offsets[-1] + len(self.student.token_bytes(t)))
        for l in range(len(self.sids)):
            for j in range(6):
                if mask[l, j]:
                    self.assertEqual(int(true_bytes[l, j]), self.text[offsets[l] + j])
                    self.assertGreater(float(targets[l, j, true_bytes[l, j]]), 0.99)
                else:
                    self.assertEqual(int(true_bytes[l, j]), -1)
        # Ready for the loss: a zero-logit head gets a finite loss.
        head = torch.zeros(len(self.sids), 6, 260, requires_grad=True)
        loss = bld_torch.bld_loss(head, targets, true_bytes.clamp(min=0), mask)
        loss.backward()
        self.assertTrue(torch.isfinite(loss))

    def test_dropped_share(self):
        m = len(self.tids)
        sure = torch.full((m, self.teacher.vocab_size), -20.0)
        sure[torch.arange(m), self.tids] = 20.0
        g = torch.Generator().manual_seed(3)
        noisy = torch.randn(m, self.teacher.vocab_size, generator=g) * 2.0
        for logits, name in ((sure, "sure"), (noisy, "noisy")):
            targets, mask, true_bytes, dropped = bld_torch.canonical_targets(
                logits, self.tids, self.sids, self.teacher, self.student, k=6, text=self.text, return_dropped=True)
            self.assertEqual(tuple(dropped.shape), (len(self.sids), 6))
            self.assertEqual(dropped.dtype, torch.float64)
            self.assertTrue(bool((dropped[~mask] == 0).all()), name)
            self.assertTrue(bool(((dropped >= 0) & (dropped < 1)).all()), name)
            if name == "sure":
                # Inside a teacher token the dropped share is the mass of the teacher tokens that
                # end exactly there; a teacher sure of its own tokenization gives them ~e^-40.
                self.assertLess(float(dropped.max()), 1e-6)
            else:
                # Llama-3 tokens run past single bytes, so a random teacher drops mass somewhere.
                self.assertGreater(float(dropped[mask].max()), 1e-3)
            # The default call returns the first three unchanged.
            again = bld_torch.canonical_targets(logits, self.tids, self.sids, self.teacher, self.student, k=6,
                                                text=self.text)
            self.assertEqual(len(again), 3)
            self.assertTrue(torch.equal(again[0], targets))

    def test_float16_and_bfloat16_teacher_logits(self):
        # Widening float16 / bfloat16 to float32 is exact, so the half-precision rows must give
        # the targets of their float32 copies.
        g = torch.Generator().manual_seed(4)
        logits = torch.randn(len(self.tids), self.teacher.vocab_size, generator=g) * 3.0
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                low = logits.to(dtype)
                got = bld_torch.canonical_targets(low, self.tids, self.sids, self.teacher, self.student, k=5,
                                                  text=self.text, return_dropped=True)
                want = bld_torch.canonical_targets(low.float(), self.tids, self.sids, self.teacher, self.student,
                                                   k=5, text=self.text, return_dropped=True)
                for a, b in zip(got, want):
                    self.assertEqual(a.dtype, b.dtype)
                    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        with self.assertRaises(bld_torch.DtypeError) as cm:
            bld_torch.canonical_targets(logits.to(torch.int32), self.tids, self.sids, self.teacher, self.student)
        self.assertIn("float16", str(cm.exception))

    def test_errors(self):
        m = len(self.tids)
        logits = torch.zeros(m, self.teacher.vocab_size)
        with self.assertRaises(bld_torch.Error) as cm:
            bld_torch.canonical_targets(logits, self.tids, self.sids[:-1], self.teacher, self.student, k=4)
        self.assertIn("byte", str(cm.exception))
        with self.assertRaises(bld_torch.DomainError):
            bld_torch.canonical_targets(logits, self.tids, self.sids, self.teacher, self.student, k=261)
        with self.assertRaises(bld_torch.DtypeError):
            bld_torch.canonical_targets(logits.double(), self.tids, self.sids, self.teacher, self.student, k=4)
        with self.assertRaises(bld_torch.ShapeError):
            bld_torch.canonical_targets(logits[:, :100], self.tids, self.sids, self.teacher, self.student, k=4)
        bad = logits.clone()
        bad[0, 5] = float("nan")
        with self.assertRaises(bld_torch.DomainError):
            bld_torch.canonical_targets(bad, self.tids, self.sids, self.teacher, self.student, k=4)
        with self.assertRaises(bld_torch.Error):
            bld_torch.canonical_targets(logits, self.tids, self.sids, self.teacher, self.student, k=4, text=b"nope")


class PackageTest(unittest.TestCase):
    def test_version_is_the_projects(self):
        m = re.search(r"project\(bld VERSION ([0-9.]+)", (_REPO / "CMakeLists.txt").read_text())
        self.assertIsNotNone(m)
        self.assertEqual(bld_torch.__version__, m.group(1))

    def test_submodules_export_the_same_objects(self):
        import bld_torch.head
        import bld_torch.losses
        import bld_torch.targets
        self.assertIs(bld_torch.losses.bld_loss, bld_torch.bld_loss)
        self.assertIs(bld_torch.losses.byte_loss, bld_torch.byte_loss)
        self.assertIs(bld_torch.head.ByteHead, bld_torch.ByteHead)
        self.assertIs(bld_torch.targets.canonical_targets, bld_torch.canonical_targets)
        for name in bld_torch.__all__:
            self.assertTrue(hasattr(bld_torch, name), name)

    @unittest.skipUnless(_INSTALLED, "BLD_TORCH_INSTALLED=1: the pip-installed package")
    def test_installed_package_is_imported(self):
        import importlib.metadata
        self.assertEqual(importlib.metadata.version("bld_torch"), bld_torch.__version__)
        where = pathlib.Path(bld_torch.__file__).resolve()
        self.assertTrue(where.is_relative_to(pathlib.Path(sys.prefix).resolve()), where)
        self.assertFalse(where.is_relative_to(_REPO / "python"), where)
        self.assertTrue(pathlib.Path(bld_torch._C.__file__).resolve().is_relative_to(where.parent))


def ref_grad(fn, z, upstream=None):
    """(value, d value / d z) of fn at z (a leaf copy), upstream weighting the outputs."""
    zz = z.detach().clone().requires_grad_(True)
    v = fn(zz)
    (g,) = torch.autograd.grad(v, zz, upstream.to(v.dtype) if upstream is not None else torch.ones_like(v))
    return v.detach(), g


class LowPrecisionTest(unittest.TestCase):
    """float16 / bfloat16 logits and targets (autocast) are computed in float32: the value is
    float32, equal to bld's float32 value on the same (widened) numbers and to the plain-PyTorch
    reference in float64 within float32 tolerance; the gradient has the logits' dtype and equals
    bld's float32 gradient narrowed to it (and the reference's within one rounding)."""

    def setUp(self):
        self.z, self.p, self.y, self.mask = make_batch((2, 3), 4, seed=11)
        self.up = torch.rand(2, 3, 4, dtype=torch.float64) + 0.5

    def losses(self):
        for kind, reduction in itertools.product(KINDS + ("ce", "bld"), REDUCTIONS):
            if kind == "ce":
                ours = lambda z, p, r=reduction: bld_torch.byte_loss(z, None, self.mask, kind="ce", reduction=r,
                                                                     true_bytes=self.y)
                ref = lambda z, p, r=reduction: ref_loss(z, p, self.y, self.mask, "ce", 1.0, r)
            elif kind == "bld":
                ours = lambda z, p, r=reduction: bld_torch.bld_loss(z, p, self.y, self.mask, lambda_kl=0.4,
                                                                    kind="jsd", temperature=1.3, reduction=r)
                ref = lambda z, p, r=reduction: ref_bld(z, p, self.y, self.mask, 1.0, 0.4, "jsd", 1.3, r)
            else:
                ours = lambda z, p, k=kind, r=reduction: bld_torch.byte_loss(z, p, self.mask, kind=k,
                                                                             temperature=0.8, reduction=r)
                ref = lambda z, p, k=kind, r=reduction: ref_loss(z, p, self.y, self.mask, k, 0.8, r)
            yield kind, reduction, ours, ref

    def test_half_logits(self):
        for dtype in (torch.float16, torch.bfloat16):
            z16 = self.z.to(dtype)
            p = self.p.float()
            for kind, reduction, ours, ref in self.losses():
                with self.subTest(dtype=dtype, kind=kind, reduction=reduction):
                    up = self.up if reduction == "none" else None
                    v16, g16 = ref_grad(lambda z: ours(z, p), z16, up)
                    v32, g32 = ref_grad(lambda z: ours(z, p), z16.float(), up)
                    self.assertEqual(v16.dtype, torch.float32)
                    self.assertEqual(g16.dtype, dtype)
                    self.assertTrue(torch.equal(v16, v32))
                    self.assertTrue(torch.equal(g16, g32.to(dtype)))
                    vr, gr = ref_grad(lambda z: ref(z, p.double()), z16.double(), up)
                    torch.testing.assert_close(v16.double(), vr, rtol=1e-5, atol=1e-5)
                    torch.testing.assert_close(g16.double(), gr, rtol=torch.finfo(dtype).eps, atol=1e-5)

    def test_half_targets(self):
        for dtype, zdtype in itertools.product((torch.float16, torch.bfloat16), (torch.float32, torch.float64)):
            p16 = self.p.to(dtype)
            z = self.z.to(zdtype)
            for kind, reduction, ours, ref in self.losses():
                if kind == "ce":
                    continue
                with self.subTest(dtype=dtype, logits=zdtype, kind=kind, reduction=reduction):
                    up = self.up if reduction == "none" else None
                    v16, g16 = ref_grad(lambda x: ours(x, p16), z, up)
                    v32, g32 = ref_grad(lambda x: ours(x, p16.float()), z, up)
                    self.assertEqual(v16.dtype, zdtype)
                    self.assertEqual(g16.dtype, zdtype)
                    self.assertTrue(torch.equal(v16, v32))
                    self.assertTrue(torch.equal(g16, g32))
                    vr, gr = ref_grad(lambda x: ref(x, p16.double()), z.double(), up)
                    torch.testing.assert_close(v16.double(), vr, rtol=1e-5, atol=1e-5)
                    torch.testing.assert_close(g16.double(), gr, rtol=1e-5, atol=1e-5)

    def test_autocast_byte_head(self):
        torch.manual_seed(2)
        head = bld_torch.ByteHead(16, k=4)
        hidden = torch.randn(2, 5, 16)
        targets = torch.softmax(2 * torch.randn(2, 5, 4, 260), -1)
        y = targets.argmax(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(hidden)
            loss = bld_torch.bld_loss(logits, targets, y)
        self.assertEqual(logits.dtype, torch.bfloat16)
        self.assertEqual(loss.dtype, torch.float32)
        ref = ref_bld(logits.detach().double(), targets.double(), y, torch.ones(2, 5, 4, dtype=torch.bool),
                      1.0, 0.1, "kl", 1.0, "eq5")
        torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)
        loss.backward()
        self.assertEqual(head.weight.grad.dtype, torch.float32)
        self.assertTrue(bool(torch.isfinite(head.weight.grad).all()))
        self.assertGreater(float(head.weight.grad.abs().sum()), 0.0)


def gpt2_byte_decoder():
    """GPT-2's byte-level alphabet, inverted: the printable bytes stand for themselves, the other
    bytes for the code points 256, 257, ... in byte order."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    chars = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


class TokenizerTest(unittest.TestCase):
    """bld_torch.Tokenizer against the tokenizer files themselves (read here with json)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(_DATA, "tokenizers")
        cls.gpt2 = bld_torch.load_tokenizer(os.path.join(cls.dir, "gpt2"))
        cls.llama3_path = os.path.join(cls.dir, "llama3", "tokenizer.json")
        cls.llama3 = bld_torch.load_tokenizer(cls.llama3_path)

    def test_gpt2_ids_and_bytes_match_encoder_json(self):
        with open(os.path.join(self.dir, "gpt2", "encoder.json"), encoding="utf-8") as f:
            encoder = json.load(f)
        decode = gpt2_byte_decoder()
        tok = self.gpt2
        self.assertEqual(tok.vocab_size, max(encoder.values()) + 1)
        self.assertEqual(len(tok), tok.vocab_size)
        self.assertEqual(tok.special_ids, {"<|endoftext|>": encoder["<|endoftext|>"]})
        first = {}
        for piece, i in sorted(encoder.items(), key=lambda e: e[1]):
            if piece == "<|endoftext|>":
                self.assertEqual(tok.token_kind(i), "special")
                self.assertEqual(tok.token_bytes(i), b"")
                continue
            b = bytes(decode[c] for c in piece)
            first.setdefault(b, i)
            self.assertEqual(tok.token_bytes(i), b)
            self.assertEqual(tok.token_kind(i), "text")
        self.assertEqual(tok.text_tokens, len(encoder) - 1)
        for b, i in first.items():
            self.assertEqual(tok.id_of(b), i)
        self.assertEqual(tok.id_of(bytearray(b" the")), tok.id_of(b" the"))

    def test_special_ids_match_the_files_added_tokens(self):
        for name in ("llama2", "llama3", "qwen3", "gemma3"):
            path = os.path.join(self.dir, name, "tokenizer.json")
            with open(path, encoding="utf-8") as f:
                added = json.load(f)["added_tokens"]
            tok = self.llama3 if name == "llama3" else bld_torch.load_tokenizer(path)
            with self.subTest(tokenizer=name):
                want = {t["content"]: t["id"] for t in added if t["special"]}
                self.assertEqual(tok.special_ids, want)
                self.assertEqual(list(tok.special_ids.values()), sorted(want.values()))  # id order
                for s, i in want.items():
                    self.assertEqual(tok.special_id(s), i)
                    self.assertEqual(tok.token_kind(i), "special")

    def test_transformations_and_repr(self):
        llama2_path = os.path.join(self.dir, "llama2", "tokenizer.json")
        qwen3_path = os.path.join(self.dir, "qwen3", "tokenizer.json")
        cl100k_path = os.path.join(self.dir, "cl100k", "cl100k_base.tiktoken")
        with open(llama2_path, encoding="utf-8") as f:
            normalizers = json.load(f)["normalizer"]["normalizers"]
        self.assertIn({"type": "Prepend", "prepend": "\u2581"}, normalizers)  # the file's dummy prefix
        llama2 = bld_torch.load_tokenizer(llama2_path)
        self.assertEqual(llama2.dummy_prefix, "always")
        with open(qwen3_path, encoding="utf-8") as f:
            self.assertEqual(json.load(f)["normalizer"], {"type": "NFC"})
        qwen3 = bld_torch.load_tokenizer(qwen3_path)
        self.assertEqual(qwen3.normalizer, "NFC")
        self.assertEqual(self.gpt2.dummy_prefix, "none")
        cl100k = bld_torch.load_tokenizer(cl100k_path, specials=["<|endoftext|>=100257"])
        self.assertEqual(cl100k.special_ids, {"<|endoftext|>": 100257})
        for tok, fmt in ((self.gpt2, "encoder.json + vocab.bpe"), (llama2, "tokenizer.json"),
                         (qwen3, "tokenizer.json"), (cl100k, "tiktoken")):
            with self.subTest(source=tok.source):
                self.assertEqual(tok.format, fmt)
                r = repr(tok)
                for part in (fmt, tok.source, f"vocab_size={tok.vocab_size}", f"text_tokens={tok.text_tokens}",
                             f"special_tokens={len(tok.special_ids)}", f"dummy_prefix={tok.dummy_prefix}"):
                    self.assertIn(part, r)
        self.assertIn("normalizer=NFC", repr(qwen3))
        self.assertTrue(os.path.samefile(llama2.source, llama2_path))

    def test_errors(self):
        tok = self.llama3
        with self.assertRaises(KeyError) as cm:
            tok.special_id("<|begin_of_txt|>")
        msg = str(cm.exception)
        for part in ("<|begin_of_txt|>", "<|begin_of_text|>", "<|eot_id|>", "256 in all", self.llama3_path):
            self.assertIn(part, msg)
        # The named tokens come first (in id order), the reserved placeholders after them.
        with open(self.llama3_path, encoding="utf-8") as f:
            added = sorted((t["id"], t["content"]) for t in json.load(f)["added_tokens"] if t["special"])
        named = [name for _, name in added if "reserved" not in name]
        self.assertIn("its special tokens: " + ", ".join(named) + ", <|reserved_special_token_0|>", msg)
        with self.assertRaises(KeyError) as cm:
            self.gpt2.special_id("</s>")
        self.assertIn("<|endoftext|>", str(cm.exception))
        for bad in (-1, tok.vocab_size, 2**40):
            for method in (tok.token_bytes, tok.token_kind):
                with self.subTest(id=bad, method=method.__name__):
                    with self.assertRaises(IndexError) as cm:
                        method(bad)
                    self.assertIn(f"id {bad}", str(cm.exception))
                    self.assertIn(f"0..{tok.vocab_size - 1}", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            tok.id_of("hello")
        self.assertIn("expected bytes", str(cm.exception))
        for missing in (b"", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9"):
            with self.assertRaises(KeyError):
                tok.id_of(missing)
        with self.assertRaises(TypeError):
            bld_torch.load_tokenizer(self.llama3_path, specials="<x>=1")


class ArgumentErrorTest(unittest.TestCase):
    """Arguments of the wrong type or shape get a short message naming the argument."""

    def setUp(self):
        self.z, self.p, self.y, self.mask = make_batch((3,), 2, seed=2)

    def assert_short(self, cls, fn, *parts, absent=()):
        with self.assertRaises(cls) as cm:
            fn()
        msg = str(cm.exception)
        self.assertLess(len(msg), 300, msg)
        self.assertNotIn("Invoked with", msg)
        for part in parts:
            self.assertIn(part, msg)
        for part in absent:
            self.assertNotIn(part, msg)

    def test_lists_instead_of_tensors(self):
        tok = bld_torch.load_tokenizer(os.path.join(_DATA, "tokenizers", "gpt2"))
        logits = torch.zeros(3, tok.vocab_size)
        ids = torch.tensor([464, 3290, 13])
        call = bld_torch.canonical_targets
        self.assert_short(TypeError, lambda: call(logits, [464, 3290, 13], ids, tok, tok), "`teacher_ids`", "list")
        self.assert_short(TypeError, lambda: call(logits, ids, [464, 3290, 13], tok, tok), "`student_ids`", "list")
        self.assert_short(TypeError, lambda: call(logits.numpy(), ids, ids, tok, tok), "`teacher_logits`", "ndarray")
        self.assert_short(TypeError, lambda: call(logits, ids, ids, "gpt2", tok), "`teacher`", "str")
        self.assert_short(TypeError, lambda: call(logits, ids, ids, tok, tok, k=2.5), "`k`", "float")
        self.assert_short(TypeError, lambda: call(logits, ids, ids, tok, tok, text="The dog."), "`text`", "str")
        self.assert_short(TypeError, lambda: bld_torch.bld_loss(self.z, self.p, self.y.tolist()), "`true_bytes`",
                          "list")
        self.assert_short(TypeError, lambda: bld_torch.byte_loss(self.z, self.p, self.mask.tolist()), "`mask`", "list")
        self.assert_short(TypeError, lambda: bld_torch.byte_loss(self.z.tolist(), self.p), "`head_logits`", "list")

    def test_shape_errors_blame_the_right_argument(self):
        z256 = self.z[..., :256]
        for fn in (lambda: bld_torch.byte_loss(z256, self.p),
                   lambda: bld_torch.bld_loss(z256, self.p, self.y),
                   lambda: bld_torch.byte_loss(z256, None, kind="ce", true_bytes=self.y)):
            self.assert_short(bld_torch.ShapeError, fn, "`head_logits`", "expected [..., K, 260]", "[3, 2, 256]",
                              absent=("teacher_targets",))
        self.assert_short(bld_torch.ShapeError, lambda: bld_torch.byte_loss(self.z, self.p[..., :256]),
                          "`teacher_targets`", "[3, 2, 260]", "[3, 2, 256]")
        self.assert_short(bld_torch.ShapeError, lambda: bld_torch.bld_loss(self.z, self.p[:, :1], self.y),
                          "`teacher_targets`", "[3, 2, 260]", "[3, 1, 260]")
        self.assert_short(bld_torch.ShapeError, lambda: bld_torch.bld_loss(self.z, self.p, self.y[:2]),
                          "`true_bytes`", "[3, 2]", absent=("teacher_targets",))


if __name__ == "__main__":
    unittest.main()
