"""Inference over a test loader and the one entry point that evaluates a checkpoint.

Single scale by default (docs/method.md "Evaluation": input at INPUT.TEST_SIZE, logits upsampled
bilinearly to the label size, argmax), flip and multi-scale as options. Feeds the evaluator and
optionally writes colour predictions and Cityscapes labelId PNGs. Used by the stage trainers (val
during training), tools/test.py, tools/analyze.py and the benchmarks.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from spcl.data import build_dataset, build_test_loader
from spcl.data.datasets.cityscapes import frame_stem
from spcl.data.labels import colorize, trainid_to_labelid_lut
from spcl.modeling import load_trained_segmentor, predict_probs
from spcl.utils.env import AMP_DTYPES, default_device
from spcl.utils.progress import progress as with_progress

from .evaluator import SemSegEvaluator


@torch.no_grad()
def run_inference(model, loader, num_classes: int, device: torch.device, scales: Sequence[float] = (1.0,),
                  flip: bool = False, color_dir: Optional[str] = None, labelid_dir: Optional[str] = None,
                  max_images: int = 0, progress: bool = False, amp_dtype: Optional[torch.dtype] = None) -> dict:
    """Evaluate `model` (not DDP-wrapped) on `loader` (items with `image`, `label` at its own size, `name`).

    Returns the evaluator's metrics (reduced over processes).
    """
    evaluator = SemSegEvaluator(num_classes)
    was_training = model.training
    model.eval()
    seen = 0
    lut = trainid_to_labelid_lut(num_classes) if labelid_dir else None
    for batch in with_progress(loader, "evaluate", enabled=progress):
        images = batch["image"].to(device)
        labels = batch["label"]
        if isinstance(labels, list):  # mixed label sizes (collate_mixed_labels): each at its own size
            groups = [(images[i:i + 1], labels[i][None]) for i in range(len(labels))]
        else:
            groups = [(images, labels)]
        preds = []
        for x, y in groups:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs = predict_probs(model, x, tuple(y.shape[-2:]), scales, flip)
            pred = probs.argmax(1).cpu()
            evaluator.process(pred, y)
            preds.extend(pred.numpy().astype(np.uint8))
        for name, p in zip(batch["name"], preds):
            base = os.path.splitext(name)[0]
            if color_dir:
                os.makedirs(color_dir, exist_ok=True)
                Image.fromarray(colorize(p, num_classes)).save(os.path.join(color_dir, base + ".png"))
            if labelid_dir:
                os.makedirs(labelid_dir, exist_ok=True)
                Image.fromarray(lut[p]).save(os.path.join(labelid_dir, frame_stem(name) + ".png"))
        seen += len(batch["name"])
        if max_images and seen >= max_images:
            break
    model.train(was_training)
    return evaluator.evaluate()


def evaluate_checkpoint(cfg, path: str, device: Optional[torch.device] = None, dataset: str = "",
                        scales: Optional[Sequence[float]] = None, flip: Optional[bool] = None,
                        color_dir: Optional[str] = None, labelid_dir: Optional[str] = None,
                        progress: bool = False) -> dict:
    """mIoU of checkpoint `path` on `dataset` (default DATASETS.TEST) with the test protocol of `cfg`
    (TEST.SCALES, TEST.FLIP, TEST.NUM_IMAGES, SOLVER.AMP; `scales` / `flip` override them).

    Returns the evaluator's metrics: mIoU, mAcc, aAcc, IoU (K, NaN where undefined), tail/13-class means.
    """
    device = device or default_device()
    model = load_trained_segmentor(cfg, path, device)
    loader = build_test_loader(cfg, build_dataset(cfg, dataset or cfg.DATASETS.TEST, train=False))
    return run_inference(model, loader, cfg.MODEL.NUM_CLASSES, device,
                         list(cfg.TEST.SCALES) if scales is None else scales,
                         cfg.TEST.FLIP if flip is None else flip, color_dir=color_dir, labelid_dir=labelid_dir,
                         max_images=cfg.TEST.NUM_IMAGES, progress=progress, amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP])
