"""Has a latent-skill Q carried the goal's value to the start? Values cell by cell along the maze's route.

    diffrl benchmark maze_values --workdir W [--states-per-cell 500] [--start I J] [--goal I J] [--seed 0]
                                 [--set KEY=VALUE ...] [--json PATH] [--no-write]

For an LDCQ or DIAR run trained in ``W`` on maze data, the dataset's states are binned by the maze cell of their
(x, y); along the shortest route of free cells from the evaluation's start cell to its goal cell (``--start`` /
``--goal`` where the evaluation env draws them from several cells), each cell reports, over up to
``--states-per-cell`` of its states drawn at random, the mean of ``max_i min_j Q_j(s, z_i)`` over
``plan.num_candidates`` latents ``z_i`` of the diffusion prior (what acting maximises, LDCQ Sec. 4.2) and, for
DIAR, of ``V(s)``. A Q that takes a goal reads the evaluation's (the goal cell's centre). Values that rise cell by
cell from the start to the goal have been carried from the goal along the whole route; values flat over the first
cells have not reached them. ``--set`` overrides acting settings (``plan.num_candidates``, ``plan.sampler_steps``).
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from diffrl.agents.ldcq import LDCQ
from diffrl.benchmarks.common import benchmark_parser, report, versions
from diffrl.data.minari_io import OfflineData, load_dataset
from diffrl.envs.pointmaze import MazeLayout
from diffrl.envs.registry import maze_layout
from diffrl.eval.evaluate import eval_env_spec
from diffrl.experts.antmaze_data import next_cells
from diffrl.train.pipeline import load_trained


def route(layout: MazeLayout, start, goal) -> list[tuple[int, int]]:
    """The cells of a shortest 4-connected path of free cells from ``start`` to ``goal``, both included."""
    start, goal = tuple(int(c) for c in start), tuple(int(c) for c in goal)
    for name, cell in (("start", start), ("goal", goal)):
        if layout.is_wall(np.array(cell)):
            raise ValueError(f"the {name} cell {cell} is a wall or outside the {layout.length} x {layout.width} map")
    table, cells = next_cells(layout.free), [start]
    while cells[-1] != goal:
        step = tuple(int(c) for c in table[goal + cells[-1]])
        if step == cells[-1]:
            raise ValueError(f"no path of free cells from {start} to {goal}")
        cells.append(step)
    return cells


def states_by_cell(layout: MazeLayout, xy: np.ndarray, cells, limit: int, rng: np.random.Generator) -> list:
    """For each of ``cells``, the indices of up to ``limit`` rows of ``xy [N, 2]`` lying in it, drawn at random."""
    binned = layout.xy_to_cell(xy)
    chosen = []
    for cell in cells:
        rows = np.flatnonzero((binned == np.asarray(cell)).all(axis=-1))
        chosen.append(np.sort(rng.choice(rows, min(limit, len(rows)), replace=False)))
    return chosen


def evaluation_route(layout: MazeLayout, env_id: str, start=None, goal=None) -> list[tuple[int, int]]:
    """The route from the evaluation's start cell to its goal cell (``start`` / ``goal`` where it draws them from
    several cells)."""
    ends = {}
    for name, given, cells in (("start", start, layout.reset_cells), ("goal", goal, layout.goal_cells)):
        if given is None and len(cells) != 1:
            raise SystemExit(f"{env_id} draws its {name} from {len(cells)} cells: give one with --{name} I J")
        ends[name] = given if given is not None else cells[0]
    return route(layout, ends["start"], ends["goal"])


def route_states(data: OfflineData, layout: MazeLayout, cells, per_cell: int, seed: int) -> tuple[np.ndarray, list]:
    """Up to ``per_cell`` dataset observations in each of the route's ``cells`` (their row lists in the order of
    ``cells``), concatenated, their goal set to the route's last cell (the evaluation's goal, not the episodes')."""
    slices = data.observation_slices or {}
    xy = data.observations[:, slices.get("achieved_goal", slice(0, 2))]  # a flat maze2d observation starts with x, y
    chosen = states_by_cell(layout, xy, cells, per_cell, np.random.default_rng(seed))
    obs = data.observations[np.concatenate(chosen)].copy()
    if "desired_goal" in slices:
        obs[:, slices["desired_goal"]] = layout.cell_to_xy(np.asarray(cells[-1]))
    return obs, chosen


