// Encode the English fortunes with two real tokenizers, for the distillation example
// (examples/distill/bld_distill.cpp): the teacher's Llama-2 (SentencePiece-style, via
// @huggingface/tokenizers) and the students' GPT-2 (byte-level BPE, via gpt-3-encoder).
// The C++ trainer reads the ids from the file written here: they are a cached encoding made
// by the JavaScript reference encoders at setup time, not a C++ encoding path.
//
// usage: node encode-corpus.mjs <DIR> <fortunes root> <outdir> [--extra FILE --total-bytes N]
//   DIR            the data folder of fetch-data.sh (tokenizers/, js/node_modules)
//   fortunes root  /usr/share/games/fortunes
//   outdir         where records.tsv and MANIFEST.txt go (DIR/distill in prepare-distill.sh)
//   --extra FILE   the efficacy corpus (scripts/prepare-efficacy.sh): after the fortunes, the
//                  records of FILE (<source>\t<index>\t<hex>, scripts/efficacy-corpus.py), taken
//                  while the corpus holds fewer than --total-bytes bytes; records are then split
//                  by h = FNV-1a-64(source name + index in decimal) mod 20 into test (h = 9 or
//                  19), valid (h = 18) and train, instead of the fortunes' held-out rule below.
//
// Corpus, all deterministic:
//   * files: the regular files directly inside the fortunes root, sorted by name, minus
//     *.dat indexes, *.u8 symlinks, offensive ("-o", "off/") files and the Chinese files
//     (more than 10% CJK ideographs) — the same choice as js/make-corpora.mjs, but with
//     every record, not a sample. Files that are not valid UTF-8 are read as ISO-8859-1 when
//     they hold no multi-byte UTF-8 sequence; records that are invalid UTF-8 are skipped.
//   * records: the text between two "%" lines, without the "\n" that ends the last line; ANSI
//     colour escapes removed; whitespace-only records dropped. Record r (0-based, in file
//     order over all files) is held out when r % 10 == 9, so the split is fixed.
//   * chunks: a record longer than MAX_CHUNK_BYTES is cut at line breaks into chunks of whole
//     lines of at most MAX_CHUNK_BYTES each (the "\n" between two chunks belongs to neither);
//     a line that is itself too long is cut at spaces (the space is dropped too), a word that
//     is too long at a character boundary. Whitespace-only chunks are dropped.
//   * each chunk is one training or held-out example and is encoded on its own by both
//     encoders, so the two token sequences cover exactly the same text: Llama-2's ids decode
//     to " " + text (its dummy prefix), GPT-2's to text. No BOS/EOS is added
//     (add_special_tokens: false); the trainer adds the teacher's BOS itself.
//
// Output, outdir/records.tsv — one line per chunk, in corpus order:
//
//   <split>\t<record>\t<hex of the chunk's UTF-8 bytes>\t<llama2 ids>\t<gpt2 ids>\n
//
// split is "train" or "heldout" ("train", "valid" or "test" with --extra), record the 0-based
// record index in corpus order, ids decimal separated by
// one space. outdir/MANIFEST.txt (written last, for people and for the idempotence check):
// versions, input hashes and counts. Every chunk is checked to decode back to its text with
// both libraries' decoders before anything is written.

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const MAX_CHUNK_BYTES = 256; // about 64 GPT-2 tokens of English
const HELDOUT_EVERY = 10;

function fail(msg) {
  console.error(`encode-corpus: ${msg}`);
  process.exit(1);
}

const argv = process.argv.slice(2);
const option = (name) => {
  const k = argv.indexOf(name);
  if (k < 0) return null;
  if (k + 1 >= argv.length) fail(`${name} needs a value`);
  const v = argv[k + 1];
  argv.splice(k, 2);
  return v;
};
const extraFile = option("--extra");
const totalBytes = Number(option("--total-bytes") ?? "Infinity");
const [DIR, root, outDir] = argv;
if (!DIR || !root || !outDir)
  fail("usage: node encode-corpus.mjs <DIR> <fortunes root> <outdir> [--extra FILE --total-bytes N]");
if (!fs.existsSync(root)) fail(`${root} not found; apt-get install -y fortunes`);
const require = createRequire(path.resolve(DIR, "js", "package.json"));

const utf8Fatal = new TextDecoder("utf-8", { fatal: true });
const isUtf8 = (buf) => {
  try {
    utf8Fatal.decode(buf);
    return true;
  } catch {
    return false;
  }
};
const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest("hex");

function dataFiles(dir) {
  return fs
    .readdirSync(dir)
    .sort()
    .filter((name) => {
      if (name.startsWith(".") || name.endsWith(".dat") || name.endsWith(".u8")) return false;
      if (name.endsWith("-o") || name === "off") return false;
      return fs.lstatSync(path.join(dir, name)).isFile();
    })
    .map((name) => path.join(dir, name));
}

