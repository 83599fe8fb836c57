"""Writes the toy datasets in the real folder layouts (GTA5 source, Cityscapes target), with a
manifest that makes regeneration a no-op when nothing changed. Called by tools/make_toy.py and
tools/train.py (configs with DATASETS.TOY.GENERATE), and by the tests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from spcl.data.datasets import cityscapes as cs
from spcl.data.datasets import gta5
from spcl.data.labels import cityscapes_labelid_palette
from spcl.utils.io import make_folder

from .scene import render_scene
from .styles import (LOCK_NAME, MANIFEST_NAME, SOURCE_STYLE, TARGET_STYLE, TOY_VERSION, TRAIN_CITIES, VAL_CITIES,
                     DomainStyle)

logger = logging.getLogger("spcl")


def _planned_files(root: Path, num_source: int, num_target_train: int, num_target_val: int
                   ) -> list[tuple[DomainStyle, tuple[int, int, int], Path, Path]]:
    """Every image to write: (style, (domain, split, index) seed key, image path, label path)."""
    plan = []
    for i in range(num_source):
        name = f"{i + 1:05d}.png"
        gta = root / "gta5"
        plan.append((SOURCE_STYLE, (0, 0, i), gta / gta5.IMAGE_DIR / name, gta / gta5.LABEL_DIR / name))
    splits = (("train", 0, num_target_train, TRAIN_CITIES), ("val", 1, num_target_val, VAL_CITIES))
    for split, code, n, cities in splits:
        per_city = -(-n // len(cities)) if n else 1
        for i in range(n):
            city, frame = cities[i // per_city], i % per_city
            stem = f"{city}_000000_{frame:06d}"
            plan.append((TARGET_STYLE, (1, code, i),
                         root / "cityscapes" / cs.IMAGE_DIR / split / city / (stem + cs.IMAGE_SUFFIX),
                         root / "cityscapes" / cs.LABEL_DIR / split / city / (stem + cs.LABEL_SUFFIX)))
    return plan


def generate_toy_dataset(root: str | os.PathLike, seed: int = 0, num_source: int = 200,
                         num_target_train: int = 200, num_target_val: int = 50,
                         size: tuple[int, int] = (128, 64), overwrite: bool = False) -> dict:
    """Writes the toy source (GTA5 layout) and target (Cityscapes layout) datasets under `root`.

    A no-op when `root/toy_manifest.json` records the same arguments, `TOY_VERSION` and style
    fingerprint (a hash of `SOURCE_STYLE` and `TARGET_STYLE`) and every file exists, so
    callers may call it every time. Otherwise (or with `overwrite=True`) the `gta5/` and
    `cityscapes/` folders of an earlier toy generation are deleted and written again. Folders with
    those names that were not made by this function (no manifest) are never deleted.

    Args:
        root: output folder (created if missing).
        seed: base seed; image i of a (domain, split) uses `default_rng([seed, domain, split, i])`.
        num_source: source images, `gta5/images/NNNNN.png` + palette labels `gta5/labels/NNNNN.png`.
        num_target_train: target train images, split over the cities `TRAIN_CITIES`.
        num_target_val: target val images, in `VAL_CITIES`.
        size: (width, height) in pixels.
        overwrite: regenerate even when the manifest matches.

    Returns:
        dict with `root`, `generated` (False for a no-op), the three counts, `size`, the `gta5` and
        `cityscapes` folders and the `manifest` path.
    """
    root = Path(root)
    if seed < 0 or min(num_source, num_target_train, num_target_val) < 0:
        raise ValueError(f"seed and counts must be non-negative, got seed={seed} "
                         f"{(num_source, num_target_train, num_target_val)}")
    if int(size[0]) < 16 or int(size[1]) < 8:
        raise ValueError(f"size must be at least (16, 8) (width, height), got {tuple(size)}")
    make_folder(str(root), "toy dataset folder")
    with _exclusive_lock(root / LOCK_NAME):  # parallel runs (benchmark seeds) share a DATA_DIR
        return _generate(root, seed, num_source, num_target_train, num_target_val, size, overwrite)


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """An advisory exclusive lock on `path` (POSIX flock; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _generate(root: Path, seed: int, num_source: int, num_target_train: int, num_target_val: int,
              size: tuple[int, int], overwrite: bool) -> dict:
    width, height = (int(v) for v in size)
    counts = {"num_source": num_source, "num_target_train": num_target_train,
              "num_target_val": num_target_val}
    styles = hashlib.sha256(repr((SOURCE_STYLE, TARGET_STYLE)).encode()).hexdigest()[:16]
    manifest = {"version": TOY_VERSION, "styles": styles, "seed": int(seed),
                **{k: int(v) for k, v in counts.items()}, "size": [width, height]}
    manifest_path = root / MANIFEST_NAME
    plan = _planned_files(root, num_source, num_target_train, num_target_val)
    info = {"root": str(root), **counts, "size": [width, height], "gta5": str(root / "gta5"),
            "cityscapes": str(root / "cityscapes"), "manifest": str(manifest_path)}

    old = None
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = {}
    if (not overwrite and old is not None and old.get("complete") and
            {k: v for k, v in old.items() if k != "complete"} == manifest and
            all(img.is_file() and lab.is_file() for *_, img, lab in plan)):
        logger.info("toy dataset in %s is up to date (%s)", root, manifest)
        return {**info, "generated": False}
    for sub in ("gta5", "cityscapes"):
        if (root / sub).exists():
            if old is None:
                raise FileExistsError(f"{root / sub} exists but {manifest_path} does not: refusing to "
                                      "overwrite a folder that generate_toy_dataset did not create")
            shutil.rmtree(root / sub)
    if old is not None:  # per-class file indexes (tools/prepare_data.py) describe the images being replaced
        for index in root.glob("*_class_index.json"):
            index.unlink()

    root.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({**manifest, "complete": False}, indent=2) + "\n")
    palette = cityscapes_labelid_palette()
    for style, key, img_path, lab_path in plan:
        rng = np.random.default_rng([int(seed), *key])
        image, label = render_scene(rng, style, (width, height))
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lab_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(img_path)
        if key[0] == 0:  # GTA5: palette PNG whose indices are labelIds
            lab_img = Image.fromarray(label, "P")
            lab_img.putpalette(palette)
            lab_img.save(lab_path)
        else:            # Cityscapes: grey PNG of labelIds
            Image.fromarray(label, "L").save(lab_path)
    manifest_path.write_text(json.dumps({**manifest, "complete": True}, indent=2) + "\n")
    logger.info("wrote toy dataset to %s: %d source, %d target train, %d target val images at %dx%d",
                root, num_source, num_target_train, num_target_val, width, height)
    return {**info, "generated": True}
