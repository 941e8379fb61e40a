"""One train state and one update step for every learned component of every method.

A :class:`TrainState` holds parameters, optimizer state, the step and optionally an exponential moving
average of the parameters: Diffuser's EMA (official trainer: every ``every`` steps, a copy of the parameters
before step ``start``) and the Polyak-averaged target networks of Q-learning (``every = 1, start = 0``,
``decay = rho``) are the same average. :func:`apply_loss` is the one gradient step all stages take: loss and
gradients, optimizer, parameters, average, step, and metrics prefixed by the component (``q/td``, ``vae/kl``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


@dataclasses.dataclass(frozen=True)
class EMA:
    """``ema <- decay * ema + (1 - decay) * params`` every ``every`` steps; before ``start`` a copy of the
    parameters (Diffuser's trainer) or, with ``hold_before_start``, unchanged from its initial value (Diffusion-QL's
    ``step_ema`` returns early)."""

    decay: float
    every: int = 1
    start: int = 0
    hold_before_start: bool = False

    def __call__(self, step: jax.Array, params, ema_params):
        due = step % self.every == 0
        blended = jax.tree.map(lambda e, p: self.decay * e + (1.0 - self.decay) * p, ema_params, params)
        early = ema_params if self.hold_before_start else params
        target = jax.tree.map(lambda b, p: jnp.where(step < self.start, p, b), blended, early)
        return jax.tree.map(lambda t, e: jnp.where(due, t, e), target, ema_params)


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    step: jax.Array
    ema_params: Any = None  # None when the component keeps no average

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation, ema: bool = False) -> "TrainState":
        return cls(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                   ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def ensemble(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` applied independently to each member of parameters stacked on a leading axis (one
    optimizer per network, as for the two Q-networks of clipped double Q-learning)."""
    return optax.GradientTransformation(jax.vmap(optimizer.init), jax.vmap(optimizer.update))


def apply_loss(state: TrainState, optimizer: optax.GradientTransformation, loss_fn: Callable, *args,
               prefix: str, ema: EMA | None = None, learning_rate: Callable | None = None) -> tuple[TrainState, dict]:
    """One gradient step on ``loss_fn(params, *args) -> (loss, aux metrics)``.

    Returns the new state and ``{prefix/loss, prefix/<aux>, prefix/grad_norm[, prefix/learning_rate]}``.
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    ema_params = state.ema_params if ema is None else ema(step, params, state.ema_params)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    if learning_rate is not None:
        metrics["learning_rate"] = learning_rate(state.step)
    new = state.replace(params=params, opt_state=opt_state, step=step, ema_params=ema_params)
    return new, {f"{prefix}/{k}": v for k, v in metrics.items()}
