"""Dataset preprocessing applied before a store is built."""

from __future__ import annotations

import dataclasses

import numpy as np

from diffrl.data.minari_io import OfflineData


def join_contiguous_episodes(data: OfflineData) -> OfflineData:
    """Re-join episodes that continue one stream: ``e + 1`` starts at the final observation of ``e``.

    PointMaze data is collected as long streams that are cut into episodes at every reached goal (Minari
    starts the next episode with the last observation). D4RL's maze2d files keep the stream whole and the
    official Diffuser code draws its 128-384 step windows from it; episodes here last ~70 steps, so the
    windows need the stream back. Only episodes that end in a truncation (never a termination) are joined.
    """
    if data.num_episodes < 2:
        return data
    starts, lengths = data.episode_starts, data.episode_lengths
    last_rows = starts + lengths - 1
    continues = (
        ~data.terminations[last_rows[:-1]]
        & np.all(data.next_observations[last_rows[:-1]] == data.observations[starts[1:]], axis=-1)
    )
    new_episode = np.concatenate([[True], ~continues])
    group = np.cumsum(new_episode) - 1
    joined_lengths = np.bincount(group, weights=lengths).astype(lengths.dtype)
    joined_starts = starts[new_episode]
    truncations = data.truncations.copy()
    truncations[last_rows[:-1][continues]] = False
    return dataclasses.replace(data, episode_starts=joined_starts, episode_lengths=joined_lengths,
                               truncations=truncations)
