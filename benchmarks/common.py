"""Shared helpers for the benchmark scripts: device naming, versions, timing, XLA cost analysis, the device's
measured limits, and the results file ``results/<device>.md``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

import diffrl
from diffrl.agents import Method, Stage, method_class
from diffrl.config import apply_overrides, load_config
from diffrl.data import OfflineData


def _results_dir() -> Path:
    """``$DIFFRL_BENCHMARK_RESULTS`` if set; else ``benchmarks/results/`` of the source checkout whose ``diffrl``
    was imported (installed editable, or put first on ``PYTHONPATH``: the results land next to the code that made
    them, even where the editable install maps ``diffrl.benchmarks`` to another checkout); else, installed,
    ``benchmarks/results/`` under the current directory (not inside site-packages)."""
    if os.environ.get("DIFFRL_BENCHMARK_RESULTS"):
        return Path(os.environ["DIFFRL_BENCHMARK_RESULTS"])
    checkout = Path(diffrl.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "benchmarks").is_dir():
        return checkout / "benchmarks" / "results"
    return Path.cwd() / "benchmarks" / "results"


RESULTS = _results_dir()


def device_name() -> str:
    """``cpu`` or the accelerator kind, e.g. ``nvidia-h100-80gb-hbm3``: the results file is named after it."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")


def device_description() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
        return f"CPU: {model}, {_cpu_count()} cores, {len(jax.devices())} JAX device(s)"
    return f"{device.device_kind} x{len(jax.devices())}"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def versions(*packages: str) -> str:
    return ", ".join(f"{p} {metadata.version(p)}" for p in ("jax", *packages))


