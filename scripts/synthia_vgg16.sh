#!/usr/bin/env bash
# SYNTHIA → Cityscapes, 16 classes, VGG-16 (paper: 40.5 mIoU-16, 48.3 mIoU-13)
# Whole pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train).
# Usage: bash scripts/synthia_vgg16.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/synthia_vgg16}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/synthia_vgg16.yaml \
    OUTPUT_DIR "$OUT" "$@"