function splitRecords(buf) {
  const records = [];
  let start = 0;
  let lineStart = 0;
  while (lineStart < buf.length) {
    let nl = buf.indexOf(0x0a, lineStart);
    if (nl < 0) nl = buf.length;
    if (nl - lineStart === 1 && buf[lineStart] === 0x25) {
      records.push(buf.subarray(start, Math.max(start, lineStart - 1)));
      start = nl + 1;
    }
    lineStart = nl + 1;
  }
  if (start < buf.length) {
    let end = buf.length;
    if (buf[end - 1] === 0x0a) end -= 1;
    records.push(buf.subarray(start, end));
  }
  return records;
}

const ANSI_SGR = /\x1b\[[0-9;]*m/g;
const CJK = /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/gu;
const bytesOf = (s) => Buffer.byteLength(s, "utf8");

// Cuts a string that is too long at spaces, then at character boundaries.
function cutLine(line) {
  const out = [];
  let cur = "";
  const flush = () => {
    if (cur !== "") out.push(cur);
    cur = "";
  };
  for (const word of line.split(" ")) {
    const joined = cur === "" ? word : `${cur} ${word}`;
    if (bytesOf(joined) <= MAX_CHUNK_BYTES) {
      cur = joined;
      continue;
    }
    flush();
    let w = word;
    while (bytesOf(w) > MAX_CHUNK_BYTES) {
      let piece = "";
      for (const ch of w) {
        if (bytesOf(piece + ch) > MAX_CHUNK_BYTES) break;
        piece += ch;
      }
      out.push(piece);
      w = w.slice(piece.length);
    }
    cur = w;
  }
  flush();
  return out;
}

function chunks(record) {
  if (bytesOf(record) <= MAX_CHUNK_BYTES) return [record];
  const out = [];
  let cur = null;
  for (const line of record.split("\n")) {
    const pieces = bytesOf(line) <= MAX_CHUNK_BYTES ? [line] : cutLine(line);
    for (const p of pieces) {
      const joined = cur === null ? p : `${cur}\n${p}`;
      if (bytesOf(joined) <= MAX_CHUNK_BYTES) {
        cur = joined;
      } else {
        out.push(cur);
        cur = p;
      }
    }
  }
  if (cur !== null) out.push(cur);
  return out;
}

// ---- corpus ---------------------------------------------------------------------------------
const files = dataFiles(root).filter((f) => {
  const text = fs.readFileSync(f).toString("utf8");
  const n = (text.match(CJK) || []).length;
  return !(text.length && n / text.length > 0.1);
});
if (files.length === 0) fail(`no English fortune files under ${root}; apt-get install -y fortunes`);
const inputs = [];
const records = [];
const sources = []; // per record: [source name, index within the source]
const perSource = {};
const sourceCount = (name) => {
  perSource[name] = (perSource[name] ?? -1) + 1;
  return perSource[name];
};
let skippedInvalid = 0;
for (const file of files) {
  const buf = fs.readFileSync(file);
  inputs.push(`${sha256(buf)}  ${file}`);
  const latin1 = !isUtf8(buf) && !/[\xc2-\xf4][\x80-\xbf]/.test(buf.toString("latin1"));
  for (const rb of splitRecords(buf)) {
    let text;
    if (latin1) text = rb.toString("latin1");
    else if (isUtf8(rb)) text = rb.toString("utf8");
    else {
      skippedInvalid += 1;
      continue;
    }
    text = text.replace(ANSI_SGR, "");
    if (text.trim() === "") continue;
    records.push(text);
    sources.push(["fortunes", sourceCount("fortunes")]);
  }
}
// The efficacy corpus (--extra): the records of scripts/efficacy-corpus.py after the fortunes,
// taken while the corpus holds fewer than --total-bytes bytes.
const bytesBySource = {};
let corpusBytes = records.reduce((n, r) => n + bytesOf(r), 0);
bytesBySource.fortunes = corpusBytes;
if (extraFile) {
  const buf = fs.readFileSync(extraFile);
  inputs.push(`${sha256(buf)}  ${extraFile}`);
  for (const line of buf.toString("ascii").split("\n")) {
    if (line === "") continue;
    if (corpusBytes >= totalBytes) break;
    const [source, index, hex] = line.split("\t");
    const text = Buffer.from(hex, "hex").toString("utf8");
    if (text.trim() === "") continue;
    records.push(text);
    sources.push([source, Number(index)]);
    corpusBytes += bytesOf(text);
    bytesBySource[source] = (bytesBySource[source] ?? 0) + bytesOf(text);
  }
}

// ---- encoders -------------------------------------------------------------------------------
const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
const { Tokenizer } = require("@huggingface/tokenizers");
const llamaDir = path.join(DIR, "tokenizers", "llama2");
const llama = new Tokenizer(readJson(path.join(llamaDir, "tokenizer.json")), readJson(path.join(llamaDir, "tokenizer_config.json")));
const gpt = require("gpt-3-encoder");
const ENCODE = { add_special_tokens: false };
const DECODE = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
const version = (p) => readJson(path.resolve(DIR, "js", "node_modules", p, "package.json")).version;

const lines = [];
const counts = extraFile // chunks, bytes, llama ids, gpt2 ids
  ? { train: [0, 0, 0, 0], valid: [0, 0, 0, 0], test: [0, 0, 0, 0] }
  : { train: [0, 0, 0, 0], heldout: [0, 0, 0, 0] };
let longRecords = 0;
const t0 = Date.now();
// FNV-1a, 64 bits, of a string's UTF-8 bytes.
const fnv1a64 = (str) => {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(str, "utf8")) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
};
// The fortunes corpus: record r is held out when r % 10 == 9. The efficacy corpus
// (docs/efficacy_design.md): h = FNV-1a-64(source name + record index in decimal) mod 20;
// test when h is 9 or 19, validation when 18, training otherwise.
const splitOf = (r) => {
  if (!extraFile) return r % HELDOUT_EVERY === HELDOUT_EVERY - 1 ? "heldout" : "train";
  const h = Number(fnv1a64(`${sources[r][0]}${sources[r][1]}`) % 20n);
  return h === 9 || h === 19 ? "test" : h === 18 ? "valid" : "train";
};
for (let r = 0; r < records.length; ++r) {
  const split = splitOf(r);
  const cs = chunks(records[r]).filter((c) => c.trim() !== "");
  if (cs.length > 1) longRecords += 1;
  for (const c of cs) {
    const a = llama.encode(c, ENCODE).ids;
    const b = gpt.encode(c);
    if (llama.decode(a, DECODE) !== c) fail(`llama2 does not round-trip record ${r}: ${JSON.stringify(c.slice(0, 60))}`);
    if (gpt.decode(b) !== c) fail(`gpt2 does not round-trip record ${r}: ${JSON.stringify(c.slice(0, 60))}`);
    lines.push(`${split}\t${r}\t${Buffer.from(c, "utf8").toString("hex")}\t${a.join(" ")}\t${b.join(" ")}\n`);
    const k = counts[split];
    k[0] += 1;
    k[1] += bytesOf(c);
    k[2] += a.length;
    k[3] += b.length;
  }
  if (r % 500 === 0 || r === records.length - 1) {
    process.stderr.write(`\r   encoding records ${r + 1}/${records.length}`);
  }
}
process.stderr.write(` (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);

fs.mkdirSync(outDir, { recursive: true });
const write = (name, text) => {
  fs.writeFileSync(path.join(outDir, `${name}.tmp`), text);
  fs.renameSync(path.join(outDir, `${name}.tmp`), path.join(outDir, name));
};
write("records.tsv", lines.join(""));
const me = fileURLToPath(import.meta.url);
const summary = (s) =>
  `${s}: ${counts[s][0]} chunks, ${counts[s][1]} bytes, ${counts[s][2]} llama2 ids, ${counts[s][3]} gpt2 ids`;
write(
  "MANIFEST.txt",
  [
    `# records.tsv made by scripts/encode-corpus.mjs (sha256 ${sha256(fs.readFileSync(me))})`,
    `node ${process.versions.node}`,
    `@huggingface/tokenizers@${version("@huggingface/tokenizers")} gpt-3-encoder@${version("gpt-3-encoder")}`,
    `${sha256(fs.readFileSync(path.join(llamaDir, "tokenizer.json")))}  tokenizers/llama2/tokenizer.json`,
    extraFile
      ? `max chunk bytes ${MAX_CHUNK_BYTES}, splits: FNV-1a-64(source + index) % 20: 9, 19 test, 18 valid, else train; corpus cut at ${totalBytes} bytes`
      : `max chunk bytes ${MAX_CHUNK_BYTES}, held out: record % ${HELDOUT_EVERY} == ${HELDOUT_EVERY - 1}`,
    `${records.length} records (${longRecords} cut into chunks, ${skippedInvalid} skipped as invalid UTF-8) from ${files.length} files:`,
    ...inputs,
    ...Object.entries(bytesBySource).map(([k, v]) => `source ${k}: ${v} bytes`),
    `corpus sha256 ${sha256(Buffer.from(records.join("\u0000"), "utf8"))} (records joined by NUL)`,
    ...Object.keys(counts).map(summary),
    "",
  ].join("\n"),
);
console.log(Object.keys(counts).map((k) => `   ${summary(k)}`).join("\n"));
