#!/usr/bin/env python3
"""Keeps the docs from rotting: every fenced code block in docs/*.md must be compiled or run by CI.

A block is accepted when the line before it is one of
  <!-- example: PATH#TAG -->   the block equals the region of PATH between the markers
                               `[doc:TAG]` and `[/doc:TAG]` (comment lines, any language),
                               dedented; PATH is built and run by the test suite;
  <!-- ci: SCRIPT -->          the block's commands are run by that CI script or CMake file
                               (each command's repository script must appear in it), which
                               is named so a reader can check it.
Blocks fenced as ```text (program output, formulas) are not code and need no marker.
Exit status 1 with a list of offending blocks otherwise.
"""
import pathlib
import re
import sys
import textwrap

root = pathlib.Path(__file__).resolve().parent.parent
errors = []
checked = 0


def region(path, tag):
    text = (root / path).read_text(encoding="utf-8").splitlines()
    start = [i for i, l in enumerate(text) if l.strip().endswith(f"[doc:{tag}]")]
    end = [i for i, l in enumerate(text) if l.strip().endswith(f"[/doc:{tag}]")]
    if len(start) != 1 or len(end) != 1 or end[0] <= start[0]:
        return None
    return textwrap.dedent("\n".join(text[start[0] + 1:end[0]])).strip("\n")


for md in sorted((root / "docs").glob("*.md")):
    lines = md.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, j = m.group(1), i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        body = "\n".join(lines[i + 1:j]).strip("\n")
        where = f"{md.relative_to(root)}:{i + 1}"
        marker = lines[i - 1].strip() if i > 0 else ""
        if lang == "text":
            pass
        elif (e := re.match(r"<!-- example: (\S+)#(\S+) -->", marker)):
            want = region(e.group(1), e.group(2))
            if want is None:
                errors.append(f"{where}: no single [doc:{e.group(2)}] region in {e.group(1)}")
            elif want != body:
                errors.append(f"{where}: block differs from {e.group(1)}#{e.group(2)}")
            checked += 1
        elif (c := re.match(r"<!-- ci: (\S+) -->", marker)):
            script = (root / c.group(1))
            if not script.exists():
                errors.append(f"{where}: CI script {c.group(1)} does not exist")
            else:
                text = script.read_text(encoding="utf-8")
                # Each command's script (the first argument naming a file of the repository, or
                # the whole command) must be what the CI script runs.
                for cmd in body.splitlines():
                    cmd = cmd.split("#")[0].strip()
                    if not cmd:
                        continue
                    files = [t for t in cmd.split() if (root / t).is_file()]
                    key = files[0] if files else cmd
                    if key not in text:
                        errors.append(f"{where}: `{cmd}` is not run by {c.group(1)}")
            checked += 1
        else:
            errors.append(f"{where}: ```{lang} block without an <!-- example: ... --> or <!-- ci: ... --> marker")
        i = j + 1

# The error catalogue and its test list the same entries.
cat = root / "docs" / "errors.md"
if cat.exists():
    doc_ids = set(re.findall(r"^\| (E\d\d) \|", cat.read_text(encoding="utf-8"), re.M))
    test_ids = set(re.findall(r'\{"(E\d\d)"', (root / "tests" / "test_error_catalogue.cpp").read_text(encoding="utf-8")))
    for missing in sorted(doc_ids ^ test_ids):
        errors.append(f"docs/errors.md: entry {missing} is in only one of the catalogue and tests/test_error_catalogue.cpp")
    if len(doc_ids) < 20:
        errors.append("docs/errors.md: fewer than 20 classes of bad input")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"docs: {checked} code blocks checked against examples/ and CI scripts")
