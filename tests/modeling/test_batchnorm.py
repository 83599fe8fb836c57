"""running_stats_frozen: a pass inside it normalises with its batch statistics (same output and
gradient as outside) but leaves the running statistics as they were; the layers update again after."""
import torch
import torch.nn.functional as F
from torch import nn

from spcl.modeling.batchnorm import running_stats_frozen


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
    return net.train()


def _stats(net):
    return [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
            for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def test_inside_the_block_batch_statistics_normalise_and_running_statistics_stay():
    net = _net()
    x = torch.randn(2, 3, 5, 6)
    before = _stats(net)
    with running_stats_frozen(net):
        out = net[1](net[0](x))
    h = net[0](x)
    expected = F.batch_norm(h, None, None, net[1].weight, net[1].bias, training=True, eps=net[1].eps)
    assert torch.allclose(out, expected, atol=1e-6)
    for (m0, v0, n0), (m1, v1, n1) in zip(before, _stats(net)):
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and n0 == n1


def test_layers_update_again_after_the_block():
    net = _net()
    x = torch.randn(2, 3, 5, 6)
    with running_stats_frozen(net):
        net(x)
    before = _stats(net)
    h = net[0](x).detach()
    net(x)
    mean0, var0, n0 = before[0]
    m = net[1].momentum
    n = h.numel() / h.shape[1]
    expected_mean = (1 - m) * mean0 + m * h.mean(dim=(0, 2, 3))
    expected_var = (1 - m) * var0 + m * h.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)
    assert torch.allclose(net[1].running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(net[1].running_var, expected_var, atol=1e-5)
    assert int(net[1].num_batches_tracked) == n0 + 1


def test_disabled_is_a_no_op():
    net, ref = _net(), _net()
    x = torch.randn(2, 3, 5, 6)
    with running_stats_frozen(net, enabled=False):
        net(x)
    ref(x)
    for (m0, v0, n0), (m1, v1, n1) in zip(_stats(ref), _stats(net)):
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and n0 == n1


def test_eval_mode_layers_are_left_alone():
    net = _net().eval()
    x = torch.randn(2, 3, 5, 6)
    with running_stats_frozen(net):
        assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
        out = net(x)
    assert torch.allclose(out, _net().eval()(x))


def test_reestimated_statistics_are_the_equal_weight_mean_of_the_batch_statistics():
    """AdaBN re-estimation: running_mean = mean of the per-batch means, running_var = mean of the
    per-batch unbiased variances (hand-computed over three batches of different sizes); weights and
    momentum unchanged, model left in eval mode."""
    from spcl.modeling.batchnorm import reestimate_running_stats

    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.num_batches_tracked.fill_(10)  # a trained layer's count: the average must not continue it
        bn.weight.uniform_(0.5, 1.5)
    net = nn.Sequential(bn).train()
    weight = bn.weight.clone()
    batches = [{"image": torch.randn(n, 3, 4, 5) * (i + 1) + i} for i, n in enumerate((1, 2, 4))]
    seen = reestimate_running_stats(net, batches, torch.device("cpu"))
    means = torch.stack([b["image"].mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b["image"].transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for b in batches])
    assert seen == 7
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert torch.equal(bn.weight, weight) and bn.momentum == 0.1 and not net.training and not bn.training


def test_reestimation_refuses_a_model_without_trainable_batchnorm():
    import pytest
    from torchvision.ops.misc import FrozenBatchNorm2d

    from spcl.modeling.batchnorm import reestimate_running_stats

    with pytest.raises(ValueError, match="no trainable BatchNorm"):
        reestimate_running_stats(nn.Sequential(FrozenBatchNorm2d(3)), [{"image": torch.zeros(1, 3, 2, 2)}],
                                 torch.device("cpu"))


def test_every_trainable_batchnorm_kind_is_frozen_and_restored():
    """Not only BatchNorm2d: BatchNorm1d keeps its running statistics through a training pass inside the
    block, and SyncBatchNorm (what DDP runs use) is switched off inside and back on after."""
    torch.manual_seed(2)
    bn1, sync = nn.BatchNorm1d(3), nn.SyncBatchNorm(4)
    net = nn.Sequential(bn1, nn.Sequential(sync)).train()
    mean, var = bn1.running_mean.clone(), bn1.running_var.clone()
    with running_stats_frozen(net):
        assert not bn1.track_running_stats and not sync.track_running_stats
        out = bn1(torch.randn(5, 3) * 2 + 1)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)  # batch statistics normalised it
    assert torch.equal(bn1.running_mean, mean) and torch.equal(bn1.running_var, var)
    assert int(bn1.num_batches_tracked) == 0
    assert bn1.track_running_stats and sync.track_running_stats


def test_a_batchnorm_without_running_statistics_is_left_as_it_was():
    """A layer built with track_running_stats=False has nothing to freeze: the block must not turn the flag
    on afterwards (that layer would then claim statistics it has none of, and re-estimation would
    try to reset its missing buffers)."""
    from spcl.modeling.batchnorm import reestimate_running_stats

    plain = nn.BatchNorm2d(4, track_running_stats=False)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), plain).train()
    with running_stats_frozen(net):
        net(torch.randn(2, 3, 4, 4))
    assert plain.track_running_stats is False and plain.running_mean is None
    assert reestimate_running_stats(net, [{"image": torch.randn(2, 3, 4, 4)}], torch.device("cpu")) == 2


def test_reestimation_runs_the_other_layers_in_eval_mode():
    """AdaBN re-estimates only BatchNorm statistics: the rest of the network runs as at test time, so a
    dropout before the layer is the identity and the running mean / variance are exactly those of the
    input (a training-mode dropout would zero half the values and double the rest)."""
    from spcl.modeling.batchnorm import reestimate_running_stats

    torch.manual_seed(3)
    bn = nn.BatchNorm2d(3)
    net = nn.Sequential(nn.Dropout(0.5), bn).train()
    batch = torch.randn(4, 3, 5, 5) * 2 + 3
    reestimate_running_stats(net, [{"image": batch}], torch.device("cpu"))
    assert torch.allclose(bn.running_mean, batch.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, batch.transpose(0, 1).reshape(3, -1).var(dim=1), atol=1e-4)


def test_reestimation_refuses_no_images_and_layers_without_running_statistics():
    """Nothing to average is an error, not silently reset statistics; a BatchNorm built without running
    statistics does not count as a layer to re-estimate."""
    import pytest

    from spcl.modeling.batchnorm import reestimate_running_stats

    with pytest.raises(ValueError, match="no images"):
        reestimate_running_stats(nn.Sequential(nn.BatchNorm2d(3)), [], torch.device("cpu"))
    with pytest.raises(ValueError, match="no trainable BatchNorm"):
        reestimate_running_stats(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)),
                                 [{"image": torch.zeros(1, 3, 2, 2)}], torch.device("cpu"))
