"""``diffrl evaluate``: load a trained method, roll out N episodes, score, draw, summarise.

An :class:`Evaluator` builds the environment and the policy once and compiles the whole rollout once, so the
periodic evaluation during training and repeated evaluations reuse one program. Environments with an MJX port
run as one jitted ``lax.scan``; the others fall back to gymnasium environments on the CPU, with the policy's
``init``/``act`` jitted, and say so in one line. An evaluation logs one line when it starts and one with its
duration when it ends; its figure (the MJX env's picture, also of the gymnasium evaluator's recorded episodes) is
titled with the checkpoint step and the score.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import gymnasium as gym
import jax
import numpy as np

from diffrl.agents.base import Method
from diffrl.envs.base import Env
from diffrl.envs.gym_fallback import evaluate_gym
from diffrl.envs.registry import LOCOMOTION_IDS, has_mjx_port, make_env, slower_than_mujoco_c_on_cpu
from diffrl.eval.plots import save_figure, set_figure_title
from diffrl.eval.rollout import make_rollout, score_summary
from diffrl.files import write_atomically
from diffrl.train.pipeline import load_trained
from diffrl.train.sharding import batch_sharded, make_mesh, put_replicated

logger = logging.getLogger(__name__)
GYM_FALLBACK_ENVS = 10  # parallel gymnasium environments of the CPU fallback
EVAL_BACKENDS = ("auto", "mjx", "mjx-warp", "gym")


def eval_env_spec(method: Method):
    """The gymnasium spec to evaluate in: the dataset's evaluation spec (its collection spec when it has none);
    with ``eval.multi_goal`` (Diffuser's Multi2D) the data map instead, whose every reset draws a new goal, under
    the evaluation env's time limit."""
    info = method.info
    spec_json = info.eval_env_spec or info.env_spec
    if spec_json is None:
        raise ValueError(f"dataset {info.dataset_id} records no environment to evaluate in")
    spec = gym.envs.registration.EnvSpec.from_json(spec_json)
    if not method.config.eval.multi_goal:
        return spec, {}
    if info.env_spec is None or not spec.id.startswith("PointMaze"):
        raise ValueError("eval.multi_goal needs a PointMaze dataset")
    data_spec = gym.envs.registration.EnvSpec.from_json(info.env_spec)
    return data_spec, {"reset_target": False, "continuing_task": True,
                       "max_episode_steps": spec.max_episode_steps}


def choose_backend(spec, backend: str = "auto", num_envs: int = GYM_FALLBACK_ENVS) -> str:
    """``"mjx"`` (parallel MJX envs, one compiled rollout), ``"mjx-warp"`` (the same with MJX's Warp implementation,
    for the locomotion envs; asked for, never chosen by ``auto``) or ``"gym"`` (gymnasium envs, MuJoCo C on the CPU).

    ``auto`` takes gymnasium for an env with no MJX port, and for the locomotion envs and AntMaze when JAX runs on
    the CPU, where MJX is slower than MuJoCo C (MJX Hopper: 812 steps/s with 256 envs, one gymnasium Hopper: 4,547;
    MJX AntMaze 72 steps/s with 16 envs); the choice and its reason are logged in one line.
    """
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(EVAL_BACKENDS)}")
    if not has_mjx_port(spec):
        if backend in ("mjx", "mjx-warp"):
            make_env(spec)  # raises NoMJXPortError, naming the ported envs
        logger.info("%s has no MJX port: evaluating in %d gymnasium environments on the CPU", spec.id, num_envs)
        return "gym"
    if backend == "mjx-warp" and spec.id not in LOCOMOTION_IDS:
        raise ValueError(f"the mjx-warp backend is offered for {', '.join(LOCOMOTION_IDS)}, not {spec.id}; use mjx "
                         "or gym")
    if backend == "auto" and slower_than_mujoco_c_on_cpu(spec) and jax.default_backend() == "cpu":
        logger.info("%s: evaluating in %d gymnasium environments (MuJoCo C), faster than MJX on a CPU", spec.id,
                    num_envs)
        return "gym"
    return "mjx" if backend == "auto" else backend


