"""The training loop every stage of every method shares.

``log_every`` train steps run as one jitted ``lax.scan`` (sample a minibatch on device, shard it over the
``data`` axis, update); the carry is donated, and the host reads metrics only once per chunk. Checkpoints
(:mod:`diffrl.train.checkpoint`) are saved every ``checkpoint_every`` steps and on SIGTERM; a run restarted
in the same workdir resumes from the latest one and reproduces the uninterrupted run exactly, because the
train state and the rng stream are both checkpointed at chunk boundaries.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pathlib
import signal
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from diffrl.agents.base import Stage
from diffrl.config import config_from_json, mismatched_keys
from diffrl.train.checkpoint import CheckpointError, Checkpointer
from diffrl.train.logging import SummaryWriter
from diffrl.train.sharding import check_batch_size, on_process_0, process_values, put_replicated, shard_batch

# Config groups that fix the shapes of the saved state: a workdir cannot be resumed under other values.
SHAPE_KEYS = ("method", "dataset.id", "task", "model", "value")
logger = logging.getLogger(__name__)


class WorkdirError(ValueError):
    """The workdir cannot be created or written."""


def check_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    workdir = pathlib.Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise WorkdirError(f"cannot write to workdir {workdir} ({err.strerror or err}); "
                           "pass a writable --workdir") from None
    return workdir


def make_train_chunk(stage: Stage, mesh, steps: int):
    """``(carry, train_data) -> (carry, per-step metrics)`` for ``steps`` steps; ``carry = {"state", "rng"}``."""

    def one_step(train_data, carry, _):
        rng, rng_batch, rng_update = jax.random.split(carry["rng"], 3)
        batch = shard_batch(stage.sample_batch(train_data, rng_batch, carry["state"]), mesh)
        state, metrics = stage.update(carry["state"], batch, rng_update)
        return {"state": state, "rng": rng}, metrics

    @functools.partial(jax.jit, donate_argnums=0)
    def chunk(carry, train_data):
        return jax.lax.scan(functools.partial(one_step, train_data), carry, None, length=steps)

    return chunk


def _snapshot(carry: dict) -> dict:
    """A copy of ``carry`` for the asynchronous save (the next chunk donates ``carry`` while the save may still
    read it): host arrays in a single-process run, which Orbax writes as they are (saving replicated device arrays
    costs it a transfer per array and device, ~2 s per save of a Diffuser on four CPU devices); device copies in a
    multi-host run, whose arrays no one process holds whole."""
    if jax.process_count() == 1:
        return jax.device_get(carry)
    return jax.tree.map(jnp.copy, carry)


def init_carry(stage: Stage, seed: int) -> dict:
    return {"state": jax.jit(stage.init)(jax.random.PRNGKey(seed)), "rng": jax.random.PRNGKey(seed + 1)}


def _check_resumable(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir) -> None:
    mismatches = mismatched_keys(saved, config, SHAPE_KEYS)
    if mismatches:
        key, old, new = mismatches[0]
        raise CheckpointError(f"workdir {workdir} holds a run with another {key} ({old} vs {new}); "
                              "use a new --workdir or the same config")


def _resume(checkpointer: Checkpointer, carry: dict, config: ml_collections.ConfigDict, workdir) -> tuple[dict, int]:
    """``(carry, step)`` of the newest checkpoint that restores, ``(carry, 0)`` when there is none.

    A checkpoint that cannot be read while an older one can (a save cut short by a full disk, a file truncated by
    a copy) is corrupt: it is moved to ``checkpoints/corrupt-<step>`` with a warning and the run resumes from the
    older one. When no checkpoint restores, the newest one's error is raised and nothing is moved.

    The processes of a multi-host run compare what they found (the step, or none, and how many newer checkpoints
    failed) and all raise when they differ, instead of some waiting at a collective the others skip. Not covered:
    a state read that fails on some processes only, since Orbax passes a barrier after every restore that succeeds.
    """
    failures, restored, step, refusal = [], carry, None, None
    for candidate in sorted(checkpointer.all_steps(), reverse=True):
        try:
            _, saved = checkpointer.restore_meta(candidate)
        except CheckpointError as err:
            failures.append((candidate, err))
            continue
        try:
            _check_resumable(config_from_json(saved["config"]), config, workdir)
        except CheckpointError as err:  # another config is not corruption: refuse
            refusal = err
            break
        try:
            restored, step = checkpointer.restore_state(candidate, carry), candidate
            break
        except CheckpointError as err:
            failures.append((candidate, err))
    found = process_values([-2 if refusal else -1 if step is None and failures else step or 0, len(failures)])
    if np.any(found != found[0]):
        raise CheckpointError(f"the processes found different checkpoints to resume from in {workdir} ([step, newer "
                              f"unreadable ones] per process, step -1: none readable, -2: another config, 0: none "
                              f"saved: {found.tolist()}); is it one folder shared by every host? A read that failed "
                              "on one host only succeeds on a rerun")
    if refusal or step is None:
        if refusal or failures:
            raise refusal or failures[0][1]
        return carry, 0
    for bad, err in failures:
        # the workdir is shared by the processes of a multi-host run: process 0 moves it
        aside = on_process_0(lambda: _move_aside(checkpointer.directory, bad),
                             OSError(f"process 0 could not move checkpoint {bad} aside (its output says why)"))
        logger.warning("checkpoint %s cannot be restored (%s); moved to %s, resuming from step %d", bad, err,
                       aside or "corrupt-<step> by process 0", step)
    return restored, step


def _move_aside(directory: pathlib.Path, step: int) -> pathlib.Path:
    """Moves checkpoint ``step`` to ``corrupt-<step>``, or ``corrupt-<step>-<n>`` when earlier resumes took that."""
    aside, n = directory / f"corrupt-{step}", 1
    while aside.exists():
        aside, n = directory / f"corrupt-{step}-{n}", n + 1
    (directory / str(step)).rename(aside)
    return aside


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


def stop_agreed(local_stop: bool) -> bool:
    """Whether any process was asked to stop: every host takes part, so all save the same step and none waits
    for a save the others skip (one small all-gather per chunk in multi-host runs)."""
    if jax.process_count() == 1:
        return local_stop
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local_stop))))


def train_stage(stage: Stage, train_data: Any, workdir: str | pathlib.Path, *, mesh, facts: Any, meta: dict,
                progress: bool = True, on_log: Callable[[int, dict], None] | None = None,
                evaluate: Callable[[Any, int], dict] | None = None) -> dict:
    """Train ``stage`` in ``workdir`` (resuming from its latest checkpoint); returns a summary dict.

    ``train_data`` is the output of ``stage.prepare``; ``facts`` (the method's normaliser) and ``meta`` (a JSON
    record with the config) are saved with every checkpoint. ``on_log(step, metrics)`` runs at every log interval
    on the host; ``evaluate(exported params, step)`` every ``eval.every`` steps, returning ``{"summary", "figure"}``.
    """
    config, tc = stage.config, stage.train_config
    if tc.steps % tc.log_every or tc.checkpoint_every % tc.log_every:
        raise ValueError(f"train.steps ({tc.steps}) and train.checkpoint_every ({tc.checkpoint_every}) of stage "
                         f"{stage.name} must be multiples of train.log_every ({tc.log_every})")
    workdir = check_workdir(workdir)
    check_batch_size(stage.batch_size, mesh)
    train_data = put_replicated(train_data, mesh)
    checkpointer = Checkpointer(workdir, keep=tc.keep_checkpoints)
    carry, start_step = _resume(checkpointer, init_carry(stage, config.seed), config, workdir)
    if start_step and start_step != checkpointer.latest_step():  # unreadable newer checkpoints were moved aside
        checkpointer.close()
        checkpointer = Checkpointer(workdir, keep=tc.keep_checkpoints)
    carry = put_replicated(carry, mesh)

    chunk = make_train_chunk(stage, mesh, tc.log_every)
    is_chief = jax.process_index() == 0
    writer = SummaryWriter(pathlib.Path(workdir) / "tensorboard", enabled=is_chief)
    history: list[tuple[int, dict]] = []
    step, stopped = start_step, False
    # closing the checkpointer waits for the save under way, also when Ctrl-C ends the loop
    with _sigterm_flag() as sigterm, contextlib.closing(checkpointer), writer, \
            tqdm(total=tc.steps, initial=start_step, desc=f"train {stage.name}", unit="step",
                 disable=not (progress and is_chief)) as bar:
        while step < tc.steps:
            started = time.perf_counter()
            carry, metrics = chunk(carry, train_data)
            metrics = jax.device_get(metrics)  # the one host sync per log interval
            seconds = time.perf_counter() - started
            step += tc.log_every
            means = {k: float(np.mean(v)) for k, v in metrics.items()}
            history.append((step, {k: np.asarray(v) for k, v in metrics.items()}))
            writer.scalars(means, step, prefix="train")
            writer.scalars({"steps_per_sec": tc.log_every / seconds,
                            "examples_per_sec": tc.log_every * stage.batch_size / seconds}, step, prefix="train")
            bar.update(tc.log_every)
            bar.set_postfix({key.removesuffix("/loss") + "_loss": f"{value:.4g}" for key, value in means.items()
                             if key.endswith("/loss")})
            if on_log is not None:
                on_log(step, means)
            if evaluate is not None and config.eval.every and step % config.eval.every == 0:
                bar.set_description(f"train {stage.name} (evaluating)")  # the bar stands still meanwhile
                result = evaluate(stage.export(carry["state"]), step)
                bar.set_description(f"train {stage.name}")
                scalars = {k: v for k, v in result["summary"].items() if isinstance(v, float)}
                writer.scalars(scalars, step, prefix="eval")
                if result.get("figure") is not None:
                    writer.image("eval/rollouts", result["figure"], step)
            stopped = stop_agreed(sigterm["stop"])
            if step % tc.checkpoint_every == 0 or step == tc.steps or stopped:
                saved = _snapshot(carry)
                checkpointer.save(step, saved, stage.export(saved["state"]), facts, meta, force=stopped)
            if stopped:
                break
    return {"workdir": str(workdir), "start_step": start_step, "step": step, "stopped_by_sigterm": stopped,
            "history": history, "devices": mesh.size}
