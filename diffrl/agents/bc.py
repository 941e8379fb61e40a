"""Behaviour cloning: the reference every reported score is shown next to.

One stage, ``policy``: an MLP maps the normalised observation (``task.state_key``'s part of it; the whole
flattened observation, goal included, when it is ``None``) to the action, with ``tanh`` onto the action box, trained
by mean squared error on the same data and evaluated with the same rollout as the diffusion methods.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.agents.base import AdamStage, Method, Policy
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.data.store import DatasetStore


class MLPPolicy(nn.Module):
    hidden: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        x = obs
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return jnp.tanh(nn.Dense(self.action_dim)(x))


class PolicyStage(AdamStage):
    name = "policy"

    def init(self, rng):
        m = self.method
        params = m.net.init(rng, jnp.zeros((1, m.state_slice.stop - m.state_slice.start)))
        return TrainState.create(params, self.optimizer)

    def sample_batch(self, store: DatasetStore, rng, state):
        rows = jax.random.randint(rng, (self.batch_size,), 0, store.num_steps)
        return {"obs": self.method.inputs(store.observations[rows]), "action": store.actions[rows]}

    def update(self, state, batch, rng):
        def loss_fn(params):
            actions = self.method.info.from_unit_action(self.method.net.apply(params, batch["obs"]))
            return jnp.mean(jnp.square(actions - batch["action"])), {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class BC(Method):
    name = "bc"
    stages = (PolicyStage,)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        self.net = MLPPolicy(hidden=tuple(config.model.hidden), action_dim=info.action_size)
        self.state_slice = info.slice(config.task.state_key)

    def inputs(self, obs):
        return self.normalizer.normalize(obs)[..., self.state_slice]

    def policy(self) -> Policy:
        return BCPolicy(self)


class BCPolicy(Policy):
    def __init__(self, method: BC):
        self.method = method

    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        m = self.method
        return m.info.from_unit_action(m.net.apply(params["policy"], m.inputs(obs))), policy_state
