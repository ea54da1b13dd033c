"""bld_torch.Distiller.covering_targets: the covering methods with a PyTorch model as the teacher.

The oracle is written here from the definition (docs/01_method.md, "Exact covering"), by brute
force: every teacher token path that decodes exactly to a prefix x[0..o) of the text, with its
probability under the model, adds to byte a at every i >= o the mass of its next tokens that
start with x[o..i)·a (and, at i = o, its special tokens' mass to STOP). The teacher is a torch
bigram module over a toy vocabulary with many segmentations of each text. Checked:

* exact covering, the unlimited beam (K = 0, epsilon = 0) and the repaired path at threshold 0
  with an unlimited beam equal the brute force at every byte, with nothing dropped;
* the repaired path at threshold 1 is the canonical path: one row per teacher token, and its
  slot targets equal ``Distiller.targets`` on the same model's rows along the same ids;
* the slot targets: each active slot (p, k) holds the distribution of the text byte it predicts
  (byte k of student token p + 1, shifted layout) and that byte as its true byte;
* the cost: the model's calls and forwarded sequences as counted by a wrapper, at most
  ``max_batch`` sequences a call, the canonical path's contexts (prefixes of one another) read
  from one forward pass per text, and the distributions do not depend on ``max_batch``;
* errors: unknown method, a model returning the wrong shape, a model that raises.

Run: PYTHONPATH=build-py /usr/bin/python3 -m unittest tests/python/test_covering.py
"""
import os
import pathlib
import sys
import tempfile
import unittest

import numpy as np
import torch

_BUILD = os.environ.get("BLD_TORCH_BUILD", str(pathlib.Path(__file__).resolve().parents[2] / "build-py"))
if not os.environ.get("BLD_TORCH_INSTALLED"):
    sys.path.insert(0, _BUILD)

import bld_torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from toy_vocab import greedy, write_tiktoken  # noqa: E402

TEACHER = [b"a", b"b", b"c", b"ab", b"bc", b"abc", b"ca", b"cab", b"bca", b"abca"]
STUDENT = [b"a", b"b", b"c", b"bc", b"ca", b"abc", b"cabc"]
TEXTS = [b"abcabca", b"cabcab", b"bcaab"]
STOP = 256


class Bigram:
    """next-token logits = table[previous token + 1] (table[0] with no context)."""

    def __init__(self, table):
        self.table = torch.as_tensor(table)
        self.calls, self.sequences, self.largest = 0, 0, 0

    def __call__(self, ids, lengths):
        assert ids.dtype == torch.int64 and lengths.dtype == torch.int64 and lengths.device.type == "cpu"
        B = ids.shape[0]
        self.calls += 1
        self.sequences += B
        self.largest = max(self.largest, B)
        prev = torch.cat([torch.full((B, 1), -1, dtype=torch.int64), ids], 1)
        return self.table[prev + 1]


def brute_force(table, eos, text):
    """[len(text), 260]: the exact next-byte distributions of the bigram teacher (see the top)."""
    L = len(text)
    num = np.zeros((L, 260))

    def probs(prev):
        row = table[prev + 1].astype(np.float64)
        p = np.exp(row - row.max())
        return p / p.sum()

    stack = [(-1, 0, 1.0)]  # (last token, offset o, path probability)
    while stack:
        prev, o, w = stack.pop()
        p = probs(prev)
        for i in range(o, L):
            if i == o:
                num[i, STOP] += w * p[eos]
            for t, tb in enumerate(TEACHER):
                if len(tb) > i - o and tb[: i - o] == text[o:i]:
                    num[i, tb[i - o]] += w * p[t]
        for t, tb in enumerate(TEACHER):
            if o + len(tb) <= L and text[o : o + len(tb)] == tb:
                stack.append((t, o + len(tb), w * p[t]))
    return num / num.sum(1, keepdims=True)


