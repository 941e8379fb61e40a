"""Value networks: Diffusion-QL's ``Q(s, a)``, LDCQ's ``Q(s, z)`` over latent skills and DIAR's ``Q(s, z)`` and
``V(s)``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from diffrl.nets.activations import mish
from diffrl.nets.denoisers import dense_ln_gelu


class LatentQNetwork(nn.Module):
    """``Q(s, z)`` of LDCQ App. A.2.3: a 5-layer MLP with LayerNorm before every GELU.

    The layer widths follow the official ``MLP_Q``: the state through two layers of ``hidden`` (256), the latent
    through two of ``hidden / 2``, their concatenation through 128 and 32 units and a linear output.
    """

    hidden: int = 256

    @nn.compact
    def __call__(self, state, latent):
        s = dense_ln_gelu(self.hidden, dense_ln_gelu(self.hidden, state))
        z = dense_ln_gelu(self.hidden // 2, dense_ln_gelu(self.hidden // 2, latent))
        h = dense_ln_gelu(32, dense_ln_gelu(128, jnp.concatenate([s, z], axis=-1)))
        return nn.Dense(1)(h)[..., 0]


class StateValueNetwork(nn.Module):
    """``V(s)`` of DIAR App. A.3: the state encoded into ``hidden`` (256) units, then the value; the layers are
    :class:`LatentQNetwork`'s state branch and head without the latent (LayerNorm before every GELU)."""

    hidden: int = 256

    @nn.compact
    def __call__(self, state):
        s = dense_ln_gelu(self.hidden, dense_ln_gelu(self.hidden, state))
        return nn.Dense(1)(dense_ln_gelu(32, dense_ln_gelu(128, s)))[..., 0]


class ActionQNetwork(nn.Module):
    """``Q(s, a)`` of Diffusion-QL (official ``agents/ql_diffusion.py: Critic``): ``[s, a]`` through ``depth``
    Mish layers of ``hidden`` units and a linear output."""

    hidden: int = 256
    depth: int = 3

    @nn.compact
    def __call__(self, state, action):
        h = jnp.concatenate([state, action], axis=-1)
        for _ in range(self.depth):
            h = mish(nn.Dense(self.hidden)(h))
        return nn.Dense(1)(h)[..., 0]
