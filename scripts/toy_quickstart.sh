#!/usr/bin/env bash
# The quick start on the shipped generated dataset: whole pipeline on one CPU process.
# Usage: bash scripts/toy_quickstart.sh [KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
python tools/train.py --config configs/toy.yaml OUTPUT_DIR output/toy "$@"
