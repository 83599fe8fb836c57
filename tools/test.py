"""Evaluate checkpoints on the target val set (docs/method.md "Evaluation": single scale at INPUT.TEST_SIZE by default).

    python tools/test.py --config configs/gta5_r101.yaml --checkpoint PATH [--flip] [--scales 0.75 1 1.25]
        [--sliding] [--save-color] [--save-labelids] [--format-only] [--output DIR] [KEY VALUE …]

PATH is a checkpoint file, or a folder of them: then one row per checkpoint (sorted by iteration) goes
to `results.csv` (mIoU, mAcc, aAcc, mIoU_tail or mIoU_13, per-class IoU), skipping files that are
not checkpoints. Prints a per-class table and writes `metrics.json` (and the merged config) into
`--output` (default: a new folder `eval_<YYYYmmdd-HHMMSS>` beside the checkpoint, or inside the
folder of checkpoints; never an earlier evaluation's folder).

Predictions (one checkpoint): `labelIds/<stem>_labelIds.png` (Cityscapes labelIds, `stem` =
`<city>_<seq>_<frame>` for Cityscapes) and `color/<stem>_color.png`, `color/<stem>_overlay.png`,
`color/legend.png`. `--format-only` writes the labelId PNGs of DATASETS.TEST at each image's own size
without reading labels or computing metrics (e.g. DATASETS.TEST cityscapes_test): zip `labelIds/` for
the Cityscapes test server. `--sliding` (TEST.SLIDING) predicts with sliding windows TEST.WINDOW /
TEST.STRIDE over the resized image.
"""
from __future__ import annotations

import csv
import glob
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import UsageError, config_parser, refuse_a_run_folder, run_main, scale_factor, setup  # noqa: E402
from spcl.utils.io import where_read  # noqa: E402


def _stage_index(folder: str) -> int:
    """The position of a pipeline stage folder `<i>_<stage>` (-1 for another name, and for a stage folder
    set aside as `<i>_<stage>.stale-<time>`)."""
    head = folder.split("_", 1)[0]
    return int(head) if head.isdigit() and ".stale-" not in folder else -1


def find_checkpoints(path: str) -> list[tuple[int, str]]:
    """(iteration, path) of every readable checkpoint at `path` (a file or a folder), by iteration: ours,
    the authors' released ones, or a segmentor state dict (iteration -1 where the file has none)."""
    from spcl.modeling.weights import not_a_model, weights_kind
    from spcl.utils.safe_load import UntrustedCheckpointError, load_checkpoint

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}{where_read(path)} "
                                "(give a checkpoint file, or a folder of them)")
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.endswith((".pth", ".pt")))
    found = []
    for f in files:
        try:  # memory-mapped: reads the iteration without reading every tensor
            data = load_checkpoint(f, mmap=True)
        except UntrustedCheckpointError:  # refused for safety: said, never skipped silently
            raise
        except Exception as e:  # noqa: BLE001
            if f == path:  # the one file given: its reason is the error
                raise IOError(f"cannot read checkpoint {path}: {e}") from e
            logging.getLogger("spcl").warning("skipping %s: not a readable checkpoint (%s)", f, e)
            continue
        kind = weights_kind(data)
        if kind not in ("checkpoint", "released"):
            why = not_a_model(kind) + {"prototypes": ", not a model", "imagenet": ", not a trained model"}.get(kind, "")
            if f == path:  # the one file given: its reason is the error
                raise ValueError(f"{path} holds {why}: give a trained model, e.g. a stage's "
                                 "checkpoints/model_final.pth")
            logging.getLogger("spcl").warning("skipping %s: it holds %s", f, why)
            continue
        iteration = data.get("iteration", -1)
        found.append((iteration if isinstance(iteration, int) else -1, f))
    if not found:
        hint = ""
        final = os.path.join(path, "checkpoints", "model_final.pth")
        stages = sorted(glob.glob(os.path.join(path, "*", "checkpoints", "model_final.pth")),
                        key=lambda f: _stage_index(os.path.basename(os.path.dirname(os.path.dirname(f)))))
        if os.path.isdir(path) and os.path.isfile(final):
            hint = f"; {path} is a stage folder: did you mean {final}?"
        elif os.path.isdir(path) and stages:
            hint = f"; {path} is a run folder: give one stage's checkpoint, e.g. the last stage's {stages[-1]}"
        raise FileNotFoundError(f"no model checkpoint found at {path}{hint}")
    return sorted(found)


