"""Does a latent-skill Q choose the skills that get the ant nearer the goal? Skills rolled out cell by cell.

    diffrl benchmark skill_choice --workdir W [--states-per-cell 10] [--latents 50] [--start I J] [--goal I J]
                                  [--seed 0] [--json PATH] [--no-write]

For an LDCQ or DIAR run trained in ``W`` on AntMaze or PointMaze data: along the evaluation's route (the cells of
``diffrl benchmark maze_values``), ``--states-per-cell`` dataset states per cell, their goal set to the evaluation's;
at each state ``--latents`` latents of the diffusion prior, each valued by ``min_j Q_j(s, z)`` and each rolled H
steps from the state with the skill decoder in gymnasium (MuJoCo C, as the data was recorded). A skill's progress is
the geodesic distance to the goal (shortest path through free space, on a grid of 8 x 8 points per cell) at its
start minus at its end. Per cell: the mean progress of Q's choice (the argmax, what acting takes), of a latent drawn
at random (the mean over latents), of the best latent, and the mean rank correlation (Spearman) of Q and progress.
A Q that ranks skills by their progress chooses near the best; one that does not chooses near random.
"""

from __future__ import annotations

import heapq
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.agents.ldcq import LDCQ
from diffrl.benchmarks.common import benchmark_parser, report, versions
from diffrl.benchmarks.maze_values import evaluation_route, route_states
from diffrl.benchmarks.skill_replay import replay
from diffrl.data.minari_io import load_dataset
from diffrl.envs.gym_fallback import make_gym_env
from diffrl.envs.pointmaze import MazeLayout
from diffrl.envs.registry import maze_layout
from diffrl.eval.evaluate import eval_env_spec
from diffrl.train.pipeline import load_trained

POINTS_PER_CELL = 8  # geodesic grid points along each side of a maze cell


