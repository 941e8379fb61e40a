"""diffrl next to the official PyTorch Diffuser, in one run, interleaved: planning and train-update latency.

    diffrl benchmark compare-pytorch --official PATH [--workloads maze-plan guided-plan maze-train hopper-train]
                                     [--batches 1 8 64] [--guided-batches 64] [--repeats 5] [--train-steps 10]
                                     [--threads N] [--json PATH] [--no-write]

PATH is a checkout of github.com/jannerm/diffuser (``git clone https://github.com/jannerm/diffuser``; the rows in
``results/`` used the branch ``main``). Only its model and sampling modules are imported, unmodified:
``diffuser/models`` (``TemporalUnet``, ``ValueFunction``, ``GaussianDiffusion``, ``ValueDiffusion``),
``diffuser/sampling/functions.py`` and ``guides.py``, and ``diffuser/utils/progress.py`` and ``arrays.py``. The
package ``__init__`` files, which import d4rl, gym and mujoco-py, are not run. It needs ``torch`` and ``einops``
beside diffrl (neither is a diffrl dependency).

Both sides get the same workload, built from diffrl's configs (the PyTorch modules take their sizes from them):

  maze-plan     Diffuser's maze planner (configs/diffuser.py:pointmaze-umaze, the maze2d-umaze sizes): temporal
                U-Net dim 32, dim_mults (1, 4, 8), H 128, 64 denoising steps, start and goal inpainted, x0 clipped.
                PyTorch: ``GaussianDiffusion.conditional_sample({0: start, H - 1: goal}, verbose=False)`` of the
                branch ``main`` (the branch ``maze2d``, which the official maze runs used, has the same U-Net; its
                sampling loop lacks main's two ``.item()`` calls per step and final sort, which cost little on a CPU
                but synchronise a GPU at every step).
  guided-plan   Diffuser's value-guided planner (configs/diffuser.py:hopper-medium): U-Net (1, 2, 4, 8), H 32, 20
                steps, 2 gradient steps on J before each (scale 0.1, t_stopgrad 2, scaled by the variance).
                PyTorch: ``conditional_sample`` with ``n_step_guided_p_sample`` and ``ValueGuide(ValueDiffusion(
                ValueFunction))``, as ``scripts/plan_guided.py``'s policy calls it.
  maze-train, hopper-train
                one update of the denoiser: PyTorch, the official ``Trainer``'s loop body (2 micro-batches of 32,
                ``loss / 2`` backward each, Adam at lr 2e-4, an EMA update every 10th step) on tensors made once;
                diffrl, the compiled chunk ``diffrl train`` runs (``diffrl.train.loop.make_train_chunk``: batch
                sampling from the device-resident data, one 64-trajectory batch, Adam, EMA every 10th step).
                A timed call is ``--train-steps`` updates; the row gives one update's time.

Each workload is built and warmed up on both sides, then timed ``--repeats`` times with the two calls alternating
(the first call of each pair alternates too), so that both see the same machine state; the table gives the median
(and best) of each and the ratio of the medians. Weights are random on both sides: the time does not depend on
them. On a machine with a GPU that both JAX and PyTorch see, both run on it. With several local JAX devices (a CPU
split into one device per core by ``JAX_NUM_CPU_DEVICES=<cores>``), diffrl's plans split their batch over them
where it divides, data-parallel, and so do its train updates (as ``diffrl train`` shards its batch over the mesh),
while PyTorch uses as many threads. With one JAX device, ``PJRT_NPROC=1`` gives XLA one thread, which is the
fastest batch-1 plan on a CPU (the recorded command shows it).
"""

from __future__ import annotations

import importlib
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import jax
from diffrl.benchmarks.common import benchmark_parser, random_params, report, synthetic_method, versions
from diffrl.benchmarks.sampler import diffuser_case
from diffrl.benchmarks.train import compiled_chunk

WORKLOADS = ("maze-plan", "guided-plan", "maze-train", "hopper-train")
VARIANTS = {"maze-plan": "pointmaze-umaze", "guided-plan": "hopper-medium", "maze-train": "pointmaze-umaze",
            "hopper-train": "hopper-medium"}
