"""Per-pixel encoder features of labelled images from both domains, for the analyses (docs/method.md "Analyses").

The feature space is the one of the prototypes and the contrastive loss (paper Sec. 3.2): the encoder
output F (stride 8, `model(images)["feat"]`, B×C×h×w), **L2-normalised per pixel over channels**,
with the ground truth nearest-downsampled to F's size (255 = ignored). Everything streams: a pass
over 1,000 images keeps per-class sums (`FeatureStats`), never the pixels themselves.

Images: the source set (DATASETS.SOURCE, resized to INPUT.SOURCE_SIZE as in the `prototypes`
stage) and the labelled target set (DATASETS.TEST, Cityscapes val, at INPUT.TEST_SIZE as in
testing); labels stay at their own size until downsampled to F. A subset of N images is a seeded
random choice, the same for every checkpoint. Called by tools/analyze.py; ccd.py and embedding.py
consume what this module yields.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Subset

from spcl.data import build_dataset, build_test_loader
from spcl.data.labels import IGNORE_LABEL
from spcl.prototypes.ops import class_feature_sums, downsample_mask, normalize_pixels
from spcl.utils import comm

logger = logging.getLogger("spcl")
DOMAINS = ("source", "target")


def analysis_dataset(cfg, domain: str, name: str = ""):
    """The labelled dataset of a domain with evaluation transforms (no augmentation).

    Args:
        domain: "source" (DATASETS.SOURCE, images at INPUT.SOURCE_SIZE) or "target"
            (DATASETS.TEST by default, images at INPUT.TEST_SIZE).
        name: another catalog name for the domain, e.g. `cityscapes_train` (its gtFine labels) to
            measure on more than the 500 val images.
    Returns:
        a dataset of items `image` 3×H×W, `label` H_l×W_l at the label file's size, `name`.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    name = name or (cfg.DATASETS.SOURCE if domain == "source" else cfg.DATASETS.TEST)
    # source images at the size the model saw them at (as the prototypes stage)
    role = "source_eval" if domain == "source" else "test"
    return build_dataset(cfg, name, train=False, role=role, labels="required")


def select_images(num_total: int, num_images: int, seed: int = 0) -> list[int]:
    """Sorted indices of a seeded random subset of `num_images` of `num_total` (all when ≤ 0 or ≥ total)."""
    if num_images <= 0 or num_images >= num_total:
        return list(range(num_total))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(num_total, generator=g)[:num_images].tolist())


def analysis_loader(cfg, dataset, num_images: int, seed: int = 0, shard: bool = True) -> DataLoader:
    """An ordered loader over `select_images(len(dataset), num_images, seed)` (sharded over processes)."""
    return build_test_loader(cfg, Subset(dataset, select_images(len(dataset), num_images, seed)), shard=shard)


normalize_features = normalize_pixels  # per-pixel L2 normalisation over channels, fp32 (paper Sec. 3.2)


@torch.no_grad()
def iter_pixel_features(model, loader: Iterable, device: torch.device,
                        amp_dtype: Optional[torch.dtype] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised features B×C×h×w fp32, labels B×h×w int64 at feature resolution) per batch.

    `loader` yields dicts with `image` and `label` (a progress bar around a loader is fine).
    """
    model.eval()
    for batch in loader:
        images = batch["image"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feat = model(images)["feat"]
        feat = normalize_features(feat)
        yield feat, downsample_mask(batch["label"], tuple(feat.shape[-2:])).to(device)


@dataclass
class FeatureStats:
    """Per-class sufficient statistics of pixel features: Σx (K×C), Σ‖x‖² (K), pixel count (K), fp64.

    fp64 because the within-class spread is Σ‖x‖²/n − ‖mean‖², a difference of two numbers close to
    1 for tight classes of normalised features.
    """

    sums: torch.Tensor
    sq_sums: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, dim: int, device=None) -> "FeatureStats":
        z = dict(dtype=torch.float64, device=device)
        return cls(torch.zeros(num_classes, dim, **z), torch.zeros(num_classes, **z), torch.zeros(num_classes, **z))

    @property
    def num_classes(self) -> int:
        return self.counts.numel()

    @torch.no_grad()
    def update(self, feat: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_LABEL) -> None:
        """Add a batch: features B×C×h×w (L2-normalised per pixel here, as in the prototype space),
        labels B×h×w."""
        K, dev = self.num_classes, self.sums.device
        sums, counts = class_feature_sums(feat, mask, K, ignore_index, dtype=torch.float64)  # K×C, K
        y = mask.reshape(-1).to(feat.device).long()
        valid = (y != ignore_index) & (y >= 0) & (y < K)
        sq = normalize_pixels(feat).double().pow(2).sum(1).reshape(-1)  # ‖x‖² per pixel: 1, or 0 for x = 0
        self.sums += sums.to(dev)
        self.sq_sums += torch.bincount(y[valid], weights=sq[valid], minlength=K).to(dev)
        self.counts += counts.to(dev)

    def __add__(self, other: "FeatureStats") -> "FeatureStats":
        return FeatureStats(self.sums + other.sums, self.sq_sums + other.sq_sums, self.counts + other.counts)

    def all_reduce(self) -> "FeatureStats":
        """Sum over processes (a no-op in one process); returns self."""
        packed = comm.all_reduce_sum(torch.cat([self.sums, self.sq_sums[:, None], self.counts[:, None]], dim=1))
        self.sums, self.sq_sums, self.counts = packed[:, :-2], packed[:, -2], packed[:, -1]
        return self

    def cpu(self) -> "FeatureStats":
        return FeatureStats(self.sums.cpu(), self.sq_sums.cpu(), self.counts.cpu())


def collect_feature_stats(model, loader: Iterable, num_classes: int, device: torch.device,
                          amp_dtype: Optional[torch.dtype] = None) -> FeatureStats:
    """Per-class statistics of the normalised features of every labelled pixel of `loader`.

    Returns:
        FeatureStats on the CPU, summed over processes.
    """
    stats = None
    for feat, mask in iter_pixel_features(model, loader, device, amp_dtype):
        if stats is None:
            stats = FeatureStats.zeros(num_classes, feat.shape[1], device=feat.device)
        stats.update(feat, mask)
    if stats is None:
        raise ValueError("no images to collect features from (empty dataset or --num-images 0?)")
    return stats.all_reduce().cpu()
