// Convert one encoder definition shipped by the npm package `tiktoken` (the WASM bindings,
// file `encoders/<name>.json`) into the plain files the C++ side reads:
//
//   <outdir>/<name>.tiktoken   one line per mergeable token, sorted by rank:
//                              "<standard base64 of the token bytes> <rank>\n"
//                              (the format of OpenAI's published .tiktoken files)
//   <outdir>/specials.txt      one line per special token, sorted by id: "<NAME>=<ID>\n"
//   <outdir>/pat_str.txt       the pre-tokenisation regex, one line, then "\n"
//
// usage: node convert-tiktoken.mjs <encoders/NAME.json> <outdir> <NAME>
//
// The JSON holds {pat_str, special_tokens, bpe_ranks[, explicit_n_vocab]}. `bpe_ranks` is the
// text the package hands to its WASM constructor (`new Tiktoken(bpe_ranks, ...)`, see
// lite/tiktoken_bg.js). Its Rust parser accepts two layouts, chosen by the first character:
//   * starts with '!': a compact layout. Every line is "! <offset> <b64> <b64> ..."; the k-th
//     base64 field on the line (k = 0, 1, ...) has rank offset + k. Lines start new runs, so a
//     gap in the ranks is a new line with a new offset (p50k_base has two lines; cl100k_base,
//     whose ranks are 0..100255 without gaps, has one).
//   * otherwise: the ordinary .tiktoken layout, "<b64> <rank>" per line.
// Both are handled here, and the result is checked (ranks and byte strings unique, every base64
// field canonical) so that a format change in a later package version fails loudly.

import fs from "node:fs";
import path from "node:path";

function fail(msg) {
  console.error(`convert-tiktoken: ${msg}`);
  process.exit(1);
}

const [inFile, outDir, name] = process.argv.slice(2);
if (!inFile || !outDir || !name) fail("usage: node convert-tiktoken.mjs <NAME.json> <outdir> <NAME>");

const def = JSON.parse(fs.readFileSync(inFile, "utf8"));
for (const key of ["pat_str", "special_tokens", "bpe_ranks"]) {
  if (!(key in def)) fail(`${inFile}: field "${key}" missing`);
}

// Decode one base64 field strictly: Node's decoder skips invalid characters silently, so
// re-encode and compare to be sure the field was canonical standard base64.
function b64(field, where) {
  const bytes = Buffer.from(field, "base64");
  if (bytes.toString("base64") !== field) fail(`${where}: "${field}" is not canonical base64`);
  if (bytes.length === 0) fail(`${where}: empty token`);
  return bytes;
}

const entries = []; // [rank, Buffer]
const text = def.bpe_ranks;
const lines = text.split("\n");
if (text.startsWith("!")) {
  lines.forEach((line, li) => {
    if (line === "") return;
    const parts = line.split(" ");
    if (parts.length < 2 || !/^\d+$/.test(parts[1])) fail(`bpe_ranks line ${li + 1}: bad run header`);
    const offset = Number(parts[1]);
    for (let k = 2; k < parts.length; ++k) {
      entries.push([offset + (k - 2), b64(parts[k], `bpe_ranks line ${li + 1} field ${k + 1}`)]);
    }
  });
} else {
  lines.forEach((line, li) => {
    if (line === "") return;
    const parts = line.split(" ");
    if (parts.length !== 2 || !/^\d+$/.test(parts[1])) fail(`bpe_ranks line ${li + 1}: expected "<b64> <rank>"`);
    entries.push([Number(parts[1]), b64(parts[0], `bpe_ranks line ${li + 1}`)]);
  });
}

entries.sort((a, b) => a[0] - b[0]);
const seenBytes = new Set();
for (let i = 0; i < entries.length; ++i) {
  if (i > 0 && entries[i][0] === entries[i - 1][0]) fail(`rank ${entries[i][0]} appears twice`);
  const key = entries[i][1].toString("latin1");
  if (seenBytes.has(key)) fail(`token bytes of rank ${entries[i][0]} appear twice`);
  seenBytes.add(key);
}

const specials = Object.entries(def.special_tokens).sort((a, b) => a[1] - b[1]);
for (const [tok, id] of specials) {
  if (!Number.isInteger(id)) fail(`special token ${tok}: id is not an integer`);
  if (/[=\n]/.test(tok)) fail(`special token ${JSON.stringify(tok)} cannot be written as NAME=ID`);
}

fs.mkdirSync(outDir, { recursive: true });
// Write to temporary names and rename, so an interrupted run never leaves a half file that a
// later (idempotent) run would take as finished.
function writeAtomic(file, content) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}
writeAtomic(path.join(outDir, "pat_str.txt"), def.pat_str + "\n");
writeAtomic(path.join(outDir, "specials.txt"), specials.map(([t, id]) => `${t}=${id}\n`).join(""));
writeAtomic(
  path.join(outDir, `${name}.tiktoken`),
  entries.map(([rank, bytes]) => `${bytes.toString("base64")} ${rank}\n`).join(""),
);

const maxRank = entries.length ? entries[entries.length - 1][0] : -1;
console.log(
  `  ${name}: ${entries.length} ranks (0..${maxRank}${entries.length === maxRank + 1 ? ", no gaps" : ", with gaps"}), ` +
    `${specials.length} special tokens`,
);
