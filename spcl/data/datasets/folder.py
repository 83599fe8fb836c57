"""A custom domain from plain folders, set from the config only (DATASETS.FOLDER.*), and the generic
pseudo-labelled dataset built on any target's image list.

* `folder_train`: every JPEG/PNG below DATASETS.FOLDER.TRAIN_DIR (recursive, sorted), no labels.
* `folder_val`: every image below VAL_DIR; labels (optional) from VAL_LABEL_DIR with the same
  sub-folders, file name = image name with IMAGE_SUFFIX (default: the extension) replaced by
  LABEL_SUFFIX; raw values mapped to train ids by ID_MAP / ID_MAP_FILE (default: already train ids).

Item names (`name`, also the pseudo-label file name) are the image's path relative to its folder with
`/` replaced by `__` and the extension replaced by `.png` (`a/b/x.jpg` → `a__b__x.png`), so images in
different sub-folders never share a pseudo-label file and pseudo labels are always lossless PNGs.
Two images that would get one name (`x.jpg` and `x.png` side by side) stop with an error naming them.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..io import displayed_size, files_below, read_label_indices, refuse_folders_named_like_images
from ..labels import IGNORE_LABEL
from ...utils.io import read_json, where_read
from .base import SegmentationDataset, read_list_file

logger = logging.getLogger("spcl")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def is_image_name(name: str, suffix: str = "") -> bool:
    """True for JPEG/PNG file names (case-insensitive), or names ending in `suffix` when given."""
    return name.endswith(suffix) if suffix else name.lower().endswith(IMAGE_EXTENSIONS)


def find_images(folder: str, suffix: str = "") -> list[str]:
    """Paths relative to `folder` of every image below it (see `is_image_name`; symlinked sub-folders
    included, see `files_below`), sorted."""
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder!r}{where_read(folder)} "
                                "(DATASETS.FOLDER.TRAIN_DIR / VAL_DIR)")
    out, left_out, folders = [], [], []
    for rel in files_below(folder, folders):
        (out if is_image_name(os.path.basename(rel), suffix) else left_out).append(rel)
    refuse_folders_named_like_images(folder, folders, lambda name: is_image_name(name, suffix))
    if not out:
        raise FileNotFoundError(f"no images ({suffix or '/'.join(IMAGE_EXTENSIONS)}) found under {folder}")
    left_out = [f for f in left_out if not os.path.basename(f).startswith(".")]  # .DS_Store and the like
    if left_out and os.path.abspath(folder) not in _WARNED:
        _WARNED.add(os.path.abspath(folder))
        logger.warning("%d file(s) under %s are not %s images and are left out, e.g. %s", len(left_out), folder,
                       suffix or "JPEG/PNG", ", ".join(left_out[:3]))
    return sorted(out)


_WARNED: set = set()  # folders whose left-out files were named once in this process


def flat_name(rel_path: str) -> str:
    """`a/b/x.jpg` → `a__b__x.png`: a unique flat PNG file name for an image path relative to its folder."""
    stem = os.path.splitext(os.path.normpath(rel_path))[0]
    return stem.replace(os.sep, "__").replace("/", "__") + ".png"


def unique_names(rel_paths: Sequence[str]) -> list[str]:
    """`flat_name` of each path; raises ValueError naming two paths that would share a name."""
    names, seen = [], {}
    for rel in rel_paths:
        name = flat_name(rel)
        if name in seen:
            raise ValueError(f"images {seen[name]} and {rel} would share the item name {name} (used for pseudo "
                             "labels and predictions); rename one of them")
        seen[name] = rel
        names.append(name)
    return names


def id_map_lut(pairs: Sequence = (), path: str = "", num_classes: int = 255) -> Optional[np.ndarray]:
    """Lookup table (65536,) uint8 raw id → train id from [[raw, train], …] `pairs` or a JSON file
    `path` ({"raw": train} or pairs; wins when set); ids not listed → 255. None when neither is given.
    Both are checked by `check_id_pairs` (train ids below `num_classes`)."""
    where = "DATASETS.FOLDER.ID_MAP"
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"id map file not found: {path}{where_read(path)} (DATASETS.FOLDER.ID_MAP_FILE)")
        data = read_json(path)
        where = f"id map file {path} (DATASETS.FOLDER.ID_MAP_FILE)"
        if isinstance(data, dict):
            try:
                pairs = [[int(raw), train] for raw, train in data.items()]
            except ValueError:
                raise ValueError(f"{where}: its keys must be raw ids (integers), got {list(data)[:5]}") from None
        else:
            pairs = data
    if not pairs:
        return None
    check_id_pairs(pairs, num_classes, where)
    lut = np.full(65536, IGNORE_LABEL, dtype=np.uint8)
    for raw, train in pairs:
        lut[raw] = train
    return lut


def check_id_pairs(pairs, num_classes: int, where: str = "DATASETS.FOLDER.ID_MAP") -> None:
    """An id map (`where` names it in errors): [raw id, train id] pairs of ints, raw in [0, 65535] (8- or
    16-bit label files), train id in [0, num_classes) or the ignore label, no raw id mapped to two train ids."""
    if not isinstance(pairs, (list, tuple)):
        raise ValueError(f"{where}: expected a list of [raw id, train id] pairs, got {pairs!r}")
    mapped: dict = {}
    for entry in pairs:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in entry)):
            raise ValueError(f"{where}: entry {entry!r} is not a [raw id, train id] pair of ints; write a list of "
                             "pairs, e.g. [[7, 0], [8, 1]]")
        raw, train = entry
        if not 0 <= raw <= 65535:
            raise ValueError(f"{where}: entry {list(entry)!r} has raw id {raw}; expected a label file value in "
                             "[0, 65535]")
        if not (0 <= train < num_classes or train == IGNORE_LABEL):
            raise ValueError(f"{where}: entry {list(entry)!r} has train id {train}; expected one in [0, {num_classes}) "
                             f"(MODEL.NUM_CLASSES) or {IGNORE_LABEL} (ignore)")
        if mapped.setdefault(raw, train) != train:
            raise ValueError(f"{where}: raw id {raw} is mapped to {mapped[raw]} and to {train}; expected one train id "
                             "per raw id")


class ImageSizePlaceholder:
    """Mixin: with `placeholder_at_image_size` set (build_dataset does it for unlabelled test sets), an
    item without a label file gets its all-255 label at the *original image's* size, not the resized
    input's, so predictions are made at the image's own size (test-server export, --format-only)."""

    placeholder_at_image_size = False

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.placeholder_at_image_size:
            i = index[0] if isinstance(index, (tuple, list)) else index
            img_path, label_path = self.items[i]
            if self.labels == "none" or label_path is None or not os.path.isfile(label_path):
                with Image.open(img_path) as img:
                    w, h = displayed_size(img)
                if tuple(item["label"].shape) != (h, w):
                    item["label"] = torch.full((h, w), IGNORE_LABEL, dtype=torch.int64)
        return item


class FolderDataset(ImageSizePlaceholder, SegmentationDataset):
    """Images below `image_dir` (recursive), labels optionally from `label_dir` mapped by `id_lut`.

    Args:
        image_dir: folder searched recursively for JPEG/PNG files (or `image_suffix`).
        list_file: optional list of image paths (relative to `image_dir`, or absolute).
        label_dir: folder of label maps mirroring `image_dir`; "" = no labels.
        image_suffix / label_suffix: label name = image name with `image_suffix` (default: its
            extension) replaced by `label_suffix`.
        id_lut: raw id → train id table (`id_map_lut`); None = the files hold train ids.
    """

    def __init__(self, image_dir: str, transform, list_file: str = "", num_classes: int = 19,
                 labels: str = "none", label_dir: str = "", image_suffix: str = "", label_suffix: str = ".png",
                 id_lut: Optional[np.ndarray] = None):
        if label_dir and labels == "required" and not os.path.isdir(label_dir):  # (read without labels: no matter)
            raise FileNotFoundError(f"label folder not found: {label_dir!r}{where_read(label_dir)} "
                                    "(DATASETS.FOLDER.VAL_LABEL_DIR)")
        rel = read_list_file(list_file) if list_file else find_images(image_dir, image_suffix)
        rel = [os.path.relpath(r, image_dir) if os.path.isabs(r) else r for r in rel]
        self.names = unique_names(rel)
        self.image_dir, self.label_dir = image_dir, label_dir
        items = [(os.path.join(image_dir, r), self._label_path(r, image_suffix, label_suffix) if label_dir else None)
                 for r in rel]
        super().__init__(items, transform, labels, num_classes)
        self.id_lut = id_lut

    def no_label_message(self, image_path: str) -> str:
        """Which config key gives a folder dataset its labels: only folder_val has any."""
        return (f"folder dataset {self.image_dir} has no label folder (image {image_path or '(unnamed)'}), and "
                "labels are required for this use: use folder_val with its labels in DATASETS.FOLDER.VAL_LABEL_DIR "
                "(folder_train has no labels)")

    def _label_path(self, rel: str, image_suffix: str, label_suffix: str) -> str:
        if image_suffix and rel.endswith(image_suffix):
            base = rel[: -len(image_suffix)]
        else:
            base = os.path.splitext(rel)[0]
        return os.path.join(self.label_dir, base + label_suffix)

    def decode_label(self, path: str) -> np.ndarray:
        raw = read_label_indices(path)
        if self.id_lut is None:  # train ids already: a 16-bit file's values past 255 are no train id
            if raw.dtype != np.uint8 and raw.size and int(raw.max()) > 255:
                bad = np.unique(raw[raw > 255])[:5].tolist()
                raise ValueError(f"label file {path} holds values {bad} above 255; the files of a folder dataset "
                                 "hold train ids (0..K-1, 255 ignore) unless DATASETS.FOLDER.ID_MAP or ID_MAP_FILE "
                                 "maps their raw ids")
            return raw.astype(np.uint8)
        return self.id_lut[raw]

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["name"] = self.names[index[0] if isinstance(index, (tuple, list)) else index]
        return item


class PseudoLabelDataset(SegmentationDataset):
    """The images of another dataset (`base`, e.g. a FolderDataset) with train labels read from
    `pseudo_dir/<item name>` (as spcl.pseudo writes them, at any resolution: resized to the image)."""

    resize_label_to_image = True

    def __init__(self, base: SegmentationDataset, pseudo_dir: str, transform, num_classes: int = 19):
        if not pseudo_dir or not os.path.isdir(pseudo_dir):
            raise FileNotFoundError(f"pseudo-label folder not found: {pseudo_dir!r}{where_read(pseudo_dir)} "
                                    "(config key DATASETS.PSEUDO_DIR; write it with tools/gen_pseudo.py)")
        self.names = list(getattr(base, "names", [os.path.basename(p) for p, _ in base.items]))
        items = [(img, os.path.join(pseudo_dir, n)) for (img, _), n in zip(base.items, self.names)]
        super().__init__(items, transform, "required", num_classes)

    def decode_label(self, path: str) -> np.ndarray:
        return read_label_indices(path)

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["name"] = self.names[index[0] if isinstance(index, (tuple, list)) else index]
        return item