class Evaluator:
    """``evaluator(params) -> {"summary", "rollout", "figure"}`` for one method, ``episodes`` and ``seed``; with
    ``progress`` the gymnasium evaluator shows a progress bar (an MJX rollout is one compiled call)."""

    def __init__(self, method: Method, *, episodes: int | None = None, seed: int | None = None,
                 backend: str = "auto", progress: bool = False):
        ec = method.config.eval
        self.method, self.episodes, self.progress = method, episodes or ec.episodes, progress
        self.seed = ec.seed if seed is None else seed
        self.policy = method.policy()
        spec, kwargs = eval_env_spec(method)
        self.spec, self.spec_kwargs = spec, kwargs
        self.env, self.mesh = None, None
        self.gym_envs = min(GYM_FALLBACK_ENVS, self.episodes)
        self.backend = choose_backend(spec, backend, self.gym_envs)
        if self.backend == "mjx":
            self.env = make_env(spec, **kwargs)
            self.mesh = episode_mesh(self.episodes)
        elif self.backend == "gym":  # the policy's batch over the envs stepped in lockstep is split over the devices
            self.mesh = episode_mesh(self.gym_envs)
        elif self.backend == "mjx-warp":  # one device: MJX Warp's contact buffer is shared by all the episodes
            self.env = make_env(spec, **kwargs, impl="warp", parallel_envs=self.episodes)
        if self.env is not None:
            self._rollout = make_rollout(self.env, self.policy, self.episodes, self.env.max_episode_steps, self.mesh)
        else:
            self._init, self._act = jax.jit(self.policy.init), jax.jit(self.policy.act)

    @property
    def env_name(self) -> str:
        return self.env.name if self.env is not None else self.spec.id

    def __call__(self, params, step: int | None = None) -> dict:
        """Evaluate ``params``; ``step`` (the checkpoint's training step) goes into the figure's title."""
        max_steps = self.env.max_episode_steps if self.env is not None else self.spec.max_episode_steps
        devices = f" over {self.mesh.size} devices" if self.mesh is not None else ""
        warp = " (MJX's Warp implementation)" if self.backend == "mjx-warp" else ""
        where = (f"parallel MJX envs{devices}{warp} (compiling the rollout on first use)" if self.env is not None
                 else f"{self.gym_envs} gymnasium environments on the CPU, the policy{devices or ' on one device'}")
        logger.info("evaluating %d episodes of %s steps in %s ...", self.episodes, max_steps, where)
        started = time.perf_counter()
        rng = jax.random.PRNGKey(self.seed)
        params = put_replicated(params, self.mesh) if self.mesh is not None else params
        out = self._gym_rollout(params, rng) if self.env is None else jax.device_get(self._rollout(params, rng))
        seconds = time.perf_counter() - started
        logger.info("evaluated %d episodes in %.1f s", self.episodes, seconds)
        info = self.method.info
        has_success = self.env.reports_success if self.env is not None else out["first_hit"] is not None
        summary = score_summary(out["returns"], out["first_hit"] if has_success else None, info.ref_min_score,
                                info.ref_max_score, max_steps)
        summary.update(dataset_id=info.dataset_id, env=self.env_name, backend=self.backend,
                       multi_goal=bool(self.method.config.eval.multi_goal), seconds=round(seconds, 3),
                       max_episode_steps=max_steps, episode_returns=np.asarray(out["returns"]).tolist(),
                       episode_lengths=np.asarray(out["lengths"]).tolist())
        figure = None
        if self.picture_env is not None:
            figure = rollout_figure(self.picture_env, out, summary, step, self.method.config.eval.plot_episodes)
        return {"summary": summary, "rollout": out, "figure": figure}

    @functools.cached_property
    def picture_env(self) -> Env | None:
        """The env whose picture the figure is: the MJX one (also for the gymnasium evaluator of an env that has an
        MJX port: it draws the same flat observations); ``None`` for an env with no port."""
        if self.env is not None or not has_mjx_port(self.spec):
            return self.env
        return make_env(self.spec, **self.spec_kwargs)

    def _gym_rollout(self, params, rng) -> dict:
        """The gymnasium evaluator's episodes in :func:`diffrl.eval.rollout.make_rollout`'s layout; each round's
        first plans (the states a planner intends to visit) are kept to draw, as the MJX rollout keeps them."""
        rng_init, rng_act = jax.random.split(rng)
        plans = []
        # with a mesh the observations arrive split over its devices; XLA's partitioner carries the split through
        # the policy (its state included), as in the MJX rollout
        place = (lambda obs: obs) if self.mesh is None else functools.partial(jax.device_put,
                                                                              device=batch_sharded(self.mesh))

        def init(obs):
            state = self._init(params, rng_init, place(obs))
            plans.append(self.policy.planned_states(state))
            return state

        def act(state, obs, t):
            return self._act(params, state, place(obs), t, jax.random.fold_in(rng_act, t))

        result = evaluate_gym(self.spec, init, act, episodes=self.episodes, num_envs=self.gym_envs, seed=self.seed,
                              record=True, progress=self.progress, **self.spec_kwargs)
        success = result["successes"]
        out = {"returns": result["returns"], "first_hit": result["first_hits"], "lengths": result["lengths"],
               "success": np.zeros(self.episodes, bool) if success is None else success,
               "observations": result["observations"], "valid": result["valid"]}
        if plans[0] is not None:
            out["planned_states"] = np.concatenate(jax.device_get(plans))[:self.episodes]
        return out


