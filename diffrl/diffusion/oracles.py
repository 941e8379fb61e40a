"""Exact denoisers for Gaussian-mixture data: closed-form ``E[x_0 | x_t]`` for testing and benchmarking samplers.

For data ``x_0 ~ sum_k pi_k N(mu_k, diag(v_k))`` and ``x_t = alpha_t x_0 + sigma_t eps``:
``p(x_t) = sum_k pi_k N(x_t; alpha_t mu_k, alpha_t^2 v_k + sigma_t^2)`` and
``E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + alpha_t v_k / (alpha_t^2 v_k + sigma_t^2) (x_t - alpha_t mu_k))``,
with ``r_k`` the posterior responsibilities. A single component gives the Gaussian case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffrl.diffusion.forward import eps_from_x0
from diffrl.diffusion.schedules import Schedule


def _components(weights, means, variances, dtype=jnp.float32):
    weights = jnp.asarray(weights, dtype)
    means = jnp.atleast_2d(jnp.asarray(means, dtype))
    variances = jnp.broadcast_to(jnp.asarray(variances, dtype), means.shape)
    return weights / jnp.sum(weights), means, variances


def mixture_log_density(x, weights, means, variances, alpha=1.0, sigma=0.0):
    """``log p_t(x)`` of the noised mixture for ``x [B, D]`` (``alpha=1, sigma=0``: the data density)."""
    weights, means, variances = _components(weights, means, variances)
    alpha = jnp.reshape(alpha, (-1, 1, 1))
    var = alpha**2 * variances[None] + jnp.reshape(sigma, (-1, 1, 1)) ** 2  # [B|1, K, D]
    diff = x[:, None, :] - alpha * means[None]
    log_normal = -0.5 * jnp.sum(diff**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)  # [B, K]
    return jax.scipy.special.logsumexp(log_normal + jnp.log(weights)[None], axis=-1)


def mixture_denoiser(schedule: Schedule, weights, means, variances, prediction: str = "x0", dtype=None):
    """``model_fn(x_t [B, D], t [B], cond) -> E[x_0 | x_t]`` (or the matching eps) for a Gaussian mixture.

    ``dtype``: the arithmetic's dtype (``jnp.bfloat16`` stands in for a network computed in bfloat16: its input,
    every intermediate and its output are rounded to it). The result comes back in ``x``'s dtype (at least
    float32), which is also the arithmetic's when ``dtype`` is None."""

    def model_fn(x, t, cond=None):
        out_dtype = jnp.promote_types(x.dtype, jnp.float32)
        wide = out_dtype if dtype is None else dtype
        pi, mu, v = _components(weights, means, variances, wide)
        alpha = schedule.sqrt_alphas_cumprod[t][:, None, None].astype(wide)
        sigma = schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None].astype(wide)
        x_in = x.astype(wide)
        var = alpha**2 * v[None] + sigma**2
        diff = x_in[:, None, :] - alpha * mu[None]
        log_resp = jnp.log(pi)[None] - 0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=-1)
        resp = jax.nn.softmax(log_resp, axis=-1)[..., None]  # [B, K, 1]
        x0 = jnp.sum(resp * (mu[None] + alpha * v[None] / var * diff), axis=1)
        out = x0 if prediction == "x0" else eps_from_x0(schedule, x_in, t, x0).astype(wide)
        return out.astype(out_dtype)

    return model_fn
