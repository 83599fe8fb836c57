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
# Domain styles of the embedding scatter: source filled circles, target hollow triangles (edge in
# the class colour), big enough to tell apart among ~2,000 points (paper Fig. 4 uses ● and ▲).
DOMAIN_STYLES = ({"marker": "o", "filled": True, "size": 16.0, "label": "filled circles"},
                 {"marker": "^", "filled": False, "size": 30.0, "label": "hollow triangles"})
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
                  sets: Sequence[str] = ("both", "source", "target"), log_scale: Optional[bool] = None,
                  too_few: Optional[Sequence[Mapping[str, Sequence[bool]]]] = None, min_pixels: int = 0) -> None:
    """Grouped bars of CCD per class (one axis per set, one bar colour per checkpoint) → PNG.

    Args:
        results: (checkpoint label, {set → K values, NaN for absent classes}) per checkpoint.
        tail: indices of tail classes: their tick labels get '*' and a red colour.
        log_scale: log y axis; by default when the finite values span more than three decades.
        too_few: per checkpoint, {set → K bools}: classes left out for having fewer than
            `min_pixels` pixels; their (empty) slot is labelled "too few pixels".
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
        if too_few is not None:
            few = [k for k in range(K) if any(bool(f[s][k]) for f in too_few)
                   and not np.isfinite(values[:, si, k]).any()]
            for k in few:
                ax.text(k, 0.04, f"too few\npixels (<{min_pixels})" if min_pixels else "too few\npixels",
                        transform=ax.get_xaxis_transform(), rotation=90, ha="center", va="bottom", fontsize=7,
                        color="0.35")
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
    few = f"; classes under {min_pixels} pixels left out" if too_few is not None and min_pixels > 1 else ""
    fig.suptitle(f"Class Center Distance per class (lower is better; * = tail class{few})", fontsize=12)
    fig.savefig(path, dpi=DPI)


def embedding_scatter(path: str, panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                      class_names: Sequence[str], palette: np.ndarray,
                      domain_names: Sequence[str] = ("source", "target")) -> None:
    """Scatter of 2-D embeddings, one panel per checkpoint, colour = class (palette K×3 uint8),
    style = domain (DOMAIN_STYLES: source filled circles, target hollow triangles), with a domain
    legend and a class legend on the right → PNG.

    Args:
        panels: (title, coords N×2, class N, domain code N) per checkpoint.
    """
    from matplotlib.lines import Line2D

    M = len(panels)
    w_in = EMBED_PANEL_IN * M + EMBED_LEGEND_IN
    fig = _figure((w_in, EMBED_HEIGHT_IN))
    colours = np.asarray(palette, dtype=float) / 255.0
    present = sorted({int(c) for _, _, cls, _ in panels for c in np.unique(cls)})
    styles = DOMAIN_STYLES[: len(domain_names)]
    for i, (title, coords, cls, dom) in enumerate(panels):
        ax = fig.add_axes(((EMBED_PANEL_IN * i + 0.15) / w_in, 0.2 / EMBED_HEIGHT_IN,
                           (EMBED_PANEL_IN - 0.3) / w_in, (EMBED_HEIGHT_IN - 0.65) / EMBED_HEIGHT_IN))
        for d, style in enumerate(styles):
            sel = np.asarray(dom) == d
            if not sel.any():
                continue
            c = colours[np.asarray(cls)[sel]]
            if style["filled"]:
                ax.scatter(coords[sel, 0], coords[sel, 1], c=c, marker=style["marker"], s=style["size"],
                           linewidths=0, alpha=0.55)
            else:
                ax.scatter(coords[sel, 0], coords[sel, 1], facecolors="none", edgecolors=c, marker=style["marker"],
                           s=style["size"], linewidths=0.9, alpha=0.85)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    domain_handles = [Line2D([], [], linestyle="", marker=st["marker"], markersize=7,
                             markerfacecolor="0.35" if st["filled"] else "none", markeredgecolor="0.2",
                             markeredgewidth=0 if st["filled"] else 1.0, label=f"{n}: {st['label']}")
                      for st, n in zip(styles, domain_names)]
    class_handles = [Line2D([], [], linestyle="", marker="s", markersize=7, color=colours[k], label=class_names[k])
                     for k in present]
    x_legend = (EMBED_PANEL_IN * M) / w_in
    fig.legend(handles=domain_handles, loc="upper left", fontsize=8, frameon=False, title="domain",
               title_fontsize=8, bbox_to_anchor=(x_legend, 0.98), handletextpad=0.3, labelspacing=0.35)
    fig.legend(handles=class_handles, loc="upper left", fontsize=8, frameon=False, title="class",
               title_fontsize=8, bbox_to_anchor=(x_legend, 0.98 - 0.9 / EMBED_HEIGHT_IN), handletextpad=0.3,
               labelspacing=0.35)
    fig.savefig(path, dpi=DPI)
