"""Output-space discriminator of AdaptSegNet (docs/method.md "Model"), used by the adv_warmup stage: five 4x4 convs,
stride 2, pad 1, K→64→128→256→512→1, LeakyReLU(0.2) after the first four."""
from __future__ import annotations

import torch
import torch.nn as nn


class OutputDiscriminator(nn.Module):
    """B×K×H×W softmax maps → B×1×H/32×W/32 domain logits (source = 0, target = 1)."""

    def __init__(self, num_classes: int, channels: int = 64):
        super().__init__()
        widths = [num_classes, channels, channels * 2, channels * 4, channels * 8]
        layers = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
