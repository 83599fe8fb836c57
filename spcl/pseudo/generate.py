"""Pseudo-label generation (paper Eq. 5, docs/method.md "Pseudo labels") with one model pass: each image's
prediction and quantised confidence are cached on disk (uint8 + uint16, compressed) while the class
thresholds accumulate, then labels are written from the cache. `cache=False` runs the model a second
time instead. With a `resume_key` the cache outlives an interrupted run: a rerun with the same key reuses
the predictions of every image already cached and runs the model on the others only; given the images as `ImageBatches`,
it does not even read the images whose batch is cached.

Labels: 8-bit PNGs of train labels (255 = below threshold), one per target image, named like the
image, at the model's input resolution (INPUT.TEST_SIZE). Beside them `thresholds.json` holds the
thresholds, the share of pixels kept per class and, when ground truth exists, the labels' quality.
"""
from __future__ import annotations

import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from spcl.data.io import write_label_png
from spcl.data.labels import IGNORE_LABEL, class_names
from spcl.modeling import predict_probs
from spcl.prototypes.ops import downsample_mask
from spcl.utils import comm
from spcl.utils.io import atomic_write, atomic_write_json, json_roundtrip, read_json, remove_temp_files
from spcl.utils.progress import progress as _iterate

from .thresholds import ClassThresholds

logger = logging.getLogger("spcl")


@dataclass(frozen=True)
class ImageBatches:
    """A process's images as its test loader batches them, loadable batch by batch, so that a resumed pass
    reads only the batches it has still to predict.

    names: per batch, the names its items carry ("name" of the loader's batches), in loader order.
    load: batch numbers (ascending) → an iterable of exactly those batches, each with the same images (in
        the same order) as in the whole loader; the model then sees the batches of an uninterrupted pass.
    Iterating it yields every batch (`load` of all of them).
    """

    names: list
    load: Callable[[list], Iterable]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.load(list(range(len(self.names)))))


