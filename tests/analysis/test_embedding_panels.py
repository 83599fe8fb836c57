"""The class-balanced pixel sample, the 2-D embedding (t-SNE and its PCA fallback) and the panel grid."""
import sys

import numpy as np
import pytest
import torch

from spcl.analysis import ClassBalancedPixelSample, embed_2d, make_panel_grid, panel_grid_size
from spcl.data.labels import palette


def position_features(B, h, w, offset=0.0):
    """Features whose first channel is the pixel's global position: the sample can be traced back."""
    pos = torch.arange(B * h * w, dtype=torch.float32).reshape(B, h, w) + offset
    return torch.stack([pos, torch.ones_like(pos)], dim=1)  # B×2×h×w


def test_sample_caps_each_class_ignores_255_and_keeps_small_classes_whole():
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 3, (2, 8, 8), generator=g)
    mask[0, 0, :3] = 4  # a rare class: 3 pixels
    mask[1] = torch.where(mask[1] == 2, torch.tensor(255), mask[1])
    sample = ClassBalancedPixelSample(num_classes=5, per_class=10, seed=0)
    sample.update("source", position_features(2, 8, 8), mask)
    sample.update("target", position_features(2, 8, 8), mask)
    feats, classes, domains = sample.result()
    for d in (0, 1):
        for k in range(5):
            n = int(((classes == k) & (domains == d)).sum())
            assert n == min(10, int((mask == k).sum()))
    positions = feats[:, 0].long()
    assert (mask.reshape(-1)[positions] == classes).all()  # every sampled pixel carries its own label


def test_sample_picks_the_same_pixels_for_any_features_and_is_uniform_over_batches():
    g = torch.Generator().manual_seed(1)
    masks = [torch.randint(0, 2, (1, 10, 10), generator=g) for _ in range(20)]
    picks = []
    for offset in (0.0, 0.5):  # two "checkpoints": different features, same labels
        sample = ClassBalancedPixelSample(num_classes=2, per_class=50, seed=3)
        for i, m in enumerate(masks):
            sample.update("source", position_features(1, 10, 10, offset + 100 * i), m)
        picks.append(sample.result()[0][:, 0] - offset)
    assert torch.equal(picks[0], picks[1])
    batch = (picks[0] // 100).long()
    assert batch.min() <= 2 and batch.max() >= 17  # drawn from the whole stream, not just its start
    assert np.bincount(batch.numpy(), minlength=20).max() <= 15


def test_embed_2d_tsne_and_pca_fallback_without_sklearn(monkeypatch):
    pytest.importorskip("sklearn")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 16, generator=g), torch.randn(20, 16, generator=g) + 5])
    coords, used = embed_2d(x, "tsne", seed=0)
    assert used == "tsne" and coords.shape == (40, 2) and np.isfinite(coords).all()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    coords, used = embed_2d(x, "tsne", seed=0)
    assert used == "pca" and coords.shape == (40, 2)
    assert abs(coords[:20, 0].mean() - coords[20:, 0].mean()) > 10  # the first component splits the clusters


def test_panel_grid_layout_and_colours():
    K = 19
    images = [np.full((16, 32, 3), 128, np.uint8) for _ in range(2)]
    labels = [np.zeros((16, 32), np.uint8), np.full((16, 32), 255, np.uint8)]
    preds = [[np.full((16, 32), 13, np.uint8)] * 2]  # car everywhere
    grid = make_panel_grid(images, labels, preds, ["model"], K, cell_width=64)
    assert grid.size == panel_grid_size(2, 3, (64, 32), K)
    from spcl.analysis.panels import HEADER, PAD
    px = np.asarray(grid)
    y0 = HEADER + PAD + 16
    assert tuple(px[y0, PAD + 64 + PAD + 32]) == tuple(palette(K)[0])  # ground truth road
    assert tuple(px[y0 + 32 + PAD, PAD + 64 + PAD + 32]) == (0, 0, 0)  # ignored → black
    assert tuple(px[y0, PAD + 2 * (64 + PAD) + 32]) == tuple(palette(K)[13])  # prediction car
