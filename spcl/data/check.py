"""Data preflight: find every unreadable, truncated, mis-sized or out-of-range image/label file of a
dataset before training reads it, and say which files and why.

Decision (bad files). A run never dies at iteration 12,000 because of one file. Every training stage
checks the lists it reads (`preflight`) before iteration 1 and, if any file is bad, stops there with
one `DataError` that names the files (up to ten, with a reason each) and the fix: run
`python tools/check_data.py --config F` and use the clean list it writes (`clean_<dataset>.txt`) as
DATASETS.SOURCE_LIST / TARGET_LIST / TEST_LIST, or repair the files. Bad files are never skipped
silently during training: a skipped file changes the sample stream (and the numbers) without
anyone deciding it; an explicit clean list is a recorded choice (GTA5 has known frames, e.g. 15188
and 17705, whose label size differs from the image).

What is checked, per (image, label) item, streaming (one file open at a time, nothing decoded kept,
memory flat in the number of items):

* image: exists; its header is readable (`PIL.Image.open(...).size`); a PNG's chunks are read to the
  end with their CRCs (`Image.verify`, no pixel decoding), which finds truncated and corrupt files;
  other formats (JPEG) are decoded once.
* label (unless the dataset has none): exists when labels are `required` (a missing `optional` label
  is an unlabelled image); decoded once with the dataset's own reader and id→trainId table; the raw
  ids must be ids of the format (Cityscapes labelIds 0..33 for GTA5, Synscapes and Cityscapes; class
  ids 0..22 for SYNTHIA: anything else means a colour-converted or corrupt label file), the train
  labels must lie in [0, K) or be 255 (the dataset's own range check, `SegmentationDataset.load_label`),
  and the label must have its image's size (unless the dataset resizes labels, as pseudo labels do).

Counts that differ from the published dataset sizes (`KNOWN_SIZES`) are warnings, not errors.
`preflight` caches each result in `cache_dir/data_check_<name>.json` under a hash of the file list
and every file's size and mtime, so a re-run costs one `stat` per file; touching a file re-checks.
Used by the stage trainers (`preflight`) and tools/check_data.py (`check_dataset`, `dataset_for_check`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from PIL import Image

from .datasets import (CityscapesDataset, CityscapesPseudoDataset, GTA5Dataset, SegmentationDataset,
                       SynscapesDataset, SynthiaDataset)
from .io import displayed_size

logger = logging.getLogger("spcl")

CHECK_VERSION = 2  # part of the cache key: a change of the checks re-checks every dataset
# Published sizes of the full datasets (a list file of another length is a warning, not an error).
KNOWN_SIZES = {"gta5_train": 24966, "synthia_train": 9400, "synscapes_train": 25000,
               "cityscapes_train": 2975, "cityscapes_val": 500, "cityscapes_pseudo": 2975}
MAX_NAMED = 10  # bad files named in a DataError message


class DataError(ValueError):
    """Bad or missing data files found before training; the message names them and the fix."""


@dataclass
class CheckResult:
    """What `check_dataset` found.

    Attributes:
        name: dataset name (catalog name when known).
        num_items: (image, label) items checked.
        num_files: files checked (images + labels present or required).
        bad: (path, reason) of every bad file, one reason per file.
        bad_items: items with at least one bad file (excluded from `clean`).
        warnings: non-fatal remarks (e.g. a count differing from the published size).
        clean: list-file entries (the form DATASETS.*_LIST uses) of the good items, in dataset order.
    """

    name: str
    num_items: int = 0
    num_files: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    bad_items: int = 0
    warnings: list[str] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def bad_lines(self) -> list[str]:
        """`path: reason`, one line per bad file."""
        return [f"{p}: {r}" for p, r in self.bad]

    def to_dict(self, with_clean: bool = True) -> dict:
        d = {"name": self.name, "num_items": self.num_items, "num_files": self.num_files,
             "bad": [list(b) for b in self.bad], "bad_items": self.bad_items, "warnings": list(self.warnings)}
        if with_clean:
            d["clean"] = list(self.clean)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(name=d["name"], num_items=d["num_items"], num_files=d["num_files"],
                   bad=[tuple(b) for b in d["bad"]], bad_items=d["bad_items"], warnings=list(d["warnings"]),
                   clean=list(d.get("clean", [])))


# ------------------------------------------------------------------------------ one file / item
def _image_size(path: str) -> tuple[int, int]:
    """(W, H) of an image file from its header, as the datasets read it (turned by its EXIF
    orientation); the whole file is read (CRCs for PNG, a decode for other formats) so truncated files
    fail here. Raises OSError/ValueError with the cause."""
    with Image.open(path) as img:
        if img.format != "PNG":
            img.load()
            return displayed_size(img)
        img.verify()  # every chunk to IEND with its CRC, no pixel decoding (and nothing else before it)
    with Image.open(path) as img:
        return displayed_size(img)


def _reason(e: BaseException, path: str = "") -> str:
    """First line of an error message, without the file's path (the report names it already)."""
    msg = (str(e).strip() or type(e).__name__).splitlines()[0]
    if path:
        for prefix in (f"cannot read image file {path}: ", f"cannot read 16-bit PNG label file {path}: ",
                       f"label file {path} "):
            msg = msg.replace(prefix, "")
        msg = msg.replace(path, "the file")
    return msg


