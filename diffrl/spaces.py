"""Flattening of dict observations, in the one order used by datasets and environments alike.

Goal-conditioned Minari datasets (PointMaze, AntMaze) store observations as a dict
``{"observation", "achieved_goal", "desired_goal"}``; diffrl flattens them as
``[observation, achieved_goal, desired_goal]`` along the last axis, and every environment emits that layout.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

DICT_OBSERVATION_KEYS = ("observation", "achieved_goal", "desired_goal")


def flatten_observation(obs, xp=np):
    """Concatenate a dict observation in :data:`DICT_OBSERVATION_KEYS` order; arrays pass through unchanged."""
    if not isinstance(obs, Mapping):
        return obs
    missing = [k for k in DICT_OBSERVATION_KEYS if k not in obs]
    extra = sorted(set(obs) - set(DICT_OBSERVATION_KEYS))
    if missing or extra:
        raise ValueError(
            f"dict observation must have exactly the keys {DICT_OBSERVATION_KEYS}; missing {missing}, unexpected {extra}"
        )
    return xp.concatenate([xp.asarray(obs[k]) for k in DICT_OBSERVATION_KEYS], axis=-1)


def observation_slices(sizes: Mapping[str, int]) -> dict[str, slice]:
    """Where each dict key lives in the flat vector, e.g. ``{"observation": slice(0, 4), ...}``."""
    out, start = {}, 0
    for key in DICT_OBSERVATION_KEYS:
        out[key] = slice(start, start + int(sizes[key]))
        start += int(sizes[key])
    return out
