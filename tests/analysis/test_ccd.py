"""Class Center Distance (spcl.analysis.ccd) against hand-computed values and a slow loop reference,
and the streamed per-class statistics it is computed from (spcl.analysis.features)."""
import math

import pytest
import torch

from spcl.analysis import FeatureStats, class_center_distance, ccd_of, domain_ccd, format_ccd_table
from spcl.analysis.features import normalize_features


def stats_of(x: torch.Tensor, y: torch.Tensor, K: int):
    """Σx, Σ‖x‖², counts of N×C points with labels N."""
    sums = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, y, x.double())
    sq = torch.zeros(K, dtype=torch.float64).index_add_(0, y, x.double().pow(2).sum(1))
    return sums, sq, torch.bincount(y, minlength=K).double()


def ccd_reference(x: torch.Tensor, y: torch.Tensor, K: int) -> list:
    """The CCD formula of docs/method.md "Analyses" (paper App. D) written out with loops over pixels and classes (absent classes skipped)."""
    present = [k for k in range(K) if (y == k).any()]
    protos = {k: x[y == k].double().mean(0) for k in present}
    out = []
    for k in range(K):
        if k not in present or len(present) < 2:
            out.append(math.nan)
            continue
        pts = x[y == k].double()
        spread = sum(float((p - protos[k]).pow(2).sum()) for p in pts) / len(pts)
        out.append(sum(spread / float((protos[k] - protos[j]).pow(2).sum()) for j in present if j != k)
                   / (len(present) - 1))
    return out


def test_hand_computed_1d():
    # class 0: {0, 2} → p0 = 1, spread 1; class 1: {10} → p1 = 10, spread 0; ‖p0 − p1‖² = 81
    x = torch.tensor([[0.0], [2.0], [10.0]])
    y = torch.tensor([0, 0, 1])
    ccd = class_center_distance(*stats_of(x, y, 2))
    assert ccd.tolist() == pytest.approx([1 / 81, 0.0], abs=1e-15)


def test_tight_separated_classes_small_and_swapped_labels_large():
    g = torch.Generator().manual_seed(0)
    a, b = torch.zeros(16), torch.zeros(16)
    a[0], b[1] = 1.0, 1.0
    x = torch.cat([a + 0.01 * torch.randn(200, 16, generator=g), b + 0.01 * torch.randn(200, 16, generator=g)])
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    small = class_center_distance(*stats_of(x, y, 2))
    assert (small < 1e-3).all()
    swapped = y.clone()
    swapped[:80], swapped[200:280] = 1, 0  # 40 % of each cluster carries the other label
    large = class_center_distance(*stats_of(x, swapped, 2))
    # p0 = .6a + .4b, p1 = .4a + .6b: spread ≈ .24·‖a − b‖², ‖p0 − p1‖² = .04·‖a − b‖² → CCD ≈ 6
    assert large.tolist() == pytest.approx([6.0, 6.0], rel=0.05)
    assert (large > 1000 * small).all()


def test_three_classes_match_slow_reference_with_an_absent_class():
    g = torch.Generator().manual_seed(1)
    K = 4  # class 2 has no pixel: NaN, and not among the j of the others
    x = torch.randn(90, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 3] * 30)
    x[y == 1] += 2.0
    x[y == 3] -= 1.0
    ccd = class_center_distance(*stats_of(x, y, K))
    ref = ccd_reference(x, y, K)
    assert math.isnan(ccd[2]) and math.isnan(ref[2])
    for k in (0, 1, 3):
        assert ccd[k].item() == pytest.approx(ref[k], rel=1e-10)


def test_fewer_than_two_classes_give_nan():
    x, y = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    assert torch.isnan(class_center_distance(*stats_of(x, y, 3))).all()


