"""Pixel-wise cross-entropy on upsampled logits with a temperature (released code: the source CE
divides the logits by LOSS.SOURCE_TEMPERATURE = 1.8 in warm-up and align; 1.0 elsewhere)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spcl.data.labels import IGNORE_LABEL


def upsample_like(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of B×K×h×w logits to the label's H×W."""
    if logits.shape[-2:] == label.shape[-2:]:
        return logits
    return F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)


def segmentation_ce(logits: torch.Tensor, label: torch.Tensor, temperature: float = 1.0,
                    ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """Mean CE over valid pixels of `logits` (B×K×h×w, upsampled to the label) / temperature.

    Args:
        logits: B×K×h×w.
        label: B×H×W int64, `ignore_index` left out.
    Returns:
        scalar (0 with a graph when no pixel is valid).
    """
    logits = upsample_like(logits.float(), label) / temperature
    if not (label != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, label, ignore_index=ignore_index)
