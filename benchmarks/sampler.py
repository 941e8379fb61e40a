"""Sampler throughput: latency and samples/s of every diffrl sampler over batch sizes, horizons and step counts.

    diffrl benchmark sampler [--samplers NAME ...] [--batches 1 8 64 1024] [--horizons H ...]
                             [--steps N ...] [--compute-dtype float32|bfloat16] [--repeats 3] [--budget 10]
                             [--json PATH] [--no-write]

Each row is one whole sampler call compiled into one program (the chain is a ``lax.scan``). Compile time is the
ahead-of-time compilation alone; latency is the best of ``--repeats`` calls after a warm-up call. GFLOP/call and
GB/call are XLA's cost analysis of one denoising step at that batch (denoiser, plus the value gradients where
guided, or J alone on the steps below t_stopgrad) times the steps of the chain, since XLA counts a loop body
once; the sampler's own elementwise arithmetic is not counted. FLOPs come from the traced program, bytes from
the compiled one, on the CPU only (``common.cost``: a GPU's library calls hide both from the compiled program's
analysis; "-" there). GFLOP/s and GB/s divide them by the latency, and "% peak" compares them with the device's
matmul FLOP/s (in ``--compute-dtype``) and streaming bandwidth, measured by the same run (times the devices a row
runs on, unless they are one CPU's). With several local devices (several GPUs, or a CPU split into one device per
core by ``JAX_NUM_CPU_DEVICES=<cores>``) the Diffuser samplers' batch is split over them where it divides
("devices" column): the call runs data-parallel.

Samplers (random weights; timing does not depend on them):
  diffuser-maze    Diffuser's maze planner (configs/diffuser.py:pointmaze-umaze): temporal U-Net dim 32,
                   dim_mults (1, 4, 8), H 128, 64 DDPM steps, start and goal inpainted; one plan per batch row.
  diffuser-guided  Diffuser's value-guided planner (configs/diffuser.py:hopper-medium): U-Net (1, 2, 4, 8),
                   H 32, 20 DDPM steps, 2 gradient steps on J before each but the last 2 (t_stopgrad 2: J
                   alone, by which the plans are ranked); one trajectory per batch row (the
                   official policy samples 64 per environment step, so batch 64 is one policy step).
  ldcq-prior       LDCQ's latent diffusion prior (configs/ldcq.py:pointmaze-umaze): the ResNet denoiser
                   [128, 32, 16, 8, 16, 32, 128] on 16-d latents given the 4-d state, DDPM with 100 of T = 500
                   steps and 10 extra steps at t = 0; one latent per batch row, the unit of the Q-learning
                   candidate pool (a pool of P samples for M chunks takes M * P / (samples/s)).
  ldcq-policy      LDCQ's decision for one environment per batch row: 500 prior latents at its state, argmax of
                   min_j Q_j, and the autoregressive decoder's action; GFLOP/call counts the denoiser only.
  diar-policy      DIAR's Adaptive Revaluation step (configs/diar.py:pointmaze-umaze) with every environment
                   choosing again: V of its state, 500 prior latents, argmax of min_j Q_j, the state decoder's
                   s_{t+H}, its V, and the action; GFLOP/call counts the denoiser only.
  diar-act         the same step with no environment choosing again (the common case): V of the state and
                   the decoder's action; GFLOP/call is that whole program's.
  dql-act          Diffusion-QL's action (configs/dql.py:hopper-medium) for one environment per batch row: 50
                   actions from the 5-step VP policy, one drawn by softmax over min_j Q_j; GFLOP/call counts the
                   policy network only.
  plandq-policy    PlanDQ's step (configs/plandq.py:maze2d-large) with every environment choosing a new sub-goal:
                   one D-Conductor plan of 16 states (256 DDPM steps, start and goal inpainted; timed with
                   plan.retries=0, as each refused sub-goal adds one more plan) and the Q-Performer's action;
                   GFLOP/call counts the conductor's U-Net only.
  plandq-cycle     PlanDQ's steady state: plan.replan_every (15) steps of the same policy, the environments' sub-goals
                   falling due one step after another so that each is chosen once per call (the rate of an
                   evaluation where no sub-goal is reached early); on CPU only the environments due are planned,
                   plan.subgoal_batch (16) at a time. Latency / 15 is the mean step of a rollout.
  latent-diffuser-plan
                   LatentDiffuser's step (configs/latent_diffuser.py:hopper-medium) for one environment per batch
                   row: one latent plan of 40 latent actions (120 steps; U-Net (1, 4, 8), dim 128) by 100 DDPM steps
                   with classifier-free guidance and the energy model's gradient, decoded by the transformer, and the
                   inverse-dynamics action; GFLOP/call counts the prior U-Net (conditional and null together) only.
  latent-diffuser-supports
                   LatentDiffuser's support set for one initial state per batch row: M = 16 prior latents (w = 1,
                   100 steps) and the values of their decoded plans (supports/s = 16 x samples/s); GFLOP/call counts
                   the prior U-Net only.
  ddpm, ddim, ddpm-cfg
                   the shared samplers of diffrl.diffusion with a residual MLP denoiser (hidden 256, depth 3) on
                   16-d samples with an 8-d condition, the shape of a latent skill prior: DDPM (100 steps),
                   DDIM (steps / 5 of them), DDPM with classifier-free guidance (w = 1.5; conditional and null
                   calls batched together, so the denoiser sees twice the batch).

Sizes whose call is predicted (linearly from the previous batch) to take longer than ``--budget`` seconds are
skipped and listed as skipped.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffrl import diffusion
from diffrl.benchmarks.common import (batch_over_devices, benchmark_parser, ceilings, compile_seconds, cost, devices_of,
                                     giga, limits_note, measure_device_limits, percent, predicted_seconds,
                                     random_params, report, steady_seconds, synthetic_method, versions)
from diffrl.nets import MLPDenoiser

SAMPLERS = ("diffuser-maze", "diffuser-guided", "ldcq-prior", "ldcq-policy", "diar-policy", "diar-act", "dql-act",
            "plandq-policy", "plandq-cycle", "latent-diffuser-plan", "latent-diffuser-supports", "ddpm", "ddim",
            "ddpm-cfg")


@dataclasses.dataclass
class Case:
    """One sampler at one horizon and step count: a jitted call, its inputs at a batch, and one step's cost."""

    name: str
    horizon: int | None
    steps: int  # denoiser evaluations (steps of the chain)
    draw: Callable
    inputs: Callable[[int], tuple]
    step_cost: Callable[[int], tuple[float, float]]  # FLOPs and bytes, the mean over the steps where they differ


