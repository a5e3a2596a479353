"""Matplotlib figures for the report, rendered to PNG bytes (no display, no fonts fetched).

Plot text is English: the HTML carries the Chinese headings beside each figure, and the
standard fonts have no CJK glyphs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib as mpl
from matplotlib.figure import Figure

mpl.use("Agg")

import matplotlib.pyplot as plt  # the backend is chosen first, on purpose

__all__ = ["LEVEL_COLORS", "bar_png", "lines_png"]

_DPI = 96
_SIZE = (8.0, 3.6)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return buf.getvalue()


def lines_png(
    title: str,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    y_label: str,
) -> bytes:
    """One line per named series over shared x labels (None: a gap)."""
    fig, ax = plt.subplots(figsize=_SIZE)
    xs = list(range(len(x_labels)))
    for name, values in series.items():
        ys = [float("nan") if v is None else v for v in values]
        ax.plot(xs, ys, marker="o", label=name)
    step = max(1, len(xs) // 12)
    ax.set_xticks(xs[::step], [x_labels[i] for i in xs[::step]], rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return _png(fig)


def bar_png(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    y_label: str,
    *,
    line: float | None = None,
    colors: Sequence[str] | None = None,
) -> bytes:
    """Bars per label, optionally a horizontal reference line (a requirement, a limit)."""
    fig, ax = plt.subplots(figsize=_SIZE)
    xs = list(range(len(labels)))
    ax.bar(xs, list(values), color=list(colors) if colors else None)
    ax.set_xticks(xs, list(labels), rotation=30, ha="right", fontsize="small")
    if line is not None:
        ax.axhline(line, color="black", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


LEVEL_COLORS: dict[str, str] = {
    "green": "#2e7d32",
    "yellow": "#f9a825",
    "orange": "#ef6c00",
    "red": "#c62828",
}
