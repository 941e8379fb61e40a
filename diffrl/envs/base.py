"""The functional environment API: pure ``reset(rng) -> state`` and ``step(state, action) -> state``.

Both are jittable and vmappable (``jax.vmap(env.reset)(keys)`` gives a batch of environments). A state carries
the MJX physics data, the flat observation (dict observations flattened by :func:`diffrl.spaces.flatten_observation`),
the last reward, ``terminated`` and ``truncated`` kept apart (as gymnasium does), the step count, an rng for
in-episode randomness, and a dict ``info`` of per-step extras (for example ``success``). Episodes are not
reset automatically; rollout code decides what to do with a finished environment.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from mujoco import mjx


def put_model(mj_model: mujoco.MjModel) -> mjx.Model:
    """``mjx.put_model`` on this process's first device. MJX's default, ``jax.devices()[0]``, is process 0's device
    in a multi-host run, which the other processes' rollouts cannot read."""
    return mjx.put_model(mj_model, device=jax.local_devices()[0])


@struct.dataclass
class EnvState:
    data: Any  # mujoco.mjx.Data
    obs: jnp.ndarray
    reward: jnp.ndarray  # float32 scalar
    terminated: jnp.ndarray  # bool scalar: the MDP ended (unhealthy, goal reached when not continuing)
    truncated: jnp.ndarray  # bool scalar: the time limit was hit
    step: jnp.ndarray  # int32 steps since reset
    rng: jax.Array
    info: dict

    @property
    def done(self) -> jnp.ndarray:
        return jnp.logical_or(self.terminated, self.truncated)


class Env(abc.ABC):
    """An MJX environment reproducing a gymnasium original; subclasses set the sizes and the two pure functions."""

    name: str
    observation_size: int
    action_size: int
    max_episode_steps: int
    reports_success: bool = False  # whether ``info["success"]`` marks reaching a goal

    @abc.abstractmethod
    def reset(self, rng: jax.Array) -> EnvState: ...

    @abc.abstractmethod
    def step(self, state: EnvState, action: jnp.ndarray) -> EnvState: ...

    @property
    def action_low(self) -> jnp.ndarray:
        return -jnp.ones(self.action_size, jnp.float32)

    @property
    def action_high(self) -> jnp.ndarray:
        return jnp.ones(self.action_size, jnp.float32)

    def draw_episodes(self, observations, valid, planned_states=None, titles=None):
        """A matplotlib Figure of episodes (``observations [N, T + 1, obs]``, ``valid [N, T + 1]``, a planner's
        ``planned_states [N, H, S]``, one title each), or ``None`` for an environment with no picture."""
        return None
