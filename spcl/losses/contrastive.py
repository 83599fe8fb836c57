"""Prototype contrastive loss (paper Eq. 4 and 6; docs/method.md "Contrastive loss").

For each pixel feature q (L2-normalised over channels) with label y:
    L = CE([q·p_1, …, q·p_K] / τ, y),   mean over pixels whose label is not 255.
Prototypes are constants (no gradient); the gradient reaches the features only.
`contrastive_loss_reference` is that equation in four lines of plain PyTorch; the module below is
the fast path, tested against it (value and gradient).

The fast path is vectorised without normalised, transposed or squared copies of the B×C×h×w map (2,048 channels at
the paper's sizes; every such copy costs hundreds of MB and a pass over memory): the per-pixel
norms are summed over channel blocks, the dot products are one batched matrix product with the
prototypes (B×K×h×w, small), and a hand-written backward writes the feature gradient with one
multiply and one in-place matrix product:
    ∂L/∂f = Pᵀ·(G / (τ‖f‖)) − f · Σ_k G_k·logit_k / ‖f‖²,   G = ∂L/∂logits.
Works on contiguous and channels-last maps alike (read through views, never copied). Math in fp32
whatever the autocast context. The pixel operations live in `spcl/prototypes/ops.py`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spcl.data.labels import IGNORE_LABEL
from spcl.prototypes.ops import EPS, normalize_pixels, pixel_matrix, pixel_norm


class _NormalisedDots(torch.autograd.Function):
    """logits = (q·p_k) / (max(‖q‖, eps)·τ) for fp32 features B×C×h×w → B×K×h×w."""

    @staticmethod
    def forward(ctx, feat, prototypes, temperature):
        B, C, h, w = feat.shape
        K = prototypes.shape[0]
        with torch.autocast(feat.device.type, enabled=False):
            x, channels_first = pixel_matrix(feat)
            norm = pixel_norm(x, channels_first)  # B×N
            if channels_first:
                dots = torch.matmul(prototypes, x)  # B×K×N
            else:
                dots = torch.matmul(x, prototypes.t()).transpose(1, 2)  # B×K×N (a view)
            logits = dots / (norm.clamp_min(EPS)[:, None] * temperature)
        ctx.save_for_backward(feat, prototypes, logits, norm)
        ctx.temperature = temperature
        return logits.reshape(B, K, h, w)

    @staticmethod
    def backward(ctx, grad_logits):
        feat, prototypes, logits, norm = ctx.saved_tensors
        B, C, h, w = feat.shape
        K = prototypes.shape[0]
        with torch.autocast(feat.device.type, enabled=False):
            x, channels_first = pixel_matrix(feat)
            g = grad_logits.float().reshape(B, K, h * w)
            clamped = norm.clamp_min(EPS)
            g_scaled = g / (clamped[:, None] * ctx.temperature)  # B×K×N
            # d(1/‖q‖)/dq term; zero where the norm is clamped (as F.normalize's gradient)
            a = torch.where(norm > EPS, (g * logits).sum(1) / clamped.square(), torch.zeros_like(norm))  # B×N
            if channels_first:
                grad = torch.mul(x, a.neg_()[:, None])  # B×C×N, the only full-size tensor
                grad.baddbmm_(prototypes.t().expand(B, C, K), g_scaled)
                grad = grad.view(B, C, h, w)
            else:
                grad = torch.mul(x, a.neg_()[:, :, None])  # B×N×C
                grad.baddbmm_(g_scaled.transpose(1, 2), prototypes.expand(B, K, C))
                grad = grad.view(B, h, w, C).permute(0, 3, 1, 2)
        return grad, None, None


def prototype_logits(feat: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """(q / ||q||) · p_k / τ for every pixel: feat B×C×h×w, prototypes K×C → B×K×h×w (fp32)."""
    protos = prototypes.detach().float().to(feat.device).contiguous()
    return _NormalisedDots.apply(feat.float(), protos, float(temperature))


def contrastive_loss_reference(feat: torch.Tensor, mask: torch.Tensor, prototypes: torch.Tensor,
                               temperature: float, ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """Paper Eq. 4 as written: CE over (q/‖q‖)·p_k/τ. feat B×C×h×w, mask B×h×w, prototypes K×C.

    Readable, and it allocates normalised and B×K×h×w copies; `PrototypeContrastiveLoss` computes
    the same value and gradient without the copies."""
    q = normalize_pixels(feat)  # B×C×h×w, unit length per pixel
    logits = torch.einsum("bchw,kc->bkhw", q, prototypes.detach().float()) / temperature  # B×K×h×w
    return F.cross_entropy(logits, mask.long(), ignore_index=ignore_index)


class PrototypeContrastiveLoss(nn.Module):
    """`loss(feat, mask, prototypes)` → mean CE of paper Eq. 4 over valid pixels (fast path).

    Args:
        temperature: τ (released code: 100; usual contrastive value: 0.1).
        ignore_index: mask value left out.
        normalize_prototypes: divide each prototype by its norm first (paper: unit sphere); the
            released code uses the bank's EMA as it is (norm below 1).
    Call args:
        feat: B×C×h×w raw encoder features (normalised inside).
        mask: B×h×w int64 class labels at feature resolution, `ignore_index` ignored.
        prototypes: K×C (not trained by this loss).
    """

    def __init__(self, temperature: float = 100.0, ignore_index: int = IGNORE_LABEL,
                 normalize_prototypes: bool = False):
        super().__init__()
        self.temperature = float(temperature)
        self.ignore_index = ignore_index
        self.normalize_prototypes = normalize_prototypes

    def forward(self, feat: torch.Tensor, mask: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if feat.shape[0] != mask.shape[0] or feat.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"feature map {tuple(feat.shape)} and mask {tuple(mask.shape)} differ in B×h×w")
        if prototypes.shape[1] != feat.shape[1]:
            raise ValueError(f"prototypes {tuple(prototypes.shape)} do not match feature channels {feat.shape[1]}")
        if self.normalize_prototypes:
            prototypes = F.normalize(prototypes.detach().float(), dim=1, eps=EPS)  # K×C, unit rows
        logits = prototype_logits(feat, prototypes, self.temperature)
        mask = mask.to(logits.device).long()
        if not (mask != self.ignore_index).any():
            return logits.sum() * 0.0
        with torch.autocast(logits.device.type, enabled=False):
            return F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
