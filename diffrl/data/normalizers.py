"""Per-dimension normalisers fitted on data, after the official Diffuser code
(jannerm/diffuser, ``diffuser/datasets/normalization.py``).

Each normaliser is a ``flax.struct`` pytree (so it can be closed over or passed into jitted code) with
``normalize``/``unnormalize`` over the last axis and ``to_dict``/:func:`normalizer_from_dict` for saving it
with a checkpoint. Fit with :func:`fit_normalizer` on data of shape ``[N, dim]``.

* ``gaussian`` -- ``(x - mean) / std`` (``GaussianNormalizer``).
* ``limits``   -- ``[min, max] -> [-1, 1]`` (``LimitsNormalizer``; ``unnormalize`` clips to ``[-1, 1]`` first).
* ``cdf``      -- the empirical marginal CDF, ``x -> 2 F(x) - 1`` by linear interpolation between the unique
  data values, and its inverse (``CDFNormalizer``).
* ``none``     -- the raw values (``IdentityNormalizer``; Diffusion-QL's networks read raw D4RL states).

Zero-variance dimensions are guarded: ``gaussian`` uses ``std = 1`` there (the dimension maps to 0), ``limits``
widens ``[v, v]`` to ``[v - 1, v + 1]`` (the official ``SafeLimitsNormalizer`` with ``eps = 1``, applied to the
constant dimension only), and ``cdf`` maps the single value to 1 and back.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

NORMALIZERS = ("gaussian", "limits", "cdf", "none")


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"normalisers are fitted on data of shape [N, dim] with N >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("normalisers cannot be fitted on NaN or inf values")
    return x


@struct.dataclass
class GaussianNormalizer:
    """``(x - mean) / std`` per dimension; ``std = 1`` where the data is constant."""

    mean: jnp.ndarray  # [dim]
    std: jnp.ndarray  # [dim]
    kind: ClassVar[str] = "gaussian"

    @classmethod
    def fit(cls, x) -> "GaussianNormalizer":
        x = _as_2d(x)
        std = x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(mean=jnp.asarray(x.mean(axis=0), jnp.float32), std=jnp.asarray(std, jnp.float32))

    def normalize(self, x):
        return (x - self.mean) / self.std

    def unnormalize(self, x):
        return x * self.std + self.mean

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": np.asarray(self.mean), "std": np.asarray(self.std)}


@struct.dataclass
class LimitsNormalizer:
    """``[mins, maxs] -> [-1, 1]`` per dimension; a constant dimension ``v`` uses ``[v - 1, v + 1]``."""

    mins: jnp.ndarray  # [dim]
    maxs: jnp.ndarray  # [dim]
    kind: ClassVar[str] = "limits"

    @classmethod
    def fit(cls, x) -> "LimitsNormalizer":
        x = _as_2d(x)
        mins, maxs = x.min(axis=0), x.max(axis=0)
        constant = mins == maxs
        mins, maxs = np.where(constant, mins - 1.0, mins), np.where(constant, maxs + 1.0, maxs)
        return cls(mins=jnp.asarray(mins, jnp.float32), maxs=jnp.asarray(maxs, jnp.float32))

    def normalize(self, x):
        return 2.0 * (x - self.mins) / (self.maxs - self.mins) - 1.0

    def unnormalize(self, x):
        """Clip to ``[-1, 1]`` (as the official code does for out-of-range samples), then invert."""
        return (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0 * (self.maxs - self.mins) + self.mins

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mins": np.asarray(self.mins), "maxs": np.asarray(self.maxs)}


@struct.dataclass
class CDFNormalizer:
    """Empirical marginal CDF per dimension: ``x -> 2 F(x) - 1``, ``F`` interpolated linearly between data values.

    As the official ``CDFNormalizer1d``: the knots are the sorted unique values ``q_j`` with cumulative
    probabilities ``F(q_j) = #{x <= q_j} / N``; inputs are clipped to ``[q_min, q_max]`` before the forward map
    and ``(y + 1) / 2`` is clipped to ``[F(q_min), 1]`` before the inverse. The image of the data is therefore
    ``[2 F(q_min) - 1, 1]``, inside ``[-1, 1]``. Dimensions with fewer unique values are padded by repeating
    their last knot ``(q_max, 1)``, which leaves the interpolation unchanged. Memory: ``[U, dim]`` floats for
    ``U`` = the largest number of unique values of a dimension.
    """

    quantiles: jnp.ndarray  # [U, dim] knots q_j, ascending per dimension
    cumprob: jnp.ndarray  # [U, dim] F(q_j), ascending per dimension, ending at 1
    kind: ClassVar[str] = "cdf"

    @classmethod
    def fit(cls, x) -> "CDFNormalizer":
        x = _as_2d(x)
        columns = []
        for values in x.T.astype(np.float32):
            knots, counts = np.unique(values, return_counts=True)
            columns.append((knots, np.cumsum(counts) / values.size))
        num_knots = max(len(knots) for knots, _ in columns)

        def pad(v):
            return np.concatenate([v, np.full(num_knots - len(v), v[-1])])

        quantiles = np.stack([pad(knots) for knots, _ in columns], axis=1)
        cumprob = np.stack([pad(prob) for _, prob in columns], axis=1)
        return cls(quantiles=jnp.asarray(quantiles, jnp.float32), cumprob=jnp.asarray(cumprob, jnp.float32))

    def _per_dimension(self, fn, x):
        flat = jnp.reshape(x, (-1, self.quantiles.shape[1]))
        out = jax.vmap(fn, in_axes=(1, 1, 1), out_axes=1)(flat, self.quantiles, self.cumprob)
        return jnp.reshape(out, jnp.shape(x))

    def normalize(self, x):
        def forward(values, knots, prob):
            return 2.0 * jnp.interp(jnp.clip(values, knots[0], knots[-1]), knots, prob) - 1.0

        return self._per_dimension(forward, x)

    def unnormalize(self, x):
        def inverse(values, knots, prob):
            return jnp.interp(jnp.clip((values + 1.0) / 2.0, prob[0], 1.0), prob, knots)

        return self._per_dimension(inverse, x)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "quantiles": np.asarray(self.quantiles), "cumprob": np.asarray(self.cumprob)}


@struct.dataclass
class IdentityNormalizer:
    """The raw values; ``size`` (the data's dimension) is kept so that the record is not empty."""

    size: jnp.ndarray  # [] int32
    kind: ClassVar[str] = "none"

    @classmethod
    def fit(cls, x) -> "IdentityNormalizer":
        return cls(size=jnp.asarray(_as_2d(x).shape[1], jnp.int32))

    def normalize(self, x):
        return x

    def unnormalize(self, x):
        return x

    def to_dict(self) -> dict:
        return {"kind": self.kind, "size": np.asarray(self.size)}


_CLASSES = {cls.kind: cls for cls in (GaussianNormalizer, LimitsNormalizer, CDFNormalizer, IdentityNormalizer)}

Normalizer = GaussianNormalizer | LimitsNormalizer | CDFNormalizer | IdentityNormalizer


def fit_normalizer(kind: str, x) -> Normalizer:
    """Fit the normaliser ``kind`` (one of :data:`NORMALIZERS`) on ``x`` of shape ``[N, dim]``."""
    if kind not in _CLASSES:
        raise ValueError(f"normalizer kind must be one of {NORMALIZERS}, got {kind!r}")
    return _CLASSES[kind].fit(x)


def normalizer_to_json(normalizer: Normalizer) -> dict:
    """``to_dict()`` with lists instead of arrays, for JSON checkpoint records."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in normalizer.to_dict().items()}


def normalizer_from_dict(state: dict) -> Normalizer:
    """Rebuild a normaliser from its ``to_dict()`` (e.g. read back from a checkpoint)."""
    kind = state.get("kind")
    if kind not in _CLASSES:
        raise ValueError(f"normalizer dict must have 'kind' in {NORMALIZERS}, got {kind!r}")
    cls = _CLASSES[kind]
    fields = [field.name for field in dataclasses.fields(cls)]
    missing = [name for name in fields if name not in state]
    if missing:
        raise ValueError(f"{kind} normalizer dict lacks {missing}")
    return cls(**{name: jnp.asarray(state[name], jnp.float32) for name in fields})
