"""benchmarks/train_step.py trains the frozen-BN path from random weights: `calibrate_frozen_bn` must
give every FrozenBatchNorm2d the statistics of its own input, so that each one normalises it."""
from __future__ import annotations

import tempfile

import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from benchmarks.train_step import build_trainer, calibrate_frozen_bn, make_batch

MODEL = {"backbone": "resnet18", "H": 32, "W": 64, "source_batch": 2, "target_batch": 2}


def _bn_io(module, images):
    """[(layer, input, output)] of every FrozenBatchNorm2d in one forward pass."""
    seen = []

    def keep(m, args, out):  # copies: the ReLU after a BN works in place
        seen.append((m, args[0].detach().clone(), out.detach().clone()))

    hooks = [m.register_forward_hook(keep) for m in module.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        module(images)
    for h in hooks:
        h.remove()
    return seen


def test_every_frozen_bn_normalises_its_input_after_calibration():
    trainer = build_trainer(MODEL, "fp32", tempfile.mkdtemp())
    module = getattr(trainer.model, "module", trainer.model)
    images = make_batch(MODEL, 7)["source"]["image"]
    assert calibrate_frozen_bn(module, images) == sum(isinstance(m, FrozenBatchNorm2d) for m in module.modules())
    io = _bn_io(module, images)
    assert len(io) >= 20  # ResNet-18: stem + 2 per block + downsamples
    for layer, x, y in io:
        # each layer's output = its input standardised by the input's own batch statistics, then w, b
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        w, b = layer.weight.view(1, -1, 1, 1), layer.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + layer.eps) * w + b, atol=1e-4, rtol=1e-4)


def test_calibrated_random_resnet101_starts_near_chance():
    # uncalibrated, the frozen statistics (0, 1) let activations grow through the 101 layers: the
    # first seg loss is ~1e3 at this size (~1e5 at the paper's), the second ~1e6, then NaN
    model = dict(MODEL, backbone="resnet101")
    trainer = build_trainer(model, "fp32", tempfile.mkdtemp())
    batch = {k: trainer._to_device(v) for k, v in make_batch(model, 0).items()}
    loss = float(trainer.run_step(batch)["loss_seg"])
    assert loss < 20.0, loss  # ln 19 = 2.9 at chance; 7.9 measured
