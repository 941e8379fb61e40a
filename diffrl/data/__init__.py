"""The dataset layer: local Minari datasets -> a device-resident store -> jitted minibatch samplers.

* :mod:`diffrl.data.minari_io`   -- load a local Minari dataset into numpy (:class:`OfflineData`), scores, checks.
* :mod:`diffrl.data.store`       -- :class:`DatasetStore` and the jitted samplers (Diffuser windows, LDCQ/DIAR
  chunks, PlanDQ sub-goal sequences and sub-goal-relabelled transitions), returns-to-go.
* :mod:`diffrl.data.normalizers` -- Gaussian, limits and empirical-CDF normalisers (pytrees, savable).
* :mod:`diffrl.data.replay`      -- proportional prioritized replay (``replay.sample``, ``replay.update``).
"""

from diffrl.data import replay
from diffrl.data.minari_io import (
    DatasetCorruptError,
    DatasetNotFoundError,
    OfflineData,
    check_spaces,
    dataset_normalized_score,
    datasets_root,
    download_dataset,
    load_dataset,
    normalized_score,
    reference_scores,
)
from diffrl.data.normalizers import (
    NORMALIZERS,
    CDFNormalizer,
    GaussianNormalizer,
    IdentityNormalizer,
    LimitsNormalizer,
    fit_normalizer,
    normalizer_from_dict,
)
from diffrl.data.replay import PrioritizedReplayState, annealed_beta, init_prioritized_replay
from diffrl.data.store import (
    DatasetStore,
    chunk_starts,
    count_chunks,
    discounted_returns_to_go,
    gather_chunks,
    gather_jumpy_states,
    jumpy_starts,
    make_store,
    returns_to_go,
    sample_chunks,
    sample_subgoal_transitions,
    sample_trajectory_windows,
)

__all__ = [
    "CDFNormalizer",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetStore",
    "GaussianNormalizer",
    "IdentityNormalizer",
    "LimitsNormalizer",
    "NORMALIZERS",
    "OfflineData",
    "PrioritizedReplayState",
    "annealed_beta",
    "check_spaces",
    "dataset_normalized_score",
    "datasets_root",
    "chunk_starts",
    "count_chunks",
    "discounted_returns_to_go",
    "gather_chunks",
    "gather_jumpy_states",
    "jumpy_starts",
    "download_dataset",
    "fit_normalizer",
    "init_prioritized_replay",
    "load_dataset",
    "make_store",
    "normalized_score",
    "normalizer_from_dict",
    "reference_scores",
    "replay",
    "returns_to_go",
    "sample_chunks",
    "sample_subgoal_transitions",
    "sample_trajectory_windows",
]
