"""Class Center Distance (CCD; docs/method.md "Analyses", paper App. D, defined in FADA): how compact each class is
in feature space relative to how far its prototype lies from the others. Lower is better.

    CCD_k = 1/(K'−1) · Σ_{j≠k} [ (1/|Ω_k|) Σ_{x∈Ω_k} ‖x − p_k‖² ] / ‖p_k − p_j‖²

with p_k the mean of the class's pixel features and Ω_k its pixels. The within-class term is computed
from streamed sums: (1/n)Σ‖x − p‖² = Σ‖x‖²/n − ‖p‖² (p = Σx/n), so no pixel is kept. Classes with no
pixel are left out: their CCD is NaN and they are not among the j of the other classes, so K' is
the number of classes present. With `min_pixels` > 1, a class seen on fewer pixels counts as absent
(a prototype of 1–3 pixels is noise, and a near-zero bar of it reads like a missing class):
`too_few_pixels` tells those classes apart from classes without any pixel. The features are the
L2-normalised encoder features of spcl.analysis.features. Called by tools/analyze.py (`ccd`).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from .features import FeatureStats

# Which statistics each reported CCD uses: one domain, or both pooled (prototypes = pooled means).
CCD_SETS = ("both", "source", "target")


def class_center_distance(sums: torch.Tensor, sq_sums: torch.Tensor, counts: torch.Tensor,
                          min_pixels: int = 1) -> torch.Tensor:
    """CCD of every class from per-class feature statistics.

    Args:
        sums: K×C, Σ x over the pixels of each class.
        sq_sums: K, Σ ‖x‖² over the pixels of each class.
        counts: K, number of pixels of each class.
        min_pixels: classes with fewer pixels count as absent (at least 1).
    Returns:
        K float64: CCD_k; NaN for classes with fewer than `min_pixels` pixels (and for all when
        fewer than two classes have enough); +inf when another present class has exactly the same
        prototype.
    """
    sums, sq_sums, counts = sums.double(), sq_sums.double(), counts.double()
    K = counts.numel()
    out = torch.full((K,), math.nan, dtype=torch.float64)
    present = counts >= max(1, int(min_pixels))
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


def ccd_of(stats: FeatureStats, min_pixels: int = 1) -> torch.Tensor:
    """`class_center_distance` of a FeatureStats (K float64)."""
    return class_center_distance(stats.sums, stats.sq_sums, stats.counts, min_pixels)


def domain_ccd(source: FeatureStats, target: FeatureStats, min_pixels: int = 1) -> dict[str, torch.Tensor]:
    """CCD per class of each domain alone and of both pooled: {"both", "source", "target"} → K.
    Classes with fewer than `min_pixels` pixels in a set are NaN in that set."""
    return {"both": ccd_of(source + target, min_pixels), "source": ccd_of(source, min_pixels),
            "target": ccd_of(target, min_pixels)}


def too_few_pixels(source: FeatureStats, target: FeatureStats, min_pixels: int) -> dict[str, torch.Tensor]:
    """Per set, K bools: the class has pixels, but fewer than `min_pixels` (its CCD is NaN)."""
    counts = {"both": (source + target).counts, "source": source.counts, "target": target.counts}
    return {s: (c > 0) & (c < min_pixels) for s, c in counts.items()}


def nanmean(values: Sequence[float], indices: Sequence[int] = ()) -> float:
    """Mean of the finite values (at `indices` when given); NaN when there is none."""
    vals = [float(values[i]) for i in indices] if indices else [float(v) for v in values]
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def format_ccd_table(results: Sequence[tuple[str, Mapping[str, torch.Tensor]]], class_names: Sequence[str],
                     tail: Sequence[int] = (), sets: Sequence[str] = CCD_SETS,
                     too_few: Optional[Sequence[Mapping[str, Sequence[bool]]]] = None, min_pixels: int = 0) -> str:
    """Text table: one row per class (tail classes marked '*'), one column group per checkpoint.

    Args:
        results: (checkpoint label, {set name → K CCD values}) per checkpoint.
        class_names: K names.
        tail: indices of the tail classes.
        too_few: per checkpoint, {set → K bools} of the classes left out for having fewer than
            `min_pixels` pixels: shown as 'few' instead of '-'.
    """
    width = 10
    head1 = f"{'':<15}" + "".join(f"{label[:width * len(sets) - 2]:<{width * len(sets)}}" for label, _ in results)
    head2 = f"{'class':<15}" + "".join(f"{s:>{width}}" for _ in results for s in sets)
    lines = [head1.rstrip(), head2]

    def fmt(v: float) -> str:
        return f"{v:>{width}.4f}" if math.isfinite(v) else f"{'-' if math.isnan(v) else 'inf':>{width}}"

    def cell(m: int, s: str, k: int) -> str:
        v = float(results[m][1][s][k])
        if math.isnan(v) and too_few is not None and bool(too_few[m][s][k]):
            return f"{'few':>{width}}"
        return fmt(v)

    for k, name in enumerate(class_names):
        row = f"{name + ('*' if k in tail else ''):<15}"
        row += "".join(cell(m, s, k) for m in range(len(results)) for s in sets)
        lines.append(row)
    for title, idx in (("mean", ()), ("mean tail*", tuple(tail))):
        if title != "mean" and not idx:
            continue
        lines.append(f"{title:<15}" + "".join(fmt(nanmean(r[s].tolist(), idx)) for _, r in results for s in sets))
    few = f"few = fewer than {min_pixels} pixels, left out; " if too_few is not None and min_pixels > 1 else ""
    lines.append(f"(* = tail class; - = class without pixels; {few}lower is better; "
                 "both = source and target pooled)")
    return "\n".join(lines)
