"""Evaluation on the gymnasium originals (a vector env on the CPU) for environments with no MJX port.

Kitchen, Adroit and AntMaze datasets can be evaluated this way until they are ported; the MJX environments
can be cross-checked against it. The policy sees flat observations (dict observations flattened in
:data:`diffrl.spaces.DICT_OBSERVATION_KEYS` order) and returns a batch of actions.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from diffrl.spaces import flatten_observation

BatchPolicy = Callable[[np.ndarray], np.ndarray]  # flat observations [n, d] -> actions [n, a]


def make_gym_env(env, **kwargs):
    """``gymnasium.make`` for an id or ``EnvSpec``, with the robotics suites registered."""
    import gymnasium as gym

    try:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    except ImportError:
        pass
    return gym.make(env, **kwargs)


def evaluate_gym(env, policy: BatchPolicy, episodes: int = 100, num_envs: int = 10, seed: int = 0,
                 **make_kwargs) -> dict:
    """Roll ``policy`` out in ``num_envs`` synchronous gymnasium envs until ``episodes`` episodes have finished.

    Returns per-episode ``returns``, ``lengths`` and ``successes`` (``info["success"]`` at the last step, or
    ``None`` when the env reports none). gymnasium's next-step autoreset is handled: the step that resets a
    finished env is not counted.
    """
    import gymnasium as gym

    if episodes < 1 or num_envs < 1:
        raise ValueError("episodes and num_envs must be positive")
    num_envs = min(num_envs, episodes)
    vector = gym.vector.SyncVectorEnv([lambda: make_gym_env(env, **make_kwargs) for _ in range(num_envs)])
    try:
        obs, _ = vector.reset(seed=seed)
        running = np.zeros(num_envs)
        length = np.zeros(num_envs, np.int64)
        resetting = np.zeros(num_envs, bool)
        returns, lengths, successes = [], [], []
        while len(returns) < episodes:
            actions = np.asarray(policy(np.asarray(flatten_observation(obs), np.float32)))
            obs, reward, terminated, truncated, info = vector.step(actions)
            active = ~resetting
            running[active] += reward[active]
            length[active] += 1
            finished = (terminated | truncated) & active
            for i in np.flatnonzero(finished):
                if len(returns) < episodes:
                    returns.append(running[i])
                    lengths.append(length[i])
                    successes.append(bool(info["success"][i]) if "success" in info else None)
                running[i], length[i] = 0.0, 0
            resetting = finished
    finally:
        vector.close()
    return {"returns": np.asarray(returns), "lengths": np.asarray(lengths),
            "successes": None if successes[0] is None else np.asarray(successes)}
