"""Inference over a test loader and the one entry point that evaluates a checkpoint.

Single scale by default (docs/method.md "Evaluation": input at INPUT.TEST_SIZE, logits upsampled
bilinearly to the label size, argmax), flip and multi-scale as options. Feeds the evaluator and
optionally writes predictions: `<stem>_labelIds.png` (Cityscapes labelIds), `<stem>_color.png`,
`<stem>_overlay.png` and a `legend.png`. Sliding-window inference (TEST.SLIDING) as an option.
`segment_image` predicts one image array (no dataset needed). Used by the stage trainers (val during
training), tools/test.py, tools/infer.py, tools/analyze.py and the benchmarks.
"""
from __future__ import annotations

import os
import random
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from spcl.data import build_dataset, build_test_loader, build_transform
from spcl.data.datasets.cityscapes import frame_stem
from spcl.data.io import read_image, to_rgb
from spcl.data.labels import colorize, legend, overlay, trainid_to_labelid_lut
from spcl.modeling import load_trained_segmentor, predict_probs
from spcl.modeling.batchnorm import reestimate_running_stats
from spcl.utils import comm
from spcl.utils.env import AMP_DTYPES, default_device
from spcl.utils.progress import progress as with_progress

from .evaluator import SemSegEvaluator
from .sliding import sliding_from_cfg


def prediction_stem(name: str) -> str:
    """The stem every prediction file of an item is named by: `city_000000_000019` for Cityscapes
    (`…_leftImg8bit.png`), else the name without its extension."""
    return frame_stem(name)


def save_prediction(pred: np.ndarray, stem: str, num_classes: int, labelid_dir: Optional[str] = None,
                    color_dir: Optional[str] = None, image: Optional[np.ndarray] = None,
                    alpha: float = 0.5) -> None:
    """Write the train-label map `pred` H×W as `labelid_dir/<stem>_labelIds.png` (Cityscapes labelIds)
    and `color_dir/<stem>_color.png` (palette), plus `color_dir/<stem>_overlay.png` (`image` H×W×3
    blended with the colours at `alpha`) when `image` is given (resized to `pred` if needed).
    `stem` may hold sub-folders (`a/b/x`); they are created."""
    pred = np.asarray(pred, dtype=np.uint8)

    def path(folder, suffix):
        out = os.path.join(folder, stem + suffix)
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        return out

    if labelid_dir:
        Image.fromarray(trainid_to_labelid_lut(num_classes)[pred]).save(path(labelid_dir, "_labelIds.png"))
    if color_dir:
        Image.fromarray(colorize(pred, num_classes)).save(path(color_dir, "_color.png"))
        if image is not None:
            if image.shape[:2] != pred.shape:
                image = np.array(Image.fromarray(image).resize(pred.shape[::-1], Image.BILINEAR))
            Image.fromarray(overlay(image, pred, num_classes, alpha)).save(path(color_dir, "_overlay.png"))


def write_legend(folder: str, num_classes: int) -> str:
    """`folder/legend.png`: the class colours with their names (once per output folder)."""
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, "legend.png")
    Image.fromarray(legend(num_classes)).save(out)
    return out


def unique_output_dir(parent: str, prefix: str) -> str:
    """A new folder `parent/<prefix>_<YYYYmmdd-HHMMSS>` (`_2`, `_3`, … appended when taken), created
    by the main process and the same on every process: earlier results are never overwritten."""
    import time

    name = [""]
    if comm.is_main_process():
        base = os.path.join(parent or ".", f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}")
        candidate, n = base, 1
        while True:
            try:
                os.makedirs(candidate)
                break
            except FileExistsError:
                n += 1
                candidate = f"{base}_{n}"
        name[0] = candidate
    if comm.is_dist():
        import torch.distributed as dist

        dist.broadcast_object_list(name, src=0)
    return name[0]


def _item_image(loader, index: int) -> Optional[np.ndarray]:
    """The original RGB image of dataset item `index` of `loader` (for overlays), or None."""
    items = getattr(getattr(loader, "dataset", None), "items", None)
    if items is None:
        return None
    return np.array(read_image(items[int(index)][0]))


