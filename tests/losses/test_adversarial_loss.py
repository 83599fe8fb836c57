"""`domain_bce` (docs/method.md "Warm-up": BCE-with-logits of D's outputs against the domain label,
source 0, target 1) against values worked out by hand: BCE(x, y) = softplus(x) − x·y, mean over pixels."""
import math

import pytest
import torch

from spcl.losses import SOURCE_DOMAIN, TARGET_DOMAIN, domain_bce


def test_domain_labels_are_source_0_and_target_1():
    assert (SOURCE_DOMAIN, TARGET_DOMAIN) == (0.0, 1.0)


def test_hand_computed_mean_against_each_domain():
    """Logits 0, ln 3, ln 3 (sigmoid 1/2, 3/4, 3/4): against 1 the pixel losses are ln 2, ln 4/3, ln 4/3;
    against 0 they are ln 2, ln 4, ln 4; the loss is their mean."""
    x = torch.tensor([0.0, math.log(3), math.log(3)]).reshape(1, 1, 1, 3)
    to_target = (math.log(2) + 2 * math.log(4 / 3)) / 3
    to_source = (math.log(2) + 2 * math.log(4)) / 3
    assert domain_bce(x, TARGET_DOMAIN).item() == pytest.approx(to_target, rel=1e-6)
    assert domain_bce(x, SOURCE_DOMAIN).item() == pytest.approx(to_source, rel=1e-6)


def test_confident_wrong_logits_are_not_clipped():
    """The loss is taken on the logits (softplus), not on a sigmoid that rounds to 1: a logit of 30
    against the source label costs softplus(30) ≈ 30, the BCE of sigmoid(30) = 1.0 in fp32 would be the
    log clamp of 100; a logit of −30 against it costs ≈ e^−30."""
    x = torch.tensor([30.0, -30.0]).reshape(1, 1, 1, 2)
    expected = (30.0 + math.log1p(math.exp(-30.0)) + math.log1p(math.exp(-30.0))) / 2
    assert domain_bce(x, SOURCE_DOMAIN).item() == pytest.approx(expected, rel=1e-6)


def test_low_precision_logits_give_the_fp32_loss_of_the_same_values():
    """bf16 discriminator outputs are upcast before the loss: the result is fp32 and equals the loss
    of the same (bf16-rounded) values given in fp32."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 1, 3, 4, generator=g) * 3).bfloat16()
    for domain in (SOURCE_DOMAIN, TARGET_DOMAIN):
        loss = domain_bce(x, domain)
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(domain_bce(x.float(), domain).item(), rel=1e-6)
