#!/usr/bin/env bash
# Synscapes → Cityscapes, ResNet-101 (paper: 57.1 mIoU)
# Whole pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train).
# Usage: bash scripts/synscapes_r101.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/synscapes_r101}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/synscapes_r101.yaml \
    OUTPUT_DIR "$OUT" "$@"
