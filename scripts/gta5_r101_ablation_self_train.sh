#!/usr/bin/env bash
# Paper Table 4 (GTA5 → Cityscapes, ResNet-101): warm-up + self-training, no contrastive terms (paper 43.9)
# Runs only the PIPELINE.STAGES named below, in their own OUTPUT_DIR.
# Usage: bash scripts/gta5_r101_ablation_self_train.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/gta5_r101_ablation_self_train}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/gta5_r101.yaml \
    OUTPUT_DIR "$OUT" PIPELINE.STAGES "['adv_warmup', 'pseudo_labels', 'self_train']" "$@"
