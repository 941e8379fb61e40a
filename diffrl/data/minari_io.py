"""Loading local Minari datasets into flat numpy arrays (never downloading).

Minari layout (https://minari.farama.org/content/dataset_standards/): an episode of ``N`` steps stores
``N + 1`` observations ``o_0 .. o_N`` (the observation after the last action included) and ``N`` actions,
rewards, terminations and truncations. :func:`load_dataset` turns that into transition-aligned arrays
concatenated over episodes::

    observations[t]      = o_k        (k = 0 .. N-1 of the episode)
    next_observations[t] = o_{k+1}    (so the final observation o_N is next_observations of the last step)
    actions[t], rewards[t], terminations[t], truncations[t]  for step k

Dict observations (goal-conditioned PointMaze/AntMaze) are flattened with
:func:`diffrl.spaces.flatten_observation`, i.e. ``[observation, achieved_goal, desired_goal]``;
``OfflineData.observation_slices`` says where each key lives.

Datasets live under ``$MINARI_DATASETS_PATH`` or, when that variable is unset, ``~/.minari/datasets``
(the rule of ``minari.storage.get_dataset_path``); a dataset ``<id>`` is the folder ``<root>/<id>/data``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import socket
from typing import Any

import gymnasium as gym
import numpy as np

from diffrl.spaces import DICT_OBSERVATION_KEYS, flat_size, flatten_observation, observation_slices


class DatasetNotFoundError(ValueError):
    """The requested Minari dataset is not present under the local datasets root."""


class DatasetCorruptError(ValueError):
    """A Minari dataset file exists but cannot be read, or its content is inconsistent or non-finite."""


@dataclasses.dataclass(frozen=True)
class OfflineData:
    """Transition-aligned numpy arrays of one offline dataset, concatenated over episodes (``T`` steps in all).

    Episode ``e`` occupies the rows ``episode_starts[e] : episode_starts[e] + episode_lengths[e]``.
    ``terminations`` (the MDP ended) and ``truncations`` (time limit or data cut) are kept apart: only a
    termination stops bootstrapping.
    """

    observations: np.ndarray  # [T, obs_dim] float32, o_k
    next_observations: np.ndarray  # [T, obs_dim] float32, o_{k+1}
    actions: np.ndarray  # [T, act_dim] float32
    rewards: np.ndarray  # [T] float32
    terminations: np.ndarray  # [T] bool
    truncations: np.ndarray  # [T] bool
    episode_starts: np.ndarray  # [E] int64, first row of each episode
    episode_lengths: np.ndarray  # [E] int64, number of steps (actions) of each episode
    dataset_id: str
    env_spec: gym.envs.registration.EnvSpec | None  # as Minari stores it (None when the dataset has none)
    eval_env_spec: gym.envs.registration.EnvSpec | None  # the evaluation env (None: evaluate in env_spec)
    ref_min_score: float | None
    ref_max_score: float | None
    observation_space: gym.Space
    action_space: gym.Space
    observation_slices: dict[str, slice] | None  # where each dict key lives; None for flat Box observations

    @classmethod
    def from_arrays(cls, observations, actions, rewards, episode_lengths, *, terminal_last: bool = False,
                    dataset_id: str = "arrays/in-memory-v0", observation_slices: dict[str, slice] | None = None
                    ) -> "OfflineData":
        """An in-memory dataset (no Minari file, no env) from concatenated per-step arrays and episode lengths.

        Each episode's last step is a termination when ``terminal_last``, a truncation otherwise; the next
        observation of a step is the following row (the last row repeats itself).
        """
        lengths = np.asarray(episode_lengths, np.int64)
        obs = np.asarray(observations, np.float32)
        if lengths.sum() != len(obs) or len(actions) != len(obs) or len(rewards) != len(obs):
            raise ValueError(f"episode lengths sum to {lengths.sum()}, but there are {len(obs)} observations, "
                             f"{len(actions)} actions and {len(rewards)} rewards")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        last = np.zeros(len(obs), bool)
        last[starts + lengths - 1] = True
        actions = np.asarray(actions, np.float32)
        return cls(
            observations=obs, next_observations=np.concatenate([obs[1:], obs[-1:]]), actions=actions,
            rewards=np.asarray(rewards, np.float32), terminations=last & terminal_last,
            truncations=last & ~terminal_last, episode_starts=starts, episode_lengths=lengths, dataset_id=dataset_id,
            env_spec=None, eval_env_spec=None, ref_min_score=None, ref_max_score=None,
            observation_space=gym.spaces.Box(-np.inf, np.inf, (obs.shape[1],), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (actions.shape[1],), np.float32),
            observation_slices=observation_slices,
        )

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_lengths.shape[0])

    @property
    def observation_size(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_size(self) -> int:
        return int(self.actions.shape[1])


def datasets_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The local Minari datasets folder: ``root``, else ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    if root is not None:
        return pathlib.Path(root)
    env_root = os.environ.get("MINARI_DATASETS_PATH")
    if env_root is not None:
        return pathlib.Path(env_root)
    return pathlib.Path.home() / ".minari" / "datasets"


def _how_to_get(dataset_id: str) -> str:
    """The command that makes ``dataset_id`` exist: ``diffrl data generate`` for diffrl's own ids
    (``diffrl/<protocol>/<maze>[-dense]-v<N>``), ``diffrl data download`` for Minari's."""
    family, _, name = dataset_id.removeprefix("diffrl/").partition("/")
    if dataset_id.startswith("diffrl/") and family in ("pointmaze", "maze2d") and "-v" in name:
        maze = name.rsplit("-v", 1)[0]
        dense = maze.endswith("-dense")
        return f"Generate it first with: diffrl data generate {family}-{maze.removesuffix('-dense')}" + (
            " --dense" if dense else "")
    return f"Download it first with: diffrl data download {dataset_id}"


