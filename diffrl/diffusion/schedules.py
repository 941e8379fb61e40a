"""Noise schedules, precomputed once into an immutable pytree.

Indexing convention (as in the official Diffuser code): diffusion steps are 0-indexed, ``t = 0 .. N-1``,
where index ``t`` is step ``t + 1`` of Ho et al. (2020). ``alphas_cumprod[t]`` is therefore
``bar_alpha_{t+1}`` and ``alphas_cumprod_prev[0] = 1`` (the clean data).

Three schedules are provided:

* ``linear``  -- Ho et al. (2020) Sec. 4: ``beta`` evenly spaced in ``[beta_start, beta_end]`` (LDCQ/DIAR, Table 6).
* ``cosine``  -- Nichol & Dhariwal (2021) Eq. 17: ``bar_alpha(t) = f(t) / f(0)``,
  ``f(t) = cos^2(((t / N) + s) / (1 + s) * pi / 2)``, ``beta`` clipped at 0.999 (Diffuser Sec. 3.1).
* ``vp``      -- the variance-preserving SDE of Song et al. (2021) with linear ``beta(tau)``, discretised at
  ``tau = (t + 1) / N``: ``log alpha(tau) = -beta_min tau / 2 - (beta_max - beta_min) tau^2 / 4``
  (the alpha/sigma view used by LatentDiffuser, App. B.2, after Lu et al. 2023).

Every schedule exposes the alpha/sigma (VP) view: ``alpha_t = sqrt(bar_alpha_t)``,
``sigma_t = sqrt(1 - bar_alpha_t)``, ``SNR_t = alpha_t^2 / sigma_t^2``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import struct

SCHEDULES = ("linear", "cosine", "vp")


@struct.dataclass
class Schedule:
    """Every per-step quantity a DDPM/DDIM sampler or loss needs, shape ``[N]`` each (float32).

    Frozen: a schedule is built once and passed (as a pytree) into jitted code.
    """

    betas: jnp.ndarray
    alphas: jnp.ndarray  # 1 - beta_t
    alphas_cumprod: jnp.ndarray  # bar_alpha_t
    alphas_cumprod_prev: jnp.ndarray  # bar_alpha_{t-1}, with bar_alpha_{-1} = 1
    sqrt_alphas_cumprod: jnp.ndarray  # alpha_t in the VP view
    sqrt_one_minus_alphas_cumprod: jnp.ndarray  # sigma_t in the VP view
    sqrt_recip_alphas_cumprod: jnp.ndarray  # 1 / sqrt(bar_alpha_t)
    sqrt_recipm1_alphas_cumprod: jnp.ndarray  # sqrt(1 / bar_alpha_t - 1)
    posterior_variance: jnp.ndarray  # tilde beta_t, Ho et al. Eq. 7
    posterior_log_variance_clipped: jnp.ndarray  # log tilde beta_t, with t = 0 replaced by t = 1
    posterior_mean_coef1: jnp.ndarray  # coefficient of x_0 in tilde mu_t, Ho et al. Eq. 7
    posterior_mean_coef2: jnp.ndarray  # coefficient of x_t in tilde mu_t
    snr: jnp.ndarray  # alpha_t^2 / sigma_t^2
    log_snr: jnp.ndarray
    name: str = struct.field(pytree_node=False, default="custom")

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha(self) -> jnp.ndarray:
        """``alpha_t`` of the VP view ``z_t = alpha_t z_0 + sigma_t eps`` (LatentDiffuser App. B.2)."""
        return self.sqrt_alphas_cumprod

    @property
    def sigma(self) -> jnp.ndarray:
        """``sigma_t`` of the VP view."""
        return self.sqrt_one_minus_alphas_cumprod


def schedule_from_betas(betas, name: str = "custom") -> Schedule:
    """Precompute all derived quantities from ``beta_1..beta_N`` (computed in float64, stored float32)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 1:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError("every beta must lie in (0, 1)")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    # tilde beta_0 = 0: clip the log at t = 0 to the value at t = 1, as Ho et al.'s code does.
    clipped = np.concatenate([posterior_variance[1:2], posterior_variance[1:]]) if betas.size > 1 else betas
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(clipped),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        snr=snr,
        log_snr=np.log(snr),
    )
    return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in arrays.items()}, name=name)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> np.ndarray:
    """Ho et al. (2020) Sec. 4: ``beta_t`` linear from ``beta_start`` to ``beta_end``."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021) Eq. 17 at ``t = 0..N``: ``f(t) / f(0)``."""
    t = np.arange(num_steps + 1, dtype=np.float64)
    f = np.cos(((t / num_steps) + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021): ``beta_t = 1 - bar_alpha_t / bar_alpha_{t-1}``, clipped to ``max_beta``."""
    ac = cosine_alphas_cumprod(num_steps, s)
    return np.clip(1.0 - ac[1:] / ac[:-1], 0.0, max_beta)


def vp_alphas_cumprod(num_steps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    """Song et al. (2021) VP-SDE: ``bar_alpha(tau) = exp(-beta_min tau - (beta_max - beta_min) tau^2 / 2)``."""
    tau = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
    return np.exp(-beta_min * tau - 0.5 * (beta_max - beta_min) * tau**2)


def vp_betas(num_steps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    ac = np.concatenate([[1.0], vp_alphas_cumprod(num_steps, beta_min, beta_max)])
    return 1.0 - ac[1:] / ac[:-1]


def make_schedule(name: str, num_steps: int, **kwargs) -> Schedule:
    """Build a named schedule: ``linear(beta_start, beta_end)``, ``cosine(s, max_beta)``, ``vp(beta_min, beta_max)``."""
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    builders = {"linear": linear_betas, "cosine": cosine_betas, "vp": vp_betas}
    if name not in builders:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return schedule_from_betas(builders[name](int(num_steps), **kwargs), name=name)
