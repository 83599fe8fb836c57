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
from typing import Iterator

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