def diffuser_case(name: str, horizon: int | None, steps: int | None, compute_dtype: str = "float32") -> Case:
    variant = "pointmaze-umaze" if name == "diffuser-maze" else "hopper-medium"
    overrides = [f"compute_dtype={compute_dtype}"]
    overrides += [f"task.horizon={horizon}"] if horizon else []
    overrides += [f"diffusion.num_steps={steps}"] if steps else []
    method = synthetic_method(variant, overrides)
    params = random_params(method)  # {"denoiser"[, "value"]}
    goal_task = method.goal_slice is not None

    @jax.jit
    def draw(params, rng, states, goals):
        return method.plan(params, rng, states, goals if goal_task else None)[0]

    def inputs(batch):  # data-parallel over the local devices where they divide the batch
        states, goals = batch_over_devices(jnp.zeros((batch, method.state_dim)), jnp.ones((batch, 2)))
        return params, jax.random.PRNGKey(1), states, goals

    def step_cost(batch):
        x = jnp.zeros((batch, method.horizon, method.transition_dim))
        t = jnp.zeros((batch,), jnp.int32)
        flops, nbytes = cost(jax.jit(method.net.apply).lower(params["denoiser"], x, t))
        pc = method.config.plan
        if method.value_net is not None:
            # steps at t >= t_stopgrad take n_guide_steps gradients of J, the others one evaluation of J
            grad = jax.jit(jax.value_and_grad(lambda x, p: jnp.sum(method.value(p, x, t))))
            guided = np.array(cost(grad.lower(x, params))) * pc.n_guide_steps
            stopped = np.array(cost(jax.jit(method.value).lower(params, x, t)))
            ts = diffusion.timestep_sequence(method.schedule.num_steps, method.schedule.num_steps, method.sampler.steps)
            share = np.mean(ts < pc.t_stopgrad)
            flops, nbytes = np.array([flops, nbytes]) + (1 - share) * guided + share * stopped
        return flops, nbytes

    return Case(name, method.horizon, method.schedule.num_steps, draw, inputs, step_cost)


