"""Train a method's stages in order, and load a trained method back.

``WORKDIR/<stage>`` holds each stage's checkpoints and TensorBoard logs; ``WORKDIR/pipeline.json`` names the
method and its stages. Each stage gets the exported parameters of the finished stages it consumes, loaded here
from their checkpoints (the stages never read checkpoints themselves), and refuses upstream stages trained
with another dataset, task or model. Re-running in the same workdir skips finished stages and resumes an
interrupted one from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Any, Callable, Sequence

import jax
import ml_collections

from diffrl.agents import DatasetInfo, Method, method_class
from diffrl.config import apply_overrides, config_from_json, config_to_json, mismatched_keys, validate
from diffrl.data import load_dataset, make_store
from diffrl.data.normalizers import normalizer_from_dict
from diffrl.locking import LockedError, exclusive_lock
from diffrl.train.checkpoint import CheckpointError, Checkpointer
from diffrl.train.loop import check_workdir, train_stage
from diffrl.train.sharding import make_mesh, on_process_0, sync_processes

PIPELINE_FILE = "pipeline.json"
UPSTREAM_KEYS = ("dataset.id", "task", "model")  # an upstream stage must agree with its consumer on these


def _record(method: Method) -> tuple[Any, dict]:
    """``(facts, meta)`` saved with every checkpoint: the normaliser's arrays, the config and the dataset facts."""
    arrays = method.normalizer.to_dict()
    kind = arrays.pop("kind")
    meta = {"config": config_to_json(method.config), "dataset": method.info.to_dict(), "normalizer": kind}
    return arrays, meta


def _finished_step(stage_dir: pathlib.Path, steps: int) -> int | None:
    """The latest checkpoint step of ``stage_dir`` if it reached ``steps``, else ``None``."""
    if not (stage_dir / "checkpoints").is_dir():
        return None
    checkpointer = Checkpointer(stage_dir, create=False)
    latest = checkpointer.latest_step()
    checkpointer.close()
    return latest if latest is not None and latest >= steps else None


def load_stage(stage_dir: pathlib.Path, step: int | None = None) -> tuple[int, dict, Any, Any]:
    """``(step, meta, exported params, facts)`` of a stage's checkpoint (the latest by default)."""
    checkpointer = Checkpointer(stage_dir, create=False)
    try:
        step, meta = checkpointer.restore_meta(step)
        return step, meta, checkpointer.restore_saved(step, "exported"), checkpointer.restore_saved(step, "facts")
    finally:
        checkpointer.close()


def train(config: ml_collections.ConfigDict, workdir, *, stages: Sequence[str] | None = None, progress: bool = True,
          data=None, devices=None, on_log: Callable[[int, dict], None] | None = None,
          make_evaluator: Callable[[Method], Callable[[dict, int], dict]] | None = None) -> dict:
    """Train ``stages`` (default: all of the method's, skipping finished ones) in ``workdir``; returns each
    trained stage's summary (``{"skipped": True}`` for finished ones).

    ``data`` (an :class:`~diffrl.data.OfflineData`) skips loading ``config.dataset.id``; ``on_log`` is passed to
    every stage's loop; ``make_evaluator(method)`` builds, once, the evaluation run every ``eval.every`` steps of
    the last stage (``evaluator(params of every stage, step)``).
    """
    validate(config)
    workdir = check_workdir(workdir)
    with _workdir_lock(workdir):
        return _train_stages(config, workdir, stages, progress, data, devices, on_log, make_evaluator)


@contextlib.contextmanager
def _workdir_lock(workdir: pathlib.Path):
    """One run writes a workdir at a time: process 0 holds its lock for all hosts, and when it cannot take it every
    process raises (the others would otherwise wait for process 0 at their first barrier)."""
    with contextlib.ExitStack() as stack:
        refused = LockedError(f"workdir {workdir} is in use by another diffrl process, or process 0 could not lock "
                              "it (its output says which)")
        on_process_0(lambda: stack.enter_context(exclusive_lock(workdir)), refused)
        yield


