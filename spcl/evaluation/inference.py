"""Inference over a test loader: single-scale by default (SPEC §6: input at INPUT.TEST_SIZE, logits
upsampled bilinearly to the label size, argmax), flip and multi-scale as options. Feeds the
evaluator and optionally writes colour predictions and Cityscapes labelId PNGs."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spcl.data.labels import colorize, trainid_to_labelid_lut
from spcl.utils import comm

from .evaluator import SemSegEvaluator


@torch.no_grad()
def predict_probs(model, images: torch.Tensor, out_size: tuple[int, int], scales: Sequence[float] = (1.0,),
                  flip: bool = False) -> torch.Tensor:
    """Softmax B×K×H×W at `out_size` (H, W), averaged over scales (of the input) and flips."""
    total = None
    count = 0
    h, w = images.shape[-2:]
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, size=(round(h * s), round(w * s)), mode="bilinear",
                                                  align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            xi = torch.flip(x, dims=[3]) if flipped else x
            logits = model(xi)["logits"].float()
            if flipped:
                logits = torch.flip(logits, dims=[3])
            probs = F.softmax(F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False), dim=1)
            total = probs if total is None else total + probs
            count += 1
    return total / count


@torch.no_grad()
def run_inference(model, loader, num_classes: int, device: torch.device, scales: Sequence[float] = (1.0,),
                  flip: bool = False, color_dir: Optional[str] = None, labelid_dir: Optional[str] = None,
                  max_images: int = 0, progress: bool = False, amp_dtype: Optional[torch.dtype] = None) -> dict:
    """Evaluate `model` on `loader` (items with `image`, `label` at its own size, `name`).

    Returns the evaluator's metrics (reduced over processes).
    """
    evaluator = SemSegEvaluator(num_classes)
    was_training = model.training
    model.eval()
    iterator = loader
    if progress and comm.is_main_process():
        from tqdm import tqdm
        iterator = tqdm(loader, desc="evaluate", leave=False)
    seen = 0
    lut = trainid_to_labelid_lut(num_classes) if labelid_dir else None
    for batch in iterator:
        images = batch["image"].to(device)
        labels = batch["label"]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            probs = predict_probs(model, images, tuple(labels.shape[-2:]), scales, flip)
        pred = probs.argmax(1).cpu()
        evaluator.process(pred, labels)
        for name, p in zip(batch["name"], pred.numpy().astype(np.uint8)):
            base = os.path.splitext(name)[0]
            if color_dir:
                os.makedirs(color_dir, exist_ok=True)
                Image.fromarray(colorize(p, num_classes)).save(os.path.join(color_dir, base + ".png"))
            if labelid_dir:
                os.makedirs(labelid_dir, exist_ok=True)
                Image.fromarray(lut[p]).save(os.path.join(labelid_dir, base.replace("_leftImg8bit", "") + ".png"))
        seen += len(batch["name"])
        if max_images and seen >= max_images:
            break
    model.train(was_training)
    return evaluator.evaluate()
