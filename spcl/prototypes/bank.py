"""The prototype bank (SPEC §3): K×C class prototypes as an `nn.Module` buffer, so it lands in every
checkpoint, updated under `no_grad` by the EMA of paper Eq. 3 with per-class sums and counts summed
over all processes first (every process holds the same bank)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spcl.losses.contrastive import EPS, pixel_matrix, pixel_norm
from spcl.utils import comm


def downsample_mask(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of B×H×W labels to B×h×w (the feature resolution)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label.long()
    return F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()


@torch.no_grad()
def class_feature_sums(feat: torch.Tensor, mask: torch.Tensor, num_classes: int,
                       ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of L2-normalised pixel features and pixel counts.

    One batched matrix product of the raw features with the B×N×K one-hot mask scaled by 1/‖q‖:
    no normalised, transposed or per-class masked copy of the B×C×h×w map (contiguous or
    channels-last), and no loop over classes. fp32 whatever the autocast context.

    Args:
        feat: B×C×h×w raw features.
        mask: B×h×w labels; `ignore_index` and values ≥ K are left out.
    Returns:
        sums K×C (fp32), counts K (fp32).
    """
    B, C, h, w = feat.shape
    with torch.autocast(feat.device.type, enabled=False):
        x, channels_first = pixel_matrix(feat.float())  # B×C×N or B×N×C, a view
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


class PrototypeBank(nn.Module):
    """Class prototypes p (K×C buffer `prototypes`) with the EMA update of SPEC §3.

    Args:
        num_classes: K.
        dim: C, the encoder's channels.
        alpha: EMA momentum; p ← α·p + (1 − α)·batch mean (1.0 = fixed prototypes).
        absent: "keep" (paper) leaves classes absent from the batch unchanged; "decay" (released
            code) treats their batch mean as 0, so they shrink by α.
    """

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.1, absent: str = "keep"):
        super().__init__()
        if absent not in ("keep", "decay"):
            raise ValueError(f"absent must be 'keep' or 'decay', got {absent!r}")
        self.num_classes, self.dim, self.alpha, self.absent = num_classes, dim, float(alpha), absent
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))

    @torch.no_grad()
    def set(self, prototypes: torch.Tensor) -> None:
        """Replace the prototypes (K×C), e.g. with the source-set initialisation."""
        if tuple(prototypes.shape) != (self.num_classes, self.dim):
            raise ValueError(f"prototypes of shape {tuple(prototypes.shape)}; the bank holds "
                             f"({self.num_classes}, {self.dim})")
        self.prototypes.copy_(prototypes)

    @torch.no_grad()
    def update(self, feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """EMA step with this batch (summed over processes).

        Args:
            feat: B×C×h×w raw features (normalised inside).
            mask: B×h×w labels at feature resolution, 255 ignored.
        Returns:
            counts K of the pixels used (over all processes).
        """
        sums, counts = class_feature_sums(feat, mask, self.num_classes)
        packed = comm.all_reduce_sum(torch.cat([sums, counts[:, None]], dim=1))  # K×(C+1)
        sums, counts = packed[:, :-1], packed[:, -1]
        present = counts > 0
        mean = sums / counts.clamp_min(1)[:, None]
        p = self.prototypes
        new = self.alpha * p + (1.0 - self.alpha) * mean.to(p.dtype)
        if self.absent == "keep":
            new = torch.where(present[:, None], new, p)
        p.copy_(new)
        return counts

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, alpha={self.alpha}, absent={self.absent}"
