"""MJX Hopper-v5, HalfCheetah-v5 and Walker2d-v5 against the gymnasium 1.4 originals (MuJoCo C, float64) on the CPU.

Each environment compiles two programs once, ``jit(vmap(reset))`` and ``jit(vmap(step))`` over ``BATCH`` rollouts
(an MJX step takes 20-40 s to compile on a small CPU), and runs ``BATCH`` rollouts of ``HORIZON`` steps with fixed
float32 actions ``scale * U(-1, 1)``; scales go up to 1.5, beyond the ctrlrange, so MuJoCo's ctrl clamp and the
control cost on the raw action are exercised. Every rollout starts from MJX's own reset state, written into a
gymnasium environment with ``MujocoEnv.set_state`` (float32 values are exact in float64). The copy goes from MJX
to gymnasium rather than the other way so that no third, forward-only program has to be compiled per environment.

* One step at a time (``ONE_STEP``): before every step the gymnasium environment is set to MJX's state, both take
  the same action, and observation, reward, ``terminated`` and every ``info`` entry must agree, over each rollout up
  to its first termination (259 / 800 / 286 steps for hopper / cheetah / walker). MJX runs float32: one step
  differs from MuJoCo C by ~1e-6 in free flight, but the contact and joint-limit solves amplify float32 rounding
  to up to 1.7e-3 in HalfCheetah's joint velocities (|v| ~ 4; a float64 MJX run agrees to 1e-13, so this is
  rounding, not a modelling difference). Observations: ``rtol = atol = 1e-3`` (worst case a third of it).
  Rewards and ``info`` entries: ``rtol = 1e-5, atol = 1e-4`` (worst case 8e-6); tight enough that doubling
  ``ctrl_cost_weight`` (a change of 1e-3 |a|^2 in hopper and walker) fails, see
  ``test_tolerance_catches_a_wrong_ctrl_cost_weight``.
* Open loop (``OPEN_LOOP``): gymnasium starts from MJX's reset state and both run freely, which checks the state
  MJX carries from step to step. Hopper and Walker2d stay within 4e-4 (observations) and 2e-5 (rewards) until
  termination or ``HORIZON``; HalfCheetah is chaotic (even a float64 MJX run leaves MuJoCo C's trajectory,
  1e-16 -> 1, within ~180 steps of random actions, float32 within ~15), so it is compared for its first
  ``OPEN_LOOP_STEPS`` = 10 steps (error up to 5e-3). Tolerances ``rtol = atol = 1e-2`` (observations) and
  ``1e-3`` (rewards, ``info``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.envs.base import EnvState
from diffrl.envs.gym_fallback import evaluate_gym
from diffrl.envs.locomotion import HalfCheetah, Hopper, LocomotionEnv, Walker2d, make_locomotion_env
from diffrl.experts.training import train_sac

# All three in the suite: with MJX's line search stopping when converged (mjx_contact.use_early_exit_linesearch) the
# Walker2d and HalfCheetah parity checks take ~40 s together on the suite's 2-core CPU.
# Hopper also through MJX's Warp implementation (MuJoCo Warp's kernels, here on the CPU; ~40 s with a cold kernel
# cache).
ROLLOUT_PARAMS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Hopper-v5:warp")
BATCH = 8
HORIZON = 100
ACTION_SCALES = np.array([1.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.1, 1.5])
# The suite compiles at backend optimisation level 0 (conftest); the step runs HORIZON times, and at level 1 a
# Hopper step takes ~20 ms instead of ~0.9 s for the same ~47 s compile.
STEP_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``(rtol, atol)`` of ``np.testing.assert_allclose`` for observations and for rewards and ``info`` entries."""

    obs: tuple[float, float]
    scalars: tuple[float, float]


ONE_STEP = Tolerance(obs=(1e-3, 1e-3), scalars=(1e-5, 1e-4))
OPEN_LOOP = Tolerance(obs=(1e-2, 1e-2), scalars=(1e-3, 1e-3))
OPEN_LOOP_STEPS = {"Hopper-v5": HORIZON, "HalfCheetah-v5": 10, "Walker2d-v5": HORIZON}


