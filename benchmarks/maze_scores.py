"""Maze scores over seeds: train each method on a generated maze dataset, evaluate it on 100 episodes (parallel
MJX envs; gymnasium's for AntMaze on a CPU), and write both maze scores to ``results/<device>.md``.

    python benchmarks/maze_scores.py --root /data/minari --variant maze2d-umaze --seeds 0 1 2 \\
        --methods bc diffuser ldcq --set diffuser model.dim=16 train.steps=3000 --set bc train.steps=20000

``--variant`` names the protocol and the maze: ``maze2d-<maze>`` (D4RL's maze2d-v1: ``diffrl data generate
maze2d-<maze>``, the protocol of the papers' numbers), ``pointmaze-<maze>`` or ``multi2d-<maze>`` (Minari's
pointmaze-v2 data), ``antmaze-<maze>[-diverse|-play]`` (``diffrl data generate antmaze-...``; its dataset id
``diffrl/antmaze/...-v1`` given by ``--dataset-id``, which replaces every method's). ``--set METHOD KEY=VALUE ...``
overrides that method's config (repeatable). Methods:
bc, diffuser, diar, dql, plandq (``configs/<method>.py:<variant>``), ldcq, ldgc, ldcp
(``configs/ldcq.py:<variant>[-ldgc|-ldcp]``), planqq, planqd, plandd (``configs/plandq.py:<variant>-<method>``);
diar-noar: diar's trained workdir evaluated without Adaptive Revaluation, and ldcq-code-eval: ldcq's evaluated as
the official maze2d code does (list each after the method it evaluates; it trains nothing of its own and takes
that method's overrides). ``--runs-from FILE ...`` reuses the runs of earlier ``--json``
files (seeds trained in separate jobs pool into one row without training or evaluating again).
Each row pools all seeds x episodes (mean and standard error) and lists the per-seed means; the "paper" column
is the paper's D4RL maze2d-v1 score for the method, the budget column what each seed was trained for.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import numpy as np

from diffrl.benchmarks.common import versions, write_json, write_section
from diffrl.config import apply_overrides, load_config
from diffrl.data.minari_io import normalized_score
from diffrl.eval.evaluate import Evaluator
from diffrl.eval.rollout import first_hit_returns
from diffrl.train.pipeline import load_trained, train

METHODS = {"bc": "bc.py:{}", "diffuser": "diffuser.py:{}", "ldcq": "ldcq.py:{}", "ldgc": "ldcq.py:{}-ldgc",
           "ldcp": "ldcq.py:{}-ldcp", "diar": "diar.py:{}", "diar-noar": "diar.py:{}",
           "ldcq-code-eval": "ldcq.py:{}", "dql": "dql.py:{}",
           "plandq": "plandq.py:{}", "planqq": "plandq.py:{}-planqq", "planqd": "plandq.py:{}-planqd",
           "plandd": "plandq.py:{}-plandd"}
# Methods that evaluate another method's training under other settings: (trained method, evaluation overrides,
# overrides the training needs). ldcq-code-eval: the official maze2d evaluation's policy (the q_policy lookahead,
# new latents every 10 steps); its sampling settings (candidates, steps) stay those of the config and --set.
EVALUATED_AS = {"diar-noar": ("diar", ["plan.adaptive_revaluation=False"], []),
                "ldcq-code-eval": ("ldcq", ["plan.q_lookahead=True", "plan.replan_every=10"],
                                   ["model.state_decoder=True"])}
# D4RL maze2d-v1 scores the papers report: Diffuser (Janner et al., Table 1), BC and LDCQ on U-Maze and Medium
# (DIAR, Park et al., Table 1), LDCQ, LDGC and LDCP on Large (Venkatraman et al., Tables 1 and 8), DIAR with and
# without Adaptive Revaluation (Park et al., Table 2).
PAPER = {"diffuser": {"umaze": 113.9, "medium": 121.5, "large": 123.0},
         "bc": {"umaze": 3.8, "medium": 30.3, "large": 5.0},
         "ldcq": {"umaze": 134.2, "medium": 125.3, "large": 150.1}, "ldgc": {"large": 206.8}, "ldcp": {"large": 184.3},
         "diar": {"umaze": 141.8, "medium": 139.2, "large": 200.3},
         "diar-noar": {"umaze": 135.6, "medium": 138.2, "large": 193.5}}
PAPER["ldcq-code-eval"] = PAPER["ldcq"]
# D4RL antmaze-*-v2 scores (the success rate x 100, on D4RL's data): BC, LDCQ and DIAR from DIAR's Table 1,
# Diffusion-QL and PlanDQ from PlanDQ's Table 2.
PAPER_ANTMAZE = {"bc": {"umaze-diverse": 45.6, "medium-diverse": 0.0, "large-diverse": 0.0},
                 "ldcq": {"umaze-diverse": 81.4, "medium-diverse": 68.9, "large-diverse": 57.7},
                 "diar": {"umaze-diverse": 88.8, "medium-diverse": 68.2, "large-diverse": 60.6},
                 "dql": {"medium-diverse": 90.0, "large-diverse": 64.0},
                 "plandq": {"medium-diverse": 93.0, "large-diverse": 86.0}}
EVALUATED_IN = {"mjx": "parallel MJX envs", "gym": "gymnasium envs (MuJoCo C, faster than MJX on a CPU)"}


def run(method: str, variant: str, overrides: list[str], seed: int, root: str, workdir: pathlib.Path, episodes: int,
        eval_overrides: list[str] = ()):
    config = apply_overrides(load_config(f"configs/{METHODS[method].format(variant)}"),
                             [*overrides, f"dataset.root={root}", f"seed={seed}", f"eval.episodes={episodes}"])
    started = time.perf_counter()
    summaries = train(config, workdir, progress=False)  # every stage of the method, in order
    train_seconds = time.perf_counter() - started
    stopped = [name for name, summary in summaries.items() if summary.get("stopped_by_sigterm")]
    if stopped:  # a partly trained run is not the row's budget: nothing is evaluated
        raise SystemExit(f"{method} seed {seed}: stage {stopped[0]} stopped by SIGTERM at step "
                         f"{summaries[stopped[0]]['step']}; run the same command again to resume it")
    trained, params, config, step = load_trained(workdir, overrides=eval_overrides)
    result = Evaluator(trained, episodes=episodes, seed=1000 + seed)(params)
    info, rollout = trained.info, result["rollout"]
    first_hit = first_hit_returns(rollout["first_hit"], result["summary"]["max_episode_steps"])
    budget = {name: trained.train_config(name).steps for name in trained.stage_names()}
    return {"method": method, "seed": seed, "variant": variant, "overrides": list(overrides),
            "eval_overrides": list(eval_overrides), "budget": budget, "train_seconds": train_seconds,
            "scores": normalized_score(np.asarray(rollout["returns"], np.float64), info.ref_min_score,
                                       info.ref_max_score).tolist(),
            "first_hit_scores": normalized_score(first_hit, info.ref_min_score, info.ref_max_score).tolist(),
            "success": np.asarray(rollout["success"]).tolist(), "summary": result["summary"]}


def _pooled(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.1f} +/- {values.std(ddof=1) / np.sqrt(len(values)):.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="Minari root holding the variant's dataset")
    parser.add_argument("--variant", default="maze2d-umaze",
                        help="maze2d-<maze> | pointmaze-<maze> | multi2d-<maze> | antmaze-<maze>[-<kind>]")
    parser.add_argument("--dataset-id", default=None, help="the dataset of every method (default: the configs')")
    parser.add_argument("--methods", nargs="+", default=["bc", "diffuser"], choices=sorted(METHODS))
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar=("METHOD", "KEY=VALUE"),
                        help="config overrides of one method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--workdir", default="runs/maze_scores")
    parser.add_argument("--json", default=None, help="also write every run's scores here")
    parser.add_argument("--runs-from", nargs="+", default=[], metavar="JSON",
                        help="earlier --json files: a method and seed found there is taken from them, not run again")
    args = parser.parse_args(argv)
    overrides = {method: [f"dataset.id={args.dataset_id}"] if args.dataset_id else [] for method in args.methods}
    for method, *values in args.set:
        if method not in overrides:
            parser.error(f"--set {method}: not one of --methods {' '.join(args.methods)}")
        overrides[method] += values
    for method, (trained_as, _, needs) in EVALUATED_AS.items():
        if method in overrides:
            if trained_as not in overrides or args.methods.index(trained_as) > args.methods.index(method):
                parser.error(f"{method} evaluates {trained_as}'s training: list {trained_as} before it in --methods")
            if missing := [item for item in needs if item not in overrides[trained_as]]:
                parser.error(f"{method} needs {trained_as} trained with --set {trained_as} {' '.join(missing)}")
            overrides[method] = overrides[trained_as]
    earlier = {}
    for path in args.runs_from:
        for r in json.loads(pathlib.Path(path).read_text()):
            if (r["method"], r["seed"]) in earlier:
                parser.error(f"--runs-from: {r['method']} seed {r['seed']} is in more than one run")
            earlier[r["method"], r["seed"]] = r
    runs = []
    for method in args.methods:
        trained_as, eval_overrides, _ = EVALUATED_AS.get(method, (method, [], []))
        recipe = {"variant": args.variant, "overrides": overrides[method], "eval_overrides": eval_overrides}
        for seed in args.seeds:
            if (method, seed) in earlier:
                runs.append(earlier[method, seed])
                # files written before 2026-12-01 record neither the variant nor the overrides
                differ = {k: runs[-1][k] for k, v in recipe.items() if runs[-1].get(k, v) != v}
                if len(runs[-1]["scores"]) != args.episodes:
                    differ["episodes"] = len(runs[-1]["scores"])
                if differ:
                    parser.error(f"{method} seed {seed} in --runs-from ran with other settings: {differ}")
                continue
            workdir = pathlib.Path(args.workdir) / f"{args.variant}-{trained_as}-seed{seed}"
            runs.append(run(method, args.variant, overrides[method], seed, args.root, workdir, args.episodes,
                            eval_overrides))
            print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("scores", "first_hit_scores", "success")}),
                  flush=True)
    if args.json:
        print(f"wrote {write_json(args.json, runs)}")

    kind, _, maze = args.variant.partition("-")
    paper = {"maze2d": PAPER, "antmaze": PAPER_ANTMAZE}.get(kind, {})
    rows = ["| method | train steps per stage | overrides | train min/seed | per-seed score | score +/- stderr | "
            "first-hit score +/- stderr | success rate | paper |", "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        per_seed = ", ".join(f"{np.mean(r['scores']):.1f}" for r in mine)
        budget = ", ".join(f"{stage} {steps}" for stage, steps in mine[0]["budget"].items())
        rows.append(f"| {method} | {budget} | `{' '.join(overrides[method]) or 'none'}` | "
                    f"{np.mean([r['train_seconds'] for r in mine]) / 60:.1f} | {per_seed} | "
                    f"{_pooled(np.concatenate([r['scores'] for r in mine]))} | "
                    f"{_pooled(np.concatenate([r['first_hit_scores'] for r in mine]))} | "
                    f"{np.mean(np.concatenate([r['success'] for r in mine])):.2f} | "
                    f"{paper.get(method, {}).get(maze, '-')} |")
    summary, seeds = runs[0]["summary"], f"{len(args.seeds)} seed{'s' * (len(args.seeds) > 1)}"
    body = (f"{versions('flax', 'mujoco-mjx')}; dataset `{summary['dataset_id']}` (`diffrl data generate`), "
            f"evaluated in `{summary['env']}` ({summary['max_episode_steps']} steps), {seeds} x "
            f"{args.episodes} episodes in {EVALUATED_IN[summary.get('backend', 'mjx')]}. Score: 100 (R - R_min) / "
            "(R_max - R_min) of the "
            "return R with the dataset's references; first-hit score: the same of T - t for a first arrival at "
            "step t (0 if none), LDCQ's maze metric." + (
                " Paper: D4RL's AntMaze score, the success rate x 100 on D4RL's data (DIAR Table 1, PlanDQ Table 2)."
                if kind == "antmaze" else "") + "\n\n" + "\n".join(rows))
    command = "python benchmarks/maze_scores.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(write_section(f"Maze scores {args.variant}: {', '.join(args.methods)}", body, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
