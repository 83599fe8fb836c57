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


def test_every_pixel_of_the_stream_is_equally_likely_to_be_sampled():
    """A uniform random sample (docs/method.md "Analyses": a random sample per class): 20 one-pixel batches of
    one class, 3 kept; over 200 seeds each batch is kept about 3/20 of the time, the first and the last alike
    (a sample that kept the largest keys, or filtered on the smallest, pins or starves some batches)."""
    kept = np.zeros(20)
    for seed in range(200):
        sample = ClassBalancedPixelSample(num_classes=1, per_class=3, seed=seed)
        for i in range(20):
            sample.update("source", torch.full((1, 2, 1, 1), float(i)), torch.zeros(1, 1, 1, dtype=torch.long))
        feats = sample.result()[0]
        assert len(feats) == 3 and len(set(feats[:, 0].tolist())) == 3
        kept[feats[:, 0].long().numpy()] += 1
    # expected 30 of 200 each (binomial sd ≈ 5)
    assert kept.min() >= 12 and kept.max() <= 50, kept


def test_sample_result_is_grouped_by_domain_then_class_and_depends_on_the_seed():
    """`result()` lists the pixels by domain, then class, whatever order the classes first appeared in; another
    seed draws other pixels of the same labels."""
    g = torch.Generator().manual_seed(2)
    first = torch.randint(0, 2, (1, 6, 6), generator=g)
    second = torch.randint(0, 4, (1, 6, 6), generator=g)  # classes 2, 3 first seen here
    picks = []
    for seed in (0, 1):
        sample = ClassBalancedPixelSample(num_classes=4, per_class=5, seed=seed)
        sample.update("target", position_features(1, 6, 6), first)
        sample.update("source", position_features(1, 6, 6, 100), second)
        sample.update("target", position_features(1, 6, 6, 200), second)
        feats, classes, domains = sample.result()
        order = (domains * 4 + classes).tolist()
        assert order == sorted(order) and set(domains.tolist()) == {0, 1} and set(classes.tolist()) == {0, 1, 2, 3}
        picks.append(feats[:, 0])
    assert picks[0].shape == picks[1].shape and not torch.equal(picks[0], picks[1])


def test_pca_embedding_is_the_centred_projection_on_the_two_principal_axes():
    """PCA of points t·a + s·b + o (a, b orthonormal, t and s centred and uncorrelated, var t > var s, o an
    offset): the coordinates are (±t, ±s), whatever the offset; also with fewer PCA dims than channels."""
    t = torch.tensor([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    s = torch.tensor([1.0, -1.0, 0.0, 0.0, -1.0, 1.0])  # Σ t·s = 0
    a = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]) / 2 ** 0.5
    b = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    x = t[:, None] * a + s[:, None] * b + 10.0
    for pca_dims in (50, 3):
        coords, used = embed_2d(x, "pca", pca_dims=pca_dims)
        assert used == "pca" and coords.shape == (6, 2)
        for col, ref in ((0, t), (1, s)):
            sign = np.sign(coords[0, col] * ref[0].item())
            np.testing.assert_allclose(coords[:, col] * sign, ref.numpy(), atol=1e-5)  # fp32 input


def test_tsne_runs_on_few_points():
    """t-SNE needs a perplexity below the number of points: 10 points with the default perplexity 30 still
    get a t-SNE embedding (with a perplexity lowered to fit), not an error."""
    pytest.importorskip("sklearn")
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    coords, used = embed_2d(x, "tsne", seed=0)
    assert used == "tsne" and coords.shape == (10, 2) and np.isfinite(coords).all()


def test_projector_metadata_names_each_points_class_and_domain(tmp_path):
    """TensorBoard's projector gets one metadata row per point: its class name, then its domain name."""
    pytest.importorskip("tensorboard")
    import glob

    from spcl.analysis import export_projector

    classes, domains = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 0])
    export_projector(str(tmp_path), torch.randn(3, 4), classes, domains, ["road", "sidewalk", "building"],
                     ["source", "target"], tag="ckpt")
    (path,) = glob.glob(str(tmp_path / "**" / "metadata.tsv"), recursive=True)
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert rows == [["class", "domain"], ["road", "target"], ["building", "source"], ["sidewalk", "source"]]


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
