#!/usr/bin/env bash
# The three recurrent cells on AN4 at a matched parameter count (about 0.92 M), each trained with
# and without gradient clipping, then decoded greedily on test; `asr compare` writes the table and
# the gradient plots. Same recipe as conf/cpu.yaml otherwise (2 layers, 160-channel front-end).
#
#   bash local/cells.sh [THREADS]      # from recipes/an4; THREADS per run (default 2)
#
# Hidden sizes per direction giving matched parameters: GRU 160 (922 k), LSTM 136 (919 k), RNN 289 (921 k).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
asr=../../.venv/bin/asr
data=../../data/an4
declare -A hidden=([gru]=160 [lstm]=136 [rnn]=289)
runs=()
for clip in 5 0; do
  for cell in rnn lstm gru; do
    n=cells/${cell}_clip${clip}
    make stats train CONFIG=conf/cpu_3x256.yaml N=$n EXTRA="model.cell=$cell model.hidden=${hidden[$cell]} model.conv_channels=160 model.layers=2 clip_norm=$clip threads=$threads"
    exp=$data/exp/$n
    if [ ! -f $exp/decode_test/wer.txt ]; then
      $asr decode --model $exp/best.pt --manifest $data/test.jsonl --out $exp/decode_test
      $asr score --manifest $data/test.jsonl --hyp $exp/decode_test/hyp.txt
    fi
    runs+=($exp)
  done
done
$asr compare "${runs[@]}" --manifest $data/test.jsonl --out $data/exp/cells
