"""Multi-stage methods (LDCQ, LDGC, LDCP): each stage is one run of :func:`diffrl.train.loop.train`.

``WORKDIR/<stage>`` holds each stage's checkpoints and TensorBoard logs; a stage reads the finished stage before
it (``config.upstream``) and carries its frozen parameters in its own train state. Re-running the pipeline in the
same workdir skips finished stages and resumes an interrupted one from its latest checkpoint.
``WORKDIR/pipeline.json`` lists the stages, so ``diffrl evaluate --workdir WORKDIR`` scores the last one.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Sequence

import ml_collections

from diffrl.agents.latent_skills import METHOD_STAGES
from diffrl.data import load_dataset
from diffrl.train.checkpoint import Checkpointer
from diffrl.train.loop import check_workdir, train

PIPELINE_FILE = "pipeline.json"


def is_pipeline(config: ml_collections.ConfigDict) -> bool:
    return config.method in METHOD_STAGES


def stage_config(config: ml_collections.ConfigDict, stage: str, workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The config of one stage: ``stage``, its ``train`` settings, and the upstream stage's workdir."""
    stages = METHOD_STAGES[config.method]
    if stage not in stages:
        raise ValueError(f"{config.method} has the stages {', '.join(stages)}; got {stage!r}")
    c = copy.deepcopy(config)
    with c.unlocked():
        c.stage = stage
        c.train = copy.deepcopy(config[stage].train)
        index = stages.index(stage)
        c.upstream = str(workdir / stages[index - 1]) if index > 0 else ""
        c.name = f"{config.name}/{stage}"
    return c


def stage_finished(workdir: pathlib.Path, steps: int) -> bool:
    if not (workdir / "checkpoints").is_dir():
        return False
    checkpointer = Checkpointer(workdir, create=False)
    latest = checkpointer.latest_step()
    checkpointer.close()
    return latest is not None and latest >= steps


def train_pipeline(config: ml_collections.ConfigDict, workdir, *, stages: Sequence[str] | None = None,
                   progress: bool = True, data=None, devices=None) -> dict:
    """Train ``stages`` (default: all of the method's) in order; returns each stage's summary."""
    workdir = check_workdir(workdir)
    all_stages = METHOD_STAGES[config.method]
    (workdir / PIPELINE_FILE).write_text(json.dumps({"method": config.method, "stages": list(all_stages)}))
    summaries = {}
    for stage in stages or all_stages:
        c = stage_config(config, stage, workdir)
        stage_dir = workdir / stage
        if stage_finished(stage_dir, c.train.steps):
            summaries[stage] = {"workdir": str(stage_dir), "skipped": True}
            continue
        if data is None:
            data = load_dataset(config.dataset.id, root=config.dataset.root)
        summaries[stage] = train(c, stage_dir, progress=progress, data=data, devices=devices)
    return summaries


def final_stage_workdir(workdir) -> pathlib.Path:
    """The workdir ``diffrl evaluate`` reads: the last stage of a pipeline workdir, else ``workdir`` itself."""
    workdir = pathlib.Path(workdir)
    record = workdir / PIPELINE_FILE
    if record.is_file():
        return workdir / json.loads(record.read_text())["stages"][-1]
    return workdir