def latent_step_cost(method, prior_params, batch: int, samples: int):
    """One latent denoiser call as ``sample_latents`` makes it: ``[batch, samples, Z]`` latents, each state's
    ``[batch, 1, C]`` condition shared by its samples, one step ``t`` for all."""
    return cost(jax.jit(method.denoiser.apply).lower(
        prior_params, jnp.zeros((batch, samples, method.config.model.latent_dim)), jnp.zeros((1,), jnp.int32),
        jnp.zeros((batch, 1, method.condition_dim))))


def ldcq_case(name: str, steps: int | None) -> Case:
    method = synthetic_method("pointmaze-umaze", [f"plan.sampler_steps={steps}"] if steps else [], method="ldcq")
    # the Q stage's init needs its prepared chunks: the two Q-networks' parameters come from the method instead
    params = {**random_params(method, before="q"), "q": method.init_q(jax.random.PRNGKey(2))}
    latents_per_row = method.config.plan.num_candidates if name == "ldcq-policy" else 1

    @jax.jit
    def draw(params, rng, obs):
        if name == "ldcq-prior":
            return method.sample_latents(params["prior"], rng, method.condition(obs), 1)
        return method.decode_action(params["vae"], obs, method.choose_by_q(params, rng, obs), rng)

    def inputs(batch):
        return params, jax.random.PRNGKey(1), jnp.zeros((batch, method.info.observation_size))

    def step_cost(batch):
        return latent_step_cost(method, params["prior"], batch, latents_per_row)

    plan = method.config.plan
    return Case(name, None, plan.sampler_steps + plan.extra_steps, draw, inputs, step_cost)


def diar_case(name: str, steps: int | None) -> Case:
    method = synthetic_method("pointmaze-umaze", [f"plan.sampler_steps={steps}"] if steps else [], method="diar")
    # the Q and V stage's init needs its prepared chunks: the networks' parameters come from the method instead
    params = {**random_params(method, before="qv"),
              "qv": {"q": method.init_q(jax.random.PRNGKey(2)), "v": method.init_v(jax.random.PRNGKey(3))}}
    policy, plan, latent_dim = method.policy(), method.config.plan, method.config.model.latent_dim
    # every environment's latent has run H steps (diar-policy) or one step with an unbeatable V(s_{t+H}) (diar-act)
    age = plan.replan_every if name == "diar-policy" else 1

    @jax.jit
    def draw(params, rng, obs):
        batch = obs.shape[0]
        state = {"latent": jnp.zeros((batch, latent_dim)), "future_value": jnp.full((batch,), jnp.inf),
                 "age": jnp.full((batch,), age, jnp.int32)}
        return policy.act(params, state, obs, jnp.int32(age), rng)[0]

    def inputs(batch):
        return params, jax.random.PRNGKey(1), jnp.zeros((batch, method.info.observation_size))

    def step_cost(batch):
        if name == "diar-act":
            def act(params, obs):
                latent = jnp.zeros((batch, latent_dim))
                return (method.values(params["qv"]["v"], method.q_input(obs)),
                        method.decode_action(params["vae"], obs, latent, jax.random.PRNGKey(0)))

            return cost(jax.jit(act).lower(params, jnp.zeros((batch, method.info.observation_size))))
        return latent_step_cost(method, params["prior"], batch, plan.num_candidates)

    return Case(name, None, 1 if name == "diar-act" else plan.sampler_steps + plan.extra_steps, draw, inputs,
                step_cost)


