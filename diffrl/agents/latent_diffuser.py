"""LatentDiffuser (Li et al. 2023, "Efficient Planning with Latent Diffusion"), Algorithm 1.

Stages, over windows ``tau = (x_1, ..., x_T)`` of ``T = H`` steps inside an episode, ``x_t = (s_t, a_t, r_t, G_t)``
with ``G_t`` the discounted return-to-go (Sec. 3; states, rewards and returns normalised, actions on ``[-1, 1]``):

* ``vae`` (Sec. 4.1): the encoder ``q_phi(z | tau)`` giving ``T / L`` latent actions, the state decoder ``p_psi(s_{1:T}
  | s_1, z)``, the inverse-dynamics action decoder and the reward and return decoder
  (:class:`~diffrl.nets.latent_actions.LatentActionVAE`); the loss is the mean squared reconstruction error per
  token entry plus ``vae.kl_weight`` times the KL to ``N(0, I)``. The two heads learn from the data's states and
  actions (App. E.2.1 trains them as models of their own), so only the states' reconstruction shapes the latent.
* ``prior`` (Sec. 4.1, App. B.2, E.2.1): the score-based prior ``p_theta(z_0 | s_1)``, Decision Diffuser's
  conditional temporal U-Net over the ``T / L`` latents (the frozen encoder's posterior means), eps-prediction
  (Eq. 9), ``s_1`` dropped with probability ``diffusion.drop_prob`` for classifier-free guidance.
* ``energy`` (Sec. 4.2, Eqs. 7-8): first ``M`` support latents for every initial state of the dataset, drawn once
  from the prior and kept on the device with their values ``-E_0 = sum_t Q(s_t, a_t)`` (decoded states, the
  inverse-dynamics actions between them and the return decoder's ``Q``); then the time-dependent energy model
  ``f_eta(z_k, s_1, k)`` trained with the contrastive loss of Eq. 8 (:func:`contrastive_energy_loss`).

Acting (Sec. 4.2-4.3): at every step, for every environment, one latent plan from the prior at ``s_1 = s`` with
classifier-free guidance (``plan.guidance_weight``), low-temperature sampling (``plan.temperature``) and the energy
guidance ``+ plan.energy_scale * grad_z f_eta`` in one ``lax.scan``; the plan is decoded to states and the first
action is the inverse-dynamics decoder's ``g(s, s_2)`` (receding horizon control).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffrl import diffusion
from diffrl.agents.base import AdamStage, Method, Policy
from diffrl.agents.latent_skills import batched_over_rows
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.data.minari_io import OfflineData
from diffrl.data.store import (DatasetStore, chunk_starts, discounted_returns_to_go, returns_to_go,
                               sample_chunks)
from diffrl.nets.latent_actions import LatentActionVAE, LatentEnergy
from diffrl.nets.unet import TemporalUNet, check_unet_horizon


def contrastive_energy_loss(energy_logits: jnp.ndarray, target_logits: jnp.ndarray) -> jnp.ndarray:
    """Eq. 8: ``-mean_b sum_i softmax(target)_i log softmax(f)_i`` over the ``M`` supports (last axis) of each
    initial state, ``target = -beta E_0`` of the clean supports and ``f`` the energy model at their noised copies."""
    weights = jax.nn.softmax(target_logits, axis=-1)
    return -jnp.mean(jnp.sum(weights * jax.nn.log_softmax(energy_logits, axis=-1), axis=-1))


@struct.dataclass
class Supports:
    """The energy stage's training set: ``M`` prior latents per initial state and their values."""

    first_states: jnp.ndarray  # [N, S] normalised s_1
    latents: jnp.ndarray  # [N, M, T / L, Z] float16
    values: jnp.ndarray  # [N, M] sum_t Q(s_t, a_t) of the decoded plan (= -E_0)


class WindowStage(AdamStage):
    """Batches of normalised ``T``-step windows (shared by the VAE and the prior)."""

    def prepare(self, store: DatasetStore) -> dict:
        self.method.check_windows(store)
        return {"store": store, "returns": returns_to_go(store, self.config.task.discount)}

    def sample_batch(self, train_data, rng, state):
        m = self.method
        chunk = sample_chunks(train_data["store"], rng, self.batch_size, m.horizon, 1.0)
        rows = chunk["indices"][:, None] + jnp.arange(m.horizon)
        return m.window(chunk["states"], chunk["actions"], chunk["rewards"], train_data["returns"][rows])


