"""`bld-cli project --mode repair` (the repaired canonical path) against the CLI's other modes.

On a toy vocabulary with many segmentations (a tiktoken rank file written here) and a bigram
teacher: --drop-threshold 1 must give the canonical path (`project --logits ... --reference` on
the teacher's rows along the same ids) and ask for one row per token; --drop-threshold 0 with an
unlimited beam must give exact covering (`--mode exact`) at every text byte. --stats prints one
JSON object whose counts are checked against what the mode must have asked for.

Run: BLD_CLI=build/examples/bld-cli /usr/bin/python3 -m unittest tests/python/test_cli_repair.py
"""
import base64
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

CLI = os.environ.get("BLD_CLI", "build/examples/bld-cli")
TOKENS = [b"a", b"b", b"c", b"ab", b"bc", b"abc", b"ca", b"cab", b"bca", b"abca"]
EOS = len(TOKENS)


class RepairMode(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        d = self.dir.name
        self.ranks = os.path.join(d, "toy.tiktoken")
        with open(self.ranks, "w") as f:
            for i, t in enumerate(TOKENS):
                f.write(f"{base64.b64encode(t).decode()} {i}\n")
        V = len(TOKENS) + 1
        rng = np.random.default_rng(3)
        self.table = (rng.standard_normal((V + 1, V)) * 1.5).astype(np.float32)
        self.bigram = os.path.join(d, "b.npy")
        np.save(self.bigram, self.table)
        self.text = b"abcabcabca"
        self.ids = np.array([5, 5, 9], dtype=np.int64)  # abc abc abca
        self.ids_file = os.path.join(d, "ids.npy")
        np.save(self.ids_file, self.ids)

    def tearDown(self):
        self.dir.cleanup()

    def cli(self, *args):
        out = os.path.join(self.dir.name, "out.npy")
        r = subprocess.run([CLI, "project", "--tokenizer", self.ranks, "--special", f"<eos>={EOS}", "--out", out, *args],
                           check=True, capture_output=True, text=True)
        return np.load(out), (json.loads(r.stdout) if r.stdout.strip() else None)

    def repair(self, threshold, *beam):
        return self.cli("--bigram", self.bigram, "--text-hex", self.text.hex(), "--mode", "repair", "--ids", self.ids_file,
                        "--drop-threshold", str(threshold), "--stats", *beam)

    def test_threshold_one_is_the_canonical_path(self):
        rows = np.stack([self.table[0]] + [self.table[i + 1] for i in self.ids[:-1]])
        x = os.path.join(self.dir.name, "rows.npy")
        np.save(x, rows)
        canonical, _ = self.cli("--logits", x, "--ids", self.ids_file, "--reference")
        got, stats = self.repair(1)
        self.assertEqual(got.shape, (len(self.text), 260))
        self.assertLessEqual(np.abs(got - canonical).max(), 1e-12)
        self.assertEqual(stats["teacher_rows"], len(self.ids))
        self.assertEqual(stats["repaired"], 0)
        self.assertEqual(stats["positions"], len(self.text))

    def test_threshold_zero_unlimited_is_exact(self):
        exact, _ = self.cli("--bigram", self.bigram, "--text-hex", self.text.hex(), "--mode", "exact")
        got, stats = self.repair(0, "--beam-k", "0", "--beam-eps", "0")
        self.assertLessEqual(np.abs(got - exact[: len(self.text)]).max(), 1e-12)
        self.assertEqual(stats["repaired"], len(self.text))
        self.assertEqual(stats["mean_dropped"], 0)
        self.assertGreater(stats["teacher_rows"], len(self.ids))

    def test_rows_grow_as_the_threshold_falls(self):
        rows = [self.repair(t)[1]["teacher_rows"] for t in (1, 0.5, 0.1, 0.01, 0)]
        self.assertEqual(rows, sorted(rows))
        self.assertGreater(rows[-1], rows[0])

    def test_bad_threshold_and_missing_ids(self):
        r = subprocess.run([CLI, "project", "--tokenizer", self.ranks, "--special", f"<eos>={EOS}", "--bigram", self.bigram,
                            "--text-hex", self.text.hex(), "--mode", "repair", "--ids", self.ids_file, "--drop-threshold", "2",
                            "--out", os.path.join(self.dir.name, "o.npy")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("threshold", r.stderr)
        r = subprocess.run([CLI, "project", "--tokenizer", self.ranks, "--special", f"<eos>={EOS}", "--bigram", self.bigram,
                            "--text-hex", self.text.hex(), "--mode", "repair", "--out", os.path.join(self.dir.name, "o.npy")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--ids", r.stderr)


if __name__ == "__main__":
    unittest.main()
