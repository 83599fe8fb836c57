"""Synscapes (docs/method.md "Datasets"): `synscapes/img/rgb-2k/N.png`, labels `synscapes/img/class/N.png` (labelIds)."""
from __future__ import annotations

import os

import numpy as np

from ..io import read_label_indices
from ..labels import LABELID_MAX, labelid_to_trainid_lut
from .base import SegmentationDataset, list_images, read_list_file


class SynscapesDataset(SegmentationDataset):
    """Synscapes frames with Cityscapes labelIds mapped to train labels."""

    def __init__(self, root: str, transform, list_file: str = "", num_classes: int = 19,
                 labels: str = "required"):
        image_dir, label_dir = os.path.join(root, "img", "rgb-2k"), os.path.join(root, "img", "class")
        names = read_list_file(list_file) if list_file else list_images(image_dir, ".png")
        names = sorted(names, key=lambda n: (len(n), n)) if not list_file else names  # 1, 2, …, 10
        items = [(os.path.join(image_dir, n), os.path.join(label_dir, n)) for n in names]
        super().__init__(items, transform, labels, num_classes)
        self.lut = labelid_to_trainid_lut(num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return self.to_train_ids(read_label_indices(path), path, LABELID_MAX)
