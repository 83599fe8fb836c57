"""A class-balanced sample of pixel features from both domains, its 2-D embedding (t-SNE, paper
Fig. 4) and its export to TensorBoard's projector. Called by tools/analyze.py (`tsne`).

The sample keeps, for every (domain, class), a uniform random sample of at most `per_class` of the
pixels seen (bottom-k of a random key per pixel, streamed: memory is bounded by the sample). The keys
depend only on the labels and the seed, so every checkpoint gets the same pixels of the same images.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from spcl.data.labels import IGNORE_LABEL

from .deps import INSTALL_HINT

logger = logging.getLogger("spcl")


class ClassBalancedPixelSample:
    """At most `per_class` pixel features of each class of each domain, uniformly sampled.

    Args:
        num_classes: K.
        per_class: sample size per (domain, class).
        domains: domain names, in the order of the `domains` codes of `result()`.
        seed: seed of the random keys.
    """

    def __init__(self, num_classes: int, per_class: int, domains: Sequence[str] = ("source", "target"),
                 seed: int = 0):
        if per_class <= 0:
            raise ValueError(f"per_class must be positive, got {per_class}")
        self.num_classes, self.per_class, self.domains = num_classes, per_class, tuple(domains)
        self.generator = torch.Generator().manual_seed(seed)
        # (domain, class) → (keys n, features n×C), both on the CPU
        self.samples: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def update(self, domain: str, feat: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_LABEL) -> None:
        """Offer the pixels of a batch: features B×C×h×w, labels B×h×w at feature resolution."""
        d = self.domains.index(domain)
        flat = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])  # (B·h·w)×C
        labels = mask.reshape(-1).cpu().long()
        for k in range(self.num_classes):  # fixed order: the keys drawn depend on the labels only
            idx = (labels == k).nonzero()[:, 0]
            if idx.numel() == 0:
                continue
            keys = torch.rand(idx.numel(), generator=self.generator, dtype=torch.float64)
            old_keys, old_feats = self.samples.get((d, k), (torch.empty(0, dtype=torch.float64), None))
            if old_keys.numel() >= self.per_class:  # full: only keys below the current largest can enter
                keep = keys < old_keys.max()
                idx, keys = idx[keep], keys[keep]
                if idx.numel() == 0:
                    continue
            new_feats = flat[idx.to(flat.device)].float().cpu()
            all_keys = torch.cat([old_keys, keys])
            all_feats = new_feats if old_feats is None else torch.cat([old_feats, new_feats])
            if all_keys.numel() > self.per_class:
                order = torch.topk(all_keys, self.per_class, largest=False).indices
                all_keys, all_feats = all_keys[order], all_feats[order]
            self.samples[(d, k)] = (all_keys, all_feats)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features N×C fp32, class N int64, domain code N int64), grouped by domain then class."""
        feats, classes, domains = [], [], []
        for (d, k) in sorted(self.samples):
            f = self.samples[(d, k)][1]
            feats.append(f)
            classes.append(torch.full((len(f),), k, dtype=torch.int64))
            domains.append(torch.full((len(f),), d, dtype=torch.int64))
        if not feats:
            raise ValueError("no labelled pixels were sampled")
        return torch.cat(feats), torch.cat(classes), torch.cat(domains)


def embed_2d(features: torch.Tensor, method: str = "tsne", seed: int = 0, perplexity: float = 30.0,
             pca_dims: int = 50) -> tuple[np.ndarray, str]:
    """2-D embedding of N×C features: t-SNE (scikit-learn, on the first `pca_dims` principal
    components, as usual for wide features) or PCA.

    Falls back to PCA, with a warning, when scikit-learn is missing or N is too small for t-SNE.
    Returns:
        (N×2 float array, the method used: "tsne" | "pca").
    """
    if method not in ("tsne", "pca"):
        raise ValueError(f"method must be tsne or pca, got {method!r}")
    x = features.double()
    x = x - x.mean(0, keepdim=True)
    n = x.shape[0]
    if method == "tsne" and n < 6:
        logger.warning("only %d points: PCA instead of t-SNE", n)
        method = "pca"
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            logger.warning("scikit-learn is not installed: PCA instead of t-SNE. %s", INSTALL_HINT)
            method = "pca"
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    reduced = (x @ vh[: min(pca_dims, vh.shape[0])].T).numpy()  # N×d, principal components
    if method == "pca":
        out = np.zeros((n, 2))
        out[:, : min(2, reduced.shape[1])] = reduced[:, :2]
        return out, "pca"
    perplexity = float(min(perplexity, (n - 1) / 3.0))  # t-SNE needs perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(reduced), "tsne"


def export_projector(log_dir: str, features: torch.Tensor, classes: torch.Tensor, domains: torch.Tensor,
                     class_names: Sequence[str], domain_names: Sequence[str], tag: str,
                     global_step: Optional[int] = None) -> None:
    """Write the sample to TensorBoard's projector (`tensorboard --logdir log_dir`, tab Projector),
    with `class` and `domain` columns of metadata."""
    from torch.utils.tensorboard import SummaryWriter

    metadata = [[class_names[int(c)], domain_names[int(d)]] for c, d in zip(classes, domains)]
    writer = SummaryWriter(log_dir)
    try:
        writer.add_embedding(features.float(), metadata=metadata, metadata_header=["class", "domain"], tag=tag,
                             global_step=global_step)
    finally:
        writer.close()