def _train_stages(config, workdir: pathlib.Path, stages, progress, data, devices, on_log, make_evaluator) -> dict:
    if data is None:
        data = load_dataset(config.dataset.id, root=config.dataset.root)
    method = method_class(config.method).from_data(config, data)
    method.progress = progress and jax.process_index() == 0
    names = method.stage_names()
    unknown = [s for s in stages or () if s not in names]
    if unknown:
        raise ValueError(f"{config.method} has the stages {', '.join(names)}; got {', '.join(unknown)}")
    on_process_0(lambda: (workdir / PIPELINE_FILE).write_text(json.dumps({"method": config.method,
                                                                          "stages": list(names)})),
                 OSError(f"process 0 could not write {workdir / PIPELINE_FILE} (its output says why)"))
    facts, meta = _record(method)
    mesh = make_mesh(devices)
    store = None
    exported, summaries = {}, {}
    for index, name in enumerate(names):
        stage_dir = workdir / name
        finished = _finished_step(stage_dir, method.train_config(name).steps)
        sync_processes(f"diffrl stage {name} checked")  # before any process writes its checkpoints
        if finished is not None or (stages and name not in stages):
            if finished is not None:
                exported[name] = _load_upstream(stage_dir, config, finished)
                summaries[name] = {"workdir": str(stage_dir), "skipped": True}
            continue
        stage = method.stage(name, exported)
        stage.cache_dir = stage_dir
        if store is None:
            store = make_store(method.preprocess(data))
        evaluate = None
        if make_evaluator is not None and index == len(names) - 1:
            evaluator = make_evaluator(method)

            def evaluate(params, step, upstream=dict(exported), name=name):
                return evaluator({**upstream, name: params}, step)

        summaries[name] = summary = train_stage(stage, stage.prepare(store), stage_dir, mesh=mesh, facts=facts,
                                                meta={**meta, "stage": name}, progress=progress, on_log=on_log,
                                                evaluate=evaluate)
        if summary["stopped_by_sigterm"]:
            break
        exported[name] = _load_upstream(stage_dir, config, summary["step"])
    return summaries


def _load_upstream(stage_dir: pathlib.Path, config: ml_collections.ConfigDict, step: int):
    """The exported parameters of a finished stage, which must have been trained on ``config``'s dataset, task
    and model."""
    _, meta, params, _ = load_stage(stage_dir, step)
    mismatches = mismatched_keys(config_from_json(meta["config"]), config, UPSTREAM_KEYS)
    if mismatches:
        key, old, new = mismatches[0]
        raise CheckpointError(f"stage {stage_dir.name} in {stage_dir} was trained with {key}={old}, this run has "
                              f"{key}={new}; retrain it in a new --workdir or use matching values")
    return params


# Acting settings added to a method's config after runs were saved: a saved config without one reads the value that
# reproduces how it was trained, and can still be overridden (``--config.compute_dtype=bfloat16`` on an older run).
LATER_KEYS = {"diffuser": {"compute_dtype": "float32"}}


def with_later_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with the :data:`LATER_KEYS` of its method that it lacks."""
    missing = {k: v for k, v in LATER_KEYS.get(config.get("method"), {}).items() if k not in config}
    if missing:
        with config.unlocked():
            config.update(missing)
    return config


def load_trained(workdir, step: int | None = None, overrides: Sequence[str] = (),
                 stages: Sequence[str] | None = None) -> tuple[Method, dict, Any, int]:
    """``(method, params of every stage, config, step)`` of a trained workdir; ``step`` picks the last stage's
    checkpoint (default: the latest). ``overrides`` (``KEY=VALUE``) change acting settings such as ``plan.*``;
    ``stages`` loads only those (a conductor whose performer is not trained yet)."""
    workdir = pathlib.Path(workdir)
    record = workdir / PIPELINE_FILE
    if not record.is_file():
        if (workdir / "checkpoints").is_dir():
            raise CheckpointError(f"{workdir} holds a run of an earlier diffrl (checkpoints/ without {PIPELINE_FILE});"
                                  " retrain it with diffrl train in a new --workdir")
        raise CheckpointError(f"no trained method in {workdir} (no {PIPELINE_FILE}); train first with diffrl train "
                              "--workdir DIR")
    names = json.loads(record.read_text())["stages"]
    if stages is not None:
        unknown = sorted(set(stages) - set(names))
        if unknown:
            raise CheckpointError(f"{workdir} has no stage {', '.join(unknown)}; its stages: {', '.join(names)}")
        names = [name for name in names if name in stages]
    params = {}
    for name in names:
        stage_dir = workdir / name
        if not (stage_dir / "checkpoints").is_dir():
            raise CheckpointError(f"stage {name} in {workdir} is not trained yet; run diffrl train --workdir {workdir}")
        last = name == names[-1]
        stage_step, meta, params[name], facts = load_stage(stage_dir, step if last else None)
    try:
        config = apply_overrides(with_later_keys(config_from_json(meta["config"])), list(overrides))
        info = DatasetInfo.from_dict(meta["dataset"])
        normalizer = normalizer_from_dict({"kind": meta["normalizer"], **facts})
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint of stage {names[-1]} in {workdir} has an unreadable record "
                              f"({err})") from None
    return method_class(config.method)(config, info, normalizer), params, config, stage_step
