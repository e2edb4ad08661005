#!/usr/bin/env bash
# The LM choice behind recipes/an4/Makefile's LM_ARGS: n-gram order x transcript weight x spelled
# names, each LM tuned on dev for one model; then test decoded for every row (after the choice,
# to see the spread). Results: data/an4/lmgrid/{dev,test}.txt.
#
#   bash local/lm_grid.sh [MODEL]      # from recipes/an4; MODEL defaults to the model it was run for (cpu_3x256.yaml)
set -euo pipefail
cd "$(dirname "$0")/../../.."
model=${1:-data/an4/exp/cpu_3x256/best.pt}
asr=.venv/bin/asr
g=data/an4/lmgrid
mkdir -p $g
grep -E '^[A-Z][a-z]+$' /usr/share/dict/american-english > $g/names.txt
: > $g/dev.txt; : > $g/test.txt
for spell in no yes; do for o in 3 4 5; do for w in 1 3 10; do
  n=$g/o${o}_w${w}_spell${spell}
  args="--order $o --transcript-weight $w --words data/an4/an4.dic"
  [ $spell = yes ] && args="$args --spell-words $g/names.txt"
  $asr lm --manifest data/an4/train.jsonl --out $n $args > /dev/null
  $asr tune --model $model --manifest data/an4/dev.jsonl --lm-dir $n --out $n/decoding.json 2>&1 \
    | tail -1 | sed "s|^|$(basename $n) |; s| -> .*||" | tee -a $g/dev.txt
done; done; done
for n in $g/o*; do
  $asr decode --model $model --manifest data/an4/test.jsonl --out $n/decode_test --decoding $n/decoding.json > /dev/null 2>&1
  echo "$(basename $n) $($asr score --manifest data/an4/test.jsonl --hyp $n/decode_test/hyp.txt | tr '\n' ' ')" | tee -a $g/test.txt
done
