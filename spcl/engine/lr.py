"""Poly learning-rate schedule (docs/method.md "Schedules"): lr = base · (1 − it / MAX_ITER) ** power."""
from __future__ import annotations


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    return base_lr * max(0.0, 1.0 - iteration / max_iter) ** power


def set_lr(optimizer, lr: float) -> None:
    """Set every group's lr to `lr × group['lr_factor']` (factor 1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)
