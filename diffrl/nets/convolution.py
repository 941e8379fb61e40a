"""The 1-D convolutions behind :class:`diffrl.nets.unet.Conv1d`: XLA's own, the same with gradients in forward form
(for XLA:CPU's loops), and Winograd's minimal filtering F(m, r) (for XLA:CPU's large layers).

All compute the correlation ``y[b, l] = sum_j x_pad[b, l + j] @ kernel[j]`` of ``x [B, L, C]`` (zero-padded by
``padding`` on both sides) with ``kernel [k, C, F]``, PyTorch's ``nn.Conv1d`` and ``flax.linen.Conv`` alike.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

_NWC = ("NWC", "WIO", "NWC")

# Winograd on a CPU where its per-point matrix products have enough rows to run at full rate: F(4, k) where a layer
# gives them >= 128 rows, else F(2, k) (0.6x the multiplications, twice the rows) where that gives >= 128. On the
# Diffuser maze U-Net (2-core AMD EPYC, benchmarks/results/cpu.md "Winograd convolutions on a CPU"), plans of 16 to
# 64 trajectories ran 20-30% faster with F(4, 5), the batch-64 train step ~22%, and a batch-8 plan 11-20% faster
# with F(2, 5) on its L = 32 layers; with fewer rows (batch 1: 8) the products were slower, and so were layers of
# 32 x 128 channels or fewer, where the transforms outweigh the saving.
WINOGRAD_TILES = (4, 2)  # outputs per tile, the first that gives enough rows wins
WINOGRAD_MIN_CHANNEL_PRODUCT = 128 * 128  # C_in * C_out
WINOGRAD_MIN_ROWS = 128  # B * L / tile: the rows of each per-point matrix product
# The finite interpolation points, in the order used: small integers and their reciprocals keep the transforms'
# entries small, and so the float32 rounding (Lavin & Gray 2016, Sec. 5); infinity is always the last point.
_POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2), 3, -3, Fraction(1, 3), Fraction(-1, 3))


def native_conv(x, kernel, padding: int):
    """XLA's convolution over ``[B, L, C]`` with kernel ``[k, C, F]``, and JAX's autodiff gradients."""
    return jax.lax.conv_general_dilated(x, kernel, (1,), [(padding, padding)], dimension_numbers=_NWC)


def _input_gradient(dy, kernel, padding: int, conv=native_conv):
    """``dx``: ``dy`` correlated with the flipped kernel, input and output channels swapped, padding ``k - 1 - p``."""
    return conv(dy, jnp.flip(kernel, 0).transpose(0, 2, 1), kernel.shape[0] - 1 - padding)


def _kernel_gradient(x, dy, padding: int):
    """``dkernel[j] = sum_{b,l} x_pad[b, l + j]^T dy[b, l]``: a forward convolution with the channels as its batch,
    the horizon as its width and the examples as its features, over explicitly transposed operands."""
    x_pad = jnp.pad(x, [(0, 0), (padding, padding), (0, 0)])
    dkernel = jax.lax.conv_general_dilated(x_pad.transpose(2, 1, 0), dy.transpose(1, 0, 2), (1,), [(0, 0)],
                                           dimension_numbers=_NWC)  # [C, k, F]
    return dkernel.transpose(1, 0, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_forward_form_grads(x, kernel, padding: int):
    """:func:`native_conv` whose gradients are convolutions in the forward (canonical) form.

    XLA:CPU runs the kernel-gradient convolution that autodiff writes (batch and features swapped in its dimension
    numbers) ~110x slower inside a loop body, a train chunk's ``lax.scan``, than outside one, and the input gradient
    ~3x slower (jax 0.10.2, ``diffrl benchmark conv_in_loop``): outside a loop XLA rewrites such a convolution into
    the canonical ``b0f_0io->b0f`` form over transposed operands, inside one it leaves it as written, and XLA:CPU runs
    that form far slower (the open report jax-ml/jax#12868). Written as forward convolutions over explicitly
    transposed operands (:func:`_input_gradient`, :func:`_kernel_gradient`), both run at full speed in either place.
    """
    return native_conv(x, kernel, padding)


def _forward_form_fwd(x, kernel, padding):
    return native_conv(x, kernel, padding), (x, kernel)


def _forward_form_bwd(padding, residuals, dy):
    x, kernel = residuals
    return _input_gradient(dy, kernel, padding), _kernel_gradient(x, dy, padding)


conv_forward_form_grads.defvjp(_forward_form_fwd, _forward_form_bwd)


def _exact_inverse(rows: list[list[Fraction]]) -> list[list[Fraction]]:
    """The inverse of a square matrix of Fractions, by Gauss-Jordan elimination: exact."""
    n = len(rows)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if a[i][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for i in range(n):
            if i != col and a[i][col] != 0:
                a[i] = [v - a[i][col] * w for v, w in zip(a[i], a[col])]
    return [row[n:] for row in a]


@functools.lru_cache(maxsize=None)
def winograd_transforms(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(G [n, r], B^T [n, n], A^T [m, n])`` of Winograd's F(m, r), ``n = m + r - 1``, such that for an input tile
    ``d`` of ``n`` steps and a filter ``g`` of ``r`` taps the ``m`` outputs ``y[i] = sum_j d[i + j] g[j]`` are
    ``A^T [(G g) * (B^T d)]``: ``n`` multiplications where the direct form takes ``m r`` (Lavin & Gray 2016, Sec. 4).

    Toom-Cook, from the points of :data:`_POINTS` and infinity: the product ``s = g h`` of polynomials of degrees
    ``r - 1`` and ``m - 1`` is ``V_n^{-1} [(V_r g) * (V_m h)]``, with ``V_c`` the ``[n, c]`` matrix evaluating a
    polynomial of ``c`` coefficients at the points (infinity's row reads the leading coefficient). The correlation
    is that product's transpose in ``(h, s)``, so ``G = V_r``, ``B^T = V_n^{-T}`` and ``A^T = V_m^T``, derived here in
    exact rational arithmetic and rounded to float64 once."""
    n = m + r - 1
    if m < 1 or r < 1:
        raise ValueError(f"winograd_transforms: F(m, r) needs m >= 1 outputs and r >= 1 taps, got F({m}, {r})")
    if n - 1 > len(_POINTS):
        raise ValueError(f"winograd_transforms: F({m}, {r}) needs {n - 1} finite points, {len(_POINTS)} are defined")
    points = [Fraction(p) for p in _POINTS[: n - 1]]

    def evaluation(columns: int) -> list[list[Fraction]]:
        return [[p**j for j in range(columns)] for p in points] + [[Fraction(0)] * (columns - 1) + [Fraction(1)]]

    interpolation = _exact_inverse(evaluation(n))
    kernel_transform = np.array(evaluation(r), dtype=np.float64)
    input_transform = np.array(interpolation, dtype=np.float64).T
    output_transform = np.array(evaluation(m), dtype=np.float64).T
    return kernel_transform, input_transform, output_transform


def winograd_conv(x, kernel, padding: int, m: int):
    """:func:`native_conv` (stride 1, ``2 padding = k - 1``, ``L`` a multiple of ``m``) by Winograd's F(m, k).

    The horizon is cut into ``L / m`` tiles of ``m`` outputs, each reading ``n = m + k - 1`` padded inputs. The input
    transform ``B^T`` and the output transform ``A^T`` are sums of strided slices with constant weights (XLA fuses
    them into elementwise loops); the channel mixing is ``n`` matrix products ``[B L / m, C] x [C, F]`` against the
    transformed kernel ``G kernel`` (which XLA hoists out of a sampler's loop, the weights being fixed there):
    ``2 n B (L / m) C F`` FLOPs against ``2 k B L C F``, 0.4x for F(4, 5) and 0.6x for F(2, 5). Float32 results
    differ from the direct form's by rounding: the transforms' entries (up to 16 for F(4, 5)) amplify it to ~1e-5
    of the output's scale."""
    k = kernel.shape[0]
    batch, length, _ = x.shape
    if 2 * padding != k - 1 or length % m:
        raise ValueError(f"winograd_conv: needs 2 * padding == k - 1 and a length divisible by {m}, got padding "
                         f"{padding}, k {k}, length {length}")
    n = m + k - 1
    kernel_transform, input_transform, output_transform = winograd_transforms(m, k)
    tiles = length // m
    x_pad = jnp.pad(x, [(0, 0), (padding, padding), (0, 0)])
    windows = [x_pad[:, i : i + (tiles - 1) * m + 1 : m] for i in range(n)]  # window i: input i of every tile
    transformed = jnp.stack([sum(float(w) * windows[i] for i, w in enumerate(row) if w) for row in input_transform])
    kernels = jnp.einsum("qj,jcf->qcf", jnp.asarray(kernel_transform, kernel.dtype), kernel)
    products = jnp.einsum("qbtc,qcf->qbtf", transformed, kernels)  # [n, B, L / m, F]
    outputs = [sum(float(w) * products[q] for q, w in enumerate(row) if w) for row in output_transform]
    return jnp.stack(outputs, axis=2).reshape(batch, length, -1)  # [B, L / m, m, F] -> [B, L, F]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def winograd_conv_forward_form_grads(x, kernel, padding: int, m: int):
    """:func:`winograd_conv` whose gradients are those of the convolution it computes: ``dx`` by F(m, k) too (a
    convolution of the same shape class), ``dkernel`` as :func:`conv_forward_form_grads` computes it (JAX's autodiff
    of the transforms made the maze train step 2x slower)."""
    return winograd_conv(x, kernel, padding, m)


def _winograd_fwd(x, kernel, padding, m):
    return winograd_conv(x, kernel, padding, m), (x, kernel)


def _winograd_bwd(padding, m, residuals, dy):
    x, kernel = residuals
    dx = _input_gradient(dy, kernel, padding, functools.partial(winograd_conv, m=m))
    return dx, _kernel_gradient(x, dy, padding)


winograd_conv_forward_form_grads.defvjp(_winograd_fwd, _winograd_bwd)


def winograd_tile(batch: int, length: int, channels: int, features: int, kernel_size: int, padding: int,
                  dtype) -> int:
    """The tile ``m`` of the Winograd F(m, k) that :class:`~diffrl.nets.unet.Conv1d` computes this convolution by,
    or 0 for XLA's convolution: on a CPU, in float32 (the transforms' rounding would swamp bfloat16), for a
    same-length odd kernel, and where the measurements noted at :data:`WINOGRAD_TILES` found it faster. GPUs and
    TPUs keep XLA's convolution."""
    if not (jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.float32 and kernel_size > 1
            and 2 * padding == kernel_size - 1 and channels * features >= WINOGRAD_MIN_CHANNEL_PRODUCT):
        return 0
    return next((m for m in WINOGRAD_TILES if length % m == 0 and batch * length // m >= WINOGRAD_MIN_ROWS), 0)
