"""Time embeddings and denoisers for low-dimensional data: a residual MLP, Diffusion-QL's action MLP, LDCQ's latent
ResNet with U-Net skips and the small transformer of DIAR's VAE-stage prior."""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.nets.activations import mish
from diffrl.nets.init import dense


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
    dtype: jnp.dtype | None = None  # the Dense layers' computation dtype; the embedding itself is float32
    initialization: str = "flax"  # the Dense layers' (diffrl.nets.init): "flax" or "pytorch" (nn.Linear's)

    @nn.compact
    def __call__(self, t):
        init = self.initialization
        h = mish(dense(self.hidden, self.dim, init, dtype=self.dtype)(sinusoidal_embedding(t, self.dim)))
        return dense(self.hidden if self.out_dim is None else self.out_dim, self.hidden, init, dtype=self.dtype)(h)


class MLPDenoiser(nn.Module):
    """``f(x_t, t, cond)`` for ``x_t [B, D]``: residual LayerNorm-Mish blocks, time and condition concatenated."""

    hidden: int = 256
    depth: int = 3
    time_dim: int = 64

    @nn.compact
    def __call__(self, x, t, cond=None):
        chex.assert_rank(x, 2)
        chex.assert_shape(t, (x.shape[0],))
        features = [x, TimeEmbedding(self.time_dim, self.hidden)(t)]
        if cond is not None:
            features.append(cond)
        h = nn.Dense(self.hidden)(jnp.concatenate(features, axis=-1))
        for _ in range(self.depth):
            h = h + nn.Dense(self.hidden)(mish(nn.LayerNorm()(h)))
        return nn.Dense(x.shape[-1])(mish(nn.LayerNorm()(h)))


class ActionDenoiser(nn.Module):
    """Diffusion-QL's noise predictor ``eps(a_t, t, s)`` (Wang et al. 2023, App. C; official ``agents/model.py``):
    ``[a_t, time MLP(t), s]`` through ``depth`` Mish layers of ``hidden`` units and a linear output. The time MLP is
    a ``time_dim``-d sinusoidal embedding, ``Dense(2 time_dim) -> Mish -> Dense(time_dim)``."""

    hidden: int = 256
    depth: int = 3
    time_dim: int = 16

    @nn.compact
    def __call__(self, x, t, state):
        chex.assert_rank([x, t, state], [2, 1, 2])
        t_emb = jnp.broadcast_to(TimeEmbedding(self.time_dim, 2 * self.time_dim, self.time_dim)(t),
                                 x.shape[:1] + (self.time_dim,))
        h = jnp.concatenate([x, t_emb, state], axis=-1)
        for _ in range(self.depth):
            h = mish(nn.Dense(self.hidden)(h))
        return nn.Dense(x.shape[-1])(h)


def dense_ln_gelu(width: int, x):
    """``GELU(LayerNorm(Dense(x)))``, the layer of LDCQ's latent networks (call inside a compact method)."""
    return jax.nn.gelu(nn.LayerNorm()(nn.Dense(width)(x)))


