"""Per-class file index of a source dataset (which train labels each label file holds), used by the
class-balanced sampler (docs/method.md "Datasets"). Built once by tools/prepare_data.py, or on first use."""
from __future__ import annotations

import logging
import os

import numpy as np

from spcl.data.labels import IGNORE_LABEL
from spcl.utils import comm
from spcl.utils.io import atomic_write_json
from spcl.utils.progress import progress as progress_bar

logger = logging.getLogger("spcl")


def build_class_index(dataset, progress: bool = True) -> dict:
    """{image base name: sorted train labels present} for every item of `dataset` (labels read once)."""
    files = {}
    for img_path, label_path in progress_bar(dataset.items, "class index", enabled=progress):
        present = np.unique(dataset.load_label(label_path))
        files[os.path.basename(img_path)] = [int(c) for c in present if c != IGNORE_LABEL]
    return files


def write_class_index(dataset, path: str, num_classes: int, name: str, progress: bool = True) -> str:
    """Build the index of `dataset` and write it atomically to `path` (main process)."""
    if comm.is_main_process():
        logger.info("building the class index of %s (%d label files) → %s", name, len(dataset), path)
        atomic_write_json({"num_classes": num_classes, "dataset": name,
                           "files": build_class_index(dataset, progress)}, path)
    comm.synchronize()
    return path
