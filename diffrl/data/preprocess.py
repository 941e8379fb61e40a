"""Dataset preprocessing applied before a store is built."""

from __future__ import annotations

import dataclasses

import numpy as np

from diffrl.data.minari_io import OfflineData

D4RL_GOAL_RADIUS = 0.5  # relabel_antmaze_rewards.py: within 0.5 of the target goal


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


def split_at_goal_departures(data: OfflineData) -> OfflineData:
    """Diffuser's maze2d episodes (official ``maze2d_set_terminals``): the collection streams, cut after every
    step ``t`` at the evaluation goal whose next step is not, so that no window shows the point leaving the goal.

    The official rule reads "at the goal" as ``||xy(o_t) - target|| < 0.5``; a maze2d dataset's sparse reward
    ``r_t = 1{||xy(o_t) - target|| <= 0.5}`` marks the same steps, so the cut is after every ``t`` with ``r_t > 0``
    and ``r_{t+1} = 0`` inside a stream. The cut is a truncation (never a termination).
    """
    data = join_contiguous_episodes(data)
    at_goal = data.rewards > 0
    last_rows = data.episode_starts + data.episode_lengths - 1
    leaves = np.zeros(data.num_steps, bool)
    leaves[:-1] = at_goal[:-1] & ~at_goal[1:]
    leaves[last_rows] = False  # already the end of a stream
    starts = np.union1d(data.episode_starts, np.flatnonzero(leaves) + 1)
    lengths = np.diff(np.append(starts, data.num_steps))
    return dataclasses.replace(data, episode_starts=starts.astype(data.episode_starts.dtype),
                               episode_lengths=lengths.astype(data.episode_lengths.dtype),
                               truncations=data.truncations | leaves)


EPISODES = {
    "stored": lambda data: data,
    "streams": join_contiguous_episodes,
    "goal_departures": split_at_goal_departures,
}


def segment_episodes(data: OfflineData, episodes: str) -> OfflineData:
    """The dataset's episodes as a config's ``dataset.episodes`` asks: as stored, joined back into the collection
    streams, or split at goal departures (Diffuser maze2d)."""
    if episodes not in EPISODES:
        raise ValueError(f"dataset.episodes must be one of {', '.join(EPISODES)}, got {episodes!r}")
    return EPISODES[episodes](data)


def relabel_to_evaluation_goal(data: OfflineData) -> OfflineData:
    """D4RL's AntMaze rewards and terminals (``scripts/generation/relabel_antmaze_rewards.py``, the files every
    paper's AntMaze numbers were measured on): ``r_t = terminal_t = 1{||xy(o_{t+1}) - g|| <= 0.5}`` for the one
    evaluation goal ``g``, whatever goal the episode was collected for. ``g`` is the centre of the evaluation map's
    goal cell; D4RL's was one draw of its env's noisy goal (``maze_env.goal_sampler``: up to 1.5 off the centre
    per axis). Minari's ``antmaze-v1`` rewards follow each episode's own goal and never terminate."""
    from diffrl.envs.registry import maze_layout

    spec = data.eval_env_spec or data.env_spec
    if spec is None:
        raise ValueError(f"dataset.rewards='evaluation_goal' reads the maze from the dataset's env spec; "
                         f"{data.dataset_id} records none")
    if "achieved_goal" not in (data.observation_slices or {}):
        raise ValueError(f"dataset.rewards='evaluation_goal' measures the distance to the goal from the "
                         f"observations' 'achieved_goal'; {data.dataset_id} has no such key")
    layout = maze_layout(spec)
    if len(layout.goal_cells) != 1:
        raise ValueError(f"dataset.rewards='evaluation_goal' needs one evaluation goal cell; the evaluation map of "
                         f"{data.dataset_id} has {len(layout.goal_cells)}")
    goal = layout.cell_to_xy(layout.goal_cells[0])
    xy = data.next_observations[:, data.observation_slices["achieved_goal"]]
    reached = np.linalg.norm(xy - goal, axis=-1) <= D4RL_GOAL_RADIUS
    return dataclasses.replace(data, rewards=reached.astype(np.float32), terminations=reached)


REWARDS = {"stored": lambda data: data, "evaluation_goal": relabel_to_evaluation_goal}


def relabel_rewards(data: OfflineData, rewards: str) -> OfflineData:
    """The dataset's rewards and terminations as a config's ``dataset.rewards`` asks: as stored, or D4RL's of the
    single evaluation goal."""
    if rewards not in REWARDS:
        raise ValueError(f"dataset.rewards must be one of {', '.join(REWARDS)}, got {rewards!r}")
    return REWARDS[rewards](data)
