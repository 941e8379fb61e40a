"""``diffrl demo``: train the shared diffusion core on a generated dataset, sample, evaluate, plot.

The data is a 2-D mixture of Gaussians on a ring, whose density is known in closed form, so the learned
sampler is judged against the truth: the mean log-density of its samples, how evenly it covers the modes,
and how much of its mass falls between modes. The same samplers driven by the exact denoiser
(:mod:`diffrl.diffusion.oracles`) give the reference that a perfect network would reach.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from tqdm.auto import tqdm

from diffrl import diffusion
from diffrl.diffusion.oracles import mixture_denoiser, mixture_log_density
from diffrl.nets import MLPDenoiser


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: finishes in under a minute on a 2-core CPU."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(num_modes=8, radius=2.0, mode_std=0.1, num_samples=8192)
    c.diffusion = dict(schedule="linear", num_steps=100, prediction="eps")
    c.model = dict(hidden=128, depth=3, time_dim=64)
    c.train = dict(steps=6000, batch_size=256, learning_rate=2e-3, ema_decay=0.995, steps_per_call=250)
    c.eval = dict(num_samples=4096, ddim_steps=20)
    return c


def ring_mixture(num_modes: int, radius: float, mode_std: float):
    """Equal-weight isotropic Gaussians at the vertices of a regular polygon: ``(weights, means, variances)``."""
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return np.full(num_modes, 1.0 / num_modes), means, np.full_like(means, mode_std**2)


def sample_mixture(rng: np.random.Generator, n: int, weights, means, variances) -> np.ndarray:
    modes = rng.choice(len(weights), size=n, p=weights)
    return (means[modes] + np.sqrt(variances[modes]) * rng.standard_normal((n, means.shape[1]))).astype(np.float32)


@struct.dataclass
class TrainState:
    params: dict
    ema_params: dict
    opt_state: optax.OptState
    step: jnp.ndarray


def make_train_chunk(net, schedule, optimizer, data, config):
    """One jitted call runs ``steps_per_call`` train steps in a ``lax.scan`` (minibatches gathered on device)."""
    tc, prediction = config.train, config.diffusion.prediction

    def train_step(state: TrainState, rng):
        rng_idx, rng_loss = jax.random.split(rng)
        batch = data[jax.random.randint(rng_idx, (tc.batch_size,), 0, data.shape[0])]

        def loss_fn(params):
            return diffusion.diffusion_loss(
                functools.partial(net.apply, params), schedule, rng_loss, batch, prediction=prediction
            )[0]

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - tc.ema_decay)
        return TrainState(params, ema, opt_state, state.step + 1), loss

    @functools.partial(jax.jit, donate_argnums=0)
    def train_chunk(state, rng):
        return jax.lax.scan(train_step, state, jax.random.split(rng, tc.steps_per_call))

    return train_chunk


def evaluate_samples(samples, weights, means, variances) -> dict:
    """Closed-form quality measures of 2-D samples against the true mixture."""
    samples = np.asarray(samples)
    dist = np.linalg.norm(samples[:, None, :] - means[None], axis=-1)
    nearest = dist.argmin(-1)
    shares = np.bincount(nearest, minlength=len(weights)) / len(samples)
    std = float(np.sqrt(variances.max()))
    return {
        "mean_log_density": float(jnp.mean(mixture_log_density(jnp.asarray(samples), weights, means, variances))),
        "mode_share_max_error": float(np.abs(shares - weights).max()),
        "off_mode_fraction": float(np.mean(dist.min(-1) > 3 * std)),
    }


def _plot(path: Path, data, panels: dict, losses) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels) + 2, figsize=(4 * (len(panels) + 2), 4))
    for ax, (title, pts) in zip(axes, [("data", data)] + list(panels.items())):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    axes[-1].plot(np.arange(1, len(losses) + 1), losses)
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("train step")
    axes[-1].set_title("denoising loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_workdir(workdir: Path) -> Path:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise SystemExit(f"diffrl demo: cannot write to workdir {workdir} ({err.strerror}); pass --workdir DIR") from None
    return workdir


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder so nothing half-written is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run_demo(config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True) -> dict:
    """Generate data, train a denoiser, sample with DDPM and DDIM, evaluate against the truth, plot."""
    workdir = _check_workdir(Path(workdir))
    dc, tc, ec = config.data, config.train, config.eval
    if tc.steps % tc.steps_per_call:
        raise ValueError(f"train.steps ({tc.steps}) must be a multiple of train.steps_per_call ({tc.steps_per_call})")
    weights, means, variances = ring_mixture(dc.num_modes, dc.radius, dc.mode_std)
    data_np = sample_mixture(np.random.default_rng(config.seed), dc.num_samples, weights, means, variances)
    data = jax.device_put(data_np)

    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    net = MLPDenoiser(**config.model)
    rng = jax.random.PRNGKey(config.seed)
    rng, init_rng = jax.random.split(rng)
    params = net.init(init_rng, data[:1], jnp.zeros((1,), jnp.int32))
    optimizer = optax.adam(optax.cosine_decay_schedule(tc.learning_rate, tc.steps, alpha=0.05))
    state = TrainState(params, jax.tree.map(jnp.copy, params), optimizer.init(params), jnp.zeros((), jnp.int32))
    train_chunk = make_train_chunk(net, schedule, optimizer, data, config)

    losses, start = [], time.perf_counter()
    with tqdm(total=tc.steps, desc="train", unit="step", disable=not progress) as bar:
        for _ in range(tc.steps // tc.steps_per_call):
            rng, chunk_rng = jax.random.split(rng)
            state, chunk_losses = train_chunk(state, chunk_rng)
            losses.extend(np.asarray(chunk_losses).tolist())  # host sync once per chunk
            bar.update(tc.steps_per_call)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    train_seconds = time.perf_counter() - start

    prediction = config.diffusion.prediction
    samplers = {
        "ddpm": diffusion.SamplerConfig(method="ddpm", prediction=prediction),
        f"ddim{ec.ddim_steps}": diffusion.SamplerConfig(method="ddim", steps=ec.ddim_steps, prediction=prediction),
    }
    models = {
        "learned": lambda x, t, c: net.apply(state.ema_params, x, t),
        "exact": mixture_denoiser(schedule, weights, means, variances, prediction=prediction),
    }
    shape = (ec.num_samples, data.shape[1])
    results, panels = {}, {}
    for model_name, model_fn in models.items():
        for sampler_name, sampler_config in samplers.items():
            draw = jax.jit(functools.partial(diffusion.sample, model_fn=model_fn, schedule=schedule, shape=shape,
                                             config=sampler_config))
            samples = draw(jax.random.PRNGKey(config.seed + 1))
            results[f"{model_name}/{sampler_name}"] = evaluate_samples(samples, weights, means, variances)
            if model_name == "learned":
                panels[f"learned, {sampler_name.upper()}"] = samples
    results["data"] = evaluate_samples(data_np[: ec.num_samples], weights, means, variances)

    summary = {
        "task": f"{dc.num_modes}-mode ring mixture, {dc.num_samples} generated samples",
        "train_steps": tc.steps,
        "train_seconds": round(train_seconds, 2),
        "final_loss": losses[-1],
        "device": str(jax.devices()[0].platform),
        "results": results,
        "plot": str(workdir / "demo.png"),
    }
    _atomic_write(workdir / "demo.png", lambda p: _plot(Path(p), data_np, panels, losses))
    _atomic_write(workdir / "summary.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2)))
    return summary


def format_summary(summary: dict) -> str:
    rows = [f"{'samples':<20}{'mean log p':>12}{'mode share err':>16}{'off-mode':>10}"]
    for name, r in summary["results"].items():
        rows.append(
            f"{name:<20}{r['mean_log_density']:>12.3f}{r['mode_share_max_error']:>16.3f}{r['off_mode_fraction']:>10.3f}"
        )
    rows.append(f"trained {summary['train_steps']} steps in {summary['train_seconds']} s on {summary['device']}; "
                f"final loss {summary['final_loss']:.4f}; plot: {summary['plot']}")
    return "\n".join(rows)
