"""Label your own images with a trained model: no dataset layout, no labels.

    python tools/infer.py --config configs/gta5_r101.yaml --checkpoint PATH --input IMAGES [--output DIR]
        [--flip] [--scales 0.75 1 1.25] [--sliding] [--batch-size N] [KEY VALUE …]

IMAGES is one image file, a folder (searched recursively), a glob pattern (quote it: 'photos/**/*.jpg')
or a text file listing image paths (one a line; relative to the text file's folder). JPEG and PNG of
any size and mode (greyscale, RGBA: converted to RGB); other files are skipped with one warning each.
Each image is predicted with the test protocol of the config (resized to INPUT.TEST_SIZE, normalised
with INPUT.PIXEL_MEAN/STD, TEST.SCALES / TEST.FLIP / TEST.SLIDING or the flags), upsampled to its own
size, and written as

    <stem>_labelIds.png   Cityscapes labelIds (8-bit)
    <stem>_color.png      class colours (Cityscapes palette)
    <stem>_overlay.png    the image blended 50 % with the colours

plus `legend.png` (class colours and names) once, `config.yaml` and `env.txt`. Images below an input
folder keep their sub-folders under DIR (for a glob or a list: below the folders' common parent).
Default DIR: a new folder `infer_<YYYYmmdd-HHMMSS>` beside the checkpoint; never an earlier one.
"""
from __future__ import annotations

import glob
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import UsageError, config_parser, run_main, scale_factor, setup  # noqa: E402
from spcl.utils.io import where_read  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
logger = logging.getLogger("spcl")


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _walk(folder: str) -> list[str]:
    """Every file below `folder`, symlinked sub-folders included, each real folder once (`files_below`)."""
    from spcl.data.io import files_below

    return [os.path.join(folder, rel) for rel in files_below(folder)]