class CoveringTargets(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        tp, sp = os.path.join(self.dir.name, "t.tiktoken"), os.path.join(self.dir.name, "s.tiktoken")
        write_tiktoken(tp, TEACHER)
        write_tiktoken(sp, STUDENT)
        self.eos = len(TEACHER)
        self.teacher = bld_torch.load_tokenizer(tp, [f"<eos>={self.eos}"])
        self.student = bld_torch.load_tokenizer(sp, [f"<eos>={len(STUDENT)}"])
        V = len(TEACHER) + 1
        rng = np.random.default_rng(11)
        self.table = (rng.standard_normal((V + 1, V)) * 1.5).astype(np.float32)
        self.tids = [torch.tensor(greedy(TEACHER, t)) for t in TEXTS]
        self.sids = [torch.tensor(greedy(STUDENT, t)) for t in TEXTS]
        self.K = 3
        self.d = bld_torch.Distiller(self.teacher, self.student, heads=self.K, shifted=True, layout="dense")

    def tearDown(self):
        self.dir.cleanup()

    def covering(self, model=None, **kw):
        return self.d.covering_targets(model or Bigram(self.table), self.tids, self.sids, texts=TEXTS, **kw)

    def test_exact_methods_equal_the_brute_force(self):
        want = [brute_force(self.table, self.eos, t) for t in TEXTS]
        for kw in ({"method": "exact"}, {"method": "beam", "beam": 0, "epsilon": 0.0},
                   {"method": "repair", "threshold": 0.0, "beam": 0, "epsilon": 0.0}):
            with self.subTest(**kw):
                got = self.covering(**kw)
                for b, t in enumerate(TEXTS):
                    self.assertEqual(tuple(got.bytes[b].shape), (len(t), 260))
                    self.assertEqual(got.bytes[b].dtype, torch.float64)
                    self.assertLess(np.abs(got.bytes[b].numpy() - want[b]).max(), 1e-10)
                    self.assertEqual(got.dropped[b].abs().max().item(), 0.0)

    def test_the_default_beam_is_close_and_prunes(self):
        got = self.covering()  # K = 10, epsilon = 0.01
        for b, t in enumerate(TEXTS):
            diff = np.abs(got.bytes[b].numpy() - brute_force(self.table, self.eos, t)).max()
            self.assertLess(diff, 0.05)
            self.assertTrue(torch.all(got.bytes[b].sum(1).sub(1).abs() < 1e-12))

    def test_threshold_one_is_the_canonical_path(self):
        got = self.covering(method="repair", threshold=1.0)
        self.assertEqual(got.teacher_rows, [len(i) for i in self.tids])
        # Distiller.targets on the model's own rows: [BOS, ids] with row q = the logits after q tokens.
        for b, t in enumerate(TEXTS):
            ids = self.tids[b]
            tin = torch.cat([torch.tensor([self.eos]), ids])
            rows = torch.as_tensor(self.table)[torch.cat([torch.tensor([-1]), ids]) + 1]
            want = self.d.targets(rows, tin, self.sids[b])
            mine = self.d.covering_targets(Bigram(self.table), [ids], [self.sids[b]], method="repair", threshold=1.0)
            self.assertTrue(torch.equal(mine.targets.mask, want.mask))
            self.assertTrue(torch.equal(mine.targets.true_bytes, want.true_bytes))
            self.assertLess((mine.targets.values - want.values).abs().max().item(), 1e-6)
            self.assertLess((mine.targets.dropped - want.dropped).abs().max().item(), 1e-6)

    def test_each_slot_reads_the_byte_it_predicts(self):
        got = self.covering()
        tg = got.targets
        self.assertEqual(tg.shape, (len(TEXTS), max(len(s) for s in self.sids), self.K))
        for b, t in enumerate(TEXTS):
            sid = self.sids[b].tolist()
            start = np.cumsum([0] + [len(STUDENT[i]) for i in sid])
            active = 0
            for p in range(len(sid)):
                nxt = p + 1  # shifted: position p predicts student token p + 1
                n = len(STUDENT[sid[nxt]]) if nxt < len(sid) else 0
                for k in range(self.K):
                    on = k < n
                    self.assertEqual(bool(tg.mask[b, p, k]), on, (b, p, k))
                    if not on:
                        continue
                    active += 1
                    o = start[nxt] + k
                    self.assertEqual(int(tg.true_bytes[b, p, k]), t[o])
                    self.assertLess((tg.values[b, p, k].double() - got.bytes[b][o]).abs().max().item(), 1e-7)
                    self.assertAlmostEqual(float(tg.dropped[b, p, k]), float(got.dropped[b][o]), places=6)
            self.assertEqual(int(tg.mask[b].sum()), active)

    def test_cost_is_counted_and_batches_are_bounded(self):
        m = Bigram(self.table)
        got = self.covering(m, max_batch=2)
        self.assertEqual(got.cost["batches"], m.calls)
        self.assertEqual(got.cost["sequences"], m.sequences)
        self.assertLessEqual(m.largest, 2)
        self.assertEqual(got.cost["contexts"], sum(got.teacher_rows))
        # The beam's new contexts at one byte all end there: none is a prefix of another.
        self.assertEqual(got.cost["sequences"], got.cost["contexts"])
        # The canonical path's contexts t_<j are prefixes of the longest, t_<m: one sequence of
        # m - 1 tokens per text, m positions, read for all m rows.
        canon = self.covering(method="repair", threshold=1.0)
        self.assertEqual(canon.cost["contexts"], sum(len(i) for i in self.tids))
        self.assertEqual(canon.cost["sequences"], len(TEXTS))
        self.assertEqual(canon.cost["positions"], sum(len(i) for i in self.tids))
        wide = self.covering(max_batch=64)
        for a, b in zip(got.bytes, wide.bytes):
            self.assertTrue(torch.equal(a, b))
        self.assertIsNone(self.d.covering_targets(Bigram(self.table), self.tids).targets)

    def test_errors(self):
        with self.assertRaisesRegex(bld_torch.DomainError, "method"):
            self.covering(method="sideways")
        with self.assertRaisesRegex(bld_torch.ShapeError, "model output"):
            self.covering(model=lambda ids, lengths: torch.zeros(ids.shape[0], ids.shape[1], 3))
        def broken(ids, lengths):
            raise RuntimeError("the model broke")
        with self.assertRaisesRegex(RuntimeError, "the model broke"):
            self.covering(model=broken)
        with self.assertRaises(TypeError):
            self.d.covering_targets("not a model", self.tids)
        with self.assertRaises(bld_torch.Error):
            self.d.covering_targets(Bigram(self.table), self.tids, texts=[b"xyz"] * len(TEXTS))


if __name__ == "__main__":
    unittest.main()
