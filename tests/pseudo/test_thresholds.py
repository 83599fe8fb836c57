"""ClassThresholds (paper Eq. 5): streaming histogram thresholds equal the exact sort rule within 1e-4,
in memory that does not depend on the number of images, and labels consistent with them."""
import numpy as np
import pytest
import torch

from benchmarks.reference import released_thresholds
from spcl.pseudo import ClassThresholds


def _maps(seed, n=6, K=5, H=12, W=16, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(1, K, H, W, generator=g) * sharp, dim=1) for _ in range(n)]


@pytest.mark.parametrize("cap", [0.9, 0.5])
def test_streaming_equals_exact_sort_within_1e4(cap):
    maps = _maps(0, K=6)
    stats = ClassThresholds(6, cap=cap)
    for m in maps:
        stats.update(m)
    conf, pred = torch.cat(maps).max(1)
    exact = released_thresholds(conf.numpy(), pred.numpy(), 6, cap)
    ours = stats.compute().numpy()
    assert np.abs(ours - exact).max() < 1e-4


def test_class_never_predicted_gets_zero_and_cap_applies():
    probs = torch.zeros(1, 3, 2, 2)
    probs[0, 0] = 0.97  # class 0 everywhere with confidence 0.97 > cap
    probs[0, 1] = 0.03
    stats = ClassThresholds(3, cap=0.9)
    stats.update(probs)
    thr = stats.compute()
    assert thr[0].item() == pytest.approx(0.9, abs=2e-5)
    assert thr[1].item() == 0.0 and thr[2].item() == 0.0


def test_memory_is_independent_of_the_number_of_images():
    stats = ClassThresholds(4)
    before = stats.hist.numel()
    for m in _maps(1, n=10, K=4):
        stats.update(m)
    assert stats.hist.numel() == before == 4 * 65536


def test_labels_keep_exactly_the_pixels_at_or_above_their_class_threshold():
    maps = _maps(2, n=3, K=4, sharp=2.0)
    stats = ClassThresholds(4, cap=0.9)
    for m in maps:
        stats.update(m)
    bins = stats.compute_bins()
    thr = stats.compute()
    for m in maps:
        label = stats.label(m, bins)
        conf, pred = m.max(1)
        expected = torch.where(conf >= thr[pred].float(), pred, torch.full_like(pred, 255))
        # pixels within one histogram bin of the threshold may differ; nothing else
        near = (conf - thr[pred].float()).abs() < 1.0 / stats.num_bins
        assert torch.equal(label[~near], expected[~near])
    # about half of each class's pixels survive the median rule (when below the cap)
    all_conf, all_pred = torch.cat(maps).max(1)
    all_label = stats.label(torch.cat(maps), bins)
    for k in range(4):
        n = (all_pred == k).sum().item()
        if n > 20 and thr[k] < 0.9:
            kept = ((all_label == k).sum().item()) / n
            assert 0.4 < kept < 0.6


def test_histograms_add_up_like_processes():
    maps = _maps(3, n=4, K=3)
    one = ClassThresholds(3)
    a, b = ClassThresholds(3), ClassThresholds(3)
    for i, m in enumerate(maps):
        one.update(m)
        (a if i % 2 else b).update(m)
    a.hist += b.hist  # what the all_reduce does across processes
    assert torch.equal(a.compute(), one.compute())


def test_a_pixel_at_its_class_threshold_is_kept_as_the_released_rule_keeps_it():
    """Hand-computed, 10 bins, one confidence per bin (so bins and exact values give the same labels):
    class 0 at 0.55 … 0.95 (n = 5, element round(2.5) = 2 of the sorted: 0.75), class 1 at 0.65, 0.75,
    0.95 (element round(1.5) = 2: 0.95, capped to 0.9). Kept: conf ≥ threshold, the median pixel itself
    included (released: pixels below the threshold are set to 255)."""
    c0 = [0.55, 0.65, 0.75, 0.85, 0.95]
    c1 = [0.65, 0.95, 0.75]
    p0 = torch.tensor(c0 + [1 - c for c in c1], dtype=torch.float32)  # P(class 0) of 8 pixels
    probs = torch.stack([p0, 1 - p0]).reshape(1, 2, 1, 8)
    stats = ClassThresholds(2, cap=0.9, num_bins=10)
    stats.update(probs)
    assert stats.compute().tolist() == pytest.approx([0.7, 0.9])  # bins 7 and 9 (lower edges)
    label = stats.label(probs, stats.compute_bins()).flatten().tolist()
    assert label == [255, 255, 0, 0, 0, 255, 1, 255]
    conf, pred = probs.max(1)
    thr = released_thresholds(conf.numpy(), pred.numpy(), 2, 0.9)
    assert thr.tolist() == pytest.approx([0.75, 0.9])
    released = torch.where(conf >= torch.from_numpy(thr).float()[pred], pred, torch.full_like(pred, 255))
    assert released.flatten().tolist() == label
