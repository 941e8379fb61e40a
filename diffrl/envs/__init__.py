"""MJX environments with a pure ``reset(rng) -> state`` / ``step(state, action) -> state`` API."""

from diffrl.envs.third_party import import_mjx_quietly

import_mjx_quietly()  # first: every diffrl module that uses MJX is imported through this package

from diffrl.envs.base import Env, EnvState
from diffrl.envs.locomotion import HalfCheetah, Hopper, Walker2d, make_locomotion_env
from diffrl.envs.pointmaze import MAZE_MAPS, PointMaze, make_pointmaze
from diffrl.envs.registry import NoMJXPortError, make_env

__all__ = [
    "Env", "EnvState", "HalfCheetah", "Hopper", "MAZE_MAPS", "NoMJXPortError", "PointMaze", "Walker2d",
    "make_env", "make_locomotion_env", "make_pointmaze",
]
