"""Mish (Misra 2019), ``x tanh(softplus(x))``, the activation of Diffuser's U-Net and of the MLPs that follow it,
in a form that costs one exponential."""

from __future__ import annotations

import jax.numpy as jnp

# Past this input tanh(softplus(x)) is 1 in float32 (1 - 2 e^{-2x} rounds to 1 from x ~ 9), and e^{2x} would
# overflow near 44: mish is the identity there.
_IDENTITY_ABOVE = 20.0


def mish(x: jnp.ndarray) -> jnp.ndarray:
    """``x tanh(softplus(x))`` through ``tanh(log(1 + n)) = n (n + 2) / (n (n + 2) + 2)`` with ``n = e^x``.

    The same function as ``jax.nn.mish`` (within 3e-6 absolute in float32 over [-30, 30]), with one exponential and
    one division in place of ``exp``, ``log1p`` and ``tanh``: about 4x faster forward and 2x with its gradient on
    XLA:CPU, where Mish was 11% of a Diffuser denoising step."""
    n = jnp.exp(jnp.minimum(x, _IDENTITY_ABOVE))
    m = n * (n + 2.0)
    return jnp.where(x > _IDENTITY_ABOVE, x, x * m / (m + 2.0))