def steady_seconds(fn, *args, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls of an already compiled ``fn`` (blocking on the result)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def compile_seconds(fn, *args):
    """``(seconds, compiled)``: the ahead-of-time lowering and compilation of a jitted ``fn``, nothing run."""
    started = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return time.perf_counter() - started, compiled


def cost(lowered, compiled=None) -> tuple[float, float]:
    """``(FLOPs, bytes accessed)`` of a jitted program from XLA's cost analysis: the FLOPs of the program as
    traced (``lowered``, whole-batch shapes), the bytes of the compiled one (``compiled``, compiled from ``lowered``
    when not given), whose fusions decide what goes through memory.

    The FLOPs cannot come from the compiled program. On a GPU, XLA compiles convolutions and many matrix products
    into library calls (cuDNN, cuBLAS) that its analysis of the compiled program does not count. On an H200 that
    undercounted the maze planner 11x. Their bytes go uncounted as well, so off the CPU the bytes are NaN ("-" in
    the tables).
    XLA counts the body of a ``while`` loop (a ``lax.scan``) once, whatever its trip count: callers multiply the cost
    of one loop iteration by the number of iterations themselves.
    """
    def first(result):
        return result[0] if isinstance(result, (list, tuple)) else result

    analysis = lowered.cost_analysis()
    if analysis is None:
        # backends reached through a PJRT plugin (CUDA, TPU) offer no analysis before compilation; XLA's HLO cost
        # analysis of the same module on the CPU client counts the same operations (JAX's own binding of it)
        from jax._src.lib import _jax

        analysis = _jax.hlo_module_cost_analysis(jax.extend.backend.get_backend("cpu"),
                                                 lowered.compiler_ir("hlo").as_hlo_module())
    flops = float(first(analysis).get("flops", 0.0))
    if jax.default_backend() != "cpu":
        return flops, float("nan")
    compiled = lowered.compile() if compiled is None else compiled
    return flops, float(first(compiled.cost_analysis()).get("bytes accessed", 0.0))


def predicted_seconds(previous: tuple[int, float] | None, size: int) -> float | None:
    """Linear extrapolation of a call's time from the previous (smaller) size's ``(size, seconds)``."""
    return None if previous is None else previous[1] * size / previous[0]


# (observation size, action size, observation slices) of each environment family's datasets
DATASET_SHAPES = {
    "pointmaze": (8, 2, {"observation": slice(0, 4), "achieved_goal": slice(4, 6), "desired_goal": slice(6, 8)}),
    "maze2d": (8, 2, {"observation": slice(0, 4), "achieved_goal": slice(4, 6), "desired_goal": slice(6, 8)}),
    "hopper": (11, 3, None),
    "halfcheetah": (17, 6, None),
    "walker2d": (17, 6, None),
}


def batch_over_devices(*arrays):
    """``arrays`` with their leading (batch) axis split over all local devices when there are several and it
    divides the batch (one CPU device per core with ``JAX_NUM_CPU_DEVICES``, or several GPUs): a jitted call on
    them then runs data-parallel. Otherwise unchanged."""
    devices = jax.local_devices()
    if len(devices) == 1 or any(a.shape[0] % len(devices) for a in arrays):
        return arrays
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return tuple(jax.device_put(a, sharding) for a in arrays)


def devices_of(array) -> int:
    """How many devices hold parts of ``array``."""
    return len(array.sharding.device_set)


def ceilings(devices: int) -> int:
    """How many times one device's measured ceiling a run on ``devices`` devices can reach: several GPUs add
    theirs; CPU devices (``JAX_NUM_CPU_DEVICES``) share the cores that one device was measured on."""
    return 1 if jax.default_backend() == "cpu" else devices


def synthetic_data(variant: str, episodes: int = 20, episode_length: int = 1_000) -> OfflineData:
    """Random-walk arrays with the shapes of a config variant's dataset (``pointmaze-*``, ``maze2d-*``, ``multi2d-*``
    or a locomotion env): throughput does not depend on the values, so the benchmarks need no dataset on disk."""
    family = "pointmaze" if variant.startswith("multi2d") else variant.split("-")[0]
    obs_size, act_size, slices = DATASET_SHAPES[family]
    steps = episodes * episode_length
    rng = np.random.default_rng(0)
    observations = np.cumsum(rng.normal(0, 0.05, (steps, obs_size)), axis=0)
    actions = rng.uniform(-1, 1, (steps, act_size))
    lengths = [episode_length] * episodes
    return OfflineData.from_arrays(observations, actions, rng.normal(size=steps), lengths,
                                   dataset_id=f"synthetic/{family}-v0", observation_slices=slices)


def synthetic_method(variant: str, overrides=(), method: str = "diffuser", data: OfflineData | None = None) -> Method:
    """The method of ``configs/<method>.py:<variant>`` (with ``KEY=VALUE`` overrides), its normaliser fitted on
    ``data`` (default: :func:`synthetic_data` of the variant)."""
    config = apply_overrides(load_config(f"{method}.py:{variant}"), list(overrides))
    data = synthetic_data(variant) if data is None else data
    return method_class(config.method).from_data(config, data)


def random_params(method: Method, before: str | None = None, seed: int = 0) -> dict:
    """``{stage: exported parameters}`` of randomly initialised stages in place of trained ones, every stage of
    ``method`` before ``before`` (default: all): timing does not depend on their values. Each stage is built on the
    random parameters of the ones before it, and must be initialisable without ``prepare`` (LDCQ's Q stage is not)."""
    names = method.stage_names()
    if before is not None and before not in names:
        raise ValueError(f"{method.name} has the stages {', '.join(names)}; got {before!r}")
    params = {}
    for index, name in enumerate(names):
        if name == before:
            break
        stage = method.stage(name, params)
        params[name] = stage.export(jax.jit(stage.init)(jax.random.PRNGKey(seed + index)))
    return params


def synthetic_stage(variant: str, overrides=(), method: str = "diffuser", data: OfflineData | None = None,
                    stage: str | None = None) -> tuple[Method, Stage]:
    """``(method, stage)``: :func:`synthetic_method` and its stage ``stage`` (default: the method's first), built
    on random parameters of the stages before it (:func:`random_params`)."""
    built = synthetic_method(variant, overrides, method, data)
    stage = built.stage_names()[0] if stage is None else stage
    return built, built.stage(stage, random_params(built, before=stage))


def measure_device_limits(repeats: int = 3, matmul_size: int | None = None, stream_mib: int = 256,
                          matmul_dtype: str = "float32") -> dict:
    """The device's achievable limits, measured here: matrix-product FLOP/s and streaming bytes/s.

    FLOP/s: square ``matmul_dtype`` matmuls (default 2048 on CPU, 8192 on accelerators) chained in one jitted loop.
    Bytes/s: an elementwise ``y = 1.0001 x + 1`` over a ``stream_mib`` MiB float32 array (read and write
    counted), ten times in a loop; working sets that fit in a cache can exceed it. These are the ceilings a
    result is compared against ("% peak", "% BW"). Prints them and how long measuring them took (compilation
    included), so that a run stopped later shows its ceilings.
    """
    started = time.perf_counter()
    n = matmul_size or (2048 if jax.default_backend() == "cpu" else 8192)
    a = (jax.random.normal(jax.random.PRNGKey(0), (n, n)) / n).astype(matmul_dtype)
    matmuls = 10
    chain = jax.jit(lambda a: jax.lax.fori_loop(0, matmuls, lambda _, y: y @ a, a))
    jax.block_until_ready(chain(a))
    flops = matmuls * 2 * n**3 / steady_seconds(chain, a, repeats=repeats)
    x = jnp.ones((stream_mib * 2**18,), jnp.float32)
    passes = 10
    stream = jax.jit(lambda x: jax.lax.fori_loop(0, passes, lambda _, y: 1.0001 * y + 1.0, x))
    jax.block_until_ready(stream(x))
    bandwidth = passes * 2 * x.nbytes / steady_seconds(stream, x, repeats=repeats)
    print(f"device limits: {flops / 1e9:,.1f} GFLOP/s ({matmul_dtype} {n}x{n} matmuls), {bandwidth / 1e9:,.1f} GB/s "
          f"(measured in {time.perf_counter() - started:.1f} s)", flush=True)
    return {"matmul_flops_per_s": flops, "stream_bytes_per_s": bandwidth, "matmul_size": n,
            "matmul_dtype": matmul_dtype, "stream_mib": stream_mib}


def limits_note(limits: dict) -> str:
    return (f"Device limits measured by the same run: {limits['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s "
            f"({limits.get('matmul_dtype', 'float32')} "
            f"{limits['matmul_size']}x{limits['matmul_size']} matmuls) and {limits['stream_bytes_per_s'] / 1e9:,.1f} "
            f"GB/s (a streaming elementwise pass over {limits['stream_mib']} MiB); \"% peak\" and \"% BW\" divide "
            "by these (working sets that stay in cache can pass 100% BW).")


def percent(value: float, limit: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value / limit:.0f}%"


def giga(value: float) -> str:
    """``value`` in units of 1e9 for a table cell ("-" for NaN, a figure not measured)."""
    return "-" if np.isnan(value) else f"{value / 1e9:,.1f}"


def _strict_json(value):
    """``value`` with every non-finite float (NaN: a figure not measured) as None: bare NaN is not JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_json(path: str, value) -> Path:
    """Write ``value`` as JSON to ``path`` (figures not measured as ``null``), creating its folder; returns the
    path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_strict_json(value), indent=2, allow_nan=False))
    return path


