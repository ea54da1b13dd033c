#!/bin/sh
# example_distill_resume: a seed interrupted mid-way (--interrupt-at, checkpoint saved, exit 75)
# and resumed gives every number of the uninterrupted smoke run (example_distill_smoke's JSON),
# bit for bit; so does a seed trained alone (--only-seed) into another folder (--runs) and read
# back from it. Usage: resume_test.sh BLD_DISTILL DATA_DIR SMOKE_JSON WORK_DIR
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
[ $rc -eq 0 ] || exit $rc
# --runs DIR --only-seed 0: the seed trained alone, kept in another folder, then read back from it
"$exe" --preset smoke --cache --data "$work" --runs "$work/kept" --only-seed 0 >"$work/third.log" 2>&1 ||
  { echo "--only-seed run failed"; cat "$work/third.log"; exit 1; }
ls "$work"/kept/runs-*/seed-0.json >/dev/null || { echo "no seed-0.json under --runs"; exit 1; }
grep -q "held-out bits per byte" "$work/third.log" && { echo "--only-seed printed the table"; exit 1; }
"$exe" --preset smoke --cache --data "$work" --runs "$work/kept" --expect "$expect" >"$work/fourth.log" 2>&1
rc=$?
grep -q "seed 0: read from $work/kept/runs-" "$work/fourth.log" || { echo "the kept seed was not read"; cat "$work/fourth.log"; exit 1; }
exit $rc