def dql_case(name: str, steps: int | None) -> Case:
    method = synthetic_method("hopper-medium", [f"diffusion.num_steps={steps}"] if steps else [], method="dql")
    params = random_params(method)
    policy = method.policy()

    @jax.jit
    def draw(params, rng, obs):
        return policy.act(params, (), obs, jnp.int32(0), rng)[0]

    def inputs(batch):
        return params, jax.random.PRNGKey(1), jnp.zeros((batch, method.info.observation_size))

    def step_cost(batch):
        learner = method.learner
        rows = batch * learner.num_candidates
        return cost(jax.jit(learner.actor.apply).lower(
            params["ql"]["actor"], jnp.zeros((rows, learner.action_dim)), jnp.zeros((rows,), jnp.int32),
            jnp.zeros((rows, learner.input_dim))))

    return Case(name, None, method.config.diffusion.num_steps, draw, inputs, step_cost)


def plandq_case(name: str, steps: int | None) -> Case:
    # one plan per sub-goal (plan.retries=0): a refused sub-goal's further plans each cost as much again
    method = synthetic_method("maze2d-large", ["plan.retries=0", *([f"plan.sampler_steps={steps}"] if steps else [])],
                              method="plandq")
    params = random_params(method)
    policy, plan = method.policy(), method.config.plan
    every = plan.replan_every

    @jax.jit
    def draw(params, rng, obs, state):
        if name == "plandq-policy":
            state = policy.init(params, rng, obs)  # every environment's sub-goal is due
            return policy.act(params, state, obs, jnp.int32(0), rng)[0]

        def step(state, t):
            action, state = policy.act(params, state, obs, t, jax.random.fold_in(rng, t))
            return state, action

        return jax.lax.scan(step, state, jnp.arange(every))[1]

    def inputs(batch):
        # far from the goal, so that the conductor plans; ages 1 .. every: environment i is due at step every - 1 - i
        obs = jnp.zeros((batch, method.info.observation_size)).at[:, 6].set(5.0)
        if name == "plandq-policy":
            return params, jax.random.PRNGKey(1), obs, None
        state = jax.jit(policy.init)(params, jax.random.PRNGKey(0), obs)
        return params, jax.random.PRNGKey(1), obs, {**state, "age": 1 + jnp.arange(batch, dtype=jnp.int32) % every}

    def step_cost(batch):
        return cost(jax.jit(method.conductor.apply).lower(
            params["conductor"], jnp.zeros((batch, method.num_states, method.state_dim)),
            jnp.zeros((batch,), jnp.int32)))

    return Case(name, None, plan.sampler_steps, draw, inputs, step_cost)


