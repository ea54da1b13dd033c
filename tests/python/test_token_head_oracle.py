"""bld_torch.Distiller.token_head_loss against a dense torch.autograd oracle on a real vocabulary.

The vocabulary is a subset of GPT-2's (a few thousand ids, written to a .tiktoken file): every
token of two fortunes texts' GPT-2 tokenizations, every token that is a prefix of one of them or
shares its first three bytes with one, some extensions of their short tokens, all 256 single
bytes, duplicates (a second id with the same bytes as a text token or a prefix of one), two
absent ids and two special tokens; ids are shuffled, so id order is not byte order.

The oracle shares nothing with bld's trie or canonical path: node masses are
softmax(z) @ indicator, with the indicator matrix [V, nodes] built here by prefix matching on the
tokens' bytes; the student's next-byte distribution at every text byte of its canonical path
follows the formulas (root of row 0; inside token j, q ∝ M_j(s·a); at the end of token j,
q ∝ M_j(t_j·a) + E_j(t_j) · R_{j+1}(a)); the loss is D(p̂ ‖ q_τ) on the support of q
(p̂: p restricted and renormalised; q_τ ∝ q^{1/τ}) for forward KL, reverse KL (log max(p, ε)),
JSD and TVD, reduced over the supervised bytes; torch.autograd gives the gradient w.r.t. the
student's logits. Its q is first held to bld_torch.canonical_targets (the teacher-side
projection run on the student's rows).

Run by scripts/test-python.sh (BLD_TORCH_BUILD, BLD_DATA_DIR).
"""

import base64
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

DATA = os.environ.get("BLD_DATA_DIR", str(pathlib.Path(__file__).resolve().parents[2] / ".cache" / "data"))

STOP = 256
ALPHABET = 260


def fortunes(count=2):
    """`count` (text, GPT-2 ids) records of the reference encoder (English fortunes)."""
    recs = []
    with open(f"{DATA}/ref/gpt2.encode.tsv") as f:
        for i, line in enumerate(f):
            lang, text, ids = line.rstrip("\n").split("\t")
            ids = [int(x) for x in ids.split()]
            if lang == "en" and 25 <= len(ids) <= 40 and i % 7 == 3:
                recs.append((bytes.fromhex(text), ids))
            if len(recs) == count:
                break
    assert len(recs) == count, "too few fortunes records in ref/gpt2.encode.tsv"
    return recs


def subset_vocabulary(gpt2, recs, seed=0):
    """The subset as {new id: bytes}, {name: new id} of the specials and {GPT-2 id: new id}."""
    rng = random.Random(seed)
    tb = {i: gpt2.token_bytes(i) for i in range(gpt2.vocab_size) if gpt2.token_kind(i) == "text"}
    text_ids = sorted({i for _, ids in recs for i in ids})
    text_tok = {tb[i] for i in text_ids}
    prefixes = {t[:d] for t in text_tok for d in range(1, len(t) + 1)}
    keep = {i for i, b in tb.items() if len(b) == 1 or b in prefixes or (len(b) >= 3 and b[:3] in prefixes)}
    for t in sorted(text_tok):  # short text tokens: some of their extensions (boundary children)
        if len(t) <= 2:
            ext = sorted(i for i, b in tb.items() if len(b) > len(t) and b.startswith(t) and i not in keep)
            keep.update(rng.sample(ext, min(len(ext), 40)))
    keep.update(text_ids)
    old = sorted(keep)
    # Duplicates: a second id for the four longest text tokens and for two multi-byte tokens that
    # are proper prefixes of text tokens (their masses add in E and in every M above them).
    dup_src = [gpt2.id_of(b) for b in sorted(text_tok, key=lambda b: (-len(b), b))[:4]]
    dup_src += [i for i in old if len(tb[i]) >= 2 and tb[i] in prefixes and tb[i] not in text_tok][:2]
    entries = [tb[i] for i in old] + [tb[i] for i in dup_src]
    n = len(entries) + 4  # + two specials and two absent ids
    new_ids = list(range(n))
    rng.shuffle(new_ids)
    vocab = {new_ids[k]: b for k, b in enumerate(entries)}
    specials = {"<|endoftext|>": new_ids[len(entries)], "<|pad|>": new_ids[len(entries) + 1]}
    to_new = {i: new_ids[k] for k, i in enumerate(old)}
    return vocab, specials, to_new


