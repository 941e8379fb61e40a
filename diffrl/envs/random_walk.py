"""The 1-D random walk of LDCQ App. D: a toy MDP where a unimodal prior over skills fails and a diffusion prior works.

The state ``x`` lies in ``[-10, 10]`` and starts at 0; the action is the signed step, ``a in [-1, 1]``; reaching
either end gives +10 and ends the episode, every other step gives -1; the time limit is 500 steps. Its dataset
(:func:`diffrl.data.random_walk.random_walk_dataset`) steps ``a ~ U([-1, -0.8] U [0.8, 1])``: two modes with no
mass in between.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffrl.envs.base import Env, EnvState

BOUND = 10.0
GOAL_REWARD = 10.0
STEP_REWARD = -1.0
MAX_EPISODE_STEPS = 500


class RandomWalk1D(Env):
    name = "RandomWalk1D"
    observation_size = 1
    action_size = 1
    max_episode_steps = MAX_EPISODE_STEPS
    reports_success = True

    def reset(self, rng: jax.Array) -> EnvState:
        return EnvState(data=None, obs=jnp.zeros((1,), jnp.float32), reward=jnp.zeros((), jnp.float32),
                        terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), step=jnp.zeros((), jnp.int32),
                        rng=rng, info={"success": jnp.zeros((), bool)})

    def step(self, state: EnvState, action: jnp.ndarray) -> EnvState:
        x = jnp.clip(state.obs + jnp.clip(action, -1.0, 1.0), -BOUND, BOUND)
        reached = jnp.abs(x[0]) >= BOUND
        step = state.step + 1
        return state.replace(obs=x, reward=jnp.where(reached, GOAL_REWARD, STEP_REWARD), terminated=reached,
                             truncated=(step >= MAX_EPISODE_STEPS) & ~reached, step=step, info={"success": reached})
