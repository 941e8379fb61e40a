"""A device-resident store of one dataset and the jitted minibatch samplers over it.

The store is a ``flax.struct`` pytree of ``jnp`` arrays: the transition arrays of :class:`OfflineData` plus
per-step and per-episode index tables. Every sampler is a pure, jitted function
``(store, rng, batch_size, ...) -> dict of arrays``: it draws ``jax.random`` indices and gathers — there is no
Python data loader, so a sampler can be called inside a jitted training step.

Indexing convention (see :mod:`diffrl.data.minari_io`): row ``t`` holds ``o_k, a_k, r_k`` of step ``k`` of its
episode and ``next_observations[t] = o_{k+1}``. The state at an index ``i`` with ``i == end`` (one past the last
step of the episode) is the final observation ``o_N = next_observations[end - 1]``.

Each sampler draws uniformly over all *valid starts* of all episodes (as a shuffled ``torch`` loader over the
official index list would): per-episode counts of valid starts are cumulated and a uniform integer below their
total is located with ``searchsorted``, O(E) per batch for E episodes. No window ever crosses into another
episode: indices past an episode's end are either excluded (chunks, jumpy sequences) or padded (Diffuser windows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffrl.data.minari_io import OfflineData


@struct.dataclass
class DatasetStore:
    """Transitions of one dataset on device, with the episode tables the samplers index through.

    ``T`` steps, ``E`` episodes; episode ``e`` is rows ``episode_starts[e] : episode_starts[e] + episode_lengths[e]``.
    """

    observations: jnp.ndarray  # [T, obs_dim] float32, o_k
    next_observations: jnp.ndarray  # [T, obs_dim] float32, o_{k+1}
    actions: jnp.ndarray  # [T, act_dim] float32
    rewards: jnp.ndarray  # [T] float32
    terminations: jnp.ndarray  # [T] bool
    truncations: jnp.ndarray  # [T] bool
    episode_of_step: jnp.ndarray  # [T] int32, episode id of each row
    index_in_episode: jnp.ndarray  # [T] int32, k
    start_of_episode: jnp.ndarray  # [T] int32, first row of the row's episode
    end_of_episode: jnp.ndarray  # [T] int32, one past the last row of the row's episode
    episode_starts: jnp.ndarray  # [E] int32
    episode_lengths: jnp.ndarray  # [E] int32
    longest_episode: int = struct.field(pytree_node=False)  # static: lets samplers reject impossible shapes early

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_lengths.shape[0])


def make_store(data: OfflineData, device: jax.Device | None = None) -> DatasetStore:
    """Copy ``data`` onto ``device`` (default: JAX's default device) as a :class:`DatasetStore`."""
    lengths = np.asarray(data.episode_lengths, dtype=np.int32)
    starts = np.asarray(data.episode_starts, dtype=np.int32)
    episode_of_step = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    start_of_episode = starts[episode_of_step]
    arrays = dict(
        observations=np.asarray(data.observations, dtype=np.float32),
        next_observations=np.asarray(data.next_observations, dtype=np.float32),
        actions=np.asarray(data.actions, dtype=np.float32),
        rewards=np.asarray(data.rewards, dtype=np.float32),
        terminations=np.asarray(data.terminations, dtype=bool),
        truncations=np.asarray(data.truncations, dtype=bool),
        episode_of_step=episode_of_step,
        index_in_episode=np.arange(len(episode_of_step), dtype=np.int32) - start_of_episode,
        start_of_episode=start_of_episode,
        end_of_episode=start_of_episode + lengths[episode_of_step],
        episode_starts=starts,
        episode_lengths=lengths,
    )
    arrays = jax.device_put(arrays, device)
    return DatasetStore(**arrays, longest_episode=int(lengths.max()))


def _sample_starts(store: DatasetStore, rng: jax.Array, batch_size: int, counts: jnp.ndarray):
    """Uniform draw among ``sum(counts)`` starts, episode ``e`` owning its first ``counts[e]`` rows.

    Returns ``(row, episode)``, each ``[batch_size]`` int32.
    """
    cumulative = jnp.cumsum(counts)
    draw = jax.random.randint(rng, (batch_size,), 0, cumulative[-1])
    episode = jnp.searchsorted(cumulative, draw, side="right").astype(jnp.int32)
    offset = draw - (cumulative[episode] - counts[episode])
    return store.episode_starts[episode] + offset, episode


def _states_at(store: DatasetStore, index: jnp.ndarray, end: jnp.ndarray) -> jnp.ndarray:
    """``o`` at row ``index`` for ``start <= index <= end``; ``index == end`` gives the final observation ``o_N``."""
    row = jnp.minimum(index, end - 1)
    at_end = (index == end)[..., None]
    return jnp.where(at_end, store.next_observations[row], store.observations[row])


@functools.partial(jax.jit, static_argnames=("batch_size", "horizon", "use_padding", "max_path_length"))
def sample_trajectory_windows(
    store: DatasetStore,
    rng: jax.Array,
    batch_size: int,
    horizon: int,
    use_padding: bool = True,
    max_path_length: int | None = None,
) -> dict[str, jnp.ndarray]:
    """Fixed-horizon windows ``(o_{t:t+H}, a_{t:t+H})`` for Diffuser (Janner et al. 2022).

    Reproduces ``SequenceDataset.make_indices`` of the official code (jannerm/diffuser,
    ``diffuser/datasets/sequence.py``): for an episode of ``L`` steps a window may start at every ``k`` with::

        k < min(L - 1, max_path_length - H)            if use_padding
        k < min(L - 1, max_path_length - H, L - H)     otherwise

    (the bound is exclusive, as in the official ``range(max_start)``; without padding the last full window,
    ``k = L - H``, is therefore not used, exactly as there). ``max_path_length`` defaults to the longest
    episode and must be at least that (the official ``ReplayBuffer.add_path`` asserts it). With padding a window
    may run past the episode's end; the official ``diffuser/datasets/buffer.py`` stores episodes zero-padded to
    ``max_path_length``, so those steps are zeros here as well (observations, actions, rewards, terminations),
    flagged by ``mask = 0``. The official code normalises the padded arrays, so its padding equals
    ``normalize(0)``: apply the normaliser to the whole batch to get the same values. A window never reads
    another episode.

    Returns ``observations [B, H, obs_dim]``, ``actions [B, H, act_dim]``, ``rewards [B, H]``,
    ``terminations [B, H]`` (float), ``mask [B, H]`` (1 inside the episode), ``indices [B]`` (row of the first
    step, e.g. to gather returns-to-go for Diffuser's value targets) and ``episode_ids [B]``. All arguments but
    ``store`` and ``rng`` are static.
    """
    max_path_length = store.longest_episode if max_path_length is None else max_path_length
    if max_path_length < store.longest_episode:
        raise ValueError(
            f"max_path_length={max_path_length} is shorter than the longest episode ({store.longest_episode})"
        )
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if use_padding and (store.longest_episode < 2 or max_path_length - horizon < 1):
        raise ValueError(
            f"no padded window of horizon {horizon}: need an episode of >= 2 steps and max_path_length > horizon "
            f"(longest episode {store.longest_episode}, max_path_length {max_path_length})"
        )
    if not use_padding and store.longest_episode - horizon < 1:
        raise ValueError(
            f"no unpadded window of horizon {horizon}: need an episode longer than the horizon "
            f"(longest episode {store.longest_episode})"
        )
    lengths = store.episode_lengths
    max_start = jnp.minimum(lengths - 1, max_path_length - horizon)
    if not use_padding:
        max_start = jnp.minimum(max_start, lengths - horizon)
    starts, episode = _sample_starts(store, rng, batch_size, jnp.maximum(max_start, 0))
    rows = starts[:, None] + jnp.arange(horizon, dtype=jnp.int32)[None, :]
    end = store.end_of_episode[starts][:, None]
    mask = rows < end
    rows = jnp.minimum(rows, end - 1)
    mask_f = mask.astype(jnp.float32)
    return {
        "observations": store.observations[rows] * mask_f[..., None],
        "actions": store.actions[rows] * mask_f[..., None],
        "rewards": store.rewards[rows] * mask_f,
        "terminations": store.terminations[rows].astype(jnp.float32) * mask_f,
        "mask": mask_f,
        "indices": starts,
        "episode_ids": episode,
    }


@functools.partial(jax.jit, static_argnames=("batch_size", "horizon", "discount"))
def sample_chunks(
    store: DatasetStore, rng: jax.Array, batch_size: int, horizon: int, discount: float
) -> dict[str, jnp.ndarray]:
    """H-step chunks ``(s_t, a_{t:t+H}, sum_{k<H} gamma^k r_{t+k}, s_{t+H}, done)`` for LDCQ/DIAR.

    The latent Q-learning of LDCQ (Venkatraman et al. 2024) and DIAR backs up over H-step skills:
    ``Q(s_t, z) <- R_{t:t+H} + gamma^H (1 - done) max_z' Q(s_{t+H}, z')``. A chunk may start at step ``k`` only
    when ``k + H <= L`` (``L`` steps in the episode), so all ``H`` actions exist and ``s_{t+H}`` is a real state —
    the final observation ``o_L`` when ``k + H = L``. ``done`` is the termination flag of the chunk's last step:
    Minari episodes end at their first termination, so a termination inside a chunk can only be its last step,
    where the episode ends; ``done = 1`` then and ``s_{t+H}`` is that final observation. A *truncation* there
    (time limit) gives ``done = 0`` and is reported apart in ``truncations``.

    Returns ``observations [B, obs_dim]`` (``s_t``), ``states [B, H, obs_dim]``, ``actions [B, H, act_dim]``,
    ``rewards [B, H]``, ``discounted_rewards [B]``, ``next_observations [B, obs_dim]`` (``s_{t+H}``), ``dones [B]``,
    ``truncations [B]`` (floats), ``indices [B]`` (row of ``t``) and ``episode_ids [B]``. ``batch_size``,
    ``horizon`` and ``discount`` are static.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must lie in [0, 1], got {discount}")
    if store.longest_episode < horizon:
        raise ValueError(f"no chunk of {horizon} steps: the longest episode has {store.longest_episode} steps")
    starts, episode = _sample_starts(store, rng, batch_size, jnp.maximum(store.episode_lengths - horizon + 1, 0))
    return {**gather_chunks(store, starts, horizon, discount), "episode_ids": episode}


def gather_chunks(store: DatasetStore, starts: jnp.ndarray, horizon: int, discount: float) -> dict[str, jnp.ndarray]:
    """The chunks of :func:`sample_chunks` starting at the given rows (each must have ``H`` steps left in its
    episode; :func:`chunk_starts` lists them all), plus ``states [B, H, obs_dim]`` (``s_{t:t+H}``)."""
    rows = starts[:, None] + jnp.arange(horizon, dtype=jnp.int32)[None, :]
    rewards = store.rewards[rows]
    discounts = jnp.asarray(discount ** np.arange(horizon), jnp.float32)
    last = starts + horizon - 1
    return {
        "observations": store.observations[starts],
        "states": store.observations[rows],
        "actions": store.actions[rows],
        "rewards": rewards,
        "discounted_rewards": rewards @ discounts,
        "next_observations": store.next_observations[last],
        "dones": store.terminations[last].astype(jnp.float32),
        "truncations": store.truncations[last].astype(jnp.float32),
        "indices": starts,
    }


def chunk_starts(store: DatasetStore, horizon: int) -> np.ndarray:
    """Every row where an ``H``-step chunk starts inside its episode (the support of :func:`sample_chunks`)."""
    index = np.asarray(store.index_in_episode)
    length = np.asarray(store.end_of_episode) - np.asarray(store.start_of_episode)
    return np.flatnonzero(index + horizon <= length).astype(np.int32)


def count_chunks(episode_lengths, horizon: int) -> int:
    """``len(chunk_starts(store, horizon))`` from the episode lengths alone: ``sum_e max(L_e - H + 1, 0)``."""
    return int(np.maximum(np.asarray(episode_lengths) - horizon + 1, 0).sum())


def jumpy_starts(store: DatasetStore, num_states: int, stride: int, xy: slice | np.ndarray | None = None,
                 min_displacement: float = 0.0) -> np.ndarray:
    """Every row where ``M = num_states`` states ``s_t, s_{t+K}, ..., s_{t+(M-1)K}`` (``K = stride``) fit in the
    episode, ``t + (M - 1) K <= L`` (the last may be the final observation): the sub-goal sequences of PlanDQ's
    D-Conductor. With ``min_displacement > 0`` only those whose first and last states lie farther apart than it in
    the ``xy`` columns are kept (PlanDQ official ``datasets/sequence.py``: windows where the agent barely moves are
    dropped); ``xy`` is a slice or an index array of observation columns."""
    if num_states < 2 or stride < 1:
        raise ValueError(f"need num_states >= 2 and stride >= 1, got num_states={num_states}, stride={stride}")
    span = (num_states - 1) * stride
    index = np.asarray(store.index_in_episode)
    length = np.asarray(store.end_of_episode) - np.asarray(store.start_of_episode)
    starts = np.flatnonzero(index + span <= length).astype(np.int32)
    if min_displacement > 0 and len(starts):
        first = np.asarray(store.observations)[starts][:, xy]
        last = np.asarray(gather_jumpy_states(store, jnp.asarray(starts), 2, span))[:, 1, xy]
        starts = starts[np.linalg.norm(last - first, axis=-1) > min_displacement]
    return starts


def gather_jumpy_states(store: DatasetStore, starts: jnp.ndarray, num_states: int, stride: int) -> jnp.ndarray:
    """``[B, M, obs_dim]``: ``s_t, s_{t+K}, ..., s_{t+(M-1)K}`` from each start of :func:`jumpy_starts`."""
    rows = starts[:, None] + stride * jnp.arange(num_states, dtype=jnp.int32)[None, :]
    return _states_at(store, rows, store.end_of_episode[starts][:, None])


@functools.partial(jax.jit, static_argnames=("batch_size", "p", "stride"))
def sample_subgoal_transitions(store: DatasetStore, rng: jax.Array, batch_size: int, p: float, stride: int
                               ) -> dict[str, jnp.ndarray]:
    """Transitions ``(s, a, r, s')`` with a sub-goal state relabelled from the same episode, for PlanDQ's
    Q-Performer (Sec. 3.2; official ``utils/data_sampler.py``).

    A row ``t`` is drawn uniformly among all transitions; its sub-goal is the state at ``t + o`` with
    ``o ~ Uniform{0, ..., Delta K - 1}``, ``Delta ~ Geometric(p)`` on ``{1, 2, ...}`` (the paper's "from
    [t, t + Delta K]"; the official code draws one ``Delta`` per batch, here every row draws its own), clipped to the
    episode's end (its final observation). Returns ``observations``, ``actions``, ``rewards``, ``terminations``
    (float), ``next_observations``, ``subgoals`` (whole states), ``goal_offsets`` (``o`` after clipping) and
    ``indices``, each with the batch as axis 0. ``batch_size``, ``p`` and ``stride`` are static.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must lie in (0, 1], got {p}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    row_key, delta_key, offset_key = jax.random.split(rng, 3)
    rows = jax.random.randint(row_key, (batch_size,), 0, store.num_steps)
    window = stride * jax.random.geometric(delta_key, p, (batch_size,), dtype=jnp.int32)
    offsets = jnp.floor(jax.random.uniform(offset_key, (batch_size,)) * window).astype(jnp.int32)
    end = store.end_of_episode[rows]
    future = jnp.minimum(rows + offsets, end)
    return {
        "observations": store.observations[rows],
        "actions": store.actions[rows],
        "rewards": store.rewards[rows],
        "terminations": store.terminations[rows].astype(jnp.float32),
        "next_observations": store.next_observations[rows],
        "subgoals": _states_at(store, future, end),
        "goal_offsets": future - rows,
        "indices": rows,
    }


def discounted_returns_to_go(rewards: jnp.ndarray, last_step: jnp.ndarray, discount: float) -> jnp.ndarray:
    """``G_t = r_t + gamma G_{t+1}``, restarted at every episode's last step (``last_step[t]`` true: ``G_t = r_t``).

    A reverse ``lax.scan`` over concatenated episodes; pure and jittable. Returns are truncated at the
    episode's end (no bootstrap), as Diffuser's ``ValueDataset`` sums the rest of the episode.
    """

    def step(future_return, inputs):
        reward, is_last = inputs
        value = reward + discount * future_return * (1.0 - is_last)
        return value, value

    _, returns = jax.lax.scan(
        step,
        jnp.zeros((), jnp.float32),
        (jnp.asarray(rewards, jnp.float32), jnp.asarray(last_step, jnp.float32)),
        reverse=True,
    )
    return returns


def returns_to_go(store: DatasetStore, discount: float) -> jnp.ndarray:
    """Per-row discounted returns-to-go of the store's episodes, ``[T]``."""
    last_step = jnp.arange(store.num_steps, dtype=jnp.int32) == store.end_of_episode - 1
    return discounted_returns_to_go(store.rewards, last_step, discount)