@torch.no_grad()
def generate_pseudo_labels(model, loader, output_dir: str, num_classes: int, device: torch.device,
                           cap: float = 0.9, num_bins: int = 65536, cache: bool = True, flip: bool = False,
                           progress: bool = False, amp_dtype=None, quality=None, oracle: str = "",
                           resume_key: Optional[dict] = None) -> dict:
    """Write pseudo labels for every image of `loader` (test transforms) into `output_dir`.

    Args:
        loader: the batches (dicts with "image", "label", "name"); or `ImageBatches`, with which a resumed pass
            reads only the images of the batches it has still to predict.
        quality: optional evaluator (`process(pred, label)`, `evaluate()`, e.g. SemSegEvaluator) that
            measures the labels on their kept pixels where the loader has ground truth. With it, the
            summary also gives per class the share of all ground-truth pixels of the class (kept or
            dropped) whose pseudo label is that class (`labelled_correctly`): a class near 0 there is
            one that training on these labels cannot learn; and `confusion_on_kept_pixels`, the K×K
            pixel counts of the kept pixels with ground truth (row = true class, column = pseudo
            label): what the wrong labels of each class say instead.
        oracle: a diagnostic. "kept" writes the ground truth on the pixels the thresholds keep (255
            elsewhere), "all" the ground truth on every pixel; "" (default) the predictions. Every
            image of `loader` then needs ground truth.
        resume_key: what the predictions depend on (JSON-able: the config, the weights file's identity, the
            number of processes). The cache of a run that did not finish, made with an equal key, is reused
            image by image (its files are written whole or not at all); any other cache is discarded.
    Returns the summary also written as `output_dir/thresholds.json`.
    """
    if oracle not in ("", "kept", "all"):
        raise ValueError(f"oracle = {oracle!r}; expected '', 'kept' or 'all'")
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    cache_root = os.path.join(output_dir, ".cache")
    cache_dir = os.path.join(cache_root, f"rank{comm.get_rank()}")  # one per process: each removes only its own
    stats = ClassThresholds(num_classes, cap, num_bins)
    names_seen = []
    reuse = cache and _open_cache(cache_dir, resume_key)

    def forward(batch):
        images = batch["image"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            probs = predict_probs(model, images, tuple(images.shape[-2:]), flip=flip)
        conf, pred = probs.float().max(dim=1)
        return stats.quantize(conf).cpu(), pred.cpu()

    passes = 1
    batches, every_name, reused = _to_predict(loader, cache_dir, stats) if reuse else (loader, None, 0)
    for batch in _iterate(batches, "pseudo labels: predict", enabled=progress):
        cached = _read_cached(cache_dir, batch["name"]) if reuse and every_name is None else None
        if cached is not None:  # predicted by an interrupted run with the same key
            for bins, pred in cached:
                stats.update_bins(bins, pred)
            reused += len(cached)
            names_seen.extend(batch["name"])
            continue
        bins, pred = forward(batch)
        stats.update_bins(bins, pred)
        if cache:
            gts = _ground_truth_like(batch["label"], pred)
            for j, name in enumerate(batch["name"]):
                extra = {} if gts is None else {"gt": gts[j].numpy().astype(np.uint8)}
                _write_cached(os.path.join(cache_dir, name + ".npz"), bins=bins[j].numpy().astype(np.uint16),
                              pred=pred[j].numpy().astype(np.uint8), **extra)
        names_seen.extend(batch["name"])
    if every_name is not None:
        names_seen = every_name  # the cached images and the predicted ones, in loader order
    if reused:
        logger.info("pseudo labels: %d of %d image(s) predicted by an interrupted run with the same model and "
                    "config; the model ran on the other %d", reused, len(names_seen), len(names_seen) - reused)
    threshold_bins = stats.compute_bins()
    thresholds = stats.compute()

    kept = torch.zeros(num_classes, dtype=torch.float64)
    predicted = torch.zeros(num_classes, dtype=torch.float64)
    gt_pixels = torch.zeros(num_classes, dtype=torch.float64)  # every labelled gt pixel, kept or dropped
    written = torch.zeros(2, dtype=torch.float64)  # labelled pixels in the written files, all their pixels

    def write(name, bins, pred, gt):
        """Label one image; `gt` (same size, or None) measures the labels' quality on kept pixels."""
        label = ClassThresholds.label_bins(bins, pred, threshold_bins)
        predicted.add_(torch.bincount(pred.reshape(-1), minlength=num_classes).double())
        kept.add_(torch.bincount(label[label != IGNORE_LABEL], minlength=num_classes).double())
        if oracle:
            if gt is None:
                raise ValueError(f"PSEUDO.ORACLE {oracle!r}: target image {name} has no ground truth (or only ignored "
                                 "pixels); the oracle labels need the target training set's labels")
            label = gt.clone() if oracle == "all" else torch.where(label != IGNORE_LABEL, gt, IGNORE_LABEL)
        write_label_png(os.path.join(output_dir, name), label.numpy().astype(np.uint8))
        written.add_(torch.tensor([float((label != IGNORE_LABEL).sum()), float(label.numel())], dtype=torch.float64))
        if gt is not None and quality is not None:
            quality.process(label[None], torch.where(label[None] == IGNORE_LABEL, IGNORE_LABEL, gt[None]))
            gt_pixels.add_(torch.bincount(gt[(gt >= 0) & (gt < num_classes)], minlength=num_classes).double())

    if cache:
        for name in _iterate(names_seen, "pseudo labels: write", enabled=progress):
            data = np.load(os.path.join(cache_dir, name + ".npz"))
            gt = torch.from_numpy(data["gt"].astype(np.int64)) if "gt" in data else None
            write(name, torch.from_numpy(data["bins"].astype(np.int64)),
                  torch.from_numpy(data["pred"].astype(np.int64)), gt)
        shutil.rmtree(cache_dir, ignore_errors=True)  # not cache_root: other processes may still read theirs
    else:
        passes = 2
        for batch in _iterate(loader, "pseudo labels: write", enabled=progress):
            bins, pred = forward(batch)
            gts = _ground_truth_like(batch["label"], pred)
            for j, name in enumerate(batch["name"]):
                write(name, bins[j], pred[j], None if gts is None else gts[j])

    kept = comm.all_reduce_sum(kept)
    predicted = comm.all_reduce_sum(predicted)
    written = comm.all_reduce_sum(written)
    summary = {
        "thresholds": thresholds.tolist(),
        "class_names": list(class_names(num_classes)) if num_classes in (16, 19) else None,
        "kept_fraction": (kept.sum() / predicted.sum().clamp_min(1)).item(),
        "kept_fraction_per_class": (kept / predicted.clamp_min(1)).tolist(),
        # what the label files hold: the kept fraction, except under an oracle (ground truth written)
        "labelled_fraction": (written[0] / written[1].clamp_min(1)).item(),
        "num_images": comm.all_reduce_sum(torch.tensor(len(names_seen), dtype=torch.float64)).item(),
        "model_passes": passes,
        "cap": cap,
        "num_bins": num_bins,
    }
    if oracle:
        summary["oracle"] = oracle
    if quality is not None and (quality.confusion.sum() > 0 or comm.get_world_size() > 1):
        q = quality.evaluate()
        if q["num_pixels"] > 0:
            summary["quality_on_kept_pixels"] = {"mIoU": q["mIoU"], "aAcc": q["aAcc"], "IoU": q["IoU"]}
            confusion = comm.all_reduce_sum(quality.confusion.double().clone().to(comm.reduce_device())).cpu()
            correct = confusion.diag()
            gt_all = comm.all_reduce_sum(gt_pixels.to(comm.reduce_device())).cpu()
            summary["labelled_correctly"] = torch.where(gt_all > 0, 100 * correct / gt_all.clamp_min(1),
                                                        torch.full_like(gt_all, float("nan"))).tolist()
            summary["confusion_on_kept_pixels"] = confusion.long().tolist()
    if comm.is_main_process():
        atomic_write_json(summary, os.path.join(output_dir, "thresholds.json"))
    comm.synchronize()
    if cache and comm.is_main_process():
        shutil.rmtree(cache_root, ignore_errors=True)  # every process has removed its own folder by now
    return summary


KEY = "key.json"


def _open_cache(cache_dir: str, resume_key: Optional[dict]) -> bool:
    """Prepare this process's cache folder; True when it holds an interrupted run's predictions made with
    `resume_key` (kept), else it is emptied (and, with a key, the key recorded for a rerun)."""
    key_path = os.path.join(cache_dir, KEY)
    key = None if resume_key is None else json_roundtrip(resume_key)
    if key is not None and os.path.isfile(key_path):
        try:
            if read_json(key_path) == key:
                remove_temp_files(cache_dir, live_writers=True)  # the folder is this rank's alone
                return True
        except (OSError, ValueError):
            pass
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    if key is not None:
        atomic_write_json(key, key_path)
    return False


def _write_cached(path: str, **arrays) -> None:
    """One image's cache file, written to a temp file and renamed: whole or absent after a kill. A failed write
    (a full disk) leaves no temp file and raises one OSError naming `path`."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True, what="pseudo-label cache file")


def _read_cached(cache_dir: str, names) -> Optional[list]:
    """[(bins, pred)] of the images `names` from the cache, or None unless every one is there and readable."""
    out = []
    for name in names:
        try:
            with np.load(os.path.join(cache_dir, name + ".npz")) as data:
                out.append((torch.from_numpy(data["bins"].astype(np.int64)),
                            torch.from_numpy(data["pred"].astype(np.int64))))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
    return out


def _to_predict(loader, cache_dir: str, stats: ClassThresholds) -> tuple:
    """For a resumed pass: (the batches to iterate; with `ImageBatches`, every image name in loader order, else
    None; the number of images reused). With `ImageBatches` the cached batches go into `stats` here and only
    the others are loaded; a plain loader is iterated whole (the loop reuses its cached batches)."""
    if not isinstance(loader, ImageBatches):
        return loader, None, 0
    todo, reused = _reuse_cached(loader, cache_dir, stats)
    batches = _expected(loader.load(todo) if todo else [], [loader.names[b] for b in todo])
    return batches, [name for names in loader.names for name in names], reused


def _reuse_cached(batches: ImageBatches, cache_dir: str, stats: ClassThresholds) -> tuple[list, int]:
    """Add to `stats` the cached predictions of every batch of `batches` whose images are all cached and
    readable; returns (the numbers of the other batches, to predict; how many images were reused)."""
    todo, reused = [], 0
    for number, names in enumerate(batches.names):
        cached = _read_cached(cache_dir, names)
        if cached is None:  # one missing or torn file: the whole batch again, as an uninterrupted pass batched it
            todo.append(number)
            continue
        for bins, pred in cached:
            stats.update_bins(bins, pred)
        reused += len(cached)
    return todo, reused


def _expected(batches: Iterable, names: list):
    """`batches`, each checked to hold the images `names` says, in number too (else a RuntimeError naming both)."""
    count = 0
    for batch in batches:
        expected = list(names[count]) if count < len(names) else []
        if list(batch["name"]) != expected:
            raise RuntimeError(f"pseudo labels: ImageBatches.load gave a batch of {list(batch['name'])}; expected "
                               f"{expected or 'no more batches'}")
        count += 1
        yield batch
    if count != len(names):
        raise RuntimeError(f"pseudo labels: ImageBatches.load gave {count} batch(es); expected {len(names)}")


def _ground_truth_like(label: torch.Tensor, pred: torch.Tensor):
    """Ground truth B×H×W resized (nearest) to the predictions' size, or None when all ignored."""
    gt = downsample_mask(label, tuple(pred.shape[-2:]))  # labels of mixed sizes come as a list
    return gt if (gt != IGNORE_LABEL).any() else None
