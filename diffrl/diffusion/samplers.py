"""Reverse samplers: DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) as ONE ``jax.lax.scan``.

Every reverse step goes from step ``t`` to an earlier step ``s`` (``s = -1`` is the clean sample) and reads its
coefficients from a :class:`StepTable` built once per configuration:

* DDPM, Ho et al. Eq. 6-7, generalised to any pair ``(t, s)`` as in Nichol & Dhariwal's respacing
  (``beta' = 1 - bar_alpha_t / bar_alpha_s``): ``x_s = c_0 x0_hat + c_t x_t + std * z`` with
  ``c_0 = sqrt(bar_alpha_s) beta' / (1 - bar_alpha_t)``,
  ``c_t = sqrt(1 - beta') (1 - bar_alpha_s) / (1 - bar_alpha_t)``,
  ``std^2 = beta' (1 - bar_alpha_s) / (1 - bar_alpha_t)`` (``variance='posterior'``) or ``beta'``
  (``variance='beta'``, the ``I(t > 1) beta_t`` of LDCQ Algorithm 1).
* DDIM, Song et al. Eq. 12: ``x_s = sqrt(bar_alpha_s) x0_hat + sqrt(1 - bar_alpha_s - std^2) eps_hat + std * z``,
  ``std = eta sqrt((1 - bar_alpha_s) / (1 - bar_alpha_t)) sqrt(1 - bar_alpha_t / bar_alpha_s)``.

One step of the scan (:func:`_reverse_step`): gradient guidance on ``x_t`` -> model (with classifier-free
guidance) -> ``(x0_hat, eps_hat)`` -> energy guidance on ``eps_hat`` -> optional clipping of ``x0_hat`` ->
transition -> inpainting. After the chain, ``extra_steps`` more deterministic steps at ``t = 0`` (the
"Diffusion-X" steps of LDCQ App. E, Pearce et al. 2023). Warm start (Diffuser Sec. 5.4) starts the scan from a
partially noised previous plan at ``start_step`` instead of ``N``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffrl.diffusion.forward import PREDICTIONS, eps_from_x0, q_sample, split_prediction, x0_from_eps
from diffrl.diffusion.guidance import ClassifierFreeGuidance, EnergyGuidance, GradientGuidance, Inpainting
from diffrl.diffusion.schedules import Schedule

ModelFn = Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray]
METHODS = ("ddpm", "ddim")
VARIANCES = ("posterior", "beta")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings (hashable, so a jitted planner compiles once per configuration).

    method: 'ddpm' or 'ddim'. steps: number of reverse steps (None = every step of the schedule; fewer steps
    are evenly spaced). eta: DDIM stochasticity (0 = deterministic). prediction: what the model outputs,
    'eps' or 'x0'. variance: DDPM step variance, 'posterior' (tilde beta) or 'beta'. clip_x0: clip x0_hat to
    [-clip_x0, clip_x0]. temperature: multiplies every step's variance (low-temperature sampling,
    LatentDiffuser App. B.2). extra_steps: deterministic steps at t = 0 after the chain (LDCQ App. E).
    return_chain: also return every intermediate x.
    """

    method: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    prediction: str = "eps"
    variance: str = "posterior"
    clip_x0: float | None = None
    temperature: float = 1.0
    extra_steps: int = 0
    return_chain: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"sampler method must be one of {METHODS}, got {self.method!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be a positive integer or None, got {self.steps}")
        if self.extra_steps < 0:
            raise ValueError(f"extra_steps must be >= 0, got {self.extra_steps}")
        if self.eta < 0 or self.temperature < 0:
            raise ValueError("eta and temperature must be non-negative")


@struct.dataclass
class StepTable:
    """Per-step coefficients, stacked along the scan axis (all shape ``[S]``)."""

    t: jnp.ndarray  # model timestep input
    coef_x0: jnp.ndarray
    coef_xt: jnp.ndarray
    coef_eps: jnp.ndarray
    std: jnp.ndarray  # noise standard deviation of the step
    guide_variance: jnp.ndarray  # clipped posterior variance at t, for GradientGuidance.scale_by_std
    sigma: jnp.ndarray  # sqrt(1 - bar_alpha_t), for EnergyGuidance


