"""Diffuser's temporal U-Net ``eps_theta(tau^i, i)`` and its return predictor ``J_phi`` (Janner et al. 2022).

Diffuser appendix C and Figure A1 describe the network: a U-Net of residual blocks, each made of two temporal
(1-D, along the horizon) convolutions followed by GroupNorm and Mish, with the diffusion-step embedding added
after the first convolution of every block; ``J`` is "the first half of the U-Net" with a final linear layer.
Everything the paper leaves open (channel widths, kernel sizes, the time MLP, the resampling layers, which skips
are used, the value head, PyTorch's default initialisation of every layer, :mod:`diffrl.nets.init`) follows the
official code, ``diffuser/models/{temporal,helpers}.py`` of github.com/jannerm/diffuser, as noted at each place below.

Layout is channel-last: ``x`` is ``[B, H, transition_dim]`` (the official code transposes to ``[B, C, H]``
internally); ``t`` is the 0-indexed diffusion step of shape ``[B]`` (or a scalar, broadcast over the batch),
fed to the sinusoidal embedding as given. An unbatched ``x`` of shape ``[H, transition_dim]`` with a scalar
``t`` is accepted too, so the modules can be ``jax.vmap``-ed per example (GroupNorm statistics are per example,
so this agrees with the batched call). ``cond`` is ignored unless the U-Net is built with ``condition_dim``
(Decision Diffuser's conditional form, see :class:`TemporalUNet`): Diffuser conditions by inpainting, done by the
sampler, not by the network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.nets.activations import mish
from diffrl.nets.convolution import (
    conv_forward_form_grads,
    native_conv,
    winograd_conv_forward_form_grads,
    winograd_tile,
)
from diffrl.nets.denoisers import TimeEmbedding
from diffrl.nets.init import bias_init, check_initialization, dense, kernel_init

N_GROUPS = 8  # official Conv1dBlock default, never overridden there
GROUPNORM_EPS = 1e-5  # torch.nn.GroupNorm default (flax's default is 1e-6)


# --------------------------------------------------------------------------------------------------------------
# Shape arithmetic (static, so the checks run at trace time before any flax op can fail)
# --------------------------------------------------------------------------------------------------------------


def unet_horizon_divisor(dim_mults: Sequence[int]) -> int:
    """The horizon must be a multiple of this: the U-Net halves it ``len(dim_mults) - 1`` times and concatenates
    the skip of each level on the way back up, so every halving must be exact."""
    return 2 ** (len(dim_mults) - 1)


def check_unet_horizon(horizon: int, dim_mults: Sequence[int]) -> None:
    """Raise one clear ``ValueError`` when :class:`TemporalUNet` cannot take this horizon."""
    div = unet_horizon_divisor(dim_mults)
    if horizon < 1 or horizon % div:
        lower, upper = (horizon // div) * div, (horizon // div + 1) * div
        nearest = f"{lower} or {upper}" if lower >= div else f"{upper}"
        raise ValueError(
            f"TemporalUNet: horizon {horizon} is not a positive multiple of {div} = 2**(len(dim_mults) - 1) "
            f"required by dim_mults={tuple(dim_mults)} (the horizon is halved {len(dim_mults) - 1} times and the "
            f"skips are concatenated on the way up); nearest valid horizons: {nearest}"
        )


def downsampled_length(length: int) -> int:
    """Length after :class:`Downsample1d` (conv k=3, stride 2, padding 1): ``floor((L - 1) / 2) + 1 = ceil(L / 2)``."""
    return -(-length // 2)


def value_final_length(horizon: int, dim_mults: Sequence[int]) -> int:
    """Horizon left after the ``len(dim_mults) + 2`` downsamplings of :class:`ValueUNet` (each ``L -> ceil(L/2)``)."""
    length = horizon
    for _ in range(len(dim_mults) + 2):
        length = downsampled_length(length)
    return length


def value_fc_dim(horizon: int, dim: int, dim_mults: Sequence[int]) -> int:
    """Width of the flattened features entering :class:`ValueUNet`'s head (``channels * final length``)."""
    return (dim * dim_mults[-1]) // 4 * value_final_length(horizon, dim_mults)


