"""MJX environments with a pure ``reset(rng) -> state`` / ``step(state, action) -> state`` API."""

from diffrl.envs.base import Env, EnvState
from diffrl.envs.pointmaze import MAZE_MAPS, PointMaze, make_pointmaze

__all__ = ["Env", "EnvState", "MAZE_MAPS", "PointMaze", "make_pointmaze"]
