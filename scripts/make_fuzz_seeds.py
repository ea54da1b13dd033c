#!/usr/bin/python3
"""Seed corpora for the libFuzzer harnesses, cut from the real tokenizers in the data folder.

    /usr/bin/python3 scripts/make_fuzz_seeds.py DATA_DIR OUT_DIR

Each real tokenizer.json becomes a small valid one (its decoder, normaliser, pre-tokeniser and
first added tokens, the first 64 vocabulary entries and 16 merges), so the fuzzer starts from
the real formats; GPT-2 and tiktoken files are cut likewise; projection and loss harnesses get
a few fixed byte strings; the .npy harness gets small arrays laid out as NumPy writes them
(format versions 1 and 2, each supported dtype, scalar to 3-D shapes).
"""
import json
import os
import random
import sys

data, out = sys.argv[1], sys.argv[2]
for h in ("tokenizer_json", "gpt2", "tiktoken", "projection", "loss", "npy"):
    os.makedirs(os.path.join(out, h), exist_ok=True)

for name in ("llama2", "llama3", "gemma3", "qwen3"):
    tj = json.load(open(os.path.join(data, "tokenizers", name, "tokenizer.json"), encoding="utf-8"))
    model = tj["model"]
    items = list(model["vocab"].items())[:64] if isinstance(model["vocab"], dict) else model["vocab"][:64]
    small = dict(tj)
    small["added_tokens"] = tj.get("added_tokens", [])[:5]
    small["model"] = dict(model, vocab=dict(items) if isinstance(model["vocab"], dict) else items,
                          merges=model.get("merges", [])[:16])
    with open(os.path.join(out, "tokenizer_json", name + ".json"), "w", encoding="utf-8") as f:
        json.dump(small, f, ensure_ascii=False)

enc = json.load(open(os.path.join(data, "tokenizers", "gpt2", "encoder.json"), encoding="utf-8"))
merges = open(os.path.join(data, "tokenizers", "gpt2", "vocab.bpe"), encoding="utf-8").read().splitlines()[:20]
small = dict(list(enc.items())[:64] + [("<|endoftext|>", 50256)])
with open(os.path.join(out, "gpt2", "gpt2.bin"), "wb") as f:
    f.write(json.dumps(small, ensure_ascii=False).encode() + b"\0" + "\n".join(merges).encode())

lines = open(os.path.join(data, "tokenizers", "cl100k", "cl100k_base.tiktoken"), encoding="utf-8").read().splitlines()
with open(os.path.join(out, "tiktoken", "cl100k.tiktoken"), "w") as f:
    f.write("\n".join(lines[:64] + lines[50000:50016]) + "\n")

rng = random.Random(0)
for h in ("projection", "loss"):
    for k in range(8):
        with open(os.path.join(out, h, f"seed{k}"), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(64 + 64 * k)))


def npy(descr, shape, data, version=1):
    """The bytes of a .npy file: magic, version, header length, the padded header dict, data."""
    dims = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, dims)
    prefix = 10 if version == 1 else 12
    header += " " * ((-(prefix + len(header) + 1)) % 64) + "\n"
    length = len(header).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode("latin-1") + data


for k, (descr, size, shape, version) in enumerate([("<f4", 4, (3,), 1), ("<f8", 8, (2, 3), 1), ("<i4", 4, (), 1),
                                                    ("<i8", 8, (2, 1, 2), 2), ("<f4", 4, (0, 7), 1),
                                                    ("<f8", 8, (1, 1), 3)]):
    count = 1
    for d in shape:
        count *= d
    with open(os.path.join(out, "npy", f"seed{k}.npy"), "wb") as f:
        f.write(npy(descr, shape, bytes(rng.randrange(256) for _ in range(count * size)), version))
print("seeds written to", out)
