"""Sliding-window inference (config TEST.SLIDING, TEST.WINDOW, TEST.STRIDE).

Decision: the window slides over the image *as the model sees it*, i.e. after the test resize to
INPUT.TEST_SIZE (and after each TEST.SCALES factor), not over the original file. Windows then cover
the same field of view at the same scale the model was trained at, and a window equal to the resized
image is exactly whole-image inference. Each window's logits are upsampled bilinearly to the window's
size and added into a full-size canvas; every pixel's sum is divided by the number of windows that
covered it (overlaps averaged); `predict_probs` then upsamples the canvas to the output size and
takes the softmax as usual (flip and multi-scale still average softmaxes). A window that holds the
whole image returns the model's logits unchanged, so it equals whole-image inference exactly (at
every scale, whatever the output size).

Window positions per axis: 0, s, 2s, … and a last window flush with the far border, so every pixel is
covered (`window_starts`). A window larger than the image is clipped to the image.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` along an axis of `length` pixels;
    the last one ends at `length`. One window (at 0) when `window >= length`."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"sliding window and stride must be positive, got window {window}, stride {stride}")
    if window >= length:
        return [0]
    if stride > window:
        raise ValueError(f"sliding stride {stride} is larger than the window {window}: pixels between windows "
                         "would never be predicted (TEST.STRIDE <= TEST.WINDOW)")
    n = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(n)})


def sliding_logits(model: nn.Module, images: torch.Tensor, window: Sequence[int],
                   stride: Sequence[int]) -> torch.Tensor:
    """Logits B×K×H×W at the input's resolution (or the model's own logits when one window holds the
    whole image) from windows of `window` = (W, H) every `stride` =
    (W, H) over `images` B×3×H×W; overlapping window logits are averaged."""
    _, _, h, w = images.shape
    win_w, win_h = min(int(window[0]), w), min(int(window[1]), h)
    ys = window_starts(h, win_h, int(stride[1]))
    xs = window_starts(w, win_w, int(stride[0]))
    if (win_h, win_w) == (h, w):  # one window holding the whole image: whole-image inference, as is
        return model(images)["logits"]
    total, count = None, torch.zeros(1, 1, h, w, device=images.device, dtype=torch.float32)
    for y in ys:
        for x in xs:
            crop = images[:, :, y:y + win_h, x:x + win_w]
            logits = model(crop)["logits"].float()
            logits = F.interpolate(logits, size=(win_h, win_w), mode="bilinear", align_corners=False)
            if total is None:
                total = torch.zeros(images.shape[0], logits.shape[1], h, w, device=images.device,
                                    dtype=torch.float32)
            total[:, :, y:y + win_h, x:x + win_w] += logits
            count[:, :, y:y + win_h, x:x + win_w] += 1
    return total / count


def sliding_window(window: Sequence[int], stride: Sequence[int]):
    """A `logits_fn` for `predict_probs` / `Segmentor.predict`: sliding windows of `window` (W, H)
    every `stride` (W, H). Checks the sizes now, so a bad config fails before the first image."""
    window, stride = (int(window[0]), int(window[1])), (int(stride[0]), int(stride[1]))
    for win, st in zip(window, stride):
        window_starts(win + 1, win, st)  # validates

    def logits_fn(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return sliding_logits(model, images, window, stride)

    logits_fn.window, logits_fn.stride = window, stride
    return logits_fn


def sliding_from_cfg(cfg, sliding=None):
    """The `logits_fn` of the config's test protocol: sliding windows when TEST.SLIDING (or
    `sliding` is True), else None (whole image)."""
    use = cfg.TEST.SLIDING if sliding is None else sliding
    return sliding_window(cfg.TEST.WINDOW, cfg.TEST.STRIDE) if use else None