def latent_diffuser_case(name: str, steps: int | None) -> Case:
    method = synthetic_method("hopper-medium", [f"plan.sampler_steps={steps}", f"energy.support_steps={steps}"]
                              if steps else [], method="latent_diffuser")
    params = random_params(method)
    policy, supports = method.policy(), method.config.energy.num_supports
    plan = name == "latent-diffuser-plan"

    @jax.jit
    def draw(params, rng, obs):
        if plan:
            return policy.act(params, policy.init(params, rng, obs), obs, jnp.int32(0), rng)[0]
        s1 = method.state(obs)  # the energy stage's support set, as EnergyStage.prepare draws it
        z = method.sample_latents(params, rng, s1, supports, guidance_weight=1.0, temperature=1.0,
                                  steps=method.config.energy.support_steps, energy_params=None)
        return method.plan_value(params["vae"], jnp.repeat(s1, supports, axis=0), z.reshape((-1,) + z.shape[2:]))

    def inputs(batch):
        return params, jax.random.PRNGKey(1), jnp.zeros((batch, method.info.observation_size))

    def step_cost(batch):
        rows = 2 * batch if plan else batch * supports  # the plan's CFG batches the null condition with it
        z = jnp.zeros((rows, method.num_latents, method.config.model.latent_dim))
        return cost(jax.jit(method.prior.apply).lower(params["prior"], z, jnp.zeros((rows,), jnp.int32),
                                                       method.prior_condition(jnp.zeros((rows, method.state_dim)))))

    return Case(name, None, method.config.plan.sampler_steps if plan else method.config.energy.support_steps, draw,
                inputs, step_cost)


def core_case(name: str, steps: int | None, dim: int = 16, cond_dim: int = 8) -> Case:
    num_steps = steps or 100
    schedule = diffusion.make_schedule("linear", num_steps)
    config = (diffusion.SamplerConfig(method="ddim", steps=max(1, num_steps // 5)) if name == "ddim"
              else diffusion.SamplerConfig(method="ddpm"))
    net = MLPDenoiser(hidden=256, depth=3)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, dim)), jnp.zeros((1,), jnp.int32), jnp.zeros((1, cond_dim)))
    cfg = diffusion.ClassifierFreeGuidance(jnp.zeros((cond_dim,)), 1.5) if name == "ddpm-cfg" else None
    calls = len(diffusion.timestep_sequence(schedule.num_steps, schedule.num_steps, config.steps))

    @jax.jit
    def draw(params, rng, cond):
        return diffusion.sample(rng, lambda x, t, c: net.apply(params, x, t, c), schedule,
                                (cond.shape[0], dim), config, cond, cfg=cfg)

    def inputs(batch):
        return params, jax.random.PRNGKey(1), jnp.ones((batch, cond_dim))

    def step_cost(batch):
        width = 2 * batch if cfg is not None else batch
        return cost(jax.jit(net.apply).lower(params, jnp.zeros((width, dim)), jnp.zeros((width,), jnp.int32),
                                             jnp.zeros((width, cond_dim))))

    return Case(name, None, calls, draw, inputs, step_cost)


def cases(names, horizons, steps, compute_dtype: str = "float32") -> list[Case]:
    built = []
    for name in names:
        for n in steps or [None]:
            if name.startswith("diffuser"):
                built += [diffuser_case(name, h, n, compute_dtype) for h in horizons or [None]]
            elif name.startswith("ldcq"):
                built.append(ldcq_case(name, n))
            elif name.startswith("diar"):
                built.append(diar_case(name, n))
            elif name == "dql-act":
                built.append(dql_case(name, n))
            elif name.startswith("plandq"):
                built.append(plandq_case(name, n))
            elif name.startswith("latent-diffuser"):
                built.append(latent_diffuser_case(name, n))
            else:
                built.append(core_case(name, n))
    return built


def measure(case: Case, batch: int, repeats: int) -> dict:
    inputs = case.inputs(batch)
    compile_s, compiled = compile_seconds(case.draw, *inputs)
    jax.block_until_ready(compiled(*inputs))
    seconds = steady_seconds(compiled, *inputs, repeats=repeats)
    flops, nbytes = (case.steps * c for c in case.step_cost(batch))
    devices = max(devices_of(x) for x in jax.tree.leaves(inputs))
    return {"sampler": case.name, "batch": batch, "devices": devices, "horizon": case.horizon, "steps": case.steps,
            "compile_s": compile_s, "latency_s": seconds, "samples_per_s": batch / seconds, "flops": flops,
            "bytes": nbytes, "flops_per_s": flops / seconds, "bytes_per_s": nbytes / seconds}


