"""Class Center Distance (CCD; docs/method.md "Analyses", paper App. D, defined in FADA): how compact each class is
in feature space relative to how far its prototype lies from the others. Lower is better.

    CCD_k = 1/(K'−1) · Σ_{j≠k} [ (1/|Ω_k|) Σ_{x∈Ω_k} ‖x − p_k‖² ] / ‖p_k − p_j‖²

with p_k the mean of the class's pixel features and Ω_k its pixels. The within-class term is computed
from streamed sums: (1/n)Σ‖x − p‖² = Σ‖x‖²/n − ‖p‖² (p = Σx/n), so no pixel is kept. Classes with no
pixel are left out: their CCD is NaN and they are not among the j of the other classes, so K' is
the number of classes present. The features are the L2-normalised encoder features of
spcl.analysis.features. Called by tools/analyze.py (`ccd`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .features import FeatureStats

# Which statistics each reported CCD uses: one domain, or both pooled (prototypes = pooled means).
CCD_SETS = ("both", "source", "target")


def class_center_distance(sums: torch.Tensor, sq_sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """CCD of every class from per-class feature statistics.

    Args:
        sums: K×C, Σ x over the pixels of each class.
        sq_sums: K, Σ ‖x‖² over the pixels of each class.
        counts: K, number of pixels of each class.
    Returns:
        K float64: CCD_k; NaN for classes without pixels (and for all when fewer than two classes
        have pixels); +inf when another present class has exactly the same prototype.
    """
    sums, sq_sums, counts = sums.double(), sq_sums.double(), counts.double()
    K = counts.numel()
    out = torch.full((K,), math.nan, dtype=torch.float64)
    present = counts > 0
    n_present = int(present.sum())
    if n_present < 2:
        return out
    n = counts[present]
    protos = sums[present] / n[:, None]  # K'×C
    spread = (sq_sums[present] / n - protos.pow(2).sum(1)).clamp_min(0)  # K', mean ‖x − p_k‖²
    dist2 = (protos[:, None, :] - protos[None, :, :]).pow(2).sum(-1)  # K'×K', ‖p_k − p_j‖²
    ratio = spread[:, None] / dist2
    ratio.fill_diagonal_(0.0)  # j ≠ k
    out[present.cpu()] = (ratio.sum(1) / (n_present - 1)).cpu()
    return out


def ccd_of(stats: FeatureStats) -> torch.Tensor:
    """`class_center_distance` of a FeatureStats (K float64)."""
    return class_center_distance(stats.sums, stats.sq_sums, stats.counts)


def domain_ccd(source: FeatureStats, target: FeatureStats) -> dict[str, torch.Tensor]:
    """CCD per class of each domain alone and of both pooled: {"both", "source", "target"} → K."""
    return {"both": ccd_of(source + target), "source": ccd_of(source), "target": ccd_of(target)}


def nanmean(values: Sequence[float], indices: Sequence[int] = ()) -> float:
    """Mean of the finite values (at `indices` when given); NaN when there is none."""
    vals = [float(values[i]) for i in indices] if indices else [float(v) for v in values]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def format_ccd_table(results: Sequence[tuple[str, Mapping[str, torch.Tensor]]], class_names: Sequence[str],
                     tail: Sequence[int] = (), sets: Sequence[str] = CCD_SETS) -> str:
    """Text table: one row per class (tail classes marked '*'), one column group per checkpoint.

    Args:
        results: (checkpoint label, {set name → K CCD values}) per checkpoint.
        class_names: K names.
        tail: indices of the tail classes.
    """
    width = 10
    head1 = f"{'':<15}" + "".join(f"{label[:width * len(sets) - 2]:<{width * len(sets)}}" for label, _ in results)
    head2 = f"{'class':<15}" + "".join(f"{s:>{width}}" for _ in results for s in sets)
    lines = [head1.rstrip(), head2]

    def fmt(v: float) -> str:
        return f"{v:>{width}.4f}" if math.isfinite(v) else f"{'-' if math.isnan(v) else 'inf':>{width}}"

    for k, name in enumerate(class_names):
        row = f"{name + ('*' if k in tail else ''):<15}"
        row += "".join(fmt(float(r[s][k])) for _, r in results for s in sets)
        lines.append(row)
    for title, idx in (("mean", ()), ("mean tail*", tuple(tail))):
        if title != "mean" and not idx:
            continue
        lines.append(f"{title:<15}" + "".join(fmt(nanmean(r[s].tolist(), idx)) for _, r in results for s in sets))
    lines.append("(* = tail class; - = class without pixels; lower is better; "
                 "both = source and target pooled)")
    return "\n".join(lines)