class DenseOracle:
    """Masses as probs @ indicator (fp64); q along canonical paths; the token-head loss."""

    def __init__(self, vocab, specials, width, needed):
        """`vocab` {id: bytes}, `specials` ids, `width` columns of a logits row, `needed`: the
        token byte strings whose canonical-path nodes are read."""
        self.vocab = vocab
        self.valid = torch.zeros(width, dtype=torch.bool)
        for i in list(vocab) + list(specials):
            self.valid[i] = True
        prefixes = {t[:d] for t in needed for d in range(1, len(t) + 1)}
        # M-strings: every single byte (the root), and every child s·a of a needed prefix s that
        # some token starts with; E-strings: the needed tokens' own bytes.
        mstr = {bytes([a]) for a in range(256)}
        for b in vocab.values():
            for d in range(1, len(b)):
                if b[:d] in prefixes:
                    mstr.add(b[:d + 1])
        mstr = sorted(mstr)
        estr = sorted(set(needed))
        self.mcol = {s: k for k, s in enumerate(mstr)}
        self.ecol = {s: len(mstr) + k for k, s in enumerate(estr)}
        self.spec_col = len(mstr) + len(estr)
        self.zero_col = self.spec_col + 1
        ind = torch.zeros(width, self.zero_col + 1, dtype=torch.float64)
        for i, b in vocab.items():
            for d in range(1, len(b) + 1):
                k = self.mcol.get(b[:d])
                if k is not None:
                    ind[i, k] = 1.0
            k = self.ecol.get(b)
            if k is not None:
                ind[i, k] = 1.0
        for i in specials:
            ind[i, self.spec_col] = 1.0
        self.ind = ind
        self.root_cols = [self.mcol[bytes([a])] for a in range(256)] + [self.spec_col]

    def children(self, s):
        """The 257 columns of q ∝ M(s·a) (STOP and absent children: the zero column)."""
        return [self.mcol.get(s + bytes([a]), self.zero_col) for a in range(256)] + [self.zero_col]

    def path(self, tokens, rows):
        """Positions of one canonical path: per text byte (A row, A columns, E column, B row).
        `tokens`: the run's token bytes, `rows`: their flat logits rows."""
        out = []
        for j, t in enumerate(tokens):
            for k in range(len(t)):
                if k > 0:
                    out.append((rows[j], self.children(t[:k]), self.zero_col, rows[j]))
                elif j == 0:
                    out.append((rows[0], self.root_cols, self.zero_col, rows[0]))
                else:
                    prev = tokens[j - 1]
                    out.append((rows[j - 1], self.children(prev), self.ecol[prev], rows[j]))
        return out

    def q(self, logits, positions):
        """[P, 260] next-byte distributions (fp64, differentiable) from logits [R, width]."""
        z = torch.where(self.valid, logits.to(torch.float64), torch.tensor(-float("inf"), dtype=torch.float64))
        probs = torch.softmax(z, dim=-1)
        masses = probs @ self.ind  # [R, nodes]: M(x), E(x), the specials' mass, 0
        a_row = torch.tensor([p[0] for p in positions])
        a_cols = torch.tensor([p[1] for p in positions])
        e_col = torch.tensor([p[2] for p in positions])
        b_row = torch.tensor([p[3] for p in positions])
        ma = masses[a_row]
        num = torch.gather(ma, 1, a_cols) + torch.gather(ma, 1, e_col[:, None]) * masses[b_row][:, self.root_cols]
        q = num / num.sum(dim=1, keepdim=True)
        return torch.cat([q, torch.zeros(len(positions), ALPHABET - STOP - 1, dtype=torch.float64)], dim=1)


def position_losses(q, p, kind, tau, eps=1e-12):
    """D(p̂ ‖ q_τ) per position on the support of q; 0 where p(S) = 0."""
    s = q.detach() > 0
    p = p.to(torch.float64)
    ps = torch.where(s, p, 0.0).sum(dim=1)
    ok = ps > 0
    ph = torch.where(s, p, 0.0) / torch.where(ok, ps, 1.0)[:, None]
    u = torch.where(s, torch.log(torch.where(s, q, 1.0)) / tau, torch.tensor(-float("inf"), dtype=torch.float64))
    lq = torch.where(s, torch.log_softmax(u, dim=1), 0.0)
    qt = torch.where(s, lq.exp(), 0.0)
    lph = torch.log(torch.where(ph > 0, ph, 1.0))
    if kind == "forward_kl":
        d = torch.where(ph > 0, ph * (lph - lq), 0.0).sum(dim=1)
    elif kind == "reverse_kl":
        lp = torch.where(ph > 0, torch.clamp(lph, min=float(torch.log(torch.tensor(eps, dtype=torch.float64)))),
                         float(torch.log(torch.tensor(eps, dtype=torch.float64))))
        d = torch.where(s, qt * (lq - lp), 0.0).sum(dim=1)
    elif kind == "jsd":
        m = 0.5 * (ph + qt)
        lm = torch.log(torch.where(m > 0, m, 1.0))
        d = (torch.where(ph > 0, 0.5 * ph * (lph - lm), 0.0) + torch.where(s, 0.5 * qt * (lq - lm), 0.0)).sum(dim=1)
    elif kind == "tvd":
        d = 0.5 * (ph - qt).abs().sum(dim=1)
    else:
        raise ValueError(kind)
    return torch.where(ok, d, 0.0)


