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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
