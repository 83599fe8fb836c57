"""Write pseudo labels (paper Eq. 5; docs/method.md "Pseudo labels") for the target training set with a checkpoint, or compute the
source prototypes (paper Eq. 2; docs/method.md "Prototypes") with `--prototypes`.

    python tools/gen_pseudo.py --config configs/gta5_r101.yaml --checkpoint C --output DIR [KEY VALUE …]
    python tools/gen_pseudo.py --config configs/gta5_r101.yaml --checkpoint C --output DIR --prototypes

Labels: `DIR/labels/<image name>` (8-bit trainIds, 255 below the class threshold) and
`DIR/labels/thresholds.json`. Prototypes: `DIR/prototypes.pth`.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESUMES_PASS, config_parser, refuse_a_run_folder, run_main, setup  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (any stage)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--prototypes", action="store_true", help="compute source prototypes instead")
    args = parser.parse_args(argv)
    refuse_a_run_folder(args.output, "--output")
    args.opts = list(args.opts) + ["MODEL.WEIGHTS", args.checkpoint]
    cfg = setup(args, output_dir_override=args.output)
    from spcl.engine import run_stage
    from spcl.utils import comm
    from spcl.utils.run_lock import run_lock

    with run_lock(args.output, "--output"):  # one writer per folder: two runs would mix their label files
        result = run_stage(cfg, "prototypes" if args.prototypes else "pseudo_labels", args.output)
    if comm.is_main_process():
        print(format_prototypes(result) if args.prototypes else format_pseudo_labels(result))
    return 0


def _percent(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:5.1f}%"


def format_pseudo_labels(result: dict) -> str:
    """What the pseudo_labels stage wrote, readable: where the labels are, the share of target pixels
    kept, their quality when the target set has ground truth, and a per-class table (threshold, share
    of the pixels predicted as the class that were kept, IoU of the kept pixels)."""
    import json

    from spcl.data.labels import class_names
    from spcl.pseudo import most_confused_with

    label_dir = result["outputs"]["pseudo_dir"]
    path = os.path.join(label_dir, "thresholds.json")
    with open(path) as f:
        summary = json.load(f)
    thresholds = summary["thresholds"]
    K = len(thresholds)
    names = summary.get("class_names") or (list(class_names(K)) if K in (16, 19) else [str(k) for k in range(K)])
    kept = summary.get("kept_fraction_per_class") or [None] * K
    quality = summary.get("quality_on_kept_pixels")
    lines = [f"pseudo labels: {int(summary['num_images'])} label PNGs in {label_dir}",
             f"  thresholds and kept shares: {path}",
             f"  kept: {_percent(summary['kept_fraction']).strip()} of the target pixels "
             f"(255 = ignored below the class threshold; threshold cap {summary.get('cap')})"]
    if summary.get("oracle"):  # the files hold ground truth, on other pixels than the thresholds keep
        lines.append(f"  ORACLE (PSEUDO.ORACLE {summary['oracle']}): the files hold the ground truth, "
                     f"{_percent(summary['labelled_fraction']).strip()} of their pixels labelled; a diagnostic, "
                     "not pseudo labels")
    if quality:
        lines.append(f"  quality of the kept pixels against the target ground truth: mIoU {quality['mIoU']:.2f}, "
                     f"pixel accuracy {quality['aAcc']:.2f}")
    else:
        lines.append("  quality: not measured (the target training set has no ground truth)")
    confusion = summary.get("confusion_on_kept_pixels")
    header = (f"  {'class':<14}{'threshold':>10}{'kept':>9}" + (f"{'IoU kept':>10}" if quality else "")
              + ("   most often mislabelled (share of its kept pixels)" if confusion else ""))
    lines.append(header)
    for k in range(K):
        row = f"  {names[k]:<14}{thresholds[k]:>10.3f}{_percent(kept[k]):>9}"
        if quality:
            iou = quality["IoU"][k]
            row += f"{'-' if iou is None or iou != iou else f'{iou:.2f}':>10}"
        top = most_confused_with(confusion, k) if confusion else None
        if top is not None:
            row += f"   {names[top[0]]} {100 * top[1]:.1f}%"
        lines.append(row)
    lines.append("  (kept = share of the pixels predicted as the class whose confidence passed its threshold; "
                 "mislabelled: the wrong pseudo label its ground-truth pixels get most often, among the kept ones)")
    return "\n".join(lines)


def format_prototypes(result: dict) -> str:
    """What the prototypes stage wrote, readable: the file, classes seen (and the ones never seen),
    pixels per class and the mean prototype norm."""
    m = result["metrics"]
    path = result["outputs"]["prototypes"]
    unit = "images" if "images_per_class_min" in m else "pixels"
    lines = [f"prototypes: {path}"]
    seen = m.get("classes_seen")
    try:
        from spcl.data.labels import class_names
        from spcl.utils.safe_load import load_checkpoint

        counts = load_checkpoint(path)["counts"].tolist()
        K = len(counts)
        names = list(class_names(K)) if K in (16, 19) else [str(k) for k in range(K)]
        lines.append(f"  classes seen: {seen} of {K}")
        absent = [names[k] for k, c in enumerate(counts) if c == 0]
        if absent:
            lines.append(f"  never seen (zero prototype): {', '.join(absent)}")
    except (OSError, KeyError, RuntimeError):
        lines.append(f"  classes seen: {seen}")
    if f"{unit}_per_class_min" in m:
        lines.append(f"  {unit} per seen class: min {m[f'{unit}_per_class_min']}, "
                     f"median {m[f'{unit}_per_class_median']:g}")
    if "mean_prototype_norm" in m:
        lines.append(f"  mean prototype norm: {m['mean_prototype_norm']:.4f} (1 = all features of a class point "
                     "the same way)")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main, on_interrupt=RESUMES_PASS)