def collect_inputs(path: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(image path, output path stem relative to the output folder) of every candidate image of
    `path` (an image, a folder, a glob or a list file), and the files skipped for not being images
    by name. Stems: `sub/dir/name` (the extension dropped), one per image (see `output_stems`)."""
    if _is_glob(path) and not os.path.exists(path):
        files, root = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p)), None
    elif os.path.isdir(path):
        files, root = _walk(path), path
    elif os.path.isfile(path) and path.lower().endswith(LIST_EXTENSIONS):
        base = os.path.dirname(os.path.abspath(path))
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        files, root = [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines], None
    elif os.path.isfile(path):
        files, root = [path], None
    else:
        raise FileNotFoundError(f"input not found: {path}{where_read(path)} "
                                "(an image, a folder, a glob or a text file of paths)")
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    skipped = [f for f in files if not f.lower().endswith(IMAGE_EXTENSIONS)]
    if root is None:
        parents = [os.path.dirname(os.path.abspath(f)) for f in images]
        root = os.path.commonpath(parents) if parents else "."
    rels = [os.path.relpath(os.path.abspath(f), os.path.abspath(root)) for f in images]
    return list(zip(images, output_stems(rels))), skipped


def output_stems(rels: list[str]) -> list[str]:
    """A distinct output stem for each image path `rels[i]` (relative to the output folder), so that no
    image's outputs overwrite another's: `sub/x.jpg` → `sub/x`; images that would share a stem keep their
    extension as written (`x.jpg`, `x.png` → `x_jpg`, `x_png`), and a stem still taken gets `_2`, `_3`, …
    in the order of `rels` (`x_png` beside an `x_png.png`; `x_jpg` beside `x_JPG`: names are compared
    case-insensitively, as they are one file on macOS and Windows). A stem nothing shares is kept as is."""
    plain = [os.path.splitext(r)[0] for r in rels]
    counts: dict = {}
    for s in plain:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    taken = {s.casefold() for s in plain if counts[s.casefold()] == 1}
    stems = []
    for s, r in zip(plain, rels):
        if counts[s.casefold()] == 1:
            stems.append(s)
            continue
        stem = base = f"{s}_{os.path.splitext(r)[1][1:]}"
        k = 2
        while stem.casefold() in taken:
            stem, k = f"{base}_{k}", k + 1
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def read_input_image(path: str):
    """An RGB PIL image as training and test.py read it (spcl.data.io.read_image: EXIF orientation
    applied, any mode converted), or None with a warning."""
    from spcl.data.io import read_image

    try:
        return read_image(path)
    except (OSError, SyntaxError, ValueError) as e:  # (what Pillow raises on a damaged file)
        logger.warning("skipping %s: not a readable image (%s)", path, e)
        return None


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a trained model's checkpoint file")
    parser.add_argument("--input", required=True, metavar="IMAGES",
                        help="image file, folder (recursive), glob pattern or text file of paths")
    parser.add_argument("--output", default="", help="output folder (default: a new infer_<time> folder beside "
                                                     "the checkpoint)")
    parser.add_argument("--flip", action="store_true", help="average with the flipped input (TEST.FLIP)")
    parser.add_argument("--scales", type=scale_factor, nargs="+", default=None,
                        help="multi-scale factors (TEST.SCALES)")
    parser.add_argument("--sliding", action="store_true", help="sliding-window inference (TEST.SLIDING, "
                                                               "TEST.WINDOW, TEST.STRIDE)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="images per forward pass (default TEST.BATCH_SIZE); images of different sizes "
                             "in one batch are predicted in groups of one size")
    parser.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlays (0..1)")
    args = parser.parse_args(argv)
    if os.path.isdir(args.checkpoint):  # before any output is written beside it
        from spcl.modeling.weights import model_in_folder

        found = model_in_folder(args.checkpoint)
        raise IsADirectoryError(f"--checkpoint {args.checkpoint} is a folder; " + (
            f"did you mean {found}?" if found else "give a checkpoint file, e.g. …/checkpoints/model_final.pth"))
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}{where_read(args.checkpoint)} "
                                "(give a checkpoint file, e.g. "
                                "…/checkpoints/model_final.pth)")
    if args.batch_size < 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha is the colour weight of the overlays, between 0 and 1; got {args.alpha}")
    inputs, skipped = collect_inputs(args.input)

    from spcl.engine import init_distributed
    from spcl.evaluation import unique_output_dir

    init_distributed()
    out_dir = args.output or unique_output_dir(os.path.dirname(os.path.abspath(args.checkpoint)), "infer")
    from spcl.utils.run_lock import run_lock

    with run_lock(out_dir, "--output"):  # two runs into one folder would overwrite each other's predictions
        return predict_into(args, inputs, skipped, out_dir)


def predict_into(args, inputs: list, skipped: list, out_dir: str) -> int:
    """Label `inputs` (collect_inputs' (path, stem) pairs) into `out_dir` as `args` ask; 0 when at least one
    image was labelled, else 1."""
    import numpy as np

    from spcl.evaluation import save_prediction, segment_images, write_legend
    from spcl.modeling import load_trained_segmentor
    from spcl.utils.env import default_device, write_run_info
    from spcl.utils.progress import progress

    cfg = setup(args, output_dir_override=out_dir)
    for f in skipped:
        logger.warning("skipping %s: not a JPEG or PNG image", f)
    if not inputs:
        raise FileNotFoundError(f"no JPEG or PNG images found at {args.input}")
    write_run_info(cfg, out_dir)
    K = cfg.MODEL.NUM_CLASSES
    write_legend(out_dir, K)
    device = default_device()
    model = load_trained_segmentor(cfg, args.checkpoint, device)
    batch_size = args.batch_size or cfg.TEST.BATCH_SIZE
    scales = args.scales or list(cfg.TEST.SCALES)
    flip = args.flip or cfg.TEST.FLIP
    sliding = args.sliding or cfg.TEST.SLIDING
    written = 0
    bar = progress(range(0, len(inputs), batch_size), "infer", total=(len(inputs) + batch_size - 1) // batch_size)
    unreadable = []
    for start in bar:
        batch = [(read_input_image(p), p, stem) for p, stem in inputs[start:start + batch_size]]
        unreadable += [p for img, p, _ in batch if img is None]
        batch = [(img, stem) for img, _, stem in batch if img is not None]
        if not batch:
            continue
        preds = segment_images(model, [img for img, _ in batch], cfg, scales, flip, sliding, device)
        for (img, stem), pred in zip(batch, preds):
            save_prediction(pred, stem, K, labelid_dir=out_dir, color_dir=out_dir, image=np.array(img),
                            alpha=args.alpha)
            written += 1
    logger.info("%d of %d images labelled into %s", written, len(inputs), out_dir)
    if unreadable:  # warned as they came, maybe long before: said again where the run ends
        more = f" and {len(unreadable) - 5} more (log.txt names them)" if len(unreadable) > 5 else ""
        logger.warning("not readable, skipped: %s%s", ", ".join(unreadable[:5]), more)
    print(f"predictions in {out_dir}")
    return 0 if written else 1


if __name__ == "__main__":
    run_main(main)
