"""The honest half of the benchmarks: at tiny sizes, this project's prototype update, contrastive loss
(forward and backward) and class thresholds give the numbers of the plain reference implementations
of the released algorithm in `benchmarks/reference.py` (per-class loops, masked selects,
collect-all-then-sort)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.reference import (ReferenceThresholds, reference_contrastive_loss,  # noqa: E402
                                  reference_intersection_union, reference_prototype_update)
from spcl.evaluation import SemSegEvaluator  # noqa: E402
from spcl.losses import PrototypeContrastiveLoss  # noqa: E402
from spcl.losses.contrastive import _NormalisedDots  # noqa: E402
from spcl.prototypes import PrototypeBank  # noqa: E402
from spcl.pseudo import ClassThresholds  # noqa: E402

K, C = 7, 48


def _inputs(seed=0, B=2, h=6, w=10, channels_last=False, zero_pixel=False):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(B, C, h, w, generator=g).relu()
    if zero_pixel:
        feat[0, :, 0, 0] = 0  # a pixel whose norm is clamped
    if channels_last:
        feat = feat.to(memory_format=torch.channels_last)
    mask = torch.randint(0, K - 2, (B, h, w), generator=g)  # classes K-2, K-1 absent
    mask[torch.rand(B, h, w, generator=g) < 0.2] = 255
    protos = F.normalize(torch.randn(K, C, generator=g), dim=1)
    return feat, mask, protos


@pytest.mark.parametrize("absent", ["decay", "keep"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_prototype_update_matches_reference(absent, channels_last):
    feat, mask, protos = _inputs(channels_last=channels_last, zero_pixel=True)
    bank = PrototypeBank(K, C, alpha=0.1, absent=absent)
    bank.set(protos)
    for step in range(3):
        bank.update(feat, mask)
        protos = reference_prototype_update(protos, feat, mask, alpha=0.1, absent=absent)
        feat, mask = feat.roll(1, dims=0), mask.roll(1, dims=0)
    torch.testing.assert_close(bank.prototypes, protos, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("temperature", [100.0, 0.1])
def test_contrastive_loss_and_gradients_match_reference(channels_last, temperature):
    feat, mask, protos = _inputs(channels_last=channels_last, zero_pixel=True)
    ours_in = feat.clone().requires_grad_()
    ref_in = feat.clone().requires_grad_()
    loss = PrototypeContrastiveLoss(temperature)(ours_in, mask, protos)
    ref = reference_contrastive_loss(ref_in, mask, protos, temperature)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, atol=1e-7, rtol=1e-4)
    assert ours_in.grad.shape == feat.shape


def test_align_iteration_matches_reference():
    """Update with source features, then L_s + L_t and its backward, as the benchmark measures."""
    src, src_mask, protos = _inputs(seed=1)
    tgt, tgt_mask, _ = _inputs(seed=2, h=4, w=8)
    bank = PrototypeBank(K, C, 0.1, "decay")
    bank.set(protos)
    crit = PrototypeContrastiveLoss(100.0)
    s1, t1 = src.clone().requires_grad_(), tgt.clone().requires_grad_()
    bank.update(s1.detach(), src_mask)
    ours = crit(s1, src_mask, bank.prototypes) + crit(t1, tgt_mask, bank.prototypes)
    ours.backward()
    s2, t2 = src.clone().requires_grad_(), tgt.clone().requires_grad_()
    p = reference_prototype_update(protos, s2, src_mask, 0.1, "decay")
    ref = reference_contrastive_loss(s2, src_mask, p) + reference_contrastive_loss(t2, tgt_mask, p)
    ref.backward()
    assert abs(ours.item() - ref.item()) < 1e-5
    assert (bank.prototypes - p).abs().max().item() < 1e-5
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-8, rtol=1e-4)
    torch.testing.assert_close(t1.grad, t2.grad, atol=1e-8, rtol=1e-4)


def test_hand_written_backward_gradcheck():
    feat, _, protos = _inputs(B=1, h=2, w=3, zero_pixel=True)
    feat = feat[:, :12].double().requires_grad_()
    protos = protos[:, :12].double()
    # zero pixel: gradcheck's finite differences would step off the clamp, so test it without it
    feat.data[0, :, 0, 0] += 0.5
    assert torch.autograd.gradcheck(lambda f: _NormalisedDots.apply(f, protos, 0.7), (feat,))
    fcl = feat.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: _NormalisedDots.apply(f, protos, 0.7), (fcl,))


def test_loss_is_fp32_under_autocast():
    feat, mask, protos = _inputs()
    ref = reference_contrastive_loss(feat, mask, protos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = PrototypeContrastiveLoss(100.0)(feat, mask, protos)
        bank = PrototypeBank(K, C, 0.1, "decay")
        bank.set(protos)
        bank.update(feat, mask)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-5
    torch.testing.assert_close(bank.prototypes, reference_prototype_update(protos, feat, mask), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_thresholds_match_exact_sort(seed):
    g = torch.Generator().manual_seed(seed)
    ours, ref = ClassThresholds(K, cap=0.9), ReferenceThresholds(K, cap=0.9)
    for _ in range(4):
        logits = torch.randn(2, K, 16, 24, generator=g) * 3
        logits[:, K - 1] = -1e4  # a class never predicted → 0
        logits[:, 0] += 8.0  # a class predicted with median confidence above the cap
        probs = F.softmax(logits, dim=1)
        ours.update(probs)
        ref.update(probs)
    exact = ref.compute()
    got = ours.compute().numpy()
    assert np.abs(got - exact).max() <= 1.0 / ours.num_bins
    assert got[K - 1] == exact[K - 1] == 0.0
    assert got[0] == exact[0] == 0.9


def test_evaluator_matches_reference_iou():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, K, (2, 32, 48), generator=g)
    label = torch.randint(0, K, (2, 32, 48), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.1] = 255
    ev = SemSegEvaluator(K, class_names=[str(i) for i in range(K)])
    ev.process(pred, label)
    inter, union, _ = reference_intersection_union(pred, label, K)
    m = ev.evaluate()
    np.testing.assert_allclose(m["IoU"], (inter / union * 100).numpy(), rtol=1e-6)


def test_evaluator_fast_path_keeps_the_plain_rules():
    """Predictions at ignored pixels may be anything; bad labels and bad predictions at labelled
    pixels raise; uint8 inputs count like int64."""
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, K, (1, 16, 16), generator=g)
    label[:, :4] = 255
    pred = torch.randint(0, K, (1, 16, 16), generator=g)
    ev = SemSegEvaluator(K, class_names=[str(i) for i in range(K)])
    ev.process(pred, label)
    wild = pred.clone()
    wild[:, :4] = torch.randint(-50, 300, (1, 4, 16), generator=g)  # only at ignored pixels
    ev2 = SemSegEvaluator(K, class_names=[str(i) for i in range(K)])
    ev2.process(wild, label)
    ev2.process(pred.to(torch.uint8), label.to(torch.uint8))
    assert torch.equal(ev2.confusion, 2 * ev.confusion)
    for bad_label in (K, 254, -1, 256, 70000):
        lab = label.clone()
        lab[0, 8, 8] = bad_label
        with pytest.raises(ValueError, match="labels outside"):
            ev.process(pred, lab)
    bad_pred = pred.clone()
    bad_pred[0, 8, 8] = K
    with pytest.raises(ValueError, match="predictions outside"):
        ev.process(bad_pred, label)
