"""Evaluation on the gymnasium originals (a vector env on the CPU) for environments with no MJX port.

Kitchen, Adroit and AntMaze datasets can be evaluated this way until they are ported; the MJX environments
can be cross-checked against it. ``diffrl evaluate`` chooses it by itself for an environment with no MJX port.
The policy sees flat observations (dict observations flattened in :data:`diffrl.spaces.DICT_OBSERVATION_KEYS`
order), a batch at a time, as in the MJX rollout.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from diffrl.envs.third_party import import_gymnasium_robotics_quietly, removing_maze_xml_files
from diffrl.spaces import flatten_observation

PolicyInit = Callable[[np.ndarray], Any]  # flat observations [n, d] -> policy state
PolicyAct = Callable[[Any, np.ndarray, int], tuple[np.ndarray, Any]]  # (state, obs, t) -> (actions [n, a], state)


def make_gym_env(env, **kwargs):
    """``gymnasium.make`` for an id or ``EnvSpec``, with the robotics suites registered; a maze env's model file in
    the temp folder is deleted once the env is built."""
    import gymnasium as gym

    try:
        gym.register_envs(import_gymnasium_robotics_quietly())
    except ImportError:
        pass
    with removing_maze_xml_files():
        return gym.make(env, **kwargs)


def evaluate_gym(env, init: PolicyInit, act: PolicyAct, episodes: int = 100, num_envs: int = 10, seed: int = 0,
                 record: bool = False, progress: bool = False, **make_kwargs) -> dict:
    """Roll a batched policy out in ``num_envs`` gymnasium envs stepped in lockstep, round after round, until
    ``episodes`` episodes have finished (episode ``k`` resets with seed ``seed + k``).

    Each round calls ``init`` on the ``num_envs`` first observations and ``act`` at every step (a finished env
    keeps its last observation and its actions are ignored), so a stateful policy (a plan, a chosen skill) starts
    afresh with each episode. Returns per-episode ``returns``, ``lengths``, ``successes`` (``info["success"]``
    seen at some step, or ``None`` when the env reports none) and ``first_hits`` (the 0-based step at which it
    was first seen, -1 if never; ``None`` with ``successes``). With ``record`` also ``observations [N, T + 1, obs]``
    (each episode's flat observations, its first included, zero after its end) and ``valid [N, T + 1]`` (the
    observation belongs to the episode), the layout of :func:`diffrl.eval.rollout.make_rollout`, to draw.
    ``progress`` shows a bar of finished episodes, with the step of the round under way.
    """
    if episodes < 1 or num_envs < 1:
        raise ValueError("episodes and num_envs must be positive")
    envs = [make_gym_env(env, **make_kwargs) for _ in range(num_envs)]
    returns, lengths, successes, first_hits, paths = [], [], [], [], []
    reports_success = False
    bar = tqdm(total=episodes, desc="evaluating", unit="episode", disable=not progress)
    shown = time.monotonic()
    try:
        for first in range(0, episodes, num_envs):
            obs = np.stack([flatten_observation(e.reset(seed=seed + first + i)[0]) for i, e in enumerate(envs)])
            obs = obs.astype(np.float32)
            state = init(obs)
            alive = np.ones(num_envs, bool)
            total, length, success = np.zeros(num_envs), np.zeros(num_envs, np.int64), np.zeros(num_envs, bool)
            first_hit = np.full(num_envs, -1, np.int64)
            path = [[o.copy()] for o in obs] if record else None
            t = 0
            while alive.any():
                actions, state = act(state, obs, t)
                actions = np.asarray(actions)
                for i in np.flatnonzero(alive):
                    o, reward, terminated, truncated, info = envs[i].step(actions[i])
                    obs[i] = flatten_observation(o)
                    total[i] += reward
                    length[i] += 1
                    if "success" in info:
                        reports_success = True
                        if info["success"] and not success[i]:
                            success[i], first_hit[i] = True, t
                    alive[i] = not (terminated or truncated)
                    if not alive[i] and i < episodes - first:  # a surplus env of the last round is not counted
                        bar.update()
                    if record:
                        path[i].append(obs[i].copy())
                t += 1
                if progress and time.monotonic() - shown >= 1.0:  # a slow policy: show the step every second
                    bar.set_postfix_str(f"step {t}")
                    shown = time.monotonic()
            count = min(num_envs, episodes - first)
            returns.extend(total[:count])
            lengths.extend(length[:count])
            successes.extend(success[:count])
            first_hits.extend(first_hit[:count])
            paths.extend(path[:count] if record else ())
    finally:
        bar.close()
        for e in envs:
            e.close()
    result = {"returns": np.asarray(returns), "lengths": np.asarray(lengths),
              "successes": np.asarray(successes) if reports_success else None,
              "first_hits": np.asarray(first_hits) if reports_success else None}
    if record:
        longest = max(map(len, paths))
        result["observations"] = np.zeros((len(paths), longest, paths[0][0].size), np.float32)
        result["valid"] = np.zeros((len(paths), longest), bool)
        for k, path in enumerate(paths):
            result["observations"][k, :len(path)], result["valid"][k, :len(path)] = path, True
    return result
