"""Conditioning hooks applied inside the reverse-diffusion scan.

Each hook is a pytree (its arrays may be traced); callables are static fields. Build hooks inside the jitted
function that calls the sampler (a planner, a train step) so a closure over parameters is traced, not hashed.

* :class:`Inpainting` -- overwrite fixed entries after every step (Diffuser Sec. 3.3, Algorithm 1 line 10).
* :class:`ClassifierFreeGuidance` -- ``out = out(null) + w (out(cond) - out(null))`` (Ho & Salimans 2021;
  LDCQ Algorithm 1, where ``w = 1`` is plain conditional sampling).
* :class:`GradientGuidance` -- ascend a differentiable objective ``J(x_t, t)`` before each step, as the official
  Diffuser code implements Algorithm 1 line 8 (``n_guide_steps``, ``t_stopgrad``, ``scale_grad_by_std``).
* :class:`EnergyGuidance` -- add ``scale * grad f(x_t, t)`` to the score, i.e. ``eps <- eps - scale sigma_t grad f``
  (contrastive energy guidance of Lu et al. 2023, used by LatentDiffuser Sec. 4.2).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import struct

Objective = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # (x_t [B, ...], t [B]) -> [B]


@struct.dataclass
class Inpainting:
    """Entries where ``mask`` is true are replaced by ``values`` (both broadcast against ``x``)."""

    mask: jnp.ndarray
    values: jnp.ndarray

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return jnp.where(self.mask, jnp.asarray(self.values, x.dtype), x)

    @classmethod
    def at_timesteps(
        cls, x_shape: tuple[int, ...], conditions: Mapping[int, jnp.ndarray], feature_start: int = 0
    ) -> "Inpainting":
        """Fix features ``feature_start : feature_start + k`` at the given horizon indices of ``x [B, H, D]``.

        ``conditions = {0: s0, H - 1: goal}`` with values of shape ``[B, k]`` or ``[k]``: the Diffuser pattern
        (``[a, s]`` layout, states start after the ``action_dim`` action features).
        """
        if len(x_shape) != 3:
            raise ValueError(f"at_timesteps expects x of shape [batch, horizon, features], got {x_shape}")
        batch, horizon, features = x_shape
        mask = jnp.zeros(x_shape, bool)
        values = jnp.zeros(x_shape, jnp.float32)
        for step, value in conditions.items():
            if not -horizon <= step < horizon:
                raise ValueError(f"condition at horizon index {step} is outside a plan of horizon {horizon}")
            value = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch, jnp.shape(value)[-1]))
            stop = feature_start + value.shape[-1]
            if stop > features:
                raise ValueError(f"condition of width {value.shape[-1]} at feature {feature_start} exceeds {features}")
            mask = mask.at[:, step, feature_start:stop].set(True)
            values = values.at[:, step, feature_start:stop].set(value)
        return cls(mask=mask, values=values)

    def __or__(self, other: "Inpainting") -> "Inpainting":
        """Both conditions; where they overlap, ``other``'s value."""
        return Inpainting(mask=self.mask | other.mask, values=jnp.where(other.mask, other.values, self.values))


@struct.dataclass
class ClassifierFreeGuidance:
    """Classifier-free guidance with weight ``weight`` and the null condition ``null_cond`` (same pytree as cond)."""

    null_cond: Any
    weight: float = 1.0

    def combine(self, conditional: jnp.ndarray, unconditional: jnp.ndarray) -> jnp.ndarray:
        return unconditional + self.weight * (conditional - unconditional)


@struct.dataclass
class GradientGuidance:
    """Diffuser value guidance: ``x <- x + scale * Var_t * grad_x J(x, t)``, ``n_steps`` times, before each step.

    ``Var_t`` is the clipped posterior variance when ``scale_by_std`` (official code's ``scale_grad_by_std``);
    steps with ``t < t_stopgrad`` get no guidance (the official code computes the gradient there and zeroes it;
    here only ``J`` is computed). ``objective`` returns one value per sample.
    """

    objective: Objective = struct.field(pytree_node=False)
    scale: float = 1e-3
    t_stopgrad: int = 0
    n_steps: int = struct.field(pytree_node=False, default=1)
    scale_by_std: bool = struct.field(pytree_node=False, default=True)

    def value_and_gradient(self, x: jnp.ndarray, t: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(J(x, t) [B], grad_x sum J)``: the official ``ValueGuide.gradients``' ``(y, grad)``."""
        values, vjp = jax.vjp(lambda y: self.objective(y, t), x)
        return values, vjp(jnp.ones_like(values))[0]


@struct.dataclass
class EnergyGuidance:
    """Energy guidance on the score: ``grad log p_t = grad log q_t + scale * grad_x f(x_t, t)``.

    ``energy`` returns ``f`` per sample (larger is preferred, e.g. the intermediate energy ``f_eta`` of
    LatentDiffuser Eq. 7-8). In eps form: ``eps <- eps - scale * sigma_t * grad_x f``.
    """

    energy: Objective = struct.field(pytree_node=False)
    scale: float = 1.0

    def gradient(self, x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
        return jax.grad(lambda y: jnp.sum(self.energy(y, t)))(x)


def drop_condition(rng: jax.Array, cond: Any, null_cond: Any, drop_prob: float) -> Any:
    """Replace each sample's condition by the null condition with probability ``drop_prob`` (CFG training)."""
    leaves = jax.tree_util.tree_leaves(cond)
    if not leaves:
        raise ValueError("drop_condition needs a non-empty condition")
    batch = leaves[0].shape[0]
    dropped = jax.random.bernoulli(rng, drop_prob, (batch,))

    def choose(c, n):
        keep = dropped.reshape((batch,) + (1,) * (c.ndim - 1))
        return jnp.where(keep, jnp.broadcast_to(n, c.shape), c)

    return jax.tree_util.tree_map(choose, cond, null_cond)
