"""Train-step throughput: steps/s and examples/s of every method's train step, on one device and on all devices.

    diffrl benchmark train [--runs METHOD:VARIANT[:STAGE][,KEY=VALUE...] ...] [--steps 5] [--repeats 3]
                           [--overrides KEY=VALUE ...] [--json PATH] [--no-write]

Each run times the program ``diffrl train`` runs for one stage of a method: the training loop's chunk
(``diffrl.train.loop.make_train_chunk``, its carry from ``init_carry``) of ``--steps`` steps of batch sampling from
the device-resident data, batch sharding over the mesh and the stage's whole update (losses, optimizers, EMA),
compiled into one ``lax.scan`` with the carry donated. The dataset is synthetic with the config's shapes (20
episodes of 1,000 steps); timing does not depend on its values. "prepare s" is the one-off work before training
(``stage.prepare``: Diffuser's value stage computes the returns-to-go, LDCQ's prior and Q stages encode every
chunk, and the Q stage builds its prior-sample pool). Compile time is the ahead-of-time compilation alone; steady
state is the best of ``--repeats`` chunks after a warm-up chunk. GFLOP/step and the bytes behind GB/s are XLA's cost
analysis of the chunk, whose loop body (one step) XLA counts once: FLOPs of the traced program, bytes of the
compiled one times the devices (it is one device's share; see ``common.cost``); "% peak" compares the achieved
rates with the devices' matmul FLOP/s in the run's compute dtype (float32, or bfloat16 for a run with
``compute_dtype=bfloat16``) and streaming bandwidth (one device's, measured by the same run, times the devices; on a
CPU split into devices by ``JAX_NUM_CPU_DEVICES`` they share the cores one device was measured on, so the ceiling is
not multiplied). With more than one device, each
run is timed on one device and on all of them (the global batch split over the ``data`` axis).

A run is ``METHOD:VARIANT``, with ``:STAGE`` for one stage of the method (default: its first; the earlier stages'
parameters are random) and ``,KEY=VALUE`` overrides of its own. Default runs: diffuser:pointmaze-umaze (the
denoiser: temporal U-Net dim 32, H 128, the official 2 x 32 trajectories per update), diffuser:hopper-medium (the
denoiser, H 32) and diffuser:hopper-medium:value (its value function J, trained as its own stage),
bc:pointmaze-umaze (MLP, batch 256), and LDCQ's three stages on pointmaze-umaze (H 30, batch 128): the skill VAE,
the latent prior, and Q-learning with n = 500 candidates read from a pool of 1,000 per chunk (made here with one
denoising step, whose values do not change the step's cost; the sampler benchmark's ldcq-prior row gives the real
pool's rate), and DIAR's VAE stage (the skill VAE with its state decoder and the transformer prior of Algorithm
3) and its Q and V step (V's expectile loss over 500 pool latents at s_t, then both Q-networks towards
r + gamma V(s_{t+H})), Diffusion-QL on hopper-medium (batch 256: the critics' step with the EMA policy's 5-step
next actions, then the policy's denoising loss and Q through its 5-step chain), and PlanDQ's two stages on
maze2d-large (the D-Conductor's U-Net over 16 sub-goal states, 2 x 32 per update, every window kept: the synthetic
random walk barely moves; the Q-Performer, Diffusion-QL on relabelled sub-goals), and LatentDiffuser's VAE and prior
on hopper-medium (the transformer VAE with its heads, batch 32 windows of 120 steps; the latent prior's U-Net on the
frozen encoder's latents). Its energy stage first decodes 16 support plans for each of the synthetic data's 17,620
window starts, which takes a GPU: ``--runs "latent_diffuser:hopper-medium:energy,energy.support_steps=1"`` times
its Eq. 8 step over 256 x 16 supports. ``--runs "ldcq:pointmaze-umaze:q,q.candidates=fresh"`` times the Q step that
draws its candidates inside the step instead (100 + 5 DDPM steps for 128 x 500 latents per update).
"""

