#!/usr/bin/env bash
# Paper Table 4 (GTA5 → Cityscapes, ResNet-101): warm-up + source contrastive term (paper 44.5)
# Runs only the PIPELINE.STAGES named below, in their own OUTPUT_DIR.
# Usage: bash scripts/gta5_r101_ablation_source_term.sh [NUM_GPUS] [KEY VALUE ...]   (run it again to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
shift || true
OUT=${OUT:-output/gta5_r101_ablation_source_term}
torchrun --standalone --nproc_per_node="$GPUS" tools/train.py --config configs/gta5_r101.yaml \
    OUTPUT_DIR "$OUT" PIPELINE.STAGES "['adv_warmup', 'prototypes', 'align']" LOSS.CONTRAST.TARGET False "$@"