def episode_mesh(episodes: int):
    """A mesh over this process's devices to split ``episodes`` (MJX envs, or the gymnasium envs stepped together)
    over (several GPUs, or N CPU devices with ``JAX_NUM_CPU_DEVICES=N``); ``None`` with one device, or when the
    devices do not divide the episodes, which is then logged."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return None
    if episodes % len(devices):
        logger.info("%d episodes do not split evenly over %d devices: evaluating on one device", episodes,
                    len(devices))
        return None
    return make_mesh(devices)


def rollout_figure(env: Env, out: dict, summary: dict, step: int | None, episodes: int):
    """The env's picture of the first ``episodes`` episodes of a rollout (a panel each, titled with its return),
    titled with the run (:func:`describe_run`) and its scores (:func:`describe_scores`); ``None`` for an env with
    no picture."""
    n = min(episodes, len(out["returns"]))
    titles = [f"return {r:.0f}" + (" (success)" if s else "") for r, s in zip(out["returns"][:n], out["success"][:n])]
    planned = out.get("planned_states")
    figure = env.draw_episodes(out["observations"][:n], out["valid"][:n], None if planned is None else planned[:n],
                               titles)
    if figure is not None:
        set_figure_title(figure, f"{describe_run(summary, step)}\n{describe_scores(summary)}")
    return figure


def evaluate_checkpoint(workdir, *, step: int | None = None, episodes: int | None = None, seed: int | None = None,
                        overrides: list[str] = (), json_path=None, plot_path=None, backend: str = "auto",
                        progress: bool = False) -> dict:
    """Evaluate the trained method of ``workdir``; write the JSON summary and the plot when paths are given;
    ``progress`` shows the gymnasium evaluator's progress bar."""
    method, params, config, step = load_trained(workdir, step, overrides)
    if episodes is not None and episodes < 1:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    result = Evaluator(method, episodes=episodes, seed=seed, backend=backend, progress=progress)(params, step)
    summary = {**result["summary"], "checkpoint_step": step, "method": config.method, "config": config.name,
               "device": jax.devices()[0].platform}
    if plot_path is not None and result["figure"] is not None:
        summary["plot"] = str(save_figure(result["figure"], plot_path))
    elif plot_path is not None:
        logger.info("no plot written to %s: %s has no picture", plot_path, summary["env"])
    if json_path is not None:
        write_atomically(json_path, json.dumps(summary, indent=2, default=_json_default).encode())
    return summary


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_summary(summary: dict) -> str:
    """One line: what was evaluated and its scores."""
    return f"{describe_run(summary, summary['checkpoint_step'])}: {describe_scores(summary)}"


def describe_run(summary: dict, step: int | None) -> str:
    """``dataset (env), step S, N episodes`` (no step when ``step`` is ``None``)."""
    parts = [f"{summary['dataset_id']} ({summary['env']})"]
    if step is not None:
        parts.append(f"step {step}")
    parts.append(f"{summary['episodes']} episodes")
    return ", ".join(parts)


def describe_scores(summary: dict) -> str:
    """The normalized score (the return without references) with its standard error, and for goal-reaching envs
    the first-hit score and the success rate."""
    score = summary["normalized_score"]
    line = (f"normalized score {score:.1f} +/- {summary['stderr']:.1f}" if score is not None
            else f"return {summary['return_mean']:.1f} +/- {summary['return_stderr']:.1f}")
    if summary["success_rate"] is not None:
        hit = summary["first_hit_score"]
        line += (f", first-hit score {hit:.1f} +/- {summary['first_hit_stderr']:.1f}, "
                 f"success rate {summary['success_rate']:.2f}")
    return line
