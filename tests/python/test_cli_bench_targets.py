"""`bld-cli bench-targets` run small: the JSON has its fields, the reference check passed, and the
counts agree with an independent reading of the data.

The counts are recomputed here without bld: the texts and ids come straight from the reference
encodings (.cache/data/ref/<name>.encode.tsv), GPT-2's token bytes from encoder.json through the
GPT-2 byte map. With Llama-3 as the teacher and GPT-2 as the student (no special tokens, no dummy
prefix on either side) every student token t has min(len(bytes(t)), K) active slots.

Run: BLD_CLI=build/examples/bld-cli BLD_DATA_DIR=.cache/data /usr/bin/python3 -m unittest tests/python/test_cli_bench_targets.py
"""
import json
import os
import subprocess
import unittest

CLI = os.environ.get("BLD_CLI", "build/examples/bld-cli")
DATA = os.environ.get("BLD_DATA_DIR", ".cache/data")

FIELDS = ["us_per_teacher_row", "stream_us_per_row", "reference_us_per_teacher_row", "teacher_rows", "slots", "threads",
          "ratio_to_stream", "speedup_vs_reference", "rows_per_s", "slots_per_s", "reference_check", "checked_slots"]


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


def encodings(name):
    out = []
    with open(os.path.join(DATA, "ref", name + ".encode.tsv"), encoding="ascii") as f:
        for line in f:
            corpus, text, ids = line.rstrip("\n").split("\t")
            out.append((bytes.fromhex(text), [int(i) for i in ids.split()]))
    return out


class BenchTargets(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.teacher = os.path.join(DATA, "tokenizers", "llama3", "tokenizer.json")
        cls.student = os.path.join(DATA, "tokenizers", "gpt2")
        c2b = gpt2_char_to_byte()
        with open(os.path.join(cls.student, "encoder.json"), encoding="utf-8") as f:
            enc = json.load(f)
        cls.gpt2_len = {i: len(bytes(c2b[c] for c in s)) for s, i in enc.items()}
        cls.te, cls.se = encodings("llama3"), encodings("gpt2")

    def run_cli(self, *extra, sequences=3, lo=8, hi=24):
        args = [CLI, "bench-targets", "--teacher", self.teacher, "--student", self.student, "--sequences", str(sequences),
                "--repeats", "1", "--reference-sequences", "2", "--min-tokens", str(lo), "--max-tokens", str(hi), *extra]
        r = subprocess.run(args, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def expected(self, sequences, lo, hi, heads):
        """The records the CLI documents it takes (evenly spaced among those with lo..hi teacher
        tokens and at least 4 student tokens) and their teacher rows / active slots."""
        ok = [i for i, (t, ids) in enumerate(self.te) if lo <= len(ids) <= hi and len(self.se[i][1]) >= 4]
        picked = [ok[k * len(ok) // sequences] for k in range(sequences)]
        for i in picked:
            self.assertEqual(self.te[i][0], self.se[i][0])
        rows = sum(len(self.te[i][1]) for i in picked)
        slots = sum(min(self.gpt2_len[t], heads) for i in picked for t in self.se[i][1])
        return rows, slots

    def check(self, j, threads, heads, order, dtype, sequences=3, lo=8, hi=24):
        for f in FIELDS:
            self.assertIn(f, j)
        self.assertEqual(j["reference_check"], "passed")
        self.assertGreater(j["checked_slots"], 0)
        self.assertLess(j["max_rel_err_vs_reference"], 2e-5)
        self.assertEqual((j["threads"], j["heads"], j["order"], j["dtype"]), (threads, heads, order, dtype))
        rows, slots = self.expected(sequences, lo, hi, heads)
        self.assertEqual(j["teacher_rows"], rows)
        self.assertEqual(j["slots"], slots)
        for f in ("us_per_teacher_row", "stream_us_per_row", "reference_us_per_teacher_row", "rows_per_s", "slots_per_s"):
            self.assertGreater(j[f], 0.0, f)
        self.assertAlmostEqual(j["ratio_to_stream"], j["us_per_teacher_row"] / j["stream_us_per_row"], places=9)
        self.assertAlmostEqual(j["speedup_vs_reference"], j["reference_us_per_teacher_row"] / j["us_per_teacher_row"], places=9)

    def test_id_order_one_thread(self):
        self.check(self.run_cli("--threads", "1"), 1, 10, "id", "f32")

    def test_trie_order_two_threads_bf16_k4(self):
        self.check(self.run_cli("--threads", "2", "--trie-order", "--dtype", "bf16", "--heads", "4"), 2, 4, "trie", "bf16")

    def test_errors(self):
        base = [CLI, "bench-targets", "--teacher", self.teacher, "--student", self.student]
        r = subprocess.run(base + ["--dtype", "f64"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--dtype", r.stderr)
        r = subprocess.run(base + ["--texts", "/nonexistent"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("llama3.encode.tsv", r.stderr)
        r = subprocess.run(base + ["--sequences", "5000"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--sequences", r.stderr)


if __name__ == "__main__":
    unittest.main()