def test_feature_stats_streaming_matches_direct_on_normalised_features():
    g = torch.Generator().manual_seed(2)
    K = 3
    feats = [normalize_features(torch.randn(2, 6, 4, 5, generator=g)) for _ in range(3)]
    masks = [torch.randint(0, K, (2, 4, 5), generator=g) for _ in range(3)]
    masks[0][0, 0, :] = 255  # ignored pixels count nowhere
    stats = FeatureStats.zeros(K, 6)
    for f, m in zip(feats, masks):
        stats.update(f, m)
    x = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, 6) for f in feats])
    y = torch.cat([m.reshape(-1) for m in masks])
    keep = y != 255
    sums, sq, counts = stats_of(x[keep], y[keep], K)
    assert torch.allclose(stats.sums, sums) and torch.allclose(stats.counts, counts)
    assert torch.allclose(stats.sq_sums, counts, atol=1e-5)  # unit-norm features: Σ‖x‖² = n
    assert torch.allclose(ccd_of(stats), torch.tensor(ccd_reference(x[keep], y[keep], K), dtype=torch.float64))


def test_domain_ccd_pools_both_domains_and_table_marks_tail():
    g = torch.Generator().manual_seed(3)
    K = 3
    src = FeatureStats.zeros(K, 4)
    tgt = FeatureStats.zeros(K, 4)
    src.update(normalize_features(torch.randn(1, 4, 6, 6, generator=g)), torch.randint(0, 2, (1, 6, 6), generator=g))
    tgt.update(normalize_features(torch.randn(1, 4, 6, 6, generator=g)), torch.randint(0, 3, (1, 6, 6), generator=g))
    res = domain_ccd(src, tgt)
    both = src + tgt
    assert torch.allclose(res["both"], class_center_distance(both.sums, both.sq_sums, both.counts), equal_nan=True)
    assert math.isnan(res["source"][2]) and not math.isnan(res["both"][2])
    table = format_ccd_table([("ckpt", res)], ["a", "b", "c"], tail=[2])
    assert "c*" in table and "a*" not in table and "mean tail*" in table


def test_min_pixels_leaves_rare_classes_out_everywhere():
    g = torch.Generator().manual_seed(4)
    K = 4  # class 2 on 3 pixels only, class 3 absent
    x = torch.randn(63, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1] * 30 + [2] * 3)
    x[y == 1] += 2.0
    x[y == 2] -= 3.0
    sums, sq, counts = stats_of(x, y, K)
    plain = class_center_distance(sums, sq, counts)
    assert not math.isnan(plain[2])  # without a minimum the 3-pixel class gets a value
    masked = class_center_distance(sums, sq, counts, min_pixels=5)
    assert math.isnan(masked[2]) and math.isnan(masked[3])
    # and it is no longer one of the j of the others: as if its pixels were not there
    keep = y != 2
    ref = ccd_reference(x[keep], y[keep], K)
    for k in (0, 1):
        assert masked[k].item() == pytest.approx(ref[k], rel=1e-10)
        assert masked[k].item() != pytest.approx(plain[k].item(), rel=1e-6)
    assert torch.equal(class_center_distance(sums, sq, counts, min_pixels=3)[:3].isnan(),
                       torch.tensor([False, False, False]))  # 3 pixels ≥ 3: kept


def test_too_few_pixels_flags_and_table_marks_them():
    from spcl.analysis.ccd import too_few_pixels

    K = 3
    src, tgt = FeatureStats.zeros(K, 2), FeatureStats.zeros(K, 2)
    feat = normalize_features(torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(5)))
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, 2:] = 1
    mask[0, 0, 0] = 2  # class 2: one pixel in the source, none in the target
    src.update(feat, mask)
    tgt.update(feat, torch.where(mask == 2, torch.zeros_like(mask), mask))
    few = too_few_pixels(src, tgt, 5)
    assert few["source"].tolist() == [False, False, True]
    assert few["target"].tolist() == [False, False, False]  # absent, not "too few"
    assert few["both"].tolist() == [False, False, True]
    res = domain_ccd(src, tgt, min_pixels=5)
    assert math.isnan(res["source"][2]) and math.isnan(res["both"][2]) and not math.isnan(res["source"][0])
    table = format_ccd_table([("ckpt", res)], ["a", "b", "c"], too_few=[few], min_pixels=5)
    row_c = [ln for ln in table.splitlines() if ln.startswith("c ")][0].split()
    assert row_c[1:] == ["few", "few", "-"]  # both, source: too few; target: no pixel
    assert "few = fewer than 5 pixels" in table


