"""Paired image/label transforms (docs/method.md "Inputs"). Labels are always resized nearest-neighbour.

Every transform takes `(image, label, rng)`: a PIL RGB image, an H×W uint8 numpy label (or None) and
a `random.Random` owned by the sample, so augmentations are the same whatever the number of loader
workers and after a resume. `build_transform` (in build.py) assembles them per role.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .labels import IGNORE_LABEL

Label = Optional[np.ndarray]


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.array(Image.fromarray(label).resize(size, Image.NEAREST))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, label: Label, rng: random.Random):
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label


class Resize:
    """Resize image (bilinear) and, if `resize_label`, the label (nearest) to `size` = (W, H)."""

    def __init__(self, size: Sequence[int], resize_label: bool = True):
        self.size = (int(size[0]), int(size[1]))
        self.resize_label = resize_label

    def __call__(self, image, label, rng):
        if image.size != self.size:
            image = image.resize(self.size, Image.BILINEAR)
        if label is not None and self.resize_label and label.shape[::-1] != self.size:
            label = _resize_label(label, self.size)
        return image, label


class RandomScaleCrop:
    """Resize to `base_size` × s (s uniform in `scale`), pad (label 255) and crop `crop_size`."""

    def __init__(self, base_size: Sequence[int], scale: Sequence[float], crop_size: Sequence[int]):
        self.base = (int(base_size[0]), int(base_size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.crop = (int(crop_size[0]), int(crop_size[1]))

    def __call__(self, image, label, rng):
        s = rng.uniform(*self.scale)
        w, h = max(1, round(self.base[0] * s)), max(1, round(self.base[1] * s))
        image = image.resize((w, h), Image.BILINEAR)
        if label is not None:
            label = _resize_label(label, (w, h))
        cw, ch = self.crop
        if w < cw or h < ch:  # pad bottom/right: image with zeros, label with ignore
            pw, ph = max(cw, w), max(ch, h)
            canvas = Image.new("RGB", (pw, ph))
            canvas.paste(image, (0, 0))
            image = canvas
            if label is not None:
                padded = np.full((ph, pw), IGNORE_LABEL, dtype=np.uint8)
                padded[:h, :w] = label
                label = padded
            w, h = pw, ph
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if label is not None:
            label = label[y:y + ch, x:x + cw]
        return image, label


class RandomHorizontalFlip:
    """Flip image and label left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, label, rng):
        if self.p > 0 and rng.random() < self.p:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            if label is not None:
                label = np.ascontiguousarray(label[:, ::-1])
        return image, label


class ColorJitter:
    """torchvision-style colour jitter (brightness, contrast, saturation, hue) driven by `rng`."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        self.b, self.c, self.s, self.h = brightness, contrast, saturation, hue

    def __call__(self, image, label, rng):
        ops = []
        if self.b > 0:
            f = rng.uniform(max(0.0, 1 - self.b), 1 + self.b)
            ops.append(lambda im, f=f: TF.adjust_brightness(im, f))
        if self.c > 0:
            f = rng.uniform(max(0.0, 1 - self.c), 1 + self.c)
            ops.append(lambda im, f=f: TF.adjust_contrast(im, f))
        if self.s > 0:
            f = rng.uniform(max(0.0, 1 - self.s), 1 + self.s)
            ops.append(lambda im, f=f: TF.adjust_saturation(im, f))
        if self.h > 0:
            f = rng.uniform(-self.h, self.h)
            ops.append(lambda im, f=f: TF.adjust_hue(im, f))
        rng.shuffle(ops)
        for op in ops:
            image = op(image)
        return image, label


class ToTensor:
    """Image → normalised float tensor 3×H×W; label → int64 tensor H×W (None stays None).

    `to_bgr255`: Caffe-style input (BGR, 0–255, minus `mean` given in 0–255 units of RGB order).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_bgr255: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.to_bgr255 = to_bgr255

    def __call__(self, image, label, rng):
        t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        if self.to_bgr255:
            t = (t - self.mean * 255.0)[[2, 1, 0]]
        else:
            t = (t / 255.0 - self.mean) / self.std
        lt = None if label is None else torch.from_numpy(np.asarray(label, dtype=np.int64))
        return t, lt
