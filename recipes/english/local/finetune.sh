#!/usr/bin/env bash
# Fine-tuning against training from zero on a small target, the same data and the same training time
# (recipes/english/RESULTS.md, "Fine-tuning"): VCTK p239, a speaker the English base never heard, from its
# 100 adapt_train sentences (adapt_dev chooses, test_vctk is scored), and what the base forgets of its own test sets.
#
#   recipes/english/local/finetune.sh NAME [key=value ...]       one run: data/english/adapt/NAME
#   recipes/english/local/finetune.sh scratch                    (no INIT: the base's architecture from zero)
#   INIT=english-base SECONDS_BUDGET=300 recipes/english/local/finetune.sh lr1e-3 lr=1e-3
#
# Each run trains for SECONDS_BUDGET seconds (time_budget), then decodes adapt_dev and the test sets greedily
# and prints their %WER / %CER. Skips what it has done (.done markers).
set -euo pipefail
here=$(cd "$(dirname "$0")/../../.." && pwd)
asr="$here/.venv/bin/asr"
data=${DATA:-$here/data/english}
name=$1; shift
exp=$data/adapt/$name
init=${INIT:-english-base}
budget=${SECONDS_BUDGET:-300}
mkdir -p "$exp"
if [ "$name" = scratch ]; then start=(); else start=(init_from="$init" init_config=checkpoint); fi
if [ ! -f "$exp/.train.done" ]; then
  [ -f "$exp/stats.json" ] || "$asr" stats --config "$here/recipes/english/conf/cpu.yaml" \
    --manifest "$data/adapt_train.jsonl" --out "$exp/stats.json"
  "$asr" train --config "$here/recipes/english/conf/cpu.yaml" exp_dir="$exp" train_manifest="$data/adapt_train.jsonl" \
    dev_manifest="$data/adapt_dev.jsonl" stats="$exp/stats.json" epochs=200 time_budget="$budget" keep_epochs=0 \
    save_every=0 batch_frames=3000 "${start[@]}" "$@" > "$exp/train.log" 2>&1
  touch "$exp/.train.done"
fi
for set in adapt_dev ${TEST_SETS:-test_vctk test_an4 test_librispeech}; do
  if [ ! -f "$exp/decode_$set/.done" ]; then
    "$asr" decode --model "$exp/best.pt" --manifest "$data/$set.jsonl" --out "$exp/decode_$set" > /dev/null
    touch "$exp/decode_$set/.done"
  fi
  echo "$name $set $("$asr" score --manifest "$data/$set.jsonl" --hyp "$exp/decode_$set/hyp.txt" | tr '\n' ' ')"
done
