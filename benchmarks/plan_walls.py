"""Do a trained conductor's plans keep to the maze? Planned states inside walls, drawn from the evaluation's starts.

    diffrl benchmark plan_walls --workdir W [--resets 64] [--seed 0] [--set KEY=VALUE ...] [--json PATH] [--no-write]

For a goal planner of the PlanDQ family trained in ``W`` (only its ``conductor`` stage needs to be trained), each of
``resets`` resets of the dataset's evaluation env (its start and goal distribution, MJX resets) gets one plan from
the start to the goal, as the evaluation draws its first sub-goal. Reported: the share of planned states whose
(x, y) lies in a wall cell or outside the map (the inpainted start and goal excluded), the share of plans with at
least one such state, the share of sub-goals (the plan's second state, where the performer is sent) in a wall, and
the mean distance between consecutive planned positions (one state is ``conductor.stride`` environment steps).
``--set`` overrides acting settings (``plan.sampler_steps=256``: every DDPM step).
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from diffrl.benchmarks.common import benchmark_parser, report, versions
from diffrl.envs import make_env
from diffrl.envs.registry import maze_layout
from diffrl.envs.pointmaze import MazeLayout
from diffrl.eval.evaluate import eval_env_spec
from diffrl.train.pipeline import load_trained


def wall_statistics(layout: MazeLayout, plans_xy: np.ndarray) -> dict:
    """Wall figures of ``plans_xy [N, M, 2]`` whose first and last states are inpainted (not counted)."""
    inner = plans_xy[:, 1:-1]
    in_wall = layout.is_wall(layout.xy_to_cell(inner))
    steps = np.linalg.norm(np.diff(plans_xy, axis=1), axis=-1)
    return {"states_in_walls": float(in_wall.mean()), "plans_with_a_wall_state": float(in_wall.any(axis=1).mean()),
            "subgoals_in_walls": float(in_wall[:, 0].mean()), "mean_step_between_states": float(steps.mean())}


def main(argv=None):
    parser = benchmark_parser("plan_walls", __doc__)
    parser.add_argument("--workdir", required=True, help="a trained PlanDQ-family workdir (its conductor at least)")
    parser.add_argument("--resets", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="acting overrides (plan.*)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    method, params, config, step = load_trained(args.workdir, overrides=args.set, stages=["conductor"])
    if not hasattr(method, "draw_plan"):
        raise SystemExit(f"{config.method} draws no plans to a goal (PlanDQ's family on a maze does)")
    spec, kwargs = eval_env_spec(method)
    env = make_env(spec, **kwargs)
    rng_reset, rng_plan = jax.random.split(jax.random.PRNGKey(args.seed))
    obs = jax.jit(jax.vmap(env.reset))(jax.random.split(rng_reset, args.resets)).obs
    started = time.perf_counter()
    plans = np.asarray(jax.jit(method.draw_plan)(params, rng_plan, obs))
    seconds = time.perf_counter() - started
    stats = wall_statistics(maze_layout(spec), plans[..., method.xy])
    num_states, stride = plans.shape[1], config.conductor.stride
    figures = {"workdir": args.workdir, "method": config.method, "env": spec.id, "conductor_step": step,
               "resets": args.resets, "num_states": num_states, "stride": stride,
               "sampler_steps": config.plan.sampler_steps, "seconds": seconds, **stats}
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    header = (f"{versions('flax')}; {config.method} conductor of `{args.workdir}` (step {step}), dataset "
              f"`{config.dataset.id}`, evaluated env `{spec.id}`; one plan from each of {args.resets} MJX resets "
              f"(seed {args.seed}), compiled and drawn in {seconds:.1f} s; states {num_states} x stride {stride} = "
              f"{(num_states - 1) * stride} environment steps from start to goal; "
              f"{config.plan.sampler_steps} DDPM steps of {config.conductor.num_steps}.")
    table = ["| planned states in walls | plans with a state in a wall | sub-goals in walls | mean distance between "
             "consecutive states |", "|---:|---:|---:|---:|",
             f"| {100 * stats['states_in_walls']:.1f}% | {100 * stats['plans_with_a_wall_state']:.1f}% | "
             f"{100 * stats['subgoals_in_walls']:.1f}% | {stats['mean_step_between_states']:.2f} |"]
    report(f"Plans through walls: {spec.id}, {num_states} states", "plan_walls", argv, header, table, [figures],
           json_path=args.json, write=not args.no_write)


if __name__ == "__main__":
    main()