def check_item(dataset: SegmentationDataset, image_path: str, label_path: Optional[str]
               ) -> tuple[int, list[tuple[str, str]]]:
    """(files checked, [(path, reason)] of its bad files) of one item of `dataset`."""
    bad, n = [], 1
    size = None
    if not os.path.isfile(image_path):
        bad.append((image_path, "missing image file"))
    else:
        try:
            size = _image_size(image_path)
        except Exception as e:  # noqa: BLE001 (any reader failure is a bad file)
            bad.append((image_path, f"unreadable or truncated image: {_reason(e, image_path)}"))
    if dataset.labels == "none" or label_path is None:
        return n, bad
    if not os.path.isfile(label_path):
        if dataset.labels == "required":
            bad.append((label_path, "missing label file"))
            return n + 1, bad
        return n, bad
    n += 1
    try:
        label = dataset.load_label(label_path)  # its own decode and range checks
    except OSError as e:
        bad.append((label_path, f"unreadable or truncated label: {_reason(e, label_path)}"))
        return n, bad
    except Exception as e:  # noqa: BLE001 (any reader failure is a bad file)
        msg = _reason(e, label_path)
        if msg.startswith("label id out of range"):
            bad.append((label_path, msg))
        elif "outside" in msg:  # the dataset's own range check
            bad.append((label_path, f"label id out of range: {msg}"))
        else:
            bad.append((label_path, f"not a label map: {msg}"))
        return n, bad
    if size is not None and not dataset.resize_label_to_image and label.shape != (size[1], size[0]):
        bad.append((label_path, f"label size {label.shape[1]}x{label.shape[0]} differs from its image's "
                                f"{size[0]}x{size[1]} ({image_path})"))
    del label
    return n, bad


def _common_tail(a: str, b: str) -> Optional[str]:
    pa, pb = os.path.normpath(a).split(os.sep), os.path.normpath(b).split(os.sep)
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    if n >= min(len(pa), len(pb)):
        return None
    return os.sep.join(pa[len(pa) - n:]) if n else None


def list_entry(dataset: SegmentationDataset, image_path: str, label_path: Optional[str]) -> str:
    """The line a DATASETS.*_LIST file needs to select this item of `dataset`.

    GTA5 / SYNTHIA / Synscapes: the path below the image folder (the part image and label paths
    share); Cityscapes (also pseudo): the path below `leftImg8bit/<split>`; otherwise (or when the
    item came from an absolute list entry) the absolute image path.
    """
    if isinstance(dataset, (CityscapesDataset, CityscapesPseudoDataset)):
        parts = os.path.normpath(image_path).split(os.sep)
        idx = [i for i, p in enumerate(parts) if p == "leftImg8bit"]
        if idx and len(parts) > idx[-1] + 2:
            return "/".join(parts[idx[-1] + 2:])
    elif isinstance(dataset, (GTA5Dataset, SynthiaDataset, SynscapesDataset)) and label_path:
        tail = _common_tail(image_path, label_path)
        if tail:
            return tail.replace(os.sep, "/")
    return os.path.abspath(image_path)