@torch.no_grad()
def run_inference(model, loader, num_classes: int, device: torch.device, scales: Sequence[float] = (1.0,),
                  flip: bool = False, color_dir: Optional[str] = None, labelid_dir: Optional[str] = None,
                  progress: bool = False, amp_dtype: Optional[torch.dtype] = None,
                  logits_fn=None, evaluate: bool = True) -> dict:
    """Evaluate `model` (not DDP-wrapped) on `loader` (items with `image`, `label` at its own size, `name`).

    Predictions are made at each label's size. `logits_fn`: see `predict_probs` (e.g.
    `sliding_window(...)`; default whole image). With `color_dir`, writes `<stem>_color.png`,
    `<stem>_overlay.png` (original image blended 50 % with the colours) and one `legend.png`; with
    `labelid_dir`, `<stem>_labelIds.png` (Cityscapes labelIds; `stem` = `prediction_stem(name)`).
    `evaluate=False` computes no metrics (unlabelled sets, test-server export).

    Returns the evaluator's metrics (reduced over processes), or {"num_images": n} without `evaluate`.
    """
    evaluator = SemSegEvaluator(num_classes)
    was_training = model.training
    model.eval()
    seen = 0
    if color_dir and comm.is_main_process():
        write_legend(color_dir, num_classes)
    for batch in with_progress(loader, "evaluate" if evaluate else "predict", enabled=progress):
        images = batch["image"].to(device)
        labels = batch["label"]
        if isinstance(labels, list):  # mixed label sizes (collate_mixed_labels): each at its own size
            groups = [(images[i:i + 1], labels[i][None]) for i in range(len(labels))]
        else:
            groups = [(images, labels)]
        preds = []
        for x, y in groups:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs = predict_probs(model, x, tuple(y.shape[-2:]), scales, flip, logits_fn)
            pred = probs.argmax(1).cpu()
            if evaluate:
                evaluator.process(pred, y)
            preds.extend(pred.numpy().astype(np.uint8))
        if color_dir or labelid_dir:
            for j, (name, p) in enumerate(zip(batch["name"], preds)):
                image = _item_image(loader, batch["index"][j]) if color_dir else None
                save_prediction(p, prediction_stem(name), num_classes, labelid_dir, color_dir, image)
        seen += len(batch["name"])
    model.train(was_training)
    if not evaluate:
        return {"num_images": int(comm.all_reduce_sum(torch.tensor(float(seen))).item())}
    return evaluator.evaluate()


def evaluate_checkpoint(cfg, path: str, device: Optional[torch.device] = None, dataset: str = "",
                        scales: Optional[Sequence[float]] = None, flip: Optional[bool] = None,
                        color_dir: Optional[str] = None, labelid_dir: Optional[str] = None,
                        progress: bool = False, sliding: Optional[bool] = None, format_only: bool = False,
                        bn_stats_from: str = "") -> dict:
    """mIoU of checkpoint `path` on `dataset` (default DATASETS.TEST) with the test protocol of `cfg`
    (TEST.SCALES, TEST.FLIP, TEST.SLIDING / WINDOW / STRIDE, TEST.NUM_IMAGES, SOLVER.AMP; `scales`,
    `flip`, `sliding` override them). `format_only`: the set is read without labels, predictions
    are written (at each image's own size) and no metric is computed. `bn_stats_from`: a dataset
    name (e.g. cityscapes_train) whose images, read with the test transform and without labels,
    replace the BatchNorm running statistics before testing (AdaBN; spcl/modeling/batchnorm.py).

    Returns the evaluator's metrics: mIoU, mAcc, aAcc, IoU (K, NaN where undefined), tail/13-class
    means; with `format_only`, {"num_images": n}.
    """
    device = device or default_device()
    model = load_trained_segmentor(cfg, path, device, freeze_bn=False if bn_stats_from else None)
    if bn_stats_from:
        images = build_dataset(cfg, bn_stats_from, train=False, labels="none")
        reestimate_running_stats(model, build_test_loader(cfg, images, shard=False), device)
    ds = build_dataset(cfg, dataset or cfg.DATASETS.TEST, train=False, labels="none" if format_only else None)
    ds = ds.first(cfg.TEST.NUM_IMAGES)
    loader = build_test_loader(cfg, ds)
    return run_inference(model, loader, cfg.MODEL.NUM_CLASSES, device,
                         list(cfg.TEST.SCALES) if scales is None else scales,
                         cfg.TEST.FLIP if flip is None else flip, color_dir=color_dir, labelid_dir=labelid_dir,
                         progress=progress, amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP],
                         logits_fn=sliding_from_cfg(cfg, sliding), evaluate=not format_only)


