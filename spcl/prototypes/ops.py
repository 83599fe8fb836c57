"""The pixel-feature operations of paper Sec. 3.2, in one place: per-pixel L2 norms and
normalisation over channels, labels resized to the feature map, and per-class sums / means of the
normalised features (the class means of Eq. 2 and the batch means of Eq. 3).

Used by the prototype bank (Eq. 3), the source-set initialisation (Eq. 2), the contrastive loss
(Eq. 4) and the analyses (class centres of the CCD, docs/method.md "Analyses"). Everything here
reads the B×C×h×w map through views: no normalised, transposed or per-class copy of it (at the
paper's sizes such a copy costs hundreds of MB and a pass over memory).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spcl.data.labels import IGNORE_LABEL

EPS = 1e-12  # as F.normalize: q / max(‖q‖, eps)
_NORM_BLOCK = 32  # channels summed per step: a B×32×h×w temporary instead of a B×C×h×w one


def normalize_pixels(feat: torch.Tensor) -> torch.Tensor:
    """q / max(‖q‖, eps) of every pixel of B×C×h×w features, in fp32 (the readable form; a copy)."""
    return F.normalize(feat.float(), dim=1, eps=EPS)


def downsample_mask(label, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of B×H×W labels (or a list of H_i×W_i labels of mixed sizes) to
    B×h×w (e.g. the feature resolution), int64."""
    if isinstance(label, (list, tuple)):
        return torch.stack([downsample_mask(x[None], size)[0] for x in label])
    if tuple(label.shape[-2:]) == tuple(size):
        return label.long()
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def pixel_matrix(feat: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A view of the B×C×h×w map as B×C×N (`channels_first`, contiguous memory) or B×N×C
    (channels-last memory), N = h·w. Only a map that is neither is copied."""
    B, C, h, w = feat.shape
    if feat.is_contiguous():
        return feat.view(B, C, h * w), True
    if feat.is_contiguous(memory_format=torch.channels_last):
        return feat.permute(0, 2, 3, 1).reshape(B, h * w, C), False
    return feat.contiguous().view(B, C, h * w), True


def pixel_norm(x: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """‖q‖ of every pixel of a `pixel_matrix` view → B×N (not clamped)."""
    if not channels_first:  # B×N×C: the reduction runs over contiguous memory
        return torch.linalg.vector_norm(x, dim=2)
    C = x.shape[1]
    if C <= _NORM_BLOCK or x.device.type != "cpu":  # GPU reductions handle the stride well
        return torch.linalg.vector_norm(x, dim=1)
    # a strided reduction over C is slow on CPUs and `x*x` would be a full-size copy: sum by blocks
    acc = torch.zeros(x.shape[0], x.shape[2], dtype=x.dtype, device=x.device)
    for c in range(0, C, _NORM_BLOCK):
        block = x[:, c:c + _NORM_BLOCK]
        acc.add_((block * block).sum(1))
    return acc.sqrt_()


@torch.no_grad()
def class_feature_sums(feat: torch.Tensor, mask: torch.Tensor, num_classes: int,
                       ignore_index: int = IGNORE_LABEL, dtype: torch.dtype = torch.float32
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of L2-normalised pixel features and pixel counts.

    One batched matrix product of the raw features with the B×N×K one-hot mask scaled by 1/‖q‖
    (no loop over classes). In `dtype` (fp32; fp64 for the analyses) whatever the autocast context.
    The plain form is
    `one_hot(mask)ᵀ · normalize_pixels(feat)`; tests compare the two.

    Args:
        feat: B×C×h×w raw features (contiguous or channels-last).
        mask: B×h×w labels; `ignore_index` and values outside [0, K) are left out.
    Returns:
        sums K×C, counts K (both `dtype`).
    """
    B, C, h, w = feat.shape
    with torch.autocast(feat.device.type, enabled=False):
        x, channels_first = pixel_matrix(feat.to(dtype))  # B×C×N or B×N×C, a view
        inv_norm = 1.0 / pixel_norm(x, channels_first).clamp_min(EPS)  # B×N
        mask = mask.to(feat.device).long().reshape(B, h * w)
        valid = (mask != ignore_index) & (mask >= 0) & (mask < num_classes)
        onehot = F.one_hot(torch.where(valid, mask, 0), num_classes).to(x.dtype)  # B×N×K
        onehot = onehot * valid[..., None]
        counts = onehot.sum(dim=(0, 1))  # K
        weights = onehot * inv_norm[..., None]  # B×N×K
        if channels_first:
            sums = torch.bmm(x, weights).sum(0).t()  # B×C×K → K×C
        else:
            sums = torch.bmm(weights.transpose(1, 2), x).sum(0)  # B×K×C → K×C
    return sums.contiguous(), counts


def class_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """K×C means from per-class sums and counts; a class without pixels gets a zero row."""
    return sums / counts.clamp_min(1)[:, None].to(sums.dtype)
