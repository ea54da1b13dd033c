#!/usr/bin/env python3
"""Training curves of the distillation example: held-out bits per byte against training step
for every student arm of bld-distill, from its --out JSON (arm keys "a", "b", "c@λ", "d@λ", "p",
"e@λ"; the first experiment's files have "a", "b", "c").

usage: python3 scripts/plot_distill.py RESULTS.json [OUT.png]     (OUT defaults to
       docs/distill_curves.png)

Left: every seed as a thin line, the mean over seeds as a thick one, the teacher's final value
as a dashed line. Middle (files that record it): the training curve, each arm's token
cross-entropy over the steps since the previous point, in bits per byte of their text (mean over
seeds); where it falls below the held-out curve the arm is fitting its data. Right: each GPT-2
arm minus (a), and (e) minus (a′) (key "p"), per seed at each evaluation step (below zero: the
first is better). The curves are scored on the preset's curve subset of the
held-out chunks (see "data" in the JSON), the table on its own subset.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"a": "tab:gray", "b": "tab:blue", "c": "tab:red", "d": "tab:purple", "p": "tab:olive", "e": "tab:green"}
NAMES = {"a": "(a) token CE", "b": "(b) + byte CE", "c": "(c) + byte CE + BLD KL", "d": "(d) + token-head KL",
         "p": "(a') token CE, llama2", "e": "(e) + token KD, llama2"}
STYLES = ["-", "--", ":", "-."]


def arms(r):
    """(key, label, color, line style) of every arm in the file, in its order."""
    out, seen = [], {}
    for key in r["students"]:
        letter = key[0]
        n = seen.get(letter, 0)
        seen[letter] = n + 1
        label = r.get("summary", {}).get(key, {}).get("name") or NAMES.get(letter, key)
        out.append((key, label, COLORS.get(letter, "black"), STYLES[n % len(STYLES)]))
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "docs", "distill_curves.png")
    with open(src) as f:
        r = json.load(f)

    has_train = any(p.get("train_bpb") is not None for runs in r["students"].values() for p in runs[0]["curve"])
    fig, axes = plt.subplots(1, 3 if has_train else 2, figsize=(18 if has_train else 12, 4.6))
    ax, dx = axes[0], axes[-1]
    if has_train:
        tx = axes[1]
        for key, label, color, style in arms(r):
            runs = r["students"][key]
            pts = [i for i, p in enumerate(runs[0]["curve"]) if p.get("train_bpb") is not None]
            steps = [runs[0]["curve"][i]["step"] for i in pts]
            train = [sum(run["curve"][i]["train_bpb"] for run in runs) / len(runs) for i in pts]
            held = [sum(run["curve"][i]["bpb"] for run in runs) / len(runs) for i in pts]
            tx.plot(steps, train, color=color, ls=style, lw=2.0, marker="o", ms=3, label=f"{label}: train")
            tx.plot(steps, held, color=color, ls=style, lw=0.8, marker=".", ms=3, alpha=0.5)
        tx.set_xlabel("student training step")
        tx.set_ylabel("bits per byte")
        tx.set_title("train (thick) and held-out (thin), mean over seeds")
        tx.grid(alpha=0.3)
        tx.legend(fontsize=7)
    for key, label, color, style in arms(r):
        runs = r["students"][key]
        steps = [p["step"] for p in runs[0]["curve"]]
        for run in runs:
            ax.plot(steps, [p["bpb"] for p in run["curve"]], color=color, ls=style, lw=0.8, alpha=0.45)
        mean = [sum(run["curve"][i]["bpb"] for run in runs) / len(runs) for i in range(len(steps))]
        ax.plot(steps, mean, color=color, ls=style, lw=2.2, label=f"{label} (mean of {len(runs)})")
    # (a teacher read from its cache has no curve in the file, only its held-out number)
    teacher = r["teacher"]["curve"][-1]["bpb"] if r["teacher"].get("curve") else r["teacher"]["heldout_bpb"]
    ax.axhline(teacher, color="black", ls="--", lw=1, label="teacher (llama2 tokenizer), end of training")
    # The first evaluations (untrained models) dwarf the rest: zoom on the second half.
    tail = [p["bpb"] for runs in r["students"].values() for run in runs for p in run["curve"][len(run["curve"]) // 3:]]
    tail.append(teacher)
    lo, hi = min(tail), max(tail)
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.6 * (hi - lo + 1e-9))
    ax.set_xlabel("student training step")
    ax.set_ylabel(f"held-out bits per byte ({r['data']['curve_chunks']} chunks)")
    ax.set_title(f"students, preset {r['preset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    pairs = [(k, "a", c, st) for k, _, c, st in arms(r) if k[0] in "bcd"]
    pairs += [(k, "p", c, st) for k, _, c, st in arms(r) if k[0] == "e"]
    if "c" in r["students"] and "b" in r["students"]:  # the first experiment's (c) − (b)
        pairs.append(("c", "b", "tab:green", "--"))
    for x, y, color, style in pairs:
        if x not in r["students"] or y not in r["students"]:
            continue
        for s, (run, base) in enumerate(zip(r["students"][x], r["students"][y])):
            steps = [p["step"] for p in run["curve"]]
            diff = [p["bpb"] - q["bpb"] for p, q in zip(run["curve"], base["curve"])]
            dx.plot(steps[1:], diff[1:], color=color, ls=style, lw=1.2, marker="o", ms=2.5,
                    label=f"({x}) − ({y})" if s == 0 else None)
    dx.axhline(0, color="black", lw=0.8)
    dx.set_xlabel("student training step")
    dx.set_ylabel("difference in held-out bits per byte")
    dx.set_title("paired differences, per seed (same init and batches)")
    dx.grid(alpha=0.3)
    dx.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