from __future__ import annotations

import sys
import time

import jax
from diffrl.benchmarks.common import (
    benchmark_parser,
    ceilings,
    compile_seconds,
    cost,
    giga,
    limits_note,
    measure_device_limits,
    percent,
    report,
    synthetic_data,
    synthetic_stage,
    versions,
)

from diffrl.data import make_store
from diffrl.train.loop import init_carry, make_train_chunk
from diffrl.train.sharding import check_batch_size, make_mesh, put_replicated

RUNS = ("diffuser:pointmaze-umaze", "diffuser:hopper-medium", "diffuser:hopper-medium:value", "bc:pointmaze-umaze",
        "ldcq:pointmaze-umaze:vae", "ldcq:pointmaze-umaze:prior",
        "ldcq:pointmaze-umaze:q,q.pool_steps=1,q.pool_extra_steps=0", "diar:pointmaze-umaze:vae",
        "diar:pointmaze-umaze:qv,q.pool_steps=1,q.pool_extra_steps=0", "dql:hopper-medium",
        "plandq:maze2d-large:conductor,conductor.min_displacement=0.0", "plandq:maze2d-large:performer",
        "latent_diffuser:hopper-medium:vae", "latent_diffuser:hopper-medium:prior")


def parse_run(run: str) -> tuple[str, str, str | None, list[str]]:
    """``METHOD:VARIANT[:STAGE][,KEY=VALUE...]`` -> method, variant, stage (``None``: the method's first) and
    overrides."""
    spec, *overrides = run.split(",")
    method, _, variant = spec.partition(":")
    variant, _, stage = variant.partition(":")
    if not method or not variant:
        raise ValueError(f"a run is METHOD:VARIANT[:STAGE][,KEY=VALUE...], e.g. diffuser:pointmaze-umaze; got {run!r}")
    return method, variant, stage or None, overrides


def compiled_chunk(run: str, devices, steps: int, overrides=()) -> dict:
    """The program ``diffrl train`` runs for ``run``'s stage on ``devices``, compiled for chunks of ``steps`` steps:
    ``{"stage", "mesh", "chunk", "carry", "train_data", "prepare_s", "compile_s", "program"}`` (``program``: the
    jitted chunk ``chunk`` was compiled from; the carry is donated: pass each chunk the last one's output)."""
    method_name, variant, stage_name, run_overrides = parse_run(run)
    data = synthetic_data(variant)
    method, stage = synthetic_stage(variant, [*overrides, *run_overrides], method=method_name, data=data,
                                    stage=stage_name)
    mesh = make_mesh(devices)
    check_batch_size(stage.batch_size, mesh)
    started = time.perf_counter()
    train_data = jax.block_until_ready(stage.prepare(make_store(method.preprocess(data))))
    prepare_s = time.perf_counter() - started
    # the set-up of diffrl.train.loop.train_stage: replicated data and carry, the loop's own chunk
    train_data = put_replicated(train_data, mesh)
    carry = put_replicated(init_carry(stage, method.config.seed), mesh)
    program = make_train_chunk(stage, mesh, steps)
    compile_s, chunk = compile_seconds(program, carry, train_data)
    return {"stage": stage, "mesh": mesh, "chunk": chunk, "carry": carry, "train_data": train_data,
            "prepare_s": prepare_s, "compile_s": compile_s, "program": program,
            "compute_dtype": method.config.get("compute_dtype", "float32")}


