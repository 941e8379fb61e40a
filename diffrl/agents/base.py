"""Stages and methods: the shape every method of diffrl has.

A :class:`Stage` is one learned component (a denoiser, a value guide, a skill VAE, a latent prior, a Q-function,
...): its train state, the pytree its batches are drawn from, its jitted update, and the parameters it hands on
(``export``). A :class:`Method` declares its stages in order, which earlier stages each one consumes, and how it
acts (:meth:`Method.policy`), as a paper's algorithm box does. The pipeline (:mod:`diffrl.train.pipeline`) trains
the stages one after the other and passes each the exported parameters of the finished stages before it; no
stage or method reads a checkpoint. A method is rebuilt for evaluation from its config, the
:class:`DatasetInfo` and its normaliser, so evaluating needs neither the dataset nor the training run.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np
import optax

from diffrl.data.minari_io import OfflineData
from diffrl.data.normalizers import Normalizer, fit_normalizer
from diffrl.data.preprocess import relabel_rewards, segment_episodes
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
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]

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
            action_low=tuple(np.asarray(data.action_space.low, float).tolist()),
            action_high=tuple(np.asarray(data.action_space.high, float).tolist()),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DatasetInfo":
        values = dict(values)
        if values.get("observation_slices"):
            values["observation_slices"] = {k: tuple(v) for k, v in values["observation_slices"].items()}
        values["action_low"], values["action_high"] = tuple(values["action_low"]), tuple(values["action_high"])
        return cls(**values)

    def to_unit_action(self, action):
        """The action box onto ``[-1, 1]``."""
        low, high = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return 2.0 * (action - low) / (high - low) - 1.0

    def from_unit_action(self, unit_action):
        """``[-1, 1]`` onto the action box."""
        low, high = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return low + (unit_action + 1.0) * 0.5 * (high - low)

    def columns(self, keys: str | tuple[str, ...] | None) -> np.ndarray:
        """Columns of the flat observation holding ``keys``, concatenated in their order (``None``: all)."""
        keys = (keys,) if keys is None or isinstance(keys, str) else tuple(keys)
        return np.concatenate([np.arange(self.slice(k).start, self.slice(k).stop) for k in keys])

    def slice(self, key: str | None) -> slice:
        """Columns of the flat observation holding ``key`` (``None``: the whole observation)."""
        if key is None:
            return slice(0, self.observation_size)
        if not self.observation_slices or key not in self.observation_slices:
            available = ", ".join(self.observation_slices or {}) or "none (flat observations)"
            raise ValueError(f"dataset {self.dataset_id} has no observation key {key!r}; available: {available}")
        return slice(*self.observation_slices[key])


class Policy(abc.ABC):
    """A batched policy over ``N`` environments; both methods are pure and traced inside the rollout scan."""

    @abc.abstractmethod
    def init(self, params, rng: jax.Array, obs: jax.Array) -> Any:
        """Policy state for the first observations ``obs [N, obs_dim]`` (e.g. the first plans)."""

    @abc.abstractmethod
    def act(self, params, policy_state, obs: jax.Array, t: jax.Array, rng: jax.Array) -> tuple[jax.Array, Any]:
        """``(actions [N, act_dim], new policy state)`` at episode step ``t`` (a scalar)."""

    def planned_states(self, policy_state) -> jax.Array | None:
        """The states a planner intends to visit, ``[N, H, state_dim]`` in data units (to draw); else ``None``."""
        return None


class Stage(abc.ABC):
    """One learned component. ``upstream`` maps the names in :attr:`consumes` to their exported parameters."""

    name: ClassVar[str]
    consumes: ClassVar[tuple[str, ...]] = ()
    # where :meth:`prepare` may keep what is slow to remake (the pipeline sets the stage's workdir; None: nowhere)
    cache_dir: pathlib.Path | None = None

    def __init__(self, method: "Method", upstream: dict[str, Any] | None = None):
        self.method = method
        self.config = method.config
        self.train_config = method.train_config(self.name)
        self.upstream = upstream or {}
        missing = [name for name in self.consumes if name not in self.upstream]
        if missing:
            raise ValueError(f"stage {self.name} of {method.name} needs the trained stage(s) {', '.join(missing)}: "
                             "train them first (diffrl train without --stage)")

    @property
    def batch_size(self) -> int:
        """Examples per train step, over all devices."""
        return self.train_config.batch_size

    def prepare(self, store: DatasetStore) -> Any:
        """The pytree :meth:`sample_batch` reads, made once on the host before training (default: the store)."""
        return store

    @abc.abstractmethod
    def init(self, rng: jax.Array) -> Any:
        """The initial train-state pytree."""

    @abc.abstractmethod
    def sample_batch(self, train_data: Any, rng: jax.Array, state: Any) -> dict:
        """A minibatch gathered on device (every leaf has the batch as axis 0); ``state`` serves samplers that
        read it (prioritized replay)."""

    @abc.abstractmethod
    def update(self, state: Any, batch: dict, rng: jax.Array) -> tuple[Any, dict]:
        """One train step: ``(new state, scalar metrics prefixed by the stage name)``."""

    @abc.abstractmethod
    def export(self, state: Any) -> Any:
        """The parameters later stages and the policy use (the averaged ones where the stage keeps them)."""


class AdamStage(Stage):
    """A stage trained with Adam at the constant learning rate ``train.learning_rate`` of its train settings,
    handing on its parameters."""

    def __init__(self, method: "Method", upstream: dict[str, Any] | None = None):
        super().__init__(method, upstream)
        self.learning_rate = optax.constant_schedule(self.train_config.learning_rate)
        self.optimizer = optax.adam(self.learning_rate)

    def export(self, state):
        return state.params


class Method(abc.ABC):
    """A method of a paper: its stages in order and its acting policy."""

    name: ClassVar[str]
    stages: tuple[type[Stage], ...]  # in training order; a method may make it depend on its config

    def __init__(self, config: ml_collections.ConfigDict, info: DatasetInfo, normalizer: Normalizer):
        self.config = config
        self.info = info
        self.normalizer = normalizer
        self.progress = True  # progress bars of long preparation work (the runner sets it)

    @classmethod
    def from_data(cls, config: ml_collections.ConfigDict, data: OfflineData) -> "Method":
        info = DatasetInfo.from_data(data)
        return cls(config, info, fit_normalizer(config.task.normalizer, cls.normalized_columns(config, info, data)))

    @classmethod
    def normalized_columns(cls, config, info: DatasetInfo, data: OfflineData) -> np.ndarray:
        """The ``[N, D]`` rows the normaliser is fitted on (default: the flat observations)."""
        return data.observations

    def preprocess(self, data: OfflineData) -> OfflineData:
        """The dataset's episodes as ``dataset.episodes`` asks (:func:`diffrl.data.preprocess.segment_episodes`), its
        rewards as ``dataset.rewards`` does where the config has it (:func:`diffrl.data.preprocess.relabel_rewards`)."""
        return relabel_rewards(segment_episodes(data, self.config.dataset.episodes),
                               self.config.dataset.get("rewards", "stored"))

    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def stage(self, name: str, upstream: dict[str, Any] | None = None) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage(self, {k: v for k, v in (upstream or {}).items() if k in stage.consumes})
        raise ValueError(f"{self.name} has the stages {', '.join(self.stage_names())}; got {name!r}")

    def train_config(self, stage: str) -> ml_collections.ConfigDict:
        """A stage's train settings: the plain fields of ``config.train`` updated by ``config.train.<stage>``."""
        train = self.config.train
        merged = {k: v for k, v in train.items() if not isinstance(v, ml_collections.ConfigDict)}
        if stage in train:
            merged.update(train[stage].to_dict())
        return ml_collections.ConfigDict(merged)

    @abc.abstractmethod
    def policy(self) -> Policy:
        """The acting policy; its ``params`` are ``{stage name: exported parameters}``."""