@dataclasses.dataclass
class MjxRollouts:
    """``BATCH`` MJX rollouts: the state before every step (index ``t``) and what step ``t`` returned."""

    env: LocomotionEnv
    batch_step: Callable[[EnvState, np.ndarray], EnvState]
    initial: EnvState  # the batched reset state
    actions: np.ndarray  # [BATCH, HORIZON, nu]
    qpos: np.ndarray  # [BATCH, HORIZON + 1, nq]: before step t (t = 0 is the reset state)
    qvel: np.ndarray
    obs: np.ndarray  # [BATCH, HORIZON, obs]: after step t
    reward: np.ndarray
    terminated: np.ndarray
    info: dict

    def compared_steps(self, rollout: int) -> int:
        """Steps up to and including the first termination (gymnasium would be reset after it)."""
        ended = np.flatnonzero(self.terminated[rollout])
        return int(ended[0]) + 1 if ended.size else HORIZON


@functools.cache
def mjx_rollouts(gym_id: str, impl: str = "jax") -> MjxRollouts:
    env = make_locomotion_env(gym_id, impl=impl, parallel_envs=BATCH)
    state = initial = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), BATCH))
    uniform = np.random.default_rng(0).uniform(-1, 1, (BATCH, HORIZON, env.action_size))
    actions = (ACTION_SCALES[:, None, None] * uniform).astype(np.float32)
    batch_step = jax.jit(jax.vmap(env.step)).lower(initial, actions[:, 0]).compile(STEP_COMPILER_OPTIONS)
    trace = []
    for t in range(HORIZON):
        before = (state.data.qpos, state.data.qvel)
        state = batch_step(state, actions[:, t])
        trace.append(jax.device_get((before, state.obs, state.reward, state.terminated, state.info)))
    final = jax.device_get((state.data.qpos, state.data.qvel))
    (qpos, qvel), obs, reward, terminated, info = jax.tree.map(lambda *steps: np.stack(steps, axis=1), *trace)
    return MjxRollouts(
        env=env, batch_step=batch_step, initial=initial, actions=actions,
        qpos=np.concatenate([qpos, final[0][:, None]], axis=1), qvel=np.concatenate([qvel, final[1][:, None]], axis=1),
        obs=obs, reward=reward, terminated=terminated, info=info,
    )


def gymnasium_env(gym_id: str, **kwargs):
    env = gymnasium.make(gym_id, **kwargs)
    env.reset(seed=0)
    return env


def set_gymnasium_state(env, qpos, qvel) -> None:
    env.unwrapped.set_state(np.array(qpos, np.float64), np.array(qvel, np.float64))


def one_step_gymnasium(rollouts: MjxRollouts, rollout: int, gym_id: str, **kwargs) -> dict:
    """gymnasium's outputs of each step taken from MJX's state before that step."""
    env = gymnasium_env(gym_id, **kwargs)
    outputs = []
    for t in range(rollouts.compared_steps(rollout)):
        set_gymnasium_state(env, rollouts.qpos[rollout, t], rollouts.qvel[rollout, t])
        outputs.append(env.step(rollouts.actions[rollout, t]))
    return stack_step_outputs(outputs)


def open_loop_gymnasium(rollouts: MjxRollouts, rollout: int, gym_id: str, steps: int) -> dict:
    """gymnasium's own rollout from MJX's reset state with the same actions."""
    env = gymnasium_env(gym_id)
    set_gymnasium_state(env, rollouts.qpos[rollout, 0], rollouts.qvel[rollout, 0])
    return stack_step_outputs([env.step(rollouts.actions[rollout, t]) for t in range(steps)])


def stack_step_outputs(outputs) -> dict:
    obs, reward, terminated, truncated, infos = zip(*outputs)
    return {
        "obs": np.stack(obs), "reward": np.array(reward), "terminated": np.array(terminated),
        "truncated": np.array(truncated), "info": {key: np.array([info[key] for info in infos]) for key in infos[0]},
    }


