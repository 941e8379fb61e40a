"""DIAR: diffusion-guided implicit Q-learning with Adaptive Revaluation (Park et al., Sec. 3, Algorithms 1-4).

Stages, on LDCQ's latent-skill stack (:mod:`diffrl.agents.latent_skills`, :mod:`diffrl.agents.ldcq`):

* ``vae`` (Algorithm 3): the skill beta-VAE with its state decoder ``f(s_{t+H} | s_t, z)``, trained together with
  a transformer diffusion prior on its latents, ``L1 + beta L2 + L3 + L4``; ``L4`` (x0-prediction, Min-SNR) shapes
  the encoder through the sampled ``z`` and the transformer is dropped afterwards (App. A.1).
* ``prior`` (Algorithm 4): LDCQ's latent diffusion prior ``p(z | s_t)`` on the frozen encoder's latents.
* ``qv`` (Algorithm 1): ``V`` by the expectile loss (Eq. 5) on ``min_j Q_target_j(s, z~) - V(s)`` over ``n`` prior
  latents ``z~`` at ``s`` (Eq. 6), then both Q-networks on the dataset's chunks towards
  ``r_{t:t+H} + gamma (1 - done) V(s_{t+H})`` (Eq. 7); clipped double Q, Polyak targets, prioritized replay and
  the candidate pool as LDCQ's ``q`` stage.

Acting (Algorithm 2): the argmax-Q latent of ``n`` prior samples; with Adaptive Revaluation (``plan.
adaptive_revaluation``) the state decoder predicts ``s_{t+H}`` and the latent is chosen again as soon as
``V(s_{t+h}) > V(s_{t+H})``, or after ``H`` steps, each environment on its own counter.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from diffrl import diffusion
from diffrl.agents.base import Policy
from diffrl.agents.latent_skills import LatentSkillPolicy, PriorStage, VAEStage
from diffrl.agents.ldcq import LDCQ, QStage
from diffrl.agents.train_state import TrainState, apply_loss, ensemble
from diffrl.data.store import DatasetStore
from diffrl.nets.critics import StateValueNetwork
from diffrl.nets.denoisers import LatentTransformerDenoiser
from diffrl.nets.skills import skill_vae_loss

VALUE_STATES = ("current", "next")


def expectile_loss(u: jnp.ndarray, tau: float) -> jnp.ndarray:
    """``L_tau^2(u) = |tau - 1(u < 0)| u^2`` (Eq. 5), elementwise."""
    return jnp.abs(tau - (u < 0).astype(u.dtype)) * jnp.square(u)


class DIARVAEStage(VAEStage):
    """Algorithm 3: the beta-VAE's loss (its state decoder's included, with gradients into the encoder) plus
    ``L4``, the Min-SNR x0 loss of a transformer diffusion prior on the sampled latent at ``s_t``; both are one
    train state, and only the VAE is handed on."""

    def init(self, rng):
        m = self.method
        rng_vae, rng_prior = jax.random.split(rng)
        s = jnp.zeros((1, m.horizon, m.state_dim))
        vae = m.vae.init(rng_vae, s, jnp.zeros((1, m.horizon, m.action_dim)), rng_vae)
        prior = m.vae_prior.init(rng_prior, jnp.zeros((1, self.config.model.latent_dim)), jnp.zeros((1,), jnp.int32),
                                 jnp.zeros((1, m.state_dim)))
        return TrainState.create({"vae": vae, "prior": prior}, self.optimizer)

    def export(self, state):
        return state.params["vae"]

    def update(self, state, batch, rng):
        m, vc = self.method, self.config.vae
        rng_z, rng_prior = jax.random.split(rng)

        def loss_fn(params):
            out = m.vae.apply(params["vae"], batch["states"], batch["actions"], rng_z)
            loss, metrics = skill_vae_loss(out, batch["actions"], batch["final_state"], vc.beta,
                                           self.config.model.state_decoder)
            prior_loss, _ = diffusion.diffusion_loss(functools.partial(m.vae_prior.apply, params["prior"]),
                                                     m.vae_prior_schedule, rng_prior, out["z"], batch["states"][:, 0],
                                                     prediction="x0", min_snr_gamma=vc.prior_min_snr_gamma)
            # skill_vae_loss is L1 + beta L2 + L3 per step (divided by H); L4 on the same scale: its squared error
            # summed over the Z latent dimensions (diffusion_loss averages them), divided by H
            scaled_prior_loss = prior_loss * out["z"].shape[-1] / m.horizon
            return loss + scaled_prior_loss, {**metrics, "prior_loss": prior_loss}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class QVStage(QStage):
    """Algorithm 1: the value network, then the two Q-networks, in one step; both at Table 5's learning rate with
    its StepLR decay (``q.lr_decay_rate`` every ``q.lr_decay_epochs`` passes over the chunks, stepped per epoch
    as the official LDCQ ``dqn.py`` steps it)."""

    name = "qv"
    bootstraps_on_latents = False  # Eq. 7 bootstraps on V(s_{t+H})

    def __init__(self, method: "DIAR", upstream=None):
        super().__init__(method, upstream)
        qc = self.config.q
        if qc.value_states not in VALUE_STATES:
            raise ValueError(f"q.value_states must be one of {VALUE_STATES}, got {qc.value_states!r}")
        if not 0.0 < qc.expectile < 1.0:
            raise ValueError(f"q.expectile must lie in (0, 1), got {qc.expectile}")
        self.value_at_next = qc.value_states == "next"

    def candidate_conditions(self, data):
        """Eq. 6 samples ``z~`` at ``s_t`` (``q.value_states="current"``); Algorithm 1 line 6 at ``s_{t+H}``."""
        return data.next_conditions if self.value_at_next else data.conditions

    def prepare(self, store: DatasetStore):
        data = super().prepare(store)
        qc, tc = self.config.q, self.train_config
        steps_per_epoch = math.ceil(self.num_chunks / self.batch_size)
        self.learning_rate = optax.exponential_decay(tc.learning_rate, qc.lr_decay_epochs * steps_per_epoch,
                                                     qc.lr_decay_rate, staircase=True)
        adam = optax.chain(optax.clip_by_global_norm(qc.grad_clip), optax.adam(self.learning_rate))
        self.optimizer, self.value_optimizer = ensemble(adam), adam
        return data

    def init(self, rng):
        rng_q, rng_v = jax.random.split(rng)
        state = super().init(rng_q)
        return {**state, "v": TrainState.create(self.method.init_v(rng_v), self.value_optimizer)}

    def export(self, state):
        return {"q": state["q"].params, "v": state["v"].params}

    def value_loss(self, v_params, target_q_params, batch: dict, rng):
        """Eq. 6: the importance-weighted expectile loss of ``min_j Q_target_j(s, z~_i) - V(s)`` over the batch's
        states and their ``n`` candidates."""
        m = self.method
        state = batch["next_state"] if self.value_at_next else batch["state"]
        target_q = jax.lax.stop_gradient(m.min_q(target_q_params, state, self.candidates(batch, rng)))
        v = m.values(v_params, state)
        loss = jnp.mean(batch["weights"][:, None] * expectile_loss(target_q - v[:, None], self.config.q.expectile))
        return loss, {"v_mean": jnp.mean(v), "target_q_mean": jnp.mean(target_q)}

    def q_targets(self, v_params, batch: dict) -> jnp.ndarray:
        """Eq. 7: ``r_{t:t+H} + gamma (1 - done) V(s_{t+H})``."""
        next_v = self.method.values(v_params, batch["next_state"])
        return batch["reward"] + self.bootstrap_discount * (1.0 - batch["done"]) * next_v

    def update(self, state, batch, rng):
        v_state, v_metrics = apply_loss(state["v"], self.value_optimizer, self.value_loss, state["q"].ema_params,
                                        batch, rng, prefix="v")
        target = jax.lax.stop_gradient(self.q_targets(v_state.params, batch))  # line 8 reads the updated V
        q_state, replay_state, q_metrics = self.fit_q(state["q"], state["replay"], batch, target)
        return {"q": q_state, "v": v_state, "replay": replay_state}, {**v_metrics, **q_metrics}


class DIAR(LDCQ):
    name = "diar"
    stages = (DIARVAEStage, PriorStage, QVStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        vc = config.vae
        if config.plan.adaptive_revaluation and not config.model.state_decoder:
            raise ValueError("Adaptive Revaluation predicts s_{t+H} with the state decoder: set "
                             "model.state_decoder=True or plan.adaptive_revaluation=False")
        self.v_net = StateValueNetwork(hidden=config.model.q_hidden)
        self.vae_prior = LatentTransformerDenoiser(width=vc.prior_width, layers=vc.prior_layers, heads=vc.prior_heads,
                                                   time_dim=vc.prior_time_dim)
        self.vae_prior_schedule = diffusion.make_schedule(vc.prior_schedule, vc.prior_steps)

    def q_params(self, params: dict):
        return params["qv"]["q"]

    def init_v(self, rng):
        return self.v_net.init(rng, jnp.zeros((1, self.q_input_dim)))

    def values(self, v_params, states) -> jnp.ndarray:
        return self.v_net.apply(v_params, states)

    def value_input(self, skill_state: jnp.ndarray, obs: jnp.ndarray) -> jnp.ndarray:
        """``V``'s input for a (predicted) normalised skill state, with ``obs``'s goal where Q takes one."""
        if self.goal_slice is None:
            return skill_state
        return jnp.concatenate([skill_state, self.goal(obs)], axis=-1)

    def choose_with_future_value(self, params, rng, obs):
        """Algorithm 2 lines 6-10: the argmax-Q latent and ``V`` of the state decoder's ``s_{t+H}`` for it."""
        latent = self.choose_by_q(params, rng, obs)
        future = self.predict_final_state(params["vae"], self.skill_state(obs), latent)
        return latent, self.values(params["qv"]["v"], self.value_input(future, obs))

    def policy(self) -> Policy:
        if self.config.plan.adaptive_revaluation:
            return AdaptiveRevaluationPolicy(self)
        return LatentSkillPolicy(self, self.choose_by_q)


