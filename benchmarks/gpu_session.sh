#!/usr/bin/env bash
# One short GPU lease, one script: the CUDA path at the paper's sizes, then the toy benchmark at a
# resolution a CPU session cannot afford.
#
#   OUT=/some/folder bash benchmarks/gpu_session.sh          # on a GPU machine (~8 min on an H200)
#   OUT=/tmp/smoke bash benchmarks/gpu_session.sh --quick    # smoke test of this script on a CPU
#
# 1. benchmarks/gpu_step.py: one align step of the ResNet-101 DeepLab-v2 at 4x1280x720 + 4x1024x512,
#    fp32 / bf16 / fp16 (+ scaler) / bf16 channels-last: images/s, peak GPU memory, a bf16-vs-fp32 loss
#    curve (benchmarks/results/gpu_step.json).
# 2. benchmarks/toy_adaptation.py --config configs/toy_256.yaml --sweep, 3 seeds at once: the benchmark
#    toy (256x128), which a CPU session cannot afford (~5 min here). Its data are generated on the CPU
#    while step 1 holds the GPU.
# Needs torch with CUDA, yacs, pillow, tqdm, tensorboard in $PYTHON (default python3); a machine without
# network takes yacs as a wheel (pip install --no-index --target DIR yacs-0.1.8-py3-none-any.whl, then
# PYTHONPATH=DIR). Everything worth keeping lands in $OUT (the per-seed logs and metrics as one .tgz). Each step has its
# own time limit, so a slow step still leaves the others' results.
set -u
OUT=${OUT:?set OUT to the folder for the results}
QUICK=${1:-}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/spcl_gpu_session}
CONFIG=configs/toy_256.yaml
if [ "$QUICK" = "--quick" ]; then CONFIG=configs/toy.yaml; fi
BENCH=(benchmarks/toy_adaptation.py --config "$CONFIG" --seeds 0 1 2 --jobs 3 --sweep --output "$WORK/toy"
       --results "$OUT/toy" $QUICK --opts DATASETS.DATA_DIR "$WORK/data")

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  $PY -c "import torch, yacs; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

# toy data (CPU) in the background: the benchmark's own preparation, no seeds run
$PY "${BENCH[@]}" --prepare > "$WORK.prep.log" 2>&1 &
PREP=$!

if [ "$QUICK" = "--quick" ]; then
  timeout 300 $PY benchmarks/gpu_step.py --device cpu --quick 2>&1 | tee "$OUT/gpu_step.log"
else
  timeout 170 $PY benchmarks/gpu_step.py --variants fp32,bf16,fp16,bf16_cl --warmup 2 --steps 5 \
    --curve-iters 10 --curve-variants bf16 2>&1 | tee "$OUT/gpu_step.log"
fi
cp benchmarks/results/gpu_step*.json "$OUT/" 2>/dev/null

wait $PREP || { echo "toy data preparation failed:"; cat "$WORK.prep.log"; }
timeout "${TOY_LIMIT:-420}" $PY "${BENCH[@]}" 2>&1 | tee "$OUT/toy.log"
# whatever the seeds finished, also after a timeout: cached results, logs, per-stage metrics
(cd "$WORK" && find . -path ./data -prune -o \( -name '*.json' -o -name '*.log' -o -name '*.yaml' \) -print0 |
   tar -czf "$OUT/toy_runs.tgz" --null -T -)
ls -la "$OUT"
