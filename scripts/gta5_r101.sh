#!/usr/bin/env bash
# GTA5 → Cityscapes, DeepLab-v2 ResNet-101 (paper: 52.1 mIoU, tail 36.7)
# Whole pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train).
# Usage: bash scripts/gta5_r101.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/gta5_r101}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/gta5_r101.yaml \
    OUTPUT_DIR "$OUT" "$@"
