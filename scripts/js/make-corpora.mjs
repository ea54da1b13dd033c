// Build small, deterministic text corpora from Debian's fortune-cookie packages:
//
//   <outdir>/en.txt  from `fortunes`     (/usr/share/games/fortunes/*, non-Chinese files)
//   <outdir>/de.txt  from `fortunes-de`  (/usr/share/games/fortunes/de/*)
//   <outdir>/zh.txt  from `fortunes-zh`  (chinese, song100, tang300 — they sit next to the
//                                         English files, so files are told apart by content)
//   <outdir>/SOURCES.txt  which files fed which corpus, and how many records were kept
//
// usage: node make-corpora.mjs <fortunes root, e.g. /usr/share/games/fortunes> <outdir>
//
// Output format (JSON lines): one record per line, written as a JSON string
// (JSON.stringify: non-ASCII stays raw UTF-8; only '"', '\\' and control characters are
// escaped), then "\n". A record is the text between two lines holding a single "%", with the
// line breaks inside it kept and WITHOUT the final "\n" that ends its last line.
//
// Choices, all deterministic (same package versions -> byte-identical files):
//   * files: regular files only (the *.u8 symlinks duplicate them; *.dat are indexes), taken in
//     sorted file-name order (JavaScript code-unit order). Offensive fortunes (an `off/`
//     folder, ROT13-encoded, or names ending in "-o") are skipped; none are installed here.
//   * language of a top-level file: "zh" when more than 10% of its characters are CJK
//     ideographs, otherwise "en". A `zh/` sub-folder, if a package ever ships one, is zh too.
//   * encoding: a file that is valid UTF-8 is read as UTF-8. A file that is not, and holds no
//     valid multi-byte UTF-8 sequence at all, is taken as ISO-8859-1 and converted. A file with
//     a mixture is read record by record, and records that are not valid UTF-8 are skipped.
//     (All files of fortunes 1:1.99.1-7.3, fortunes-de 0.35-1 and fortunes-zh 2.98 are UTF-8.)
//   * ANSI colour escapes ("ESC [ ... m", used by fortunes-zh for titles) are removed: they are
//     terminal formatting, not text. Other control characters (e.g. the backspaces used for
//     overstrike in a few English fortunes) are kept.
//   * records that are empty or whitespace-only, or longer than MAX_RECORD_BYTES, are dropped.
//   * sampling: of the N remaining records (B bytes), every k-th is taken, starting with the
//     first, where k = max(1, ceil(N / MAX_RECORDS), ceil(B / MAX_BYTES)); taking stops at
//     MAX_RECORDS records or before the total would pass MAX_BYTES bytes.

import fs from "node:fs";
import path from "node:path";

const MAX_RECORDS = 400;
const MAX_BYTES = 120_000; // UTF-8 bytes of record text, not counting JSON escapes
const MAX_RECORD_BYTES = 4096;

function fail(msg) {
  console.error(`make-corpora: ${msg}`);
  process.exit(1);
}

const [root, outDir] = process.argv.slice(2);
if (!root || !outDir) fail("usage: node make-corpora.mjs <fortunes root> <outdir>");
if (!fs.existsSync(root)) {
  fail(`${root} not found; install the fortunes with: apt-get install -y fortunes fortunes-de fortunes-zh`);
}

const utf8Fatal = new TextDecoder("utf-8", { fatal: true });
function isUtf8(buf) {
  try {
    utf8Fatal.decode(buf);
    return true;
  } catch {
    return false;
  }
}

// Regular fortune data files directly inside `dir`, sorted by name.
function dataFiles(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .sort()
    .filter((name) => {
      if (name.startsWith(".") || name.endsWith(".dat") || name.endsWith(".u8")) return false;
      if (name.endsWith("-o") || name === "off") return false; // offensive (ROT13) fortunes
      const st = fs.lstatSync(path.join(dir, name));
      return st.isFile(); // skips symlinks and sub-folders
    })
    .map((name) => path.join(dir, name));
}

