#!/bin/sh
# example_distill_resume: a seed interrupted mid-way (--interrupt-at, checkpoint saved, exit 75)
# and resumed gives every number of the uninterrupted smoke run (example_distill_smoke's JSON),
# bit for bit. Usage: resume_test.sh BLD_DISTILL DATA_DIR SMOKE_JSON WORK_DIR
set -u
exe=$1 data=$2 expect=$3 work=$4
[ -f "$data/distill/records.tsv" ] && [ -f "$expect" ] || exit 77
rm -rf "$work" && mkdir -p "$work/distill" || exit 1
# a private data folder: the shared records and tokenizers, its own teacher and checkpoints
ln -s "$data/tokenizers" "$work/tokenizers" || exit 1
for f in records.tsv MANIFEST.txt; do ln -s "$data/distill/$f" "$work/distill/$f" || exit 1; done
"$exe" --preset smoke --cache --data "$work" --interrupt-at 13 >"$work/first.log" 2>&1
rc=$?
if [ $rc -ne 75 ]; then echo "first run: exit $rc, expected 75"; cat "$work/first.log"; exit 1; fi
ls "$work"/distill/runs-*/seed-0.checkpoint/state.json >/dev/null || exit 1
"$exe" --preset smoke --cache --data "$work" --expect "$expect" >"$work/second.log" 2>&1
rc=$?
grep -E "resumed|check" "$work/second.log"
grep -q "resumed at step 13" "$work/second.log" || { echo "the second run did not resume"; exit 1; }
exit $rc
