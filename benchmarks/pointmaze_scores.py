"""Diffuser and behaviour cloning on a generated PointMaze dataset: train each over several seeds, evaluate every
checkpoint on 100 parallel MJX episodes, and write the normalized scores to ``results/<device>.md``.

    python benchmarks/pointmaze_scores.py --root /data/minari --maze umaze --seeds 0 1 2 \\
        --diffuser model.dim=16 train.steps=3000 --bc train.steps=20000

Overrides after ``--diffuser`` / ``--bc`` are ``KEY=VALUE`` config overrides of that method's run. The pooled
score is the mean over all seeds x episodes with its standard error; the per-seed means show the spread
between training runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import numpy as np

from diffrl.benchmarks.common import versions, write_section
from diffrl.config import apply_overrides, load_config
from diffrl.eval.evaluate import Evaluator
from diffrl.train.pipeline import load_trained, train


def run(method: str, variant: str, overrides: list[str], seed: int, root: str, workdir: pathlib.Path, episodes: int):
    config = apply_overrides(load_config(f"configs/{method}.py:{variant}"),
                             [*overrides, f"dataset.root={root}", f"seed={seed}", f"eval.episodes={episodes}"])
    started = time.perf_counter()
    trained = train(config, workdir, progress=True)  # every stage of the method, in order
    train_seconds = time.perf_counter() - started
    trained_method, params, config, step = load_trained(workdir)
    result = Evaluator(trained_method, episodes=episodes, seed=1000 + seed)(params)
    returns = np.asarray(result["rollout"]["returns"], np.float64)
    ref_min, ref_max = trained_method.info.ref_min_score, trained_method.info.ref_max_score
    scores = 100.0 * (returns - ref_min) / (ref_max - ref_min)
    # the loss of the method's last stage (the one the step counts): None when it was trained before, in workdir
    last = trained_method.stage_names()[-1]
    history = trained.get(last, {}).get("history")
    return {"method": method, "seed": seed, "step": step, "train_seconds": train_seconds,
            "final_loss": float(history[-1][1][f"{last}/loss"].mean()) if history else None,
            "scores": scores.tolist(), "success": np.asarray(result["rollout"]["success"]).tolist(),
            "summary": result["summary"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="Minari root holding diffrl/pointmaze/<maze>-v0")
    parser.add_argument("--maze", default="umaze", choices=("umaze", "medium", "large"))
    parser.add_argument("--multi2d", action="store_true", help="evaluate with a new goal every episode (Multi2D)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--workdir", default="runs/pointmaze_scores")
    parser.add_argument("--diffuser", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--bc", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)
    variant = f"{'multi2d' if args.multi2d else 'pointmaze'}-{args.maze}"
    runs = []
    for method, overrides in (("bc", args.bc), ("diffuser", args.diffuser)):
        for seed in args.seeds:
            workdir = pathlib.Path(args.workdir) / f"{variant}-{method}-seed{seed}"
            runs.append(run(method, variant, overrides, seed, args.root, workdir, args.episodes))
            print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("scores", "success")}), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(runs, indent=2))

    dataset = runs[0]["summary"]["dataset_id"]
    rows = ["| method | overrides | seeds | train steps | train min/seed | per-seed score | score +/- stderr | "
            "success rate |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for method, overrides in (("diffuser", args.diffuser), ("bc", args.bc)):
        mine = [r for r in runs if r["method"] == method]
        scores = np.concatenate([r["scores"] for r in mine])
        success = np.concatenate([r["success"] for r in mine])
        per_seed = ", ".join(f"{np.mean(r['scores']):.1f}" for r in mine)
        rows.append(f"| {method} | `{' '.join(overrides) or 'none'}` | {len(mine)} | {mine[0]['step']} | "
                    f"{np.mean([r['train_seconds'] for r in mine]) / 60:.1f} | {per_seed} | "
                    f"{scores.mean():.1f} +/- {scores.std(ddof=1) / np.sqrt(len(scores)):.1f} | {success.mean():.2f} |")
    body = (f"{versions('flax', 'mujoco-mjx')}; dataset `{dataset}` (`diffrl data generate`), "
            f"{args.episodes} evaluation episodes per seed in parallel MJX envs "
            f"({'a new goal every episode' if args.multi2d else 'the single-goal evaluation map'}); "
            "score = 100 (R - R_random) / (R_expert - R_random) with the dataset's reference returns.\n\n"
            + "\n".join(rows))
    command = "python benchmarks/pointmaze_scores.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(write_section(f"PointMaze {variant} scores", body, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
