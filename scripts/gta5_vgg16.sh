#!/usr/bin/env bash
# GTA5 → Cityscapes, DeepLab-LargeFOV VGG-16 (paper: 44.8 mIoU)
# Whole pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train).
# Usage: bash scripts/gta5_vgg16.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/gta5_vgg16}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/gta5_vgg16.yaml \
    OUTPUT_DIR "$OUT" "$@"