def timestep_sequence(num_steps: int, start_step: int, steps: int | None) -> np.ndarray:
    """Descending model timesteps ``start_step - 1 .. 0``, all of them or ``steps`` evenly spaced ones."""
    if not 1 <= start_step <= num_steps:
        raise ValueError(f"start_step must lie in [1, {num_steps}], got {start_step}")
    if steps is None or steps >= start_step:
        return np.arange(start_step - 1, -1, -1)
    # always begins at start_step - 1, the noise level of the initial sample
    return np.unique(np.round(np.linspace(start_step - 1, 0, steps)).astype(np.int64))[::-1]


def step_table(schedule: Schedule, config: SamplerConfig, start_step: int | None = None) -> StepTable:
    """Build the coefficient table of the whole chain, extra steps at ``t = 0`` appended."""
    n = schedule.num_steps
    ts = timestep_sequence(n, n if start_step is None else start_step, config.steps)
    ts = np.concatenate([ts, np.zeros(config.extra_steps, np.int64)])
    prev = np.concatenate([ts[1 : len(ts) - config.extra_steps], -np.ones(config.extra_steps + 1, np.int64)])
    ab_t = schedule.alphas_cumprod[ts]
    ab_s = jnp.where(prev >= 0, schedule.alphas_cumprod[np.maximum(prev, 0)], 1.0)
    if config.method == "ddpm":
        beta = 1.0 - ab_t / ab_s
        coef_x0 = jnp.sqrt(ab_s) * beta / (1.0 - ab_t)
        coef_xt = jnp.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t)
        coef_eps = jnp.zeros_like(ab_t)
        variance = beta * (1.0 - ab_s) / (1.0 - ab_t) if config.variance == "posterior" else beta
    else:
        variance = config.eta**2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)
        coef_x0 = jnp.sqrt(ab_s)
        coef_xt = jnp.zeros_like(ab_t)
        coef_eps = jnp.sqrt(jnp.maximum(1.0 - ab_s - variance, 0.0))
    std = jnp.where(prev >= 0, jnp.sqrt(variance * config.temperature), 0.0)
    return StepTable(
        t=jnp.asarray(ts, jnp.int32),
        coef_x0=coef_x0,
        coef_xt=coef_xt,
        coef_eps=coef_eps,
        std=std,
        guide_variance=jnp.exp(schedule.posterior_log_variance_clipped[ts]),
        sigma=schedule.sqrt_one_minus_alphas_cumprod[ts],
    )


def _model_output(model_fn: ModelFn, x, t, cond, cfg: ClassifierFreeGuidance | None):
    """One model call; with CFG the conditional and null batches go through together."""
    if cfg is None:
        return model_fn(x, t, cond)
    batch = x.shape[0]
    both = jax.tree_util.tree_map(lambda c, n: jnp.concatenate([c, jnp.broadcast_to(n, c.shape)]), cond, cfg.null_cond)
    out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
    return cfg.combine(out[:batch], out[batch:])


