"""DeepLab-v2 ASPP classifier (docs/method.md "Model"): parallel 3x3 convs C→K with dilation = padding ∈ {6, 12, 18,
24}, whose outputs are summed; weights N(0, 0.01), biases 0."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class ASPPClassifier(nn.Module):
    """Sum of dilated 3x3 convs: B×C×h×w → B×K×h×w logits."""

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24),
                 init_std: float = 0.01):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0, init_std)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out
