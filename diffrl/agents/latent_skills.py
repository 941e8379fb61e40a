"""Latent skills with a diffusion prior: what LDCQ, LDGC, LDCP (Venkatraman et al. 2024) and DIAR share.

Stage ``vae`` (Sec. 4.1, App. A.2.1): a beta-VAE over ``H``-step chunks ``(s_{t:t+H}, a_{t:t+H})`` with an
autoregressive policy decoder, a conditional Gaussian prior ``p(z | s_t)`` and optionally the state decoder
``p(s_{t+H} | s_t, z)``. Stage ``prior`` (Sec. 4.2, App. A.2.2): a latent diffusion model ``p(z | c)`` over the
posterior means ``z = E q(z | tau_H)`` of every chunk of the dataset (computed once with the frozen encoder, as
the official ``collect_diffusion_data``), ``c = s_t`` or, for LDGC, ``c = [s_t, g]``; x0-prediction with
Min-SNR-gamma weights and condition dropout for classifier-free guidance (the null condition is the zero vector).

A skill policy (:class:`LatentSkillPolicy`) chooses a latent for every environment, then feeds the decoder
``pi(a | s, z)`` the observed state at every step (a feedback policy, as the official evaluation) and chooses
again every ``plan.replan_every`` steps. What chooses the latent is the method (its own file).
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm.auto import tqdm

from diffrl import diffusion
from diffrl.agents.base import AdamStage, Method, Policy
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.data.store import DatasetStore, chunk_starts, gather_chunks, sample_chunks
from diffrl.nets.denoisers import LatentResNetDenoiser
from diffrl.nets.skills import SkillVAE, skill_vae_loss

logger = logging.getLogger(__name__)

# Rows (states x samples) per denoiser call of the latent sampler on a CPU. The prior's per-sample activations (up
# to 128 wide) for ~4,096 rows stay in a core's cache; for 1,024 states x 500 samples in one call they do not, and
# LDCQ's and DIAR's policies ran 2.0-2.4x slower (benchmarks/results/cpu.md, "Sampler throughput: ldcq-policy,
# diar-policy, diar-act"). Other platforms take the whole batch in one call.
CPU_BLOCK_ROWS = 4096


def call_in_blocks(fn: Callable, x: jnp.ndarray, cond: jnp.ndarray, rows: int) -> jnp.ndarray:
    """``fn(x, cond)`` for ``x [B, n, ...]`` and ``cond [B, ...]`` over blocks of at most ``max(1, rows // n)``
    consecutive states, one block after another (``lax.map``); the last state is repeated to fill the last block."""
    states, samples = x.shape[0], x.shape[1]
    if cond.shape[0] != states:
        raise ValueError(f"call_in_blocks: samples {x.shape} and states {cond.shape} must have the same number of "
                         f"states (leading axis)")
    if states * samples <= rows:
        return fn(x, cond)
    blocks = -(-states // max(1, rows // samples))
    block = -(-states // blocks)
    padded = blocks * block

    def in_blocks(a):  # [B, ...] -> [blocks, block, ...]
        a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (padded - states,) + a.shape[1:])])
        return a.reshape((blocks, block) + a.shape[1:])

    out = jax.lax.map(lambda xc: fn(*xc), (in_blocks(x), in_blocks(cond)))
    return out.reshape((padded,) + out.shape[2:])[:states]


@struct.dataclass
class ChunkLatents:
    """Every chunk of the dataset with its frozen-encoder latent (the prior's training set)."""

    conditions: jnp.ndarray  # [M, C] prior condition at s_t
    latents: jnp.ndarray  # [M, Z] posterior mean


class VAEStage(AdamStage):
    """The skill beta-VAE (Sec. 4.1): action NLL + beta KL to the conditional prior (+ the state decoder's NLL)."""

    name = "vae"

    def init(self, rng):
        m = self.method
        s = jnp.zeros((1, m.horizon, m.state_dim))
        return TrainState.create(m.vae.init(rng, s, jnp.zeros((1, m.horizon, m.action_dim)), rng), self.optimizer)

    def sample_batch(self, store: DatasetStore, rng, state):
        m = self.method
        chunks = sample_chunks(store, rng, self.batch_size, m.horizon, 1.0)
        return {"states": m.skill_state(chunks["states"]), "actions": chunks["actions"],
                "final_state": m.skill_state(chunks["next_observations"])}

    def update(self, state, batch, rng):
        m = self.method

        def loss_fn(params):
            out = m.vae.apply(params, batch["states"], batch["actions"], rng)
            return skill_vae_loss(out, batch["actions"], batch["final_state"], self.config.vae.beta,
                                  self.config.model.state_decoder)

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class PriorStage(AdamStage):
    """The latent diffusion prior (Sec. 4.2): x0-prediction with Min-SNR-gamma weights, the condition dropped to
    zeros with probability ``diffusion.drop_prob``."""

    name = "prior"
    consumes = ("vae",)

    def init(self, rng):
        return TrainState.create(self.method.init_prior(rng), self.optimizer)

    def prepare(self, store: DatasetStore) -> ChunkLatents:
        return self.method.encode_chunks(store, self.upstream["vae"])

    def sample_batch(self, chunks: ChunkLatents, rng, state):
        rows = jax.random.randint(rng, (self.batch_size,), 0, chunks.latents.shape[0])
        return {"condition": chunks.conditions[rows], "latent": chunks.latents[rows]}

    def update(self, state, batch, rng):
        m, dc = self.method, self.config.diffusion
        rng_drop, rng_loss = jax.random.split(rng)
        cond = diffusion.drop_condition(rng_drop, batch["condition"], jnp.zeros((m.condition_dim,)), dc.drop_prob)

        def loss_fn(params):
            loss, aux = diffusion.diffusion_loss(functools.partial(m.denoiser.apply, params), m.schedule, rng_loss,
                                                 batch["latent"], cond, prediction=dc.prediction,
                                                 min_snr_gamma=dc.min_snr_gamma)
            return loss, {"unweighted_loss": jnp.mean(aux["per_sample_loss"])}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, learning_rate=self.learning_rate)


class LatentSkillMethod(Method):
    """The networks, inputs and samplers every latent-skill method shares; subclasses add stages and a policy."""

    goal_conditioned_prior = False  # LDGC: the prior's condition is [s, g]

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        task, model = config.task, config.model
        self.horizon = task.horizon
        # task.state_key: one observation key or several, concatenated (AntMaze: D4RL's [x, y, observation])
        self.state_columns = info.columns(task.state_key)
        self.goal_slice = info.slice(task.goal_key) if task.goal_key else None
        self.state_dim = len(self.state_columns)
        self.goal_dim = 0 if self.goal_slice is None else self.goal_slice.stop - self.goal_slice.start
        self.action_dim = info.action_size
        if self.goal_conditioned_prior and self.goal_slice is None:
            raise ValueError(f"{self.name} conditions the prior on the goal: set task.goal_key to the observation key "
                             "holding it")
        self.condition_dim = self.state_dim + (self.goal_dim if self.goal_conditioned_prior else 0)
        self.vae = SkillVAE(state_dim=self.state_dim, action_dim=self.action_dim, latent_dim=model.latent_dim,
                            hidden=model.hidden, gru_layers=model.gru_layers, state_decoder=model.state_decoder,
                            state_decoder_trains_encoder=config.vae.state_decoder_trains_encoder)
        self.denoiser = LatentResNetDenoiser(hidden_dims=tuple(model.prior_hidden_dims), time_dim=model.time_dim,
                                             embed_dim=model.embed_dim)
        self.schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)

    # -- inputs ------------------------------------------------------------------------------------------------
    def skill_state(self, obs: jnp.ndarray) -> jnp.ndarray:
        """The normalised state the VAE sees, ``[..., S]``."""
        return self.normalizer.normalize(obs)[..., self.state_columns]

    def unnormalize_state(self, state: jnp.ndarray) -> jnp.ndarray:
        full = jnp.zeros(state.shape[:-1] + (self.info.observation_size,), state.dtype)
        return self.normalizer.unnormalize(full.at[..., self.state_columns].set(state))[..., self.state_columns]

    def goal(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.normalizer.normalize(obs)[..., self.goal_slice]

    def condition(self, obs: jnp.ndarray) -> jnp.ndarray:
        """The diffusion prior's condition: ``s`` (LDCQ, LDCP) or ``[s, g]`` (LDGC)."""
        if self.goal_conditioned_prior:
            return jnp.concatenate([self.skill_state(obs), self.goal(obs)], axis=-1)
        return self.skill_state(obs)

    def init_prior(self, rng):
        return self.denoiser.init(rng, jnp.zeros((1, self.config.model.latent_dim)), jnp.zeros((1,), jnp.int32),
                                  jnp.zeros((1, self.condition_dim)))

    # -- data ----------------------------------------------------------------------------------------------------
    def encode_chunks(self, store: DatasetStore, vae_params, batch: int = 4096) -> ChunkLatents:
        """Posterior means of every chunk of ``store`` (one compiled encoder call per ``batch`` chunks)."""
        starts = self.chunk_starts(store)

        @jax.jit
        def encode(rows):
            chunk = gather_chunks(store, rows, self.horizon, 1.0)
            mean, _ = self.vae.apply(vae_params, self.skill_state(chunk["states"]), chunk["actions"],
                                     method=SkillVAE.encode)
            return self.condition(chunk["observations"]), mean

        conditions, latents = batched_over_rows(encode, starts, batch, "encode chunks", self.progress)
        return ChunkLatents(conditions=conditions, latents=latents)

    def chunk_starts(self, store: DatasetStore) -> np.ndarray:
        starts = chunk_starts(store, self.horizon)
        if len(starts) == 0:
            raise ValueError(f"no chunk of {self.horizon} steps fits in an episode of {self.info.dataset_id}")
        return starts

    # -- sampling ------------------------------------------------------------------------------------------------
    def sample_latents(self, prior_params, rng, conditions, samples: int, *, steps=None, extra_steps=None,
                       guidance_weight=None) -> jnp.ndarray:
        """``samples`` latents from the diffusion prior for every condition: ``[len(conditions), samples, Z]``.

        DDPM with the step variance ``I(t > 1) beta_t`` of Algorithm 1, x0-prediction, ``extra_steps`` noise-free
        steps at ``t = 0`` (App. E) and classifier-free guidance with weight ``w`` (``w = 1``: none).
        """
        pc = self.config.plan
        steps = pc.sampler_steps if steps is None else steps
        extra_steps = pc.extra_steps if extra_steps is None else extra_steps
        weight = pc.guidance_weight if guidance_weight is None else guidance_weight
        config = diffusion.SamplerConfig(method="ddpm", steps=steps, prediction=self.config.diffusion.prediction,
                                         variance="beta", extra_steps=extra_steps)
        cfg = None if weight == 1.0 else diffusion.ClassifierFreeGuidance(jnp.zeros((self.condition_dim,)), weight)

        def model_fn(x, t, c):  # every sample is at the same step t, and a state's samples share its encoding
            def call(xb, cb):
                return self.denoiser.apply(prior_params, xb, t[:1], cb)

            return jax.lax.platform_dependent(x, c, cpu=lambda *a: call_in_blocks(call, *a, CPU_BLOCK_ROWS),
                                              default=call)

        shape = (conditions.shape[0], samples, self.config.model.latent_dim)
        return diffusion.sample(rng, model_fn, self.schedule, shape, config, conditions[:, None], cfg=cfg)

    def decode_action(self, vae_params, obs, latent, rng) -> jnp.ndarray:
        """``a ~ pi(a | s, z)`` drawn autoregressively, clipped to the action box."""
        action = self.vae.apply(vae_params, self.skill_state(obs), latent, rng, method=SkillVAE.decode_action)
        return jnp.clip(action, -1.0, 1.0)

    def predict_final_state(self, vae_params, obs_state, latent) -> jnp.ndarray:
        """Mean of the state decoder ``p(s_{t+H} | s_t, z)`` on normalised states."""
        mean, _ = self.vae.apply(vae_params, obs_state, latent, method=SkillVAE.predict_final_state)
        return mean

    def choose_prior_mean(self, params, rng, obs):
        """The VAE's Gaussian prior mean (official ``prior_policy``)."""
        mean, _ = self.vae.apply(params["vae"], self.skill_state(obs), method=SkillVAE.prior_distribution)
        return mean

    def choose_prior_sample(self, params, rng, obs):
        """One diffusion-prior sample (official ``diffusion_prior_policy``)."""
        return self.sample_latents(params["prior"], rng, self.condition(obs), 1)[:, 0]


class LatentSkillPolicy(Policy):
    """Choose a latent per environment every ``plan.replan_every`` steps with ``choose(params, rng, obs)``; act
    with the decoder in between."""

    def __init__(self, method: LatentSkillMethod, choose: Callable):
        self.method = method
        self.choose = choose

    def init(self, params, rng, obs):
        return {"latent": self.choose(params, rng, obs)}

    def act(self, params, policy_state, obs, t, rng):
        rng_choose, rng_act = jax.random.split(rng)
        replan = (t > 0) & (t % self.method.config.plan.replan_every == 0)
        latent = jax.lax.cond(replan, lambda: self.choose(params, rng_choose, obs), lambda: policy_state["latent"])
        return self.method.decode_action(params["vae"], obs, latent, rng_act), {"latent": latent}


def batched_over_rows(fn: Callable, rows: np.ndarray, batch: int, desc: str, progress: bool):
    """``fn`` applied to ``rows`` in batches of ``batch`` (one compiled shape: the last batch is padded by
    repeating its final row) with a progress bar; the outputs concatenated and cut back to ``len(rows)``."""
    parts = []
    for start in tqdm(range(0, len(rows), batch), desc=desc, unit="batch", disable=not progress):
        part = rows[start : start + batch]
        parts.append(fn(jnp.asarray(np.concatenate([part, np.full(batch - len(part), part[-1], part.dtype)]))))
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves)[: len(rows)], *parts)
