"""The training loop every method shares.

``log_every`` train steps run as one jitted ``lax.scan`` (sample a minibatch on device, shard it over the
``data`` axis, update); the state is donated, and the host reads metrics only once per chunk. Checkpoints
(:mod:`diffrl.train.checkpoint`) are saved every ``checkpoint_every`` steps and on SIGTERM; a run restarted
in the same workdir resumes from the latest one and reproduces the uninterrupted run exactly, because the
train state and the rng stream are both checkpointed at chunk boundaries.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import signal
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from diffrl.agents import AGENTS, Agent
from diffrl.config import config_from_json, config_to_json, mismatched_keys
from diffrl.data import load_dataset, make_store
from diffrl.train.checkpoint import CheckpointError, Checkpointer
from diffrl.train.logging import SummaryWriter
from diffrl.train.sharding import check_batch_size, make_mesh, put_replicated, shard_batch

# Config groups that fix the shapes of the saved state: a workdir cannot be resumed under other values.
SHAPE_KEYS = ("method", "stage", "dataset.id", "model", "value", "diffusion.horizon", "task.horizon")


class WorkdirError(ValueError):
    """The workdir cannot be created or written."""


def check_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    workdir = pathlib.Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise WorkdirError(f"cannot write to workdir {workdir} ({err.strerror or err}); pass a writable --workdir") from None
    return workdir


def make_agent(config: ml_collections.ConfigDict, data) -> Agent:
    if config.method not in AGENTS:
        raise ValueError(f"unknown method {config.method!r}; choose one of {', '.join(AGENTS)}")
    return AGENTS[config.method].from_data(config, data)


def make_train_chunk(agent: Agent, mesh, steps: int):
    """``(carry, train_data) -> (carry, per-step metrics)`` for ``steps`` steps; ``carry = {"agent", "rng"}``."""

    def one_step(train_data, carry, _):
        rng, rng_batch, rng_update = jax.random.split(carry["rng"], 3)
        batch = shard_batch(agent.sample_batch(train_data, rng_batch, carry["agent"]), mesh)
        state, metrics = agent.update(carry["agent"], batch, rng_update)
        return {"agent": state, "rng": rng}, metrics

    @functools.partial(jax.jit, donate_argnums=0)
    def chunk(carry, train_data):
        return jax.lax.scan(functools.partial(one_step, train_data), carry, None, length=steps)

    return chunk


def _check_resumable(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir) -> None:
    mismatches = mismatched_keys(saved, config, SHAPE_KEYS)
    if mismatches:
        key, old, new = mismatches[0]
        raise CheckpointError(f"workdir {workdir} holds a run with another {key} ({old} vs {new}); "
                              "use a new --workdir or the same config")


@contextlib.contextmanager
def _sigterm_flag():
    """Yields a dict whose ``"stop"`` turns True on SIGTERM (the previous handler is restored afterwards)."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no signal handling
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    progress: bool = True,
    devices=None,
    data=None,
    on_log: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint); returns a summary dict.

    ``data`` (an :class:`~diffrl.data.OfflineData`) skips loading ``config.dataset.id``; ``on_log(step, metrics)``
    is called at every log interval on the host.
    """
    tc = config.train
    if tc.steps % tc.log_every or tc.checkpoint_every % tc.log_every:
        raise ValueError(f"train.steps ({tc.steps}) and train.checkpoint_every ({tc.checkpoint_every}) must be "
                         f"multiples of train.log_every ({tc.log_every})")
    workdir = check_workdir(workdir)
    if data is None:
        data = load_dataset(config.dataset.id, root=config.dataset.root)
    agent = make_agent(config, data)
    agent.progress = progress and jax.process_index() == 0
    mesh = make_mesh(devices)
    check_batch_size(agent.batch_size, mesh)
    train_data = put_replicated(agent.prepare(make_store(agent.preprocess(data))), mesh)

    checkpointer = Checkpointer(workdir, keep=tc.keep_checkpoints)
    carry = {"agent": jax.jit(agent.init)(jax.random.PRNGKey(config.seed)), "rng": jax.random.PRNGKey(config.seed + 1)}
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
        _, meta = checkpointer.restore_meta(latest)
        _check_resumable(config_from_json(meta["config"]), config, workdir)
        carry = checkpointer.restore_state(latest, carry)
        start_step = latest
    carry = put_replicated(carry, mesh)
    meta = {"config": config_to_json(config), "artifacts": agent.artifacts()}

    chunk = make_train_chunk(agent, mesh, tc.log_every)
    is_chief = jax.process_index() == 0
    writer = SummaryWriter(workdir / "tensorboard", enabled=is_chief)
    history: list[tuple[int, dict]] = []
    step, stopped = start_step, False
    with _sigterm_flag() as sigterm, writer, tqdm(total=tc.steps, initial=start_step, desc=f"train {config.name}",
                                                  unit="step", disable=not (progress and is_chief)) as bar:
        while step < tc.steps:
            started = time.perf_counter()
            carry, metrics = chunk(carry, train_data)
            metrics = jax.device_get(metrics)  # the one host sync per log interval
            seconds = time.perf_counter() - started
            step += tc.log_every
            means = {k: float(np.mean(v)) for k, v in metrics.items()}
            history.append((step, {k: np.asarray(v) for k, v in metrics.items()}))
            throughput = {"steps_per_sec": tc.log_every / seconds,
                          "examples_per_sec": tc.log_every * agent.batch_size / seconds}
            writer.scalars(means, step, prefix="train")
            writer.scalars(throughput, step, prefix="train")
            bar.update(tc.log_every)
            bar.set_postfix(loss=f"{means['loss']:.4g}")
            if on_log is not None:
                on_log(step, means)
            if config.eval.every and step % config.eval.every == 0:
                _evaluate_during_training(agent, carry["agent"], config, step, writer)
            stopped = sigterm["stop"]
            if step % tc.checkpoint_every == 0 or step == tc.steps or stopped:
                # A copy: the next chunk donates ``carry`` while the asynchronous save may still read it.
                checkpointer.save(step, jax.tree.map(jnp.copy, carry), meta, force=stopped)
            if stopped:
                break
    checkpointer.close()
    return {"workdir": str(workdir), "start_step": start_step, "step": step, "stopped_by_sigterm": stopped,
            "history": history, "devices": mesh.size}


def _evaluate_during_training(agent: Agent, state, config, step: int, writer: SummaryWriter) -> None:
    from diffrl.eval.evaluate import evaluate_agent

    result = evaluate_agent(agent, agent.policy_params(state), config)
    writer.scalars({k: v for k, v in result["summary"].items() if isinstance(v, float)}, step, prefix="eval")
    if result.get("figure") is not None:
        writer.image("eval/rollouts", result["figure"], step)
