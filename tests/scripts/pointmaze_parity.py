"""Step MJX PointMaze and gymnasium-robotics PointMaze side by side; print the largest deviations as JSON.

Run in float64 (JAX_ENABLE_X64=1) so that only modelling differences, not float32 rounding, show. The "exact"
runs use diffrl's sphere-box contact; the "stock" run puts MJX's own sphere-convex routine back, to show that
the check detects the margin contacts it drops.
"""

import json

import gymnasium as gym
import gymnasium_robotics
import jax
import numpy as np
from mujoco.mjx._src import collision_convex, collision_driver
from mujoco.mjx._src.types import GeomType

from diffrl.envs import pointmaze
from diffrl.spaces import flatten_observation

gym.register_envs(gymnasium_robotics)

CASES = [
    # maze, gymnasium id, reward type, continuing task, steps
    ("umaze", "PointMaze_UMazeDense-v3", "dense", True, 300),
    ("large", "PointMaze_Large-v3", "sparse", False, 300),
]


def compare(maze, gym_id, reward_type, continuing, steps):
    reference = gym.make(gym_id, continuing_task=continuing, reset_target=False)
    obs, _ = reference.reset(seed=3)
    inner = reference.unwrapped
    env = pointmaze.PointMaze(maze, reward_type=reward_type, continuing_task=continuing)
    state = jax.jit(env.reset_to)(inner.point_env.data.qpos.copy(), inner.point_env.data.qvel.copy(),
                                  inner.goal.copy(), jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    # piecewise-constant actions beyond the [-1, 1] limits: the point hits walls and the velocity limit
    actions = np.repeat(np.random.default_rng(0).uniform(-1.5, 1.5, (steps // 10, 2)), 10, axis=0)
    worst = {"obs": 0.0, "reward": 0.0, "flags": 0, "steps": 0}
    worst["initial_obs"] = float(np.abs(np.asarray(state.obs) - flatten_observation(obs)).max())
    for action in actions:
        obs, reward, terminated, truncated, info = reference.step(action)
        state = step(state, action)
        worst["obs"] = max(worst["obs"], float(np.abs(np.asarray(state.obs) - flatten_observation(obs)).max()))
        worst["reward"] = max(worst["reward"], abs(float(state.reward) - reward))
        worst["flags"] += (int(bool(state.terminated) != terminated)
                           + int(bool(state.info["success"]) != info["success"]))
        worst["flags"] += int(bool(state.truncated) != truncated)
        worst["steps"] += 1
        if terminated or truncated:
            break
    return worst


results = {"exact": {case[1]: compare(*case) for case in CASES}}
collision_driver._COLLISION_FUNC[(GeomType.SPHERE, GeomType.BOX)] = collision_convex.sphere_convex
results["stock"] = {CASES[0][1]: compare(*CASES[0])}
print(json.dumps(results))
