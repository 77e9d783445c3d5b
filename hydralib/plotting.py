"""One plotting style for the book, and helpers that take and return a matplotlib Axes.

Helpers never call ``plt.show()`` and never create figures themselves: the
caller owns the figure. Call :func:`use_book_style` once per chapter (or use
:func:`book_style` as a context manager).

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> from hydralib import plotting
>>> fig, ax = plt.subplots()
>>> plotting.heatmap(ax, [[1.0, 0.5], [0.5, 1.0]], ["a", "b"]) is ax
True
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

PALETTE = "colorblind"
HEATMAP_CMAP = "mako"
DIVERGING_CMAP = "vlag"

BOOK_RC = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": "medium",
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


def use_book_style() -> None:
    """Set the book's seaborn theme and rcParams globally."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, rc=BOOK_RC)


@contextlib.contextmanager
def book_style() -> Iterator[None]:
    """The book style inside a ``with`` block only."""
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context():
        sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, rc=BOOK_RC)
        yield


def heatmap(ax, matrix, labels: Sequence[str], col_labels: Sequence[str] | None = None, *,
            vmin=None, vmax=None, center=None, annot: bool = False, fmt: str = ".2f",
            cbar_label: str | None = None, title: str | None = None):
    """A seaborn heatmap of ``matrix`` (rows x cols) on ``ax``; returns ``ax``."""
    import seaborn as sns

    matrix = np.asarray(matrix, dtype=float)
    cmap = DIVERGING_CMAP if center is not None else HEATMAP_CMAP
    sns.heatmap(matrix, ax=ax, xticklabels=list(col_labels or labels), yticklabels=list(labels),
                vmin=vmin, vmax=vmax, center=center, cmap=cmap, annot=annot, fmt=fmt, square=matrix.shape[0] == matrix.shape[1],
                cbar_kws={"label": cbar_label} if cbar_label else None)
    if title:
        ax.set_title(title)
    return ax


def bars(ax, labels: Sequence[str], values: Sequence[float], *, xlabel: str | None = None,
         title: str | None = None, annotate: str | None = None, log: bool = False):
    """Horizontal bars, one per label; ``annotate`` is a format string like ``"{:.2f}"``; returns ``ax``."""
    y = np.arange(len(labels))
    ax.barh(y, values, color=_palette(1)[0])
    ax.set_yticks(y, labels=list(labels))
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    if annotate:
        for yi, v in zip(y, values):
            ax.annotate(annotate.format(v), (v, yi), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize="small")
    if xlabel:
        ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return ax


def curves(ax, series: dict[str, Sequence[float]], x: Sequence[float] | None = None, *,
           xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
           logy: bool = False, hline: float | None = None, hline_label: str | None = None):
    """One line per entry of ``series`` (label -> values); optional horizontal reference; returns ``ax``."""
    for (label, values), color in zip(series.items(), _palette(len(series))):
        xs = np.arange(1, len(values) + 1) if x is None else x
        ax.plot(xs, values, label=label, color=color)
    if hline is not None:
        ax.axhline(hline, color="0.3", linestyle="--", linewidth=1, label=hline_label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    if title:
        ax.set_title(title)
    if len(series) > 1 or hline_label:
        ax.legend()
    return ax


def _palette(n: int):
    import seaborn as sns

    return sns.color_palette(PALETTE, max(n, 1))