def text_runs(ids, mask, kinds, shifted):
    """The canonical paths of a padded batch, per the layout of token_head_loss: each run of text
    tokens between special tokens; with `shifted` token t is read from row t − 1 and the first
    token of a sequence (no row before it) is left out. Yields (b, [input positions])."""
    B, S = ids.shape
    shift = 1 if shifted else 0
    for b in range(B):
        valid = [p for p in range(S) if mask[b, p]]
        s0, s1 = valid[0], valid[-1] + 1
        p = s0
        while p < s1:
            if kinds[int(ids[b, p])] != "text":
                p += 1
                continue
            e = p
            while e < s1 and kinds[int(ids[b, e])] == "text":
                e += 1
            first = p + 1 if p - shift < s0 else p
            if first < e:
                yield b, list(range(first, e))
            p = e


class TokenHeadOracle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for need in (f"{DATA}/tokenizers/gpt2", f"{DATA}/ref/gpt2.encode.tsv"):
            if not os.path.exists(need):  # as test_distiller.py: missing data fails, it is not skipped
                raise FileNotFoundError(f"{need} is missing: run scripts/fetch-data.sh (or set BLD_DATA_DIR)")
        gpt2 = bld_torch.load_tokenizer(f"{DATA}/tokenizers/gpt2")
        recs = fortunes(2)
        vocab, specials, to_new = subset_vocabulary(gpt2, recs)
        cls.tmp = tempfile.TemporaryDirectory()
        path = pathlib.Path(cls.tmp.name) / "gpt2_subset.tiktoken"
        with open(path, "w") as f:
            for i in sorted(vocab):
                f.write(f"{base64.b64encode(vocab[i]).decode()} {i}\n")
        tok = bld_torch.load_tokenizer(str(path), specials=[f"{n}={i}" for n, i in specials.items()])
        cls.tok, cls.vocab = tok, vocab
        n = tok.vocab_size
        cls.kinds = [tok.token_kind(i) for i in range(n)]
        eot, pad = specials["<|endoftext|>"], specials["<|pad|>"]
        ids0 = [to_new[i] for i in recs[0][1]]
        ids1 = [to_new[i] for i in recs[1][1]]
        # Each text's subset tokens spell it (the subset keeps every token of both texts).
        for (text, _), ids in zip(recs, (ids0, ids1)):
            assert b"".join(vocab[i] for i in ids) == text
        h = len(ids0) // 2
        seqs = [[eot] + ids0[:h] + [eot] + ids0[h:],  # BOS, then two runs split by a special
                ids1]                                   # BOS-free: its first token is not supervised
        S = max(len(s) for s in seqs) + 3
        cls.ids = torch.full((2, S), pad, dtype=torch.int64)
        cls.mask = torch.zeros((2, S), dtype=torch.int64)
        cls.ids[0, :len(seqs[0])] = torch.tensor(seqs[0])    # right padding
        cls.mask[0, :len(seqs[0])] = 1
        cls.ids[1, S - len(seqs[1]):] = torch.tensor(seqs[1])  # left padding
        cls.mask[1, S - len(seqs[1]):] = 1
        cls.width = n + 3  # three padding columns after the vocabulary
        g = torch.Generator().manual_seed(1)
        logits = torch.randn(2, S, cls.width, generator=g, dtype=torch.float64) * 3
        absent = [i for i in range(n) if cls.kinds[i] == "absent"]
        assert len(absent) == 2, absent
        logits[:, :, absent] = 9.0  # large: they would dominate every mass if they were read
        logits[:, :, n:] = 9.0
        cls.logits = logits
        cls.runs = list(text_runs(cls.ids, cls.mask, cls.kinds, shifted=True))
        needed = sorted({vocab[int(cls.ids[b, t])] for b, ts in cls.runs for t in ts})
        cls.oracle = DenseOracle(vocab, [eot, pad], cls.width, needed)
        cls.max_bytes = max(len(b) for b in needed)
        # The oracle's positions, with each byte's slot (b, row, k).
        cls.positions, cls.slot_of = [], []
        for b, ts in cls.runs:
            rows = [b * S + t - 1 for t in ts]
            toks = [vocab[int(cls.ids[b, t])] for t in ts]
            cls.positions += cls.oracle.path(toks, rows)
            cls.slot_of += [(b, t - 1, k) for t, tb in zip(ts, toks) for k in range(len(tb))]
        # Teacher targets: the same subset as teacher, random rows, the same text tokens (the
        # teacher takes no special token inside a sequence: sequence 0 without the middle one).
        cls.t_ids, cls.t_mask = cls.ids.clone(), cls.mask.clone()
        t0 = [eot] + ids0
        cls.t_ids[0] = pad
        cls.t_ids[0, :len(t0)] = torch.tensor(t0)
        cls.t_mask[0] = 0
        cls.t_mask[0, :len(t0)] = 1
        cls.teacher_logits = torch.randn(2, S, n, generator=g) * 2
        cls.distillers = {}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        if self._testMethodName != "test_oracle_q_matches_canonical_targets" and \
                not hasattr(bld_torch.Distiller, "token_head_loss"):  # the Python API lands separately
            self.skipTest("bld_torch.Distiller.token_head_loss is not in this build yet")

    def distiller(self, heads, layout="dense", path="reference", order="id"):
        key = (heads, layout, path, order)
        if key not in self.distillers:
            d = bld_torch.Distiller(self.tok, self.tok, heads=heads, shifted=True, layout=layout, path=path,
                                    student_row_order=order)
            t = d.targets(self.teacher_logits, self.t_ids, self.ids, teacher_mask=self.t_mask, student_mask=self.mask)
            self.distillers[key] = (d, t)
        return self.distillers[key]

    def oracle_loss(self, logits, targets, heads, kind, tau, weight, reduction):
        """(value, gradient) of the oracle for `targets` (dense values read at each byte's slot)."""
        z = logits.detach().to(torch.float64).requires_grad_(True)
        B, S, W = z.shape
        q = self.oracle.q(z.reshape(B * S, W), self.positions)
        values = targets.dense().to(torch.float64)  # [B, S, K, 260]
        mask = targets.mask
        keep = [i for i, (b, r, k) in enumerate(self.slot_of) if k < heads and bool(mask[b, r, k])]
        self.assertGreater(len(keep), 0.5 * len(self.slot_of))
        p = torch.stack([values[self.slot_of[i]] for i in keep])
        d = position_losses(q[keep], p, kind, tau)
        total = d.sum() * weight
        if reduction == "mean":
            total = total / len(keep)
        (grad,) = torch.autograd.grad(total, z)
        return total.detach(), grad

    def test_oracle_q_matches_canonical_targets(self):
        """The oracle's q at every byte = bld's teacher-side projection of the same rows."""
        z = self.logits.to(torch.float32)
        B, S, W = z.shape
        q = self.oracle.q(z.to(torch.float64).reshape(B * S, W), self.positions).detach()
        checked = 0
        i = 0
        for b, ts in self.runs:
            ids = self.ids[b, ts]
            rows = z[b, ts[0] - 1:ts[-1]].contiguous()  # token t's row is t − 1
            tg, mk, _ = bld_torch.canonical_targets(rows, ids, ids, self.tok, self.tok, k=self.max_bytes)
            for j, t in enumerate(ts):
                for k in range(len(self.vocab[int(self.ids[b, t])])):
                    self.assertTrue(bool(mk[j, k]))
                    torch.testing.assert_close(tg[j, k].to(torch.float64), q[i], atol=2e-6, rtol=0)
                    i += 1
                    checked += 1
        self.assertEqual(checked, len(self.positions))
        self.assertTrue(torch.allclose(q.sum(dim=1), torch.ones(len(q), dtype=torch.float64)))

    def bld_loss(self, logits, targets, d, kind, tau, weight, reduction, permute=None):
        """(value, gradient in id order) of bld_torch's token-head loss."""
        z = logits.detach().clone()
        if permute is not None:  # trie-ordered columns: column k holds id permute[k]
            z = z[:, :, permute].contiguous()
        z.requires_grad_(True)
        v = d.token_head_loss(z, self.ids, targets, student_mask=self.mask, divergence=kind, temperature=tau,
                              weight=weight, reduction=reduction)
        self.assertEqual(v.dim(), 0)
        self.assertEqual(v.dtype, z.dtype)
        (grad,) = torch.autograd.grad(v, z)
        self.assertEqual(grad.dtype, z.dtype)
        if permute is not None:
            back = torch.zeros(grad.shape[0], grad.shape[1], self.width, dtype=grad.dtype)
            back[:, :, permute] = grad
            grad = back
        return v.detach(), grad

    def check(self, got, want, value_rtol, grad_rtol, what):
        (v, g), (rv, rg) = got, want
        self.assertLessEqual(abs(v.item() - rv.item()), value_rtol * abs(rv.item()),
                             f"{what}: value {v.item()!r} vs oracle {rv.item()!r}")
        scale = rg.abs().max().item()
        self.assertGreater(scale, 0.0)
        err = (g.to(torch.float64) - rg).abs().max().item()
        self.assertLessEqual(err, grad_rtol * scale, f"{what}: max |grad − oracle| {err:.3g} vs max |grad| {scale:.3g}")
        return err / scale

    CASES = [  # (divergence, τ, weight, reduction, layout)
        ("forward_kl", 1.0, 1.0, "mean", "dense"),
        ("forward_kl", 0.7, 0.5, "sum", "compact"),
        ("reverse_kl", 1.6, 1.0, "mean", "compact"),
        ("jsd", 0.8, 2.0, "mean", "dense"),
        ("tvd", 1.3, 1.0, "sum", "dense"),
    ]

    def test_reference_path_fp64(self):
        """path="reference", float64 logits: value to 1e-9 relative, gradient to 1e-8 of max |grad|."""
        K = self.max_bytes
        for kind, tau, weight, reduction, layout in self.CASES:
            with self.subTest(kind=kind, tau=tau, reduction=reduction, layout=layout):
                d, t = self.distiller(K, layout=layout, path="reference")
                want = self.oracle_loss(self.logits, t, K, kind, tau, weight, reduction)
                got = self.bld_loss(self.logits, t, d, kind, tau, weight, reduction)
                self.check(got, want, 1e-9, 1e-8, f"reference {kind} τ={tau}")

    def test_fast_path_fp32(self):
        """path="fast" (SIMD) on float32 logits vs the oracle on the same values in fp64."""
        K = self.max_bytes
        z = self.logits.to(torch.float32)
        for kind, tau, weight, reduction, layout in self.CASES:
            with self.subTest(kind=kind, tau=tau, reduction=reduction, layout=layout):
                d, t = self.distiller(K, layout=layout, path="fast")
                want = self.oracle_loss(z, t, K, kind, tau, weight, reduction)
                got = self.bld_loss(z, t, d, kind, tau, weight, reduction)
                self.check(got, want, 1e-5, 1e-4, f"fast {kind} τ={tau}")

    def test_fast_path_trie_order(self):
        """student_row_order="trie": columns in the distiller's permutation, gradient likewise."""
        K = self.max_bytes
        d, t = self.distiller(K, layout="dense", path="fast", order="trie")
        perm = torch.as_tensor(d.student_permutation, dtype=torch.int64)
        # The permutation lists every text and special id once (the absent ids and padding
        # columns are not in it: a trie-ordered row is only as wide as the permutation).
        self.assertEqual(sorted(perm.tolist()), [i for i, k in enumerate(self.kinds) if k != "absent"])
        z = self.logits.to(torch.float32)
        for kind, tau in (("forward_kl", 1.0), ("jsd", 0.6)):
            with self.subTest(kind=kind, tau=tau):
                want = self.oracle_loss(z, t, K, kind, tau, 1.0, "mean")
                got = self.bld_loss(z, t, d, kind, tau, 1.0, "mean", permute=perm)
                self.check(got, want, 1e-5, 1e-4, f"fast trie {kind} τ={tau}")

    def test_fewer_heads_than_token_bytes(self):
        """K = 3 < the longest token: bytes k ≥ K are not supervised (the oracle skips them)."""
        self.assertGreater(self.max_bytes, 3)
        d, t = self.distiller(3, layout="compact", path="reference")
        want = self.oracle_loss(self.logits, t, 3, "forward_kl", 1.2, 1.0, "mean")
        got = self.bld_loss(self.logits, t, d, "forward_kl", 1.2, 1.0, "mean")
        self.check(got, want, 1e-9, 1e-8, "reference K=3")


if __name__ == "__main__":
    unittest.main()
