"""The prototype bank (paper Eq. 3): K×C class prototypes as an `nn.Module` buffer, so it lands in every
checkpoint, updated under `no_grad` by the EMA of paper Eq. 3 with per-class sums and counts summed
over all processes first (every process holds the same bank)."""
from __future__ import annotations

import torch
import torch.nn as nn

from spcl.utils import comm

from .ops import class_feature_sums, class_means


class PrototypeBank(nn.Module):
    """Class prototypes p (K×C buffer `prototypes`) with the EMA update of paper Eq. 3.

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
        mean = class_means(sums, counts)  # K×C
        p = self.prototypes
        new = self.alpha * p + (1.0 - self.alpha) * mean.to(p.dtype)
        if self.absent == "keep":
            new = torch.where(present[:, None], new, p)
        p.copy_(new)
        return counts

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, alpha={self.alpha}, absent={self.absent}"
