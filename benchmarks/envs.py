"""MJX environment throughput at 1..4096 parallel envs, next to the gymnasium original on the same machine.

    diffrl benchmark envs [--envs pointmaze-umaze hopper] [--sizes 1 16 256 4096] [--steps 20] [--budget 20]
                          [--impls jax warp] [--json PATH] [--no-write]

Steady state: ``steps`` env steps of ``n`` envs inside one jitted ``lax.scan`` (uniform random actions drawn
inside), best of 3 calls after a warm-up call; compile time is the ahead-of-time compilation alone. The gymnasium
row steps one CPU env in a Python loop with random actions, resetting when an episode ends. AntMaze also gets a
"a box per wall" row: the same ant stepped in MJX with gymnasium-robotics' own model, every wall cell a static
box, to show what the three movable wall boxes save. ``--impls`` picks MJX's implementations to time: ``jax`` (the
default), ``warp`` (MJX's Warp implementation, ``pip install 'diffrl[warp]'``; locomotion envs only) or both; a
run with ``warp`` writes its own section.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

from diffrl.benchmarks.common import (benchmark_parser, compile_seconds, predicted_seconds, report, steady_seconds,
                                     versions)
from diffrl.envs.gym_fallback import make_gym_env
from diffrl.envs.registry import LOCOMOTION_IDS, make_env

GYM_IDS = {"pointmaze-umaze": "PointMaze_UMaze-v3", "pointmaze-large": "PointMaze_Large-v3",
           "antmaze-umaze": "AntMaze_UMaze-v4", "antmaze-large": "AntMaze_Large-v4",
           "hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}


def full_wall_rollout(env, gym_id: str, n: int, steps: int):
    """The physics of ``env`` (an AntMaze) with gymnasium-robotics' own model, one static box per wall cell, put on
    MJX as it is: the contact set before the three movable wall boxes, stepped ``frame_skip`` times per env step."""
    from mujoco import mjx

    reference = make_gym_env(gym_id)
    model = mjx.put_model(reference.unwrapped.ant_env.model)
    reference.close()
    start = jax.vmap(lambda _: env.reset(jax.random.PRNGKey(0)).data.qpos)(jnp.arange(n))
    frame_skip = 5

    def rollout(rng):
        data = jax.vmap(lambda qpos: mjx.forward(model, mjx.make_data(model).replace(qpos=qpos)))(start)

        def step(data, key):
            ctrl = jax.random.uniform(key, (n, env.action_size), minval=-1.0, maxval=1.0)
            data = jax.vmap(lambda d, c: jax.lax.fori_loop(0, frame_skip, lambda _, x: mjx.step(model, x),
                                                            d.replace(ctrl=c)))(data, ctrl)
            return data, data.qpos[:, 0]

        return jax.lax.scan(step, data, jax.random.split(rng, steps))[1].sum()

    return jax.jit(rollout)


def mjx_rollout(env, n: int, steps: int):
    def rollout(rng):
        rng, reset_rng = jax.random.split(rng)
        states = jax.vmap(env.reset)(jax.random.split(reset_rng, n))

        def step(states, key):
            actions = jax.random.uniform(key, (n, env.action_size), minval=-1.0, maxval=1.0)
            states = jax.vmap(env.step)(states, actions)
            return states, states.reward

        return jax.lax.scan(step, states, jax.random.split(rng, steps))[1].sum()

    return jax.jit(rollout)


def gym_steps_per_second(gym_id: str, steps: int = 2000) -> float:
    env = make_gym_env(gym_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main(argv=None):
    parser = benchmark_parser("envs", __doc__)
    parser.add_argument("--envs", nargs="+", default=["pointmaze-umaze", "hopper"], choices=sorted(GYM_IDS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 16, 256, 4096])
    parser.add_argument("--steps", type=int, default=20, help="env steps per timed call (default: 20)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="skip a size whose call is predicted (linearly from the previous size) to take longer "
                             "than this many seconds (default: 20)")
    parser.add_argument("--impls", nargs="+", default=["jax"], choices=["jax", "warp"],
                        help="MJX implementations to time (default: jax; warp: the locomotion envs only)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    figures = []
    rows = ["| env | parallel envs | compile s | steady s/call | env steps/s |", "|---|---:|---:|---:|---:|"]
    for name in args.envs:
        env = make_env(GYM_IDS[name])
        variants = [("MJX", lambda n: mjx_rollout(env, n, args.steps))] if "jax" in args.impls else []
        if "warp" in args.impls and GYM_IDS[name] in LOCOMOTION_IDS:
            variants.append(("MJX Warp", lambda n: mjx_rollout(make_env(GYM_IDS[name], impl="warp", parallel_envs=n),
                                                               n, args.steps)))
        if name.startswith("antmaze") and "jax" in args.impls:
            variants.append(("MJX, a box per wall", lambda n: full_wall_rollout(env, GYM_IDS[name], n, args.steps)))
        for variant, make_rollout in variants:
            previous = None
            for n in sorted(args.sizes):
                predicted = predicted_seconds(previous, n)
                if predicted is not None and predicted > args.budget:
                    figures.append({"env": name, "variant": variant, "envs": n,
                                    "skipped": f"predicted {predicted:.0f} s per call"})
                    rows.append(f"| {name} ({variant}) | {n} | skipped: predicted {predicted:.0f} s per call > "
                                f"--budget {args.budget:g} | | |")
                else:
                    compile_s, rollout = compile_seconds(make_rollout(n), jax.random.PRNGKey(0))
                    jax.block_until_ready(rollout(jax.random.PRNGKey(0)))
                    best = steady_seconds(rollout, jax.random.PRNGKey(0), repeats=3)
                    previous = (n, best)
                    figures.append({"env": name, "variant": variant, "envs": n, "compile_s": compile_s,
                                    "seconds_per_call": best, "steps_per_s": n * args.steps / best})
                    rows.append(f"| {name} ({variant}) | {n} | {compile_s:.1f} | {best:.4f} | "
                                f"{n * args.steps / best:,.0f} |")
                print(rows[-1], flush=True)
        gym_rate = gym_steps_per_second(GYM_IDS[name])
        figures.append({"env": name, "envs": 1, "gymnasium": True, "steps_per_s": gym_rate})
        rows.append(f"| {name} (gymnasium, CPU) | 1 | - | - | {gym_rate:,.0f} |")
        print(rows[-1], flush=True)
    warp = "warp" in args.impls
    packages = ('mujoco', 'mujoco-mjx', 'gymnasium', *(['warp-lang'] if warp else []))
    header = (f"{versions(*packages)}; {args.steps} env steps per timed call, best of 3; "
              "random actions; float32.")
    section = "Environment steps per second" + (" with MJX Warp" if warp else "")
    report(section, "envs", argv, header, rows, figures, json_path=args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
