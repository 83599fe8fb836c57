"""Class-wise confidence thresholds (paper Eq. 5; docs/method.md "Pseudo labels") in bounded memory.

Confidence = max softmax probability, predicted class = argmax. The threshold of class k is the
upper median of the confidences of every pixel predicted as k (element round(n/2) of the sorted
values, as the released code takes it), capped at `cap`; a class never predicted gets 0.

Instead of keeping every confidence (the released code holds ≈19 GB for Cityscapes train), each
class keeps a histogram of `num_bins` equal bins over [0, 1] (K × num_bins int64: 10 MB at the
default 65,536 bins). The threshold is the lower edge of the bin holding the median element, so it
is within 1/num_bins (1.5e-5) of the exact value; pixels are kept by comparing their bin with the
threshold's bin, so labels and thresholds agree exactly. Histograms add up over processes.
"""
from __future__ import annotations

import math

import torch

from spcl.data.labels import IGNORE_LABEL
from spcl.utils import comm


class ClassThresholds:
    """Streaming per-class median-confidence thresholds.

    Args:
        num_classes: K.
        cap: upper bound on every threshold (released code: 0.9).
        num_bins: histogram resolution over [0, 1] (≤ 65,536 so bins fit uint16 caches).
    """

    def __init__(self, num_classes: int, cap: float = 0.9, num_bins: int = 65536):
        if not 1 <= num_bins <= 65536:
            raise ValueError(f"num_bins must be in [1, 65536], got {num_bins}")
        self.num_classes, self.cap, self.num_bins = num_classes, float(cap), int(num_bins)
        self.reset()

    def reset(self) -> None:
        self.hist = torch.zeros(self.num_classes, self.num_bins, dtype=torch.int64)

    def quantize(self, conf: torch.Tensor) -> torch.Tensor:
        """Bin index of each confidence (int64, same shape)."""
        return (conf.float() * self.num_bins).long().clamp_(0, self.num_bins - 1)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Add a batch of softmax maps B×K×H×W (probabilities, not logits)."""
        conf, pred = probs.max(dim=1)
        self.update_bins(self.quantize(conf), pred)

    @torch.no_grad()
    def update_bins(self, bins: torch.Tensor, pred: torch.Tensor) -> None:
        """Add pixels given as confidence bins and predicted classes (same shapes)."""
        idx = pred.reshape(-1).long() * self.num_bins + bins.reshape(-1).long()
        counts = torch.bincount(idx, minlength=self.num_classes * self.num_bins)
        self.hist += counts.view(self.num_classes, self.num_bins).cpu()

    def compute_bins(self, reduce: bool = True) -> torch.Tensor:
        """Threshold of each class as a bin index (K,), over all processes when `reduce`."""
        hist = self.hist
        if reduce and comm.get_world_size() > 1:
            hist = comm.all_reduce_sum(hist.clone().to(comm.reduce_device())).cpu()
        n = hist.sum(1)  # K
        cum = hist.cumsum(1)  # K×bins
        rank = torch.tensor([int(round(v * 0.5)) for v in n.tolist()])  # 0-based element index
        # first bin whose cumulative count exceeds the rank holds the element
        median_bin = (cum <= rank[:, None]).sum(1)
        cap_bin = math.ceil(self.cap * self.num_bins - 1e-9)
        bins = torch.minimum(median_bin, torch.tensor(cap_bin))
        return torch.where(n > 0, bins, torch.zeros_like(bins))

    def compute(self, reduce: bool = True) -> torch.Tensor:
        """Thresholds (K,) in [0, cap], float64."""
        bins = self.compute_bins(reduce)
        return torch.minimum(bins.double() / self.num_bins, torch.tensor(self.cap, dtype=torch.float64))

    def label(self, probs: torch.Tensor, threshold_bins: torch.Tensor) -> torch.Tensor:
        """Pseudo labels B×H×W: argmax where the confidence reaches its class threshold, else 255."""
        conf, pred = probs.max(dim=1)
        return self.label_bins(self.quantize(conf), pred, threshold_bins)

    @staticmethod
    def label_bins(bins: torch.Tensor, pred: torch.Tensor, threshold_bins: torch.Tensor) -> torch.Tensor:
        keep = bins >= threshold_bins.to(bins.device)[pred]
        return torch.where(keep, pred, torch.full_like(pred, IGNORE_LABEL))
