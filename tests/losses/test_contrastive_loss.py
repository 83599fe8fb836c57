"""PrototypeContrastiveLoss (paper Eq. 4; docs/method.md "Contrastive loss") against hand-computed values and a per-pixel loop reference."""
import math

import pytest
import torch

from spcl.losses import PrototypeContrastiveLoss


def loop_reference(feat, mask, prototypes, tau):
    """Obvious per-pixel implementation: normalise q, dot with every prototype, CE, mean over valid."""
    B, C, H, W = feat.shape
    losses = []
    for b in range(B):
        for y in range(H):
            for x in range(W):
                k = int(mask[b, y, x])
                if k == 255:
                    continue
                q = feat[b, :, y, x]
                q = q / q.norm()
                logits = torch.stack([q @ p for p in prototypes]) / tau
                losses.append(-torch.log_softmax(logits, 0)[k])
    return torch.stack(losses).mean()


def test_hand_computed_value_with_ignored_pixel():
    # pixel 0: q = (3, 4) -> (0.6, 0.8), label 0; pixel 1 is ignored
    feat = torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])  # 1x2x1x2
    mask = torch.tensor([[[0, 255]]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = PrototypeContrastiveLoss(temperature=0.5)(feat, mask, protos)
    # logits (0.6/0.5, 0.8/0.5) = (1.2, 1.6); CE for class 0 = log(1 + e^0.4)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.4)), abs=1e-6)


def test_temperature_scale_tau_100_pins_loss_near_log_k():
    # tau = 100 (released code): logits are in [-0.01, 0.01], so the loss is ln K to within 0.01
    torch.manual_seed(0)
    K, C = 19, 16
    feat = torch.randn(2, C, 5, 6)
    mask = torch.randint(0, K, (2, 5, 6))
    protos = torch.nn.functional.normalize(torch.randn(K, C), dim=1)
    loss = PrototypeContrastiveLoss(temperature=100.0)(feat, mask, protos)
    assert abs(loss.item() - math.log(K)) < 0.01
    # hand-computed at tau = 100 for the two-pixel example: log(1 + e^0.002)
    feat1 = torch.tensor([[[[3.0]], [[4.0]]]])
    loss1 = PrototypeContrastiveLoss(100.0)(feat1, torch.tensor([[[0]]]), torch.eye(2))
    assert loss1.item() == pytest.approx(math.log(1 + math.exp(0.002)), abs=1e-7)


@pytest.mark.parametrize("tau", [0.1, 1.0, 100.0])
def test_matches_loop_reference_value_and_gradient(tau):
    torch.manual_seed(1)
    K, C = 5, 7
    feat = torch.randn(2, C, 3, 4, dtype=torch.float64)
    mask = torch.randint(0, K, (2, 3, 4))
    mask[0, 0, :2] = 255
    protos = torch.randn(K, C, dtype=torch.float64) * 0.3
    f1 = feat.clone().requires_grad_(True)
    f2 = feat.clone().requires_grad_(True)
    ours = PrototypeContrastiveLoss(tau)(f1, mask, protos)
    ref = loop_reference(f2, mask, protos, tau)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(f1.grad.double(), f2.grad, atol=1e-6)
    # ignored pixels get no gradient
    assert f1.grad[0, :, 0, :2].abs().max() == 0


def test_gradient_reaches_features_only():
    feat = torch.randn(1, 4, 2, 2, requires_grad=True)
    protos = torch.randn(3, 4, requires_grad=True)
    loss = PrototypeContrastiveLoss(0.1)(feat, torch.randint(0, 3, (1, 2, 2)), protos)
    loss.backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    assert protos.grad is None


def test_scale_invariance_of_features():
    # features are L2-normalised: scaling a pixel's feature does not change the loss
    torch.manual_seed(2)
    feat = torch.randn(1, 6, 3, 3)
    mask = torch.randint(0, 4, (1, 3, 3))
    protos = torch.randn(4, 6)
    scale = torch.rand(1, 1, 3, 3) * 10 + 0.1
    loss = PrototypeContrastiveLoss(0.2)
    assert loss(feat, mask, protos).item() == pytest.approx(loss(feat * scale, mask, protos).item(), rel=1e-5)


def test_all_ignored_gives_zero_with_graph_and_bad_shapes_raise():
    feat = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = PrototypeContrastiveLoss()(feat, torch.full((1, 2, 2), 255), torch.randn(2, 3))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="mask"):
        PrototypeContrastiveLoss()(feat, torch.zeros(1, 3, 3, dtype=torch.long), torch.randn(2, 3))
    with pytest.raises(ValueError, match="channels"):
        PrototypeContrastiveLoss()(feat, torch.zeros(1, 2, 2, dtype=torch.long), torch.randn(2, 5))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_path_equals_the_readable_equation(channels_last):
    """`PrototypeContrastiveLoss` (hand-written backward, no copies) and `contrastive_loss_reference`
    (Eq. 4 in four lines of autograd PyTorch) agree in value and feature gradient."""
    from spcl.losses.contrastive import contrastive_loss_reference

    g = torch.Generator().manual_seed(4)
    feat = torch.randn(2, 40, 5, 6, generator=g) * 3
    if channels_last:
        feat = feat.to(memory_format=torch.channels_last)
    mask = torch.randint(0, 7, (2, 5, 6), generator=g)
    mask[0, 0] = 255
    protos = torch.nn.functional.normalize(torch.randn(7, 40, generator=g), dim=1)
    for tau in (100.0, 0.1):
        f1, f2 = feat.clone().requires_grad_(True), feat.clone().requires_grad_(True)
        fast = PrototypeContrastiveLoss(tau)(f1, mask, protos)
        ref = contrastive_loss_reference(f2, mask, protos, tau)
        fast.backward()
        ref.backward()
        assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(f1.grad, f2.grad, rtol=1e-4, atol=1e-8)


def test_normalized_prototypes_make_the_loss_invariant_to_prototype_norms():
    """NORMALIZE_PROTOTYPES (paper: prototypes on the unit sphere): shrinking a prototype, as the EMA
    of unit vectors does, changes the released loss but not the normalised one."""
    from spcl.losses.contrastive import contrastive_loss_reference

    g = torch.Generator().manual_seed(6)
    feat = torch.randn(1, 16, 4, 4, generator=g)
    mask = torch.randint(0, 5, (1, 4, 4), generator=g)
    protos = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    shrunk = protos * torch.tensor([1.0, 0.5, 0.8, 0.3, 1.0])[:, None]
    tau = 0.2
    unit = PrototypeContrastiveLoss(tau, normalize_prototypes=True)
    assert unit(feat, mask, shrunk).item() == pytest.approx(
        contrastive_loss_reference(feat, mask, protos, tau).item(), rel=1e-5)
    released = PrototypeContrastiveLoss(tau)
    assert released(feat, mask, shrunk).item() == pytest.approx(
        contrastive_loss_reference(feat, mask, shrunk, tau).item(), rel=1e-5)
    assert abs(released(feat, mask, shrunk).item() - unit(feat, mask, shrunk).item()) > 1e-3


@pytest.mark.parametrize("channels_last", [False, True])
def test_pixels_at_or_below_the_norm_clamp_follow_f_normalize(channels_last):
    """q / max(‖q‖, eps) as F.normalize (docs/method.md "Contrastive loss"): an all-zero feature (a ReLU
    map can have one) has logits 0, so alone it costs ln K, not 0/0 = NaN; next to pixels of norm below
    and exactly at eps (clamped, so no d(1/‖q‖)/dq term) and ordinary pixels, the value and the feature
    gradient equal those of the readable equation's autograd."""
    from spcl.losses.contrastive import contrastive_loss_reference

    g = torch.Generator().manual_seed(5)
    K = 4
    protos = torch.nn.functional.normalize(torch.randn(K, 6, generator=g), dim=1)
    feat = torch.randn(1, 6, 2, 3, generator=g)
    feat[0, :, 0, 0] = 0.0
    feat[0, :, 0, 1] = torch.randn(6, generator=g) * 1e-14  # norm ~3e-14 < eps = 1e-12
    feat[0, :, 0, 2] = 0.0
    feat[0, 0, 0, 2] = 1e-12  # norm exactly eps in fp32: clamped too (no 1/‖q‖ term), as in F.normalize
    if channels_last:
        feat = feat.to(memory_format=torch.channels_last)
    only_zero = torch.full((1, 2, 3), 255)
    only_zero[0, 0, 0] = 2
    assert PrototypeContrastiveLoss(0.5)(feat, only_zero, protos).item() == pytest.approx(math.log(K), rel=1e-6)

    mask = torch.randint(0, K, (1, 2, 3), generator=g)
    f1, f2 = feat.clone().requires_grad_(True), feat.clone().requires_grad_(True)
    fast = PrototypeContrastiveLoss(0.5)(f1, mask, protos)
    ref = contrastive_loss_reference(f2, mask, protos, 0.5)
    fast.backward()
    ref.backward()
    assert math.isfinite(fast.item()) and fast.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.isfinite(f1.grad).all()
    assert torch.allclose(f1.grad, f2.grad, rtol=1e-4, atol=1e-8)


def test_a_mask_that_differs_only_in_height_or_batch_is_refused_by_name():
    """The B×h×w check names both shapes whichever of B, h or w differs (not a cross-entropy error)."""
    feat = torch.randn(2, 3, 4, 5)
    for bad in (torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)):
        with pytest.raises(ValueError, match="mask"):
            PrototypeContrastiveLoss()(feat, bad, torch.randn(2, 3))


def test_default_temperature_is_the_released_100():
    """Without arguments the loss uses the released τ = 100 (docs/method.md, LOSS.CONTRAST.TEMPERATURE):
    q = (0.6, 0.8), prototypes e1, e2, label 0 → logits (0.006, 0.008), CE = log(1 + e^0.002)."""
    feat = torch.tensor([[[[3.0]], [[4.0]]]])
    loss = PrototypeContrastiveLoss()(feat, torch.tensor([[[0]]]), torch.eye(2))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.002)), abs=1e-7)
