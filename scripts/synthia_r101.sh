#!/usr/bin/env bash
# SYNTHIA → Cityscapes, 16 classes, ResNet-101 (paper: 47.2 mIoU-16, 54.4 mIoU-13)
# Whole pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train).
# Usage: bash scripts/synthia_r101.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/synthia_r101}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/synthia_r101.yaml \
    OUTPUT_DIR "$OUT" "$@"