class ConcatDense(nn.Module):
    """``Dense`` of the concatenation of ``inputs`` (the same kernel, rows in input order, and bias). Inputs that
    broadcast against each other (a condition shared by many samples, a step shared by the batch) are multiplied by
    their rows of the kernel once, not once per sample, and the products summed; inputs of one shape (training)
    take one product of their concatenation, which is faster for small batches."""

    features: int

    @nn.compact
    def __call__(self, *inputs):
        sizes = [x.shape[-1] for x in inputs]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (sum(sizes), self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if len({x.shape[:-1] for x in inputs}) == 1:
            return jnp.concatenate(inputs, axis=-1) @ kernel + bias
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        return sum(x @ kernel[o : o + n] for x, o, n in zip(inputs, offsets, sizes)) + bias


class LatentResidualBlock(nn.Module):
    """``h + GELU(LN(W2 GELU(LN(W1 [h, e_s, e_t]))))``: the state and time encodings concatenated with the
    activation (LDCQ App. A.2.2); ``e_s`` and ``e_t`` may broadcast against ``h``."""

    width: int

    @nn.compact
    def __call__(self, h, time_embedding, state_embedding):
        # named as the two nn.Dense layers this block had before, so checkpoints saved then still load
        inner = ConcatDense(self.width, name="Dense_0")(h, state_embedding, time_embedding)
        inner = jax.nn.gelu(nn.LayerNorm()(inner))
        return h + jax.nn.gelu(nn.LayerNorm()(nn.Dense(self.width, name="Dense_1")(inner)))


class LatentResNetDenoiser(nn.Module):
    """The latent diffusion prior's denoiser ``f(z_t, t, s)`` of LDCQ App. A.2.2 (and DIAR).

    Residual blocks of widths ``hidden_dims = [128, 32, 16, 8, 16, 32, 128]``, joined between blocks by
    ``Dense -> LayerNorm -> GELU``; as in a U-Net every block of the second half adds the output of the block of
    the first half with the same width, and a final residual block follows the input projection's skip
    (official ``UNet``: 8 residual blocks in all). ``t`` is encoded by a ``time_dim``-d sinusoidal embedding and a
    2-layer MLP, the condition ``s`` by a 2-layer MLP (both ``Dense -> LN -> GELU``, width ``embed_dim``).

    ``x [..., Z]`` and ``cond [..., C]`` broadcast against each other (``[E, n, Z]`` samples with ``[E, 1, C]``
    states: each state is encoded once), and ``t`` is ``[len(x)]`` or ``[1]`` (one step for the whole batch: its
    encoding is computed once).
    """

    hidden_dims: tuple[int, ...] = (128, 32, 16, 8, 16, 32, 128)
    time_dim: int = 256
    embed_dim: int = 256

    @nn.compact
    def __call__(self, x, t, cond):
        chex.assert_rank(t, 1)
        chex.assert_equal_rank([x, cond])
        try:
            jnp.broadcast_shapes(x.shape[:-1], cond.shape[:-1])
        except ValueError:
            raise ValueError(f"samples {x.shape} and states {cond.shape} must broadcast over their leading "
                             "axes") from None
        dims = tuple(self.hidden_dims)
        if len(dims) % 2 == 0 or dims != dims[::-1]:
            raise ValueError("hidden_dims must be an odd-length palindrome (U-Net skips join equal widths), "
                             f"got {dims}")
        t_emb = sinusoidal_embedding(t, self.time_dim)
        t_emb = dense_ln_gelu(self.embed_dim, dense_ln_gelu(self.embed_dim, t_emb))
        t_emb = t_emb.reshape(t_emb.shape[:1] + (1,) * (x.ndim - 2) + t_emb.shape[1:])  # [B or 1, 1.., E]
        s_emb = dense_ln_gelu(self.embed_dim, dense_ln_gelu(self.embed_dim, cond))
        projected = nn.Dense(dims[0])(x)
        h, skips = projected, []
        middle = len(dims) // 2
        for i, width in enumerate(dims):
            if i > 0:
                h = dense_ln_gelu(width, h)
            if i > middle:
                h = h + skips[2 * middle - i]
            h = LatentResidualBlock(width)(h, t_emb, s_emb)
            skips.append(h)
        h = LatentResidualBlock(dims[-1])(h + projected, t_emb, s_emb)
        return nn.Dense(x.shape[-1])(h)


class LatentTransformerDenoiser(nn.Module):
    """``f(z_t, t, s)`` as a transformer over three tokens ``[time, condition, latent]``: the diffusion prior DIAR
    trains together with its beta-VAE (App. A.1: "employs a transformer architecture"; Algorithm 3, L4). The paper
    gives no sizes; pre-LayerNorm blocks of ``width`` with ``heads`` heads and a 4x GELU MLP are diffrl's choice.
    The output, read from the latent token, has the latent's size."""

    width: int = 128
    layers: int = 2
    heads: int = 4
    time_dim: int = 128

    @nn.compact
    def __call__(self, x, t, cond):
        chex.assert_rank([x, t, cond], [2, 1, 2])
        time_token = nn.Dense(self.width)(sinusoidal_embedding(t, self.time_dim))
        time_token = jnp.broadcast_to(time_token, x.shape[:-1] + (self.width,))  # a [1] t serves the whole batch
        tokens = jnp.stack([time_token, nn.Dense(self.width)(cond), nn.Dense(self.width)(x)], axis=-2)
        tokens = tokens + self.param("position", nn.initializers.normal(0.02), (3, self.width))
        for _ in range(self.layers):
            h = nn.LayerNorm()(tokens)
            tokens = tokens + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
            h = nn.LayerNorm()(tokens)
            tokens = tokens + nn.Dense(self.width)(jax.nn.gelu(nn.Dense(4 * self.width)(h)))
        return nn.Dense(x.shape[-1])(nn.LayerNorm()(tokens[..., 2, :]))