def load_dataset(dataset_id: str, root: str | os.PathLike | None = None) -> OfflineData:
    """Load the local Minari dataset ``dataset_id`` (e.g. ``"D4RL/pointmaze/umaze-v2"``) into :class:`OfflineData`.

    Reads ``<root>/<dataset_id>/data`` exactly as ``minari.load_dataset(dataset_id, download=False)`` does,
    with ``root`` from :func:`datasets_root`. Raises :class:`DatasetNotFoundError` when the dataset is absent
    (naming ``diffrl data download <id>``), :class:`DatasetCorruptError` when a file cannot be read (naming the
    file) or when an observation, action or reward is NaN/inf (naming the field and the episode).
    """
    import minari

    base = datasets_root(root)
    data_path = base / dataset_id / "data"
    if not (data_path / "metadata.json").is_file():
        raise DatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not present locally (looked for {data_path}; the datasets root is "
            f"{base}, set by MINARI_DATASETS_PATH or else ~/.minari/datasets). {_how_to_get(dataset_id)}"
        )
    try:
        dataset = minari.MinariDataset(data_path)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise DatasetCorruptError(
            f"cannot read the metadata of Minari dataset {dataset_id!r} ({data_path / 'metadata.json'}): {err}"
        ) from err

    observation_space, action_space = dataset.observation_space, dataset.action_space
    _check_supported_spaces(dataset_id, observation_space, action_space)

    episodes = []
    data_file = _data_file(data_path)
    try:
        for episode in dataset.iterate_episodes():
            episodes.append(_episode_arrays(dataset_id, episode))
    except DatasetCorruptError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise DatasetCorruptError(
            f"cannot read the episodes of Minari dataset {dataset_id!r} ({data_file}): {err}"
        ) from err
    if not episodes:
        raise DatasetCorruptError(f"Minari dataset {dataset_id!r} ({data_file}) holds no episodes")

    lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    slices = None
    if isinstance(observation_space, gym.spaces.Dict):
        slices = observation_slices({key: flat_size(observation_space[key]) for key in DICT_OBSERVATION_KEYS})
    metadata = dataset.storage.metadata
    return OfflineData(
        observations=np.concatenate([ep["observations"][:-1] for ep in episodes]),
        next_observations=np.concatenate([ep["observations"][1:] for ep in episodes]),
        actions=np.concatenate([ep["actions"] for ep in episodes]),
        rewards=np.concatenate([ep["rewards"] for ep in episodes]),
        terminations=np.concatenate([ep["terminations"] for ep in episodes]),
        truncations=np.concatenate([ep["truncations"] for ep in episodes]),
        episode_starts=starts,
        episode_lengths=lengths,
        dataset_id=dataset_id,
        env_spec=dataset.env_spec,
        eval_env_spec=getattr(dataset, "_eval_env_spec", None),
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        observation_space=observation_space,
        action_space=action_space,
        observation_slices=slices,
    )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _remote_host() -> str | None:
    """The host name of Minari's remote when it is Hugging Face (``MINARI_REMOTE``, default ``hf://farama-minari``)
    and reached without a proxy; else None (nothing to check before the download)."""
    from urllib.parse import urlparse

    proxied = any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if proxied or not os.environ.get("MINARI_REMOTE", "hf://farama-minari").startswith("hf://"):
        return None
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname


