"""Env ids and Minari specs to MJX envs, and the gymnasium fallback evaluator cross-checked against MJX."""

import gymnasium as gym
import jax
import numpy as np
import pytest

from diffrl.data import generate as gen
from diffrl.envs.gym_fallback import evaluate_gym
from diffrl.envs.pointmaze import PointMaze
from diffrl.envs.registry import NoMJXPortError, make_env


def test_make_env_from_ids_and_specs():
    env = make_env("PointMaze_MediumDense-v3")
    assert env.reward_type == "dense" and env.max_episode_steps == 600 and env.name == "PointMaze_MediumDense-v3"
    eval_map = PointMaze("umaze").evaluation_env().layout.maze_map
    spec = gym.envs.registration.EnvSpec(
        "PointMaze_UMaze-v3", entry_point="gymnasium_robotics.envs.maze.point_maze:PointMazeEnv",
        kwargs={"maze_map": eval_map, "continuing_task": True, "reset_target": False}, max_episode_steps=300)
    env = make_env(spec)
    assert env.max_episode_steps == 300 and env.layout.goal_cells.tolist() == [[1, 1]]
    with pytest.raises(NoMJXPortError, match="'FrankaKitchen-v1' has no MJX port.*evaluate_gym"):
        make_env("FrankaKitchen-v1")


def test_fallback_evaluator_reproduces_the_mjx_reference_score():
    """The noise-free expert scored by gymnasium-robotics on the CPU and by MJX agree within their errors."""
    eval_env = PointMaze("umaze").evaluation_env()
    mjx_expert, mjx_random = gen.reference_scores(eval_env, episodes=100)
    expert = gen.WaypointExpert(eval_env.layout)
    n = 25
    expert_act = jax.jit(jax.vmap(expert.act))

    def init(obs):
        return jax.vmap(expert.initial_state)(np.arange(n))

    def act(state, obs, t):
        return expert_act(state, obs, jax.random.split(jax.random.PRNGKey(t), n))

    spec = gym.envs.registration.EnvSpec(
        "PointMaze_UMaze-v3", entry_point="gymnasium_robotics.envs.maze.point_maze:PointMazeEnv",
        kwargs={"maze_map": eval_env.layout.maze_map, "continuing_task": True, "reset_target": False},
        max_episode_steps=300)
    result = evaluate_gym(spec, init, act, episodes=100, num_envs=n, seed=123)
    assert result["returns"].shape == (100,) and np.all(result["lengths"] == 300)
    stderr = np.hypot(result["returns"].std(), mjx_expert.std()) / 10
    assert abs(result["returns"].mean() - mjx_expert.mean()) < 3 * stderr + 5
    assert result["returns"].mean() > 150 > 40 > mjx_random.mean()
    assert result["successes"].mean() > 0.9
