#!/usr/bin/env bash
# One short GPU lease, one script: the test suite with CUDA present, the CUDA path at the paper's sizes,
# then the toy benchmark at a resolution a CPU session cannot afford.
#
#   OUT=/some/folder bash benchmarks/gpu_session.sh          # on a GPU machine (~8 min on an H200)
#   OUT=/tmp/smoke bash benchmarks/gpu_session.sh --quick    # smoke test of this script on a CPU
#
# 1. python -m pytest tests, with the GPU visible (code that picks its device picks cuda), when
#    TESTS=1 (the default, 0 with --quick); pytest-xdist spreads it over the cores when installed (tests.log).
# 2. benchmarks/gpu_step.py: one align step of the ResNet-101 DeepLab-v2 at 4x1280x720 + 4x1024x512 for
#    the variants in STEP_VARIANTS (default fp32,bf16,fp16,bf16_cl): images/s, peak GPU memory, a
#    bf16-vs-fp32 loss curve (benchmarks/results/gpu_step.json).
# 3. benchmarks/toy_adaptation.py --config configs/toy_256.yaml on the seeds in SEEDS (default 0 1 2),
#    all at once, with the tau sweep when SWEEP=1 (default); with DRAW1_SEEDS set, the same benchmark on
#    the toy's second draw (DATASETS.TOY.SEED 1) runs alongside on those seeds. The toy data are
#    generated on the CPU while steps 1-2 run.
# 4. with STARTS=1 (default 0): benchmarks/self_train_start.py on the same seeds and draws, from the
#    benchmark's own runs (only the pseudo labels and self-training from align lambda = 0 and from warm-up
#    are new): what self-training adds from each start (STARTS_LIMIT seconds, default 240).
# Needs torch with CUDA, yacs, pillow, tqdm, tensorboard in $PYTHON (default python3). A machine without
# network takes yacs from a wheel in .whl/ (pip download yacs==0.1.8 -d .whl here; carry .whl). Everything
# worth keeping lands in $OUT/session.tgz (logs, tables, per-seed metrics); the tables and gpu_step.json
# are also copied beside it (a lent machine hands back only a few files). Each step has its own time limit
# (TEST_LIMIT, STEP_LIMIT, TOY_LIMIT seconds), so a slow step still leaves the others' results.
set -u
OUT=${OUT:?set OUT to the folder for the results}
QUICK=${1:-}
cd "$(dirname "$0")/.."
FINAL=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/spcl_gpu_session}
OUT=$WORK/results  # gathered here, packed into $FINAL at the end
mkdir -p "$OUT"
SEEDS=${SEEDS:-0 1 2}
DRAW1_SEEDS=${DRAW1_SEEDS:-}
SWEEP=${SWEEP:-1}
CONFIG=configs/toy_256.yaml
if [ "$QUICK" = "--quick" ]; then CONFIG=configs/toy.yaml; fi
if ! $PY -c "import yacs" 2>/dev/null && ls .whl/yacs-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target "$WORK.site" .whl/yacs-*.whl && export PYTHONPATH=$PYTHONPATH:$WORK.site
fi
bench() {  # bench NAME SEEDS... [-- EXTRA_OPTS...]: sets BENCH, the toy benchmark's command for one draw
  local name=$1; shift
  local seeds=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  BENCH=(benchmarks/toy_adaptation.py --config "$CONFIG" --seeds "${seeds[@]}" --jobs "${#seeds[@]}"
         --output "$WORK/$name" --results "$OUT/$name" $QUICK)
  [ "$SWEEP" = 1 ] && BENCH+=(--sweep)
  BENCH+=(--opts DATASETS.DATA_DIR "$WORK/data_$name" "$@")
  START=(benchmarks/self_train_start.py --config "$CONFIG" --seeds "${seeds[@]}" --jobs "${#seeds[@]}"
         --output "$WORK/$name" --results "$OUT/$name" $QUICK --opts DATASETS.DATA_DIR "$WORK/data_$name" "$@")
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  $PY -c "import torch, yacs; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

# toy data (CPU) in the background: the benchmark's own preparation, no seeds run
bench toy $SEEDS; DRAW0=("${BENCH[@]}"); START0=("${START[@]}")
$PY "${DRAW0[@]}" --prepare > "$WORK.prep0.log" 2>&1 &
PREP0=$!
if [ -n "$DRAW1_SEEDS" ]; then
  bench toy_draw1 $DRAW1_SEEDS -- DATASETS.TOY.SEED 1; DRAW1=("${BENCH[@]}"); START1=("${START[@]}")
  $PY "${DRAW1[@]}" --prepare > "$WORK.prep1.log" 2>&1 &
  PREP1=$!
fi

TESTS=${TESTS:-$([ "$QUICK" = "--quick" ] && echo 0 || echo 1)}
if [ "$TESTS" = 1 ]; then
  XDIST=(); $PY -c "import xdist" 2>/dev/null && XDIST=(-n "${TEST_WORKERS:-8}")
  timeout "${TEST_LIMIT:-200}" $PY -m pytest -q --no-header -p no:cacheprovider "${XDIST[@]}" tests \
    > "$OUT/tests.log" 2>&1
  echo "tests: exit $? ($(tail -n 1 "$OUT/tests.log"))"
fi

if [ "$QUICK" = "--quick" ]; then
  timeout 300 $PY benchmarks/gpu_step.py --device cpu --quick 2>&1 | tee "$OUT/gpu_step.log"
else
  timeout "${STEP_LIMIT:-170}" $PY benchmarks/gpu_step.py --variants "${STEP_VARIANTS:-fp32,bf16,fp16,bf16_cl}" \
    --warmup 2 --steps 5 --curve-iters 10 --curve-variants bf16 2>&1 | tee "$OUT/gpu_step.log"
fi
cp benchmarks/results/gpu_step*.json "$OUT/" 2>/dev/null

wait $PREP0 || { echo "toy data preparation failed:"; cat "$WORK.prep0.log"; }
timeout "${TOY_LIMIT:-420}" $PY "${DRAW0[@]}" > "$OUT/toy.log" 2>&1 &
RUN0=$!
if [ -n "$DRAW1_SEEDS" ]; then
  wait $PREP1 || { echo "toy data preparation (draw 1) failed:"; cat "$WORK.prep1.log"; }
  timeout "${TOY_LIMIT:-420}" $PY "${DRAW1[@]}" > "$OUT/toy_draw1.log" 2>&1 &
  RUN1=$!
  wait $RUN1
fi
wait $RUN0
tail -n 40 "$OUT/toy.log"
if [ "${STARTS:-0}" = 1 ]; then
  timeout "${STARTS_LIMIT:-240}" $PY "${START0[@]}" > "$OUT/starts.log" 2>&1 &
  ST0=$!
  if [ -n "$DRAW1_SEEDS" ]; then
    timeout "${STARTS_LIMIT:-240}" $PY "${START1[@]}" > "$OUT/starts_draw1.log" 2>&1 &
    wait $!
  fi
  wait $ST0
  tail -n 20 "$OUT"/starts*.log
fi
# whatever the seeds finished, also after a timeout: cached results, logs, per-stage metrics
for name in toy toy_draw1; do
  [ -d "$WORK/$name" ] || continue
  (cd "$WORK/$name" && find . \( -name '*.json' -o -name '*.log' -o -name '*.yaml' \) -print0 |
     tar -czf "$OUT/${name}_runs.tgz" --null -T -)
  cp "$OUT/$name/toy_adaptation.md" "$FINAL/${name}_adaptation.md" 2>/dev/null
  cp "$OUT/$name/self_train_start.md" "$FINAL/${name}_self_train_start.md" 2>/dev/null
done
cp "$OUT"/gpu_step*.json "$FINAL/" 2>/dev/null
tar -czf "$FINAL/session.tgz" -C "$OUT" .
ls -la "$FINAL"