# --------------------------------------------------------------------------------- a dataset
def check_dataset(dataset: SegmentationDataset, name: str = "", progress: bool = False,
                  expected_size: Optional[int] = None) -> CheckResult:
    """Check every image and label file of `dataset` (see the module docstring), streaming.

    Args:
        dataset: a SegmentationDataset (its `items`, `labels`, `num_classes` and readers are used).
        name: name in messages (catalog name).
        progress: a progress bar on the main process.
        expected_size: published item count; a different `len(dataset)` is a warning.
    Returns:
        CheckResult with the bad files (one reason each), counts, warnings and the clean list.
    """
    from spcl.utils.progress import progress as progress_bar

    name = name or type(dataset).__name__
    result = CheckResult(name=name, num_items=len(dataset))
    if expected_size is not None and len(dataset) != expected_size:
        result.warnings.append(f"{name} has {len(dataset):,} items; the full dataset has {expected_size:,}")
    for image_path, label_path in progress_bar(dataset.items, f"check {name}", enabled=progress):
        n, bad = check_item(dataset, image_path, label_path)
        result.num_files += n
        if bad:
            result.bad.extend(bad)
            result.bad_items += 1
        else:
            result.clean.append(list_entry(dataset, image_path, label_path))
    if not dataset.items:
        result.warnings.append(f"{name} has no items")
    return result


# ---------------------------------------------------------------------------- config level
def list_key(cfg, name: str) -> str:
    """The config key whose list file selects `name`'s items (SOURCE_LIST, TARGET_LIST, TEST_LIST)."""
    d = cfg.DATASETS
    if name == d.SOURCE:
        return "DATASETS.SOURCE_LIST"
    if name == d.TARGET or name == "cityscapes_pseudo":
        return "DATASETS.TARGET_LIST"
    if name == d.TEST:
        return "DATASETS.TEST_LIST"
    return ""


def labels_mode(cfg, name: str) -> str:
    """Labels checked for `name`: required for the source, test and pseudo-label sets, optional
    (checked where present) for the unlabelled target training set."""
    d = cfg.DATASETS
    if name == "cityscapes_pseudo" or name in (d.SOURCE, d.TEST):
        return "required"
    return "optional"


def known_size(cfg, name: str) -> Optional[int]:
    """The published size of `name` when the whole catalog set is used (no list file)."""
    key = list_key(cfg, name)
    if key and cfg.DATASETS[key.split(".")[1]]:
        return None
    return KNOWN_SIZES.get(name)


def dataset_for_check(cfg, name: str) -> SegmentationDataset:
    """The catalog dataset `name` as the checks see it (test transforms, `labels_mode`); raises
    FileNotFoundError for a missing folder or list file."""
    from .build import build_dataset

    return build_dataset(cfg, name, train=False, role="test", labels=labels_mode(cfg, name))


def fingerprint(dataset: SegmentationDataset, name: str) -> str:
    """Hash of what a check result depends on: the checks' version, the dataset's class, label mode
    and classes, and every file's path, size and mtime (missing files included)."""
    h = hashlib.sha256()
    h.update(json.dumps([CHECK_VERSION, name, type(dataset).__name__, dataset.labels, dataset.num_classes,
                         bool(dataset.resize_label_to_image)]).encode())
    for image_path, label_path in dataset.items:
        for p in (image_path, label_path):
            if p is None:
                h.update(b"\0none\n")
                continue
            try:
                st = os.stat(p)
                h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()


def default_cache_dir(cfg) -> str:
    """Where tools/check_data.py and the stages keep the preflight cache: OUTPUT_DIR/data_check_cache."""
    return os.path.join(cfg.OUTPUT_DIR, "data_check_cache")


def _cache_path(cache_dir: str, name: str) -> str:
    return os.path.join(cache_dir, f"data_check_{name}.json")


