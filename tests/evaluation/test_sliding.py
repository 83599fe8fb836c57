"""Sliding-window inference: window positions, one window = whole-image inference, overlaps averaged
(hand-computed with a model whose logits depend on the window), and the config path through
run_inference / evaluate_checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spcl.config import load_config
from spcl.evaluation import sliding_from_cfg, sliding_logits, sliding_window, window_starts
from spcl.modeling import predict_probs


class WindowMeanModel(nn.Module):
    """logits = x − (mean of x over the window), per channel, at stride 1: a window's logits depend
    on which pixels the window holds, so averaging overlaps is visible."""

    def forward(self, x):
        return {"logits": x - x.mean(dim=(2, 3), keepdim=True)}


class Stride8Model(nn.Module):
    """A small conv net with logits at stride 8 (like DeepLab), 5 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        return {"logits": F.avg_pool2d(self.conv(x), 8)}


def test_window_starts():
    assert window_starts(10, 4, 3) == [0, 3, 6]  # last flush with the border: 6 + 4 = 10
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(8, 8, 4) == [0]
    assert window_starts(5, 8, 4) == [0]  # window larger than the axis: one (clipped) window
    assert window_starts(5, 8, 20) == [0]  # (then the stride does not matter)
    with pytest.raises(ValueError, match="larger than the window"):
        window_starts(10, 4, 5)
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 0, 1)


def test_one_window_equals_whole_image():
    model = Stride8Model().eval()
    x = torch.randn(2, 3, 32, 48)
    whole = predict_probs(model, x)
    slid = predict_probs(model, x, logits_fn=sliding_window((48, 32), (48, 32)))
    assert torch.allclose(slid, whole, atol=1e-6, rtol=0)
    # a window larger than the image is clipped to it: the same
    big = predict_probs(model, x, logits_fn=sliding_window((100, 100), (50, 50)))
    assert torch.allclose(big, whole, atol=1e-6, rtol=0)
    # with flip and two scales too
    both = predict_probs(model, x, scales=(1.0, 0.5), flip=True)
    slid_both = predict_probs(model, x, scales=(1.0, 0.5), flip=True, logits_fn=sliding_window((48, 32), (48, 32)))
    assert torch.allclose(slid_both, both, atol=1e-6, rtol=0)
    # and smaller windows really do change the result (this model sees context)
    small = predict_probs(model, x, logits_fn=sliding_window((16, 16), (8, 8)))
    assert (small - whole).abs().max() > 1e-3


def test_two_overlapping_windows_are_averaged():
    """Image 1×6 (H×W), windows of width 4 at x = 0 and x = 2: columns 2, 3 are covered twice and
    get the mean of the two windows' logits; columns 0, 1 only window A, 4, 5 only window B."""
    x = torch.tensor([[[[0.0, 1.0, 2.0, 3.0, 4.0, 8.0]]]])  # B=1, C=1, H=1, W=6
    out = sliding_logits(WindowMeanModel(), x, window=(4, 1), stride=(2, 1))
    mean_a, mean_b = (0 + 1 + 2 + 3) / 4, (2 + 3 + 4 + 8) / 4  # 1.5, 4.25
    expected = [0 - mean_a, 1 - mean_a,
                ((2 - mean_a) + (2 - mean_b)) / 2, ((3 - mean_a) + (3 - mean_b)) / 2,
                4 - mean_b, 8 - mean_b]
    np.testing.assert_allclose(out[0, 0, 0].numpy(), expected, atol=1e-6)


def test_sliding_from_cfg():
    cfg = load_config("", ["TEST.WINDOW", "[4, 1]", "TEST.STRIDE", "[2, 1]"])
    assert sliding_from_cfg(cfg) is None  # TEST.SLIDING False by default
    fn = sliding_from_cfg(cfg, sliding=True)
    assert fn.window == (4, 1) and fn.stride == (2, 1)
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6)
    np.testing.assert_allclose(fn(WindowMeanModel(), x).numpy(),
                               sliding_logits(WindowMeanModel(), x, (4, 1), (2, 1)).numpy())
    with pytest.raises(ValueError, match="TEST.STRIDE"):  # refused when the config loads
        load_config("", ["TEST.SLIDING", "True", "TEST.WINDOW", "[4, 4]", "TEST.STRIDE", "[5, 4]"])


def test_run_inference_uses_sliding():
    """run_inference with a sliding logits_fn predicts what predict_probs with it predicts."""
    from spcl.evaluation import run_inference

    model = Stride8Model().eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 48)
    fn = sliding_window((24, 16), (12, 8))
    pred = predict_probs(model, images, logits_fn=fn).argmax(1)
    whole = predict_probs(model, images).argmax(1)
    assert (pred != whole).any()
    loader = [{"image": images, "label": pred.clone(), "name": ["a.png", "b.png"], "index": torch.tensor([0, 1])}]
    m_slide = run_inference(model, loader, 5, torch.device("cpu"), logits_fn=fn)
    m_whole = run_inference(model, loader, 5, torch.device("cpu"))
    assert m_slide["aAcc"] == pytest.approx(100.0)
    assert m_whole["aAcc"] < 100.0


def test_segmentor_predict_takes_the_sliding_logits_fn():
    from spcl.modeling import Segmentor

    torch.manual_seed(2)
    model = Segmentor(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(4)), nn.Conv2d(4, 5, 1)).train()
    x = torch.randn(1, 3, 24, 40)
    fn = sliding_window((16, 16), (8, 8))
    out = model.predict(x, logits_fn=fn)
    assert model.training  # back in training mode
    model.eval()
    assert torch.allclose(out, predict_probs(model, x, logits_fn=fn), atol=1e-7)
    assert (out - predict_probs(model, x)).abs().max() > 1e-4
