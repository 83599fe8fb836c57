"""Qualitative panels (paper Fig. 3 style): for a few target images, image | ground truth |
prediction of each checkpoint, in the Cityscapes palette, as one PNG grid with column titles and a
class legend. Predictions follow the test protocol (docs/method.md "Evaluation": input at INPUT.TEST_SIZE, softmax
upsampled to the label size, argmax; TEST.SCALES, TEST.FLIP and TEST.SLIDING as tools/analyze.py passes
them). Pure PIL, no matplotlib. Called by tools/analyze.py (`panels`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from spcl.data.io import read_image
from spcl.data.labels import class_names as _class_names
from spcl.data.labels import colorize, palette
from spcl.evaluation.inference import predict_probs

PAD = 4  # px between cells and around the grid
HEADER = 22  # px of column titles
LEGEND_ENTRY = (118, 18)  # px (width, height) of one legend entry: swatch + class name


@torch.no_grad()
def predict_labels(model, dataset, indices: Sequence[int], device: torch.device, scales: Sequence[float] = (1.0,),
                   flip: bool = False, amp_dtype: Optional[torch.dtype] = None, logits_fn=None) -> list[np.ndarray]:
    """Predicted train labels (H_l×W_l uint8, at each label's size) of the dataset items `indices`, as
    `run_inference` predicts them: `logits_fn` as there (e.g. `sliding_from_cfg(cfg)`: TEST.SLIDING;
    default whole image)."""
    model.eval()
    preds = []
    for i in indices:
        item = dataset[i]
        image = item["image"][None].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            probs = predict_probs(model, image, tuple(item["label"].shape[-2:]), scales, flip, logits_fn)
        preds.append(probs.argmax(1)[0].cpu().numpy().astype(np.uint8))
    return preds


def panel_inputs(dataset, indices: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(original RGB images H×W×3, ground-truth train labels H_l×W_l) of the dataset items `indices`."""
    images, labels = [], []
    for i in indices:
        images.append(np.asarray(read_image(dataset.items[i][0])))
        labels.append(dataset[i]["label"].numpy().astype(np.uint8))
    return images, labels


def label_font(size: int = 13):
    """PIL's default font (scalable on Pillow ≥ 10.1, the fixed bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()



def draw_class_legend(draw: "ImageDraw.ImageDraw", x0: int, y0: int, width: int, num_classes: int,
                      font=None, extra: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> None:
    """Draw the class legend (swatch in the class colour + name, LEGEND_ENTRY per entry, row-major)
    into a canvas from (x0, y0), `width` pixels wide, followed by the `extra` (name, colour) entries;
    it takes `legend_height(width, K + len(extra))` pixels."""
    font = font or label_font()
    per_row = max(1, (width - PAD) // LEGEND_ENTRY[0])
    entries = list(zip(_class_names(num_classes), palette(num_classes))) + list(extra)
    for k, (name, colour) in enumerate(entries):
        x = x0 + PAD + (k % per_row) * LEGEND_ENTRY[0]
        y = y0 + (k // per_row) * LEGEND_ENTRY[1]
        draw.rectangle((x, y + 3, x + 12, y + 15), fill=tuple(int(v) for v in colour), outline=(0, 0, 0))
        draw.text((x + 16, y + 2), name, fill=(0, 0, 0), font=font)


def legend_height(width: int, num_classes: int) -> int:
    """Pixels of the class legend under a grid `width` pixels wide."""
    per_row = max(1, (width - PAD) // LEGEND_ENTRY[0])
    return math.ceil(num_classes / per_row) * LEGEND_ENTRY[1] + PAD


def panel_grid_size(num_rows: int, num_cols: int, cell_size: tuple[int, int], num_classes: int = 0) -> tuple[int, int]:
    """(width, height) in pixels of `make_panel_grid`; `num_classes` 0 = no legend."""
    cw, ch = cell_size
    width = num_cols * cw + (num_cols + 1) * PAD
    height = HEADER + num_rows * (ch + PAD) + PAD
    return width, height + (legend_height(width, num_classes) if num_classes else 0)


def make_panel_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    predictions: Sequence[Sequence[np.ndarray]], titles: Sequence[str], num_classes: int,
                    cell_width: int = 384, legend: bool = True) -> Image.Image:
    """One row per image: image | ground truth | one prediction per checkpoint.

    Args:
        images: R RGB images H×W×3 uint8.
        labels: R ground-truth label maps (train ids, 255 ignored → black).
        predictions: per checkpoint, R predicted label maps.
        titles: column titles of the predictions (checkpoint labels).
        cell_width: width of every cell; its height keeps the first image's aspect ratio.
    Returns:
        an RGB PIL image of `panel_grid_size(R, 2 + len(predictions), cell, K if legend else 0)`.
    """
    if len(titles) != len(predictions):
        raise ValueError(f"{len(titles)} titles for {len(predictions)} prediction columns")
    h0, w0 = images[0].shape[:2]
    cell = (int(cell_width), max(1, round(cell_width * h0 / w0)))
    cols = 2 + len(predictions)
    size = panel_grid_size(len(images), cols, cell, num_classes if legend else 0)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    for c, title in enumerate(["image", "ground truth"] + list(titles)):
        x = PAD + c * (cell[0] + PAD)
        draw.text((x + 2, 4), str(title), fill=(0, 0, 0), font=font)
    for r, image in enumerate(images):
        cells = [Image.fromarray(image).resize(cell, Image.BILINEAR),
                 Image.fromarray(colorize(labels[r], num_classes)).resize(cell, Image.NEAREST)]
        cells += [Image.fromarray(colorize(p[r], num_classes)).resize(cell, Image.NEAREST) for p in predictions]
        y = HEADER + PAD + r * (cell[1] + PAD)
        for c, im in enumerate(cells):
            canvas.paste(im, (PAD + c * (cell[0] + PAD), y))
    if legend:
        draw_class_legend(draw, 0, HEADER + len(images) * (cell[1] + PAD) + PAD, size[0], num_classes, font)
    return canvas
