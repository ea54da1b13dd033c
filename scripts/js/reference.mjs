// Produce reference token ids and per-id decodes from the reference JavaScript tokenizer
// implementations, for the C++ tests to compare against. Formats: scripts/README.md.
//
// usage: node reference.mjs <DIR> [--force]
//
// Reads   DIR/tokenizers/...  (tokenizer files, see fetch-data.sh)
//         DIR/texts/{en,de,zh}.txt (JSON lines, see make-corpora.mjs)
//         DIR/js/node_modules/{@huggingface/tokenizers,gpt-3-encoder,tiktoken}
// Writes  DIR/ref/<name>.decode.tsv, DIR/ref/<name>.encode.tsv for
//           llama2, llama3, gemma3, qwen3  (@huggingface/tokenizers)
//           gpt2                           (gpt-3-encoder)
//           cl100k                         (tiktoken, WASM)
//         DIR/ref/added-<variant>.tokenizer.json and .encode.tsv: tokenizers derived from
//           llama2 / llama3 with non-special added tokens (section "Added tokens")
//         DIR/ref/checks.txt    round-trip statistics and cross-checks (for people, not tests)
//         DIR/ref/warnings.txt  everything the libraries printed through console.* / process
//                               warnings while running (empty file: none)
//         DIR/ref/MANIFEST.txt  versions and SHA-256 of every input; written last. When it
//                               already matches the inputs, nothing is redone (use --force).
//
// The packages are loaded with require() from DIR/js (createRequire): the script lives in the
// repository, and ESM `import` would resolve bare names next to the script, not in DIR/js. All
// three packages ship CommonJS entry points, so this works the same on Node 18 and Node 20.

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const force = args.includes("--force");
const DIR = args.find((a) => !a.startsWith("--"));
if (!DIR) {
  console.error("usage: node reference.mjs <DIR> [--force]");
  process.exit(2);
}
const REF = path.join(DIR, "ref");
const require = createRequire(path.join(DIR, "js", "package.json"));

const HF_MODELS = ["llama2", "llama3", "gemma3", "qwen3"];
const CORPORA = ["en", "de", "zh"];
// Tokenizers derived from llama2 / llama3 with non-special added tokens, one per dummy-prefix
// rule (the section "Added tokens" below): the encoder cuts the added tokens out of the text
// first, and the rule then applies to each piece of text between them.
const ADDED_VARIANTS = ["first", "always", "prepend", "bytelevel", "plain"];
const OUTPUTS = [
  ...[...HF_MODELS, "gpt2", "cl100k"].flatMap((n) => [`${n}.decode.tsv`, `${n}.encode.tsv`]),
  ...ADDED_VARIANTS.flatMap((v) => [`added-${v}.tokenizer.json`, `added-${v}.encode.tsv`]),
];

// ---------------------------------------------------------------------------------------------
// Warnings: the libraries report problems (unknown patterns, unsupported options) through
// console.warn / console.error; keep every line so that they are never lost in scrollback.
const warnings = [];
let currentStep = "startup";
let capturingLog = false; // true while library code runs; our own progress lines are not kept
for (const level of ["warn", "error", "info", "debug", "log"]) {
  const original = console[level].bind(console);
  console[level] = (...a) => {
    if (level !== "log" || capturingLog) {
      warnings.push(`[${currentStep}] console.${level}: ${a.map(String).join(" ")}`);
    }
    original(...a);
  };
}
process.on("warning", (w) => warnings.push(`[${currentStep}] process warning: ${w.name}: ${w.message}`));
function inLibrary(step, fn) {
  currentStep = step;
  capturingLog = true;
  try {
    return fn();
  } finally {
    capturingLog = false;
  }
}
const log = (...a) => console.log(...a);

// ---------------------------------------------------------------------------------------------
// Inputs, versions, manifest.
const sha256 = (file) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
const readJson = (file) => JSON.parse(fs.readFileSync(file, "utf8"));
// (read from the folder: not every package exports "./package.json" to require())
const pkgVersion = (name) => readJson(path.join(DIR, "js", "node_modules", name, "package.json")).version;
const readFirstLine = (file) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n")[0] : "unknown");

