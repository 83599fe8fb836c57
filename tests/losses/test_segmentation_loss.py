"""`segmentation_ce` (every stage's CE: source logits / 1.8 in warm-up and align, target pseudo labels at
temperature 1 in self-training) against a per-pixel reference written out by hand."""
import math

import torch
import torch.nn.functional as F

from spcl.losses import segmentation_ce


def _reference(logits, label, temperature=1.0, ignore=255):
    """Mean over labelled pixels of −log softmax(upsampled logits / T)[label], one pixel at a time."""
    up = F.interpolate(logits.double(), size=label.shape[-2:], mode="bilinear", align_corners=False)
    total, n = 0.0, 0
    for b in range(label.shape[0]):
        for y in range(label.shape[1]):
            for x in range(label.shape[2]):
                c = int(label[b, y, x])
                if c == ignore:
                    continue
                z = [float(v) / temperature for v in up[b, :, y, x]]
                m = max(z)
                total += -(z[c] - m - math.log(sum(math.exp(v - m) for v in z)))
                n += 1
    return total / n


def test_matches_the_per_pixel_reference_with_upsampling_temperature_and_ignored_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=g) * 3
    label = torch.randint(0, 5, (2, 6, 8), generator=g)
    label[0, :2] = 255
    label[1, :, -3:] = 255
    for t in (1.0, 1.8):
        assert abs(float(segmentation_ce(logits, label, t)) - _reference(logits, label, t)) < 1e-5
    # logits already at the label's size are used as they are
    same = torch.randn(2, 5, 6, 8, generator=g)
    assert abs(float(segmentation_ce(same, label)) - _reference(same, label)) < 1e-5
    # the temperature divides the logits, nothing else
    torch.testing.assert_close(segmentation_ce(logits, label, 1.8), segmentation_ce(logits / 1.8, label, 1.0))


def test_a_batch_without_one_labelled_pixel_gives_zero_and_zero_gradients_not_nan():
    """Self-training on a crop whose pseudo labels are all below threshold: PyTorch's mean CE over no pixel
    is NaN, which would stop the run as diverged."""
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    label = torch.full((1, 6, 6), 255)
    assert torch.isnan(F.cross_entropy(F.interpolate(logits, size=(6, 6)), label, ignore_index=255))
    loss = segmentation_ce(logits, label, 1.8)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
