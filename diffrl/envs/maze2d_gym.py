"""D4RL's ``maze2d-*-v1`` evaluation env as a gymnasium env, for the CPU and for ``gym.make`` of a dataset's spec.

gymnasium-robotics' ``PointMazeEnv`` on the single-goal evaluation map, with what :data:`MAZE2D_V1` changes
(``d4rl/pointmaze/maze_model.py``): the fixed target at the goal cell's point, resets uniform over every free
cell plus ``U(-0.1, 0.1)`` and ``N(0, 0.1^2)`` velocity, goal radius 0.5 for the reward and ``success``. Its
MJX twin is ``PointMaze(..., protocol=MAZE2D_V1)`` (:meth:`diffrl.envs.pointmaze.PointMaze.evaluation_env`).
"""

from __future__ import annotations

import numpy as np

from diffrl.envs.pointmaze import MAZE2D_V1, EVAL_GOAL_CELLS, MazeLayout, evaluation_map
from diffrl.envs.third_party import import_gymnasium_robotics_quietly, removing_maze_xml_files

import_gymnasium_robotics_quietly()  # before gymnasium_robotics' own modules: its import notice is not for us
from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv  # noqa: E402


class Maze2DEnv(PointMazeEnv):
    """``Maze2DEnv("umaze" | "medium" | "large", reward_type="sparse")``; continuing, the goal never re-drawn."""

    def __init__(self, maze: str = "umaze", reward_type: str = "sparse", render_mode: str | None = None, **kwargs):
        with removing_maze_xml_files():
            super().__init__(maze_map=evaluation_map(maze), render_mode=render_mode, reward_type=reward_type,
                             continuing_task=True, reset_target=False, **kwargs)
        layout = MazeLayout(evaluation_map(maze))
        offset = np.asarray(MAZE2D_V1.cell_offset)
        self._target = layout.cell_to_xy(EVAL_GOAL_CELLS[maze]) + offset
        self._reset_points = layout.cell_to_xy(np.argwhere(layout.free)) + offset

    def reset(self, *, seed: int | None = None, **kwargs):
        super().reset(seed=seed, **kwargs)
        self.goal = self._target.copy()
        self.update_target_site_pos()
        point = self._reset_points[self.np_random.integers(len(self._reset_points))]
        noise = MAZE2D_V1.position_noise
        qpos = point + self.np_random.uniform(-noise, noise, 2)
        qvel = MAZE2D_V1.velocity_noise * self.np_random.standard_normal(2)
        self.point_env.set_state(qpos, qvel)
        obs = self._get_obs(self.point_env._get_obs()[0])
        return obs, {"success": self._reached(obs["achieved_goal"])}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["success"] = self._reached(obs["achieved_goal"])
        return obs, reward, terminated, truncated, info

    def compute_reward(self, achieved_goal, desired_goal, info) -> float:
        distance = np.linalg.norm(achieved_goal - desired_goal, axis=-1)
        if self.reward_type == "dense":
            return np.exp(-distance)
        return 1.0 * (distance <= MAZE2D_V1.goal_radius)

    def _reached(self, achieved_goal) -> bool:
        return bool(np.linalg.norm(achieved_goal - self.goal) <= MAZE2D_V1.goal_radius)
