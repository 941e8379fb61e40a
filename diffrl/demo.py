"""``diffrl demo``: the whole pipeline on PointMaze U-Maze in a few minutes on a laptop CPU.

1. Generate a small expert U-Maze dataset in MJX (``diffrl data generate``) under ``WORKDIR/datasets`` if absent.
2. Train Diffuser (``configs/diffuser.py:pointmaze-umaze``, shortened) with the sharded, checkpointed runner.
3. Evaluate the checkpoint in parallel MJX environments, print the normalized score, write the plot and JSON.

The same steps at full size are ``diffrl data generate pointmaze-umaze``, ``diffrl train --config=...`` and
``diffrl evaluate``. The shortened run is a smoke-sized model, not the paper's result.
"""

from __future__ import annotations

import logging
import pathlib

import ml_collections

from diffrl.config import CONFIGS_DIR, apply_overrides, load_config

logger = logging.getLogger(__name__)

# Deviations from configs/diffuser.py:pointmaze-umaze (code: dim 32, 2e6 steps, lr 2e-4, EMA from step 2000) so the
# whole demo fits in ~7 minutes on a 2-core CPU: half width, 1,500 steps at a larger learning rate, an earlier EMA.
DEMO_OVERRIDES = (
    "train.steps=1500",
    "train.log_every=100",
    "train.checkpoint_every=500",
    "train.ema_start=500",
    "train.learning_rate=1e-3",
    "model.dim=16",
    "eval.episodes=64",
)
DEMO_DATASET_STEPS = 30_000
DEMO_DATASET_ENVS = 16


def demo_config(overrides: list[str] = ()) -> ml_collections.ConfigDict:
    config = load_config(f"{CONFIGS_DIR / 'diffuser.py'}:pointmaze-umaze")
    return apply_overrides(config, [*DEMO_OVERRIDES, *overrides])


def run_demo(workdir: str | pathlib.Path, overrides: list[str] = (), progress: bool = True) -> dict:
    from diffrl.data import DatasetNotFoundError, load_dataset
    from diffrl.data.generate import generate_maze_dataset
    from diffrl.eval.evaluate import evaluate_checkpoint
    from diffrl.train.loop import check_workdir
    from diffrl.train.pipeline import train

    workdir = check_workdir(workdir)
    config = demo_config(overrides)
    root = workdir / "datasets"
    config.dataset.root = str(root)
    try:
        load_dataset(config.dataset.id, root=root)
    except DatasetNotFoundError:
        logger.info("[1/3] generating %s (%d steps) in %s", config.dataset.id, DEMO_DATASET_STEPS, root)
        generate_maze_dataset("umaze", DEMO_DATASET_STEPS, num_envs=DEMO_DATASET_ENVS, seed=config.seed,
                                   root=root, progress=progress)
    else:
        logger.info("[1/3] using %s in %s", config.dataset.id, root)
    run_dir = workdir / "diffuser-umaze"
    logger.info("[2/3] training Diffuser for %d steps in %s", config.train.steps, run_dir)
    trained = train(config, run_dir, progress=progress)["denoiser"]
    if trained.get("stopped_by_sigterm"):
        raise SystemExit(f"diffrl demo: training stopped by SIGTERM at step {trained['step']}; run the same command "
                         "again to resume it")
    logger.info("[3/3] evaluating %d episodes in parallel MJX environments", config.eval.episodes)
    summary = evaluate_checkpoint(run_dir, json_path=workdir / "summary.json", plot_path=workdir / "demo.png")
    history = trained.get("history")
    summary["final_loss"] = float(history[-1][1]["denoiser/loss"].mean()) if history else None
    return summary