def measure(run: str, devices, steps: int, repeats: int, overrides) -> dict:
    built = compiled_chunk(run, devices, steps, overrides)
    stage, mesh, chunk, train_data = built["stage"], built["mesh"], built["chunk"], built["train_data"]
    # FLOPs of the traced (global) step; the compiled program is one device's part of it: its bytes times mesh.size
    flops, nbytes = cost(built["program"].lower(built["carry"], train_data), chunk)  # before the carry is donated
    nbytes *= mesh.size
    carry, _ = chunk(built["carry"], train_data)  # warm-up
    best = float("inf")
    for _ in range(repeats):  # the carry is donated: each chunk continues from the last one's output
        started = time.perf_counter()
        carry, metrics = chunk(carry, train_data)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - started)
    per_step = best / steps
    return {"run": run, "stage": stage.name, "devices": mesh.size, "batch": stage.batch_size,
            "compute_dtype": built["compute_dtype"], "prepare_s": built["prepare_s"], "compile_s": built["compile_s"],
            "seconds_per_step": per_step,
            "steps_per_s": 1 / per_step, "examples_per_s": stage.batch_size / per_step, "flops_per_step": flops,
            "bytes_per_step": nbytes, "flops_per_s": flops / per_step, "bytes_per_s": nbytes / per_step}


def row(figure: dict, limits: dict) -> str:
    shares = ceilings(figure["devices"])
    return (f"| {figure['run']} | {figure['devices']} | {figure['batch']} | {figure['prepare_s']:.1f} | "
            f"{figure['compile_s']:.1f} | "
            f"{figure['seconds_per_step'] * 1e3:,.1f} | {figure['steps_per_s']:,.2f} | "
            f"{figure['examples_per_s']:,.0f} | "
            f"{figure['flops_per_step'] / 1e9:,.2f} | {figure['flops_per_s'] / 1e9:,.1f} | "
            f"{percent(figure['flops_per_s'], shares * limits['matmul_flops_per_s'])} | "
            f"{giga(figure['bytes_per_s'])} | "
            f"{percent(figure['bytes_per_s'], shares * limits['stream_bytes_per_s'])} |")


def main(argv=None) -> int:
    parser = benchmark_parser("train", __doc__)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), metavar="METHOD:VARIANT[:STAGE][,KEY=VALUE...]",
                        help=f"configs to time (default: {' '.join(RUNS)})")
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed chunk (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks after the warm-up (best counts)")
    parser.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides applied to every run, e.g. train.batch_size=64")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive")
    for run in args.runs:
        try:
            parse_run(run)
        except ValueError as err:
            parser.error(str(err))
    argv = sys.argv[1:] if argv is None else argv

    limits = {"float32": measure_device_limits()}  # by compute dtype: a bfloat16 run is held to bfloat16's rate
    device_sets = [jax.devices()[:1]] + ([jax.devices()] if len(jax.devices()) > 1 else [])
    figures, rows = [], []
    for run in args.runs:
        for devices in device_sets:
            figures.append(measure(run, devices, args.steps, args.repeats, args.overrides))
            dtype = figures[-1]["compute_dtype"]
            if dtype not in limits:
                limits[dtype] = measure_device_limits(matmul_dtype=dtype)
            rows.append(row(figures[-1], limits[dtype]))
            print(rows[-1], flush=True)
    other_dtypes = "".join(f" Runs in {dtype} (compute_dtype) are compared with its matmul rate, "
                           f"{limit['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s." for dtype, limit in limits.items()
                           if dtype != "float32")
    header = (f"{versions('flax', 'optax')}. {limits_note(limits['float32'])}{other_dtypes} {args.steps} steps per "
              f"timed chunk, best of "
              f"{args.repeats} chunks; examples = trajectories (Diffuser), transitions (BC) or H-step chunks "
              "(LDCQ, DIAR) per update"
              + (f"; overrides `{' '.join(args.overrides)}`" if args.overrides else "") + ".")
    table = ["| run | devices | batch | prepare s | compile s | ms/step | steps/s | examples/s | GFLOP/step | GFLOP/s "
             "| % peak | GB/s | % BW |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]
    # a run of other runs than the defaults writes its own section and leaves the table of the defaults as it is
    section = "Train-step throughput" + ("" if args.runs == list(RUNS) else ": " + ", ".join(args.runs))
    report(section, "train", argv, header, table, {"limits": limits, "figures": figures},
           json_path=args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
