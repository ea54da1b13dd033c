#!/usr/bin/python3
"""The trainer's route from Python against the same route in C++, on the same batch, in one run.

    BLD_TORCH_BUILD=build-py /usr/bin/python3 scripts/bench_python_route.py --cli build/bench/examples/bld-cli \
        [--threads 1] [--repeats 9] [--out results.json]

The batch is bld-cli bench-targets' (Llama-3 teacher, GPT-2 student, the reference encoders' ids
of 16 fortunes with 32..64 teacher tokens, evenly spaced over the file; right-padded; K = 10;
compact float32 targets; rows in id order, random N(0, 3)). Timed, medians over --repeats:

* ``python``: ``bld_torch.Distiller.targets(logits, teacher_ids, student_ids, masks)``;
* ``binding``: the extension's own call (``_C.distill``) with the masks prepared, no Python
  wrapper: what the Python layer adds is python − binding;
* ``cpp``: ``bld-cli bench-targets`` on the same records, same threads (the C++ program's route,
  run as a subprocess in the same session).

Peak memory: a fresh process builds the batch, resets its peak RSS (VmHWM) to the current one,
runs the route once and reads the peak again; the difference is the route's extra memory, against the size of the
targets it returns (values + slots + mask + true bytes + dropped) and O(V) per thread.
Prints one JSON object (and writes it to --out).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = os.environ.get("BLD_DATA_DIR", str(REPO / ".cache" / "data"))
sys.path.insert(0, os.environ.get("BLD_TORCH_BUILD", str(REPO / "build-py")))

import torch  # noqa: E402

import bld_torch  # noqa: E402
from bld_torch import _bld_torch as _C  # noqa: E402


def records(count=16, lo=32, hi=64):
    """bld-cli bench-targets' texts: records with lo..hi teacher tokens (student >= 4), evenly spaced."""
    def read(name):
        out = []
        for line in open(f"{DATA}/ref/{name}.encode.tsv"):
            _, text, ids = line.rstrip("\n").split("\t")
            out.append((text, [int(x) for x in ids.split()]))
        return out

    te, se = read("llama3"), read("gpt2")
    ok = [i for i in range(len(te)) if lo <= len(te[i][1]) <= hi and len(se[i][1]) >= 4]
    pick = [ok[k * len(ok) // count] for k in range(count)]
    return [te[i][1] for i in pick], [se[i][1] for i in pick]


def batch(teacher):
    t, s = records()
    B, St, Ss = len(t), max(map(len, t)), max(map(len, s))
    tids = torch.zeros(B, St, dtype=torch.int64)
    sids = torch.zeros(B, Ss, dtype=torch.int64)
    tm = torch.zeros(B, St, dtype=torch.uint8)
    sm = torch.zeros(B, Ss, dtype=torch.uint8)
    for b in range(B):
        tids[b, :len(t[b])] = torch.tensor(t[b])
        sids[b, :len(s[b])] = torch.tensor(s[b])
        tm[b, :len(t[b])] = 1
        sm[b, :len(s[b])] = 1
    g = torch.Generator().manual_seed(42)
    logits = torch.randn(B, St, teacher.vocab_size, generator=g).mul_(3)
    return logits, tids, sids, tm, sm, sum(map(len, t))


def median_seconds(f, repeats):
    f()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_bytes():
    """VmHWM: the peak resident set since the last reset_peak() (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak():
    """Resets VmHWM to the current resident set (Linux: "5" to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(threads):
    """Run in a fresh process: peak RSS before and after one route call, and the targets' size."""
    teacher = bld_torch.load_tokenizer(f"{DATA}/tokenizers/llama3/tokenizer.json")
    student = bld_torch.load_tokenizer(f"{DATA}/tokenizers/gpt2")
    d = bld_torch.Distiller(teacher, student, heads=10, shifted=False, threads=threads)
    logits, tids, sids, tm, sm, _ = batch(teacher)
    d.targets(logits[:1, :4].contiguous(), tids[:1, :4], sids[:1, :4])  # first-call allocations
    reset_peak()
    before = peak_rss_bytes()
    t = d.targets(logits, tids, sids, teacher_mask=tm, student_mask=sm)
    after = peak_rss_bytes()
    size = sum(x.numel() * x.element_size() for x in (t.values, t.slots, t.mask, t.true_bytes, t.dropped))
    print(json.dumps({"peak_before": before, "peak_after": after, "targets_bytes": size,
                      "logits_bytes": logits.numel() * logits.element_size(), "vocab": teacher.vocab_size}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", required=True, help="bld-cli built in Release")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(a.threads)
        return 0
    torch.set_num_threads(1)
    teacher = bld_torch.load_tokenizer(f"{DATA}/tokenizers/llama3/tokenizer.json")
    student = bld_torch.load_tokenizer(f"{DATA}/tokenizers/gpt2")
    d = bld_torch.Distiller(teacher, student, heads=10, shifted=False, threads=a.threads)
    logits, tids, sids, tm, sm, rows = batch(teacher)
    # The same targets from both calls (and from the C++ route, which checks itself against the reference).
    t = d.targets(logits, tids, sids, teacher_mask=tm, student_mask=sm)
    raw = _C.distill(d._d, logits, tids, sids, tm, sm, None)
    assert torch.equal(t.values, raw[0]) and torch.equal(t.slots, raw[1])
    python = median_seconds(lambda: d.targets(logits, tids, sids, teacher_mask=tm, student_mask=sm), a.repeats)
    binding = median_seconds(lambda: _C.distill(d._d, logits, tids, sids, tm, sm, None), a.repeats)
    cli = json.loads(subprocess.run(
        [a.cli, "bench-targets", "--teacher", f"{DATA}/tokenizers/llama3/tokenizer.json", "--student",
         f"{DATA}/tokenizers/gpt2", "--threads", str(a.threads), "--repeats", str(a.repeats)],
        check=True, capture_output=True, text=True).stdout)
    mem = json.loads(subprocess.run([sys.executable, __file__, "--cli", a.cli, "--threads", str(a.threads),
                                     "--memory-child"], check=True, capture_output=True, text=True,
                                    env=dict(os.environ)).stdout)
    py_us = python / rows * 1e6
    r = {
        "threads": a.threads, "teacher_rows": rows, "active_slots": t.active_slots,
        "python_us_per_teacher_row": py_us,
        "binding_us_per_teacher_row": binding / rows * 1e6,
        "cpp_us_per_teacher_row": cli["us_per_teacher_row"],
        "cpp_teacher_rows": cli["teacher_rows"],
        "python_over_cpp": py_us / cli["us_per_teacher_row"],
        "python_over_binding": python / binding,
        "peak_extra_bytes": mem["peak_after"] - mem["peak_before"],
        "targets_bytes": mem["targets_bytes"],
        "logits_bytes": mem["logits_bytes"],
        "vocab": mem["vocab"],
    }
    r["peak_extra_over_targets_bytes"] = r["peak_extra_bytes"] - r["targets_bytes"]
    text = json.dumps(r)
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
