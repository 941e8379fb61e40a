"""Matplotlib figures for evaluation (training curves), figure titles and saving figures; environments draw their
own episodes (:meth:`diffrl.envs.base.Env.draw_episodes`).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas (:func:`new_figure`), never through pyplot,
so the user's global backend is untouched and nothing needs a display.
"""

from __future__ import annotations

import io
import os
import textwrap
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffrl.files import write_atomically

__all__ = ["curve_figure", "figure_to_png", "new_figure", "save_figure", "set_figure_title"]
TITLE_FONTSIZE = 10
POINTS_PER_INCH = 72


def new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def curve_figure(series: Mapping[str, tuple[Any, Any]], xlabel: str = "step", ylabel: str = "loss",
                 title: str | None = None, *, logy: bool = False, figsize=(6.0, 4.0)) -> Figure:
    """Line plot of ``{name: (x, y)}``, e.g. loss curves; ``logy`` for a log y axis."""
    fig = new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, y) in series.items():
        ax.plot(np.asarray(x), np.asarray(y), label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def set_figure_title(fig: Figure, title: str) -> None:
    """Title a figure of constrained layout above all its panels, each line of ``title`` wrapped to the figure's
    width; the figure grows by the title's height, so the panels keep their size."""
    chars_per_line = max(20, int(fig.get_figwidth() * POINTS_PER_INCH / (0.55 * TITLE_FONTSIZE)))  # ~0.55 em a char
    lines = [wrapped for line in title.splitlines()
             for wrapped in textwrap.wrap(line, chars_per_line, break_on_hyphens=False)]
    fig.suptitle("\n".join(lines), fontsize=TITLE_FONTSIZE)
    fig.set_figheight(fig.get_figheight() + len(lines) * 1.3 * TITLE_FONTSIZE / POINTS_PER_INCH)


def figure_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float | None = None) -> str:
    """Write ``fig`` as PNG to ``path`` atomically (:func:`write_atomically`); returns the path."""
    return write_atomically(path, figure_to_png(fig, dpi))  # encode first: a rendering error never touches the disk
