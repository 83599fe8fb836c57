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

Per dataset: a raw-id map (DATASETS.FOLDER.ID_MAP / ID_MAP_FILE, a folder set's `id_lut`) that maps none of
the values its label files hold to a class, so that every pixel of every checked label becomes 255, is an error
(`IdMapWatch`; it used to surface only later as "the test set has no labels").
Counts that differ from the published dataset sizes (`KNOWN_SIZES`) are warnings, not errors.
A dataset is checked in each role it has in the run (DATASETS.SOURCE / TARGET / TEST, `run_roles`):
one name that is both source and test is checked with SOURCE_LIST and with TEST_LIST, as build_dataset
reads it for each (`list_role`).
`preflight` caches each result in `cache_dir/data_check_<name>.json` (`data_check_<name>.<role>.json`
for a second role) under a hash of the file list, every file's size and mtime and the dataset's label
decoding (its class and id tables), so a re-run costs one `stat` per file; touching a file re-checks.
Used by the stage trainers (`preflight`) and tools/check_data.py (`check_dataset`, `dataset_for_check`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from spcl.utils.io import inside

from .build import is_unlabelled, list_file_of, list_role, run_roles, unlabelled_why
from .datasets import (CityscapesDataset, CityscapesPseudoDataset, GTA5Dataset, SegmentationDataset,
                       SynscapesDataset, SynthiaDataset)
from .io import displayed_size, read_label_indices
from .labels import IGNORE_LABEL

logger = logging.getLogger("spcl")

CHECK_VERSION = 3  # part of the cache key: a change of the checks re-checks every dataset
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
        num_files: files checked: the images, and the label files the dataset names that are there or
            required (an item without any label file counts its image only).
        bad: (path, reason) of every bad file, one reason per file.
        bad_items: items with at least one bad file (excluded from `clean`).
        warnings: non-fatal remarks (e.g. a count differing from the published size).
        clean: list-file entries (the form DATASETS.*_LIST uses) of the good items, in dataset order.
        errors: problems of the dataset as a whole, not of one file (an id map that maps none of the label
            values to a class); they fail the check like a bad file.
    """

    name: str
    num_items: int = 0
    num_files: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    bad_items: int = 0
    warnings: list[str] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad and not self.errors

    def bad_lines(self) -> list[str]:
        """`path: reason`, one line per bad file."""
        return [f"{p}: {r}" for p, r in self.bad]

    def error_lines(self) -> list[str]:
        """`name: error`, one line per problem of the whole dataset."""
        return [f"{self.name}: {e}" for e in self.errors]

    def to_dict(self, with_clean: bool = True) -> dict:
        d = {"name": self.name, "num_items": self.num_items, "num_files": self.num_files,
             "bad": [list(b) for b in self.bad], "bad_items": self.bad_items, "warnings": list(self.warnings),
             "errors": list(self.errors)}
        if with_clean:
            d["clean"] = list(self.clean)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(name=d["name"], num_items=d["num_items"], num_files=d["num_files"],
                   bad=[tuple(b) for b in d["bad"]], bad_items=d["bad_items"], warnings=list(d["warnings"]),
                   clean=list(d.get("clean", [])), errors=list(d.get("errors", [])))


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
        for prefix in (f"cannot read image file {path}: ", f"cannot read label file {path}: ",
                       f"cannot read 16-bit PNG label file {path}: ",
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
        bad.append((image_path, "a folder, not an image file" if os.path.isdir(image_path) else "missing image file"))
    else:
        try:
            size = _image_size(image_path)
        except Exception as e:  # noqa: BLE001 (any reader failure is a bad file)
            bad.append((image_path, f"unreadable or truncated image: {_reason(e, image_path)}"))
    if dataset.labels == "none":
        return n, bad
    if label_path is None:  # an item the dataset has no label file for
        if dataset.labels == "required":
            bad.append((image_path, "no label file for this image, and labels are required here"))
        return n, bad
    if os.path.isdir(label_path):  # a mistake also where labels are optional (the read refuses it)
        bad.append((label_path, "a folder, not a label file"))
        return n + 1, bad
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
class IdMapWatch:
    """Watches the labels a check decodes with a dataset's raw-id map (`id_lut`, DATASETS.FOLDER.ID_MAP /
    ID_MAP_FILE): `problem()` says when the map gave no pixel of any of them a class although the files hold
    values, i.e. the map names none of the values the files use. Holds two counters, no array."""

    SHOWN = 8  # values and keys named in the message

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset
        self.lut = getattr(dataset, "id_lut", None)
        self.decoded, self.labelled = 0, False

    def watching(self) -> SegmentationDataset:
        """The dataset to check: itself without a map, else a shallow copy whose `load_label` reports here."""
        if self.lut is None:
            return self.dataset
        watched, load = copy.copy(self.dataset), self.dataset.load_label

        def load_label(path, image_path=""):
            label = load(path, image_path)
            self.decoded += 1
            self.labelled = self.labelled or bool((label != IGNORE_LABEL).any())
            return label

        watched.load_label = load_label
        return watched

    def problem(self) -> Optional[str]:
        """The error when every checked label became all 255 under the map while its files hold other values
        (re-reading the label files only then, until the first that holds any); else None."""
        if self.lut is None or self.labelled or not self.decoded:
            return None
        values, example = self._values_seen()
        if not values:  # the files hold only 255: unlabelled, not a wrong map
            return None
        keys = np.flatnonzero(self.lut != IGNORE_LABEL).tolist()
        return (f"DATASETS.FOLDER.ID_MAP (or ID_MAP_FILE) maps none of the label values it saw to a class, so every "
                f"pixel of the {self.decoded} label file(s) checked is ignore (255): values seen "
                f"{_few(values, self.SHOWN)} (e.g. in {example}); the map's keys (raw ids mapped to a class) are "
                f"{_few(keys, self.SHOWN)}. Write the map from the values the label files hold, or leave it empty "
                "when they hold train ids already")

    def _values_seen(self) -> tuple[list[int], str]:
        """(the sorted raw values other than 255 of the first label file that has any, its path) or ([], "")."""
        for _, label_path in self.dataset.items:
            if not label_path or not os.path.isfile(label_path):
                continue
            try:
                values = [v for v in np.unique(read_label_indices(label_path)).tolist() if v != IGNORE_LABEL]
            except (OSError, ValueError):  # a bad file, already named by its own check
                continue
            if values:
                return values, label_path
        return [], ""


def _few(values: Sequence[int], n: int) -> str:
    """`[1, 2, 3]`, or `[1, 2, …] (40 in all)` past `n` values."""
    if len(values) <= n:
        return str(list(values))
    return f"[{', '.join(str(v) for v in values[:n])}, …] ({len(values)} in all)"


def check_dataset(dataset: SegmentationDataset, name: str = "", progress: bool = False,
                  expected_size: Optional[int] = None) -> CheckResult:
    """Check every image and label file of `dataset` (see the module docstring), streaming.

    Args:
        dataset: a SegmentationDataset (its `items`, `labels`, `num_classes` and readers are used).
        name: name in messages (catalog name).
        progress: a progress bar on the main process.
        expected_size: published item count; a different `len(dataset)` is a warning.
    Returns:
        CheckResult with the bad files (one reason each), counts, warnings, the clean list and the dataset's
        own errors (an id map that maps none of its label values, `IdMapWatch`).
    """
    from spcl.utils.progress import progress as progress_bar

    name = name or type(dataset).__name__
    result = CheckResult(name=name, num_items=len(dataset))
    if expected_size is not None and len(dataset) != expected_size:
        result.warnings.append(f"{name} has {len(dataset):,} items; the full dataset has {expected_size:,}")
    watch = IdMapWatch(dataset)
    watched = watch.watching()
    for image_path, label_path in progress_bar(dataset.items, f"check {name}", enabled=progress):
        n, bad = check_item(watched, image_path, label_path)
        result.num_files += n
        if bad:
            result.bad.extend(bad)
            result.bad_items += 1
        else:
            result.clean.append(list_entry(dataset, image_path, label_path))
    if not dataset.items:
        result.warnings.append(f"{name} has no items")
    problem = watch.problem()
    if problem:
        result.errors.append(problem)
    return result


# ---------------------------------------------------------------------------- config level
def list_key(cfg, name: str, role: Optional[str] = None) -> str:
    """The config key whose list file selects `name`'s items read in run role `role` (SOURCE_LIST,
    TARGET_LIST, TEST_LIST; by default its first role, `list_role`); "" when it has no role in the run."""
    r = list_role(cfg, name, role)
    return f"DATASETS.{r.upper()}_LIST" if r else ""


def labels_mode(cfg, name: str, role: Optional[str] = None) -> str:
    """Labels checked for `name` read in run role `role` (by default its first): required for the source
    (even a set without labels: a stage learns from them) and the pseudo-label set, for a test set that
    has labels (none for one without), optional (checked where present) for the target training set."""
    role = list_role(cfg, name, role)
    if name == "cityscapes_pseudo" or role == "source":
        return "required"
    if role == "test":
        return "none" if is_unlabelled(cfg, name) else "required"
    return "optional"


def known_size(cfg, name: str, role: Optional[str] = None) -> Optional[int]:
    """The published size of `name` when the whole catalog set is used (no list file for `role`)."""
    key = list_key(cfg, name, role)
    if key and cfg.DATASETS[key.split(".")[1]]:
        return None
    return KNOWN_SIZES.get(name)


def dataset_for_check(cfg, name: str, role: Optional[str] = None) -> SegmentationDataset:
    """The catalog dataset `name` as the checks see it in run role `role` (by default its first role in
    the run): that role's list file, test transforms, `labels_mode`; raises FileNotFoundError for a missing
    folder or list file."""
    from .build import build_dataset

    role = list_role(cfg, name, role)
    return build_dataset(cfg, name, train=False, role="test", labels=labels_mode(cfg, name, role),
                         list_for=role or None)


def check_units(cfg, names: Iterable) -> list[tuple[str, str]]:
    """(name, run role) of each check the datasets `names` need. A name is checked in every role it has
    in the run (RUN_ROLES order; cityscapes_pseudo as the target's; ("name", "") for a name with none),
    leaving out a role whose list file and label mode are those of an earlier role of the name; a
    (name, run role) pair in `names` only in that role."""
    units, seen = [], set()
    for entry in dict.fromkeys(n for n in names if n):
        if isinstance(entry, tuple):
            name, roles = entry[0], [list_role(cfg, *entry)]
        else:
            name, roles = entry, run_roles(cfg, entry) or [""]
        for role in roles:
            what = (name, list_file_of(cfg, name, role), labels_mode(cfg, name, role))
            if what not in seen:
                seen.add(what)
                units.append((name, role))
    return units


def unit_label(cfg, name: str, role: str) -> str:
    """`name`, or `name (as test)` for a role other than its first one in the run (messages, cache file)."""
    return name if list_role(cfg, name) == role or not role else f"{name} (as {role})"


def split_label(label: str) -> tuple[str, str]:
    """(name, role) of a `unit_label`; role "" for a plain name (its first role)."""
    if label.endswith(")") and " (as " in label:
        name, role = label[:-1].split(" (as ")
        return name, role
    return label, ""


def clean_list_name(label: str) -> str:
    """The file tools/check_data.py writes the clean list of a `unit_label` into: clean_<name>.txt for a name's
    first role, clean_<name>.<role>.txt for another."""
    name, role = split_label(label)
    return f"clean_{name}{'.' + role if role else ''}.txt"


def fingerprint(dataset: SegmentationDataset, name: str) -> str:
    """Hash of what a check result depends on: the checks' version, the dataset's class, label mode
    and classes, its label decoding tables (`id_lut` of a folder set with DATASETS.FOLDER.ID_MAP /
    ID_MAP_FILE, `lut` of the catalog formats), and every file's path, size and mtime (missing files
    included)."""
    h = hashlib.sha256()
    h.update(json.dumps([CHECK_VERSION, name, type(dataset).__name__, dataset.labels, dataset.num_classes,
                         bool(dataset.resize_label_to_image)]).encode())
    for attr in ("id_lut", "lut"):  # raw id → train id: another table decodes the same files differently
        table = getattr(dataset, attr, None)
        digest = hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest() if table is not None else "none"
        h.update(f"{attr}\t{getattr(table, 'dtype', '')}\t{getattr(table, 'shape', '')}\t{digest}\n".encode())
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
    """`name` is a catalog name, or `name (as role)` (`unit_label`) → data_check_<name>.<role>.json."""
    base, role = split_label(name)
    return os.path.join(cache_dir, f"data_check_{base}{'.' + role if role else ''}.json")


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


def check_cached(cfg, name: str, cache_dir: str, progress: bool = True, role: Optional[str] = None) -> CheckResult:
    """`check_dataset` of catalog `name` read in run role `role` (by default its first), or its cached
    result when nothing it depends on changed (`fingerprint`)."""
    role = list_role(cfg, name, role)
    label = unit_label(cfg, name, role)
    dataset = dataset_for_check(cfg, name, role)
    key = fingerprint(dataset, name)
    cached = load_cached(cache_dir, label, key) if cache_dir else None
    if cached is not None:
        return cached
    result = check_dataset(dataset, label, progress=progress, expected_size=known_size(cfg, name, role))
    if cache_dir:
        save_cached(cache_dir, label, key, result)
    return result


def format_error(cfg, results: dict[str, CheckResult], missing: dict[str, str]) -> str:
    """The DataError message: what is wrong (up to MAX_NAMED files) and how to fix it."""
    lines = ["data check failed before the first iteration:"]
    for name, msg in missing.items():
        lines.append(f"  {name}: {msg}")
    named = 0
    total_bad = sum(len(r.bad) for r in results.values())
    for name, r in results.items():
        lines += [f"  {line}" for line in r.error_lines()]
        if r.bad:
            lines.append(f"  {name}: {len(r.bad)} bad file(s) in {r.bad_items} of {r.num_items} items")
        for line in r.bad_lines():
            if named < MAX_NAMED:
                lines.append(f"    {line}")
                named += 1
    if total_bad > named:
        lines.append(f"    … and {total_bad - named} more")
    # tools/check_data.py writes one clean list per (name, role) it checks (`clean_list_name`)
    keys = sorted({f"{clean_list_name(n)} as {list_key(cfg, *split_label(n))}" for n, r in results.items()
                   if r.bad and list_key(cfg, *split_label(n))})
    if not missing and not total_bad:  # only the datasets' own errors, each with its fix
        return "\n".join(lines)
    bad = [p for r in results.values() for p, _ in r.bad]
    pseudo = [p for p in bad if cfg.DATASETS.PSEUDO_DIR and inside(p, cfg.DATASETS.PSEUDO_DIR)]
    toy = [p for p in bad if cfg.DATASETS.TOY.GENERATE and inside(p, cfg.DATASETS.DATA_DIR)]
    if missing or len(set(pseudo) | set(toy)) < len(bad):  # not only files the run made (written again, not fetched)
        lines.append("Fix: repair or re-download these files, or run `python tools/check_data.py --config F "
                     "[KEY VALUE …]` with this run's config: it lists every bad file in bad_files.txt and writes "
                     "clean lists (default OUTPUT_DIR/check_data)" + (f"; use {', '.join(keys)}" if keys else "") + ".")
    if pseudo:
        lines.append(_pseudo_label_fix(cfg.DATASETS.PSEUDO_DIR))
    if toy:
        root = cfg.DATASETS.DATA_DIR  # only these two folders: DATA_DIR may also hold runs (OUTPUT_DIR inside it)
        lines.append(f"DATASETS.DATA_DIR {root} holds the generated toy dataset (DATASETS.TOY.GENERATE): delete "
                     f"its folders {os.path.join(root, 'gta5')} and {os.path.join(root, 'cityscapes')} and run "
                     "again, tools/train.py writes them again, byte for byte.")
    return "\n".join(lines)


def _pseudo_label_fix(pseudo_dir: str) -> str:
    """How to write bad pseudo labels again (they are made, not downloaded): the stage folder that holds
    them reruns when deleted (with the stages after it), a tools/gen_pseudo.py folder (it writes DIR/labels)
    by running it again; labels in a folder of another name are written anew and DATASETS.PSEUDO_DIR set."""
    made_in = os.path.dirname(os.path.normpath(pseudo_dir))
    if os.path.isfile(os.path.join(made_in, "manifest.json")):  # a pipeline stage folder
        how = f"delete the stage folder {made_in} and run again: that stage and the stages after it rerun"
    elif os.path.basename(os.path.normpath(pseudo_dir)) == "labels":
        how = f"run tools/gen_pseudo.py again with --output {made_in}"
    else:  # not where gen_pseudo.py writes: its --output would not be this folder
        how = ("write them again with tools/gen_pseudo.py --checkpoint C --output DIR, which writes DIR/labels, "
               "and set DATASETS.PSEUDO_DIR DIR/labels")
    return f"The pseudo labels in DATASETS.PSEUDO_DIR {pseudo_dir} are made by the model, not downloaded: {how}."


def preflight(cfg, names: Iterable[str], cache_dir: str, progress: bool = True) -> dict[str, CheckResult]:
    """Check the catalog datasets `names` that a stage reads, before its first iteration, each in every
    role it has in the run, or in the one role of a (name, role) pair (`check_units`: a name that is source
    and test is checked with both lists).

    The main process checks (or reuses the cache in `cache_dir`) and writes the cache; the other
    processes wait, then read the same cache, so every process raises the same error.

    Returns:
        {name: CheckResult} (warnings are logged); a name's second role as `name (as role)`.
    Raises:
        DataError naming up to ten bad files with reasons, missing dataset folders / list files, and
        the fix (tools/check_data.py and its clean lists).
    """
    from spcl.utils import comm

    units = check_units(cfg, names)
    for name, role in units:
        if role == "source" and is_unlabelled(cfg, name):  # every item would be bad: say why, in one line
            raise DataError(f"DATASETS.SOURCE {name} has no labels ({unlabelled_why(cfg, name)}), and every stage "
                            "that reads the source reads its labels: set DATASETS.SOURCE to a labelled set")

    def run(show: bool):
        results, missing = {}, {}
        for name, role in units:
            label = unit_label(cfg, name, role)
            try:
                results[label] = check_cached(cfg, name, cache_dir, progress=show, role=role or None)
            except FileNotFoundError as e:
                missing[label] = str(e)
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
