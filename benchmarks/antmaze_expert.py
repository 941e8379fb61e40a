"""The AntMaze expert: how well the waypoint controller and the direction-following ant reach the goal, per maze.

    diffrl benchmark antmaze_expert [--experts DIR] [--expert-steps N] [--mazes umaze medium large [ultra]]
                                    [--episodes 50] [--json PATH] [--no-write]

For each maze, ``episodes`` episodes in the evaluation env of the AntMaze datasets (gymnasium-robotics
``AntMaze_*-v4`` on the datasets' evaluation map: one start cell, one goal cell, the maze's time limit) from seeds
123, 124, ..., with the collection policy (action noise N(0, 0.2)) and without noise: the share of episodes that
reach the goal (``success`` at some step), the mean first arrival step of those that do, and the mean return.
The expert is the cached SAC run of ``diffrl data generate antmaze-*`` (trained, or resumed, to ``--expert-steps``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from diffrl.benchmarks.common import benchmark_parser, report, versions
from diffrl.envs.antmaze import MAX_EPISODE_STEPS
from diffrl.experts.antmaze_data import ACTION_NOISE, DATASETS, EVAL_MAPS, collect, train_direction_expert
from diffrl.experts.locomotion_data import default_experts_root

ENV_IDS = {maze: DATASETS[f"antmaze-{maze}" if maze == "umaze" else f"antmaze-{maze}-diverse"][0]
           for maze in EVAL_MAPS}
DEFAULT_MAZES = ("umaze", "medium", "large")


def main(argv=None):
    parser = benchmark_parser("antmaze_expert", __doc__)
    parser.add_argument("--experts", default=None,
                        help="folder of the cached SAC runs (default: ~/.cache/diffrl/experts)")
    parser.add_argument("--expert-steps", type=int, default=400_000)
    parser.add_argument("--mazes", nargs="+", default=list(DEFAULT_MAZES), choices=list(EVAL_MAPS))
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    run = train_direction_expert(args.experts or default_experts_root(), args.expert_steps)
    evaluations = ", ".join(f"{step // 1000}k: {value:.1f}" for step, value in run.evaluations)
    figures = [{"expert_steps": run.steps, "evaluations": run.evaluations}]
    rows = ["| maze | env | action noise | episodes | reached the goal | mean first arrival step | mean return | "
            "wall s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for maze in args.mazes:
        env_id = ENV_IDS[maze]
        limit = MAX_EPISODE_STEPS[maze]
        for noise in (ACTION_NOISE, 0.0):
            started = time.perf_counter()
            episodes = collect(run, env_id, EVAL_MAPS[maze], args.episodes * limit, num_envs=10, noise=noise,
                               progress=False, max_episode_steps=limit)
            seconds = time.perf_counter() - started
            reached = [ep["successes"].any() for ep in episodes]
            first = [int(np.argmax(ep["successes"])) for ep in episodes if ep["successes"].any()]
            returns = [float(ep["rewards"].sum()) for ep in episodes]
            figures.append({"maze": maze, "env_id": env_id, "noise": noise, "episodes": len(episodes),
                            "success_rate": float(np.mean(reached)), "first_arrival": first,
                            "mean_return": float(np.mean(returns)), "seconds": seconds})
            rows.append(f"| {maze} | {env_id} | {noise:g} | {len(episodes)} | {np.mean(reached):.2f} | "
                        f"{np.mean(first) if first else float('nan'):.0f} | {np.mean(returns):.1f} | {seconds:.0f} |")
            print(rows[-1], flush=True)
    header = (f"{versions('mujoco', 'gymnasium', 'gymnasium-robotics')}; direction-following ant: SAC "
              f"{run.steps:,} steps, evaluation returns (10 episodes, policy mode, return = velocity along the "
              f"commanded direction summed over up to 1,000 steps) {evaluations}; the datasets' evaluation maps "
              "(Minari's, D4RL's antmaze-umaze-v2 task on U-Maze, PlanDQ's on Ultra).")
    report("AntMaze expert", "antmaze_expert", argv, header, rows, figures, json_path=args.json,
           write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
