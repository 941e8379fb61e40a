"""The beta-VAE over H-step skills of LDCQ (Venkatraman et al. 2024, App. A.2.1), shared with DIAR.

* :class:`SkillEncoder` -- ``q(z | s_{t:t+H}, a_{t:t+H})``: a 2-layer ReLU state embedding, the actions
  concatenated, stacked bidirectional GRUs (hidden 256), and mean / softplus-std heads (2-layer MLPs) on the GRU
  output at the last step (official ``GRUEncoder``).
* :class:`AutoregressivePolicy` -- ``pi(a | s, z)``: one MLP per action dimension on ``[s, z, a_{<i}]``
  (EMAQ's autoregressive policy; official ``AutoregressiveLowLevelPolicy``).
* :class:`GaussianPrior` -- the conditional Gaussian prior ``p(z | s_0)`` of the VAE objective.
* :class:`StateDecoder` -- the temporally abstract world model ``p(s_{t+H} | s_t, z)`` (App. B, used by LDCP and
  DIAR), trained on a stopped gradient of ``z`` (official ``AbstractDynamics``) unless ``state_decoder_trains_encoder``
  (DIAR's Algorithm 3 updates the whole VAE on its loss).

Every distribution is a diagonal Gaussian returned as ``(mean, std)``; :func:`skill_vae_loss` scores them as
``distrax.MultivariateNormalDiag`` (log-densities and KL summed over the last axis).
"""

from __future__ import annotations

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


def _diagonal_gaussian(out: dict, name: str) -> distrax.MultivariateNormalDiag:
    """The Gaussian ``N(out[name_mean], diag(out[name_std]^2))`` over the last axis."""
    return distrax.MultivariateNormalDiag(out[f"{name}_mean"], out[f"{name}_std"])


class GaussianHead(nn.Module):
    """Mean and softplus-std heads, each ``Dense(hidden) -> ReLU -> Dense(out)`` (App. A.2.1)."""

    out_dim: int
    hidden: int = 256

    @nn.compact
    def __call__(self, features):
        mean = nn.Dense(self.out_dim)(nn.relu(nn.Dense(self.hidden)(features)))
        std = jax.nn.softplus(nn.Dense(self.out_dim)(nn.relu(nn.Dense(self.hidden)(features))))
        return mean, std


class MLPTrunk(nn.Module):
    """``Dense(hidden) -> ReLU -> Dense(hidden) -> ReLU``: the 2 hidden layers every VAE part starts with."""

    hidden: int = 256

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(self.hidden)(nn.relu(nn.Dense(self.hidden)(x))))


class SkillEncoder(nn.Module):
    """``q(z | tau_H)`` for states ``[B, H, S]`` and actions ``[B, H, A]`` -> ``(mean, std)``, each ``[B, Z]``."""

    latent_dim: int = 16
    hidden: int = 256
    gru_layers: int = 2

    @nn.compact
    def __call__(self, states, actions):
        chex.assert_rank([states, actions], 3)
        chex.assert_equal_shape_prefix([states, actions], 2)
        h = jnp.concatenate([MLPTrunk(self.hidden)(states), actions], axis=-1)
        for _ in range(self.gru_layers):
            h = nn.Bidirectional(nn.RNN(nn.GRUCell(self.hidden)), nn.RNN(nn.GRUCell(self.hidden)))(h)
        return GaussianHead(self.latent_dim, self.hidden)(h[..., -1, :])


class ActionDimensionPolicy(nn.Module):
    """One component of the autoregressive policy: ``(mean, std)`` of one action dimension."""

    hidden: int = 256

    @nn.compact
    def __call__(self, inputs):
        return GaussianHead(1, self.hidden)(MLPTrunk(self.hidden)(inputs))


class AutoregressivePolicy(nn.Module):
    """``pi(a | s, z) = prod_i pi_i(a_i | s, z, a_{<i})``: one :class:`ActionDimensionPolicy` per dimension.

    ``__call__`` scores given actions (teacher forcing, all dimensions at once); :meth:`sample` draws them one
    dimension after the other, each drawn value becoming an input of the next component.
    """

    action_dim: int
    hidden: int = 256

    def setup(self):
        self.components = [ActionDimensionPolicy(self.hidden) for _ in range(self.action_dim)]

    def __call__(self, states, latents, actions):
        """``(mean, std)`` of every action dimension given the earlier ones of ``actions`` (shapes ``[..., A]``)."""
        chex.assert_equal_rank([states, latents, actions])
        chex.assert_axis_dimension(actions, -1, self.action_dim)
        context = jnp.concatenate([states, jnp.broadcast_to(latents, states.shape[:-1] + latents.shape[-1:])], -1)
        outputs = [component(jnp.concatenate([context, actions[..., :i]], -1))
                   for i, component in enumerate(self.components)]
        return tuple(jnp.concatenate(parts, axis=-1) for parts in zip(*outputs))

    def sample(self, states, latents, rng):
        """Actions ``[..., A]`` drawn dimension by dimension (the official decoder samples, not takes the mean)."""
        context = jnp.concatenate([states, jnp.broadcast_to(latents, states.shape[:-1] + latents.shape[-1:])], -1)
        noise = jax.random.normal(rng, states.shape[:-1] + (self.action_dim,))
        actions = []
        for i, component in enumerate(self.components):
            mean, std = component(jnp.concatenate([context, *actions], -1))
            actions.append(mean + std * noise[..., i : i + 1])
        return jnp.concatenate(actions, axis=-1)


