"""Denoising training losses (Ho et al. 2020 Eq. 14; LDCQ Sec. 4.2 with Min-SNR-gamma, Hang et al. 2023).

``model_fn(x_t, t, cond) -> output`` is the denoiser with its parameters already bound, so a loss is a pure
function of ``(params, rng, batch)`` once wrapped: ``lambda p: diffusion_loss(partial(net.apply, p), ...)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.diffusion.forward import PREDICTIONS, q_sample, sample_timesteps
from diffrl.diffusion.guidance import Inpainting
from diffrl.diffusion.schedules import Schedule

ModelFn = Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray]


def min_snr_weight(schedule: Schedule, t: jnp.ndarray, prediction: str, gamma: float | None) -> jnp.ndarray:
    """Per-sample loss weight of Min-SNR-gamma (Hang et al. 2023, Eq. 9-10).

    For x0-prediction the weight is ``min(SNR_t, gamma)`` (LDCQ Sec. 4.2); for eps-prediction the same
    weighting of the x0 error reads ``min(SNR_t, gamma) / SNR_t`` on the eps error. ``gamma=None`` gives 1.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if gamma is None:
        return jnp.ones(jnp.shape(t), jnp.float32)
    snr = schedule.snr[t]
    clipped = jnp.minimum(snr, gamma)
    return clipped if prediction == "x0" else clipped / snr


def first_action_weights(horizon: int, transition_dim: int, action_dim: int, action_weight: float) -> np.ndarray:
    """Per-entry loss weights ``[horizon, transition_dim]`` that up-weight the first action (Diffuser code).

    Trajectories are laid out ``[a_t, s_t]`` along the feature axis, actions first, as in the official code.
    """
    if not 0 <= action_dim <= transition_dim:
        raise ValueError(f"action_dim {action_dim} must lie in [0, transition_dim={transition_dim}]")
    weights = np.ones((horizon, transition_dim), np.float32)
    weights[0, :action_dim] = action_weight
    return weights


def diffusion_loss(
    model_fn: ModelFn,
    schedule: Schedule,
    rng: jax.Array,
    x0: jnp.ndarray,
    cond: Any = None,
    *,
    prediction: str = "eps",
    min_snr_gamma: float | None = None,
    loss_weights: jnp.ndarray | None = None,
    inpainting: Inpainting | None = None,
):
    """Weighted denoising loss ``E_{t, eps}[w_t * mean(lambda * (target - model(x_t, t))^2)]``.

    * ``prediction='eps'``: target ``eps`` (Ho et al. Eq. 14, Diffuser Sec. 3.1); ``'x0'``: target ``x_0``
      (LDCQ Sec. 4.2).
    * ``min_snr_gamma``: ``w_t`` of :func:`min_snr_weight` (LDCQ/DIAR use 5).
    * ``loss_weights``: per-entry weights ``lambda`` broadcast against one sample (e.g. ``first_action_weights``).
    * ``inpainting``: the fixed entries are written into ``x_t`` before the model sees it, and for x0-prediction
      into its output too, as the official Diffuser code does.

    Returns ``(loss, aux)`` with the sampled ``t`` and the per-sample losses.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    rng_t, rng_eps = jax.random.split(rng)
    t = sample_timesteps(rng_t, schedule, x0.shape[0])
    noise = jax.random.normal(rng_eps, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    if inpainting is not None:
        x_t = inpainting(x_t)
    output = model_fn(x_t, t, cond)
    if prediction == "x0" and inpainting is not None:
        output = inpainting(output)
    target = noise if prediction == "eps" else x0
    squared = jnp.square(output - target)
    if loss_weights is not None:
        squared = squared * jnp.asarray(loss_weights, squared.dtype)
    per_sample = jnp.mean(squared.reshape(squared.shape[0], -1), axis=-1)
    weight = min_snr_weight(schedule, t, prediction, min_snr_gamma)
    loss = jnp.mean(weight * per_sample)
    return loss, {"t": t, "per_sample_loss": per_sample, "snr_weight": weight}