# The speed targets set for diffrl (PyTorch / diffrl), by workload and batch; "-" where none is set. On a CPU:
CPU_TARGETS = {("maze-plan", 1): "3x", ("guided-plan", 64): "2x", ("maze-train", 64): "1.3x"}
GPU_BATCHED_PLAN_TARGET = "10x"  # on a GPU: every plan of more than one row, PyTorch on the same GPU


def target(workload: str, batch: int, on_gpu: bool) -> str:
    if on_gpu:
        return GPU_BATCHED_PLAN_TARGET if workload.endswith("plan") and batch > 1 else "-"
    return CPU_TARGETS.get((workload, batch), "-")


def load_official(root: Path) -> dict[str, types.ModuleType]:
    """The official Diffuser's ``diffuser.models``, ``diffuser.sampling.functions`` and ``.guides``, imported from
    the checkout ``root`` with its ``diffuser``, ``diffuser.utils`` and ``diffuser.sampling`` packages made empty
    (their ``__init__`` files import d4rl, gym and mujoco-py, which the model code does not use)."""
    source = Path(root) / "diffuser"
    needed = ["models/temporal.py", "models/diffusion.py", "models/helpers.py", "sampling/functions.py",
              "sampling/guides.py", "utils/progress.py", "utils/arrays.py"]
    missing = [name for name in needed if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a checkout of github.com/jannerm/diffuser: no diffuser/"
                                f"{', diffuser/'.join(missing)}")
    for name in ("diffuser", "diffuser.utils", "diffuser.sampling"):
        package = types.ModuleType(name)
        package.__path__ = [str(source.parent / name.replace(".", "/"))]
        sys.modules[name] = package
    utils = sys.modules["diffuser.utils"]
    for part in ("progress", "arrays"):  # the names diffusion.py and helpers.py use through ``diffuser.utils``
        module = importlib.import_module(f"diffuser.utils.{part}")
        utils.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return {"models": importlib.import_module("diffuser.models"),
            "functions": importlib.import_module("diffuser.sampling.functions"),
            "guides": importlib.import_module("diffuser.sampling.guides")}


def official_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def official_diffusion(official, method, torch_device):
    """The official ``GaussianDiffusion`` over a ``TemporalUnet`` with the sizes of diffrl's Diffuser ``method``."""
    config = method.config
    net = official["models"].TemporalUnet(horizon=method.horizon, transition_dim=method.transition_dim, cond_dim=0,
                                          dim=config.model.dim, dim_mults=tuple(config.model.dim_mults))
    return official["models"].GaussianDiffusion(
        net, method.horizon, method.state_dim, method.action_width, n_timesteps=config.diffusion.num_steps,
        loss_type="l2", clip_denoised=config.diffusion.clip_x0 is not None,
        predict_epsilon=config.diffusion.prediction == "eps", action_weight=config.diffusion.action_weight,
        loss_discount=config.diffusion.loss_discount).to(torch_device)


def torch_plan(official, method, batch: int, torch_device) -> Callable[[], None]:
    """One PyTorch plan of ``batch`` rows: inpainted start and goal (maze) or value-guided from a start (hopper)."""
    import torch

    diffusion = official_diffusion(official, method, torch_device).eval()
    start = torch.zeros(batch, method.state_dim, device=torch_device)
    if method.goal_slice is not None:
        cond, kwargs = {0: start, method.horizon - 1: torch.ones(batch, method.state_dim, device=torch_device)}, {}
    else:
        vc, pc = method.config.value, method.config.plan
        value_net = official["models"].ValueFunction(horizon=method.horizon, transition_dim=method.transition_dim,
                                                     cond_dim=0, dim=vc.dim, dim_mults=tuple(vc.dim_mults))
        value = official["models"].ValueDiffusion(value_net, method.horizon, method.state_dim, method.action_width,
                                                  n_timesteps=method.config.diffusion.num_steps, loss_type="value_l2")
        guide = official["guides"].ValueGuide(value.to(torch_device).eval())
        cond = {0: start}
        kwargs = dict(guide=guide, sample_fn=official["functions"].n_step_guided_p_sample,
                      n_guide_steps=pc.n_guide_steps, scale=pc.guide_scale, t_stopgrad=pc.t_stopgrad,
                      scale_grad_by_std=True)

    def plan():
        diffusion.conditional_sample(cond, verbose=False, **kwargs)
        synchronize(torch_device)

    return plan