def route_table(cells, chosen, values: dict) -> list[dict]:
    """One row per route cell: its states and the mean of each of ``values`` (``{name: [sum of chosen]}``, in the
    order of ``chosen``) over them."""
    bounds = np.cumsum([0] + [len(rows) for rows in chosen])
    return [{"cell": list(cell), "steps_to_goal": len(cells) - 1 - k, "states": int(bounds[k + 1] - bounds[k]),
             **{name: (float(v[bounds[k]:bounds[k + 1]].mean()) if bounds[k + 1] > bounds[k] else None)
                for name, v in values.items()}}
            for k, cell in enumerate(cells)]


def latent_values(method: LDCQ, params, rng, obs) -> dict:
    """``max_i min_j Q_j(s, z_i)`` over ``plan.num_candidates`` prior latents at each of ``obs``; DIAR's ``V(s)``."""
    candidates = method.sample_latents(params["prior"], rng, method.condition(obs), method.config.plan.num_candidates)
    values = {"max_q": method.min_q(method.q_params(params), method.q_input(obs), candidates).max(axis=-1)}
    if "v" in params.get("qv", {}):
        values["v"] = method.values(params["qv"]["v"], method.q_input(obs))
    return values


def main(argv=None):
    parser = benchmark_parser("maze_values", __doc__)
    parser.add_argument("--workdir", required=True, help="a trained LDCQ or DIAR workdir on maze data")
    parser.add_argument("--states-per-cell", type=int, default=500)
    parser.add_argument("--start", type=int, nargs=2, default=None, metavar=("I", "J"))
    parser.add_argument("--goal", type=int, nargs=2, default=None, metavar=("I", "J"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="acting overrides (plan.*)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    method, params, config, step = load_trained(args.workdir, overrides=args.set)
    if not isinstance(method, LDCQ):
        raise SystemExit(f"{config.method} has no latent Q to read (LDCQ and DIAR have)")
    spec, _ = eval_env_spec(method)
    layout = maze_layout(spec)
    cells = evaluation_route(layout, spec.id, args.start, args.goal)
    data = load_dataset(config.dataset.id, root=config.dataset.root)
    obs, chosen = route_states(data, layout, cells, args.states_per_cell, args.seed)
    started = time.perf_counter()
    values = jax.jit(lambda p, key, o: latent_values(method, p, key, o))(params, jax.random.PRNGKey(args.seed), obs)
    values = {name: np.asarray(v) for name, v in values.items()}
    seconds = time.perf_counter() - started
    rows = route_table(cells, chosen, values)
    names = list(values)
    print("\n".join(f"cell {tuple(r['cell'])} ({r['states']} states): "
                    + ", ".join(f"{n} {r[n]:.3f}" if r[n] is not None else f"{n} -" for n in names) for r in rows))
    header = (f"{versions('flax')}; {config.method} of `{args.workdir}` (step {step}), dataset `{config.dataset.id}`, "
              f"evaluated env `{spec.id}`; route of {len(cells)} cells from {tuple(cells[0])} to {tuple(cells[-1])}, "
              f"up to {args.states_per_cell} dataset states per cell (seed {args.seed}), "
              f"{config.plan.num_candidates} prior latents at {config.plan.sampler_steps} DDPM steps per state; "
              f"computed in {seconds:.1f} s.")
    columns = {"max_q": "mean max_i min_j Q_j(s, z_i)", "v": "mean V(s)"}
    table = ["| cell | cells to goal | states | " + " | ".join(columns[n] for n in names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    table += [f"| {tuple(r['cell'])} | {r['steps_to_goal']} | {r['states']} | "
              + " | ".join(f"{r[n]:.2f}" if r[n] is not None else "-" for n in names) + " |" for r in rows]
    figures = {"workdir": args.workdir, "method": config.method, "env": spec.id, "step": step,
               "states_per_cell": args.states_per_cell, "seconds": seconds, "cells": rows}
    report(f"Values along the route: {config.method} seed {config.seed}, {spec.id}", "maze_values", argv, header, table,
           [figures], json_path=args.json, write=not args.no_write)


if __name__ == "__main__":
    main()