def assert_rollout_matches(rollouts: MjxRollouts, rollout: int, expected: dict, tolerance: Tolerance) -> None:
    steps = len(expected["reward"])
    where = f"{rollouts.env.name} rollout {rollout} (action scale {ACTION_SCALES[rollout]})"
    np.testing.assert_array_equal(rollouts.terminated[rollout, :steps], expected["terminated"], err_msg=where)
    assert not expected["truncated"].any()
    np.testing.assert_allclose(rollouts.obs[rollout, :steps], expected["obs"], *tolerance.obs, err_msg=f"{where}: obs")
    np.testing.assert_allclose(
        rollouts.reward[rollout, :steps], expected["reward"], *tolerance.scalars, err_msg=f"{where}: reward"
    )
    assert set(rollouts.info) == set(expected["info"])
    for key, value in expected["info"].items():
        actual = rollouts.info[key][rollout, :steps]
        np.testing.assert_allclose(actual, value, *tolerance.scalars, err_msg=f"{where}: {key}")


@pytest.fixture(scope="module", params=ROLLOUT_PARAMS)
def rollouts(request) -> MjxRollouts:
    return mjx_rollouts(*request.param.split(":"))


def test_one_step_parity_with_gymnasium(rollouts):
    compared = 0
    for rollout in range(BATCH):
        expected = one_step_gymnasium(rollouts, rollout, rollouts.env.name)
        assert_rollout_matches(rollouts, rollout, expected, ONE_STEP)
        compared += len(expected["reward"])
    assert compared >= 200, f"only {compared} steps compared"


def test_open_loop_rollout_tracks_gymnasium(rollouts):
    for rollout in range(BATCH):
        steps = min(OPEN_LOOP_STEPS[rollouts.env.name], rollouts.compared_steps(rollout))
        expected = open_loop_gymnasium(rollouts, rollout, rollouts.env.name, steps)
        assert_rollout_matches(rollouts, rollout, expected, OPEN_LOOP)


def test_tolerance_catches_a_wrong_ctrl_cost_weight(rollouts):
    env = rollouts.env
    wrong = one_step_gymnasium(rollouts, 0, env.name, ctrl_cost_weight=2 * env.ctrl_cost_weight)
    with pytest.raises(AssertionError, match=": reward\n"):
        assert_rollout_matches(rollouts, 0, wrong, ONE_STEP)


def test_vmapped_reset_draws_distinct_states_with_gymnasium_noise(rollouts):
    env, initial = rollouts.env, rollouts.initial
    reference = gymnasium_env(env.name).unwrapped
    qpos_noise = rollouts.qpos[:, 0] - reference.init_qpos
    qvel_noise = rollouts.qvel[:, 0] - reference.init_qvel
    scale = env.reset_noise_scale
    assert len({row.tobytes() for row in rollouts.qpos[:, 0]}) == BATCH
    assert np.all(np.abs(qpos_noise) <= scale * (1 + 1e-6))  # U(-s, s) in every environment
    if env.name == "HalfCheetah-v5":  # s * N(0, 1): 72 draws, some beyond s
        assert np.abs(qvel_noise).max() > scale and np.abs(qvel_noise).max() < 5 * scale
    else:
        assert np.all(np.abs(qvel_noise) <= scale * (1 + 1e-6))
    assert initial.obs.shape == (BATCH, env.observation_size) == (BATCH, *reference.observation_space.shape)
    np.testing.assert_array_equal(initial.step, 0)
    assert not initial.terminated.any() and not initial.truncated.any()
    assert np.isfinite(rollouts.obs).all()


def test_truncation_at_max_episode_steps(rollouts):
    env = rollouts.env
    assert env.max_episode_steps == gymnasium.spec(env.name).max_episode_steps == 1000
    steps_so_far = jnp.array([0, 1, 997, 998, 999, 1000, 5, 998], jnp.int32)
    late = rollouts.batch_step(rollouts.initial.replace(step=steps_so_far), rollouts.actions[:, 0])
    np.testing.assert_array_equal(late.step, steps_so_far + 1)
    np.testing.assert_array_equal(late.truncated, steps_so_far + 1 >= 1000)  # gymnasium's TimeLimit
    np.testing.assert_array_equal(late.terminated, rollouts.terminated[:, 0])  # kept apart from truncation
    np.testing.assert_array_equal(late.obs, rollouts.obs[:, 0])


