"""Evaluate checkpoints on the target val set (docs/method.md "Evaluation": single scale at INPUT.TEST_SIZE by default).

    python tools/test.py --config configs/gta5_r101.yaml --checkpoint PATH [--flip] [--scales 0.75 1 1.25]
        [--save-color] [--save-labelids] [KEY VALUE …]

PATH is a checkpoint file, or a folder of them: then one row per checkpoint (sorted by iteration) goes
to `results.csv`, skipping files that are not checkpoints. Prints a per-class table and writes
`metrics.json` (and the merged config) into `--output` (default: beside the checkpoint).
"""
from __future__ import annotations

import csv
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, run_main, setup  # noqa: E402


def find_checkpoints(path: str) -> list[tuple[int, str]]:
    """(iteration, path) of every readable checkpoint at `path` (a file or a folder), by iteration."""
    import torch

    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.endswith((".pth", ".pt")))
    found = []
    for f in files:
        try:
            try:  # memory-mapped: reads the iteration without reading every tensor
                data = torch.load(f, map_location="cpu", weights_only=False, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be mapped
                data = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            logging.getLogger("spcl").warning("skipping %s: not a readable checkpoint (%s)", f, e)
            continue
        if not isinstance(data, dict) or "model" not in data:
            logging.getLogger("spcl").warning("skipping %s: no 'model' state in it", f)
            continue
        found.append((int(data.get("iteration", -1)), f))
    if not found:
        hint = ""
        final = os.path.join(path, "checkpoints", "model_final.pth")
        if os.path.isdir(path) and os.path.isfile(final):
            hint = f"; {path} is a stage folder: did you mean {final}?"
        elif os.path.isfile(path) and os.path.basename(path) == "prototypes.pth":
            hint = "; prototypes.pth holds class prototypes, not a model: give a stage's checkpoints/model_final.pth"
        elif not os.path.exists(path):
            hint = " (no such file or folder)"
        raise FileNotFoundError(f"no model checkpoint found at {path}{hint}")
    return sorted(found)


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or folder of checkpoints")
    parser.add_argument("--output", default="", help="folder for metrics.json / results.csv / predictions")
    parser.add_argument("--flip", action="store_true", help="average with the flipped input")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="multi-scale factors")
    parser.add_argument("--save-color", action="store_true", help="write colour predictions")
    parser.add_argument("--save-labelids", action="store_true",
                        help="write Cityscapes labelId PNGs for the official evaluation script")
    args = parser.parse_args(argv)
    ckpt = args.checkpoint
    out_dir = args.output or os.path.join(ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt) or ".", "eval")
    cfg = setup(args, output_dir_override=out_dir)

    from spcl.evaluation import evaluate_checkpoint, format_table
    from spcl.utils import comm
    from spcl.utils.env import write_run_info
    from spcl.utils.io import atomic_write_json

    logger = logging.getLogger("spcl")
    if comm.is_main_process():
        write_run_info(cfg, out_dir)
    scales = args.scales or list(cfg.TEST.SCALES)
    flip = args.flip or cfg.TEST.FLIP
    rows, results = [], {}
    checkpoints = find_checkpoints(ckpt)
    for iteration, path in checkpoints:
        single = len(checkpoints) == 1
        metrics = evaluate_checkpoint(
            cfg, path, scales=scales, flip=flip,
            color_dir=os.path.join(out_dir, "color") if (args.save_color or cfg.TEST.SAVE_COLOR) and single else None,
            labelid_dir=os.path.join(out_dir, "labelIds") if (args.save_labelids or cfg.TEST.SAVE_LABELIDS) and single
            else None, progress=True)
        logger.info("%s (iteration %d):\n%s", path, iteration, format_table(metrics))
        results[path] = {"iteration": iteration, "scales": scales, "flip": flip, **metrics}
        rows.append([iteration, path, metrics["mIoU"], metrics["mAcc"], metrics["aAcc"]] + metrics["IoU"])
    if comm.is_main_process():
        atomic_write_json(results if len(results) > 1 else next(iter(results.values())),
                          os.path.join(out_dir, "metrics.json"))
        if len(rows) > 1:
            names = results[checkpoints[0][1]]["class_names"]
            with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["iteration", "checkpoint", "mIoU", "mAcc", "aAcc"] + list(names))
                w.writerows(rows)
        print(f"results in {out_dir}")


if __name__ == "__main__":
    run_main(main)
