"""The ``diffrl`` command."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from diffrl.demo import default_config, format_summary, run_demo

    config = default_config()
    if args.steps is not None:
        if args.steps < config.train.steps_per_call or args.steps % config.train.steps_per_call:
            print(f"diffrl demo: --steps must be a positive multiple of {config.train.steps_per_call}", file=sys.stderr)
            return 2
        config.train.steps = args.steps
    config.seed = args.seed
    print("diffrl demo: generate a 2-D multimodal dataset, train a diffusion denoiser, sample it with DDPM and DDIM,\n"
          "evaluate the samples against the exact density, write the plot and a JSON summary.")
    summary = run_demo(config, args.workdir, progress=not args.no_progress)
    print(format_summary(summary))
    return 0


def _data_generate(args: argparse.Namespace) -> int:
    from diffrl.data.generate import DEFAULT_STEPS, generate_pointmaze_dataset

    env, _, maze = args.env.partition("-")
    if env != "pointmaze" or maze not in DEFAULT_STEPS:
        choices = ", ".join(f"pointmaze-{m}" for m in DEFAULT_STEPS)
        print(f"diffrl data generate: unknown environment {args.env!r}; choose one of {choices}", file=sys.stderr)
        return 2
    try:
        summary = generate_pointmaze_dataset(
            maze, args.steps, reward_type="dense" if args.dense else "sparse", num_envs=args.num_envs,
            seed=args.seed, dataset_id=args.dataset_id, root=args.root, overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError) as err:
        print(f"diffrl data generate: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['dataset_id']}: {summary['steps']} steps in {summary['episodes']} episodes, "
          f"ref_min_score {summary['ref_min_score']:.2f}, ref_max_score {summary['ref_max_score']:.2f}\n"
          f"  at {summary['path']}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from diffrl.data import download_dataset

    download_dataset(args.dataset_id)
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from diffrl.data import load_dataset

    try:
        data = load_dataset(args.dataset_id, root=args.root)
    except ValueError as err:
        print(f"diffrl data info: {err}", file=sys.stderr)
        return 2
    lengths = data.episode_lengths
    print(f"{data.dataset_id}: {data.num_steps} steps, {data.num_episodes} episodes "
          f"(length {lengths.min()}..{lengths.max()}, mean {lengths.mean():.1f})")
    print(f"  observation {data.observation_size} dims"
          + (f" {dict((k, (v.start, v.stop)) for k, v in data.observation_slices.items())}" if data.observation_slices else "")
          + f", action {data.action_size} dims")
    print(f"  env {data.env_spec.id if data.env_spec else None}; ref_min_score {data.ref_min_score}, "
          f"ref_max_score {data.ref_max_score}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffrl", description="Diffusion-based offline RL in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded end-to-end demo (about a minute on a 2-core CPU)",
                          description="Train, sample, evaluate and plot on an embedded default problem.")
    demo.add_argument("--workdir", default="demo_out", help="folder for demo.png and summary.json (default: demo_out)")
    demo.add_argument("--steps", type=int, default=None, help="train steps, a multiple of 250 (default: 6000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(handler=_demo)

    data = sub.add_parser("data", help="generate, download and inspect Minari datasets",
                          description="Offline datasets in Minari format (the local root is $MINARI_DATASETS_PATH "
                                      "or ~/.minari/datasets).")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="generate an expert PointMaze dataset in MJX",
                              description="Generate a D4RL-style PointMaze dataset with the waypoint expert in "
                                          "parallel MJX envs, measure its reference scores and write it with Minari.")
    gen.add_argument("env", help="pointmaze-umaze | pointmaze-open | pointmaze-medium | pointmaze-large")
    gen.add_argument("--steps", type=int, default=None,
                     help="transitions to generate (default: 1e6 umaze/open, 2e6 medium, 4e6 large, as D4RL)")
    gen.add_argument("--num-envs", type=int, default=64, help="parallel environments (default: 64)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument("--dense", action="store_true", help="dense reward exp(-distance) instead of sparse")
    gen.add_argument("--dataset-id", default=None, help="Minari id (default: diffrl/pointmaze/<maze>[-dense]-v0)")
    gen.add_argument("--root", default=None, help="Minari datasets root (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(handler=_data_generate)
    download = data_sub.add_parser("download", help="download a public Minari dataset (needs network)")
    download.add_argument("dataset_id", help="e.g. D4RL/pointmaze/umaze-v2")
    download.set_defaults(handler=_data_download)
    info = data_sub.add_parser("info", help="summarise a local Minari dataset")
    info.add_argument("dataset_id")
    info.add_argument("--root", default=None, help="Minari datasets root")
    info.set_defaults(handler=_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