@pytest.mark.parametrize("gym_id", [name for name in ROLLOUT_PARAMS if ":" not in name])
def test_the_gymnasium_evaluator_scores_a_policy_as_the_mjx_rollout_does(gym_id):
    """``diffrl evaluate``'s two backends on the same linear feedback policy over 8 episodes of at most 200
    steps: the MJX rollout (the compiled step, from MJX's resets) and gymnasium's envs (seeds 0..7, other reset
    noise) give the same mean return within noise, and the zero policy does not. (Not for the Warp step, which
    costs ~0.2 s a call from Python on the CPU; the one-step and open-loop tests check it.)"""
    rollouts = mjx_rollouts(gym_id)
    env = rollouts.env
    gains = np.random.default_rng(1).normal(0, 0.3, (env.observation_size, env.action_size)).astype(np.float32)

    def mjx_mean_return(gain):
        state, total, alive = rollouts.initial, np.zeros(BATCH), np.ones(BATCH, bool)
        for _ in range(200):
            state = rollouts.batch_step(state, np.clip(np.asarray(state.obs) @ gain, -1, 1))
            total += np.where(alive, np.asarray(state.reward), 0.0)
            alive &= ~np.asarray(state.terminated)
        return total.mean(), total.std() / np.sqrt(BATCH)

    mjx, mjx_stderr = mjx_mean_return(gains)
    gym_returns = evaluate_gym(env.name, lambda obs: (), lambda s, obs, t: (np.clip(obs @ gains, -1, 1), s),
                               episodes=BATCH, num_envs=BATCH, max_episode_steps=200)["returns"]
    tolerance = 3 * np.hypot(mjx_stderr, gym_returns.std() / np.sqrt(BATCH)) + 0.02 * abs(mjx)
    assert abs(gym_returns.mean() - mjx) < tolerance
    still, _ = mjx_mean_return(0 * gains)  # no action: the runners stand (or lie) still
    assert abs(still - mjx) > tolerance


@pytest.mark.parametrize(
    "name,env_class",
    [("hopper", Hopper), ("Hopper-v5", Hopper), ("halfcheetah", HalfCheetah), ("HalfCheetah-v5", HalfCheetah),
     ("walker2d", Walker2d), ("Walker2d-v5", Walker2d)],
)
def test_names_sizes_and_action_bounds_match_gymnasium(name, env_class):
    env = make_locomotion_env(name)
    reference = gymnasium.make(env.name)
    assert type(env) is env_class
    assert (env.observation_size,) == reference.observation_space.shape
    assert (env.action_size,) == reference.action_space.shape
    np.testing.assert_array_equal(env.action_low, reference.action_space.low)
    np.testing.assert_array_equal(env.action_high, reference.action_space.high)
    assert env.dt == pytest.approx(reference.unwrapped.dt)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="hopper, halfcheetah, walker2d, Hopper-v5, HalfCheetah-v5, Walker2d-v5"):
        make_locomotion_env("Ant-v5")


def test_warp_needs_the_number_of_envs_stepped_together_and_sac_refuses_it(tmp_path):
    for missing in (None, 0):
        with pytest.raises(ValueError, match="impl='warp' needs parallel_envs"):
            make_locomotion_env("hopper", impl="warp", parallel_envs=missing)
    with pytest.raises(ValueError, match="unknown MJX implementation 'cpp'; choose one of jax, warp"):
        make_locomotion_env("hopper", impl="cpp")
    with pytest.raises(ValueError, match="train_sac steps MJX's JAX implementation only, not 'warp'"):
        train_sac(make_locomotion_env("hopper", impl="warp", parallel_envs=2), tmp_path, steps=10, backend="mjx")
