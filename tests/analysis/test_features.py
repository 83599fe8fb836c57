"""The inputs of the analyses (spcl.analysis.features, docs/method.md "Analyses"): the seeded image subset,
the datasets of both domains at the sizes the model saw them at, and the per-pixel features (L2-normalised
as the prototype space of paper Sec. 3.2) with labels at the feature map's size."""
import numpy as np
import torch
from torch import nn

from conftest import tiny_cfg
from spcl.analysis.features import analysis_dataset, iter_pixel_features, select_images


def test_select_images_is_a_sorted_seeded_subset():
    """N distinct indices of the whole range, in dataset order; a seed always picks the same ones and another
    seed other ones (one subset for every checkpoint, chosen by cfg.SEED); all images for N ≤ 0 or N ≥ total."""
    for seed in range(5):
        chosen = select_images(100, 10, seed)
        assert len(set(chosen)) == 10 and all(0 <= i < 100 for i in chosen)
        assert chosen == sorted(chosen)
        assert select_images(100, 10, seed) == chosen
    subsets = {tuple(select_images(100, 10, seed)) for seed in range(5)}
    assert len(subsets) == 5  # 5 seeds: 5 different subsets (C(100, 10) of them)
    assert select_images(7, 0) == select_images(7, -1) == select_images(7, 7) == select_images(7, 9) == list(range(7))


def test_analysis_datasets_read_source_images_at_source_size_and_target_at_test_size(toy_root, tmp_path):
    """Source images at INPUT.SOURCE_SIZE (the size the prototypes stage and training saw them at), target images
    at INPUT.TEST_SIZE (testing); labels stay at their own 64×32 size."""
    cfg = tiny_cfg(toy_root, str(tmp_path), "INPUT.SOURCE_SIZE", "[48, 24]", "INPUT.TEST_SIZE", "[32, 16]")
    source, target = analysis_dataset(cfg, "source")[0], analysis_dataset(cfg, "target")[0]
    assert tuple(source["image"].shape) == (3, 24, 48) and tuple(source["label"].shape) == (32, 64)
    assert tuple(target["image"].shape) == (3, 16, 32) and tuple(target["label"].shape) == (32, 64)


class FixedFeatures(nn.Module):
    """A stand-in model whose `feat` is a fixed B×C×h×w map of raw (not normalised) features."""

    def __init__(self, feat: torch.Tensor):
        super().__init__()
        self.feat = feat

    def forward(self, images):
        return {"feat": self.feat[: len(images)]}


def test_pixel_features_are_unit_norm_and_labels_nearest_downsampled_to_the_feature_map():
    """Features L2-normalised per pixel over channels; the label map (16×32, each 4×4 block one class) nearest-
    downsampled to the non-square 4×8 feature map gives each block's class at its feature pixel."""
    g = torch.Generator().manual_seed(0)
    raw = 5.0 * torch.randn(2, 6, 4, 8, generator=g)
    blocks = torch.arange(32).reshape(4, 8)  # class of each 4×4 block
    label = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)  # 16×32
    batch = {"image": torch.zeros(2, 3, 32, 64), "label": torch.stack([label, 31 - label])}
    (feat, mask), = list(iter_pixel_features(FixedFeatures(raw), [batch], torch.device("cpu")))
    assert feat.shape == raw.shape and feat.dtype == torch.float32
    np.testing.assert_allclose(feat.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    assert torch.allclose(feat, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)  # same direction
    assert mask.dtype == torch.int64 and torch.equal(mask, torch.stack([blocks, 31 - blocks]))
