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