const inputs = [];
for (const m of HF_MODELS) {
  inputs.push(`tokenizers/${m}/tokenizer.json`, `tokenizers/${m}/tokenizer_config.json`);
}
inputs.push("tokenizers/gpt2/encoder.json", "tokenizers/gpt2/vocab.bpe");
inputs.push("tokenizers/cl100k/cl100k_base.tiktoken", "tokenizers/cl100k/specials.txt");
for (const c of CORPORA) inputs.push(`texts/${c}.txt`);
for (const f of inputs) {
  if (!fs.existsSync(path.join(DIR, f))) {
    console.error(`reference.mjs: missing input ${path.join(DIR, f)} (run scripts/fetch-data.sh)`);
    process.exit(1);
  }
}

let manifest = "";
manifest += `# reference outputs made by scripts/js/reference.mjs (sha256 ${sha256(fileURLToPath(import.meta.url))})\n`;
manifest += `node ${process.versions.node}\n`;
try {
  // Checked before use so that a missing install gives a clear message, not a stack trace.
  for (const p of ["@huggingface/tokenizers", "gpt-3-encoder", "tiktoken"]) manifest += `${p}@${pkgVersion(p)}\n`;
} catch (e) {
  console.error(`reference.mjs: reference packages not installed in ${path.join(DIR, "js")}: ${e.message}`);
  process.exit(1);
}
for (const m of [...HF_MODELS, "gpt2", "cl100k"]) {
  manifest += `tokenizers/${m}: ${readFirstLine(path.join(DIR, "tokenizers", m, "SOURCE.txt"))}\n`;
}
for (const f of inputs) manifest += `sha256 ${sha256(path.join(DIR, f))}  ${f}\n`;

const manifestFile = path.join(REF, "MANIFEST.txt");
if (
  !force &&
  fs.existsSync(manifestFile) &&
  fs.readFileSync(manifestFile, "utf8") === manifest &&
  OUTPUTS.every((f) => fs.existsSync(path.join(REF, f)))
) {
  log("  ref/: up to date (MANIFEST.txt matches the inputs; --force to redo)");
  process.exit(0);
}
fs.mkdirSync(REF, { recursive: true });
fs.rmSync(manifestFile, { force: true }); // an interrupted run must not look finished

function writeAtomic(name, content) {
  const file = path.join(REF, name);
  fs.writeFileSync(`${file}.tmp`, content);
  fs.renameSync(`${file}.tmp`, file);
}

// ---------------------------------------------------------------------------------------------
// Corpora: JSON lines, one record (string) per line.
const corpora = CORPORA.map((c) => [
  c,
  fs
    .readFileSync(path.join(DIR, "texts", `${c}.txt`), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l)),
]);

const hexOfString = (s) => Buffer.from(s, "utf8").toString("hex");
const hexOfBytes = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const FFFD = "\ufffd";

const checks = [];
function firstDiff(a, b) {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) ++i;
  return i;
}

