"""PyTorch's default initialisation of ``nn.Linear``, ``nn.Conv1d`` and ``nn.ConvTranspose1d``, for the networks whose
official code is PyTorch and keeps it (Diffuser's U-Nets, SB3's SAC).

``reset_parameters`` there draws the weight by ``kaiming_uniform_(a=sqrt(5))``, whose bound is
``gain * sqrt(3 / fan_in)`` with ``gain = sqrt(2 / (1 + 5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the
bias from the same interval. ``fan_in`` is ``in_features`` for a linear layer and ``in_channels * kernel_size`` for
a convolution (for ``ConvTranspose1d``, ``out_channels * kernel_size``: PyTorch reads the weight's second axis).
Flax's ``variance_scaling(1/3, "fan_in", "uniform")`` draws from ``U(-sqrt(3 * (1/3) / fan_in), ...)``, the same
interval, with ``fan_in`` the product of all kernel axes but the last (``[in, out]`` and ``[k, in, out]``).

``initialization="flax"`` gives flax's own defaults instead (LeCun normal kernels, zero biases), with which diffrl's
U-Nets started before PyTorch's became their default.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

INITIALIZATIONS = ("pytorch", "flax")  # flax: nn.Dense's and nn.Conv's defaults, LeCun normal and zero biases

pytorch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def pytorch_bias_init(fan_in: int):
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (flax's bias initialisers are not told the fan-in)."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, -bound, bound)

    return init


def check_initialization(owner: str, initialization: str) -> None:
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"{owner}: initialization must be one of {INITIALIZATIONS}, got {initialization!r}")


def kernel_init(initialization: str):
    return pytorch_kernel_init if initialization == "pytorch" else nn.initializers.lecun_normal()


def bias_init(initialization: str, fan_in: int):
    return pytorch_bias_init(fan_in) if initialization == "pytorch" else nn.initializers.zeros_init()


def dense(features: int, fan_in: int, initialization: str = "pytorch", **kwargs) -> nn.Dense:
    """``nn.Dense`` initialised as PyTorch's ``nn.Linear(fan_in, features)`` or with flax's defaults."""
    return nn.Dense(features, kernel_init=kernel_init(initialization), bias_init=bias_init(initialization, fan_in),
                    **kwargs)
