#!/usr/bin/env bash
# The one launcher: a config file, a number of processes, KEY VALUE overrides.
#
#   bash scripts/train.sh CONFIG [NUM_GPUS] [KEY VALUE ...]
#
#   bash scripts/train.sh configs/gta5_r101.yaml 4
#   bash scripts/train.sh configs/ablations/gta5_r101_alpha_0.5.yaml 2 SOLVER.AMP bf16
#   bash scripts/train.sh configs/toy.yaml                      # CPU, one process
#   MAX_RESTARTS=3 bash scripts/train.sh configs/gta5_r101.yaml 4   # restart a failed run up to 3 times
#
# Runs `torchrun --standalone --nproc_per_node NUM_GPUS tools/train.py --config CONFIG KEY VALUE ...`.
# NUM_GPUS (default 1) is the number of processes on this node, one per GPU. It is always torchrun,
# also for one process and on a machine without a GPU (the process group is then gloo on the CPU),
# so every run goes through the same set-up. The second argument is NUM_GPUS only when it is a
# number; otherwise it is the first override key (`train.sh configs/toy.yaml SEED 1`).
# CONFIG and the overrides are passed on unchanged; relative paths (CONFIG, OUTPUT_DIR, ...) are
# relative to the directory you run it from. Run the same command again to resume.
# MAX_RESTARTS=N (environment, default 0) becomes torchrun's --max-restarts=N: after a failure torchrun
# starts every process again, and they resume from the last checkpoint.
# Experiments are config files (configs/*.yaml, configs/ablations/*.yaml), not scripts.
set -euo pipefail

usage="usage: bash $0 CONFIG [NUM_GPUS] [KEY VALUE ...]"
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    echo "$usage" >&2
    exit 2
fi
config=$1
shift
if [[ ! -f "$config" ]]; then
    echo "config file not found: $config" >&2
    echo "$usage" >&2
    exit 2
fi
gpus=1
if [[ $# -ge 1 && "$1" =~ ^[0-9]+$ ]]; then
    gpus=$1
    shift
fi
if [[ "$gpus" -lt 1 ]]; then
    echo "NUM_GPUS must be at least 1, got $gpus" >&2
    exit 2
fi
if (( $# % 2 )); then
    echo "overrides must be KEY VALUE pairs, got an odd number of words: $*" >&2
    echo "$usage" >&2
    exit 2
fi

restarts=()
if [[ -n "${MAX_RESTARTS:-}" ]]; then
    if [[ ! "$MAX_RESTARTS" =~ ^[0-9]+$ ]]; then
        echo "MAX_RESTARTS must be a whole number of restarts (0, 1, ...), got '$MAX_RESTARTS'" >&2
        exit 2
    fi
    restarts=("--max-restarts=$MAX_RESTARTS")
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec torchrun --standalone --nproc_per_node="$gpus" ${restarts[@]+"${restarts[@]}"} \
    "$repo/tools/train.py" --config "$config" "$@"
