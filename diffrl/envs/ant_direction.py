"""The directional ant task that AntMaze's low-level expert is trained on, as a gymnasium env
(``diffrl/AntDirection-v4``).

OGBench's recipe (``ogbench/online_locomotion/wrappers.py: GymXYWrapper``, ``data_gen_scripts/commands.sh``:
``online-ant-xy-v0``, 400k SAC steps): the policy sees the ant's observation and a unit direction ``z``, is
rewarded for the torso's motion along it, and ``z`` is drawn uniformly on the circle at reset and every 100 steps.
OGBench rewards the displacement ``(xy' - xy) . z``; here it is divided by the step's duration (0.05 s), the
velocity along ``z``, the scale of ``Ant-v4``'s own forward reward. SAC's fixed entropy target makes the reward
scale matter: at displacement scale (about 0.05 per step at 1 m/s) our SAC, then at SB3's settings, had not started to
walk after 90k steps (evaluation return -0.3), its temperature down to 3e-4; the expert now trains at OGBench's SAC
settings (:data:`diffrl.experts.sac.OGBENCH_SAC`), with which the displacement scale was not tried. Driven by a
maze's waypoint controller (``z`` pointing at the next waypoint) it walks the maze
(:mod:`diffrl.experts.antmaze_data`).

The ant is the one gymnasium-robotics' ``AntMaze_*-v4`` simulates: gymnasium's ``Ant-v4`` (``assets/ant.xml``,
frame skip 5, unhealthy outside ``z in [0.2, 1.0]``, which ends the episode) with its reset noise 0.1; its
observation ``[qpos[2:], qvel]`` (27 entries) is the ``observation`` entry of AntMaze's dict. OGBench's own ant
differs (joint ranges narrowed, 10 Hz control); this one is AntMaze's, so that the policy transfers to it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v4 import AntEnv

ENV_ID = "diffrl/AntDirection-v4"
RESAMPLE_EVERY = 100  # GymXYWrapper(resample_interval=100) for the ant
MAX_EPISODE_STEPS = 1000  # online-ant-v0's registration


class AntDirectionEnv(gym.Env):
    """Ant-v4 with a direction input ``z`` (observation ``[qpos[2:], qvel, z]``) and reward ``(xy' - xy) . z / dt``."""

    metadata = {"render_modes": []}

    def __init__(self, resample_every: int = RESAMPLE_EVERY):
        self.ant = AntEnv()
        self.resample_every = resample_every
        self.action_space = self.ant.action_space
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.ant.observation_space.shape[0] + 2,), np.float64)
        self.direction = np.zeros(2)
        self.steps = 0

    def _draw_direction(self) -> np.ndarray:
        z = self.np_random.standard_normal(2)
        return z / np.linalg.norm(z)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        obs, info = self.ant.reset(seed=seed)
        self.direction, self.steps = self._draw_direction(), 0
        return np.concatenate([obs, self.direction]), info

    def step(self, action):
        before = self.ant.data.qpos[:2].copy()
        obs, _, terminated, truncated, info = self.ant.step(action)
        reward = float((self.ant.data.qpos[:2] - before) @ self.direction / self.ant.dt)
        info = {"direction": self.direction.copy()}
        self.steps += 1
        if self.steps % self.resample_every == 0:
            self.direction = self._draw_direction()
        return np.concatenate([obs, self.direction]), reward, terminated, truncated, info

    def close(self):
        self.ant.close()


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=AntDirectionEnv, max_episode_steps=MAX_EPISODE_STEPS)
