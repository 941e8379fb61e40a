"""What every method provides to the runner: training on a device-resident dataset and a batched policy.

The runner (:mod:`diffrl.train.loop`) compiles ``sample_batch`` and ``update`` into one jitted, sharded scan of
train steps; evaluation (:mod:`diffrl.eval.rollout`) compiles ``policy().init`` and ``policy().act`` with the
environment step into one ``lax.scan``. An agent is rebuilt for evaluation from ``artifacts()`` (normalisers and
the dataset facts), so evaluating a checkpoint needs neither the dataset nor the training run.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import gymnasium as gym
import jax
import ml_collections

from diffrl.data.minari_io import OfflineData
from diffrl.data.store import DatasetStore


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The facts about a dataset that training and evaluation share (saved with every checkpoint)."""

    dataset_id: str
    observation_size: int
    action_size: int
    observation_slices: dict[str, tuple[int, int]] | None
    ref_min_score: float | None
    ref_max_score: float | None
    env_spec: str | None  # gymnasium EnvSpec as JSON
    eval_env_spec: str | None

    @classmethod
    def from_data(cls, data: OfflineData) -> "DatasetInfo":
        slices = None
        if data.observation_slices:
            slices = {k: (s.start, s.stop) for k, s in data.observation_slices.items()}
        return cls(
            dataset_id=data.dataset_id, observation_size=data.observation_size, action_size=data.action_size,
            observation_slices=slices, ref_min_score=data.ref_min_score, ref_max_score=data.ref_max_score,
            env_spec=data.env_spec.to_json() if data.env_spec is not None else None,
            eval_env_spec=data.eval_env_spec.to_json() if data.eval_env_spec is not None else None,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DatasetInfo":
        values = dict(values)
        if values.get("observation_slices"):
            values["observation_slices"] = {k: tuple(v) for k, v in values["observation_slices"].items()}
        return cls(**values)

    def slice(self, key: str | None) -> slice:
        """Columns of the flat observation holding ``key`` (``None``: the whole observation)."""
        if key is None:
            return slice(0, self.observation_size)
        if not self.observation_slices or key not in self.observation_slices:
            available = ", ".join(self.observation_slices or {}) or "none (flat observations)"
            raise ValueError(f"dataset {self.dataset_id} has no observation key {key!r}; available: {available}")
        return slice(*self.observation_slices[key])

    def make_eval_env(self, **overrides):
        """The MJX env of the dataset's evaluation spec (its collection spec when it has none)."""
        from diffrl.envs.registry import make_env

        spec_json = self.eval_env_spec or self.env_spec
        if spec_json is None:
            raise ValueError(f"dataset {self.dataset_id} records no environment to evaluate in")
        return make_env(gym.envs.registration.EnvSpec.from_json(spec_json), **overrides)


class Policy(abc.ABC):
    """A batched policy over ``N`` environments; both methods are pure and traced inside the rollout scan."""

    @abc.abstractmethod
    def init(self, params, rng: jax.Array, obs: jax.Array) -> Any:
        """Policy state for the first observations ``obs [N, obs_dim]`` (e.g. the first plans)."""

    @abc.abstractmethod
    def act(self, params, policy_state, obs: jax.Array, t: jax.Array, rng: jax.Array) -> tuple[jax.Array, Any]:
        """``(actions [N, act_dim], new policy state)`` at episode step ``t`` (a scalar)."""

    def plans_xy(self, policy_state) -> jax.Array | None:
        """Planned ``xy`` paths ``[N, H, 2]`` to draw over a maze, for planners; ``None`` otherwise."""
        return None


class Agent(abc.ABC):
    """One offline RL method: built from a config and a dataset (training) or saved artifacts (evaluation)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DatasetInfo):
        self.config = config
        self.info = info
        self.progress = True  # progress bars of long preparation work (the runner sets it)

    @classmethod
    @abc.abstractmethod
    def from_data(cls, config: ml_collections.ConfigDict, data: OfflineData) -> "Agent": ...

    @classmethod
    @abc.abstractmethod
    def from_artifacts(cls, config: ml_collections.ConfigDict, artifacts: dict) -> "Agent": ...

    @abc.abstractmethod
    def artifacts(self) -> dict:
        """JSON-serialisable facts needed to rebuild the agent (normalisers, dataset info)."""

    def preprocess(self, data: OfflineData) -> OfflineData:
        """Dataset preprocessing before the store is built (default: none)."""
        return data

    def prepare(self, store: DatasetStore) -> Any:
        """The pytree ``sample_batch`` reads (default: the store itself)."""
        return store

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """Examples per train step, over all devices."""

    @abc.abstractmethod
    def init(self, rng: jax.Array) -> Any:
        """The initial train-state pytree."""

    @abc.abstractmethod
    def sample_batch(self, train_data: Any, rng: jax.Array, state: Any = None) -> dict:
        """A minibatch of ``batch_size`` examples gathered on device (every leaf has the batch as axis 0).

        ``state`` is the current train state, for samplers that depend on it (prioritized replay).
        """

    @abc.abstractmethod
    def update(self, state: Any, batch: dict, rng: jax.Array) -> tuple[Any, dict]:
        """One train step: ``(new state, scalar metrics)``."""

    @abc.abstractmethod
    def policy_params(self, state: Any) -> Any:
        """The parameters evaluation uses (the EMA parameters where the method keeps them)."""

    @abc.abstractmethod
    def policy(self) -> Policy: ...

    def make_eval_env(self):
        return self.info.make_eval_env()


def ema_update(step: jax.Array, params, ema_params, decay: float, every: int = 1, start: int = 0):
    """EMA of parameters as the official Diffuser trainer keeps it: every ``every`` steps, a copy of the
    parameters before step ``start``, ``ema <- decay * ema + (1 - decay) * params`` from then on."""
    due = step % every == 0
    blended = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
    target = jax.tree.map(lambda b, p: jax.numpy.where(step < start, p, b), blended, params)
    return jax.tree.map(lambda t, e: jax.numpy.where(due, t, e), target, ema_params)