class GaussianPrior(nn.Module):
    """The VAE's conditional prior ``p(z | s_0)`` (official ``Prior``)."""

    latent_dim: int = 16
    hidden: int = 256

    @nn.compact
    def __call__(self, state):
        return GaussianHead(self.latent_dim, self.hidden)(MLPTrunk(self.hidden)(state))


class StateDecoder(nn.Module):
    """``p(s_{t+H} | s_t, z)``, the temporally abstract world model of App. B (official ``AbstractDynamics``)."""

    state_dim: int
    hidden: int = 256

    @nn.compact
    def __call__(self, state, latent):
        return GaussianHead(self.state_dim, self.hidden)(MLPTrunk(self.hidden)(jnp.concatenate([state, latent], -1)))


class SkillVAE(nn.Module):
    """Encoder, autoregressive policy decoder, conditional Gaussian prior and (optionally) the state decoder."""

    state_dim: int
    action_dim: int
    latent_dim: int = 16
    hidden: int = 256
    gru_layers: int = 2
    state_decoder: bool = False
    state_decoder_trains_encoder: bool = False

    def setup(self):
        self.encoder = SkillEncoder(self.latent_dim, self.hidden, self.gru_layers)
        self.policy = AutoregressivePolicy(self.action_dim, self.hidden)
        self.prior = GaussianPrior(self.latent_dim, self.hidden)
        self.dynamics = StateDecoder(self.state_dim, self.hidden) if self.state_decoder else None

    def __call__(self, states, actions, rng):
        """Every output the loss needs for a batch of chunks ``states [B, H, S]``, ``actions [B, H, A]``."""
        mean, std = self.encoder(states, actions)
        z = mean + std * jax.random.normal(rng, mean.shape)
        out = {"post_mean": mean, "post_std": std, "z": z}
        out["action_mean"], out["action_std"] = self.policy(states, z[:, None, :], actions)
        out["prior_mean"], out["prior_std"] = self.prior(states[:, 0])
        if self.dynamics is not None:
            dynamics_z = z if self.state_decoder_trains_encoder else jax.lax.stop_gradient(z)
            out["final_mean"], out["final_std"] = self.dynamics(states[:, 0], dynamics_z)
        return out

    def encode(self, states, actions):
        return self.encoder(states, actions)

    def decode_action(self, state, latent, rng):
        return self.policy.sample(state, latent, rng)

    def prior_distribution(self, state):
        return self.prior(state)

    def predict_final_state(self, state, latent):
        return self.dynamics(state, latent)


def skill_vae_loss(out: dict, actions, final_state, beta: float, state_decoder: bool):
    """The official objective (``SkillModel.get_losses``), per chunk of ``H`` steps:

    ``-E_t[sum_a log pi(a_t | s_t, z)] + beta KL(q(z | tau) || p(z | s_0)) / H
    [- sum_s log p(s_{t+H} | s_t, z) / H]``. Returns ``(loss, metrics)``.
    """
    horizon = actions.shape[1]
    action_nll = -jnp.mean(_diagonal_gaussian(out, "action").log_prob(actions))
    kl = jnp.mean(_diagonal_gaussian(out, "post").kl_divergence(_diagonal_gaussian(out, "prior"))) / horizon
    loss = action_nll + beta * kl
    metrics = {"action_nll": action_nll, "kl": kl,
               "action_mse": jnp.mean(jnp.square(out["action_mean"] - actions))}
    if state_decoder:
        final_nll = -jnp.mean(_diagonal_gaussian(out, "final").log_prob(final_state)) / horizon
        loss = loss + final_nll
        metrics["final_state_nll"] = final_nll
        metrics["final_state_mse"] = jnp.mean(jnp.square(out["final_mean"] - final_state))
    return loss, metrics
