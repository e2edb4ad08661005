#!/usr/bin/env bash
# One lent-GPU session, as one command (run from the repository root on the GPU machine):
#
#   bash recipes/an4/local/gpu_session.sh smoke            # ~1 min: every CUDA path once
#   bash recipes/an4/local/gpu_session.sh full 380         # bench + gpu.yaml recipe in 380 s of training
#   bash recipes/an4/local/gpu_session.sh bench            # ~2 min: the benchmark + one training epoch
#   bash recipes/an4/local/gpu_session.sh search 420       # conf/search.txt's runs at once, 420 s of training
#   bash recipes/an4/local/gpu_session.sh serve            # ~5 min: asr bench serve on the GPU, 1 / 2 workers, 16 / 64 clients
#
# Expects .whl/ (soundfile, cffi, pycparser, jiwer, rapidfuzz wheels for the image's Python; for serve also
# starlette, uvicorn, python-multipart, httptools, sniffio, websockets) and .gpu/an4 (AN4 as FLAC, from
# local/an4_flac.py pack) or, for serve, .gpu/serve (best.pt and `an4_flac.py manifest data/an4/test.jsonl
# .gpu/serve`) beside the code; writes logs to $OUT.
set -u
mode=${1:-smoke}; budget=${2:-380}
X=${X:-}; DEV=${DEV:-cuda}   # dry runs elsewhere: X="model.hidden=32 ..." DEV=cpu
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
ASR="python3 -m asr.cli"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, torchaudio, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchaudio', torchaudio.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())"
nproc
if [ "$mode" = serve ]; then
  # one and two GPU model workers (two: the default): one request at a time against dynamic batching, in turns
  for w in 1 2; do
    for c in 16 64; do
      $ASR bench serve --model .gpu/serve/best.pt --manifest .gpu/serve/test.jsonl --device $DEV --clients $c \
        --max-batch $c --model-workers $w --seconds ${SERVE_SECONDS:-20} --out $OUT/serve_gpu_w${w}_c$c.json 2>&1 \
        | tee -a $OUT/serve.log
      el "serve, $w workers, $c clients"
    done
  done
  exit 0
fi
[ -d /tmp/an4/an4 ] || python3 recipes/an4/local/an4_flac.py unpack .gpu/an4 /tmp/an4/an4
export AN4_DIR=/tmp/an4/an4
DATA=/tmp/data/an4
echo "make: $(command -v make || echo missing)"
el "setup done"

# the recipe's stages, as recipes/an4/Makefile runs them (without needing make on the machine)
prepare_stats() {  # $1: experiment name
  [ -f $DATA/train.jsonl ] || $ASR prepare an4 --out $DATA || return 1
  mkdir -p $DATA/exp/$1
  [ -f $DATA/exp/$1/stats.json ] || $ASR stats --config recipes/an4/conf/gpu.yaml --manifest $DATA/train.jsonl \
    --out $DATA/exp/$1/stats.json
}
train() {  # $1: experiment name, then overrides
  local n=$1; shift
  $ASR train --config recipes/an4/conf/gpu.yaml exp_dir=$DATA/exp/$n train_manifest=$DATA/train.jsonl \
    dev_manifest=$DATA/dev.jsonl stats=$DATA/exp/gpu/stats.json "$@" $X
}
decode_score() {  # $1: experiment name
  $ASR decode --model $DATA/exp/$1/best.pt --manifest $DATA/test.jsonl --out $DATA/exp/$1/decode_test --device $DEV \
    && $ASR score --manifest $DATA/test.jsonl --hyp $DATA/exp/$1/decode_test/hyp.txt
}

if [ "$mode" = smoke ]; then
  prepare_stats gpu || exit 1
  el "prepare + stats"
  train smoke epochs=2 save_every=20 2>&1 | tee $OUT/smoke_train.log
  el "2 epochs"
  train smoke epochs=3 precision=fp16 resume=true 2>&1 | tail -3
  el "resume + fp16 epoch"
  decode_score smoke
  el "decode on cuda"
  $ASR bench train --batch-sizes 32,256 --steps 2 --warmup 1 --workdir /tmp num_workers=12 \
    model.hidden=800 model.layers=5 $X 2>&1 | tee $OUT/smoke_bench.log
  el "bench"
  exit 0
fi