def official_value_fc_dim(horizon: int, dim: int, dim_mults: Sequence[int]) -> int:
    """``fc_dim`` as the official ``ValueFunction.__init__`` computes it.

    It tracks the horizon with ``horizon // 2`` once per level except the last, then twice for the mid blocks, and
    floors the result at 1, although the forward pass downsamples at every level (``len(dim_mults) + 2`` times in
    all). The two agree, and the official network runs, exactly when this equals :func:`value_fc_dim`: for
    ``horizon < 3 * 2**(len(dim_mults) + 1)`` except ``horizon == 2**(len(dim_mults) + 2)`` (e.g. every
    horizon up to 95 but 64 for four levels, the official locomotion value horizon 32 included). Elsewhere the
    official code fails with a shape mismatch in its first Linear; :class:`ValueUNet` uses the real flattened
    width there instead.
    """
    length = horizon
    for _ in range(len(dim_mults) - 1):
        length //= 2
    length = length // 2 // 2
    return (dim * dim_mults[-1]) // 4 * max(length, 1)


def _check_groups(owner: str, channels: Sequence[int], dim: int, dim_mults: Sequence[int]) -> None:
    bad = sorted({c for c in channels if c < N_GROUPS or c % N_GROUPS})
    if bad:
        raise ValueError(
            f"{owner}: GroupNorm({N_GROUPS} groups) needs channel counts that are positive multiples of {N_GROUPS}, "
            f"but dim={dim}, dim_mults={tuple(dim_mults)} give {bad}"
        )


