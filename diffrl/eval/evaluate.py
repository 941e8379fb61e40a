"""``diffrl evaluate``: load a checkpoint, roll out N episodes in parallel MJX envs, score, plot, summarise."""

from __future__ import annotations

import json
import time

import gymnasium as gym
import jax
import ml_collections

from diffrl.agents import AGENTS, Agent
from diffrl.config import apply_overrides, config_from_json
from diffrl.envs.pointmaze import PointMaze
from diffrl.envs.registry import make_env
from diffrl.eval.plots import maze_figure, save_figure, write_atomically
from diffrl.eval.rollout import rollout, score_summary
from diffrl.train.checkpoint import CheckpointError, Checkpointer


def make_eval_env(agent: Agent, config: ml_collections.ConfigDict):
    """The dataset's evaluation env; with ``eval.multi_goal`` (Diffuser's Multi2D) the data map instead, whose
    every reset draws a new goal, under the evaluation env's time limit."""
    env = agent.make_eval_env()
    if config.eval.multi_goal:
        if not isinstance(env, PointMaze) or agent.info.env_spec is None:
            raise ValueError("eval.multi_goal needs a PointMaze dataset")
        spec = gym.envs.registration.EnvSpec.from_json(agent.info.env_spec)
        env = make_env(spec, reset_target=False, continuing_task=True, max_episode_steps=env.max_episode_steps)
    return env


def evaluate_agent(agent: Agent, params, config: ml_collections.ConfigDict, *, episodes: int | None = None,
                   seed: int | None = None) -> dict:
    """Roll out ``eval.episodes`` episodes in one jitted call; returns the summary, the rollout and a figure."""
    ec = config.eval
    episodes = episodes or ec.episodes
    env = make_eval_env(agent, config)
    started = time.perf_counter()
    out = jax.device_get(rollout(env, agent.policy(), params, jax.random.PRNGKey(ec.seed if seed is None else seed),
                                 episodes, env.max_episode_steps))
    seconds = time.perf_counter() - started
    has_success = isinstance(env, PointMaze)
    summary = score_summary(out["returns"], out["success"], agent.info.ref_min_score, agent.info.ref_max_score,
                            has_success)
    summary.update(dataset_id=agent.info.dataset_id, env=env.name, max_episode_steps=env.max_episode_steps,
                   multi_goal=bool(ec.multi_goal), seconds=round(seconds, 3))
    figure = None
    if isinstance(env, PointMaze):
        n = min(ec.plot_episodes, episodes)
        titles = [f"return {r:.0f}" + (" (success)" if s else "") for r, s in zip(out["returns"][:n], out["success"][:n])]
        goal_slice = agent.info.slice("desired_goal") if agent.info.observation_slices else slice(-2, None)
        plans = out["plans_xy"][:n] if "plans_xy" in out else None
        figure = maze_figure(env.layout, out["observations"][:n, :, :2], plans=plans,
                             goals=out["observations"][:n, 0, goal_slice], titles=titles, valid=out["valid"][:n],
                             max_panels=n)
    return {"summary": summary, "rollout": out, "figure": figure}


def load_for_evaluation(workdir, step: int | None = None, overrides: list[str] = ()):
    """``(agent, policy params, config, step)`` from the checkpoint of ``workdir`` (latest by default); a
    multi-stage workdir gives its last stage."""
    from diffrl.train.pipeline import final_stage_workdir

    checkpointer = Checkpointer(final_stage_workdir(workdir), create=False)
    step, meta = checkpointer.restore_meta(step)
    try:
        config = config_from_json(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {workdir} step {step} has an unreadable record ({err})") from None
    apply_overrides(config, list(overrides))
    try:
        agent = AGENTS[config.method].from_artifacts(config, meta["artifacts"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {workdir} step {step} has an unreadable record ({err})") from None
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jax.eval_shape(
        lambda rng: {"agent": agent.init(rng), "rng": rng}, jax.random.PRNGKey(0)))
    state = checkpointer.restore_state(step, template)
    checkpointer.close()
    return agent, agent.policy_params(state["agent"]), config, step


def evaluate_checkpoint(workdir, *, step: int | None = None, episodes: int | None = None, seed: int | None = None,
                        overrides: list[str] = (), json_path=None, plot_path=None) -> dict:
    """Evaluate the checkpoint of ``workdir``; write the JSON summary and the plot when paths are given."""
    agent, params, config, step = load_for_evaluation(workdir, step, overrides)
    result = evaluate_agent(agent, params, config, episodes=episodes, seed=seed)
    summary = {**result["summary"], "checkpoint_step": step, "method": config.method, "config": config.name,
               "device": jax.devices()[0].platform}
    if plot_path is not None and result["figure"] is not None:
        summary["plot"] = str(save_figure(result["figure"], plot_path))
    if json_path is not None:
        write_atomically(json_path, json.dumps(summary, indent=2).encode())
    return summary


def format_summary(summary: dict) -> str:
    score = summary["normalized_score"]
    line = (f"{summary['dataset_id']} ({summary['env']}), step {summary['checkpoint_step']}, "
            f"{summary['episodes']} episodes: ")
    line += (f"normalized score {score:.1f} +/- {summary['stderr']:.1f}" if score is not None
             else f"return {summary['return_mean']:.1f} +/- {summary['return_stderr']:.1f}")
    if summary["success_rate"] is not None:
        line += f", success rate {summary['success_rate']:.2f}"
    return line
