#!/usr/bin/python3
"""The numpy baseline of bld's benchmarks (scripts/bench.sh runs it in the same session).

Row pass: for a batch of 64 rows [64, V] of float32 logits, per row the max-shifted softmax and
np.bincount of the probabilities into the 257 first-byte / STOP bins -- what one would write in
numpy -- on one core. The bins, 8 rows and bld's root masses for them come from
`BLD_BENCH_EXPORT=DIR bld_bench_row_pass` (DIR/<vocab>.{bins,rows,root}.npy); the script first
checks that its result on those rows equals bld's (relative 1e-5), then times the batch (the 8
rows tiled to 64, the same bytes as bld's batch).

Loss (when DIR/loss.*.npy exist, written by `BLD_BENCH_EXPORT=DIR bld_bench_loss`): the byte
loss forward + backward of bld_loss with the default options, in numpy (float64, vectorised
over all slots), per slot (see loss_numpy below); checked against bld's loss (1e-12) and
gradient (one float32 rounding) first.

Output: one JSON object on stdout (or --out FILE): medians over --repeats timings.
Usage: bench_numpy.py --export DIR [--repeats 7] [--out FILE]
"""
import argparse
import json
import os
import sys
import time

# One core: numpy's own kernels (exp, bincount, sums) are single-threaded; pin BLAS too.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

VOCABS = ("llama2", "llama3", "qwen3", "gemma3")
BATCH = 64


def row_pass(rows, bins_valid, valid):
    """Root masses (first byte 0..255, STOP 256) of each row: softmax + np.bincount."""
    out = np.empty((rows.shape[0], 257))
    for r in range(rows.shape[0]):
        z = rows[r] if valid is None else rows[r][valid]
        e = np.exp(z - z.max())
        m = np.bincount(bins_valid, weights=e, minlength=257)
        out[r] = m / m.sum()
    return out


def median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def bench_row_pass(export, repeats):
    res = {}
    for name in VOCABS:
        stem = os.path.join(export, name)
        if not os.path.exists(stem + ".bins.npy"):
            continue
        bins = np.load(stem + ".bins.npy")
        rows8 = np.load(stem + ".rows.npy")
        root = np.load(stem + ".root.npy")
        valid = None if (bins >= 0).all() else bins >= 0
        bins_valid = bins if valid is None else bins[valid]
        got = row_pass(rows8, bins_valid, valid)
        err = float(np.max(np.abs(got - root) / np.maximum(root, 1e-300)))
        ok = bool(np.all(np.abs(got - root) <= 1e-5 * root + 1e-30))
        batch = np.ascontiguousarray(np.tile(rows8, (BATCH // rows8.shape[0], 1)))
        t = median_time(lambda: row_pass(batch, bins_valid, valid), repeats)
        res[name] = {
            "vocab": int(bins.shape[0]),
            "us_per_row": t / BATCH * 1e6,
            "gb_per_s": batch.nbytes / t / 1e9,
            "check_max_rel_err_vs_bld": err,
            "check_ok": ok,
        }
    return res


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def loss_numpy(logits, targets, true_bytes, mask, lam_b, lam_kl, tau):
    """bld_loss with bld's conventions (bld/loss/byte_loss.hpp), forward and backward, vectorised numpy,
    float64: per active slot v = lam_b * CE(true byte, softmax(z)) + lam_kl * KL(p || softmax(z/tau))
    (no tau^2 factor), reduction eq5 = sum over active slots / number of tokens with an active
    slot. logits, targets [T, K, 260]; true_bytes [T, K]; mask [T, K] bool.
    Returns (loss, grad [T, K, 260]).
    """
    z = logits.astype(np.float64)
    p = targets.astype(np.float64)
    lq1 = log_softmax(z)
    q1 = np.exp(lq1)
    if tau == 1.0:
        lq, q = lq1, q1
    else:
        lq = log_softmax(z / tau)
        q = np.exp(lq)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    kl = (plogp - p * lq).sum(axis=-1)
    mass = p.sum(axis=-1, keepdims=True)
    tb = true_bytes.astype(np.int64)
    ce = -np.take_along_axis(lq1, tb[..., None], axis=-1)[..., 0]
    tokens = max(int(mask.any(axis=1).sum()), 1)
    scale = 1.0 / tokens
    v = np.where(mask, lam_b * ce + lam_kl * kl, 0.0)
    loss = float(v.sum() * scale)
    onehot = np.zeros_like(q1)
    np.put_along_axis(onehot, tb[..., None], 1.0, axis=-1)
    grad = scale * (lam_kl / tau * (mass * q - p) + lam_b * (q1 - onehot))
    grad *= mask[..., None]
    return loss, grad


def bench_loss(export, repeats):
    stem = os.path.join(export, "loss")
    if not os.path.exists(stem + ".logits.npy"):
        return None
    meta = json.load(open(stem + ".meta.json"))
    logits = np.load(stem + ".logits.npy")
    targets = np.load(stem + ".targets.npy")
    true_bytes = np.load(stem + ".true_bytes.npy")
    mask = np.load(stem + ".mask.npy").astype(bool)
    args = (meta["lambda_b"], meta["lambda_kl"], meta["temperature"])
    loss, grad = loss_numpy(logits, targets, true_bytes, mask, *args)
    want_grad = np.load(stem + ".grad.npy").astype(np.float64)
    gerr = float(np.max(np.abs(grad - want_grad) / (np.abs(want_grad) + 1e-30)))
    lerr = abs(loss - meta["loss"]) / abs(meta["loss"])
    ok = lerr <= 1e-12 and gerr <= 1.2e-7  # bld's gradient is float32: one rounding
    slots = int(logits.shape[0] * logits.shape[1])
    t = median_time(lambda: loss_numpy(logits, targets, true_bytes, mask, *args), repeats)
    return {
        "slots": slots,
        "us_per_slot": t / slots * 1e6,
        "check_loss_rel_err_vs_bld": lerr,
        "check_grad_max_rel_err_vs_bld": gerr,
        "check_ok": bool(ok),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out")
    a = ap.parse_args()
    res = {
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "row_pass": bench_row_pass(a.export, a.repeats),
        "loss": bench_loss(a.export, a.repeats),
    }
    text = json.dumps(res, indent=1)
    if a.out:
        open(a.out, "w").write(text + "\n")
    else:
        print(text)
    failed = [k for k, v in res["row_pass"].items() if not v["check_ok"]]
    if res["loss"] is not None and not res["loss"]["check_ok"]:
        failed.append("loss")
    if failed:
        print("bench_numpy: result check failed for " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