class VAEStage(WindowStage):
    name = "vae"

    def init(self, rng):
        m, w = self.method, self.method.window_example()
        return TrainState.create(m.vae.init(rng, w["tokens"], w["states"][:, 0], w["states"], w["actions"], rng),
                                 self.optimizer)

    def update(self, state, batch, rng):
        m, states = self.method, batch["states"]

        def loss_fn(params):
            out = m.vae.apply(params, batch["tokens"], states[:, 0], states, batch["actions"], rng)
            mean, std = out["mean"], out["std"]
            kl = jnp.mean(jnp.sum(0.5 * (jnp.square(mean) + jnp.square(std) - 1.0) - jnp.log(std), axis=(1, 2)))
            # squared errors per token entry (s_t: S, a_t: A, r_t, G_t); a_T has no s_{T+1} to invert
            squares = {"state": jnp.sum(jnp.square(out["states"] - states), -1),
                       "action": jnp.sum(jnp.square(out["actions"] - batch["actions"][:, :-1]), -1),
                       "reward": jnp.square(out["rewards_and_returns"][..., 0] - batch["rewards"]),
                       "return": jnp.square(out["rewards_and_returns"][..., 1] - batch["returns"])}
            mse = sum(jnp.mean(part) for part in squares.values()) / (m.state_dim + m.action_dim + 2)
            metrics = {f"{name}_mse": jnp.mean(part) for name, part in squares.items()}
            return mse + self.config.vae.kl_weight * kl, {**metrics, "kl": kl}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class PriorStage(WindowStage):
    name = "prior"
    consumes = ("vae",)

    def init(self, rng):
        m = self.method
        z = jnp.zeros((1, m.num_latents, self.config.model.latent_dim))
        return TrainState.create(m.prior.init(rng, z, jnp.zeros((1,), jnp.int32), m.prior_condition(
            jnp.zeros((1, m.state_dim)))), self.optimizer)

    def update(self, state, batch, rng):
        m, dc = self.method, self.config.diffusion
        rng_drop, rng_loss = jax.random.split(rng)
        z0, _ = m.vae.apply(self.upstream["vae"], batch["tokens"], method=LatentActionVAE.encode)
        cond = diffusion.drop_condition(rng_drop, m.prior_condition(batch["states"][:, 0]),
                                        m.null_condition(), dc.drop_prob)

        def loss_fn(params):
            loss, _ = diffusion.diffusion_loss(lambda x, t, c: m.prior.apply(params, x, t, c), m.schedule, rng_loss,
                                               z0, cond, prediction=dc.prediction)
            return loss, {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class EnergyStage(AdamStage):
    name = "energy"
    consumes = ("vae", "prior")

    def prepare(self, store: DatasetStore) -> Supports:
        """Algorithm 1, "generating the support latent actions": ``M`` conditional prior samples (``w = 1``, the
        behaviour's ``q(z_0 | s_1)``) for every state that starts a window, and their values."""
        m, ec = self.method, self.config.energy
        m.check_windows(store)
        starts = chunk_starts(store, m.horizon)
        first_states = m.state(store.observations[starts])
        rng = jax.random.PRNGKey(self.config.seed + 3)
        params = {"vae": self.upstream["vae"], "prior": self.upstream["prior"]}

        @jax.jit
        def draw(params, s1, key):  # data and parameters as arguments: a large dataset is no program constant
            z = m.sample_latents(params, key, s1, ec.num_supports, guidance_weight=1.0, temperature=1.0,
                                 steps=ec.support_steps, energy_params=None)
            values = m.plan_value(params["vae"], jnp.repeat(s1, ec.num_supports, axis=0),
                                  z.reshape((-1,) + z.shape[2:]))
            return z.astype(jnp.float16), values.reshape(z.shape[:2])

        def supports(rows):
            return draw(params, first_states[rows], jax.random.fold_in(rng, rows[0]))

        rows = np.arange(len(starts), dtype=np.int32)
        latents, values = batched_over_rows(supports, rows, ec.support_batch, "support latents", m.progress)
        return Supports(first_states=first_states, latents=latents, values=values)

    def init(self, rng):
        m, mc = self.method, self.config.model
        z = jnp.zeros((1, self.config.energy.num_supports, m.num_latents, mc.latent_dim))
        return TrainState.create(m.energy.init(rng, z, jnp.zeros((1, 1, m.state_dim)), jnp.zeros((1, 1), jnp.int32)),
                                 self.optimizer)

    def sample_batch(self, supports: Supports, rng, state):
        rows = jax.random.randint(rng, (self.batch_size,), 0, supports.first_states.shape[0])
        return {"first_state": supports.first_states[rows], "latents": supports.latents[rows].astype(jnp.float32),
                "values": supports.values[rows]}

    def update(self, state, batch, rng):
        """Eq. 8: one ``k ~ U{0, K - 1}`` per initial state, shared by its supports (as QGPO), each noised with its
        own ``eps``."""
        m = self.method
        z0 = batch["latents"]  # [B, M, T / L, Z]
        rng_k, rng_eps = jax.random.split(rng)
        k = jax.random.randint(rng_k, (z0.shape[0],), 0, m.schedule.num_steps)
        k_each = jnp.broadcast_to(k[:, None], z0.shape[:2])
        zk = diffusion.q_sample(m.schedule, z0, k, jax.random.normal(rng_eps, z0.shape))
        target = self.config.energy.beta * batch["values"]
        s1 = jnp.broadcast_to(batch["first_state"][:, None], z0.shape[:2] + batch["first_state"].shape[-1:])

        def loss_fn(params):
            logits = m.energy.apply(params, zk, s1, k_each)
            return contrastive_energy_loss(logits, target), {"target_entropy": jnp.mean(
                -jnp.sum(jax.nn.softmax(target) * jax.nn.log_softmax(target), -1))}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class LatentDiffuser(Method):
    name = "latent-diffuser"
    stages = (VAEStage, PriorStage, EnergyStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        task, model = config.task, config.model
        self.horizon, self.latent_step = task.horizon, task.latent_step
        if self.horizon % self.latent_step:
            raise ValueError(f"task.horizon ({self.horizon}) must be a multiple of "
                             f"task.latent_step ({self.latent_step})")
        self.num_latents = self.horizon // self.latent_step
        check_unet_horizon(self.num_latents, model.prior_dim_mults)
        self.state_columns = info.columns(task.state_key)
        self.state_dim, self.action_dim = len(self.state_columns), info.action_size
        self.vae = LatentActionVAE(state_dim=self.state_dim, action_dim=self.action_dim, latent_dim=model.latent_dim,
                                   latent_step=self.latent_step, width=model.width, layers=model.layers,
                                   heads=model.heads, inverse_hidden=model.inverse_hidden,
                                   return_hidden=model.return_hidden)
        self.prior = TemporalUNet(transition_dim=model.latent_dim, dim=model.prior_dim,
                                  dim_mults=tuple(model.prior_dim_mults), condition_dim=self.state_dim,
                                  embed_hidden=model.embed_hidden)
        self.energy = LatentEnergy(hidden=model.energy_hidden, depth=model.energy_depth)
        self.schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)

    # -- data ----------------------------------------------------------------------------------------------------
    @classmethod
    def normalized_columns(cls, config, info, data: OfflineData) -> np.ndarray:
        """Rows ``[o, r, G]``: the normaliser covers the observation, the reward and the return-to-go."""
        last_step = np.zeros(len(data.rewards), bool)
        last_step[data.episode_starts + data.episode_lengths - 1] = True
        returns = np.asarray(discounted_returns_to_go(data.rewards, last_step, config.task.discount))
        return np.concatenate([data.observations, data.rewards[:, None], returns[:, None]], axis=1)

    def check_windows(self, store: DatasetStore) -> None:
        if store.longest_episode < self.horizon:
            raise ValueError(f"no window of task.horizon = {self.horizon} steps fits in an episode of "
                             f"{self.info.dataset_id} (the longest has {store.longest_episode})")

    def normalize(self, obs, rewards, returns):
        """Normalised ``(states [..., S], rewards [...], returns [...])``."""
        rows = self.normalizer.normalize(jnp.concatenate([obs, rewards[..., None], returns[..., None]], -1))
        return rows[..., self.state_columns], rows[..., -2], rows[..., -1]

    def state(self, obs):
        """The normalised state of observations ``[..., O]``."""
        return self.normalize(obs, jnp.zeros(obs.shape[:-1]), jnp.zeros(obs.shape[:-1]))[0]

    def unnormalize_states(self, states):
        obs_dim = self.info.observation_size
        rows = jnp.zeros(states.shape[:-1] + (obs_dim + 2,), states.dtype).at[..., self.state_columns].set(states)
        return self.normalizer.unnormalize(rows)[..., self.state_columns]

    def window(self, obs, actions, rewards, returns) -> dict:
        """The VAE's tokens ``x_t = (s_t, a_t, r_t, G_t)`` of windows ``[B, T, ...]`` and their parts."""
        states, rewards, returns = self.normalize(obs, rewards, returns)
        actions = self.info.to_unit_action(actions)
        tokens = jnp.concatenate([states, actions, rewards[..., None], returns[..., None]], -1)
        return {"tokens": tokens, "states": states, "actions": actions, "rewards": rewards, "returns": returns}

    def window_example(self) -> dict:
        obs = jnp.zeros((1, self.horizon, self.info.observation_size))
        zeros = jnp.zeros((1, self.horizon))
        return self.window(obs, jnp.zeros((1, self.horizon, self.action_dim)), zeros, zeros)

    # -- the decoder and the value of a plan ---------------------------------------------------------------------
    def decode(self, vae_params, first_state, z) -> dict:
        """States ``[B, T, S]`` (``s_1`` itself first), the inverse-dynamics actions between them ``[B, T - 1, A]``
        (clipped to the action box) and their ``Q(s_t, a_t)`` ``[B, T - 1]``, in normalised units."""
        states = self.vae.apply(vae_params, first_state, z, method=LatentActionVAE.decode_states)
        states = states.at[:, 0].set(first_state)
        actions = jnp.clip(self.vae.apply(vae_params, states[:, :-1], states[:, 1:], method=LatentActionVAE.actions),
                           -1.0, 1.0)
        q = self.vae.apply(vae_params, states[:, :-1], actions, method=LatentActionVAE.rewards_and_returns)[..., 1]
        return {"states": states, "actions": actions, "q": q}

    def plan_value(self, vae_params, first_state, z) -> jnp.ndarray:
        """``-E_0(h(z, s_1)) = sum_t Q(s_t, a_t)`` over the decoded plan (Eq. 5), ``t < T``: the last step has no
        ``s_{T+1}`` to invert into an action."""
        return jnp.sum(self.decode(vae_params, first_state, z)["q"], axis=-1)

    # -- sampling ------------------------------------------------------------------------------------------------
    def prior_condition(self, first_state) -> dict:
        return {"state": first_state, "keep": jnp.ones(first_state.shape[:1])}

    def null_condition(self) -> dict:
        return {"state": jnp.zeros((self.state_dim,)), "keep": jnp.zeros(())}

    def sample_latents(self, params, rng, first_states, samples: int, *, guidance_weight=None, temperature=None,
                       steps=None, energy_params="energy") -> jnp.ndarray:
        """``[N, samples, T / L, Z]`` latent plans at every ``s_1`` of ``first_states [N, S]``: the prior's DDPM
        chain with classifier-free guidance, low temperature and, unless ``energy_params`` is None, the energy
        guidance of ``params["energy"]`` (Sec. 4.2), all in one ``lax.scan``."""
        pc = self.config.plan
        weight = pc.guidance_weight if guidance_weight is None else guidance_weight
        config = diffusion.SamplerConfig(method="ddpm", steps=pc.sampler_steps if steps is None else steps,
                                         prediction=self.config.diffusion.prediction,
                                         temperature=pc.temperature if temperature is None else temperature)
        s1 = jnp.repeat(first_states, samples, axis=0)
        cfg = None if weight == 1.0 else diffusion.ClassifierFreeGuidance(self.null_condition(), weight)
        energy = None
        if energy_params is not None:
            def f(z, k):
                return self.energy.apply(params[energy_params], z, s1, k)

            energy = diffusion.EnergyGuidance(f, pc.energy_scale)
        z = diffusion.sample(rng, lambda x, t, c: self.prior.apply(params["prior"], x, t, c), self.schedule,
                             (s1.shape[0], self.num_latents, self.config.model.latent_dim), config,
                             self.prior_condition(s1), cfg=cfg, energy_guidance=energy)
        return z.reshape((first_states.shape[0], samples) + z.shape[1:])

    def plan(self, params, rng, obs) -> dict:
        """One energy-guided plan per observation, decoded (normalised units)."""
        s1 = self.state(obs)
        z = self.sample_latents(params, rng, s1, 1)[:, 0]
        return self.decode(params["vae"], s1, z)

    def policy(self) -> Policy:
        return LatentPlanPolicy(self)


class LatentPlanPolicy(Policy):
    """Receding horizon control: plan at every step, execute the first inverse-dynamics action."""

    def __init__(self, method: LatentDiffuser):
        self.method = method

    def init(self, params, rng, obs):
        m = self.method
        return {"plan": jnp.zeros((obs.shape[0], m.horizon, m.state_dim))}

    def act(self, params, policy_state, obs, t, rng):
        m = self.method
        plan = m.plan(params, rng, obs)
        action = m.info.from_unit_action(plan["actions"][:, 0])
        return action, {"plan": m.unnormalize_states(plan["states"])}

    def planned_states(self, policy_state):
        return policy_state["plan"]
