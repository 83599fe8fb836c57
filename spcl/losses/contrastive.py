"""Prototype contrastive loss (paper Eq. 4 and 6, SPEC §4).

For each pixel feature q (L2-normalised over channels) with label y:
    L = CE([q·p_1, …, q·p_K] / τ, y),   mean over pixels whose label is not 255.
Prototypes are constants (no gradient); the gradient reaches the features only.

Vectorised without normalised or transposed copies of the B×C×h×w map: the dot products are one
1x1 convolution of the raw features with the prototypes (B×K×h×w, small), divided by the per-pixel
feature norm (B×1×h×w). Math in fp32 whatever the autocast context.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def prototype_logits(feat: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """(q / ||q||) · p_k / τ for every pixel: feat B×C×h×w, prototypes K×C → B×K×h×w (fp32)."""
    feat = feat.float()
    protos = prototypes.detach().float().to(feat.device)
    dots = F.conv2d(feat, protos[:, :, None, None])  # B×K×h×w = q·p_k (unnormalised q)
    norm = torch.linalg.vector_norm(feat, dim=1, keepdim=True).clamp_min(1e-12)  # B×1×h×w
    return dots / (norm * temperature)


class PrototypeContrastiveLoss(nn.Module):
    """`loss(feat, mask, prototypes)` → mean CE of SPEC §4 over valid pixels.

    Args:
        temperature: τ (released code: 100; usual contrastive value: 0.1).
        ignore_index: mask value left out.
    Call args:
        feat: B×C×h×w raw encoder features (normalised inside).
        mask: B×h×w int64 class labels at feature resolution, `ignore_index` ignored.
        prototypes: K×C (not trained by this loss).
    """

    def __init__(self, temperature: float = 100.0, ignore_index: int = 255):
        super().__init__()
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def forward(self, feat: torch.Tensor, mask: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if feat.shape[0] != mask.shape[0] or feat.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"feature map {tuple(feat.shape)} and mask {tuple(mask.shape)} differ in B×h×w")
        if prototypes.shape[1] != feat.shape[1]:
            raise ValueError(f"prototypes {tuple(prototypes.shape)} do not match feature channels {feat.shape[1]}")
        logits = prototype_logits(feat, prototypes, self.temperature)
        mask = mask.to(logits.device).long()
        if not (mask != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