def write_results(out_dir: str, results: dict, rows: list, extra: list, several: bool = False) -> None:
    """`metrics.json` (one checkpoint's metrics, or {path: metrics}) and, for `several` checkpoints,
    `results.csv` (a row each), both atomically; called after each checkpoint, so with `several` the files
    take that form from the first one on (an error at the second keeps the first, named)."""
    from spcl.utils.io import atomic_write, atomic_write_json

    atomic_write_json(results if several or len(results) > 1 else next(iter(results.values())),
                      os.path.join(out_dir, "metrics.json"))
    if rows and (several or len(rows) > 1):
        names = next(iter(results.values()))["class_names"]

        def write(f):
            w = csv.writer(f)
            w.writerow(["iteration", "checkpoint", "mIoU", "mAcc", "aAcc"] + extra + list(names))
            w.writerows(rows)
        atomic_write(os.path.join(out_dir, "results.csv"), write, binary=False, what="results")


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or folder of checkpoints")
    parser.add_argument("--output", default="",
                        help="folder for metrics.json / results.csv / predictions (default: a new eval_<time> "
                             "folder beside the checkpoint)")
    parser.add_argument("--flip", action="store_true", help="average with the flipped input")
    parser.add_argument("--scales", type=scale_factor, nargs="+", default=None, help="multi-scale factors")
    parser.add_argument("--sliding", action="store_true",
                        help="sliding-window inference (TEST.WINDOW, TEST.STRIDE; same as TEST.SLIDING True)")
    parser.add_argument("--save-color", action="store_true",
                        help="write colour predictions, overlays and a legend into color/")
    parser.add_argument("--save-labelids", action="store_true",
                        help="write Cityscapes labelId PNGs into labelIds/ (official evaluation script)")
    parser.add_argument("--format-only", action="store_true",
                        help="only write labelId PNGs at each image's size (no labels read, no metrics): the "
                             "Cityscapes test-server format, e.g. with DATASETS.TEST cityscapes_test")
    parser.add_argument("--bn-stats-from", default="", metavar="DATASET",
                        help="re-estimate the BatchNorm running statistics on this dataset's images (no labels "
                             "read) before testing, e.g. cityscapes_train: AdaBN, the control for how much of a "
                             "gain is normalisation alone")
    args = parser.parse_args(argv)
    ckpt = args.checkpoint

    from spcl.engine import init_distributed
    from spcl.evaluation import unique_output_dir

    checkpoints = find_checkpoints(ckpt)
    one_set = [flag for flag, on in (("--format-only", args.format_only), ("--save-color", args.save_color),
                                     ("--save-labelids", args.save_labelids)) if on]
    if one_set and len(checkpoints) > 1:  # --save-color used to be dropped without a word
        raise UsageError(f"{one_set[0]} writes one set of predictions: give one checkpoint file, not the "
                         f"{len(checkpoints)} checkpoints of {ckpt}")
    init_distributed()
    if args.output:
        refuse_a_run_folder(args.output, "--output")
    out_dir = args.output or unique_output_dir(ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt) or ".", "eval")
    from spcl.utils.run_lock import run_lock

    with run_lock(out_dir, "--output"):  # two tests into one folder would mix their results and predictions
        evaluate_into(args, checkpoints, out_dir)


