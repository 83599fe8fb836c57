"""SYNTHIA-RAND-CITYSCAPES (docs/method.md "Datasets"): `synthia/RAND_CITYSCAPES/RGB/NNNNNNN.png`, labels
`…/GT/LABELS/NNNNNNN.png`: 16-bit 3-channel PNGs with the class id in the first channel."""
from __future__ import annotations

import os

import numpy as np

from ..io import read_png16_first_channel
from ..labels import SYNTHIA_ID_MAX, synthia_to_trainid_lut
from .base import SegmentationDataset, list_images, read_list_file


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA frames with 16-class (or 19-class, three classes empty) train labels."""

    def __init__(self, root: str, transform, list_file: str = "", num_classes: int = 16,
                 labels: str = "required"):
        base = os.path.join(root, "RAND_CITYSCAPES")
        image_dir, label_dir = os.path.join(base, "RGB"), os.path.join(base, "GT", "LABELS")
        names = read_list_file(list_file) if list_file else list_images(image_dir, ".png")
        items = [(os.path.join(image_dir, n), os.path.join(label_dir, n)) for n in names]
        super().__init__(items, transform, labels, num_classes)
        self.lut = synthia_to_trainid_lut(num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return self.to_train_ids(read_png16_first_channel(path), path, SYNTHIA_ID_MAX)
