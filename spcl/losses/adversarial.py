"""Output-space adversarial losses of AdaptSegNet (docs/method.md "Warm-up"): BCE-with-logits against a constant
domain label (source = 0, target = 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SOURCE_DOMAIN, TARGET_DOMAIN = 0.0, 1.0


def domain_bce(d_logits: torch.Tensor, domain: float) -> torch.Tensor:
    """BCE-with-logits of discriminator outputs B×1×h×w against the constant `domain`."""
    d_logits = d_logits.float()
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, domain))
