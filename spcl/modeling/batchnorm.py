"""Which forward passes update trainable BatchNorm running statistics (MODEL.BN_RUNNING_STATS).

Warm-up and align forward the source and the target batch separately. With trainable BatchNorm (the
toy config; the paper configs freeze it) each batch is normalised by its own domain's batch statistics
during training, but evaluation and pseudo-labelling of target images use the running statistics,
which an update from both passes makes a ~50/50 mix of source and target. The network is then tested
under a normalisation it was never trained with. `running_stats_frozen` keeps a pass from updating the
running statistics while it still normalises with its batch statistics, so the running statistics
follow the target passes only (docs/method.md "Model").
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, no trainable BatchNorm of `module` (nn.BatchNorm*d, SyncBatchNorm) in training
    mode updates running_mean / running_var / num_batches_tracked; normalisation and gradients are
    unchanged (batch statistics in training mode). FrozenBatchNorm2d and eval-mode layers are untouched.
    `enabled False` makes it a no-op."""
    changed = []
    if enabled:
        for m in module.modules():
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats:
                m.track_running_stats = False
                changed.append(m)
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


@torch.no_grad()
def reestimate_running_stats(model: nn.Module, batches: Iterable[dict], device: torch.device) -> int:
    """Replace the running statistics of every trainable BatchNorm of `model` by their average over
    `batches` (dicts with "image": B×3×H×W), as AdaBN (Li et al., 2017) does with the target images
    of a source-trained network: each layer's running_mean / running_var become the equal-weight mean
    of the per-batch means / unbiased variances (momentum None). Weights are not touched; the model is
    left in eval mode with its momenta restored. Returns the number of images seen."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        raise ValueError("the model has no trainable BatchNorm with running statistics to re-estimate "
                         "(frozen BatchNorm keeps its statistics as buffers)")
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for batch in batches:
            model(batch["image"].to(device))
            seen += batch["image"].shape[0]
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    if seen == 0:
        raise ValueError("no images to re-estimate the BatchNorm statistics from")
    return seen
