"""Flattening of dict observations, in the one order used by datasets and environments alike.

Goal-conditioned Minari datasets (PointMaze, AntMaze) store observations as a dict
``{"observation", "achieved_goal", "desired_goal"}``; diffrl flattens them as
``[observation, achieved_goal, desired_goal]`` along the last axis, and every environment emits that layout.
A goal may itself be a dict of arrays (FrankaKitchen's per-task goals, ``{"kettle": [7], "microwave": [1],
...}``): its entries are concatenated in sorted key order, the order of its ``gymnasium.spaces.Dict``.
"""

from __future__ import annotations

from typing import Mapping

import gymnasium as gym
import numpy as np

DICT_OBSERVATION_KEYS = ("observation", "achieved_goal", "desired_goal")


def flatten_observation(obs, xp=np):
    """Concatenate a dict observation in :data:`DICT_OBSERVATION_KEYS` order (a dict-valued goal in sorted key
    order); arrays pass through unchanged."""
    if not isinstance(obs, Mapping):
        return obs
    missing = [k for k in DICT_OBSERVATION_KEYS if k not in obs]
    extra = sorted(set(obs) - set(DICT_OBSERVATION_KEYS))
    if missing or extra:
        raise ValueError(
            f"dict observation must have exactly the keys {DICT_OBSERVATION_KEYS}; "
            f"missing {missing}, unexpected {extra}"
        )
    return xp.concatenate([_flat_entry(obs[k], xp) for k in DICT_OBSERVATION_KEYS], axis=-1)


def _flat_entry(value, xp):
    if isinstance(value, Mapping):
        return xp.concatenate([xp.asarray(value[k]) for k in sorted(value)], axis=-1)
    return xp.asarray(value)


def flat_size(space) -> int:
    """Length of a 1-D ``Box``, or of a ``Dict`` of 1-D Boxes flattened as :func:`flatten_observation` does."""
    if isinstance(space, gym.spaces.Dict):
        return sum(flat_size(sub) for sub in space.spaces.values())
    return int(space.shape[0])


def observation_slices(sizes: Mapping[str, int]) -> dict[str, slice]:
    """Where each dict key lives in the flat vector, e.g. ``{"observation": slice(0, 4), ...}``."""
    out, start = {}, 0
    for key in DICT_OBSERVATION_KEYS:
        out[key] = slice(start, start + int(sizes[key]))
        start += int(sizes[key])
    return out