def row(figure: dict, limits: dict) -> str:
    horizon = figure["horizon"] if figure["horizon"] is not None else "-"
    shares = ceilings(figure.get("devices", 1))
    head = f"| {figure['sampler']} | {figure['batch']} | {figure.get('devices', '-')} | {horizon} | {figure['steps']} |"
    if "skipped" in figure:
        return head + f" skipped: {figure['skipped']} | | | | | | | |"
    return (head + f" {figure['compile_s']:.1f} | {figure['latency_s'] * 1e3:,.1f} | {figure['samples_per_s']:,.1f} | "
            f"{figure['flops'] / 1e9:,.2f} | {figure['flops_per_s'] / 1e9:,.1f} | "
            f"{percent(figure['flops_per_s'], shares * limits['matmul_flops_per_s'])} | "
            f"{giga(figure['bytes_per_s'])} | "
            f"{percent(figure['bytes_per_s'], shares * limits['stream_bytes_per_s'])} |")


def main(argv=None) -> int:
    parser = benchmark_parser("sampler", __doc__)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS, metavar="NAME",
                        help=f"which samplers (default: all of {', '.join(SAMPLERS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64, 1024],
                        help="batch sizes (default: 1 8 64 1024; sizes over --budget are skipped)")
    parser.add_argument("--horizons", nargs="+", type=int, default=None,
                        help="Diffuser planning horizons (default: each config's, 128 maze and 32 guided)")
    parser.add_argument("--steps", nargs="+", type=int, default=None,
                        help="diffusion steps N (default: each config's, 64 maze, 20 guided, 100 LDCQ, DIAR and "
                             "core)")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the Diffuser U-Nets' computation dtype (config compute_dtype; diffuser-* samplers "
                             "only); the matmul ceiling is measured in the same dtype")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up call (best counts)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="skip a batch whose call is predicted to take longer than this many seconds")
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1:
        parser.error("batch sizes and --repeats must be positive")
    others = [name for name in args.samplers if not name.startswith("diffuser")]
    if args.compute_dtype != "float32" and others:
        parser.error(f"--compute-dtype applies to the diffuser-* samplers only, not to {', '.join(others)}")
    argv = sys.argv[1:] if argv is None else argv

    limits = measure_device_limits(matmul_dtype=args.compute_dtype)
    figures, rows = [], []
    for case in cases(args.samplers, args.horizons, args.steps, args.compute_dtype):
        previous = None
        for batch in sorted(args.batches):
            predicted = predicted_seconds(previous, batch)
            if predicted is not None and predicted > args.budget:
                figure = {"sampler": case.name, "batch": batch, "horizon": case.horizon, "steps": case.steps,
                          "skipped": f"predicted {predicted:.0f} s per call > --budget {args.budget:g}"}
            else:
                figure = measure(case, batch, args.repeats)
                previous = (batch, figure["latency_s"])
            figures.append(figure)
            rows.append(row(figure, limits))
            print(rows[-1], flush=True)
    header = (f"{versions('flax')}. {limits_note(limits)} Latency: best of {args.repeats} calls after a warm-up; "
              "GFLOP/call: XLA's cost analysis of one denoising step (with the value gradients where guided) "
              "times the steps.")
    table = ["| sampler | batch | devices | H | steps | compile s | latency ms | samples/s | GFLOP/call | GFLOP/s "
             "| % peak | GB/s | % BW |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]
    # a run of some samplers writes its own section and leaves the table of all of them as it is
    section = "Sampler throughput" + ("" if args.samplers == list(SAMPLERS) else ": " + ", ".join(args.samplers))
    qualifiers = ([args.compute_dtype] if args.compute_dtype != "float32" else []) + (
        [f"{jax.local_device_count()} devices"] if jax.local_device_count() > 1 else [])
    section += f" ({', '.join(qualifiers)})" if qualifiers else ""
    report(section, "sampler", argv, header, table, {"limits": limits, "figures": figures},
           json_path=args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
