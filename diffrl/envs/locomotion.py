"""Hopper, HalfCheetah and Walker2d in MJX, reproducing gymnasium's ``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5``.

Reproduced from gymnasium 1.4.0 (``envs/mujoco/hopper_v5.py``, ``half_cheetah_v5.py``, ``walker2d_v5.py``,
``mujoco_env.py`` and the registration in ``envs/__init__.py``); the MJCF models ``hopper.xml``,
``half_cheetah.xml`` and ``walker2d_v5.xml`` are loaded from the installed gymnasium package:

* step (``MujocoEnv.do_simulation``): ``ctrl = action`` unclipped, then ``frame_skip`` physics steps (hopper and
  walker 4 x 0.002 s, cheetah 5 x 0.01 s); MuJoCo (and MJX) clamp ``ctrl`` to the actuator ``ctrlrange`` when
  computing forces, while the control cost uses the raw action.
* observation: ``[qpos[1:], qvel]``, the root x excluded (``exclude_current_positions_from_observation=True``);
  hopper and walker clip ``qvel`` to ``[-10, 10]`` in the observation only.
* reward: ``forward_reward_weight * dx / dt + healthy_reward * is_healthy - ctrl_cost_weight * |action|^2``
  (cheetah has no healthy term); ``info`` holds the terms ``reward_forward``, ``reward_ctrl`` (negative),
  ``reward_survive`` (hopper, walker) and ``x_position``, ``x_velocity``, ``z_distance_from_origin``
  (hopper, walker).
* health (hopper, walker): ``z = qpos[1]`` and ``angle = qpos[2]`` strictly inside ``healthy_z_range`` and
  ``healthy_angle_range``; the hopper also needs every entry of ``[qpos[2:], qvel]`` (velocities unclipped)
  strictly inside ``healthy_state_range``. ``terminated = not healthy`` when ``terminate_when_unhealthy``.
* time limit: ``max_episode_steps = 1000`` (gymnasium's ``TimeLimit``), reported as ``truncated``, apart from
  ``terminated``.
* reset (``reset_model`` after ``mj_resetData``, then ``set_state``, which runs ``mj_forward``):
  ``qpos = qpos0 + U(-s, s)``; ``qvel = U(-s, s)`` (hopper, walker, ``s = 5e-3``) or ``s * N(0, 1)``
  (cheetah, ``s = 0.1``).

``info`` has the same keys after ``reset`` and ``step`` (a fixed pytree structure): at reset the velocity and the
reward terms are zero, where gymnasium's reset info only carries the positions.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from diffrl.envs.base import Env, EnvState, blank_data, put_model
from diffrl.envs.mjx_contact import (
    use_early_exit_linesearch,
    use_mujoco_capsule_plane_frames,
)

GYMNASIUM_ASSETS = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets")
MAX_EPISODE_STEPS = 1000  # gymnasium's registration of all three v5 environments
OBSERVED_VELOCITY_LIMIT = 10.0  # hopper_v5 / walker2d_v5 ``_get_obs``: ``np.clip(qvel, -10, 10)``


class LocomotionEnv(Env):
    """The planar MuJoCo runners of gymnasium v5: MJX stepping, forward and control rewards, reset noise.

    Subclasses name the model (``xml_file``, ``frame_skip``, ``name``) and, where the gymnasium original differs,
    override :meth:`_observed_velocity`, :meth:`_reset_velocity_noise` and :meth:`_survival`.

    ``impl``: MJX's JAX implementation (default) or its Warp one, MuJoCo Warp's kernels (``pip install
    'diffrl[warp]'``; written for NVIDIA GPUs, also runs on the CPU), which computes in float32 and needs
    ``parallel_envs``, the number of envs stepped together in one ``jax.vmap``, to size its contact buffer.
    """

    xml_file: str
    frame_skip: int

    def __init__(
        self,
        forward_reward_weight: float,
        ctrl_cost_weight: float,
        reset_noise_scale: float,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        impl: str = "jax",
        parallel_envs: int | None = None,
    ):
        self.forward_reward_weight = forward_reward_weight
        self.ctrl_cost_weight = ctrl_cost_weight
        self.reset_noise_scale = reset_noise_scale
        self.max_episode_steps = int(max_episode_steps)
        self.mj_model = mujoco.MjModel.from_xml_path(os.path.join(GYMNASIUM_ASSETS, self.xml_file))
        use_mujoco_capsule_plane_frames()  # capsules on the floor: MuJoCo C's friction directions
        use_early_exit_linesearch()
        if impl == "warp" and not (isinstance(parallel_envs, int) and parallel_envs >= 1):
            raise ValueError(f"impl='warp' needs parallel_envs, the number of envs stepped together (a positive "
                             f"integer; MJX Warp sizes its contact buffer for them), got {parallel_envs!r}")
        self.model = put_model(self.mj_model, impl)
        self.impl, self.parallel_envs = impl, parallel_envs
        self.dt = self.mj_model.opt.timestep * self.frame_skip
        self.observation_size = self.mj_model.nq - 1 + self.mj_model.nv
        self.action_size = self.mj_model.nu
        self._ctrl_range = jnp.asarray(self.mj_model.actuator_ctrlrange, jnp.float32)

    @property
    def action_low(self) -> jnp.ndarray:
        return self._ctrl_range[:, 0]

    @property
    def action_high(self) -> jnp.ndarray:
        return self._ctrl_range[:, 1]

    # -- what the three gymnasium environments do differently ----------------------------------------------------
    def _observed_velocity(self, qvel: jnp.ndarray) -> jnp.ndarray:
        return qvel

    def _reset_velocity_noise(self, rng: jax.Array, dtype) -> jnp.ndarray:
        """``reset_model``: ``U(-s, s)`` per joint velocity (hopper_v5, walker2d_v5)."""
        scale = self.reset_noise_scale
        return jax.random.uniform(rng, (self.mj_model.nv,), dtype, minval=-scale, maxval=scale)

    def _survival(self, qpos: jnp.ndarray, qvel: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, Any]]:
        """``(survive reward, terminated, extra info)`` of a state; none of these without a health condition."""
        return jnp.zeros((), qpos.dtype), jnp.zeros((), bool), {}

    # -- API -----------------------------------------------------------------------------------------------------
    def reset(self, rng: jax.Array) -> EnvState:
        rng, rng_qpos, rng_qvel = jax.random.split(rng, 3)
        dtype = self.model.qpos0.dtype
        scale = self.reset_noise_scale
        qpos = self.model.qpos0 + jax.random.uniform(rng_qpos, (self.mj_model.nq,), dtype, -scale, scale)
        return self.reset_to(qpos, self._reset_velocity_noise(rng_qvel, dtype), rng)

    def reset_to(self, qpos, qvel, rng: jax.Array) -> EnvState:
        """A state at given joint positions and velocities (``MujocoEnv.set_state``): evaluation from recorded
        states, parity checks."""
        data = blank_data(self.mj_model, self.model, self.parallel_envs)
        data = data.replace(qpos=jnp.asarray(qpos, data.qpos.dtype), qvel=jnp.asarray(qvel, data.qvel.dtype))
        data = mjx.forward(self.model, data)
        _, _, survival_info = self._survival(data.qpos, data.qvel)
        zero = jnp.zeros((), data.qpos.dtype)
        info = {"x_position": data.qpos[0], "x_velocity": zero, "reward_forward": zero, "reward_ctrl": zero,
                **survival_info}
        info = {key: jnp.zeros_like(value) if key.startswith("reward_") else value for key, value in info.items()}
        return EnvState(
            data=data, obs=self._observation(data), reward=zero, terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool), step=jnp.zeros((), jnp.int32), rng=rng, info=info,
        )

    def step(self, state: EnvState, action: jnp.ndarray) -> EnvState:
        action = jnp.asarray(action, state.data.ctrl.dtype)
        x_before = state.data.qpos[0]
        data = jax.lax.fori_loop(
            0, self.frame_skip, lambda _, physics: mjx.step(self.model, physics), state.data.replace(ctrl=action)
        )
        x_velocity = (data.qpos[0] - x_before) / self.dt
        reward_forward = self.forward_reward_weight * x_velocity
        reward_ctrl = -self.ctrl_cost_weight * jnp.sum(jnp.square(action))
        reward_survive, terminated, survival_info = self._survival(data.qpos, data.qvel)
        steps = state.step + 1
        return EnvState(
            data=data, obs=self._observation(data), reward=reward_forward + reward_survive + reward_ctrl,
            terminated=terminated, truncated=steps >= self.max_episode_steps, step=steps, rng=state.rng,
            info={"x_position": data.qpos[0], "x_velocity": x_velocity, "reward_forward": reward_forward,
                  "reward_ctrl": reward_ctrl, **survival_info},
        )

    def _observation(self, data) -> jnp.ndarray:
        return jnp.concatenate([data.qpos[1:], self._observed_velocity(data.qvel)])


class HealthyLocomotionEnv(LocomotionEnv):
    """Hopper and Walker2d: a healthy reward, termination when unhealthy and clipped observed velocities.

    ``is_healthy`` of hopper_v5 / walker2d_v5: ``qpos[1]`` (height) and ``qpos[2]`` (torso angle) strictly inside
    their ranges, plus, where ``healthy_state_range`` is given (hopper), every entry of ``[qpos[2:], qvel]``.
    """

    def __init__(
        self,
        forward_reward_weight: float,
        ctrl_cost_weight: float,
        healthy_reward: float,
        terminate_when_unhealthy: bool,
        healthy_z_range: tuple[float, float],
        healthy_angle_range: tuple[float, float],
        reset_noise_scale: float,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        healthy_state_range: tuple[float, float] | None = None,
        **mjx_options,
    ):
        super().__init__(forward_reward_weight, ctrl_cost_weight, reset_noise_scale, max_episode_steps, **mjx_options)
        self.healthy_reward = healthy_reward
        self.terminate_when_unhealthy = terminate_when_unhealthy
        self.healthy_z_range = healthy_z_range
        self.healthy_angle_range = healthy_angle_range
        self.healthy_state_range = healthy_state_range

    def _observed_velocity(self, qvel: jnp.ndarray) -> jnp.ndarray:
        return jnp.clip(qvel, -OBSERVED_VELOCITY_LIMIT, OBSERVED_VELOCITY_LIMIT)

    def is_healthy(self, qpos: jnp.ndarray, qvel: jnp.ndarray) -> jnp.ndarray:
        def strictly_inside(value, bounds):
            return jnp.all((bounds[0] < value) & (value < bounds[1]))

        healthy = strictly_inside(qpos[1], self.healthy_z_range) & strictly_inside(qpos[2], self.healthy_angle_range)
        if self.healthy_state_range is not None:
            healthy &= strictly_inside(jnp.concatenate([qpos[2:], qvel]), self.healthy_state_range)
        return healthy

    def _survival(self, qpos: jnp.ndarray, qvel: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, Any]]:
        healthy = self.is_healthy(qpos, qvel)
        reward_survive = healthy.astype(qpos.dtype) * self.healthy_reward
        terminated = jnp.logical_and(jnp.logical_not(healthy), self.terminate_when_unhealthy)
        info = {"reward_survive": reward_survive, "z_distance_from_origin": qpos[1] - self.model.qpos0[1]}
        return reward_survive, terminated, info


class Hopper(HealthyLocomotionEnv):
    """gymnasium ``Hopper-v5`` (``envs/mujoco/hopper_v5.py``, ``assets/hopper.xml``) with its default arguments."""

    name = "Hopper-v5"
    xml_file = "hopper.xml"
    frame_skip = 4

    def __init__(
        self,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_state_range: tuple[float, float] = (-100.0, 100.0),
        healthy_z_range: tuple[float, float] = (0.7, float("inf")),
        healthy_angle_range: tuple[float, float] = (-0.2, 0.2),
        reset_noise_scale: float = 5e-3,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        **mjx_options,
    ):
        super().__init__(
            forward_reward_weight, ctrl_cost_weight, healthy_reward, terminate_when_unhealthy, healthy_z_range,
            healthy_angle_range, reset_noise_scale, max_episode_steps, healthy_state_range=healthy_state_range,
            **mjx_options,
        )


class Walker2d(HealthyLocomotionEnv):
    """gymnasium ``Walker2d-v5`` (``envs/mujoco/walker2d_v5.py``, ``assets/walker2d_v5.xml``), default arguments."""

    name = "Walker2d-v5"
    xml_file = "walker2d_v5.xml"
    frame_skip = 4

    def __init__(
        self,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.8, 2.0),
        healthy_angle_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 5e-3,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        **mjx_options,
    ):
        super().__init__(
            forward_reward_weight, ctrl_cost_weight, healthy_reward, terminate_when_unhealthy, healthy_z_range,
            healthy_angle_range, reset_noise_scale, max_episode_steps, **mjx_options,
        )


class HalfCheetah(LocomotionEnv):
    """gymnasium ``HalfCheetah-v5`` (``envs/mujoco/half_cheetah_v5.py``, ``assets/half_cheetah.xml``).

    No health condition (never terminates), observed velocities unclipped, and Gaussian velocity noise at reset.
    """

    name = "HalfCheetah-v5"
    xml_file = "half_cheetah.xml"
    frame_skip = 5

    def __init__(
        self,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 0.1,
        reset_noise_scale: float = 0.1,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        **mjx_options,
    ):
        super().__init__(forward_reward_weight, ctrl_cost_weight, reset_noise_scale, max_episode_steps, **mjx_options)

    def _reset_velocity_noise(self, rng: jax.Array, dtype) -> jnp.ndarray:
        """half_cheetah_v5 ``reset_model``: ``qvel = reset_noise_scale * N(0, 1)``."""
        return self.reset_noise_scale * jax.random.normal(rng, (self.mj_model.nv,), dtype)


LOCOMOTION_ENVS = {"hopper": Hopper, "halfcheetah": HalfCheetah, "walker2d": Walker2d}
_BY_NAME = {**LOCOMOTION_ENVS, **{env_class.name: env_class for env_class in LOCOMOTION_ENVS.values()}}


def make_locomotion_env(name: str, **kwargs) -> LocomotionEnv:
    """``make_locomotion_env("hopper")`` or ``make_locomotion_env("Hopper-v5", ctrl_cost_weight=...)``.

    ``kwargs`` are the gymnasium constructor arguments of that environment (and ``max_episode_steps``), and the
    MJX implementation: ``impl="warp"`` with ``parallel_envs``, the most envs stepped together (see
    :func:`diffrl.envs.base.blank_data`).
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown locomotion environment {name!r}; choose one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name](**kwargs)
