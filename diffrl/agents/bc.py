"""Behaviour cloning: the reference every reported score is shown next to.

An MLP maps the normalised (flattened, so goal-conditioned where the dataset's observations carry the goal)
observation to the action, with ``tanh`` onto the action box, trained by mean squared error on the same
data and evaluated with the same rollout as the diffusion methods.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from diffrl.agents.base import Agent, DatasetInfo, Policy
from diffrl.data.minari_io import OfflineData
from diffrl.data.normalizers import fit_normalizer, normalizer_from_dict, normalizer_to_json
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


@struct.dataclass
class BCState:
    params: Any
    opt_state: Any
    step: jnp.ndarray


class BCAgent(Agent):
    def __init__(self, config, info: DatasetInfo, normalizer, action_low, action_high):
        super().__init__(config, info)
        self.normalizer = normalizer
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.net = MLPPolicy(hidden=tuple(config.model.hidden), action_dim=info.action_size)
        self.learning_rate = optax.constant_schedule(config.train.learning_rate)
        self.optimizer = optax.adam(self.learning_rate)

    @classmethod
    def from_data(cls, config, data: OfflineData) -> "BCAgent":
        normalizer = fit_normalizer(config.model.normalizer, data.observations)
        return cls(config, DatasetInfo.from_data(data), normalizer, data.action_space.low, data.action_space.high)

    @classmethod
    def from_artifacts(cls, config, artifacts: dict) -> "BCAgent":
        return cls(config, DatasetInfo.from_dict(artifacts["dataset"]), normalizer_from_dict(artifacts["normalizer"]),
                   artifacts["action_low"], artifacts["action_high"])

    def artifacts(self) -> dict:
        return {"dataset": self.info.to_dict(), "normalizer": normalizer_to_json(self.normalizer),
                "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size

    def init(self, rng):
        params = self.net.init(rng, jnp.zeros((1, self.info.observation_size)))
        return BCState(params=params, opt_state=self.optimizer.init(params), step=jnp.zeros((), jnp.int32))

    def to_action(self, squashed):
        return self.action_low + (squashed + 1.0) * 0.5 * (self.action_high - self.action_low)

    def sample_batch(self, store: DatasetStore, rng, state=None):
        rows = jax.random.randint(rng, (self.batch_size,), 0, store.num_steps)
        return {"obs": self.normalizer.normalize(store.observations[rows]), "action": store.actions[rows]}

    def update(self, state: BCState, batch: dict, rng):
        def loss_fn(params):
            return jnp.mean(jnp.square(self.to_action(self.net.apply(params, batch["obs"])) - batch["action"]))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": self.learning_rate(state.step)}
        return BCState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), metrics

    def policy_params(self, state: BCState):
        return state.params

    def policy(self) -> Policy:
        return BCPolicy(self)


class BCPolicy(Policy):
    def __init__(self, agent: BCAgent):
        self.agent = agent

    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        a = self.agent
        return a.to_action(a.net.apply(params, a.normalizer.normalize(obs))), policy_state
