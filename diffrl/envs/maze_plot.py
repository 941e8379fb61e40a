"""The picture of PointMaze episodes: walls, executed paths coloured by time, plans and goals, one panel each,
and one legend for the figure.

Figures are built on an Agg canvas, never through pyplot, with matplotlib's constrained layout, so a title added
later (``fig.suptitle``) gets its room. Wall patches carry ``gid="wall"``.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

WALL_GID = "wall"
TRAJECTORY_LABEL = "executed trajectory (colour: time)"
PLAN_LABEL = "plan (planned states)"
START_LABEL = "start"
GOAL_LABEL = "goal"
LEGEND_LABELS = (TRAJECTORY_LABEL, PLAN_LABEL, START_LABEL, GOAL_LABEL)
LEGEND_ROW_HEIGHT = 0.25  # inches
START_STYLE = dict(marker="o", markersize=7, color="tab:blue", markeredgecolor="k", linestyle="none")
PLAN_STYLE = dict(linestyle="--", marker=".", markersize=4, linewidth=1.0, color="tab:orange", alpha=0.9)
GOAL_STYLE = dict(marker="*", markersize=14, color="tab:red", markeredgecolor="k", linestyle="none")


def _episodes(x, n: int | None, name: str, point_ndim: int) -> list | None:
    """Split ``x`` into a per-episode list; a single episode (``point_ndim`` dims) is promoted to a batch of one."""
    if x is None:
        return None
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        x = np.asarray(x)
        if x.ndim == point_ndim:
            x = x[None]
    out = [None if e is None else np.asarray(e) for e in x]
    if n is not None and len(out) < n:
        raise ValueError(f"{name} has {len(out)} episodes, expected at least {n}")
    return out


def _draw_walls(ax, layout) -> int:
    s = float(layout.scaling)
    count = 0
    for i, row in enumerate(layout.maze_map):
        for j, kind in enumerate(row):
            if kind == 1:
                x, y = layout.cell_to_xy((i, j))
                ax.add_patch(Rectangle((x - s / 2, y - s / 2), s, s, facecolor="0.35", edgecolor="0.35",
                                       linewidth=0.5, gid=WALL_GID, zorder=1))
                count += 1
    return count


def maze_figure(layout, trajectories, plans=None, goals=None, titles: Sequence[str] | None = None,
                max_panels: int = 8, ncols: int = 4, *, valid=None, panel_size: float = 3.0,
                cmap: str = "viridis") -> Figure:
    """One panel per episode (the first ``max_panels``) of a :class:`~diffrl.envs.pointmaze.MazeLayout`.

    Args:
      layout: maze layout (``maze_map`` with 1 = wall, ``cell_to_xy``, ``scaling``, ``x_center``, ``y_center``).
      trajectories: executed xy, ``[N, T, 2]`` (or ``[T, 2]``), drawn as a line coloured by time.
      plans: planned xy per episode, ``[N, H, 2]`` (or ``[N, K, H, 2]`` for K plans), dashed with markers.
      goals: goal xy, ``[N, 2]`` or one ``[2]`` for all episodes (star).
      titles: per-panel titles, e.g. returns.
      valid: optional boolean ``[N, T]`` mask of valid steps (e.g. before termination).

    One legend below the panels names what is drawn: the executed trajectory, the plan, the start and the goal.
    """
    trajs = _episodes(trajectories, None, "trajectories", 2)
    n = min(len(trajs), int(max_panels))
    if n < 1:
        raise ValueError("maze_figure needs at least one trajectory")
    plans = _episodes(plans, n, "plans", 2)
    valid = _episodes(valid, n, "valid", 1)
    if goals is not None:
        goals = np.asarray(goals, dtype=float)
        goals = np.broadcast_to(goals, (n, 2)) if goals.ndim == 1 else goals
        if len(goals) < n:
            raise ValueError(f"goals has {len(goals)} episodes, expected at least {n}")
    if titles is not None and len(titles) < n:
        raise ValueError(f"titles has {len(titles)} entries, expected at least {n}")

    cols = max(1, min(int(ncols), n))
    rows = math.ceil(n / cols)
    aspect = layout.length / layout.width
    legend_rows = 1 if cols > 1 else len(LEGEND_LABELS)
    fig = _agg_figure((panel_size * cols, panel_size * aspect * rows + (0.3 * rows if titles is not None else 0)
                       + LEGEND_ROW_HEIGHT * legend_rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    drawn = set()  # the legend labels of the marks drawn
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        _draw_walls(ax, layout)
        xy = np.asarray(trajs[k], dtype=float).reshape(-1, 2)
        mask = np.ones(len(xy), bool) if valid is None else np.asarray(valid[k], bool).reshape(-1)[: len(xy)]
        if len(mask) < len(xy):
            raise ValueError("valid is shorter than the trajectory")
        idx = np.flatnonzero(mask)
        if len(idx):
            seg_ok = mask[:-1] & mask[1:]
            segments = np.stack([xy[:-1], xy[1:]], axis=1)[seg_ok]
            if len(segments):
                lines = LineCollection(segments, cmap=cmap, linewidths=1.5, zorder=3)
                lines.set_array(np.linspace(0.0, 1.0, len(xy) - 1)[seg_ok])
                lines.set_clim(0.0, 1.0)
                ax.add_collection(lines)
                drawn.add(TRAJECTORY_LABEL)
            ax.plot(*xy[idx[0]], zorder=5, **START_STYLE)
            drawn.add(START_LABEL)
        if plans is not None and plans[k] is not None:
            plan = np.asarray(plans[k], dtype=float)
            for p in plan.reshape(-1, plan.shape[-2], 2):
                ax.plot(p[:, 0], p[:, 1], zorder=4, **PLAN_STYLE)
            drawn.add(PLAN_LABEL)
        if goals is not None:
            ax.plot(*goals[k], zorder=6, **GOAL_STYLE)
            drawn.add(GOAL_LABEL)
        ax.set_xlim(-layout.x_center, layout.x_center)
        ax.set_ylim(-layout.y_center, layout.y_center)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9)
    _add_legend(fig, drawn, matplotlib.colormaps[cmap](0.5), cols)
    return fig


def _add_legend(fig: Figure, drawn: set, trajectory_color, cols: int) -> None:
    """One legend below all panels, for the kinds of marks in ``drawn``: a row, or a column under one panel."""
    handles = dict(zip(LEGEND_LABELS, [Line2D([], [], color=trajectory_color, linewidth=1.5),
                                       Line2D([], [], **PLAN_STYLE), Line2D([], [], **START_STYLE),
                                       Line2D([], [], **GOAL_STYLE)]))
    shown = [(handles[label], label) for label in LEGEND_LABELS if label in drawn]
    if shown:
        fig.legend(*zip(*shown), loc="outside lower center", ncols=len(shown) if cols > 1 else 1, fontsize=8,
                   frameon=False)


def _agg_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
