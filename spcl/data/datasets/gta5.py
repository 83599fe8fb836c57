"""GTA5 (docs/method.md "Datasets"): `gta5/images/NNNNN.png`, labels `gta5/labels/NNNNN.png` as palette PNGs whose
indices are Cityscapes labelIds (decoded as indices, never as colours)."""
from __future__ import annotations

import os

import numpy as np

from ..io import read_label_indices
from ..labels import LABELID_MAX, labelid_to_trainid_lut
from .base import SegmentationDataset, list_images, read_list_file


IMAGE_DIR, LABEL_DIR = "images", "labels"  # folders under the GTA5 root, same file names in both


class GTA5Dataset(SegmentationDataset):
    """GTA5 frames with 19 (or 16) class train labels."""

    def __init__(self, root: str, transform, list_file: str = "", num_classes: int = 19,
                 labels: str = "required"):
        image_dir, label_dir = os.path.join(root, IMAGE_DIR), os.path.join(root, LABEL_DIR)
        names = read_list_file(list_file) if list_file else list_images(image_dir, ".png")
        items = [(os.path.join(image_dir, n), os.path.join(label_dir, n)) for n in names]
        super().__init__(items, transform, labels, num_classes)
        self.lut = labelid_to_trainid_lut(num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return self.to_train_ids(read_label_indices(path), path, LABELID_MAX)