class AdaptiveRevaluationPolicy(Policy):
    """Algorithm 2 for ``N`` environments at once: each keeps its latent, ``V`` of its predicted ``s_{t+H}`` and
    the steps it has executed the latent; it chooses again when ``V(s_{t+h}) > V(s_{t+H})`` (line 15) or after
    ``plan.replan_every`` (``H``) steps. A fresh latent is executed at least once: at a state no candidate's
    predicted ``s_{t+H}`` is worth more than, Algorithm 2 as written would sample forever without acting."""

    def __init__(self, method: DIAR):
        self.method = method

    def init(self, params, rng, obs):
        latent, future = self.method.choose_with_future_value(params, rng, obs)
        return {"latent": latent, "future_value": future, "age": jnp.zeros(obs.shape[0], jnp.int32)}

    def act(self, params, policy_state, obs, t, rng):
        m = self.method
        rng_choose, rng_act = jax.random.split(rng)
        current = m.values(params["qv"]["v"], m.q_input(obs))
        revalued = (policy_state["age"] > 0) & (current > policy_state["future_value"])
        resample = revalued | (policy_state["age"] >= m.config.plan.replan_every)
        latent, future = jax.lax.cond(jnp.any(resample),
                                      lambda: m.choose_with_future_value(params, rng_choose, obs),
                                      lambda: (policy_state["latent"], policy_state["future_value"]))
        latent = jnp.where(resample[:, None], latent, policy_state["latent"])
        future = jnp.where(resample, future, policy_state["future_value"])
        age = jnp.where(resample, 0, policy_state["age"]) + 1
        action = m.decode_action(params["vae"], obs, latent, rng_act)
        return action, {"latent": latent, "future_value": future, "age": age}
