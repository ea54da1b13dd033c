#!/usr/bin/env python3
"""Keeps include/bld layered: the folders of include/bld form a list, lowest first (the tree in
docs/03_api.md); a header may include headers of its own folder and of folders earlier in the
list, never later ones. The umbrellas at include/bld/ (bld.hpp, cpu.hpp, cuda.cuh) are on top.
Also checks that docs/03_api.md's tree names exactly these folders, in this order.
Exit status 1 with the offending includes otherwise.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
inc = root / "include"
doc = (root / "docs" / "03_api.md").read_text(encoding="utf-8")

# The folder lines of the tree block: "  name/   description".
block = doc.split("```text\ninclude/bld/\n", 1)[1].split("```", 1)[0]
order = [m.group(1).rstrip("/") for m in re.finditer(r"^  ([a-z_/]+/)\s", block, re.M)]
rank = {f: i for i, f in enumerate(order)}
errors = []

folders = sorted({str(p.parent.relative_to(inc / "bld")) for p in (inc / "bld").rglob("*") if p.is_file()} - {"."})
if sorted(order) != folders:
    errors.append(f"docs/03_api.md's tree lists {order}, include/bld has {folders}")

checked = 0
for p in sorted((inc / "bld").rglob("*")):
    if not p.is_file() or p.suffix not in (".hpp", ".cuh", ".inc"):
        continue
    here = str(p.parent.relative_to(inc / "bld"))
    mine = len(order) if here == "." else rank.get(here)
    if mine is None:
        continue  # reported above
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r'\s*#\s*include\s+[<"]bld/([^>"]+)[>"]', line)
        if not m:
            continue
        checked += 1
        there = str(pathlib.PurePosixPath(m.group(1)).parent)
        if there == "." or there == here:
            if there == "." and here != ".":
                errors.append(f"{p.relative_to(root)}:{n}: includes the umbrella bld/{m.group(1)}")
            continue
        if there not in rank or rank[there] > mine:
            errors.append(f"{p.relative_to(root)}:{n}: {here}/ includes bld/{m.group(1)} ({there}/ is a higher layer)")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"layers: {checked} includes in include/bld point down the {len(order)} folders of docs/03_api.md")