def benchmark_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``diffrl benchmark <name>``, with the ``--json`` and ``--no-write`` options every report has."""
    parser = argparse.ArgumentParser(prog=f"diffrl benchmark {name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/results/<device>.md")
    return parser


def report(section: str, script: str, argv, header: str, table: list[str], figures, *, json_path: str | None,
           write: bool) -> None:
    """Write the figures to ``json_path`` and, when ``write``, the table as section ``section`` of the results file."""
    if json_path:
        print(f"wrote {write_json(json_path, figures)}")
    if write:
        # the settings that change what the devices are belong to the command
        env = [f"{k}={os.environ[k]}" for k in ("JAX_NUM_CPU_DEVICES", "PJRT_NPROC", "XLA_FLAGS") if os.environ.get(k)]
        command = " ".join([*env, "diffrl benchmark", script, *argv])
        body = "\n\n".join([header, "\n".join(table)])
        print(f"wrote {write_section(section, body, command)}")


def write_section(name: str, body: str, command: str) -> Path:
    """Replace (or append) the section ``name`` of ``results/<device>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{device_name()}.md"
    text = path.read_text() if path.exists() else f"# Benchmarks on {device_name()}\n"
    stamp = datetime.date.today().isoformat()
    section = (f"<!-- {name} -->\n## {name}\n\n{device_description()}; {stamp}; command: `{command}`\n\n"
               f"{body.strip()}\n<!-- /{name} -->")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    return path