if [ "$mode" = search ]; then
  # every run of conf/search.txt at once; epochs from a 3-epoch probe of all of them together
  # $OUT gets back 8 files at most (16 MiB each, 64 MiB in all): logs go back as one archive, the
  # weights (fp16) of the 3 best runs by dev WER as files, the rest stays on the machine.
  prepare_stats gpu || exit 1
  S=/tmp/search; mkdir -p $S
  mapfile -t runs < <(grep -v '^#' recipes/an4/conf/search.txt | grep .)
  for line in "${runs[@]}"; do
    set -- $line; n=$1; shift; mkdir -p $S/$n
    train probe_$n epochs=3 "$@" > $S/$n/probe.log 2>&1 &
  done
  wait
  el "probes"
  for line in "${runs[@]}"; do
    set -- $line; n=$1; shift
    e=$(python3 -c "
import json; r=[json.loads(l) for l in open('$DATA/exp/probe_$n/train_log.jsonl')]
print(min(400, max(5, int($budget / (r[2]['elapsed'] - r[1]['elapsed'])))))" 2>/dev/null || echo 0)
    echo "$n: epochs=$e"
    [ "$e" -gt 0 ] || { tail -5 $S/$n/probe.log; continue; }
    timeout $(( budget + 120 )) bash -c "$(declare -f train); ASR='$ASR' DATA=$DATA X='$X' train $n epochs=$e $*" \
      > $S/$n/train.log 2>&1 &
  done
  wait
  el "search runs"
  for line in "${runs[@]}"; do
    set -- $line; n=$1
    [ -f $DATA/exp/$n/best.pt ] || continue
    decode_score $n > $S/$n/score.log 2>&1
    cp $DATA/exp/$n/train_log.jsonl $DATA/exp/$n/config.json $S/$n/ 2>/dev/null
    # the weights in fp16 (loading restores fp32), to stay under the 16 MB a returned file may have
    python3 -c "
import torch; c = torch.load('$DATA/exp/$n/best.pt', weights_only=True)
c = {k: c[k] for k in ('model_config', 'feature_config', 'stats', 'vocab', 'model', 'train_config', 'epoch', 'dev_wer', 'dev_cer') if k in c}
c['model'] = {k: v.half() if v.is_floating_point() else v for k, v in c['model'].items()}
torch.save(c, '$S/$n/best_fp16.pt')"
    echo "$n $(grep -h "%WER" $S/$n/score.log) $(tail -1 $S/$n/train.log)" | tee -a $OUT/summary.txt
  done
  (cd $S && tar czf $OUT/search_logs.tgz */*.log */*.json*)
  for n in $(python3 -c "
import json, pathlib
runs = [(min(json.loads(l)['dev_wer'] for l in p.open()), p.parent.name) for p in pathlib.Path('$S').glob('*/train_log.jsonl')]
print(' '.join(n for _, n in sorted(runs)[:3]))"); do
    cp $S/$n/best_fp16.pt $OUT/$n.pt
  done
  ls -la $OUT
  el "all done"
  exit 0
fi

# full: the benchmark alone on the GPU first, then the recipe
$ASR bench train --batch-sizes 32,64,128,256 --steps 5 --warmup 2 --workdir /tmp --out $OUT/bench_gru5x800.json \
  num_workers=12 model.hidden=800 model.layers=5 $X 2>&1 | tee $OUT/bench.log
el "bench 5x800"
$ASR bench train --batch-sizes 64,256 --seconds 5,10 --steps 5 --warmup 2 --workdir /tmp --out $OUT/bench_gru3x320.json \
  num_workers=12 model.hidden=320 model.layers=3 $X 2>&1 | tee -a $OUT/bench.log
el "bench 3x320"
if [ "$mode" = bench ]; then
  prepare_stats gpu && train check epochs=1 && el "one epoch of gpu.yaml"
  exit 0
fi
prepare_stats gpu || exit 1
# probe: seconds per epoch (training + dev pass) at this config, from epochs 2-3 of a short run
train probe epochs=3 | tee $OUT/probe.log
per_epoch=$(python3 -c "
import json; r=[json.loads(l) for l in open('$DATA/exp/probe/train_log.jsonl')]
print(r[2]['elapsed'] - r[1]['elapsed'])" || echo 3.0)
epochs=$(python3 -c "print(min(300, int($budget / $per_epoch)))")
el "probe: ${per_epoch}s per epoch incl. dev -> epochs=$epochs"
tstart=$(date +%s)
timeout $(( budget + 90 )) bash -c "$(declare -f train); ASR='$ASR' DATA=$DATA X='$X' train gpu epochs=$epochs" > $OUT/train.log 2>&1
echo "train exit $? in $(( $(date +%s) - tstart ))s (epochs=$epochs)"
el "train"
decode_score gpu 2>&1 | tee $OUT/score.log
cp $DATA/exp/gpu/train_log.jsonl $OUT/ 2>/dev/null; cp $DATA/exp/gpu/decode_test/wer.txt $OUT/ 2>/dev/null
tail -4 $OUT/train.log
grep -h "fastest\|^ *[0-9]" $OUT/bench.log
el "all done"
