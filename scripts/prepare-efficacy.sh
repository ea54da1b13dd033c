#!/usr/bin/env bash
# Data for the efficacy experiment (docs/efficacy_design.md; examples/distill/bld_distill.cpp
# --corpus efficacy): every English fortune, the King James Bible (a record per chapter) and
# the Python 3.11 documentation (a record per page, as text) up to 10.5 MB in all, cut into
# chunks and encoded by the JavaScript reference encoders (Llama-2 and GPT-2), split by record
# into train / valid / test (FNV-1a-64 of source and index, mod 20).
#
# usage: scripts/prepare-efficacy.sh [DIR]      (DIR defaults to <repo root>/.cache/data)
#
# Writes DIR/efficacy/records.tsv and DIR/efficacy/MANIFEST.txt (formats: scripts/encode-corpus.mjs;
# split is train, valid or test). Needs the Debian packages bible-kjv, bible-kjv-text and
# python3.11-doc (scripts/install-deps.sh). Idempotent: nothing is redone when STAMP.txt names
# the current scripts, tokenizer and inputs; delete DIR/efficacy to force it. About 75 s.
#
# Environment: FORTUNES_DIR (default /usr/share/games/fortunes), EFFICACY_BYTES (default 10500000).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-$repo/.cache/data}"
FORTUNES_DIR="${FORTUNES_DIR:-/usr/share/games/fortunes}"
EFFICACY_BYTES="${EFFICACY_BYTES:-10500000}"

bash "$here/fetch-data.sh" "$DIR" >/dev/null
DIR="$(cd "$DIR" && pwd)"
out="$DIR/efficacy"
mkdir -p "$out"

# What the data depends on: the scripts, the tokenizer, the corpus size, the source packages.
stamp() {
  sha256sum "$here/efficacy-corpus.py" "$here/encode-corpus.mjs" "$DIR/tokenizers/llama2/tokenizer.json" | cut -d' ' -f1
  echo "bytes $EFFICACY_BYTES"
  dpkg-query -W -f '${Package} ${Version}\n' fortunes bible-kjv bible-kjv-text python3.11-doc 2>/dev/null || true
}
if [[ -f "$out/records.tsv" && -f "$out/MANIFEST.txt" && -f "$out/STAMP.txt" ]] && diff -q <(stamp) "$out/STAMP.txt" >/dev/null; then
  echo "prepare-efficacy: $out is up to date"
  exit 0
fi
echo "prepare-efficacy: assembling the corpus and encoding it with the reference encoders -> $out"
/usr/bin/python3 "$here/efficacy-corpus.py" "$out/extra.tsv" --python-doc-bytes "$EFFICACY_BYTES"
node "$here/encode-corpus.mjs" "$DIR" "$FORTUNES_DIR" "$out" --extra "$out/extra.tsv" --total-bytes "$EFFICACY_BYTES"
stamp > "$out/STAMP.txt"
