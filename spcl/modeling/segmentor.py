"""DeepLab-v2 segmentor: encoder + ASPP classifier. `forward` returns the encoder features F (the
space of the prototypes and the contrastive loss, SPEC §2) and the logits, both at stride 8."""
from __future__ import annotations

import torch
import torch.nn as nn


class Segmentor(nn.Module):
    """`forward(images B×3×H×W)` → {"feat": B×C×H/8×W/8, "logits": B×K×H/8×W/8}."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.backbone(images)
        return {"feat": feat, "logits": self.head(feat)}

    def param_groups(self, base_lr: float, head_lr_factor: float) -> list[dict]:
        """SGD groups: backbone at `base_lr`, classifier at `base_lr × head_lr_factor` (SPEC §2)."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": base_lr,
             "lr_factor": 1.0, "name": "backbone"},
            {"params": [p for p in self.head.parameters() if p.requires_grad], "lr": base_lr * head_lr_factor,
             "lr_factor": head_lr_factor, "name": "head"},
        ]