def _is_network_error(err: BaseException) -> bool:
    """Whether ``err`` or an error it came from is a failed connection (socket errors are OSErrors; the HTTP
    clients under Minari name theirs ``ConnectError``, ``ConnectTimeout``, ...)."""
    while err is not None:
        if isinstance(err, OSError) or any(word in type(err).__name__ for word in ("Connect", "Timeout", "Network")):
            return True
        err = err.__cause__ or err.__context__
    return False


def download_dataset(dataset_id: str) -> pathlib.Path:
    """Download ``dataset_id`` from the Minari remote into the local root (the ``diffrl data download`` command);
    returns its local folder. Without network, or for an id the remote does not have, one ValueError says so."""
    try:
        import minari
        import huggingface_hub  # noqa: F401  (Minari's remote needs it: the dependency minari[hf])
    except ImportError as err:
        raise ValueError(f"downloading needs {err.name}: pip install 'minari[hf]'") from None
    def offline(reason: str) -> ValueError:
        return ValueError(f"cannot reach the Minari remote to download {dataset_id} ({reason}); without network, "
                          "`diffrl data generate` makes the pointmaze-* and maze2d-* datasets locally")

    host = _remote_host()
    if host is not None:
        try:
            socket.getaddrinfo(host, 443)  # fail at once, not after the HTTP client's retries
        except OSError as err:
            raise offline(f"{host}: {err.strerror or err}") from None
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings; the outcome is reported below
    try:
        minari.download_dataset(dataset_id)
    except Exception as err:
        if _is_network_error(err):
            raise offline(_first_line(err)) from None
        raise ValueError(f"cannot download {dataset_id}: {_first_line(err)}") from None
    finally:
        hub_logger.setLevel(level)
    return datasets_root(None).joinpath(*dataset_id.split("/"))


def check_spaces(data: OfflineData, observation_size: int, action_size: int) -> None:
    """Raise ``ValueError`` unless the dataset's flat observation/action sizes equal an environment's."""
    if data.observation_size != observation_size or data.action_size != action_size:
        raise ValueError(
            f"dataset {data.dataset_id!r} has observation size {data.observation_size} and action size "
            f"{data.action_size}, but the environment has observation size {observation_size} and action size "
            f"{action_size}"
        )


def normalized_score(returns, ref_min: float, ref_max: float):
    """D4RL normalised score ``100 * (return - ref_min) / (ref_max - ref_min)`` (D4RL, Fu et al. 2020)."""
    if ref_max == ref_min:
        raise ValueError(f"reference scores must differ, got ref_min = ref_max = {ref_min}")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def reference_scores(data: OfflineData) -> tuple[float, float]:
    """``(ref_min_score, ref_max_score)`` of a loaded dataset; ``ValueError`` if the dataset has none."""
    if data.ref_min_score is None or data.ref_max_score is None:
        raise ValueError(
            f"dataset {data.dataset_id!r} has no reference scores (ref_min_score={data.ref_min_score}, "
            f"ref_max_score={data.ref_max_score}); a normalised score cannot be computed"
        )
    return data.ref_min_score, data.ref_max_score


