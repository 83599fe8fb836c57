"""Writes the toy GTA5 → Cityscapes domain-shift dataset shipped with the project.

Thin command-line front end of `spcl.toy.generate_toy_dataset`; runnable from the repository
root without installing the package. `prepare_toy_data(cfg)` is what tools/train.py calls for a
config with DATASETS.TOY.GENERATE (configs/toy.yaml): the only place outside the toy package and
the tests that imports it, so training code never depends on the demo data.

    python tools/make_toy.py --root datasets/toy --seed 0 --num-source 200 \
        --num-target-train 200 --num-target-val 50 --size 128 64 [--overwrite] [--preview PNG]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import spcl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from spcl.data.labels import colorize, labelid_to_trainid_lut
from spcl.data.datasets import cityscapes as cs
from spcl.data.datasets import gta5
from spcl.toy import generate_toy_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line.

    Args:
        argv: arguments (default: `sys.argv[1:]`).

    Returns:
        The parsed namespace.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="datasets/toy", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="base seed of the generator")
    p.add_argument("--num-source", type=int, default=200, help="source images (GTA5 layout)")
    p.add_argument("--num-target-train", type=int, default=200, help="target train images (Cityscapes layout)")
    p.add_argument("--num-target-val", type=int, default=50, help="target val images, with labels")
    p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("WIDTH", "HEIGHT"),
                   help="image size in pixels")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if the manifest matches")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also save a grid: source image | source label | target image | target label")
    p.add_argument("--preview-rows", type=int, default=6, help="image pairs in the preview")
    return p.parse_args(argv)


PREVIEW_COLUMNS = ("source image", "source label", "target image", "target label")


def save_preview(root: Path, out: Path, rows: int = 6) -> None:
    """Saves a side-by-side grid of source and target train images with coloured labels, with a
    header row naming the columns (PREVIEW_COLUMNS) and the class-colour legend underneath (PIL only).

    Args:
        root: a folder written by `generate_toy_dataset`.
        out: PNG path of the preview.
        rows: number of image pairs shown (at most the number of images of either domain).
    """
    from PIL import ImageDraw

    from spcl.analysis.panels import HEADER, draw_class_legend, label_font, legend_height

    lut = labelid_to_trainid_lut(19)
    src = sorted((root / "gta5" / gta5.IMAGE_DIR).glob("*.png"))
    tgt = sorted((root / "cityscapes" / cs.IMAGE_DIR / "train").glob("*/*" + cs.IMAGE_SUFFIX))
    lines = []
    for s_img, t_img in list(zip(src, tgt))[:rows]:
        s_lab = root / "gta5" / gta5.LABEL_DIR / s_img.name
        t_lab = (root / "cityscapes" / cs.LABEL_DIR / "train" / t_img.parent.name /
                 (t_img.name[: -len(cs.IMAGE_SUFFIX)] + cs.LABEL_SUFFIX))
        tiles = [np.array(Image.open(s_img).convert("RGB")), colorize(lut[np.array(Image.open(s_lab))]),
                 np.array(Image.open(t_img).convert("RGB")), colorize(lut[np.array(Image.open(t_lab))])]
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        middle = np.full_like(gap, 128)  # grey bar between the domains
        lines.append(np.concatenate([tiles[0], gap, tiles[1], middle, tiles[2], gap, tiles[3]], axis=1))
        lines.append(np.full((4, lines[-1].shape[1], 3), 255, np.uint8))
    if not lines:
        raise ValueError(f"no source/target image pairs under {root} to preview")
    grid = np.concatenate(lines[:-1], axis=0)
    tile_w = tiles[0].shape[1]
    scale = 2 if grid.shape[1] < 800 else 1
    bare = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    width = bare.width
    extra = [("ignored (255)", (0, 0, 0))]
    canvas = Image.new("RGB", (width, HEADER + bare.height + legend_height(width, 19 + len(extra))),
                       (255, 255, 255))
    canvas.paste(bare, (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(PREVIEW_COLUMNS):
        x, cell = c * (tile_w + 4) * scale, tile_w * scale
        font = label_font()
        if draw.textlength(title, font=font) > cell - 4:  # narrow tiles: a smaller font
            font = label_font(9)
        draw.text((x + 2, 4), title, fill=(0, 0, 0), font=font)
    draw_class_legend(draw, 0, HEADER + bare.height + 4, width, 19, extra=extra)
    canvas.save(out)


def prepare_toy_data(cfg) -> None:
    """Write the toy dataset of `cfg.DATASETS.TOY` into DATASETS.DATA_DIR when DATASETS.TOY.GENERATE
    is set (a no-op when it is already there); on the main process, the others wait."""
    if not cfg.DATASETS.TOY.GENERATE:
        return
    from spcl.utils import comm

    if comm.is_main_process():
        toy = cfg.DATASETS.TOY
        generate_toy_dataset(cfg.DATASETS.DATA_DIR, seed=toy.SEED, num_source=toy.NUM_SOURCE,
                             num_target_train=toy.NUM_TARGET_TRAIN, num_target_val=toy.NUM_TARGET_VAL,
                             size=tuple(toy.SIZE))
    comm.synchronize()


def main(argv: list[str] | None = None) -> dict:
    """Generates the dataset (and optionally a preview) and prints what was written."""
    args = parse_args(argv)
    if args.preview and args.preview_rows < 1:
        raise ValueError(f"--preview-rows must be at least 1, got {args.preview_rows}")
    info = generate_toy_dataset(args.root, seed=args.seed, num_source=args.num_source,
                                num_target_train=args.num_target_train, num_target_val=args.num_target_val,
                                size=tuple(args.size), overwrite=args.overwrite)
    action = "wrote" if info["generated"] else "up to date (nothing written):"
    print(f"{action} {info['root']}")
    print(f"  source (GTA5 layout):       {info['num_source']:5d} images in {info['gta5']}")
    print(f"  target (Cityscapes layout): {info['num_target_train']:5d} train + {info['num_target_val']} val "
          f"images in {info['cityscapes']}")
    print(f"  size {info['size'][0]}x{info['size'][1]}, seed {args.seed}, manifest {info['manifest']}")
    if args.preview:
        save_preview(Path(args.root), Path(args.preview), args.preview_rows)
        print(f"  preview: {args.preview}")
    return info


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import run_main

    run_main(main)
