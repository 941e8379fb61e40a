"""LatentDiffuser's networks (Li et al. 2023, Sec. 4.1, App. E.2): the latent action VAE and the energy model.

* :class:`LatentActionVAE` -- the encoder ``q_phi(z | tau)``: tokens ``x_t = (s_t, a_t, r_t, G_t)`` through a GPT-2
  style transformer without causal masking, a 1-D max pooling with kernel = stride = ``L`` and a linear layer give
  ``T / L`` latent actions (mean and standard deviation); the decoder ``p_psi(tau | s_1, z)``: each latent tiled
  ``L`` times, concatenated with ``s_1``, projected, plus a positional embedding, through a non-causal transformer
  to the states, with the modular heads of Fig. 2: the action decoder, an inverse dynamics model ``a_t = g(s_t,
  s_{t+1})`` (2 x 512 ReLU), and the reward and return decoder ``(r_t, G_t) = R(s_t, a_t)`` (3 x 1024 ReLU), whose
  return output is the ``Q(s_t, a_t)`` of the energy (Sec. 4.2).
* :class:`LatentEnergy` -- the time-dependent energy model ``f_eta(z_k, s_1, k)`` of Eq. 8 (App. E.2.2: 4 x 256
  SiLU).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.nets.denoisers import sinusoidal_embedding


def pool_latent_steps(h: jnp.ndarray, latent_step: int) -> jnp.ndarray:
    """1-D max pooling over time with kernel = stride = ``L``: ``[B, T, C] -> [B, T / L, C]``."""
    batch, steps, channels = h.shape
    if steps % latent_step:
        raise ValueError(f"the horizon ({steps}) must be a multiple of the latent step ({latent_step})")
    return jnp.max(h.reshape(batch, steps // latent_step, latent_step, channels), axis=2)


def tile_latents(z: jnp.ndarray, latent_step: int) -> jnp.ndarray:
    """Each latent repeated ``L`` times along time: ``[B, T / L, Z] -> [B, T, Z]``."""
    return jnp.repeat(z, latent_step, axis=1)


class TransformerBlock(nn.Module):
    """A GPT-2 block without the causal mask: pre-LayerNorm self-attention and a 4x GELU MLP, both residual."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(self.width)(jax.nn.gelu(nn.Dense(4 * self.width)(h)))


class Transformer(nn.Module):
    """Linear input projection, a learned positional embedding, ``layers`` non-causal blocks, a final LayerNorm."""

    width: int
    layers: int
    heads: int

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.width)(x)
        h = h + self.param("position", nn.initializers.normal(0.02), (x.shape[-2], self.width))
        for _ in range(self.layers):
            h = TransformerBlock(self.width, self.heads)(h)
        return nn.LayerNorm()(h)


def mlp(x, hidden: int, depth: int, out: int, activation=jax.nn.relu):
    """``depth`` hidden layers of ``hidden`` units, then a linear output (call inside a compact method)."""
    for _ in range(depth):
        x = activation(nn.Dense(hidden)(x))
    return nn.Dense(out)(x)


class InverseDynamics(nn.Module):
    """``a_t = g(s_t, s_{t+1})`` (App. E.2.1: a 2-layer MLP of 512 ReLU units)."""

    action_dim: int
    hidden: int = 512

    @nn.compact
    def __call__(self, state, next_state):
        return mlp(jnp.concatenate([state, next_state], -1), self.hidden, 2, self.action_dim)


class RewardReturnDecoder(nn.Module):
    """``(r_t, G_t) = R(s_t, a_t)`` (App. E.2.1: a 3-layer MLP of 1024 ReLU units); ``G_t`` is the ``Q(s_t, a_t)``
    of the energy."""

    hidden: int = 1024

    @nn.compact
    def __call__(self, state, action):
        return mlp(jnp.concatenate([state, action], -1), self.hidden, 3, 2)


class LatentActionVAE(nn.Module):
    """Encoder ``q_phi(z | tau)``, state decoder ``p_psi(s_{1:T} | s_1, z)`` and the modular heads (Sec. 4.1)."""

    state_dim: int
    action_dim: int
    latent_dim: int
    latent_step: int
    width: int = 128
    layers: int = 4
    heads: int = 4
    inverse_hidden: int = 512
    return_hidden: int = 1024

    def setup(self):
        self.encoder = Transformer(self.width, self.layers, self.heads)
        self.to_latent = nn.Dense(2 * self.latent_dim)
        self.decoder = Transformer(self.width, self.layers, self.heads)
        self.state_head = nn.Dense(self.state_dim)
        self.inverse_dynamics = InverseDynamics(self.action_dim, self.inverse_hidden)
        self.reward_return = RewardReturnDecoder(self.return_hidden)

    def encode(self, tokens):
        """``tokens [B, T, D] -> (mean, std)``, each ``[B, T / L, Z]``."""
        pooled = pool_latent_steps(self.encoder(tokens), self.latent_step)
        mean, log_std = jnp.split(self.to_latent(pooled), 2, axis=-1)
        return mean, jnp.exp(jnp.clip(log_std, -10.0, 2.0))

    def decode_states(self, first_state, z):
        """``s_1 [B, S]`` and ``z [B, T / L, Z]`` -> the states ``[B, T, S]``."""
        tiled = tile_latents(z, self.latent_step)
        first = jnp.broadcast_to(first_state[:, None], tiled.shape[:2] + first_state.shape[-1:])
        return self.state_head(self.decoder(jnp.concatenate([tiled, first], -1)))  # the projection: its input layer

    def actions(self, states, next_states):
        return self.inverse_dynamics(states, next_states)

    def rewards_and_returns(self, states, actions):
        """``[..., 2]``: the reward and the return-to-go of ``(s_t, a_t)``."""
        return self.reward_return(states, actions)

    def __call__(self, tokens, first_state, states, actions, rng):
        """Every output the VAE loss needs: the reparameterised latent's decoded states; the heads on the data's
        states and actions (they learn from the data, App. E.2.1 trains them as their own models)."""
        mean, std = self.encode(tokens)
        z = mean + std * jax.random.normal(rng, mean.shape)
        return {"mean": mean, "std": std, "states": self.decode_states(first_state, z),
                "actions": self.actions(states[:, :-1], states[:, 1:]),
                "rewards_and_returns": self.rewards_and_returns(states, actions)}


class LatentEnergy(nn.Module):
    """``f_eta(z_k, s_1, k)``: an MLP of 4 hidden layers of 256 SiLU units (App. E.2.2; QGPO's ``GuidanceQt``) on the
    flattened latents, the state and a 32-d embedding of ``k`` (sinusoidal, then linear, as QGPO's Fourier features
    and linear layer); larger means preferred (the guidance ascends it)."""

    hidden: int = 256
    depth: int = 4
    time_dim: int = 32

    @nn.compact
    def __call__(self, z, first_state, k):
        time = nn.Dense(self.time_dim)(sinusoidal_embedding(k, self.time_dim))
        batch = z.shape[:-2]
        inputs = [z.reshape(batch + (-1,)), jnp.broadcast_to(first_state, batch + first_state.shape[-1:]),
                  jnp.broadcast_to(time, batch + (self.time_dim,))]
        return mlp(jnp.concatenate(inputs, -1), self.hidden, self.depth, 1, jax.nn.silu)[..., 0]
