"""Shared pieces of d2seg's PNG plots (matplotlib's Agg renderer through ``Figure``, no pyplot).

Figure sizes are in inches at :data:`DPI` = 100, so a 9 pt label is 12.5 px tall in the PNG
viewed at 100 %; every text is at least 8 pt.
"""

import os

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from d2seg.utils.io import atomic_open

DPI = 100
BAR_IN = 0.2  # height of one horizontal bar: 9 pt labels with a little space between


def save_png(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` to ``path`` atomically at :data:`DPI`."""
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=DPI)


def bars_height_in(num_bars: int) -> float:
    """Height in inches of an axes of :func:`sorted_bars` with its title and x label."""
    return 0.9 + BAR_IN * num_bars


def sorted_bars(axes: Axes, values: dict[str, float], *, xlabel: str, percent: bool,
                title: str) -> None:
    """Horizontal bars of ``{class: value}`` sorted best first, each labelled with its value.

    ``percent``: values are % (axis 0–100, so that two plots compare at a glance; one decimal);
    otherwise fractions (two decimals).
    """
    names = sorted(values, key=values.get)  # barh draws bottom-up: the best ends on top
    axes.barh(range(len(names)), [values[n] for n in names], color="tab:blue")
    axes.set_yticks(range(len(names)), names, fontsize=9)
    axes.set_ylim(-0.6, len(names) - 0.4)
    for i, name in enumerate(names):
        axes.text(values[name], i, f" {values[name]:.1f}" if percent else f" {values[name]:.2f}",
                  va="center", fontsize=8)
    axes.set(title=title, xlabel=xlabel)
    if percent:
        axes.set_xlim(0, 105)
    axes.grid(axis="x", alpha=0.3)
