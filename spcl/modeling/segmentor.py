"""DeepLab-v2 segmentor: encoder + ASPP classifier. `forward` returns the encoder features F (the
space of the prototypes and the contrastive loss, paper Sec. 3) and the logits, both at stride 8;
`predict` gives class probabilities at full resolution (the test protocol of docs/method.md:
logits upsampled bilinearly to the output size, optional flip and multi-scale averaging)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


LogitsFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def whole_image_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's logits B×K×h×w of the whole input (any stride): the default of `predict_probs`."""
    return model(images)["logits"]


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, out_size: Optional[tuple[int, int]] = None,
                  scales: Sequence[float] = (1.0,), flip: bool = False,
                  logits_fn: Optional[LogitsFn] = None) -> torch.Tensor:
    """Softmax B×K×H×W at `out_size` (H, W; default the input's), averaged over scales of the input
    and horizontal flips. `logits_fn(model, x)` gives the logits of an input x at any stride (default
    `model(x)["logits"]`; `spcl.evaluation.sliding.sliding_window(...)` gives sliding-window logits);
    they are upsampled bilinearly to `out_size`."""
    if not len(scales) or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive factors of the input size (TEST.SCALES, --scales), "
                         f"got {list(scales)}")
    logits_fn = logits_fn or whole_image_logits
    out_size = tuple(out_size or images.shape[-2:])
    total, count = None, 0
    h, w = images.shape[-2:]
    for s in scales:
        if min(round(h * s), round(w * s)) < 1:
            raise ValueError(f"scale {s} of a {w}×{h} input leaves no pixel (TEST.SCALES, --scales); use a "
                             "larger factor")
        x = images if s == 1.0 else F.interpolate(images, size=(round(h * s), round(w * s)), mode="bilinear",
                                                  align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            xi = torch.flip(x, dims=[3]) if flipped else x
            logits = logits_fn(model, xi).float()  # B×K×h×w
            if flipped:
                logits = torch.flip(logits, dims=[3])
            probs = F.softmax(F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False), dim=1)
            total = probs if total is None else total + probs
            count += 1
    return total / count


class Segmentor(nn.Module):
    """`forward(images B×3×H×W)` → {"feat": B×C×H/8×W/8, "logits": B×K×H/8×W/8}."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.backbone(images)
        return {"feat": feat, "logits": self.head(feat)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, out_size: Optional[tuple[int, int]] = None,
                scales: Sequence[float] = (1.0,), flip: bool = False,
                logits_fn: Optional[LogitsFn] = None) -> torch.Tensor:
        """Class probabilities B×K×H×W at `out_size` (default: the input's H×W); argmax for labels.
        `logits_fn`: see `predict_probs` (e.g. `spcl.evaluation.sliding_window((512, 512), (341, 341))`).
        Switches to eval mode (and back)."""
        was_training = self.training
        self.eval()
        try:
            return predict_probs(self, images, out_size, scales, flip, logits_fn)
        finally:
            self.train(was_training)

    def param_groups(self, base_lr: float, head_lr_factor: float) -> list[dict]:
        """SGD groups: backbone at `base_lr`, classifier at `base_lr × head_lr_factor` (released code: classifier at 10× the backbone's lr)."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": base_lr,
             "lr_factor": 1.0, "name": "backbone"},
            {"params": [p for p in self.head.parameters() if p.requires_grad], "lr": base_lr * head_lr_factor,
             "lr_factor": head_lr_factor, "name": "head"},
        ]
