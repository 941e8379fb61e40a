"""Forward process and the conversions between what a denoiser predicts (Ho et al. 2020, Sec. 2-3).

All functions take a per-sample step index ``t`` (int array of shape ``[B]``, or a scalar) and broadcast the
schedule's coefficients over the trailing dimensions of ``x``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffrl.diffusion.schedules import Schedule

PREDICTIONS = ("eps", "x0")


def extract(coefficients: jnp.ndarray, t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Gather ``coefficients[t]`` and reshape to broadcast against ``x`` (batch leading)."""
    values = coefficients[jnp.asarray(t, dtype=jnp.int32)]
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim)).astype(x.dtype)


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """Sample ``q(x_t | x_0) = N(sqrt(bar_alpha_t) x_0, (1 - bar_alpha_t) I)`` (Ho et al. Eq. 4)."""
    return extract(schedule.sqrt_alphas_cumprod, t, x0) * x0 + extract(
        schedule.sqrt_one_minus_alphas_cumprod, t, x0
    ) * noise


def x0_from_eps(schedule: Schedule, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    """``x_0 = (x_t - sqrt(1 - bar_alpha_t) eps) / sqrt(bar_alpha_t)`` (Ho et al. Eq. 4 solved for x_0)."""
    return extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    ) * eps


def eps_from_x0(schedule: Schedule, x_t: jnp.ndarray, t: jnp.ndarray, x0: jnp.ndarray) -> jnp.ndarray:
    """``eps = (x_t - sqrt(bar_alpha_t) x_0) / sqrt(1 - bar_alpha_t)``."""
    return (x_t - extract(schedule.sqrt_alphas_cumprod, t, x_t) * x0) / extract(
        schedule.sqrt_one_minus_alphas_cumprod, t, x_t
    )


def split_prediction(schedule: Schedule, prediction: str, x_t, t, model_output):
    """Return ``(x0_hat, eps_hat)`` from a model output of type ``prediction`` ('eps' or 'x0')."""
    if prediction == "eps":
        return x0_from_eps(schedule, x_t, t, model_output), model_output
    if prediction == "x0":
        return model_output, eps_from_x0(schedule, x_t, t, model_output)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def q_posterior(schedule: Schedule, x0: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray):
    """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. Eq. 6-7)."""
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    return mean, extract(schedule.posterior_variance, t, x_t), extract(schedule.posterior_log_variance_clipped, t, x_t)


def sample_timesteps(rng: jax.Array, schedule: Schedule, batch_size: int) -> jnp.ndarray:
    """``t ~ U{0, ..., N-1}`` per sample (Diffuser Sec. 3.1, ``i ~ U{1..N}`` in 1-indexed form)."""
    return jax.random.randint(rng, (batch_size,), 0, schedule.num_steps, dtype=jnp.int32)
