"""From a gymnasium id or a Minari ``EnvSpec`` to the MJX environment that reproduces it."""

from __future__ import annotations

import re

from diffrl.envs.base import Env
from diffrl.envs.pointmaze import (
    GYM_IDS,
    MAX_EPISODE_STEPS,
    MAZE2D_V1,
    MAZE_MAPS,
    POINTMAZE_V3,
    MazeLayout,
    PointMaze,
    evaluation_map,
)

_POINTMAZE_ID = re.compile(r"^PointMaze_(UMaze|Open|Medium|Large)(Dense)?-v3$")
_MAZE2D_ID = re.compile(r"^diffrl/Maze2D_(UMaze|Medium|Large)-v1$")
_ANTMAZE_ID = re.compile(r"^AntMaze_(UMaze|Open|Medium|Large)(_Diverse_GR?)?(Dense)?-(v4|v5)$")
_MAZE_BY_GYM_NAME = {name.removeprefix("PointMaze_"): maze for maze, name in GYM_IDS.items()}
LOCOMOTION_IDS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


class NoMJXPortError(ValueError):
    """The environment has no MJX port; evaluate it with :func:`diffrl.envs.gym_fallback.evaluate_gym`."""


def make_env(env, **overrides) -> Env:
    """The MJX env for a gymnasium id (``"PointMaze_UMaze-v3"``, ``"diffrl/Maze2D_UMaze-v1"``,
    ``"AntMaze_Medium_Diverse_GR-v4"``, ``"Hopper-v5"``) or an ``EnvSpec``.

    A spec's kwargs (maze map, reward type, ``continuing_task``, ``reset_target``; none for the locomotion envs,
    which take gymnasium's defaults) and ``max_episode_steps`` are honoured, so a Minari dataset's ``eval_env_spec``
    gives its evaluation env; ``overrides`` win over both.
    """
    env_id = getattr(env, "id", env)
    kwargs = dict(getattr(env, "kwargs", None) or {})
    max_steps = getattr(env, "max_episode_steps", None)
    pointmaze, maze2d = _POINTMAZE_ID.match(env_id), _MAZE2D_ID.match(env_id)
    if pointmaze or maze2d:
        maze = _MAZE_BY_GYM_NAME[(pointmaze or maze2d).group(1)]
        dense = bool(pointmaze and pointmaze.group(2))
        options = {
            "maze": _maze_of(env_id, kwargs),
            "reward_type": kwargs.get("reward_type", "dense" if dense else "sparse"),
            "continuing_task": kwargs.get("continuing_task", True),
            "reset_target": kwargs.get("reset_target", False),
            "max_episode_steps": max_steps or MAX_EPISODE_STEPS[maze],
            "protocol": POINTMAZE_V3 if pointmaze else MAZE2D_V1,
        }
        options.update(overrides)
        made = PointMaze(**options)
        made.maze_name, made.name = maze, env_id
        return made
    antmaze = _ANTMAZE_ID.match(env_id)
    if antmaze:
        from diffrl.envs.antmaze import AntMaze

        registered = _gymnasium_robotics_spec(env_id)
        options = {
            "maze": _maze_of(env_id, kwargs),
            "reward_type": kwargs.get("reward_type", "dense" if antmaze.group(3) else "sparse"),
            "continuing_task": kwargs.get("continuing_task", True),
            "reset_target": kwargs.get("reset_target", False),
            "max_episode_steps": max_steps or registered.max_episode_steps,
            "version": antmaze.group(4),
        }
        options.update(overrides)
        made = AntMaze(**options)
        if made.maze_name == "custom":  # a map of other resets and goals (an evaluation map) keeps the id's maze
            made.maze_name = _MAZE_BY_GYM_NAME[f"{antmaze.group(1)}"]
        made.name = env_id
        return made
    if env_id in LOCOMOTION_IDS:
        from diffrl.envs.locomotion import make_locomotion_env

        return make_locomotion_env(env_id, **{**({"max_episode_steps": max_steps} if max_steps else {}), **overrides})
    raise NoMJXPortError(
        f"environment {env_id!r} has no MJX port (ported: PointMaze_*-v3, diffrl/Maze2D_*-v1, AntMaze_*-v4 / -v5, "
        f"{', '.join(LOCOMOTION_IDS)}); "
        "evaluate it on the CPU with diffrl.envs.gym_fallback.evaluate_gym"
    )


def maze_layout(env) -> MazeLayout:
    """The cells of a maze env (an id or ``EnvSpec``: its map, reset and goal cells, cell size) as :func:`make_env`
    lays them out, without building the env."""
    env_id = getattr(env, "id", env)
    maze = _maze_of(env_id, dict(getattr(env, "kwargs", None) or {}))
    maze_map = MAZE_MAPS[maze] if isinstance(maze, str) else maze
    if _ANTMAZE_ID.match(env_id):
        from diffrl.envs.antmaze import MAZE_SIZE_SCALING

        return MazeLayout(maze_map, MAZE_SIZE_SCALING)
    return MazeLayout(maze_map)


def _maze_of(env_id: str, kwargs: dict):
    """The maze :func:`make_env` lays out for ``env_id`` and its spec's ``kwargs``: a PointMaze's map name or the
    spec's map, a Maze2D's evaluation map (one goal cell), an AntMaze's spec map or gymnasium-robotics' own."""
    pointmaze, maze2d = _POINTMAZE_ID.match(env_id), _MAZE2D_ID.match(env_id)
    if pointmaze:
        return kwargs.get("maze_map", _MAZE_BY_GYM_NAME[pointmaze.group(1)])
    if maze2d:
        return evaluation_map(_MAZE_BY_GYM_NAME[maze2d.group(1)])
    if _ANTMAZE_ID.match(env_id):
        return kwargs.get("maze_map") or _gymnasium_robotics_spec(env_id).kwargs["maze_map"]
    raise ValueError(f"{env_id!r} is not a maze env (PointMaze_*-v3, diffrl/Maze2D_*-v1, AntMaze_*-v4 / -v5)")


def has_mjx_port(env) -> bool:
    """Whether :func:`make_env` can build ``env`` (an id or ``EnvSpec``), without building it."""
    env_id = getattr(env, "id", env)
    mazes = (_POINTMAZE_ID, _MAZE2D_ID, _ANTMAZE_ID)
    return any(pattern.match(env_id) for pattern in mazes) or env_id in LOCOMOTION_IDS


def slower_than_mujoco_c_on_cpu(env) -> bool:
    """Whether the MJX port of ``env`` (an id or ``EnvSpec``) runs slower on a CPU than its gymnasium original: the
    contact-rich bodies (Hopper, HalfCheetah, Walker2d, the ant), not the point mass."""
    env_id = getattr(env, "id", env)
    return env_id in LOCOMOTION_IDS or bool(_ANTMAZE_ID.match(env_id))


def _gymnasium_robotics_spec(env_id: str):
    """gymnasium-robotics' registration of ``env_id`` (its maze map and time limit)."""
    import gymnasium as gym

    from diffrl.envs.third_party import import_gymnasium_robotics_quietly

    gym.register_envs(import_gymnasium_robotics_quietly())
    return gym.spec(env_id)


def protocol_name(env) -> str | None:
    """The maze benchmark protocol an env id or spec follows (``"pointmaze-v3"``, ``"maze2d-v1"``), else ``None``."""
    env_id = getattr(env, "id", env)
    if _MAZE2D_ID.match(env_id):
        return MAZE2D_V1.name
    if _POINTMAZE_ID.match(env_id):
        return POINTMAZE_V3.name
    return None
