"""The dataset of LDCQ App. D's 1-D random walk (:mod:`diffrl.envs.random_walk`): the behaviour policy steps
``a ~ U([-1, -0.8] U [0.8, 1])``, two modes with no mass in between."""

from __future__ import annotations

import numpy as np

from diffrl.data.minari_io import OfflineData
from diffrl.envs.random_walk import BOUND, GOAL_REWARD, MAX_EPISODE_STEPS, STEP_REWARD


def random_walk_dataset(episodes: int, seed: int = 0) -> OfflineData:
    """``episodes`` episodes of the two-mode behaviour policy, as an in-memory dataset."""
    rng = np.random.default_rng(seed)
    observations, actions, rewards, lengths = [], [], [], []
    for _ in range(episodes):
        x, xs, acts, rews = 0.0, [], [], []
        for _ in range(MAX_EPISODE_STEPS):
            a = rng.uniform(0.8, 1.0) * rng.choice((-1.0, 1.0))
            xs.append(x)
            acts.append(a)
            x = float(np.clip(x + a, -BOUND, BOUND))
            reached = abs(x) >= BOUND
            rews.append(GOAL_REWARD if reached else STEP_REWARD)
            if reached:
                break
        observations.append(np.asarray(xs, np.float32)[:, None])
        actions.append(np.asarray(acts, np.float32)[:, None])
        rewards.append(np.asarray(rews, np.float32))
        lengths.append(len(acts))
    return OfflineData.from_arrays(np.concatenate(observations), np.concatenate(actions), np.concatenate(rewards),
                                   lengths, terminal_last=True, dataset_id="toy/random-walk-1d-v0")
