#!/usr/bin/python3
"""The efficacy experiment's text beyond the fortunes (docs/efficacy_design.md, "Text"): the King
James Bible, one record per chapter, and the Python 3.11 documentation, one record per HTML page
converted to plain text. Debian's Python and its standard library only.

usage: /usr/bin/python3 scripts/efficacy-corpus.py OUT.tsv [--python-doc-bytes N]

Writes OUT.tsv, one record per line: <source>\t<index>\t<hex of the record's UTF-8 bytes>, the
sources in this order:

* kjv: `bible -l100000 Gen1:1-Rev22:21` (packages bible-kjv, bible-kjv-text) prints every
  chapter as a "Book N" line and its verses, one per line ("  <n> <text>"). A record is one
  chapter: its "Book N" line, then its verses as "<n> <text>" lines (1,189 records).
* python-doc: the pages of /usr/share/doc/python3.11/html (package python3.11-doc) in the order
  of their relative paths, minus the generated index pages (genindex*, py-modindex, search) and
  the Sphinx build's own folders (_static, _sources, _images, _downloads). A page's record is
  the text of its main content (the element with role="main"; navigation, headers and footers
  dropped) with html.parser: block elements end a line, whitespace outside <pre> collapses to
  one space, <pre> keeps its text as it is, the "¶" header links are dropped. Blank pages are
  skipped. Pages are taken until their records total at least N bytes (default: all); the
  encoder (scripts/encode-corpus.mjs) makes the final cut at the corpus's size.

Prints the bytes per source.
"""
import html.parser
import os
import subprocess
import sys

HTML_ROOT = "/usr/share/doc/python3.11/html"
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
SKIP_PAGES = ("genindex", "py-modindex", "search")
BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "br",
         "table", "ul", "ol", "dl", "blockquote", "hr", "figure", "caption"}


def fail(msg):
    sys.stderr.write(f"efficacy-corpus: {msg}\n")
    sys.exit(1)


def kjv_records():
    try:
        out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                             capture_output=True, check=True).stdout.decode("utf-8")
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"cannot run `bible` ({e}); apt-get install -y bible-kjv bible-kjv-text")
    records, cur = [], None
    for line in out.split("\n"):
        if line.strip() == "":
            continue
        if line.startswith("  "):  # a verse
            if cur is None:
                fail("a verse before the first chapter line")
            cur.append(line.strip())
        else:  # "Book N"
            if cur:
                records.append("\n".join(cur))
            cur = [line.strip()]
    if cur:
        records.append("\n".join(cur))
    if len(records) != 1189:
        fail(f"expected the 1,189 chapters of the King James Bible, got {len(records)}")
    return records


class MainText(html.parser.HTMLParser):
    """The text of the element with role="main" (see the module comment)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0      # > 0 inside the main element (its nesting depth of that tag)
        self.main_tag = None
        self.pre = 0
        self.skip = 0       # inside <script>, <style> or a header link
        self.lines, self.cur = [], []

    def _end_line(self):
        text = "".join(self.cur)
        if self.pre == 0:
            text = " ".join(text.split())
        if text.strip():
            self.lines.append(text.rstrip())
        self.cur = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth == 0:
            if a.get("role") == "main":
                self.depth, self.main_tag = 1, tag
            return
        if tag == self.main_tag:
            self.depth += 1
        if tag in ("script", "style") or (tag == "a" and "headerlink" in (a.get("class") or "")):
            self.skip += 1
            return
        if tag in BLOCK:
            self._end_line()
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag in ("script", "style") or (tag == "a" and self.skip > 0):
            self.skip = max(0, self.skip - 1)
            return
        if tag == "pre":
            # the <pre>'s own lines
            text = "".join(self.cur)
            self.cur = []
            for line in text.split("\n"):
                if line.strip():
                    self.lines.append(line.rstrip())
            self.pre = max(0, self.pre - 1)
            return
        if tag in BLOCK:
            self._end_line()
        if tag == self.main_tag:
            self.depth -= 1
            if self.depth == 0:
                self._end_line()

    def handle_data(self, data):
        if self.depth > 0 and self.skip == 0:
            self.cur.append(data)


def python_doc_records(budget):
    if not os.path.isdir(HTML_ROOT):
        fail(f"{HTML_ROOT} not found; apt-get install -y python3.11-doc")
    pages = []
    for d, dirs, files in os.walk(HTML_ROOT):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), HTML_ROOT)
            if f.endswith(".html") and not os.path.basename(rel).startswith(SKIP_PAGES):
                pages.append(rel)
    pages.sort()
    records, total = [], 0
    for rel in pages:
        if budget is not None and total >= budget:
            break
        p = MainText()
        with open(os.path.join(HTML_ROOT, rel), encoding="utf-8") as f:
            p.feed(f.read())
        p.close()
        p._end_line()
        text = "\n".join(p.lines).strip("\n")
        if not text.strip():
            continue
        records.append(text)
        total += len(text.encode("utf-8"))
    return records


def main():
    args = sys.argv[1:]
    if not args:
        fail("usage: efficacy-corpus.py OUT.tsv [--python-doc-bytes N]")
    out, budget = args[0], None
    if "--python-doc-bytes" in args:
        budget = int(args[args.index("--python-doc-bytes") + 1])
    sources = [("kjv", kjv_records()), ("python-doc", python_doc_records(budget))]
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        for name, recs in sources:
            for i, r in enumerate(recs):
                f.write(f"{name}\t{i}\t{r.encode('utf-8').hex()}\n")
    os.replace(tmp, out)
    for name, recs in sources:
        print(f"efficacy-corpus: {name}: {len(recs)} records, {sum(len(r.encode('utf-8')) for r in recs)} bytes")


if __name__ == "__main__":
    main()