def _reverse_step(
    schedule: Schedule,
    config: SamplerConfig,
    model_fn: ModelFn,
    cond,
    inpainting: Inpainting | None,
    cfg: ClassifierFreeGuidance | None,
    gradient_guidance: GradientGuidance | None,
    energy_guidance: EnergyGuidance | None,
    x: jnp.ndarray,
    guide_values: jnp.ndarray | None,
    row: StepTable,
    rng: jax.Array,
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """One reverse step; returns ``x_s`` and the objective of the step's last guide call (``guide_values``, the
    previous step's, when there is no gradient guidance)."""
    t = jnp.full((x.shape[0],), row.t, jnp.int32)
    constrain = inpainting if inpainting is not None else (lambda y: y)

    if gradient_guidance is not None:
        g = gradient_guidance

        def guide(_, carry):
            y, _ = carry
            values, grad = g.value_and_gradient(y, t)
            if g.scale_by_std:
                grad = row.guide_variance * grad
            return constrain(y + g.scale * grad), values.astype(jnp.float32)

        def stopped(y):  # the official code zeroes the gradient: every guide call sees the same y
            return constrain(y), g.objective(y, t).astype(jnp.float32)

        x, guide_values = jax.lax.cond(row.t < g.t_stopgrad, stopped,
                                       lambda y: jax.lax.fori_loop(0, g.n_steps, guide, (y, guide_values)), x)

    out = _model_output(model_fn, x, t, cond, cfg)
    x0, eps = split_prediction(schedule, config.prediction, x, t, out)
    if energy_guidance is not None:
        eps = eps - energy_guidance.scale * row.sigma * energy_guidance.gradient(x, t)
        x0 = x0_from_eps(schedule, x, t, eps)
    if config.clip_x0 is not None:
        x0 = jnp.clip(x0, -config.clip_x0, config.clip_x0)
        eps = eps_from_x0(schedule, x, t, x0)
    mean = row.coef_x0 * x0 + row.coef_xt * x + row.coef_eps * eps
    noise = jax.random.normal(rng, x.shape, x.dtype)
    return constrain(mean + row.std * noise), guide_values


def sample(
    rng: jax.Array,
    model_fn: ModelFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    config: SamplerConfig = SamplerConfig(),
    cond: Any = None,
    *,
    inpainting: Inpainting | None = None,
    cfg: ClassifierFreeGuidance | None = None,
    gradient_guidance: GradientGuidance | None = None,
    energy_guidance: EnergyGuidance | None = None,
    x_init: jnp.ndarray | None = None,
    start_step: int | None = None,
    return_guide_values: bool = False,
):
    """Draw ``shape[0]`` samples by running the whole reverse chain inside one ``lax.scan``.

    ``model_fn(x_t, t, cond)`` returns the prediction named by ``config.prediction``. ``x_init`` (with
    ``start_step``, see :func:`warm_start`) replaces the Gaussian start ``x_N ~ N(0, I)``. Returns ``x_0``, or
    ``(x_0, chain)`` with ``chain[k]`` the state after ``k`` steps when ``config.return_chain``. With
    ``return_guide_values`` (gradient guidance only) ``x_0`` comes with ``J`` of the last guide call (float32), on
    the sample entering the last step: the ``values`` by which the official Diffuser ranks its plans
    (``p_sample_loop``).
    """
    if return_guide_values and (gradient_guidance is None or config.return_chain):
        raise ValueError("return_guide_values needs gradient_guidance and no return_chain")
    table = step_table(schedule, config, start_step)
    rng_init, rng_steps = jax.random.split(rng)
    if x_init is None:
        if start_step is not None:
            raise ValueError("start_step needs x_init (the partially noised plan from warm_start)")
        x_init = jax.random.normal(rng_init, shape, jnp.float32)
    elif tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}")
    if inpainting is not None:
        x_init = inpainting(x_init)

    def body(carry, row_and_rng):
        row, step_rng = row_and_rng
        x, values = _reverse_step(
            schedule, config, model_fn, cond, inpainting, cfg, gradient_guidance, energy_guidance, *carry, row,
            step_rng,
        )
        return (x, values), (x if config.return_chain else None)

    # The main chain's keys do not depend on extra_steps; the extra steps are noise-free (std = 0).
    keys = jax.random.split(rng_steps, table.t.shape[0] - config.extra_steps)
    keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (config.extra_steps,) + keys.shape[1:])])
    values = None if gradient_guidance is None else jnp.zeros((shape[0],), jnp.float32)
    (x0, values), chain = jax.lax.scan(body, (x_init, values), (table, keys))
    if config.return_chain:
        return x0, jnp.concatenate([x_init[None], chain])
    return (x0, values) if return_guide_values else x0


def warm_start(rng: jax.Array, schedule: Schedule, previous: jnp.ndarray, start_step: int) -> jnp.ndarray:
    """Diffuser Sec. 5.4: noise a previous plan forward to step ``start_step`` (``q(x_k | x_0)``, 1-indexed k).

    Pass the result as ``x_init`` with the same ``start_step`` to :func:`sample`, which then denoises only
    ``start_step`` steps instead of ``N``.
    """
    if not 1 <= start_step <= schedule.num_steps:
        raise ValueError(f"start_step must lie in [1, {schedule.num_steps}], got {start_step}")
    t = jnp.full((previous.shape[0],), start_step - 1, jnp.int32)
    return q_sample(schedule, previous, t, jax.random.normal(rng, previous.shape, previous.dtype))
