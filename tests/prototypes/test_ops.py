"""The pixel-feature operations of spcl/prototypes/ops.py (paper Sec. 3.2; docs/method.md "Prototypes") on
inputs the other tests do not give them: channels-last maps, labels outside [0, K), pixels whose feature is
zero, and the sampling grid of the nearest-neighbour label resize."""
import pytest
import torch

from spcl.prototypes import class_feature_sums, downsample_mask


def _plain_sums(feat, mask, num_classes):
    """Σ over pixels of class k of q / max(‖q‖, 1e-12) (F.normalize), and the pixel counts: a loop."""
    sums, counts = torch.zeros(num_classes, feat.shape[1], dtype=torch.float64), torch.zeros(num_classes)
    for b in range(feat.shape[0]):
        for y in range(feat.shape[2]):
            for x in range(feat.shape[3]):
                k = int(mask[b, y, x])
                if 0 <= k < num_classes:
                    q = feat[b, :, y, x].double()
                    sums[k] += q / max(q.norm().item(), 1e-12)
                    counts[k] += 1
    return sums, counts


@pytest.mark.parametrize("channels", [8, 40])  # at most / more than the 32 channels pixel_norm sums per block
def test_class_sums_of_a_channels_last_map_equal_those_of_the_contiguous_one(channels):
    """Under MODEL.CHANNELS_LAST the encoder's map comes in channels-last memory; the per-class sums and counts
    (Eq. 2 and 3) must not depend on the layout."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(3, channels, 4, 5, generator=g)
    mask = torch.randint(0, 4, (3, 4, 5), generator=g)
    mask[2, 1] = 255
    last = feat.to(memory_format=torch.channels_last)
    assert not last.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
    sums, counts = class_feature_sums(last, mask, 4)
    ref_sums, ref_counts = _plain_sums(feat, mask, 4)
    assert torch.allclose(sums.double(), ref_sums, atol=1e-5) and counts.tolist() == ref_counts.tolist()


def test_labels_outside_the_classes_are_left_out_of_the_sums():
    """A mask value that is no class (negative, K or above, besides the 255 ignore label) adds to no class:
    the sums and counts are those of the mask with those pixels set to 255."""
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(1, 6, 2, 4, generator=g)
    mask = torch.tensor([[[0, 1, -1, 4], [5, 255, 3, 0]]])
    sums, counts = class_feature_sums(feat, mask, 4)
    ref_sums, ref_counts = _plain_sums(feat, torch.tensor([[[0, 1, 255, 255], [255, 255, 3, 0]]]), 4)
    assert counts.tolist() == ref_counts.tolist() == [2.0, 1.0, 0.0, 1.0]
    assert torch.allclose(sums.double(), ref_sums, atol=1e-6)


@pytest.mark.parametrize("channels", [8, 40])
def test_a_zero_feature_pixel_is_counted_and_adds_a_zero_vector(channels):
    """Normalisation is F.normalize's q / max(‖q‖, 1e-12) (spcl/prototypes/ops.py EPS): a pixel whose feature is
    all zero (a dead ReLU output) counts for its class and adds nothing, as in the plain one-hot product; it must
    not turn the class sum into NaN (0 · 1/0)."""
    feat = torch.zeros(1, channels, 1, 3)
    feat[0, 0, 0, 1] = 3.0
    feat[0, 1, 0, 2] = -2.0
    mask = torch.tensor([[[1, 1, 0]]])
    sums, counts = class_feature_sums(feat, mask, 2)
    expected = torch.zeros(2, channels)
    expected[0, 1] = -1.0
    expected[1, 0] = 1.0
    assert torch.equal(sums, expected) and counts.tolist() == [1.0, 2.0]


def test_the_label_of_a_feature_pixel_is_the_one_at_the_top_left_of_its_stride_cell():
    """docs/method.md "Prototypes": the labels are nearest-downsampled to F's size. Feature pixel (i, j) of the
    stride-8 encoder is centred on input pixel (8i, 8j) (every convolution and pooling of the ResNet pads
    (k − 1)/2 · dilation), so it takes the label there, the top-left pixel of its 8×8 cell, not one at the
    cell's centre. A label map of the right size is returned as it is (int64); a list of labels of mixed sizes
    is resized one by one."""
    label = torch.arange(2 * 32 * 64).reshape(2, 32, 64) % 251
    small = downsample_mask(label, (4, 8))
    assert small.dtype == torch.int64 and torch.equal(small, label[:, ::8, ::8])
    assert torch.equal(downsample_mask(label.to(torch.uint8), (32, 64)), label)
    mixed = downsample_mask([label[0], label[1, :16, :32]], (4, 8))
    assert torch.equal(mixed[0], label[0, ::8, ::8]) and torch.equal(mixed[1], label[1, :16:4, :32:4])