def torch_train(official, method, steps: int, torch_device) -> tuple[Callable[[], None], int]:
    """``steps`` updates of the official ``Trainer`` loop (micro-batches, Adam, EMA every ``ema_every``) on fixed
    random tensors; returns the call and the trajectories per update."""
    import copy

    import torch

    tc = method.config.train
    diffusion = official_diffusion(official, method, torch_device).train()
    ema_model = copy.deepcopy(diffusion)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=tc.learning_rate)
    shape = (tc.batch_size, method.horizon, method.transition_dim)
    def conditions():  # the official GoalDataset's {0: start, H - 1: goal}, SequenceDataset's {0: start}
        ends = [0, method.horizon - 1] if method.goal_slice is not None else [0]
        return {end: torch.randn(tc.batch_size, method.state_dim, device=torch_device) for end in ends}

    micro_batches = [(torch.randn(shape, device=torch_device), conditions()) for _ in range(tc.gradient_accumulation)]
    counter = [0]

    def update_ema():  # the official EMA: ma = beta * ma + (1 - beta) * current, parameter by parameter
        for averaged, current in zip(ema_model.parameters(), diffusion.parameters()):
            averaged.data = averaged.data * tc.ema_decay + (1 - tc.ema_decay) * current.data

    def train():
        for _ in range(steps):
            for x, cond in micro_batches:
                loss, _ = diffusion.loss(x, cond)
                (loss / tc.gradient_accumulation).backward()
            optimizer.step()
            optimizer.zero_grad()
            if counter[0] % tc.ema_every == 0:  # the Trainer's step counter, from 0
                update_ema()
            counter[0] += 1
        synchronize(torch_device)

    return train, tc.batch_size * tc.gradient_accumulation


def parameter_counts(official, method) -> tuple[int, int]:
    """Parameters of the denoiser on each side (PyTorch, diffrl): equal when both build the same network."""
    torch_count = sum(p.numel() for p in official_diffusion(official, method, "cpu").model.parameters())
    jax_count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(random_params(method)["denoiser"]))
    return torch_count, jax_count


def synchronize(torch_device) -> None:
    if torch_device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def jax_plan(method_name: str, batch: int) -> Callable[[], None]:
    case = diffuser_case("diffuser-maze" if method_name == "maze-plan" else "diffuser-guided", None, None)
    inputs = case.inputs(batch)
    compiled = case.draw.lower(*inputs).compile()
    return lambda: jax.block_until_ready(compiled(*inputs))


def jax_train(workload: str, steps: int) -> Callable[[], None]:
    tc = synthetic_method(VARIANTS[workload]).config.train
    devices = jax.local_devices()  # diffrl train's mesh: the update's batch split over them where it divides
    if tc.batch_size * tc.gradient_accumulation % len(devices):
        devices = devices[:1]
    built = compiled_chunk(f"diffuser:{VARIANTS[workload]}", devices, steps)
    chunk, train_data, carry = built["chunk"], built["train_data"], [built["carry"]]

    def train():  # the carry is donated: each chunk continues from the last one's output
        carry[0], metrics = chunk(carry[0], train_data)
        jax.block_until_ready(metrics)

    return train