def load_cached(cache_dir: str, name: str, key: str) -> Optional[CheckResult]:
    """The cached result of `name` when its key matches, else None."""
    try:
        with open(_cache_path(cache_dir, name)) as f:
            data = json.load(f)
        if data.get("key") != key:
            return None
        return CheckResult.from_dict(data["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_cached(cache_dir: str, name: str, key: str, result: CheckResult) -> None:
    """Store `result` (without its clean list: the file stays small) under `key`."""
    from spcl.utils.io import atomic_write_json

    try:
        atomic_write_json({"key": key, "result": result.to_dict(with_clean=False)}, _cache_path(cache_dir, name))
    except OSError as e:  # a read-only output folder only costs the next run a re-check
        logger.warning("could not write the data-check cache in %s: %s", cache_dir, e)


def check_cached(cfg, name: str, cache_dir: str, progress: bool = True) -> CheckResult:
    """`check_dataset` of catalog `name`, or its cached result when no file changed."""
    dataset = dataset_for_check(cfg, name)
    key = fingerprint(dataset, name)
    cached = load_cached(cache_dir, name, key) if cache_dir else None
    if cached is not None:
        return cached
    result = check_dataset(dataset, name, progress=progress, expected_size=known_size(cfg, name))
    if cache_dir:
        save_cached(cache_dir, name, key, result)
    return result


def format_error(cfg, results: dict[str, CheckResult], missing: dict[str, str]) -> str:
    """The DataError message: what is wrong (up to MAX_NAMED files) and how to fix it."""
    lines = ["data check failed before the first iteration:"]
    for name, msg in missing.items():
        lines.append(f"  {name}: {msg}")
    named = 0
    total_bad = sum(len(r.bad) for r in results.values())
    for name, r in results.items():
        if r.bad:
            lines.append(f"  {name}: {len(r.bad)} bad file(s) in {r.bad_items} of {r.num_items} items")
        for line in r.bad_lines():
            if named < MAX_NAMED:
                lines.append(f"    {line}")
                named += 1
    if total_bad > named:
        lines.append(f"    … and {total_bad - named} more")
    keys = sorted({f"clean_{n}.txt as {list_key(cfg, n)}" for n, r in results.items() if r.bad and list_key(cfg, n)})
    lines.append("Fix: repair or re-download these files, or run `python tools/check_data.py --config F "
                 "[KEY VALUE …]` with this run's config: it lists every bad file in bad_files.txt and writes "
                 "clean lists (default OUTPUT_DIR/check_data)" + (f"; use {', '.join(keys)}" if keys else "") + ".")
    return "\n".join(lines)


def preflight(cfg, names: Iterable[str], cache_dir: str, progress: bool = True) -> dict[str, CheckResult]:
    """Check the catalog datasets `names` that a stage reads, before its first iteration.

    The main process checks (or reuses the cache in `cache_dir`) and writes the cache; the other
    processes wait, then read the same cache, so every process raises the same error.

    Returns:
        {name: CheckResult} (warnings are logged).
    Raises:
        DataError naming up to ten bad files with reasons, missing dataset folders / list files, and
        the fix (tools/check_data.py and its clean lists).
    """
    from spcl.utils import comm

    names = list(dict.fromkeys(n for n in names if n))

    def run(show: bool):
        results, missing = {}, {}
        for name in names:
            try:
                results[name] = check_cached(cfg, name, cache_dir, progress=show)
            except FileNotFoundError as e:
                missing[name] = str(e)
        return results, missing

    results, missing = run(progress) if comm.is_main_process() else ({}, {})
    comm.synchronize()
    if not comm.is_main_process():
        results, missing = run(False)
    if comm.is_main_process():
        for r in results.values():
            for w in r.warnings:
                logger.warning("data check: %s", w)
    if missing or any(not r.ok for r in results.values()):
        raise DataError(format_error(cfg, results, missing))
    if comm.is_main_process():
        logger.info("data check passed: %s", ", ".join(f"{n} ({r.num_items} items)" for n, r in results.items()))
    return results


def write_list(path: str, entries: Sequence[str]) -> None:
    """A list file (one entry a line) usable as DATASETS.*_LIST."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for e in entries:
            f.write(e + "\n")