def evaluate_into(args, checkpoints: list, out_dir: str) -> None:
    """Evaluate `checkpoints` (find_checkpoints' (iteration, path) pairs) as `args` ask, writing the config,
    metrics.json, results.csv and any predictions into `out_dir`."""
    cfg = setup(args, output_dir_override=out_dir)

    from spcl.evaluation import evaluate_checkpoint, format_table
    from spcl.utils import comm
    from spcl.utils.env import write_run_info

    from spcl.data.build import is_unlabelled

    logger = logging.getLogger("spcl")
    test_set = cfg.DATASETS.TEST
    if not args.format_only and is_unlabelled(cfg, test_set):
        if len(checkpoints) > 1:
            raise UsageError(f"{test_set} has no labels to score {len(checkpoints)} checkpoints with; give one "
                             "checkpoint to write its predictions")
        logger.info("%s has no labels: writing predictions only (--format-only)", test_set)
        args.format_only = True
    scales = args.scales or list(cfg.TEST.SCALES)
    flip = args.flip or cfg.TEST.FLIP
    sliding = args.sliding or cfg.TEST.SLIDING
    cfg.defrost()  # the recorded config says how the results were computed, flags included
    cfg.TEST.SCALES, cfg.TEST.FLIP, cfg.TEST.SLIDING = list(scales), bool(flip), bool(sliding)
    cfg.freeze()
    if comm.is_main_process():
        write_run_info(cfg, out_dir)
    single = len(checkpoints) == 1
    save_color = (args.save_color or cfg.TEST.SAVE_COLOR) and single
    save_ids = (args.save_labelids or cfg.TEST.SAVE_LABELIDS or args.format_only) and single
    for key in ("SAVE_COLOR", "SAVE_LABELIDS"):  # the flags are refused with several checkpoints; the config's keys
        if cfg.TEST[key] and not single:
            logger.warning("TEST.%s is ignored with %d checkpoints: predictions are written for one checkpoint "
                           "file only", key, len(checkpoints))
    protocol = {"scales": scales, "flip": flip, "sliding": sliding}
    if args.bn_stats_from:
        protocol["bn_stats_from"] = args.bn_stats_from
    if sliding:
        protocol.update(window=list(cfg.TEST.WINDOW), stride=list(cfg.TEST.STRIDE))
    rows, results, extra = [], {}, []
    for iteration, path in checkpoints:
        metrics = evaluate_checkpoint(
            cfg, path, scales=scales, flip=flip, sliding=sliding,
            color_dir=os.path.join(out_dir, "color") if save_color else None,
            labelid_dir=os.path.join(out_dir, "labelIds") if save_ids else None, progress=True,
            format_only=args.format_only, bn_stats_from=args.bn_stats_from)
        if args.format_only:
            results[path] = {"iteration": iteration, "dataset": cfg.DATASETS.TEST, "format_only": True, **protocol,
                             **metrics}
            logger.info("%s: %d labelId PNGs of %s in %s", path, metrics["num_images"], cfg.DATASETS.TEST,
                        os.path.join(out_dir, "labelIds"))
        else:
            at = f" (iteration {iteration})" if iteration >= 0 else ""  # -1: a file that records none (released)
            logger.info("%s%s:\n%s", path, at, format_table(metrics))
            results[path] = {"iteration": iteration, **protocol, **metrics}
            extra = [k for k in ("mIoU_tail", "mIoU_13") if k in metrics]
            rows.append([iteration, path, metrics["mIoU"], metrics["mAcc"], metrics["aAcc"]]
                        + [metrics[k] for k in extra] + metrics["IoU"])
        if comm.is_main_process():  # after each one: an error at a later checkpoint keeps these
            write_results(out_dir, results, rows, extra, several=not single or os.path.isdir(args.checkpoint))
    if comm.is_main_process():
        print(f"results in {out_dir}")


if __name__ == "__main__":
    run_main(main)