def as_rgb_image(image) -> Image.Image:
    """An RGB PIL image of a PIL image (any mode; EXIF orientation applied, as `read_image` does for
    files) or of an H×W / H×W×3 / H×W×4 uint8 array (uint16 is scaled to 8 bits); anything else
    (a float array, a C×H×W tensor) is refused with what to pass instead."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        raise TypeError(f"image is a tensor of shape {tuple(image.shape)}; pass an H×W×3 uint8 array "
                        "(e.g. tensor.permute(1, 2, 0).numpy() of 0–255 values) or a PIL image")
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        arr = np.rint(arr * (255.0 / 65535.0)).astype(np.uint8)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise TypeError(f"image array of dtype {arr.dtype} and shape {arr.shape}; expected uint8 (0–255) of "
                        "shape H×W, H×W×3 (RGB) or H×W×4 (RGBA), or a PIL image")
    return Image.fromarray(arr).convert("RGB")


def preprocess_image(image, cfg) -> torch.Tensor:
    """The test input 3×H×W of an image (see `as_rgb_image`): resized to INPUT.TEST_SIZE, normalised
    (INPUT.PIXEL_MEAN/STD)."""
    tensor, _ = build_transform(cfg, "test")(as_rgb_image(image), None, random.Random(0))
    return tensor


@torch.no_grad()
def segment_images(model, images: Sequence, cfg, scales: Optional[Sequence[float]] = None,
                   flip: Optional[bool] = None, sliding: Optional[bool] = None,
                   device: Optional[torch.device] = None) -> list[np.ndarray]:
    """Train-label maps (H_i×W_i uint8) of several images (arrays or PIL images of any sizes; a PIL
    image's map has its size after its EXIF orientation), one forward pass per group of images that
    share a size. See `segment_image`."""
    device = device or next(model.parameters()).device
    scales = list(cfg.TEST.SCALES) if scales is None else list(scales)
    flip = cfg.TEST.FLIP if flip is None else flip
    logits_fn = sliding_from_cfg(cfg, sliding)
    amp_dtype = AMP_DTYPES[cfg.SOLVER.AMP]
    was_training = model.training
    model.eval()
    images = [as_rgb_image(im) for im in images]
    sizes = [(im.size[1], im.size[0]) for im in images]
    out: list = [None] * len(images)
    try:
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            x = torch.stack([preprocess_image(images[i], cfg) for i in idx]).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs = predict_probs(model, x, tuple(size), scales, flip, logits_fn)
            for i, p in zip(idx, probs.argmax(1).cpu().numpy().astype(np.uint8)):
                out[i] = p
    finally:
        model.train(was_training)
    return out


def segment_image(model, image, cfg, scales: Optional[Sequence[float]] = None, flip: Optional[bool] = None,
                  sliding: Optional[bool] = None, device: Optional[torch.device] = None) -> np.ndarray:
    """Train-label map H×W uint8 (0..K-1) of one image (H×W×3 uint8 RGB array, H×W greyscale, RGBA,
    or a PIL image of any mode, turned by its EXIF orientation) with the test protocol of `cfg`: resized
    to INPUT.TEST_SIZE, normalised, TEST.SCALES / TEST.FLIP / TEST.SLIDING (`scales`, `flip`, `sliding` override them), logits
    upsampled to the image's own size. `model`: e.g. `spcl.modeling.load_trained_segmentor(cfg, path)`.
    Cityscapes labelIds: `spcl.data.labels.trainid_to_labelid_lut(K)[labels]`; colours: `colorize`."""
    return segment_images(model, [image], cfg, scales, flip, sliding, device)[0]