def dataset_normalized_score(data: OfflineData, returns):
    """:func:`normalized_score` with the reference scores stored in ``data``."""
    return normalized_score(returns, *reference_scores(data))


def _check_supported_spaces(dataset_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    def flat_box(space):
        return isinstance(space, gym.spaces.Box) and len(space.shape) == 1

    def goal(space):  # a 1-D Box, or a dict of them (FrankaKitchen's per-task goals)
        return flat_box(space) or (isinstance(space, gym.spaces.Dict) and all(map(flat_box, space.spaces.values())))

    if isinstance(observation_space, gym.spaces.Dict):
        keys = tuple(observation_space.spaces)
        if set(keys) != set(DICT_OBSERVATION_KEYS) or not flat_box(observation_space["observation"]) or not all(
                goal(observation_space[k]) for k in ("achieved_goal", "desired_goal")):
            raise ValueError(
                f"dataset {dataset_id!r}: dict observations must have exactly the keys {DICT_OBSERVATION_KEYS}, "
                f"1-D Boxes (a goal may be a dict of them), got {observation_space}"
            )
    elif not flat_box(observation_space):
        raise ValueError(
            f"dataset {dataset_id!r}: observations must be a 1-D Box or a goal dict, got {observation_space}"
        )
    if not flat_box(action_space):
        raise ValueError(f"dataset {dataset_id!r}: actions must be a 1-D Box, got {action_space}")


def _episode_arrays(dataset_id: str, episode) -> dict[str, np.ndarray]:
    """Flatten, type and check one Minari ``EpisodeData`` (``N + 1`` observations for ``N`` actions)."""
    observations = episode.observations
    if isinstance(observations, dict):
        for key in DICT_OBSERVATION_KEYS:
            entries = observations[key] if isinstance(observations[key], dict) else {None: observations[key]}
            for name, values in entries.items():
                field = f"observations[{key!r}]" + ("" if name is None else f"[{name!r}]")
                _check_finite(dataset_id, field, episode.id, values)
    else:
        _check_finite(dataset_id, "observations", episode.id, observations)
    _check_finite(dataset_id, "actions", episode.id, episode.actions)
    _check_finite(dataset_id, "rewards", episode.id, episode.rewards)
    arrays = {
        "observations": np.asarray(flatten_observation(observations), dtype=np.float32),
        "actions": np.asarray(episode.actions, dtype=np.float32),
        "rewards": np.asarray(episode.rewards, dtype=np.float32).reshape(-1),
        "terminations": np.asarray(episode.terminations, dtype=bool).reshape(-1),
        "truncations": np.asarray(episode.truncations, dtype=bool).reshape(-1),
    }
    num_steps = arrays["rewards"].shape[0]
    counts = {key: value.shape[0] for key, value in arrays.items()}
    expected = {"observations": num_steps + 1, "actions": num_steps}
    expected.update(terminations=num_steps, truncations=num_steps)
    if num_steps == 0 or any(counts[key] != n for key, n in expected.items()):
        raise DatasetCorruptError(
            f"dataset {dataset_id!r}, episode {episode.id}: expected N + 1 observations and N actions, rewards, "
            f"terminations and truncations with N >= 1, got lengths {counts}"
        )
    return arrays


def _check_finite(dataset_id: str, field: str, episode_id: int, values: Any) -> None:
    values = np.asarray(values)
    finite = np.isfinite(values)
    if not finite.all():
        step = int(np.argwhere(~finite)[0][0])
        raise DatasetCorruptError(
            f"dataset {dataset_id!r}: non-finite value (NaN or inf) in field {field} of episode {episode_id} "
            f"(first at step {step})"
        )


def _data_file(data_path: pathlib.Path) -> pathlib.Path:
    """The main data file of a Minari dataset folder (``main_data.hdf5`` for the default HDF5 format)."""
    hdf5_file = data_path / "main_data.hdf5"
    return hdf5_file if hdf5_file.exists() else data_path


def _optional_float(value) -> float | None:
    return None if value is None else float(value)