// Split a file's bytes into records (Buffers). A line consisting of "%" ends a record.
function splitRecords(buf) {
  const records = [];
  let start = 0; // start of the current record
  let lineStart = 0;
  while (lineStart < buf.length) {
    let nl = buf.indexOf(0x0a, lineStart);
    if (nl < 0) nl = buf.length;
    const isSep = nl - lineStart === 1 && buf[lineStart] === 0x25; // "%"
    if (isSep) {
      // Record = bytes from `start` up to, not including, the "\n" before this "%" line.
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

// Read one file into cleaned record strings; returns {records, encoding, skipped}.
function readFortuneFile(file) {
  const buf = fs.readFileSync(file);
  let encoding;
  if (isUtf8(buf)) encoding = "utf-8";
  else if (!/[\xc2-\xf4][\x80-\xbf]/.test(buf.toString("latin1"))) encoding = "iso-8859-1";
  else encoding = "mixed (invalid UTF-8 records skipped)";
  const records = [];
  let skipped = 0;
  for (const rb of splitRecords(buf)) {
    let text;
    if (encoding === "iso-8859-1") text = rb.toString("latin1");
    else if (isUtf8(rb)) text = rb.toString("utf8");
    else {
      skipped += 1;
      continue;
    }
    records.push(text.replace(ANSI_SGR, ""));
  }
  return { records, encoding, skipped };
}

function cjkShare(file) {
  const text = fs.readFileSync(file).toString("utf8");
  const n = (text.match(CJK) || []).length;
  return text.length ? n / text.length : 0;
}

const topFiles = dataFiles(root);
const zhFiles = topFiles.filter((f) => cjkShare(f) > 0.1).concat(dataFiles(path.join(root, "zh")));
const zhSet = new Set(zhFiles);
const groups = {
  en: topFiles.filter((f) => !zhSet.has(f)),
  de: dataFiles(path.join(root, "de")),
  zh: zhFiles.sort(),
};

fs.mkdirSync(outDir, { recursive: true });
const sources = [];
for (const [lang, files] of Object.entries(groups)) {
  if (files.length === 0) {
    fail(`no ${lang} fortune files found under ${root}; apt-get install -y fortunes fortunes-de fortunes-zh`);
  }
  const candidates = [];
  sources.push(`[${lang}]`);
  for (const file of files) {
    const { records, encoding, skipped } = readFortuneFile(file);
    let used = 0;
    for (const r of records) {
      if (r.trim() === "") continue;
      const bytes = Buffer.byteLength(r, "utf8");
      if (bytes > MAX_RECORD_BYTES) continue;
      candidates.push([r, bytes]);
      used += 1;
    }
    sources.push(`${file}\t${encoding}\trecords=${records.length}\teligible=${used}\tskipped_invalid_utf8=${skipped}`);
  }
  const totalBytes = candidates.reduce((s, c) => s + c[1], 0);
  const k = Math.max(1, Math.ceil(candidates.length / MAX_RECORDS), Math.ceil(totalBytes / MAX_BYTES));
  const out = [];
  let bytes = 0;
  for (let i = 0; i < candidates.length && out.length < MAX_RECORDS; i += k) {
    if (bytes + candidates[i][1] > MAX_BYTES) break;
    out.push(candidates[i][0]);
    bytes += candidates[i][1];
  }
  const file = path.join(outDir, `${lang}.txt`);
  fs.writeFileSync(`${file}.tmp`, out.map((r) => JSON.stringify(r) + "\n").join(""));
  fs.renameSync(`${file}.tmp`, file);
  sources.push(`sample: every ${k}th of ${candidates.length} eligible records -> ${out.length} records, ${bytes} bytes`);
  console.log(`  texts/${lang}.txt: ${out.length} records, ${bytes} bytes (every ${k}th of ${candidates.length})`);
}
fs.writeFileSync(path.join(outDir, "SOURCES.txt"), sources.join("\n") + "\n");
