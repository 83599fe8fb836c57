"""The class-balanced pixel sample, the 2-D embedding (t-SNE and its PCA fallback) and the panel grid."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

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


def test_panel_grid_size_follows_the_layout():
    """Width: the cells with PAD between them and around; height: the HEADER of titles, the rows with PAD
    under each and PAD above the first; legend: as many LEGEND_ENTRY widths as fit in width − PAD per row,
    ceil(K / per row) rows of LEGEND_ENTRY height, PAD under them."""
    from spcl.analysis.panels import HEADER, LEGEND_ENTRY, PAD
    assert (PAD, HEADER, LEGEND_ENTRY) == (4, 22, (118, 18))  # the numbers below are written with these
    assert panel_grid_size(2, 3, (64, 32)) == (3 * 64 + 4 * 4, 22 + 2 * (32 + 4) + 4) == (208, 98)
    assert panel_grid_size(2, 3, (64, 32), 19) == (208, 98 + 19 * 18 + 4)  # (208 − 4) // 118 = 1 entry a row
    assert panel_grid_size(1, 1, (228, 100), 19) == (236, 130 + 19 * 18 + 4)  # 232 // 118 = 1, not 236 // 118
    assert panel_grid_size(1, 1, (240, 100), 19) == (248, 130 + 10 * 18 + 4)  # 2 a row: ceil(19 / 2) = 10 rows


def test_panel_cells_sit_in_their_slots_with_exact_label_colours_and_a_row_major_legend():
    """Cell (r, c) fills its cell_width × height slot from (PAD + c·(w + PAD), HEADER + PAD + r·(h + PAD)), white
    around it; column titles over their own column, not in the PAD gaps; images keep their RGB colours; label
    maps are resized without mixing classes (only palette colours); each checkpoint has its own column; the
    legend starts PAD under the last row, entry k at column k mod per-row, row k div per-row, with as many
    LEGEND_ENTRY widths a row as fit in width − PAD, its swatch in the colour of class k (paper Fig. 3 panels,
    docs/method.md "Analyses")."""
    from spcl.analysis.panels import HEADER, LEGEND_ENTRY, PAD
    K = 19
    colours = [(200, 50, 10), (10, 60, 220)]
    images = [np.broadcast_to(np.array(c, np.uint8), (16, 32, 3)).copy() for c in colours]
    checker = ((np.arange(16)[:, None] + np.arange(32)[None]) % 2 * 13).astype(np.uint8)  # road / car
    labels = [checker, 13 - checker]
    preds = [[np.full((16, 32), 13, np.uint8)] * 2, [np.full((16, 32), 11, np.uint8)] * 2]  # car, person
    grid = np.asarray(make_panel_grid(images, labels, preds, ["ab", "ba"], K, cell_width=231))
    w, h = 231, 116  # 4·231 + 5·4 = 944 = 8·118: 7 legend entries a row, in 944 − 4
    per_row = 7
    assert grid.shape[:2] == (HEADER + 2 * (h + PAD) + PAD + 3 * 18 + PAD, 4 * w + 5 * PAD)
    pal = [tuple(int(v) for v in c) for c in palette(K)]
    white = (255, 255, 255)
    for r in range(2):
        y = HEADER + PAD + r * (h + PAD)
        first = [colours[r], pal[int(labels[r][0, 0])], pal[13], pal[11]]  # top-left pixel of each cell
        last = [colours[r], pal[int(labels[r][-1, -1])], pal[13], pal[11]]  # bottom-right pixel
        for c in range(4):
            x = PAD + c * (w + PAD)
            assert tuple(grid[y, x]) == first[c] and tuple(grid[y + h - 1, x + w - 1]) == last[c], (r, c)
            assert tuple(grid[y, x - 1]) == white and tuple(grid[y - 1, x]) == white, (r, c)
            assert tuple(grid[y + h, x + w]) == white, (r, c)
        cell = grid[y:y + h, PAD + w + PAD:PAD + 2 * w + PAD].reshape(-1, 3)
        assert {tuple(v) for v in np.unique(cell, axis=0)} == {pal[0], pal[13]}  # no mixed colour
    for c in range(4):  # the PAD gap left of each column, under the titles
        assert (grid[:HEADER, c * (w + PAD):c * (w + PAD) + PAD] == 255).all(), c
    y0 = HEADER + 2 * (h + PAD) + PAD
    assert (grid[y0 - PAD:y0] == 255).all()  # the PAD under the last row
    for k in range(K):
        x, y = PAD + (k % per_row) * LEGEND_ENTRY[0], y0 + (k // per_row) * LEGEND_ENTRY[1]
        assert tuple(grid[y + 9, x + 6]) == pal[k], k  # the middle of the swatch


class HalvesModel(torch.nn.Module):
    """Logits of 2 classes from the first image channel: class 1 where it is positive, class 0 elsewhere."""

    def forward(self, images):
        return {"logits": torch.cat([-images[:, :1], images[:, :1]], dim=1)}


def test_predict_labels_predicts_each_item_at_its_labels_size():
    """Predictions follow the test protocol (docs/method.md "Evaluation"): the softmax is upsampled to the
    label's size (here 8×16, twice the 4×8 input), then argmax; one map per requested item, in order."""
    from spcl.analysis import predict_labels

    left = torch.ones(3, 4, 8)
    left[:, :, :4] = -1.0  # class 0 on the left half, 1 on the right
    dataset = [{"image": left, "label": torch.zeros(8, 16)}, {"image": -left, "label": torch.zeros(8, 16)}]
    preds = predict_labels(HalvesModel(), dataset, [1, 0], torch.device("cpu"))
    expected = np.zeros((8, 16), np.uint8)
    expected[:, 8:] = 1
    assert len(preds) == 2 and preds[0].dtype == np.uint8
    np.testing.assert_array_equal(preds[0], 1 - expected)
    np.testing.assert_array_equal(preds[1], expected)
    preds = predict_labels(HalvesModel(), dataset, [0], torch.device("cpu"), scales=(1.0, 0.5), flip=True)
    np.testing.assert_array_equal(preds[0], expected)  # symmetric halves: scales and flip agree


def test_panel_inputs_are_each_items_original_image_and_its_labels(tmp_path):
    """The image column shows the item's original image file (not the resized input) and the ground truth its
    own train labels, for the requested items in order."""
    from spcl.analysis import panel_inputs

    class Items:
        def __init__(self, root):
            self.items, self.labels = [], []
            for i in range(3):
                image = np.full((6, 10, 3), (40 * i, 100, 200 - 40 * i), np.uint8)
                path = os.path.join(root, f"{i}.png")
                Image.fromarray(image).save(path)
                self.items.append((path, os.path.join(root, f"{i}_label.png")))
                self.labels.append(torch.full((3, 5), i + 1, dtype=torch.int64))

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 2, 2), "label": self.labels[i]}

    dataset = Items(str(tmp_path))
    images, labels = panel_inputs(dataset, [2, 0])
    for got, want in zip(images, [2, 0]):
        np.testing.assert_array_equal(got, np.asarray(Image.open(dataset.items[want][0])))
    assert [lab.dtype for lab in labels] == [np.uint8] * 2
    assert [lab.shape for lab in labels] == [(3, 5)] * 2 and [int(lab[0, 0]) for lab in labels] == [3, 1]
