"""Diffuser throughput: the maze planner (inpainted, one jitted chain per batch) and the train step.

    python benchmarks/diffuser.py [--batches 1 64 256] [--train-steps 20] [--json PATH]

Random weights at the paper's sizes (``configs/diffuser.py:pointmaze-umaze``: temporal U-Net dim 32, dim_mults
(1, 4, 8), horizon 128, 64 diffusion steps; the train step is the official one, 2 x 32 trajectories per Adam
update with the EMA); timing does not depend on the weights. Compile time is reported apart from the steady
state; FLOPs and bytes are XLA's cost analysis of one denoiser call times the steps (planner) and of one
update (train step).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import timed, versions, write_section  # noqa: E402

from diffrl.agents.base import DatasetInfo  # noqa: E402
from diffrl.agents.diffuser import DiffuserAgent  # noqa: E402
from diffrl.config import apply_overrides, load_config  # noqa: E402
from diffrl.data.normalizers import LimitsNormalizer  # noqa: E402


def maze_agent(overrides: list[str]) -> DiffuserAgent:
    config = apply_overrides(load_config("configs/diffuser.py:pointmaze-umaze"), overrides)
    info = DatasetInfo(dataset_id="benchmark", observation_size=8, action_size=2,
                       observation_slices={"observation": (0, 4), "achieved_goal": (4, 6), "desired_goal": (6, 8)},
                       ref_min_score=None, ref_max_score=None, env_spec=None, eval_env_spec=None)
    normalizer = LimitsNormalizer(mins=-2 * jnp.ones(6), maxs=2 * jnp.ones(6))
    return DiffuserAgent(config, info, normalizer)


def cost(compiled) -> tuple[float, float]:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def compile_seconds(fn, *args):
    started = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return time.perf_counter() - started, compiled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="planner batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first (best is reported)")
    parser.add_argument("--train-steps", type=int, default=10, help="train steps per timed call (one lax.scan)")
    parser.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--json", default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    agent = maze_agent(args.overrides)
    params = agent.policy_params(jax.jit(agent.init)(jax.random.PRNGKey(0)))
    rows, figures = [], []
    for batch in args.batches:
        states = jnp.zeros((batch, 4))
        goals = jnp.ones((batch, 2))
        plan = jax.jit(lambda p, rng, s, g: agent.plan(p, rng, s, g)[0])
        compile_s, _ = compile_seconds(plan, params, jax.random.PRNGKey(1), states, goals)
        _, best = timed(plan, params, jax.random.PRNGKey(1), states, goals, repeats=args.repeats)
        # XLA's cost analysis counts a lax.scan body once: count one denoiser call and multiply by the steps.
        x = jnp.zeros((batch, agent.horizon, agent.transition_dim))
        model_call = jax.jit(lambda p, x: agent.net.apply(p["model"], x, jnp.zeros(x.shape[0], jnp.int32)))
        flops, nbytes = (v * agent.schedule.num_steps for v in cost(model_call.lower(params, x).compile()))
        figures.append({"what": "plan", "batch": batch, "compile_s": compile_s, "seconds": best,
                        "plans_per_s": batch / best, "flops": flops, "bytes": nbytes})
        rows.append(f"| maze planner, H {agent.horizon}, {agent.schedule.num_steps} steps | {batch} | {compile_s:.1f} | "
                    f"{best * 1e3:.1f} | {batch / best:,.1f} | {flops / 1e9:.1f} | {flops / best / 1e9:.1f} | "
                    f"{nbytes / best / 1e9:.1f} |")
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(2), (agent.batch_size, agent.horizon, agent.transition_dim))

    def steps(state, rng):
        body = lambda s, r: (agent.update(s, {"x": x}, r)[0], None)
        return jax.lax.scan(body, state, jax.random.split(rng, args.train_steps))[0]

    train = jax.jit(steps)
    compile_s, _ = compile_seconds(train, state, jax.random.PRNGKey(3))
    _, best = timed(train, state, jax.random.PRNGKey(3), repeats=args.repeats)
    one_step = jax.jit(lambda s, r: agent.update(s, {"x": x}, r)[0])
    flops, nbytes = cost(one_step.lower(state, jax.random.PRNGKey(3)).compile())
    per_step = best / args.train_steps
    figures.append({"what": "train", "batch": agent.batch_size, "compile_s": compile_s, "seconds_per_step": per_step,
                    "steps_per_s": 1 / per_step, "flops_per_step": flops, "bytes_per_step": nbytes})
    rows.append(f"| train step (Adam + EMA) | {agent.batch_size} | {compile_s:.1f} | {per_step * 1e3:.1f} | "
                f"{1 / per_step:,.2f} steps/s | {flops / 1e9:.1f} | {flops / per_step / 1e9:.1f} | "
                f"{nbytes / per_step / 1e9:.1f} |")
    body = (f"{versions('flax')}; `configs/diffuser.py:pointmaze-umaze`"
            + (f" with `{' '.join(args.overrides)}`" if args.overrides else "") + "; random weights.\n\n"
            "| call | batch | compile s | steady ms | plans/s (or steps/s) | GFLOP/call or step | GFLOP/s | GB/s |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    print(body)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    write_section("Diffuser planner and train step", body, "python benchmarks/diffuser.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
