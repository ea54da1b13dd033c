"""`bld-cli masses` on real vocabularies against an independent numpy computation.

The oracle here shares no code with bld: it reads tokenizer.json with Python's json module,
turns token strings into bytes (GPT-2 byte map / SentencePiece ▁ and <0xNN>), takes a float64
softmax with numpy and sums probabilities by prefix with plain boolean masks.

Run: BLD_CLI=build/examples/bld-cli BLD_DATA_DIR=.cache/data /usr/bin/python3 -m unittest tests/python/test_cli_masses.py
"""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

CLI = os.environ.get("BLD_CLI", "build/examples/bld-cli")
DATA = os.environ.get("BLD_DATA_DIR", ".cache/data")


def gpt2_char_to_byte():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def vocab_bytes(path):
    """id -> bytes (None for special tokens), straight from tokenizer.json."""
    tj = json.load(open(path, encoding="utf-8"))
    dec = json.dumps(tj.get("decoder"))
    byte_level = '"ByteLevel"' in dec
    c2b = gpt2_char_to_byte()
    out = {}

    def to_bytes(s, added):
        if byte_level:
            if all(c in c2b for c in s):
                return bytes(c2b[c] for c in s)
            assert added, s
            return s.encode("utf-8")
        if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            return bytes([int(s[3:5], 16)])
        return s.replace("\u2581", " ").encode("utf-8")

    for s, i in tj["model"]["vocab"].items():
        out[i] = to_bytes(s, False)
    for a in tj.get("added_tokens", []):
        out[a["id"]] = None if a["special"] else to_bytes(a["content"], True)
    return out


class MassesAgainstNumpy(unittest.TestCase):
    def check(self, name, prefixes):
        path = os.path.join(DATA, "tokenizers", name, "tokenizer.json")
        vb = vocab_bytes(path)
        V = max(vb) + 1
        rng = np.random.default_rng(42)
        n = V + 7  # padded rows: extra columns must be ignored
        logits = (rng.standard_normal((3, n)) * 3.0).astype(np.float32)
        logits[:, V:] = 50.0  # would dominate if not ignored
        present = np.array([i in vb for i in range(V)])
        special = np.array([i in vb and vb[i] is None for i in range(V)])
        with tempfile.TemporaryDirectory() as d:
            x = os.path.join(d, "x.npy")
            np.save(x, logits)
            for prefix in prefixes:
                out = subprocess.run([CLI, "masses", "--tokenizer", path, "--logits", x, "--prefix-hex", prefix.hex()],
                                     check=True, capture_output=True, text=True).stdout
                rows = json.loads(out)["rows"]
                self.assertEqual(len(rows), 3)
                starts = np.array([vb.get(i) is not None and vb[i].startswith(prefix) for i in range(V)])
                ends = np.array([vb.get(i) is not None and vb[i] == prefix for i in range(V)])
                child_of = np.array([vb[i][len(prefix)] if starts[i] and len(vb[i]) > len(prefix) else -1 for i in range(V)])
                for r in range(3):
                    z = logits[r, :V].astype(np.float64)
                    z = np.where(present, z, -np.inf)
                    p = np.exp(z - z.max())
                    p /= p.sum()
                    want_children = np.bincount(child_of[child_of >= 0], weights=p[child_of >= 0], minlength=256)
                    got = rows[r]
                    for key, want in (("node", p[starts].sum()), ("end", p[ends].sum()), ("stop", p[special].sum())):
                        self.assertLessEqual(abs(got[key] - want), 1e-6 * max(abs(want), 1e-300), (name, prefix, r, key))
                    gc = np.array(got["children"])
                    err = np.abs(gc - want_children) / np.maximum(np.abs(want_children), 1e-300)
                    self.assertTrue(np.all((err <= 1e-6) | (want_children == 0) & (gc == 0)), (name, prefix, r, err.max()))

    def test_llama2_sentencepiece(self):
        self.check("llama2", [b"", b" ", b" th", b"\xe4", b"A", b"zzzzq"])

    def test_llama3_byte_level(self):
        self.check("llama3", [b"", b" t", b" the", b"\xe4\xb8", b"\n"])


class ProjectFastAgainstReference(unittest.TestCase):
    """`bld-cli project --logits` runs the fast row pass; `--reference` the fp64 scalar reference.
    On a real text (its reference encoding) with random rows they agree within the fast path's
    documented tolerance: relative 1e-5 on every conditional at a node of mass >= 1e-12, so on
    every probability up to 1e-5 of it plus the float64 floor; each row is a distribution."""

    def test_llama3_text(self):
        path = os.path.join(DATA, "tokenizers", "llama3", "tokenizer.json")
        with open(os.path.join(DATA, "ref", "llama3.encode.tsv"), encoding="ascii") as f:
            recs = [line.rstrip("\n").split("\t") for line in f]
        corpus, text_hex, ids = next(r for r in recs if 12 <= len(r[2].split()) <= 30)
        ids = np.array([int(i) for i in ids.split()], dtype=np.int64)
        V = len(vocab_bytes(path))
        rng = np.random.default_rng(7)
        logits = (rng.standard_normal((len(ids), V + 5)) * 3.0).astype(np.float32)  # padded columns
        with tempfile.TemporaryDirectory() as d:
            x, i = os.path.join(d, "x.npy"), os.path.join(d, "ids.npy")
            np.save(x, logits)
            np.save(i, ids)
            out = {}
            for mode, extra in (("fast", []), ("reference", ["--reference"])):
                o, dr = os.path.join(d, mode + ".npy"), os.path.join(d, mode + ".dropped.npy")
                subprocess.run([CLI, "project", "--tokenizer", path, "--logits", x, "--ids", i, "--text-hex", text_hex,
                                "--out", o, "--dropped", dr, *extra], check=True, capture_output=True, text=True)
                out[mode] = (np.load(o), np.load(dr))
        fast, ref = out["fast"][0], out["reference"][0]
        self.assertEqual(fast.shape, (len(bytes.fromhex(text_hex)), 260))
        self.assertEqual(fast.shape, ref.shape)
        self.assertLess(np.abs(fast.sum(axis=1) - 1).max(), 1e-9)
        self.assertTrue(np.all(np.abs(fast - ref) <= 1e-5 * ref + 1e-300), np.abs(fast - ref).max())
        self.assertTrue(np.all(np.abs(out["fast"][1] - out["reference"][1]) <= 1e-5 * out["reference"][1] + 1e-12))


if __name__ == "__main__":
    unittest.main()
