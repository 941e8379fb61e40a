"""The ``diffrl`` command."""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import traceback

from diffrl.config import ConfigError, split_overrides

OVERRIDES_HELP = ("Any config value can be overridden with --config.KEY=VALUE (e.g. --config.train.batch_size=64, "
                  "--config.seed=1); the value is parsed as the type of the field it replaces.")


class _StderrHandler(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr``, not to the stream it was created with (as
    ``logging.lastResort`` does), so that a replaced ``sys.stderr`` (pytest's capture) receives the messages."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


class _Formatter(logging.Formatter):
    """diffrl's INFO messages (progress and status) as bare lines; anything else as ``LEVEL:logger:message``."""

    def __init__(self):
        super().__init__(logging.BASIC_FORMAT)
        self._bare = logging.Formatter("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and record.name.partition(".")[0] == "diffrl":
            return self._bare.format(record)
        return super().format(record)


def _configure_logging() -> None:
    """Show the library's log (the ``diffrl`` loggers from INFO up) on stderr, once per process.

    Unless the program calling :func:`main` configured logging itself, the root logger gets one stderr handler; it
    stays at WARNING, so orbax, absl and jax keep their INFO messages to themselves (and absl, which calls
    ``logging.basicConfig()`` when it first logs with no root handler, adds no second one)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
    logger = logging.getLogger("diffrl")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def _fail(command: str, err: Exception) -> int:
    print(f"diffrl {command}: {err}", file=sys.stderr)
    return 2


def _raised_by_diffrl(err: BaseException) -> bool:
    """Whether ``err`` was raised in diffrl's own code (a message written for the user) rather than deeper down."""
    package = pathlib.Path(__file__).resolve().parent
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and pathlib.Path(frames[-1].filename).resolve().is_relative_to(package)


def _latest_checkpoints(workdir: pathlib.Path) -> str:
    """A sentence saying that the checkpoints under ``workdir`` are kept, naming the newest one's stage and step
    (or that none was written)."""
    found = [(int(step.name), step.parent.parent.name) for step in workdir.glob("**/checkpoints/*")
             if step.name.isdigit()]
    if not found:
        return f"no checkpoint was written in {workdir}"
    step, stage = max(found)
    return f"the checkpoints in {workdir} are kept (the latest: stage {stage}, step {step}); run the same command " \
           "to resume"


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command leaves behind, in one sentence."""
    if args.command in ("train", "demo"):
        return _latest_checkpoints(pathlib.Path(args.workdir))
    if args.command == "data" and args.data_command in ("generate", "download"):
        from diffrl.experts.locomotion_data import ENV_IDS

        locomotion = getattr(args, "env", "").partition("-")[0] in (*ENV_IDS, "antmaze")
        return "no dataset was written" + (" (its SAC runs resume from their last checkpoint)" if locomotion else "")
    return "nothing was written" if args.command == "evaluate" else "stopped"


def _run(args: argparse.Namespace) -> int:
    """The one error boundary of the CLI: diffrl's own errors and file-system errors become one line on stderr
    (exit 2), Ctrl-C one line saying what was kept (exit 130); anything else keeps its traceback, followed by a
    line asking for a bug report (exit 1)."""
    command = args.command + (f" {args.data_command}" if args.command == "data" else "")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"\ndiffrl {command}: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130
    except OSError as err:
        return _fail(command, err)
    except Exception as err:
        if isinstance(err, ValueError) and _raised_by_diffrl(err):
            return _fail(command, err)
        traceback.print_exc()
        print(f"diffrl {command}: unexpected {type(err).__name__}; this is a bug in diffrl or in how it met your "
              "setup: please report it with the traceback above", file=sys.stderr)
        return 1


def _train(args: argparse.Namespace) -> int:
    if args.distributed:
        from diffrl.train.sharding import initialize_distributed

        initialize_distributed()
    from diffrl.config import apply_overrides, load_config
    from diffrl.eval.evaluate import Evaluator
    from diffrl.train.pipeline import train

    config = apply_overrides(load_config(args.config), args.overrides)
    summaries = train(config, args.workdir, stages=args.stage, progress=not args.no_progress,
                      make_evaluator=Evaluator if config.eval.every else None)
    for stage, summary in summaries.items():
        if summary.get("skipped"):
            status = "already finished"
        else:
            how = "stopped by SIGTERM at" if summary["stopped_by_sigterm"] else "finished at"
            status = (f"{how} step {summary['step']} (resumed from {summary['start_step']}) "
                      f"on {summary['devices']} device(s)")
        print(f"{config.name} stage {stage}: {status}; checkpoints and TensorBoard logs in {summary['workdir']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from diffrl.eval.evaluate import evaluate_checkpoint, format_summary

    plot = args.plot
    if plot is None and not args.no_plot:
        plot = pathlib.Path(args.workdir) / "evaluation" / "rollouts.png"
    summary = evaluate_checkpoint(args.workdir, step=args.step, episodes=args.episodes, seed=args.seed,
                                  overrides=args.overrides, json_path=args.json, plot_path=plot,
                                  backend=args.backend, progress=not args.no_progress)
    print(format_summary(summary))
    if "plot" in summary:
        print(f"plot: {summary['plot']}")
    if args.json:
        print(f"summary: {args.json}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from diffrl.demo import run_demo
    from diffrl.eval.evaluate import format_summary

    print("diffrl demo: generate a small PointMaze U-Maze dataset in MJX, train Diffuser briefly, evaluate it in\n"
          "parallel MJX environments, print the normalized score and write the plot.")
    summary = run_demo(args.workdir, overrides=args.overrides, progress=not args.no_progress)
    print(format_summary(summary))
    print(f"plot: {summary['plot']}\nsummary: {pathlib.Path(args.workdir) / 'summary.json'}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import importlib.resources
    import runpy

    # benchmarks/ installs as the package diffrl.benchmarks (pyproject.toml maps it; an editable install maps it to
    # the checkout's folder), so a benchmark runs as its module wherever diffrl is installed.
    try:
        folder = importlib.resources.files("diffrl.benchmarks")
    except ModuleNotFoundError:
        return _fail("benchmark", ValueError("the package diffrl.benchmarks is not installed; reinstall diffrl "
                                             "(pip install . or pip install -e .)"))
    available = sorted(entry.name[:-3] for entry in folder.iterdir()
                       if entry.name.endswith(".py") and not entry.name.startswith("_") and entry.name != "common.py")
    name = args.name.replace("-", "_")  # compare-pytorch runs compare_pytorch.py
    if name not in available:
        return _fail("benchmark", ValueError(f"no benchmark {args.name!r}; choose one of {', '.join(available)}"))
    module = f"diffrl.benchmarks.{name}"
    sys.argv = [sys.argv[0], *args.args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)  # sys.argv[0] is the module's file meanwhile
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _data_generate(args: argparse.Namespace) -> int:
    from diffrl.data.generate import D4RL_MAZE2D_REF_SCORES, DEFAULT_STEPS, generate_maze_dataset
    from diffrl.experts.antmaze_data import DATASETS as ANTMAZE_DATASETS
    from diffrl.experts.locomotion_data import ENV_IDS, LEVELS, generate_locomotion_dataset

    protocol, _, maze = args.env.partition("-")
    locomotion = [f"{e}-{level}" for e in ENV_IDS for level in LEVELS]
    choices = ([f"pointmaze-{m}" for m in DEFAULT_STEPS] + [f"maze2d-{m}" for m in D4RL_MAZE2D_REF_SCORES] + locomotion
               + list(ANTMAZE_DATASETS))
    if args.env not in choices:
        raise ValueError(f"unknown environment {args.env!r}; choose one of {', '.join(choices)}")
    if args.env in ANTMAZE_DATASETS:
        from diffrl.experts.antmaze_data import DEFAULT_EXPERT_STEPS, generate_antmaze_dataset

        summary = generate_antmaze_dataset(
            args.env, args.steps, expert_steps=args.expert_steps or DEFAULT_EXPERT_STEPS, seed=args.seed,
            num_envs=args.num_envs or 10, dataset_id=args.dataset_id, root=args.root, experts_root=args.experts,
            overwrite=args.overwrite, progress=not args.no_progress)
        print(f"ant SAC: {summary['expert_steps']} steps; episodes reaching the goal: {summary['success_rate']:.2f}")
    elif args.env in locomotion:
        summary = generate_locomotion_dataset(
            args.env, args.steps, expert_steps=args.expert_steps or 1_000_000, seed=args.seed,
            num_envs=args.num_envs or 10,
            dataset_id=args.dataset_id, root=args.root, experts_root=args.experts, overwrite=args.overwrite,
            progress=not args.no_progress)
        print(f"expert SAC: {summary['recipe']['expert_steps']} steps, evaluation return "
              f"{summary['expert_eval_return']:.1f}; dataset mean return {summary['mean_return']:.1f}")
    else:
        summary = generate_maze_dataset(
            maze, args.steps, reward_type="dense" if args.dense else "sparse", num_envs=args.num_envs or 64,
            seed=args.seed, dataset_id=args.dataset_id, root=args.root, overwrite=args.overwrite,
            progress=not args.no_progress, protocol=protocol,
        )
    print(f"wrote {summary['dataset_id']}: {summary['steps']} steps in {summary['episodes']} episodes, "
          f"ref_min_score {summary['ref_min_score']:.2f}, ref_max_score {summary['ref_max_score']:.2f}\n"
          f"  at {summary['path']}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from diffrl.data import download_dataset

    path = download_dataset(args.dataset_id)
    print(f"downloaded {args.dataset_id} to {path}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from diffrl.data import load_dataset
    from diffrl.envs.registry import protocol_name

    data = load_dataset(args.dataset_id, root=args.root)
    lengths = data.episode_lengths
    print(f"{data.dataset_id}: {data.num_steps} steps, {data.num_episodes} episodes "
          f"(length {lengths.min()}..{lengths.max()}, mean {lengths.mean():.1f})")
    slices = data.observation_slices
    print(f"  observation {data.observation_size} dims"
          + (f" {dict((k, (v.start, v.stop)) for k, v in slices.items())}" if slices else "")
          + f", action {data.action_size} dims")
    eval_spec = data.eval_env_spec or data.env_spec
    protocol = protocol_name(eval_spec) if eval_spec is not None else None
    print(f"  env {data.env_spec.id if data.env_spec else None}, evaluated in {eval_spec.id if eval_spec else None}"
          f" (protocol {protocol or 'none'}); ref_min_score {data.ref_min_score}, ref_max_score {data.ref_max_score}")
    return 0


def _count(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffrl", description="Diffusion-based offline RL in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a method on an offline dataset (sharded over all devices)",
                           description="Train the method of a config on its dataset, with the batch sharded over all "
                                       "devices, periodic asynchronous checkpoints (resumed automatically from the "
                                       "workdir; SIGTERM saves and exits) and TensorBoard logs in "
                                       "WORKDIR/<stage>/tensorboard.",
                           epilog=OVERRIDES_HELP)
    train.add_argument("--config", required=True,
                       help="FILE:VARIANT, e.g. configs/diffuser.py:pointmaze-umaze (a bare file name is looked up in "
                            "the bundled configs/)")
    train.add_argument("--workdir", required=True, help="folder for checkpoints and logs; an existing run resumes")
    train.add_argument("--distributed", action="store_true",
                       help="multi-host: call jax.distributed.initialize() first (SLURM/TPU auto-detection or "
                            "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    train.add_argument("--stage", nargs="+", default=None, metavar="STAGE",
                       help="train only these stages (Diffuser: denoiser [value]; BC: policy; LDCQ: vae prior q; LDGC, "
                            "LDCP: vae prior; DIAR: vae prior qv; Diffusion-QL: ql; PlanDQ and its family: conductor "
                            "performer, on Gym conductor value performer; LatentDiffuser: vae prior energy); "
                            "default: all, skipping finished ones. Each stage runs in WORKDIR/<stage>")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint in parallel MJX (or gymnasium) environments",
                              description="Load a checkpoint, roll out the episodes in parallel in MJX in one jitted "
                                          "call, print the normalized score (mean +/- standard error) and success "
                                          "rate, and save a plot of plans and trajectories.",
                              epilog=OVERRIDES_HELP + " Useful ones: --config.eval.multi_goal=true (Multi2D), "
                                     "--config.plan.warm_start_steps=N, --config.plan.replan_every=N.")
    evaluate.add_argument("--workdir", required=True, help="the training run's folder")
    evaluate.add_argument("--step", type=_count(0), default=None, help="checkpoint step (default: the latest)")
    evaluate.add_argument("--episodes", type=_count(1), default=None,
                          help="episodes, all in parallel (default: config, 100)")
    evaluate.add_argument("--seed", type=_count(0), default=None, help="evaluation seed (default: config.eval.seed)")
    evaluate.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON to PATH")
    evaluate.add_argument("--plot", default=None, metavar="PATH",
                          help="PNG of plans and trajectories (default: WORKDIR/evaluation/rollouts.png)")
    evaluate.add_argument("--no-plot", action="store_true", help="do not write the plot")
    evaluate.add_argument("--backend", choices=("auto", "mjx", "mjx-warp", "gym"), default="auto",
                          help="mjx: parallel MJX envs; mjx-warp: the same with MJX's Warp implementation (Hopper, "
                               "HalfCheetah, Walker2d; pip install 'diffrl[warp]'); gym: gymnasium envs on the CPU "
                               "(MuJoCo C); auto (default): gym for envs without an MJX port and for locomotion when "
                               "JAX runs on the CPU")
    evaluate.add_argument("--no-progress", action="store_true",
                          help="hide the progress bar of the gymnasium evaluator (an MJX rollout is one compiled call)")
    evaluate.set_defaults(handler=_evaluate)
    demo = sub.add_parser("demo", help="run the embedded end-to-end demo (a few minutes on a 2-core CPU)",
                          description="Generate a small PointMaze U-Maze dataset (if absent), train Diffuser briefly, "
                                      "evaluate it in parallel MJX environments, print the score, write the plot.",
                          epilog=OVERRIDES_HELP)
    demo.add_argument("--workdir", default="demo_out",
                      help="folder for the dataset, the run, demo.png and summary.json (default: demo_out)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(handler=_demo)

    bench = sub.add_parser("benchmark", help="run a benchmark of benchmarks/ (results in benchmarks/results/)",
                           description="Run benchmarks/NAME.py with its own flags (diffrl benchmark NAME --help "
                                       "documents them): sampler (latency and samples/s of every sampler over batch "
                                       "sizes, horizons and steps), train (steps/s and examples/s of every train step "
                                       "on one and on all devices), envs (MJX env steps/s at 1..4096 parallel envs "
                                       "next to gymnasium), maze_scores (maze scores of every method over seeds), "
                                       "compare-pytorch (the official PyTorch Diffuser beside diffrl, interleaved), "
                                       "conv_in_loop (XLA:CPU's convolution gradients "
                                       "alone and inside a scan), antmaze_expert. "
                                       "Results go to benchmarks/results/<device>.md: the folder of the checkout "
                                       "diffrl is imported from (editable install or PYTHONPATH), else under the "
                                       "current directory ($DIFFRL_BENCHMARK_RESULTS overrides both).")
    bench.add_argument("name", help="sampler | train | envs | maze_scores | compare-pytorch | conv_in_loop | "
                                    "antmaze_expert")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    bench.set_defaults(handler=_benchmark)

    data = sub.add_parser("data", help="generate, download and inspect Minari datasets",
                          description="Offline datasets in Minari format (the local root is $MINARI_DATASETS_PATH "
                                      "or ~/.minari/datasets).")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="generate a maze dataset in MJX or a locomotion dataset with SAC",
                              description="Generate a dataset and write it with Minari. pointmaze-*: Minari's "
                                          "pointmaze-v2 recipe (waypoint expert in parallel MJX envs; episodes end at "
                                          "every reached goal, reference scores measured); maze2d-*: D4RL's maze2d-v1 "
                                          "recipe (one stream per env, rewards against the fixed evaluation target, "
                                          "D4RL's evaluation env and reference scores); hopper-*, halfcheetah-*, "
                                          "walker2d-*: the Minari / D4RL locomotion recipe (a SAC expert trained here "
                                          "and cached, medium = stopped at a third of the expert's return, "
                                          "medium-replay = that run's replay buffer; gymnasium v5 envs); antmaze-*: "
                                          "Minari's AntMaze recipe (a waypoint controller driving a direction-"
                                          "following SAC ant trained here; AntMaze_*-v4 envs).")
    gen.add_argument("env", help="pointmaze-umaze | pointmaze-open | pointmaze-medium | pointmaze-large | "
                                 "maze2d-umaze | maze2d-medium | maze2d-large | {hopper,halfcheetah,walker2d}-"
                                 "{expert,medium,medium-replay} | antmaze-umaze[-diverse] | "
                                 "antmaze-{medium,large}-{play,diverse} | antmaze-ultra-diverse")
    gen.add_argument("--steps", type=_count(1), default=None,
                     help="transitions to generate (default: 1e6 umaze/open and locomotion, 2e6 medium, 4e6 large, "
                          "as D4RL)")
    gen.add_argument("--num-envs", type=_count(1), default=None,
                     help="parallel environments (default: 64 MJX mazes, 10 gymnasium locomotion envs)")
    gen.add_argument("--seed", type=_count(0), default=0, help="random seed (default: 0)")
    gen.add_argument("--expert-steps", type=_count(1), default=None,
                     help="locomotion and antmaze: SAC steps of the expert (default: 1e6 locomotion, D4RL's budget; "
                          "4e5 for the ant, OGBench's); a cached shorter run is resumed")
    gen.add_argument("--experts", default=None,
                     help="locomotion and antmaze: folder of the cached SAC runs (default: ~/.cache/diffrl/experts)")
    gen.add_argument("--dense", action="store_true", help="dense reward exp(-distance) instead of sparse")
    gen.add_argument("--dataset-id", default=None,
                     help="Minari id (default: diffrl/pointmaze/<maze>[-dense]-v0, diffrl/maze2d/<maze>-v1, "
                          "diffrl/<env>/<level>-v0, diffrl/antmaze/<maze>[-<kind>]-v1)")
    gen.add_argument("--root", default=None,
                     help="Minari datasets root (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv, overrides = split_overrides(argv)
    except ConfigError as err:
        return _fail(argv[0] if argv else "", err)
    args = build_parser().parse_args(argv)
    if overrides and args.command not in ("train", "evaluate", "demo"):
        return _fail(args.command, ConfigError("--config.KEY=VALUE overrides apply to train, evaluate and demo only"))
    args.overrides = overrides
    _configure_logging()
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