def interleaved(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` times, after one warm-up call each; within a repeat every call runs once,
    and the order of the calls turns by one place from repeat to repeat."""
    names = list(calls)
    for name in names:
        calls[name]()
    seconds = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def summary(workload: str, batch: int, seconds: dict[str, list[float]], per_call: int = 1) -> dict:
    """Median and best of each side per unit (a plan, or one update of a ``per_call``-update call), and the
    ratio PyTorch / diffrl of the medians."""
    figure = {"workload": workload, "batch": batch}
    for side, values in seconds.items():
        figure[f"{side}_median_s"] = statistics.median(values) / per_call
        figure[f"{side}_best_s"] = min(values) / per_call
    figure["speedup"] = figure["pytorch_median_s"] / figure["diffrl_median_s"]
    return figure


def row(figure: dict) -> str:
    def shown(seconds):
        return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.3f} s"

    return (f"| {figure['workload']} | {figure['batch']} | {figure['parameters']:,} "
            f"| {shown(figure['pytorch_median_s'])} "
            f"({shown(figure['pytorch_best_s'])}) | {shown(figure['diffrl_median_s'])} "
            f"({shown(figure['diffrl_best_s'])}) | {figure['speedup']:.2f}x | {figure['target']} |")


def main(argv=None) -> int:
    parser = benchmark_parser("compare-pytorch", __doc__)
    parser.add_argument("--official", required=True, metavar="PATH",
                        help="a checkout of github.com/jannerm/diffuser (branch main)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS, metavar="NAME",
                        help=f"which workloads (default: all of {', '.join(WORKLOADS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64], help="maze plan batch sizes")
    parser.add_argument("--guided-batches", nargs="+", type=int, default=[64],
                        help="value-guided plan batch sizes (64: one step of the official policy)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each side (the median counts)")
    parser.add_argument("--train-steps", type=int, default=10, help="updates per timed train call")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's CPU threads (default: the cores this process may use, as XLA takes)")
    args = parser.parse_args(argv)
    if min(args.batches + args.guided_batches) < 1 or args.repeats < 1 or args.train_steps < 1:
        parser.error("batch sizes, --repeats and --train-steps must be positive")
    try:
        import torch
    except ModuleNotFoundError:
        parser.error("PyTorch is not installed: pip install torch einops")
    try:
        official = load_official(Path(args.official))
    except (FileNotFoundError, ModuleNotFoundError) as err:
        parser.error(str(err))
    argv = sys.argv[1:] if argv is None else argv

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    on_gpu = jax.default_backend() == "gpu"
    if on_gpu != torch.cuda.is_available():
        sees = "sees a" if torch.cuda.is_available() else "sees no"
        parser.error(f"JAX runs on {jax.default_backend()} and PyTorch {sees} "
                     "GPU: both sides must run on the same kind of device (install the matching builds)")
    torch_device = torch.device("cuda" if on_gpu else "cpu")
    figures, rows = [], []
    for workload in args.workloads:
        method = synthetic_method(VARIANTS[workload])
        counts = parameter_counts(official, method)
        if counts[0] != counts[1]:
            raise RuntimeError(f"{workload}: the official denoiser has {counts[0]:,} parameters and diffrl's "
                               f"{counts[1]:,}: the two sides would not run the same network")
        if workload.endswith("train"):
            torch_call, per_update = torch_train(official, method, args.train_steps, torch_device)
            sizes = [(per_update, {"pytorch": torch_call, "diffrl": jax_train(workload, args.train_steps)},
                      args.train_steps)]
        else:
            batches = args.batches if workload == "maze-plan" else args.guided_batches
            sizes = [(batch, {"pytorch": torch_plan(official, method, batch, torch_device),
                              "diffrl": jax_plan(workload, batch)}, 1) for batch in batches]
        for batch, calls, per_call in sizes:
            figure = summary(workload, batch, interleaved(calls, args.repeats), per_call) | {
                "parameters": counts[0], "target": target(workload, batch, on_gpu)}
            figures.append(figure)
            rows.append(row(figure))
            print(rows[-1], flush=True)
    devices = jax.local_device_count()
    split = (f"; diffrl's plans and train updates split over {devices} {jax.default_backend().upper()} devices "
             "where the batch divides"
             if devices > 1 else "")
    header = (f"{versions('flax')}, torch {torch.__version__} ({threads} threads on the CPU"
              f"{', the GPU for both' if on_gpu else ''}{split}); the official Diffuser at "
              f"{official_commit(Path(args.official))}. Each side built and warmed up, then {args.repeats} calls "
              "of each, alternating; median (best) per plan or per update (batch: trajectories per plan or per "
              "update), ratio of the medians; random weights.")
    table = ["| workload | batch | denoiser parameters | PyTorch median (best) | diffrl median (best) "
             "| PyTorch / diffrl | target |", "|---|---:|---:|---:|---:|---:|---:|", *rows]
    report("diffrl and the official PyTorch Diffuser, interleaved", "compare-pytorch", argv, header, table,
           {"figures": figures, "threads": threads, "torch": torch.__version__}, json_path=args.json,
           write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
