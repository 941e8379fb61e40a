"""Proportional prioritized experience replay (Schaul et al. 2016, Sec. 3.3-3.4 and Algorithm 1), as a pytree.

LDCQ and DIAR sample their latent Q-learning batches with ``alpha = 0.7`` and ``beta`` annealed linearly from
0.3 to 1. The state holds raw priorities ``p_i`` over a fixed number of slots (the rows of an offline dataset);
a slot with ``p_i = 0`` is empty and never drawn. All functions are pure and jittable.

* sampling probability  ``P(i) = p_i^alpha / sum_k p_k^alpha``                (Schaul et al. Eq. 1)
* importance weight     ``w_i = (N P(i))^-beta / max_j w_j``, max over the drawn batch, ``N`` = filled slots
* priority update       ``p_i = |delta_i| + eps``                             (proportional variant)
* new entries           ``p_i = max_k p_k`` (so each is replayed at least once; ``p = 1`` in an empty buffer)

Complexity: :func:`sample` is O(N) per batch for the prefix sum plus O(B log N) for the
``searchsorted`` (no sum tree: a dense prefix sum is one parallel scan on an accelerator);
:func:`update` is O(B) plus an O(B) max.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class PrioritizedReplayState:
    priorities: jnp.ndarray  # [capacity] float32, raw p_i (0 = empty slot)
    max_priority: jnp.ndarray  # [] float32, largest p_i ever set


def init_prioritized_replay(capacity: int, num_filled: int | None = None) -> PrioritizedReplayState:
    """``capacity`` slots, the first ``num_filled`` (default: all) filled with the initial priority 1."""
    num_filled = capacity if num_filled is None else num_filled
    if capacity < 1 or not 0 <= num_filled <= capacity:
        raise ValueError(f"need capacity >= 1 and 0 <= num_filled <= capacity, got {capacity}, {num_filled}")
    priorities = (jnp.arange(capacity) < num_filled).astype(jnp.float32)
    return PrioritizedReplayState(priorities=priorities, max_priority=jnp.ones((), jnp.float32))


def add_entries(state: PrioritizedReplayState, indices: jnp.ndarray) -> PrioritizedReplayState:
    """Fill the slots ``indices`` with new entries at the current maximal priority (Schaul et al. Alg. 1, line 6)."""
    return state.replace(priorities=state.priorities.at[indices].set(state.max_priority))


@functools.partial(jax.jit, static_argnames=("batch_size",))
def sample(
    state: PrioritizedReplayState, rng: jax.Array, batch_size: int, beta, alpha: float = 0.7
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Draw ``batch_size`` slot indices i.i.d. with ``P(i) ∝ p_i^alpha``; return ``(indices, weights)``.

    ``weights = (N P(i))^-beta`` divided by their maximum over the batch, ``N`` the number of filled slots
    (Schaul et al. Sec. 3.4). Requires at least one filled slot.
    """
    scaled = state.priorities ** alpha
    cumulative = jnp.cumsum(scaled)
    total = cumulative[-1]
    draws = jax.random.uniform(rng, (batch_size,), jnp.float32) * total
    # A draw rounded up to ``total`` would land past the last filled slot; clamp it there.
    last_filled = jnp.max(jnp.where(scaled > 0, jnp.arange(scaled.shape[0]), 0))
    indices = jnp.minimum(jnp.searchsorted(cumulative, draws, side="right"), last_filled).astype(jnp.int32)
    probabilities = scaled[indices] / total
    num_filled = jnp.sum(state.priorities > 0).astype(jnp.float32)
    weights = (num_filled * probabilities) ** (-jnp.asarray(beta, jnp.float32))
    return indices, weights / jnp.max(weights)


def update(
    state: PrioritizedReplayState, indices: jnp.ndarray, td_errors: jnp.ndarray, eps: float = 1e-6
) -> PrioritizedReplayState:
    """Set ``p_i = |delta_i| + eps`` for the sampled ``indices`` (a duplicated index keeps one of its values)."""
    new = jnp.abs(td_errors).astype(jnp.float32) + eps
    return PrioritizedReplayState(
        priorities=state.priorities.at[indices].set(new),
        max_priority=jnp.maximum(state.max_priority, jnp.max(new)),
    )


def annealed_beta(step, start: float = 0.3, end: float = 1.0, increment: float = 0.03, every: int = 3000):
    """Importance-sampling exponent ``beta = min(end, start + increment * floor(step / every))`` (LDCQ Table 7:
    0.3, +0.03 every 3000 steps, up to 1; ``every = 1`` anneals linearly)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    steps = (jnp.asarray(step) // every).astype(jnp.float32)
    return jnp.minimum(end, start + increment * steps)
