#!/usr/bin/env bash
# Data for the distillation example (examples/distill/bld_distill.cpp): the English fortunes,
# every record, cut into chunks and encoded by the JavaScript reference encoders — Llama-2 via
# @huggingface/tokenizers (teacher), GPT-2 via gpt-3-encoder (students). The C++ trainer reads
# these cached ids; it has no encoder of its own.
#
# usage: scripts/prepare-distill.sh [DIR]      (DIR defaults to <repo root>/.cache/data)
#
# Writes DIR/distill/records.tsv and DIR/distill/MANIFEST.txt (formats: the header comment of
# scripts/encode-corpus.mjs). Runs scripts/fetch-data.sh first for the tokenizers and the
# reference encoders (itself idempotent). Idempotent: nothing is redone when MANIFEST.txt was
# made by the current encode-corpus.mjs from the current tokenizer and fortune files; delete
# DIR/distill to force it. About 25 s from scratch.
#
# Environment: FORTUNES_DIR (default /usr/share/games/fortunes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-$repo/.cache/data}"
FORTUNES_DIR="${FORTUNES_DIR:-/usr/share/games/fortunes}"

bash "$here/fetch-data.sh" "$DIR" >/dev/null
DIR="$(cd "$DIR" && pwd)"
out="$DIR/distill"

# The manifest names the script's hash and every input's hash: compare them with what a run now
# would write, without encoding anything.
up_to_date() {
  local m="$out/MANIFEST.txt"
  [[ -f "$out/records.tsv" && -f "$m" ]] || return 1
  grep -q "sha256 $(sha256sum "$here/encode-corpus.mjs" | cut -d' ' -f1))" "$m" || return 1
  grep -q "^$(sha256sum "$DIR/tokenizers/llama2/tokenizer.json" | cut -d' ' -f1)  " "$m" || return 1
  local line hash file
  while IFS= read -r line; do
    [[ "$line" == *"  $FORTUNES_DIR/"* ]] || continue
    hash="${line%%  *}"
    file="${line#*  }"
    [[ -f "$file" && "$(sha256sum "$file" | cut -d' ' -f1)" == "$hash" ]] || return 1
  done < "$m"
  grep -q "  $FORTUNES_DIR/" "$m"
}

if up_to_date; then
  echo "prepare-distill: $out is up to date"
  exit 0
fi
echo "prepare-distill: encoding the English fortunes with the reference encoders -> $out"
node "$here/encode-corpus.mjs" "$DIR" "$FORTUNES_DIR" "$out"