def test_ccd_chart_marks_too_few_pixels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from spcl.analysis.plots import ccd_bar_chart

    texts = []
    original = Axes.text

    def spy(self, x, y, s, *args, **kwargs):
        texts.append((x, s))
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", spy)
    nan = float("nan")
    values = {"both": [1.0, nan, nan], "source": [1.0, nan, 2.0], "target": [1.0, 2.0, nan]}
    few = {"both": [False, True, False], "source": [False, True, False], "target": [False, False, False]}
    ccd_bar_chart(str(tmp_path / "ccd.png"), [("a", values)], ["x", "y", "z"], too_few=[few], min_pixels=50)
    assert sorted(texts) == [(1, "too few\npixels (<50)"), (1, "too few\npixels (<50)")]  # class y, 2 sets
    assert (tmp_path / "ccd.png").is_file()


def test_feature_stats_normalise_raw_features_and_leave_out_labels_outside_the_classes():
    """`update` takes raw encoder features and measures them L2-normalised (paper Sec. 3.2, the prototype
    space), Σx and Σ‖x‖² alike: raw features give the statistics of their normalised form. Labels outside
    [0, K) count nowhere, as the ignore label 255."""
    g = torch.Generator().manual_seed(6)
    K = 3
    raw = 4.0 * torch.randn(2, 5, 3, 4, generator=g)
    mask = torch.randint(0, K, (2, 3, 4), generator=g)
    mask[0, 0, :2] = K  # not a class
    mask[1, 2, 3] = 255
    from_raw, from_unit = FeatureStats.zeros(K, 5), FeatureStats.zeros(K, 5)
    from_raw.update(raw, mask)
    from_unit.update(normalize_features(raw), torch.where(mask == K, torch.full_like(mask, 255), mask))
    for a, b in ((from_raw.sums, from_unit.sums), (from_raw.sq_sums, from_unit.sq_sums),
                 (from_raw.counts, from_unit.counts)):
        assert torch.allclose(a, b, atol=1e-6)
    x = normalize_features(raw).permute(0, 2, 3, 1).reshape(-1, 5)
    y = mask.reshape(-1)
    keep = y < K
    sums, sq, counts = stats_of(x[keep], y[keep], K)
    assert torch.allclose(from_raw.sums, sums) and torch.equal(from_raw.counts, counts)
    assert torch.allclose(from_raw.sq_sums, counts, atol=1e-5)  # Σ‖x‖² = n for unit vectors, not Σ‖raw‖²


def test_feature_stats_add_and_one_process_all_reduce_keep_every_statistic_in_place():
    """Sums of statistics are the statistics of the pooled pixels (each of Σx, Σ‖x‖², n in its own place), and
    the all-reduce over processes (Σx, Σ‖x‖² and n packed side by side) changes nothing in one process."""
    g = torch.Generator().manual_seed(7)
    K, C = 3, 4
    feats = [torch.randn(1, C, 4, 4, generator=g) for _ in range(2)]
    masks = [torch.randint(0, K, (1, 4, 4), generator=g) for _ in range(2)]
    masks[1][0, :2] = 255
    feats[1][0, :, 3] = 0.0  # zero features: ‖x‖² = 0, so Σ‖x‖² ≠ n and a swap of the two shows
    parts = [FeatureStats.zeros(K, C) for _ in range(2)]
    pooled = FeatureStats.zeros(K, C)
    for part, f, m in zip(parts, feats, masks):
        part.update(f, m)
        pooled.update(f, m)
    assert not torch.allclose(parts[1].sq_sums, parts[1].counts)
    total = parts[0] + parts[1]
    for a, b in ((total.sums, pooled.sums), (total.sq_sums, pooled.sq_sums), (total.counts, pooled.counts)):
        assert torch.allclose(a, b)
    before = [t.clone() for t in (total.sums, total.sq_sums, total.counts)]
    reduced = total.all_reduce()
    assert reduced.sums.shape == (K, C) and reduced.sq_sums.shape == (K,) and reduced.counts.shape == (K,)
    for a, b in zip((reduced.sums, reduced.sq_sums, reduced.counts), before):
        assert torch.equal(a, b)
