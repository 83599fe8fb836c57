"""Matplotlib figures of the analyses: the CCD bar chart (paper Fig. 5 style) and the embedding
scatter coloured by class (paper Fig. 4 style). Uses matplotlib's object API with the Agg canvas
(no pyplot, no global backend switch); figures have a fixed size in pixels (inches × DPI), so a
caller knows what it gets. Called by tools/analyze.py; matplotlib is the `analysis` extra."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from .deps import require

DPI = 100
CCD_FIGSIZE = (12.0, 9.0)  # inches: 1200×900 px
EMBED_PANEL_IN, EMBED_LEGEND_IN, EMBED_HEIGHT_IN = 5.0, 1.8, 5.4  # one square-ish panel per checkpoint
DOMAIN_MARKERS = ("o", "^")
SET_TITLES = {"both": "source + target (pooled prototypes)", "source": "source", "target": "target"}


def _figure(size_in: tuple[float, float]):
    require("matplotlib", "the plots")
    from matplotlib.figure import Figure

    return Figure(figsize=size_in, dpi=DPI)


def embedding_figure_size(num_checkpoints: int) -> tuple[int, int]:
    """(width, height) in pixels of `embedding_scatter` with that many panels."""
    return (round((EMBED_PANEL_IN * num_checkpoints + EMBED_LEGEND_IN) * DPI), round(EMBED_HEIGHT_IN * DPI))


def ccd_figure_size() -> tuple[int, int]:
    return round(CCD_FIGSIZE[0] * DPI), round(CCD_FIGSIZE[1] * DPI)


def ccd_bar_chart(path: str, results: Sequence[tuple[str, Mapping[str, Sequence[float]]]],
                  class_names: Sequence[str], tail: Sequence[int] = (),
                  sets: Sequence[str] = ("both", "source", "target"), log_scale: Optional[bool] = None) -> None:
    """Grouped bars of CCD per class (one axis per set, one bar colour per checkpoint) → PNG.

    Args:
        results: (checkpoint label, {set → K values, NaN for absent classes}) per checkpoint.
        tail: indices of tail classes: their tick labels get '*' and a red colour.
        log_scale: log y axis; by default when the finite values span more than three decades.
    """
    fig = _figure(CCD_FIGSIZE)
    K, M = len(class_names), len(results)
    values = np.array([[np.asarray(r[s], dtype=float) for s in sets] for _, r in results])  # M×S×K
    finite = values[np.isfinite(values) & (values > 0)]
    if log_scale is None:
        log_scale = bool(finite.size) and finite.max() / finite.min() > 1000
    width = 0.8 / max(M, 1)
    x = np.arange(K)
    axes = fig.subplots(len(sets), 1, sharex=True)
    axes = np.atleast_1d(axes)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.94, bottom=0.13, hspace=0.25)
    for si, (ax, s) in enumerate(zip(axes, sets)):
        for m, (label, _) in enumerate(results):
            v = np.where(np.isfinite(values[m, si]), values[m, si], np.nan)
            mean = np.nanmean(v) if np.isfinite(v).any() else math.nan
            ax.bar(x + (m - (M - 1) / 2) * width, v, width, color=f"C{m}", label=f"{label} (mean {mean:.3g})")
        ax.set_title(SET_TITLES.get(s, s), fontsize=10, loc="left")
        ax.set_ylabel("CCD")
        if log_scale:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    ax = axes[-1]
    ax.set_xticks(x)
    ax.set_xticklabels([n + ("*" if k in tail else "") for k, n in enumerate(class_names)], rotation=45, ha="right")
    for k, tick in enumerate(ax.get_xticklabels()):
        if k in tail:
            tick.set_color("#b00000")
    fig.suptitle("Class Center Distance per class (lower is better; * = tail class)", fontsize=12)
    fig.savefig(path, dpi=DPI)


def embedding_scatter(path: str, panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                      class_names: Sequence[str], palette: np.ndarray,
                      domain_names: Sequence[str] = ("source", "target")) -> None:
    """Scatter of 2-D embeddings, one panel per checkpoint, colour = class (palette K×3 uint8),
    marker = domain (source ●, target ▲), shared legend on the right → PNG.

    Args:
        panels: (title, coords N×2, class N, domain code N) per checkpoint.
    """
    from matplotlib.lines import Line2D

    M = len(panels)
    w_in = EMBED_PANEL_IN * M + EMBED_LEGEND_IN
    fig = _figure((w_in, EMBED_HEIGHT_IN))
    colours = np.asarray(palette, dtype=float) / 255.0
    present = sorted({int(c) for _, _, cls, _ in panels for c in np.unique(cls)})
    for i, (title, coords, cls, dom) in enumerate(panels):
        ax = fig.add_axes(((EMBED_PANEL_IN * i + 0.15) / w_in, 0.2 / EMBED_HEIGHT_IN,
                           (EMBED_PANEL_IN - 0.3) / w_in, (EMBED_HEIGHT_IN - 0.65) / EMBED_HEIGHT_IN))
        for d, marker in enumerate(DOMAIN_MARKERS[: len(domain_names)]):
            sel = np.asarray(dom) == d
            if sel.any():
                ax.scatter(coords[sel, 0], coords[sel, 1], c=colours[np.asarray(cls)[sel]], marker=marker, s=10,
                           linewidths=0, alpha=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], linestyle="", marker="s", markersize=7, color=colours[k], label=class_names[k])
               for k in present]
    handles += [Line2D([], [], linestyle="", marker=m, markersize=6, color="0.3", label=n)
                for m, n in zip(DOMAIN_MARKERS, domain_names)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False,
               bbox_to_anchor=(1.0, 0.5), handletextpad=0.3, labelspacing=0.35)
    fig.savefig(path, dpi=DPI)