// Round-trip statistics over all records: full decode, and concatenation of one-id decodes.
function roundTripStats(name, rows, decodeAll, decodeOne) {
  let full = 0;
  let concat = 0;
  let tokens = 0;
  let exampleFull = null;
  let exampleConcat = null;
  let concatOther = 0;
  for (const [corpus, text, ids] of rows) {
    tokens += ids.length;
    const d = decodeAll(ids);
    if (d === text) full += 1;
    else if (!exampleFull) exampleFull = [corpus, text, d];
    const parts = ids.map((id) => decodeOne(id));
    const c = parts.join("");
    if (c === text) concat += 1;
    else if (!parts.some((p) => p.includes(FFFD))) {
      // Not explained by partial UTF-8 (one id holding part of a character decodes to U+FFFD).
      concatOther += 1;
      if (!exampleConcat) exampleConcat = [corpus, text, c];
    }
  }
  checks.push(`${name}: ${rows.length} records, ${tokens} tokens`);
  checks.push(`${name}: decode(encode(text)) == text for ${full}/${rows.length} records`);
  if (exampleFull) {
    const [c, t, d] = exampleFull;
    const at = firstDiff(t, d);
    checks.push(`  first mismatch (${c}) at byte ${at}: text ${JSON.stringify(t.slice(0, 80))} decoded ${JSON.stringify(d.slice(0, 80))}`);
  }
  checks.push(
    `${name}: concat(decode([id]) for id in encode(text)) == text for ${concat}/${rows.length} records; ` +
      `of the others, ${concatOther} have no id that decodes to U+FFFD`,
  );
  if (exampleConcat) {
    const [c, t, d] = exampleConcat;
    const at = firstDiff(t, d);
    const from = Math.max(0, at - 20);
    const ctx = (s) => JSON.stringify(Buffer.from(s, "utf8").subarray(from, at + 20).toString("utf8"));
    checks.push(`  first such mismatch (${c}) at byte ${at}: text …${ctx(t)}… concat …${ctx(d)}…`);
  }
}

function decodeStats(name, lines) {
  let fffd = 0;
  let empty = 0;
  for (const s of lines) {
    if (s.includes(FFFD)) fffd += 1;
    if (s === "") empty += 1;
  }
  checks.push(`${name}: ${lines.length} ids decoded; ${fffd} decode to a string containing U+FFFD; ${empty} decode to ""`);
}

// ---------------------------------------------------------------------------------------------
// HuggingFace tokenizers (@huggingface/tokenizers, pure JS).
const { Tokenizer } = inLibrary("require @huggingface/tokenizers", () => require("@huggingface/tokenizers"));

// decode(): `skip_special_tokens: false` keeps <s>, <|begin_of_text|> etc. as their text (we
// want one line for every id). `clean_up_tokenization_spaces: false` turns off the
// English-punctuation fix-up (" ." -> ".", " n't" -> "n't", ...), which otherwise applies
// whenever tokenizer_config.json says so or does not say (llama3 says true): the C++ side
// compares bytes, and that fix-up is not part of the tokenizer.
const DECODE_OPTIONS = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
// encode(): `add_special_tokens: false` stops the post-processor from adding BOS/EOS
// (<s> for llama2, <bos> for gemma3). Added tokens written literally in the text are still
// matched as such; that is the tokenizer's real behaviour.
const ENCODE_OPTIONS = { add_special_tokens: false };

