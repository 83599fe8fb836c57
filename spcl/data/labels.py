"""Class names, palettes and label-id maps (docs/method.md "Datasets"), defined once for the whole codebase.

Used by every dataset (to turn a label file into trainIds), by the evaluator (class subsets) and by
the visualisation code (palette). Nothing here reads files.
"""
from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255
# Raw ids a label file of each format may hold; an id outside would be hidden as 255 by the id→trainId table.
LABELID_MAX = 33  # Cityscapes labelIds 0..33 (GTA5 palette indices, Synscapes, Cityscapes gtFine)
SYNTHIA_ID_MAX = 22  # SYNTHIA-RAND-CITYSCAPES class ids 0..22

# The 19 Cityscapes training classes, in trainId order.
CLASSES_19 = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# Cityscapes labelId of each trainId (trainId k <- LABELIDS_19[k]).
LABELIDS_19 = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
# Cityscapes colour of each trainId (the official palette).
PALETTE_19 = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# The 16-class setting (SYNTHIA): the 19 minus terrain, truck, train, renumbered 0..15.
CLASSES_16 = tuple(c for c in CLASSES_19 if c not in ("terrain", "truck", "train"))
# SYNTHIA-RAND-CITYSCAPES class id of each 16-class id (docs/method.md "Datasets").
SYNTHIA_IDS_16 = (3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11)
# 13-class mIoU: the 16 minus wall, fence, pole.
CLASSES_13 = tuple(c for c in CLASSES_16 if c not in ("wall", "fence", "pole"))
# Tail classes of Cityscapes val (paper App. B).
TAIL_CLASSES = (
    "wall", "fence", "light", "sign", "terrain", "rider", "truck", "bus", "train", "motorcycle",
    "bicycle",
)


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the classes of a 19- or 16-class setting, in label order."""
    if num_classes == 19:
        return CLASSES_19
    if num_classes == 16:
        return CLASSES_16
    raise ValueError(f"MODEL.NUM_CLASSES must be 19 or 16 for Cityscapes-style labels, got {num_classes}")


def palette(num_classes: int) -> np.ndarray:
    """Colour of each class of the setting, uint8 array K×3 (Cityscapes colours)."""
    names = class_names(num_classes)
    return np.array([PALETTE_19[CLASSES_19.index(n)] for n in names], dtype=np.uint8)


def subset_indices(num_classes: int, subset: tuple[str, ...]) -> list[int]:
    """Indices (in the setting's label order) of the classes of `subset` present in the setting."""
    names = class_names(num_classes)
    return [names.index(n) for n in subset if n in names]


def labelid_to_trainid_lut(num_classes: int = 19) -> np.ndarray:
    """Lookup table (65536,) uint8 mapping a Cityscapes labelId to a train label (255 elsewhere).

    With `num_classes=16` the labels are the contiguous 16-class ids of the SYNTHIA setting.
    """
    names = class_names(num_classes)
    lut = np.full(65536, IGNORE_LABEL, dtype=np.uint8)
    for train_id, name in enumerate(names):
        lut[LABELIDS_19[CLASSES_19.index(name)]] = train_id
    return lut


def synthia_to_trainid_lut(num_classes: int = 16) -> np.ndarray:
    """Lookup table (65536,) uint8 mapping a SYNTHIA class id to a train label.

    SYNTHIA has no terrain, truck or train, so its 19-class ids simply leave those classes empty.
    """
    lut = np.full(65536, IGNORE_LABEL, dtype=np.uint8)
    names = class_names(num_classes)
    for i16, sid in enumerate(SYNTHIA_IDS_16):
        lut[sid] = names.index(CLASSES_16[i16])
    return lut


def trainid_to_labelid_lut(num_classes: int = 19) -> np.ndarray:
    """Lookup table (256,) uint8 mapping a train label back to a Cityscapes labelId (255 → 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    for train_id, name in enumerate(class_names(num_classes)):
        lut[train_id] = LABELIDS_19[CLASSES_19.index(name)]
    return lut


def colorize(label: np.ndarray, num_classes: int = 19) -> np.ndarray:
    """Colour image H×W×3 uint8 of a train-label map H×W (ignored pixels black)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:num_classes] = palette(num_classes)
    return colours[np.asarray(label, dtype=np.uint8)]


def cityscapes_labelid_palette() -> list[int]:
    """A 768-entry PIL palette giving each Cityscapes labelId its class colour (GTA5 label files)."""
    pal = [0] * 768
    for train_id, label_id in enumerate(LABELIDS_19):
        pal[3 * label_id: 3 * label_id + 3] = PALETTE_19[train_id]
    return pal


def overlay(image: np.ndarray, label: np.ndarray, num_classes: int = 19, alpha: float = 0.5) -> np.ndarray:
    """`image` H×W×3 uint8 blended with the colours of the train-label map `label` H×W:
    (1 − alpha)·image + alpha·colour, rounded; ignored pixels (255) keep the image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha is the colour weight, between 0 and 1; got {alpha}")
    image = np.asarray(image, dtype=np.uint8)
    label = np.asarray(label, dtype=np.uint8)
    if image.shape[:2] != label.shape:
        raise ValueError(f"overlay: image {image.shape[1]}x{image.shape[0]} and label {label.shape[1]}x"
                         f"{label.shape[0]} differ in size")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(label, num_classes).astype(np.float32)
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    ignored = label == IGNORE_LABEL
    out[ignored] = image[ignored]
    return out


def legend(num_classes: int = 19, row_height: int = 20, width: int = 160) -> np.ndarray:
    """A legend image (K·row_height)×width×3 uint8: one row per class, its colour swatch and name."""
    from PIL import Image, ImageDraw

    names, colours = class_names(num_classes), palette(num_classes)
    img = Image.new("RGB", (width, row_height * len(names)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    swatch = row_height * 2
    for k, (name, colour) in enumerate(zip(names, colours)):
        top = k * row_height
        draw.rectangle([0, top, swatch - 1, top + row_height - 1], fill=tuple(int(c) for c in colour))
        draw.text((swatch + 6, top + max(0, (row_height - 11) // 2)), f"{k} {name}", fill=(0, 0, 0))
    return np.array(img)
