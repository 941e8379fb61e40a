"""Step MJX PointMaze and gymnasium-robotics PointMaze side by side; print the largest deviations as JSON.

Run in float64 (JAX_ENABLE_X64=1) so that only modelling differences, not float32 rounding, show.
Usage: python pointmaze_parity.py [--stock-mjx-contacts] [--umaze-only]
"""

import json
import sys

import gymnasium as gym
import gymnasium_robotics
import jax
import numpy as np

from diffrl.envs import pointmaze
from diffrl.spaces import flatten_observation

gym.register_envs(gymnasium_robotics)

if "--stock-mjx-contacts" in sys.argv:  # undo the exact sphere-box contact to show the check catches it
    from mujoco.mjx._src import collision_convex, collision_driver
    from mujoco.mjx._src.types import GeomType

    collision_driver._COLLISION_FUNC[(GeomType.SPHERE, GeomType.BOX)] = collision_convex.sphere_convex

CASES = [
    # maze, gymnasium id, reward type, continuing task, steps
    ("umaze", "PointMaze_UMazeDense-v3", "dense", True, 300),
    ("large", "PointMaze_Large-v3", "sparse", True, 300),
    ("medium", "PointMaze_Medium-v3", "sparse", False, 300),
]
results = {}
for maze, gym_id, reward_type, continuing, steps in CASES[:1] if "--umaze-only" in sys.argv else CASES:
    reference = gym.make(gym_id, continuing_task=continuing, reset_target=False)
    obs, _ = reference.reset(seed=3)
    inner = reference.unwrapped
    env = pointmaze.PointMaze(maze, reward_type=reward_type, continuing_task=continuing)
    state = env.reset_to(inner.point_env.data.qpos.copy(), inner.point_env.data.qvel.copy(), inner.goal.copy(),
                         jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    # piecewise-constant actions beyond the [-1, 1] limits: the point hits walls and the velocity limit
    actions = np.repeat(np.random.default_rng(0).uniform(-1.5, 1.5, (steps // 10, 2)), 10, axis=0)
    worst = {"obs": 0.0, "reward": 0.0, "flags": 0, "steps": 0, "initial_obs": 0.0}
    worst["initial_obs"] = float(np.abs(np.asarray(state.obs) - flatten_observation(obs)).max())
    for action in actions:
        obs, reward, terminated, truncated, info = reference.step(action)
        state = step(state, action)
        worst["obs"] = max(worst["obs"], float(np.abs(np.asarray(state.obs) - flatten_observation(obs)).max()))
        worst["reward"] = max(worst["reward"], abs(float(state.reward) - reward))
        worst["flags"] += int(bool(state.terminated) != terminated) + int(bool(state.info["success"]) != info["success"])
        worst["flags"] += int(bool(state.truncated) != truncated)
        worst["steps"] += 1
        if terminated or truncated:
            break
    results[gym_id] = worst
print(json.dumps(results))
