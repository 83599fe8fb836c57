"""The one dataset class every domain subclasses: a sorted list of (image, label) files.

Subclasses only say where the files are (`find_items`) and how a label file becomes train labels
(`decode_label`). Items are dicts: `image` (float 3×H×W), `label` (int64 H×W, trainIds, 255 = ignore),
`name` (file base name), `index` (int). `__getitem__` also takes `(index, seed)` pairs from the
training samplers so each sample's augmentation is fixed by its position in the sample stream.
"""
from __future__ import annotations

import copy
import os
import random
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..io import files_below, read_image, refuse_a_folder, refuse_folders_named_like_images
from ..labels import IGNORE_LABEL
from ...utils.io import where_read

Item = tuple[str, Optional[str]]


def read_list_file(list_file: str) -> list[str]:
    """Relative image paths, one a line (blank lines and `#` comments skipped)."""
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"list file not found: {list_file}{where_read(list_file)}")
    with open(list_file, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is not a name
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def list_images(folder: str, suffix: str) -> list[str]:
    """Paths relative to `folder` of every file ending in `suffix` below it (symlinked sub-folders
    included, see `files_below`), sorted."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"dataset folder not found: {folder}{where_read(folder)} (see datasets/README.md for the layout)")
    folders: list = []
    out = [rel for rel in files_below(folder, folders) if rel.endswith(suffix)]
    refuse_folders_named_like_images(folder, folders, lambda name: name.endswith(suffix))
    if not out:
        raise FileNotFoundError(f"no '*{suffix}' files found under {folder}")
    return sorted(out)


class SegmentationDataset(Dataset):
    """Images with label files; labels `required`, `optional` (255 if missing) or `none`.

    Args:
        items: (image path, label path or None) pairs.
        transform: callable (PIL image, uint8 label or None, random.Random) → (tensor, tensor/None).
        labels: "required" | "optional" | "none".
        num_classes: K; decoded labels must lie in [0, K) or be 255.
    """

    # Label maps stored at another resolution than their image (pseudo labels written at the model's
    # input size) are resized nearest-neighbour to the image instead of being rejected.
    resize_label_to_image = False

    def __init__(self, items: Sequence[Item], transform: Callable, labels: str = "required",
                 num_classes: int = 19):
        if labels not in ("required", "optional", "none"):
            raise ValueError(f"labels must be required|optional|none, got {labels!r}")
        self.items = list(items)
        self.transform = transform
        self.labels = labels
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.items)

    def first(self, n: int) -> "SegmentationDataset":
        """This dataset cut to its first `n` items (n ≤ 0 or ≥ its length: itself), as a shallow copy. Cut
        before the loader (TEST.NUM_IMAGES, PROTOTYPE.NUM_IMAGES), the count is exact whatever the batch
        size, and over the whole set, not per process."""
        if n <= 0 or n >= len(self.items):
            return self
        cut = copy.copy(self)
        cut.items = self.items[:n]
        return cut

    def decode_label(self, path: str) -> np.ndarray:
        """H×W uint8 train labels of a label file; subclasses override."""
        raise NotImplementedError

    def to_train_ids(self, raw: np.ndarray, path: str, max_id: int) -> np.ndarray:
        """`self.lut[raw]` (H×W uint8 train labels) once every raw id of label file `path` is in 0..max_id:
        the table maps an id it does not know to 255, which would hide a damaged file as ignored pixels."""
        low, top = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if low < 0 or top > max_id:
            bad = np.unique(raw[(raw < 0) | (raw > max_id)])[:5].tolist()
            raise ValueError(f"label file {path} holds ids {bad} outside 0..{max_id}")
        return self.lut[raw]

    def no_label_message(self, image_path: str) -> str:
        """The error for an item without a label file in a dataset read with labels required; subclasses
        name the config key that gives their labels."""
        return (f"{type(self).__name__}: image {image_path or '(unnamed)'} has no label file, and labels are "
                "required for this use")

    def load_label(self, path: Optional[str], image_path: str = "") -> Optional[np.ndarray]:
        """H×W uint8 train labels of label file `path` (of image `image_path`, named in errors). None only
        where none are read (labels `none`) or they are `optional` and the item has none (`path` None or
        missing); with labels `required` a missing label raises, never yields None (an analysis would
        otherwise measure nothing on that set without a word)."""
        if self.labels == "none":
            return None
        if path is None:
            if self.labels == "optional":
                return None
            raise ValueError(self.no_label_message(image_path))
        refuse_a_folder(path, "label")  # also where labels are optional: a folder there is a mistake, not "no label"
        if not os.path.isfile(path):
            if self.labels == "optional":
                return None
            raise FileNotFoundError(f"missing label file: {path}")
        label = self.decode_label(path)
        bad = (label >= self.num_classes) & (label != IGNORE_LABEL)
        if bad.any():
            raise ValueError(f"label file {path} holds values {sorted(np.unique(label[bad]).tolist())[:5]} "
                             f"outside [0, {self.num_classes}) and 255")
        return label

    def __getitem__(self, index):
        seed = None
        if isinstance(index, (tuple, list)):
            index, seed = index
        img_path, label_path = self.items[index]
        image = read_image(img_path)
        label = self.load_label(label_path, img_path)
        if label is not None and label.shape != (image.size[1], image.size[0]):
            if self.resize_label_to_image:
                label = np.array(Image.fromarray(label).resize(image.size, Image.NEAREST))
            else:
                raise ValueError(f"label file {label_path} has size {label.shape[1]}x{label.shape[0]} but "
                                 f"its image {img_path} is {image.size[0]}x{image.size[1]}")
        rng = random.Random(seed if seed is not None else index)
        image_t, label_t = self.transform(image, label, rng)
        if label_t is None:  # unlabelled: an all-ignore label of the output size
            label_t = torch.full(image_t.shape[-2:], IGNORE_LABEL, dtype=torch.int64)
        return {"image": image_t, "label": label_t, "name": os.path.basename(img_path), "index": index}
