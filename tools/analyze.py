"""The paper's analyses from checkpoints (docs/method.md "Analyses"): Class Center Distance, t-SNE of pixel features, qualitative panels.

    python tools/analyze.py ccd    --config F --checkpoint C [C2 …] --output DIR [--num-images N] [--min-pixels P]
                                   [KEY VALUE …]
    python tools/analyze.py tsne   --config F --checkpoint C [C2 …] --output DIR [--num-images N]
                                   [--per-class M] [--method tsne|pca] [--projector] [KEY VALUE …]
    python tools/analyze.py panels --config F --checkpoint C [C2 …] --output DIR [--num-panels K] [KEY VALUE …]

Images: N source (DATASETS.SOURCE) and N target (DATASETS.TEST, or --target-dataset) images with
labels, a seeded random subset (default 1,000 each; all when a set is smaller). Features: the
encoder output at stride 8, L2-normalised per pixel (the prototype space, paper Sec. 3.2), labels
nearest-downsampled to it. Outputs in DIR: `ccd.json` + `ccd.png` (+ the table in the log),
`tsne.png` + `tsne.npz` (`pca.png` + `pca.npz` when the embedding is PCA: --method pca or no
scikit-learn) (+ `projector/` for TensorBoard), `panels.png`. ccd leaves out classes seen on fewer
than --min-pixels feature pixels in a set (null in ccd.json, "too few pixels" in the figure, "few" in
the table). Several checkpoints are compared side by side. `KEY VALUE` overrides go last (after `--` if
in doubt). Plots need the `analysis` extra: pip install -e ".[analysis]".
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import UsageError, is_override_key, run_main, setup  # noqa: E402

from spcl.utils.progress import progress  # noqa: E402

logger = logging.getLogger("spcl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{ccd,tsne,panels}")
    helps = {"ccd": "Class Center Distance per class (paper App. D / Fig. 5) → ccd.json, ccd.png",
             "tsne": "t-SNE of a class-balanced sample of pixel features (Fig. 4) → tsne.png (pca.png for PCA)",
             "panels": "image | ground truth | predictions for K target images (Fig. 3) → panels.png"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", default="", metavar="FILE", help="experiment YAML (configs/…)")
        p.add_argument("--checkpoint", nargs="+", required=True, metavar="C", help="one or more checkpoints")
        p.add_argument("--labels", nargs="+", default=None, metavar="NAME",
                       help="names of the checkpoints in tables and figures (default: stage folder or file name)")
        p.add_argument("--output", required=True, metavar="DIR", help="folder for the outputs")
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        p.add_argument("--num-images", type=int, default=1000, metavar="N",
                       help="images per domain (default 1000; ≤0 = all)" if name != "panels" else
                       "target images to pick the panels from, evenly spaced (default 1000; ≤0 = all)")
        p.add_argument("--target-dataset", default="", metavar="NAME",
                       help="labelled target set (default DATASETS.TEST; e.g. cityscapes_train)")
        if name == "ccd":
            p.add_argument("--min-pixels", type=int, default=50, metavar="P",
                           help="classes with fewer feature pixels (stride 8) in a set get no CCD in that set: "
                                "null in ccd.json, 'too few pixels' in the figure, 'few' in the table (default 50)")
        if name == "tsne":
            p.add_argument("--per-class", type=int, default=100, metavar="M",
                           help="pixels sampled per class and domain (default 100)")
            p.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="2-D embedding (default tsne)")
            p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
            p.add_argument("--projector", action="store_true",
                           help="also write the sample to DIR/projector for TensorBoard's projector")
        if name == "panels":
            p.add_argument("--num-panels", type=int, default=4, metavar="K", help="rows of the grid (default 4)")
            p.add_argument("--cell-width", type=int, default=384, help="width in pixels of each cell (default 384)")
        p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                       help="config overrides, e.g. DATASETS.DATA_DIR /data MODEL.BACKBONE resnet18")
    return parser


def _split_overrides(args) -> None:
    """`--checkpoint a b KEY VALUE`: argparse gives KEY VALUE to --checkpoint; move them to opts (a key as
    `is_override_key` tells: a label such as `SPCL` stays a label)."""
    for attr in ("checkpoint", "labels"):
        values = getattr(args, attr) or []
        for i, v in enumerate(values):
            if is_override_key(v):
                setattr(args, attr, values[:i])
                args.opts = values[i:] + list(args.opts)
                break
    if not args.checkpoint:
        raise UsageError("--checkpoint needs at least one file (what followed it reads as KEY VALUE overrides)")
    if args.labels is not None and len(args.labels) != len(args.checkpoint):
        raise UsageError(f"{len(args.labels)} --labels for {len(args.checkpoint)} checkpoints: give one name per "
                         "checkpoint, in the same order")


def checkpoint_labels(paths: list[str]) -> list[str]:
    """Short unique names: the stage folder of `<stage>/checkpoints/model_final.pth`, else the file stem."""
    labels = []
    for p in paths:
        folder, stem = os.path.split(os.path.abspath(p))
        stem = os.path.splitext(stem)[0]
        if os.path.basename(folder) == "checkpoints":
            stage = os.path.basename(os.path.dirname(folder))
            labels.append(stage if stem == "model_final" else f"{stage}/{stem}")
        else:
            labels.append(stem)
    if len(set(labels)) < len(labels):
        labels = [os.path.relpath(p) for p in paths]
    return labels


def check_checkpoints(paths: list[str]) -> None:
    """Fail before any pass over the images, in one line naming the file, when a checkpoint cannot load as
    `_load_model` loads it: missing, a folder, unreadable or refused (`read_checkpoint`, memory-mapped: cheap),
    or not a trained model (`weights_kind`: backbone weights only, prototypes, no model state)."""
    from spcl.modeling.weights import not_a_model, read_checkpoint, weights_kind

    for path in paths:
        try:
            obj = read_checkpoint(path, mmap=True)
        except (OSError, ValueError) as e:
            raise type(e)(f"--checkpoint: {e}") from e
        kind = weights_kind(obj)
        del obj
        if kind not in ("checkpoint", "released"):
            raise ValueError(f"--checkpoint {path} holds {not_a_model(kind)}, not a trained "
                             "model: give a trained checkpoint, e.g. a stage's checkpoints/model_final.pth")


def _load_model(cfg, path: str, device):
    from spcl.modeling import load_trained_segmentor
    from spcl.modeling.weights import read_checkpoint

    ckpt = read_checkpoint(path)
    iteration = int(ckpt.get("iteration", -1)) if isinstance(ckpt, dict) else -1
    del ckpt
    return load_trained_segmentor(cfg, path, device), iteration


def _finite_or_none(values) -> list:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def run_ccd(args, cfg, ctx) -> None:
    from spcl.analysis import DOMAINS, analysis_dataset, analysis_loader, collect_feature_stats, domain_ccd
    from spcl.analysis.ccd import CCD_SETS, format_ccd_table, nanmean, too_few_pixels
    from spcl.analysis.plots import ccd_bar_chart
    from spcl.utils import comm
    from spcl.utils.io import atomic_write_json

    K, names, tail = ctx["num_classes"], ctx["class_names"], ctx["tail"]
    loaders = {d: analysis_loader(cfg, analysis_dataset(cfg, d, args.target_dataset if d == "target" else ""),
                                  args.num_images, cfg.SEED) for d in DOMAINS}
    min_pixels = max(1, args.min_pixels)
    results, records, few = [], [], []
    for path, label in zip(args.checkpoint, ctx["labels"]):
        model, iteration = _load_model(cfg, path, ctx["device"])
        stats = {d: collect_feature_stats(model, progress(loaders[d], f"{label}: {d}"), K, ctx["device"],
                                          ctx["amp"]) for d in DOMAINS}
        del model
        ccd = domain_ccd(stats["source"], stats["target"], min_pixels)
        results.append((label, ccd))
        few.append(too_few_pixels(stats["source"], stats["target"], min_pixels))
        records.append({
            "checkpoint": os.path.abspath(path), "label": label, "iteration": iteration,
            "ccd": {s: _finite_or_none(ccd[s].tolist()) for s in CCD_SETS},
            "mean": {s: nanmean(ccd[s].tolist()) for s in CCD_SETS},
            "mean_tail": {s: nanmean(ccd[s].tolist(), tail) for s in CCD_SETS},
            "pixels": {d: [int(c) for c in stats[d].counts.tolist()] for d in DOMAINS},
            "too_few_pixels": {s: [names[k] for k in range(K) if bool(few[-1][s][k])] for s in CCD_SETS},
        })
    images = ", ".join(f"{d} {len(loaders[d].dataset)} images" for d in DOMAINS)
    logger.info("Class Center Distance (%s):\n%s", images,
                format_ccd_table(results, names, tail, too_few=few, min_pixels=min_pixels))
    if comm.is_main_process():
        atomic_write_json({
            "class_names": list(names), "tail_classes": [names[k] for k in tail],
            "datasets": {d: ctx["datasets"][d] for d in DOMAINS},
            "num_images": {d: len(loaders[d].dataset) for d in DOMAINS},
            "features": "encoder output at stride 8, L2-normalised per pixel; labels nearest-downsampled",
            "definition": "CCD_k = mean over present j != k of [mean_{x in class k} ||x - p_k||^2] / ||p_k - p_j||^2; "
                          "p = class mean of the set's features; a class is present in a set with at least "
                          "min_pixels pixels; null = class absent (no pixels, or fewer than min_pixels: listed "
                          "in too_few_pixels)",
            "min_pixels": min_pixels,
            "checkpoints": records}, os.path.join(ctx["out"], "ccd.json"))
        ccd_bar_chart(os.path.join(ctx["out"], "ccd.png"), results, names, tail, too_few=few, min_pixels=min_pixels)


def run_tsne(args, cfg, ctx) -> None:
    import numpy as np

    from spcl.analysis import (DOMAINS, ClassBalancedPixelSample, analysis_dataset, analysis_loader, embed_2d,
                               export_projector, iter_pixel_features)
    from spcl.analysis.plots import embedding_scatter
    from spcl.data.labels import palette

    K, names = ctx["num_classes"], ctx["class_names"]
    loaders = {d: analysis_loader(cfg, analysis_dataset(cfg, d, args.target_dataset if d == "target" else ""),
                                  args.num_images, cfg.SEED, shard=False) for d in DOMAINS}
    panels, arrays, methods = [], {}, set()
    for i, (path, label) in enumerate(zip(args.checkpoint, ctx["labels"])):
        model, iteration = _load_model(cfg, path, ctx["device"])
        sample = ClassBalancedPixelSample(K, args.per_class, DOMAINS, seed=cfg.SEED)
        for d in DOMAINS:
            for feat, mask in iter_pixel_features(model, progress(loaders[d], f"{label}: {d}"), ctx["device"],
                                                  ctx["amp"]):
                sample.update(d, feat, mask)
        del model
        feats, classes, domains = sample.result()
        coords, used = embed_2d(feats, args.method, seed=cfg.SEED, perplexity=args.perplexity)
        methods.add(used)
        logger.info("%s: %d pixels (%s) embedded with %s", label, len(feats),
                    ", ".join(f"{d} {int((domains == j).sum())}" for j, d in enumerate(DOMAINS)), used)
        if args.projector:
            export_projector(os.path.join(ctx["out"], "projector"), feats, classes, domains, names, DOMAINS,
                             tag=label, global_step=max(iteration, 0))
        panels.append((f"{label} ({'t-SNE' if used == 'tsne' else 'PCA'})", coords, classes.numpy(), domains.numpy()))
        arrays.update({f"coords_{i}": coords, f"classes_{i}": classes.numpy(), f"domains_{i}": domains.numpy()})
    stem = embedding_file_stem(methods)
    np.savez(os.path.join(ctx["out"], f"{stem}.npz"), labels=np.array(ctx["labels"]), class_names=np.array(names),
             domain_names=np.array(DOMAINS), methods=np.array(sorted(methods)), **arrays)
    figure = os.path.join(ctx["out"], f"{stem}.png")
    embedding_scatter(figure, panels, names, palette(K), DOMAINS)
    if stem == "pca":
        why = "--method pca" if args.method == "pca" else "scikit-learn is missing or too few points for t-SNE"
        logger.warning("the embedding is PCA, not t-SNE (%s): saved as %s (and %s.npz), not tsne.png", why,
                       figure, os.path.join(ctx["out"], stem))
    else:
        logger.info("embedding (%s) saved as %s", " and ".join(sorted(methods)), figure)
    if args.projector:
        logger.info("projector data in %s (tensorboard --logdir %s)", os.path.join(ctx["out"], "projector"),
                    os.path.join(ctx["out"], "projector"))


def embedding_file_stem(methods) -> str:
    """File name (without extension) of the embedding outputs: `pca` when every panel is PCA, else `tsne`."""
    return "pca" if set(methods) == {"pca"} else "tsne"


def run_panels(args, cfg, ctx) -> None:
    import numpy as np

    from spcl.analysis import analysis_dataset, make_panel_grid, panel_inputs, predict_labels, select_images
    from spcl.evaluation.sliding import sliding_from_cfg

    logits_fn = sliding_from_cfg(cfg)  # the test protocol, as tools/test.py: TEST.SCALES, TEST.FLIP, TEST.SLIDING
    dataset = analysis_dataset(cfg, "target", args.target_dataset)
    candidates = select_images(len(dataset), args.num_images, cfg.SEED)
    count = max(1, min(args.num_panels, len(candidates)))
    chosen = [candidates[round(x)] for x in np.linspace(0, len(candidates) - 1, count)]
    logger.info("panels of %s", ", ".join(os.path.basename(dataset.items[i][0]) for i in chosen))
    images, labels = panel_inputs(dataset, chosen)
    predictions = []
    for path in args.checkpoint:
        model, _ = _load_model(cfg, path, ctx["device"])
        predictions.append(predict_labels(model, dataset, chosen, ctx["device"], list(cfg.TEST.SCALES), cfg.TEST.FLIP,
                                          ctx["amp"], logits_fn))
        del model
    grid = make_panel_grid(images, labels, predictions, ctx["labels"], ctx["num_classes"], args.cell_width)
    grid.save(os.path.join(ctx["out"], "panels.png"))


COMMANDS = {"ccd": run_ccd, "tsne": run_tsne, "panels": run_panels}


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    _split_overrides(args)
    from spcl.analysis.deps import MissingDependencyError, available, require

    try:  # before any model pass: fail fast with the install command
        if args.command in ("ccd", "tsne"):
            require("matplotlib", f"`analyze.py {args.command}` figures")
    except MissingDependencyError as e:
        parser.exit(2, f"analyze.py {args.command}: {e}\n")
    check_checkpoints(args.checkpoint)  # every one before the first pass: a typo in the last costs no pass
    cfg = setup(args, output_dir_override=args.output)

    from spcl.data.labels import TAIL_CLASSES, class_names, subset_indices
    from spcl.utils.env import AMP_DTYPES, default_device
    from spcl.utils import comm
    from spcl.utils.env import write_run_info

    if args.command == "tsne" and args.method == "tsne" and not available("sklearn"):
        logger.warning("scikit-learn is not installed: PCA instead of t-SNE. Install the analysis extra: "
                       'pip install -e ".[analysis]"')
    if comm.is_main_process():
        write_run_info(cfg, args.output)
    elif args.command != "ccd":  # only ccd shards its images over processes
        return
    K = cfg.MODEL.NUM_CLASSES
    ctx = {"out": args.output, "device": default_device(), "amp": AMP_DTYPES[cfg.SOLVER.AMP], "num_classes": K,
           "class_names": class_names(K), "tail": subset_indices(K, TAIL_CLASSES),
           "labels": args.labels or checkpoint_labels(args.checkpoint),
           "datasets": {"source": cfg.DATASETS.SOURCE, "target": args.target_dataset or cfg.DATASETS.TEST}}
    COMMANDS[args.command](args, cfg, ctx)
    if comm.is_main_process():
        print(f"{args.command}: results in {args.output}")


if __name__ == "__main__":
    run_main(main)
