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


MJX_IMPLS = ("jax", "warp")
# MJX Warp keeps one contact buffer for all the envs stepped together and a constraint buffer per env; these size
# them per env. Measured maxima over 20 random-action episodes in MuJoCo C: Hopper 6 contacts / 22 constraint rows,
# Walker2d 8 / 33, HalfCheetah 4 / 17 (a pyramidal contact is 4 rows).
WARP_CONTACTS_PER_ENV = 16
WARP_CONSTRAINT_ROWS_PER_ENV = 96


def check_mjx_impl(impl: str) -> None:
    """A clear error for an unknown MJX implementation, or for ``"warp"`` without the ``warp-lang`` package. Asking
    for Warp also lowers Warp's log level to warnings for the process (no banner, no line per kernel module)."""
    if impl not in MJX_IMPLS:
        raise ValueError(f"unknown MJX implementation {impl!r}; choose one of {', '.join(MJX_IMPLS)}")
    if impl == "warp":
        try:
            import warp
        except ImportError as error:
            raise ImportError("MJX's Warp implementation needs the warp-lang package: pip install 'diffrl[warp]'") \
                from error
        warp.config.log_level = warp.LOG_WARNING


def put_model(mj_model: mujoco.MjModel, impl: str = "jax") -> mjx.Model:
    """``mjx.put_model`` on this process's first device. MJX's default, ``jax.devices()[0]``, is process 0's device
    in a multi-host run, which the other processes' rollouts cannot read. ``impl``: MJX's JAX implementation, or its
    Warp one (MuJoCo Warp's kernels, on an NVIDIA GPU or on the CPU)."""
    check_mjx_impl(impl)
    return mjx.put_model(mj_model, device=jax.local_devices()[0], impl=impl)


def blank_data(mj_model: mujoco.MjModel, model: mjx.Model, parallel_envs: int | None = None):
    """``mjx.make_data`` for ``model`` on this process's first device. For MJX Warp, with buffers for
    ``parallel_envs`` envs stepped together (one ``jax.vmap``): their contacts share one buffer, and MuJoCo Warp
    drops the contacts that do not fit, silently, so more envs than ``parallel_envs`` would step wrong physics."""
    device = jax.local_devices()[0]
    if model.impl.value == "warp":
        return mjx.make_data(mj_model, device=device, impl="warp",
                             naconmax=WARP_CONTACTS_PER_ENV * parallel_envs, njmax=WARP_CONSTRAINT_ROWS_PER_ENV)
    return mjx.make_data(model, device=device, impl=model.impl)


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
