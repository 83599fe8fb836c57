"""Cityscapes (docs/method.md "Datasets") with gtFine labelIds, and Cityscapes with labels from a pseudo-label folder.

Images: `cityscapes/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` (split train, val or test); labels:
`cityscapes/gtFine/<split>/<city>/<name>_gtFine_labelIds.png`. Pseudo labels: `<dir>/<image base
name>` (the image's file name), 8-bit trainIds with 255 ignored, as written by spcl.pseudo.
"""
from __future__ import annotations

import os

import numpy as np

from ..io import read_label_indices
from ..labels import LABELID_MAX, labelid_to_trainid_lut
from ...utils.io import where_read
from .base import SegmentationDataset, list_images, read_list_file
from .folder import ImageSizePlaceholder

IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"  # folders under the Cityscapes root
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def frame_stem(name: str) -> str:
    """`city_000000_000019` of `…/city_000000_000019_leftImg8bit.png` (or of a bare stem)."""
    base = os.path.basename(name)
    if base.endswith(IMAGE_SUFFIX):
        return base[: -len(IMAGE_SUFFIX)]
    return os.path.splitext(base)[0].removesuffix(IMAGE_SUFFIX[:-4])


def cityscapes_images(root: str, split: str, list_file: str = "") -> list[str]:
    """Image paths relative to `leftImg8bit/<split>` (`city/name_leftImg8bit.png`), sorted."""
    image_dir = os.path.join(root, IMAGE_DIR, split)
    return read_list_file(list_file) if list_file else list_images(image_dir, IMAGE_SUFFIX)


class CityscapesDataset(ImageSizePlaceholder, SegmentationDataset):
    """Cityscapes `split` with gtFine labelIds mapped to 19 (or 16) train labels. The `test` split has
    no public labels: build it with labels `none` (catalog name `cityscapes_test`)."""

    def __init__(self, root: str, split: str, transform, list_file: str = "", num_classes: int = 19,
                 labels: str = "required"):
        names = cityscapes_images(root, split, list_file)
        image_dir, label_dir = os.path.join(root, IMAGE_DIR, split), os.path.join(root, LABEL_DIR, split)
        items = [(os.path.join(image_dir, n), os.path.join(label_dir, n[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX))
                 for n in names]
        super().__init__(items, transform, labels, num_classes)
        self.lut = labelid_to_trainid_lut(num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return self.to_train_ids(read_label_indices(path), path, LABELID_MAX)


class CityscapesPseudoDataset(SegmentationDataset):
    """Cityscapes `split` images with train labels read from `pseudo_dir/<image file name>`."""

    resize_label_to_image = True

    def __init__(self, root: str, pseudo_dir: str, transform, split: str = "train", list_file: str = "",
                 num_classes: int = 19):
        if not pseudo_dir or not os.path.isdir(pseudo_dir):
            raise FileNotFoundError(f"pseudo-label folder not found: {pseudo_dir!r}{where_read(pseudo_dir)} "
                                    "(config key DATASETS.PSEUDO_DIR; write it with tools/gen_pseudo.py)")
        names = cityscapes_images(root, split, list_file)
        image_dir = os.path.join(root, IMAGE_DIR, split)
        items = [(os.path.join(image_dir, n), os.path.join(pseudo_dir, os.path.basename(n))) for n in names]
        super().__init__(items, transform, "required", num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return read_label_indices(path)
