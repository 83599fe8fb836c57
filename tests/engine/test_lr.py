"""`poly_lr` and `set_lr` (docs/method.md "Schedules": lr = base · (1 − it / MAX_ITER)^0.9, head lr =
HEAD_LR_FACTOR × backbone lr) against values worked out by hand. The trainer tests run the toy config,
whose LR_POWER is the default 0.9 and whose HEAD_LR_FACTOR is 1, so they cannot see a power or a group
factor that is ignored; these tests set both to other values."""
import math

import pytest
import torch

from spcl.engine.lr import poly_lr, set_lr


def test_poly_lr_uses_the_given_power_and_defaults_to_0_9():
    """(1 − 3/10)² = 0.49 at power 2; 0.5^0.9 at the documented default power; the base scales it."""
    assert poly_lr(0.01, 3, 10, power=2.0) == pytest.approx(0.01 * 0.49, rel=1e-12)
    assert poly_lr(0.01, 3, 10, power=1.0) == pytest.approx(0.01 * 0.7, rel=1e-12)
    assert poly_lr(2.0, 5, 10) == pytest.approx(2.0 * math.exp(0.9 * math.log(0.5)), rel=1e-12)
    assert poly_lr(2.0, 0, 10) == 2.0


def test_poly_lr_is_zero_at_and_past_the_horizon():
    """The schedule reaches 0 at MAX_ITER and stays there (a real 0.0, not the complex power of a
    negative base) for any later iteration."""
    assert poly_lr(0.01, 10, 10) == 0.0
    for it in (11, 15, 100):
        lr = poly_lr(0.01, it, 10)
        assert isinstance(lr, float) and lr == 0.0


def test_set_lr_multiplies_each_group_by_its_lr_factor():
    """A group's lr is lr × its `lr_factor` (the head's 10× of the paper schedule); a group without
    one (the discriminator's) gets lr itself."""
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a], "lr_factor": 1.0}, {"params": [b], "lr_factor": 10.0},
                           {"params": [c]}], lr=1.0)
    set_lr(opt, 0.003)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.003, 0.03, 0.003], rel=1e-12)
