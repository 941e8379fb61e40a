"""Time embeddings and a residual MLP denoiser for low-dimensional data (latents, toy problems)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
    """Transformer positional encoding of the diffusion step (Vaswani et al. 2017; Ho et al. 2020 App. B)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dimension must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding followed by a 2-layer MLP (Diffuser App. C; LDCQ App. A.2.2).

    ``sinusoidal(dim) -> Dense(hidden) -> Mish -> Dense(out_dim)``; ``out_dim=None`` means ``hidden``. The
    Diffuser U-Net's time MLP is ``TimeEmbedding(dim, hidden=4 * dim, out_dim=dim)`` (official ``time_mlp``).
    """

    dim: int = 128
    hidden: int = 256
    out_dim: int | None = None

    @nn.compact
    def __call__(self, t):
        h = sinusoidal_embedding(t, self.dim)
        h = jax.nn.mish(nn.Dense(self.hidden)(h))
        return nn.Dense(self.hidden if self.out_dim is None else self.out_dim)(h)


class MLPDenoiser(nn.Module):
    """``f(x_t, t, cond)`` for ``x_t [B, D]``: residual LayerNorm-Mish blocks, time and condition concatenated."""

    hidden: int = 256
    depth: int = 3
    time_dim: int = 64

    @nn.compact
    def __call__(self, x, t, cond=None):
        features = [x, TimeEmbedding(self.time_dim, self.hidden)(t)]
        if cond is not None:
            features.append(cond)
        h = nn.Dense(self.hidden)(jnp.concatenate(features, axis=-1))
        for _ in range(self.depth):
            h = h + nn.Dense(self.hidden)(jax.nn.mish(nn.LayerNorm()(h)))
        return nn.Dense(x.shape[-1])(jax.nn.mish(nn.LayerNorm()(h)))