def _check_kernel(owner: str, kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{owner}: kernel_size must be odd (padding k // 2 keeps the length), got {kernel_size}")


def _batched(owner: str, x, t):
    """Return ``x`` as ``[B, H, C]``, ``t`` as ``[B]`` and whether a leading batch axis was added."""
    x = jnp.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"{owner}: x must be [B, H, transition_dim] or [H, transition_dim], got shape {x.shape}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None]
    t = jnp.asarray(t)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (x.shape[0],))
    elif t.shape != (x.shape[0],):
        raise ValueError(f"{owner}: t must be a scalar or of shape [{x.shape[0]}], got shape {t.shape}")
    return x, t, unbatched


def _time_mlp(dim: int, hidden: int | None = None, dtype=None, initialization: str = "pytorch") -> TimeEmbedding:
    """Official ``time_mlp``: ``SinusoidalPosEmb(dim) -> Linear(4 dim) -> Mish -> Linear(dim)`` (``hidden`` replaces
    the ``4 dim``)."""
    return TimeEmbedding(dim=dim, hidden=4 * dim if hidden is None else hidden, out_dim=dim, dtype=dtype,
                         initialization=initialization, name="time_mlp")


# --------------------------------------------------------------------------------------------------------------
# Building blocks (official helpers.py / temporal.py)
# --------------------------------------------------------------------------------------------------------------


class Conv1d(nn.Module):
    """A 1-D convolution over ``[..., L, C]``, the function and parameters (``kernel [k, C_in, C_out]``, ``bias``) of
    ``flax.linen.Conv`` with symmetric ``padding``, in the form that is fastest on the backend.

    Stride 1, kernel > 1 and no longer than the input (the U-Net's k = 5 convolutions, nearly all of its FLOPs):
    XLA's native convolution (:mod:`diffrl.nets.convolution`); on a CPU with the gradients of
    :func:`~diffrl.nets.convolution.conv_forward_form_grads`, which stay fast inside the train chunk's scan, and by
    Winograd's F(4, k) or F(2, k) where :func:`~diffrl.nets.convolution.winograd_tile` picks one (float32 layers of
    >= 128 x 128 channels with >= 256 steps in the batch, e.g. the maze U-Net's inner levels from batch 8); on a GPU
    or TPU XLA's own (a custom VJP has no forward-mode rule, so on a CPU ``jax.jvp`` / ``jacfwd`` through the U-Net
    are refused, and nothing here uses them). Otherwise (1x1, the stride-2 downsampling, and inputs shorter than the
    kernel, e.g. length 4 at the bottom of the H 32 U-Net, where XLA:CPU's convolution is ~40x slower than a matrix
    product): one matrix product over stacked shifted windows (im2col).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: jnp.dtype | None = None  # computation dtype; None: the promoted dtype of input and kernel
    initialization: str = "pytorch"  # diffrl.nets.init: PyTorch's nn.Conv1d's (the official code's) or "flax"

    @nn.compact
    def __call__(self, x):
        k, channels = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", kernel_init(self.initialization), (k, channels, self.features))
        bias = self.param("bias", bias_init(self.initialization, k * channels), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.stride == 1 and 1 < k <= x.shape[-2]:
            flat = x.reshape((-1,) + x.shape[-2:])
            tile = winograd_tile(*flat.shape, self.features, k, self.padding, flat.dtype)
            if tile:
                y = winograd_conv_forward_form_grads(flat, kernel, self.padding, tile)
            else:
                conv = conv_forward_form_grads if jax.default_backend() == "cpu" else native_conv
                y = conv(flat, kernel, self.padding)
            return y.reshape(x.shape[:-2] + y.shape[-2:]) + bias
        if self.padding:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(self.padding, self.padding), (0, 0)])
        length = (x.shape[-2] - k) // self.stride + 1
        span = (length - 1) * self.stride + 1
        windows = jnp.concatenate([x[..., j : j + span : self.stride, :] for j in range(k)], axis=-1)
        return windows @ kernel.reshape(k * channels, self.features) + bias


class Conv1dBlock(nn.Module):
    """Temporal conv -> GroupNorm(8) -> Mish (Diffuser App. C; official ``Conv1dBlock``).

    Padding ``kernel_size // 2`` on both sides, so an odd kernel keeps the length. GroupNorm statistics run over the
    horizon and each group of channels, per example, as ``torch.nn.GroupNorm`` on ``[B, C, 1, H]`` does.
    """

    features: int
    kernel_size: int = 5
    n_groups: int = N_GROUPS
    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, x):
        chex.assert_rank(x, 3)  # [B, H, C]: GroupNorm takes its statistics per leading index
        pad = self.kernel_size // 2
        x = Conv1d(self.features, self.kernel_size, padding=pad, dtype=self.dtype,
                   initialization=self.initialization, name="conv")(x)
        # flax computes the statistics in float32 whatever the dtype
        x = nn.GroupNorm(num_groups=self.n_groups, epsilon=GROUPNORM_EPS, dtype=self.dtype, name="norm")(x)
        return mish(x)


class ResidualTemporalBlock(nn.Module):
    """Two :class:`Conv1dBlock` s with the step embedding added after the first (Diffuser App. C).

    From the official ``ResidualTemporalBlock``: the embedding goes through Mish -> Dense(features) and is broadcast
    over the horizon; the skip is a 1x1 conv when the channel count changes, the identity otherwise.
    """

    features: int
    kernel_size: int = 5
    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, x, t_emb):
        chex.assert_rank([x, t_emb], [3, 2])
        chex.assert_equal_shape_prefix([x, t_emb], 1)
        init = self.initialization
        block = functools.partial(Conv1dBlock, self.features, self.kernel_size, dtype=self.dtype, initialization=init)
        h = block(name="block_0")(x)
        time_proj = dense(self.features, t_emb.shape[-1], init, dtype=self.dtype, name="time_proj")
        h = h + time_proj(mish(t_emb))[:, None, :]
        h = block(name="block_1")(h)
        skip = (x if x.shape[-1] == self.features
                else Conv1d(self.features, 1, dtype=self.dtype, initialization=init, name="residual_conv")(x))
        return h + skip


class Downsample1d(nn.Module):
    """Conv with kernel 3, stride 2, padding 1, channels kept (official ``Downsample1d``): ``L -> ceil(L / 2)``."""

    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, x):
        return Conv1d(x.shape[-1], 3, stride=2, padding=1, dtype=self.dtype, initialization=self.initialization,
                      name="conv")(x)


class Upsample1d(nn.Module):
    """Transposed conv with kernel 4, stride 2, channels kept (official ``Upsample1d``): ``L -> 2 L`` exactly.

    Computed in sub-pixel form: with PyTorch's ``ConvTranspose1d(k=4, stride=2, padding=1)`` semantics (crop
    ``p = 1`` from each end), output ``2m`` is ``x[m-1] K0 + x[m] K2`` and output ``2m+1`` is
    ``x[m] K1 + x[m+1] K3`` (zero outside the input), the same function as flax's
    ``ConvTranspose(features, (4,), strides=(2,), padding=((2, 2),))`` with the same ``conv/kernel [4, C, C]`` and
    ``conv/bias`` parameters. Two matrix products instead of a dilated convolution: XLA's CPU backend computes
    the dilated convolution's kernel gradient ~40x slower. A ported PyTorch weight ``w[in, out, k]`` maps to
    ``kernel[j, in, out] = w[in, out, 3 - j]``.
    """

    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, x):
        return _StrideTwoTransposedConv(dtype=self.dtype, initialization=self.initialization, name="conv")(x)


class _StrideTwoTransposedConv(nn.Module):
    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        # PyTorch's ConvTranspose1d takes its fan-in from the weight's output-channel axis: channels x 4 here too
        kernel = self.param("kernel", kernel_init(self.initialization), (4, channels, channels))
        bias = self.param("bias", bias_init(self.initialization, 4 * channels), (channels,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        zeros = jnp.zeros_like(x[..., :1, :])
        previous = jnp.concatenate([zeros, x[..., :-1, :]], axis=-2)
        following = jnp.concatenate([x[..., 1:, :], zeros], axis=-2)
        even = previous @ kernel[0] + x @ kernel[2]
        odd = x @ kernel[1] + following @ kernel[3]
        out = jnp.stack([even, odd], axis=-2).reshape(x.shape[:-2] + (2 * x.shape[-2], channels))
        return out + bias


# --------------------------------------------------------------------------------------------------------------
# The networks
# --------------------------------------------------------------------------------------------------------------


class TemporalUNet(nn.Module):
    """Diffuser's denoiser ``eps_theta(tau^i, i)``, a temporal U-Net (Diffuser App. C, Fig. A1; official TemporalUnet).

    Channel widths ``dim * m`` for ``m`` in ``dim_mults``. Down path: per level two residual blocks, then a
    :class:`Downsample1d` except at the last level; two mid residual blocks; up path over the levels but the
    first, deepest first: concatenate the skip, two residual blocks down to the next level's width, then an
    :class:`Upsample1d`; finally ``Conv1dBlock(dim)`` and a 1x1 conv to ``transition_dim``. As in the official code,
    the skip of the first (full-resolution) level is stored but never used, and there is no attention
    (``attention=False`` in all official configs). The horizon must be a multiple of ``2**(len(dim_mults) - 1)``.
    Official configs: ``dim=32``; ``dim_mults=(1, 2, 4, 8)``, horizon 32 for locomotion (``(1, 4, 8)``, horizon 4 for
    HalfCheetah); ``(1, 4, 8)`` with horizons 128 / 256 / 384 for Maze2D (the paper's "265" is 256 there).

    With ``condition_dim > 0`` the network is Decision Diffuser's conditional U-Net (Ajay et al. 2023; LatentDiffuser
    App. E.2.1): ``cond = {"state": [B, condition_dim], "keep": [B]}`` goes through its own 2-layer Mish MLP
    (``embed_hidden`` units, ``dim`` out), is zeroed where ``keep`` is 0 (the null condition of classifier-free
    guidance) and is concatenated with the step embedding. Without it, ``cond`` is ignored: Diffuser conditions by
    inpainting in the sampler.

    ``dtype`` is the computation dtype (mixed precision): ``jnp.bfloat16`` runs the convolutions, matrix products,
    GroupNorm outputs and additions in bfloat16 (tensor cores on a GPU, the MXU's native type on a TPU) while the
    parameters, GroupNorm's statistics, Mish's internals and the output stay float32. None: float32 throughout.
    """

    transition_dim: int
    dim: int = 32
    dim_mults: Sequence[int] = (1, 2, 4, 8)
    kernel_size: int = 5
    condition_dim: int = 0
    embed_hidden: int | None = None  # the embedding MLPs' hidden width; None: 4 dim, as the official time_mlp
    dtype: jnp.dtype | None = None
    initialization: str = "pytorch"  # every layer's (diffrl.nets.init): PyTorch's, as the official code's, or "flax"

    @nn.compact
    def __call__(self, x, t, cond=None):
        x, t, unbatched = _batched("TemporalUNet", x, t)
        if not self.dim_mults:
            raise ValueError("TemporalUNet: dim_mults must not be empty")
        if x.shape[-1] != self.transition_dim:
            raise ValueError(
                f"TemporalUNet: x has {x.shape[-1]} features per step, the model was built for "
                f"transition_dim={self.transition_dim}"
            )
        check_unet_horizon(x.shape[1], self.dim_mults)
        _check_kernel("TemporalUNet", self.kernel_size)
        check_initialization("TemporalUNet", self.initialization)
        widths = [self.dim * m for m in self.dim_mults]
        _check_groups("TemporalUNet", widths + [self.dim], self.dim, self.dim_mults)
        n = len(widths)

        dtype, out_dtype, init = self.dtype, jnp.promote_types(x.dtype, jnp.float32), self.initialization
        res = functools.partial(ResidualTemporalBlock, kernel_size=self.kernel_size, dtype=dtype, initialization=init)
        t_emb = _time_mlp(self.dim, self.embed_hidden, dtype, init)(t)
        x = x if dtype is None else x.astype(dtype)  # so that identity skips add in the computation dtype
        if self.condition_dim:
            state = jnp.asarray(cond["state"]).reshape(x.shape[0], self.condition_dim)
            hidden = 4 * self.dim if self.embed_hidden is None else self.embed_hidden
            c_emb = dense(self.dim, hidden, init, dtype=dtype, name="cond_mlp_1")(
                mish(dense(hidden, self.condition_dim, init, dtype=dtype, name="cond_mlp_0")(state)))
            keep = jnp.broadcast_to(jnp.asarray(cond["keep"], c_emb.dtype), (x.shape[0],))
            t_emb = jnp.concatenate([t_emb, c_emb * keep[:, None]], axis=-1)
        h, skips = x, []
        for i, width in enumerate(widths):
            h = res(width, name=f"down_{i}_res_0")(h, t_emb)
            h = res(width, name=f"down_{i}_res_1")(h, t_emb)
            skips.append(h)
            if i < n - 1:
                h = Downsample1d(dtype=dtype, initialization=init, name=f"down_{i}_downsample")(h)
        h = res(widths[-1], name="mid_res_0")(h, t_emb)
        h = res(widths[-1], name="mid_res_1")(h, t_emb)
        for j, level in enumerate(range(n - 2, -1, -1)):  # skips of levels n-1 .. 1; level 0's stays unused
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = res(widths[level], name=f"up_{j}_res_0")(h, t_emb)
            h = res(widths[level], name=f"up_{j}_res_1")(h, t_emb)
            h = Upsample1d(dtype=dtype, initialization=init, name=f"up_{j}_upsample")(h)
        h = Conv1dBlock(self.dim, self.kernel_size, dtype=dtype, initialization=init, name="final_block")(h)
        out = Conv1d(self.transition_dim, 1, dtype=dtype, initialization=init, name="final_conv")(h).astype(out_dtype)
        return out[0] if unbatched else out


class ValueUNet(nn.Module):
    """Diffuser's return predictor ``J_phi(tau^i, i)`` (Diffuser App. C item 3; official ``ValueFunction``).

    The paper says "the first half of the U-Net with a final linear layer"; the official code decides the rest:
    per level two residual blocks and a :class:`Downsample1d` (at every level, the last included); two more
    residual blocks halving the channels (``mid // 2``, then ``mid // 4``), each followed by a downsampling; the
    features are flattened channel-major (as ``x.view(B, -1)`` on ``[B, C, L]``), concatenated with the step
    embedding, and mapped by ``Dense(fc_dim // 2) -> Mish -> Dense(out_dim)``. Returns ``[B]`` when
    ``out_dim == 1``, else ``[B, out_dim]``.

    There is no skip concatenation, so any horizon >= 1 works: each downsampling maps ``L -> ceil(L / 2)`` as
    PyTorch's conv arithmetic does, and ``fc_dim`` is the real flattened width (:func:`value_fc_dim`). Where the
    official code runs this is its ``fc_dim``; see :func:`official_value_fc_dim` for the horizons where the
    official code's own bookkeeping breaks and this module generalises it.
    """

    dim: int = 32
    dim_mults: Sequence[int] = (1, 2, 4, 8)
    out_dim: int = 1
    kernel_size: int = 5
    dtype: jnp.dtype | None = None  # computation dtype, as TemporalUNet's
    initialization: str = "pytorch"  # as TemporalUNet's

    @nn.compact
    def __call__(self, x, t, cond=None):
        del cond
        x, t, unbatched = _batched("ValueUNet", x, t)
        if not self.dim_mults:
            raise ValueError("ValueUNet: dim_mults must not be empty")
        if x.shape[1] < 1:
            raise ValueError(f"ValueUNet: horizon {x.shape[1]} must be at least 1 (dim_mults={tuple(self.dim_mults)})")
        _check_kernel("ValueUNet", self.kernel_size)
        check_initialization("ValueUNet", self.initialization)
        widths = [self.dim * m for m in self.dim_mults]
        mid = widths[-1]
        _check_groups("ValueUNet", widths + [mid // 2, mid // 4], self.dim, self.dim_mults)

        dtype, out_dtype, init = self.dtype, jnp.promote_types(x.dtype, jnp.float32), self.initialization
        res = functools.partial(ResidualTemporalBlock, kernel_size=self.kernel_size, dtype=dtype, initialization=init)
        t_emb = _time_mlp(self.dim, dtype=dtype, initialization=init)(t)
        h = x if dtype is None else x.astype(dtype)
        for i, width in enumerate(widths):
            h = res(width, name=f"down_{i}_res_0")(h, t_emb)
            h = res(width, name=f"down_{i}_res_1")(h, t_emb)
            h = Downsample1d(dtype=dtype, initialization=init, name=f"down_{i}_downsample")(h)
        h = res(mid // 2, name="mid_res_0")(h, t_emb)
        h = Downsample1d(dtype=dtype, initialization=init, name="mid_downsample_0")(h)
        h = res(mid // 4, name="mid_res_1")(h, t_emb)
        h = Downsample1d(dtype=dtype, initialization=init, name="mid_downsample_1")(h)

        flat = jnp.swapaxes(h, 1, 2).reshape(h.shape[0], -1)  # channel-major, as the official .view on [B, C, L]
        fc_dim = flat.shape[-1]
        features = jnp.concatenate([flat, t_emb], axis=-1)
        out = dense(fc_dim // 2, features.shape[-1], init, dtype=dtype, name="fc_0")(features)
        out = dense(self.out_dim, fc_dim // 2, init, dtype=dtype, name="fc_1")(mish(out)).astype(out_dtype)
        if self.out_dim == 1:
            out = out[..., 0]
        return out[0] if unbatched else out