class GeodesicDistance:
    """Shortest-path distance to ``goal_xy`` through the free cells of ``layout``: Dijkstra on a grid of
    ``points`` x ``points`` points per cell, 8-connected, a diagonal step only where both cells beside it are free."""

    def __init__(self, layout: MazeLayout, goal_xy, points: int = POINTS_PER_CELL):
        self.layout, self.spacing = layout, layout.scaling / points
        free = np.kron(layout.free, np.ones((points, points), bool))
        self.shape = free.shape
        distance = np.full(free.shape, np.inf)
        start = self.index(np.asarray(goal_xy, np.float64))
        distance[start] = 0.0
        heap = [(0.0, *start)]
        while heap:
            d, i, j = heapq.heappop(heap)
            if d > distance[i, j]:
                continue
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if not (di or dj) or not (0 <= a < free.shape[0] and 0 <= b < free.shape[1]) or not free[a, b]:
                        continue
                    if di and dj and not (free[a, j] and free[i, b]):
                        continue
                    step = d + self.spacing * (np.sqrt(2.0) if di and dj else 1.0)
                    if step < distance[a, b]:
                        distance[a, b] = step
                        heapq.heappush(heap, (step, a, b))
        self.distance = distance

    def index(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid point of each ``xy [..., 2]`` (clipped to the map)."""
        i = np.floor((self.layout.y_center - xy[..., 1]) / self.spacing).astype(int)
        j = np.floor((xy[..., 0] + self.layout.x_center) / self.spacing).astype(int)
        return np.clip(i, 0, self.shape[0] - 1), np.clip(j, 0, self.shape[1] - 1)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return self.distance[self.index(np.asarray(xy))]


def ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks along the last axis."""
    return x.argsort(-1).argsort(-1).astype(np.float64)


def choice_statistics(q: np.ndarray, progress: np.ndarray) -> dict:
    """For ``q`` and ``progress`` ``[states, latents]``: the mean progress of each state's argmax-Q latent, of a
    random latent, of its best latent, and the mean Spearman correlation of Q and progress over the states."""
    rq, rp = ranks(q), ranks(progress)
    rq, rp = rq - rq.mean(-1, keepdims=True), rp - rp.mean(-1, keepdims=True)
    spearman = (rq * rp).sum(-1) / np.sqrt((rq ** 2).sum(-1) * (rp ** 2).sum(-1))
    return {"q_choice": float(progress[np.arange(len(q)), q.argmax(-1)].mean()), "random": float(progress.mean()),
            "best": float(progress.max(-1).mean()), "spearman": float(spearman.mean())}


def main(argv=None):
    parser = benchmark_parser("skill_choice", __doc__)
    parser.add_argument("--workdir", required=True, help="a trained LDCQ or DIAR workdir on AntMaze or PointMaze data")
    parser.add_argument("--states-per-cell", type=int, default=10)
    parser.add_argument("--latents", type=int, default=None,
                        help="prior latents per state (default plan.num_candidates)")
    parser.add_argument("--start", type=int, nargs=2, default=None, metavar=("I", "J"))
    parser.add_argument("--goal", type=int, nargs=2, default=None, metavar=("I", "J"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    method, params, config, step = load_trained(args.workdir)
    if not isinstance(method, LDCQ):
        raise SystemExit(f"{config.method} has no latent Q to choose with (LDCQ and DIAR have)")
    latents = args.latents or config.plan.num_candidates
    spec, _ = eval_env_spec(method)
    layout = maze_layout(spec)
    cells = evaluation_route(layout, spec.id, args.start, args.goal)
    data = load_dataset(config.dataset.id, root=config.dataset.root)
    slices = data.observation_slices or {}
    if not {"observation", "achieved_goal"} <= set(slices):
        raise SystemExit(f"{config.dataset.id} is not AntMaze or PointMaze data (no observation / achieved_goal keys)")
    obs, chosen = route_states(data, layout, cells, args.states_per_cell, args.seed)
    geodesic = GeodesicDistance(layout, layout.cell_to_xy(np.asarray(cells[-1])))

    rng_latents, rng_act = jax.random.split(jax.random.PRNGKey(args.seed))
    sample = jax.jit(lambda p, key, o: method.sample_latents(p, key, method.condition(o), latents))
    min_q = jax.jit(lambda p, o, z: method.min_q(method.q_params(p), method.q_input(o), z))
    decode = jax.jit(method.decode_action)
    envs = [make_gym_env(data.env_spec or spec) for _ in range(args.states_per_cell * latents)]
    started, rows, first = time.perf_counter(), [], 0
    try:
        for k, (cell, cell_rows) in enumerate(zip(cells, chosen)):
            cell_obs, first = obs[first:first + len(cell_rows)], first + len(cell_rows)
            if len(cell_obs) == 0:  # no dataset state in this cell
                rows.append({"cell": list(cell), "states": 0})
                continue
            key = jax.random.fold_in(rng_latents, k)
            z = sample(params["prior"], key, cell_obs)  # [S, N, Z]
            q = np.asarray(min_q(params, cell_obs, z))
            starts, flat_z = np.repeat(cell_obs, latents, axis=0), z.reshape(-1, z.shape[-1])
            act_key = jax.random.fold_in(rng_act, k)
            end = replay(envs[:len(starts)], starts, lambda o, t: decode(params["vae"], jnp.asarray(o), flat_z,
                                                                         jax.random.fold_in(act_key, t)),
                         method.horizon, slices)
            before = geodesic(cell_obs[:, slices["achieved_goal"]])
            progress = before[:, None] - geodesic(end).reshape(len(cell_obs), latents)
            rows.append({"cell": list(cell), "states": len(cell_obs), "distance": float(before.mean()),
                         **choice_statistics(q, progress)})
            print("  ".join(f"{n} {v:.3f}" if isinstance(v, float) else f"{n} {v}" for n, v in rows[-1].items()),
                  flush=True)
    finally:
        for env in envs:
            env.close()
    seconds = time.perf_counter() - started
    header = (f"{versions('flax', 'mujoco', 'gymnasium')}; {config.method} of `{args.workdir}` (step {step}), "
              f"dataset `{config.dataset.id}`, evaluated env `{spec.id}`; route of {len(cells)} cells from "
              f"{tuple(cells[0])} to {tuple(cells[-1])}, up to {args.states_per_cell} dataset states per cell (seed "
              f"{args.seed}), {latents} prior latents at {config.plan.sampler_steps} DDPM steps per state, each "
              f"rolled {method.horizon} steps in `{(data.env_spec or spec).id}` (gymnasium); progress: geodesic "
              f"distance to the goal before minus after; computed in {seconds:.1f} s.")
    table = ["| cell | states | distance to goal | Q's choice | random latent | best latent | Spearman (Q, progress) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {tuple(r['cell'])} | {r['states']} | {r['distance']:.1f} | {r['q_choice']:.3f} | {r['random']:.3f} "
              f"| {r['best']:.3f} | {r['spearman']:.2f} |" if r["states"] else f"| {tuple(r['cell'])} | 0 | | | | | |"
              for r in rows]
    figures = {"workdir": args.workdir, "method": config.method, "env": spec.id, "step": step, "latents": latents,
               "states_per_cell": args.states_per_cell, "seconds": seconds, "cells": rows}
    report(f"Skills chosen along the route: {config.method} seed {config.seed}, {spec.id}", "skill_choice", argv,
           header, table, [figures], json_path=args.json, write=not args.no_write)


if __name__ == "__main__":
    main()