for (const name of HF_MODELS) {
  const t0 = Date.now();
  const dir = path.join(DIR, "tokenizers", name);
  const tok = inLibrary(`${name} load`, () =>
    new Tokenizer(readJson(path.join(dir, "tokenizer.json")), readJson(path.join(dir, "tokenizer_config.json"))),
  );

  // Guard against the options being ignored (e.g. renamed in a later version): with clean-up
  // on, " ." and " n't" would lose their spaces; with special tokens added, a BOS would lead.
  inLibrary(`${name} self-test`, () => {
    const probe = "Hello world . It is n't so , right ?";
    const ids = tok.encode(probe, ENCODE_OPTIONS).ids;
    const back = tok.decode(ids, DECODE_OPTIONS);
    const specialIds = new Set(tok.tokenizer.added_tokens.filter((a) => a.special).map((a) => a.id));
    if (back !== probe) throw new Error(`${name}: decode(encode(${JSON.stringify(probe)})) = ${JSON.stringify(back)}`);
    if (ids.some((id) => specialIds.has(id))) throw new Error(`${name}: encode added special tokens: ${ids}`);
  });

  // Per-id decode. The id range is that of the library's id -> token table (model vocabulary
  // with added tokens placed over it); ids with no token are left out.
  const decoded = [];
  const lines = [];
  const decodeOne = (id) => tok.decode([id], DECODE_OPTIONS);
  inLibrary(`${name} decode`, () => {
    const n = tok.model.vocab.length;
    for (let id = 0; id < n; ++id) {
      if (tok.id_to_token(id) === undefined) continue;
      const s = decodeOne(id);
      decoded.push(s);
      lines.push(`${id}\t${hexOfString(s)}\n`);
    }
  });
  writeAtomic(`${name}.decode.tsv`, lines.join(""));
  decodeStats(name, decoded);

  const rows = [];
  inLibrary(`${name} encode`, () => {
    for (const [corpus, texts] of corpora) {
      for (const text of texts) {
        const ids = tok.encode(text, ENCODE_OPTIONS).ids;
        if (!ids.every((i) => Number.isInteger(i))) {
          throw new Error(`${name}: encode produced a non-integer id for ${JSON.stringify(text.slice(0, 60))}`);
        }
        rows.push([corpus, text, ids]);
      }
    }
  });
  writeAtomic(`${name}.encode.tsv`, rows.map(([c, t, ids]) => `${c}\t${hexOfString(t)}\t${ids.join(" ")}\n`).join(""));
  inLibrary(`${name} round trip`, () =>
    roundTripStats(name, rows, (ids) => tok.decode(ids, DECODE_OPTIONS), decodeOne),
  );
  log(`  ref/${name}: ${lines.length} ids, ${rows.length} records (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------------------------------------
// GPT-2 with gpt-3-encoder's own encode/decode. Its decode() maps ids through encoder.json and
// the byte<->unicode table, then UTF-8-decodes with a non-fatal TextDecoder (partial UTF-8
// sequences become U+FFFD). It has no special-token handling: "<|endoftext|>" in text is
// encoded as ordinary text, and id 50256 decodes to the string "<|endoftext|>".
{
  const t0 = Date.now();
  const gpt = inLibrary("require gpt-3-encoder", () => require("gpt-3-encoder"));
  const encoderJson = readJson(path.join(DIR, "tokenizers", "gpt2", "encoder.json"));
  const maxId = Math.max(...Object.values(encoderJson));
  const decoded = [];
  const lines = [];
  inLibrary("gpt2 decode", () => {
    for (let id = 0; id <= maxId; ++id) {
      const s = gpt.decode([id]);
      decoded.push(s);
      lines.push(`${id}\t${hexOfString(s)}\n`);
    }
  });
  writeAtomic("gpt2.decode.tsv", lines.join(""));
  decodeStats("gpt2", decoded);
  const rows = [];
  inLibrary("gpt2 encode", () => {
    for (const [corpus, texts] of corpora) {
      for (const text of texts) {
        const ids = gpt.encode(text);
        if (!ids.every((i) => Number.isInteger(i))) {
          throw new Error(`gpt2: encode produced a non-integer id for ${JSON.stringify(text.slice(0, 60))}`);
        }
        rows.push([corpus, text, ids]);
      }
    }
  });
  writeAtomic("gpt2.encode.tsv", rows.map(([c, t, ids]) => `${c}\t${hexOfString(t)}\t${ids.join(" ")}\n`).join(""));
  inLibrary("gpt2 round trip", () => roundTripStats("gpt2", rows, (ids) => gpt.decode(ids), (id) => gpt.decode([id])));

  // Cross-check against tiktoken's own "gpt2" encoding (same ranks; OpenAI's reference code).
  inLibrary("gpt2 vs tiktoken", () => {
    const { get_encoding } = require("tiktoken");
    const enc = get_encoding("gpt2");
    let same = 0;
    let example = null;
    for (const [corpus, text, ids] of rows) {
      const other = Array.from(enc.encode_ordinary(text));
      if (other.length === ids.length && other.every((v, i) => v === ids[i])) same += 1;
      else if (!example) example = `${corpus} ${JSON.stringify(text.slice(0, 60))}: gpt-3-encoder ${ids.slice(0, 12).join(" ")} … tiktoken ${other.slice(0, 12).join(" ")} …`;
    }
    checks.push(`gpt2: gpt-3-encoder ids == tiktoken get_encoding("gpt2").encode_ordinary ids for ${same}/${rows.length} records`);
    if (example) checks.push(`  first difference: ${example}`);
    enc.free();
  });
  log(`  ref/gpt2: ${lines.length} ids, ${rows.length} records (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------------------------------------
// cl100k_base with tiktoken (WASM). decode_single_token_bytes / decode return raw bytes
// (Uint8Array), written as they are: no UTF-8 decoding, so no U+FFFD. encode_ordinary() treats
// special-token text as ordinary text (plain encode() would throw on it), which is what
// "no special tokens" means here.
{
  const t0 = Date.now();
  const { get_encoding } = inLibrary("require tiktoken", () => require("tiktoken"));
  const enc = inLibrary("cl100k load", () => get_encoding("cl100k_base"));
  const specials = new Map(
    fs
      .readFileSync(path.join(DIR, "tokenizers", "cl100k", "specials.txt"), "utf8")
      .split("\n")
      .filter((l) => l)
      .map((l) => {
        const eq = l.lastIndexOf("=");
        return [Number(l.slice(eq + 1)), l.slice(0, eq)];
      }),
  );
  // The converted rank file, to check the conversion against the library byte for byte.
  const ranks = new Map();
  for (const line of fs.readFileSync(path.join(DIR, "tokenizers", "cl100k", "cl100k_base.tiktoken"), "utf8").split("\n")) {
    if (!line) continue;
    const [b64, rank] = line.split(" ");
    ranks.set(Number(rank), Buffer.from(b64, "base64").toString("hex"));
  }
  const maxId = Math.max(...ranks.keys(), ...specials.keys());
  const lines = [];
  let mismatches = 0;
  let absentButInFile = 0;
  let presentButNotInFile = 0;
  inLibrary("cl100k decode", () => {
    // For an id with no token, decode_single_token_bytes throws from inside the WASM call;
    // wasm-bindgen then never releases its borrow of the object, and a later free() fails
    // ("attempted to take ownership of Rust value while it was borrowed"). So ids are probed
    // on a separate instance that is deliberately never freed (the process ends soon).
    const probe = get_encoding("cl100k_base");
    for (let id = 0; id <= maxId; ++id) {
      if (specials.has(id)) continue; // text tokens only
      let hex = null;
      try {
        hex = hexOfBytes(probe.decode_single_token_bytes(id));
      } catch {
        hex = null; // no such id
      }
      if (hex === null) {
        if (ranks.has(id)) absentButInFile += 1;
        continue;
      }
      if (!ranks.has(id)) presentButNotInFile += 1;
      else if (ranks.get(id) !== hex) mismatches += 1;
      lines.push(`${id}\t${hex}\n`);
    }
  });
  writeAtomic("cl100k.decode.tsv", lines.join(""));
  checks.push(
    `cl100k: ${lines.length} text ids decoded (raw bytes); converted cl100k_base.tiktoken vs tiktoken: ` +
      `${mismatches} byte mismatches, ${absentButInFile} ids only in the file, ${presentButNotInFile} ids only in the library`,
  );
  const rows = [];
  inLibrary("cl100k encode", () => {
    for (const [corpus, texts] of corpora) {
      for (const text of texts) rows.push([corpus, text, Array.from(enc.encode_ordinary(text))]);
    }
  });
  writeAtomic("cl100k.encode.tsv", rows.map(([c, t, ids]) => `${c}\t${hexOfString(t)}\t${ids.join(" ")}\n`).join(""));
  inLibrary("cl100k round trip", () => {
    let full = 0;
    let concat = 0;
    let tokens = 0;
    for (const [, text, ids] of rows) {
      tokens += ids.length;
      const want = hexOfString(text);
      if (hexOfBytes(enc.decode(Uint32Array.from(ids))) === want) full += 1;
      if (ids.map((id) => ranks.get(id)).join("") === want) concat += 1;
    }
    checks.push(`cl100k: ${rows.length} records, ${tokens} tokens`);
    checks.push(`cl100k: decode(encode(text)) bytes == text bytes for ${full}/${rows.length} records`);
    checks.push(`cl100k: concat(rank-file bytes of each id) == text bytes for ${concat}/${rows.length} records`);
  });
  enc.free();
  log(`  ref/cl100k: ${lines.length} ids, ${rows.length} records (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------------------------------------
// Added tokens. Five tokenizers, each written to ref/added-<variant>.tokenizer.json with two
// non-special added tokens ("<X>" and "[T]", normalized: false, ids past the vocabulary):
//   first      llama2, pre-tokeniser Metaspace prepend_scheme "first" (no normaliser)
//   always     llama2, pre-tokeniser Metaspace prepend_scheme "always"
//   prepend    llama2 as it is (normaliser Prepend("▁") + Replace)
//   bytelevel  llama3 with the pre-tokeniser ByteLevel(add_prefix_space: true, use_regex: true)
//   plain      llama3 as it is (no dummy prefix: the partner the others align with)
// and the texts below encoded by each: the first 150 English records with an added token at the
// start, in the middle (before or after a space), at the end, and a few edge cases. The C++ test
// (tests/test_alignment.cpp) aligns every variant with "plain", with and without the text.
{
  const t0 = Date.now();
  const en = corpora.find(([c]) => c === "en")[1].slice(0, 150);
  const texts = ["<X>", "<X><X>", " <X>a", "<X> a", "a<X>", "<X>[T]b", "[T] <X>  a", "a <X>b [T]c"];
  en.forEach((t, r) => {
    const spaces = [...t.matchAll(/ /g)].map((m) => m.index);
    const k = spaces.length ? spaces[Math.floor(spaces.length / 2)] + (r % 2) : t.length;  // before / after a space
    texts.push("<X>" + t, t.slice(0, k) + "[T]" + t.slice(k), "[T]<X> " + t, t + "<X>");
  });
  const added = (base) => [
    { id: base, content: "<X>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
    { id: base + 1, content: "[T]", single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
  ];
  const variant = (v) => {
    const from = v === "bytelevel" || v === "plain" ? "llama3" : "llama2";
    const j = readJson(path.join(DIR, "tokenizers", from, "tokenizer.json"));
    let base = 0;  // the first id past the vocabulary and the added tokens
    for (const id of [...Object.values(j.model.vocab), ...j.added_tokens.map((a) => a.id)]) base = Math.max(base, id + 1);
    if (v !== "plain") j.added_tokens.push(...added(base));
    if (v === "first" || v === "always") {
      j.normalizer = null;
      j.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: v, split: false };
    }
    if (v === "bytelevel") {
      // GPT-2 / RoBERTa style: one ByteLevel pre-tokeniser with its own regex and the prefix space.
      j.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
    }
    return [j, readJson(path.join(DIR, "tokenizers", from, "tokenizer_config.json"))];
  };
  for (const v of ADDED_VARIANTS) {
    const [j, config] = variant(v);
    const tok = inLibrary(`added-${v} load`, () => new Tokenizer(j, config));
    const rows = inLibrary(`added-${v} encode`, () => texts.map((t) => ["added", t, tok.encode(t, ENCODE_OPTIONS).ids]));
    writeAtomic(`added-${v}.tokenizer.json`, JSON.stringify(j));
    writeAtomic(`added-${v}.encode.tsv`, rows.map(([c, t, ids]) => `${c}\t${hexOfString(t)}\t${ids.join(" ")}\n`).join(""));
  }
  log(`  ref/added-*: ${ADDED_VARIANTS.length} tokenizers, ${texts.length} texts each (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// ---------------------------------------------------------------------------------------------
writeAtomic("checks.txt", checks.join("\n") + "\n");
writeAtomic("warnings.txt", warnings.map((w) => w + "\n").join(""));
if (warnings.length) {
  log(`  ${warnings.length} library warning line(s), see ${path.join(REF, "warnings.txt")}`);
}
writeAtomic("MANIFEST.txt", manifest); // last: marks the outputs as complete
