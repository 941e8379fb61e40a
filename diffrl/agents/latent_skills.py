"""Latent skills with a diffusion prior: the stages LDCQ, LDGC, LDCP (Venkatraman et al. 2024) and DIAR share.

Stage ``vae`` (Sec. 4.1, App. A.2.1): a beta-VAE over ``H``-step chunks ``(s_{t:t+H}, a_{t:t+H})`` with an
autoregressive policy decoder, a conditional Gaussian prior ``p(z | s_t)`` and optionally the state decoder
``p(s_{t+H} | s_t, z)``. Stage ``prior`` (Sec. 4.2, App. A.2.2): a latent diffusion model ``p(z | c)`` over the
posterior means ``z = E q(z | tau_H)`` of every chunk of the dataset (computed once with the frozen encoder, as
the official ``collect_diffusion_data``), ``c = s_t`` or, for LDGC, ``c = [s_t, g]``; x0-prediction with
Min-SNR-gamma weights and condition dropout for classifier-free guidance (the null condition is the zero
vector). Each stage is its own run of the shared training loop; a stage's train state carries the frozen
parameters of the stages before it, so its checkpoint alone evaluates it.

A skill policy (:class:`LatentSkillPolicy`) chooses a latent for every environment, then feeds the decoder
``pi(a | s, z)`` the observed state at every step (a feedback policy, as the official evaluation) and chooses
again every ``plan.replan_every`` steps. What chooses the latent is the method: the Gaussian prior's mean
(after ``vae``), one diffusion-prior sample (after ``prior``; LDGC with the goal in the condition), LDCP's
planning with the state decoder, or LDCQ's argmax of Q (:mod:`diffrl.agents.ldcq`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from tqdm.auto import tqdm

from diffrl import diffusion
from diffrl.agents.base import Agent, DatasetInfo, Policy
from diffrl.config import mismatched_keys
from diffrl.data.minari_io import OfflineData
from diffrl.data.normalizers import fit_normalizer, normalizer_from_dict, normalizer_to_json
from diffrl.data.store import DatasetStore, chunk_starts, gather_chunks, sample_chunks
from diffrl.nets.denoisers import LatentResNetDenoiser
from diffrl.nets.skills import SkillVAE, skill_vae_loss

STAGES = ("vae", "prior", "q")
# The stages each method trains, in order; the last one is the policy ``diffrl evaluate`` scores.
METHOD_STAGES = {"ldcq": ("vae", "prior", "q"), "ldgc": ("vae", "prior"), "ldcp": ("vae", "prior")}


@struct.dataclass
class VAEState:
    params: Any
    opt_state: Any
    step: jnp.ndarray


@struct.dataclass
class PriorState:
    params: Any
    opt_state: Any
    step: jnp.ndarray
    vae_params: Any  # frozen


@struct.dataclass
class ChunkData:
    """Every chunk of the dataset with its frozen-encoder latent (the prior's and Q-learning's dataset)."""

    conditions: jnp.ndarray  # [M, C] prior condition at s_t
    latents: jnp.ndarray  # [M, Z] posterior mean


def load_upstream(workdir: str, config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> Any:
    """The policy parameters of the finished stage in ``workdir``, whose config must agree with ``config`` on
    ``keys``."""
    from diffrl.eval.evaluate import load_for_evaluation
    from diffrl.train.checkpoint import CheckpointError

    if not workdir:
        raise ValueError("this stage needs the workdir of the stage before it (config.upstream); run the pipeline "
                         "with `diffrl train` without --stage, or pass --config.upstream=WORKDIR_OF_PREVIOUS_STAGE")
    _, params, saved, _ = load_for_evaluation(workdir)
    mismatches = mismatched_keys(saved, config, keys)
    if mismatches:
        key, old, new = mismatches[0]
        raise CheckpointError(f"upstream stage in {workdir} was trained with {key}={old}, this run has {key}={new}; "
                              "retrain it or use matching values")
    return params


class LatentSkillAgent(Agent):
    """Stages ``vae`` and ``prior`` (``config.stage``), and everything the stages and policies share."""

    def __init__(self, config: ml_collections.ConfigDict, info: DatasetInfo, normalizer, upstream=None):
        super().__init__(config, info)
        stages = METHOD_STAGES.get(config.method, STAGES)
        if config.stage not in stages:
            raise ValueError(f"config.stage of {config.method} must be one of {stages}, got {config.stage!r}")
        self.normalizer = normalizer
        self.upstream = upstream
        task, model = config.task, config.model
        self.horizon = task.horizon
        self.state_slice = info.slice(task.state_key)
        self.goal_slice = info.slice(task.goal_key) if task.goal_key else None
        self.state_dim = self.state_slice.stop - self.state_slice.start
        self.goal_dim = 0 if self.goal_slice is None else self.goal_slice.stop - self.goal_slice.start
        self.action_dim = info.action_size
        self.goal_conditioned_prior = bool(config.prior.goal_conditioned)
        if self.goal_conditioned_prior and self.goal_slice is None:
            raise ValueError("prior.goal_conditioned (LDGC) needs task.goal_key: the observation key holding the goal")
        self.condition_dim = self.state_dim + (self.goal_dim if self.goal_conditioned_prior else 0)
        self.vae = SkillVAE(state_dim=self.state_dim, action_dim=self.action_dim, latent_dim=model.latent_dim,
                            hidden=model.hidden, gru_layers=model.gru_layers, state_decoder=model.state_decoder)
        self.denoiser = LatentResNetDenoiser(hidden_dims=tuple(model.prior_hidden_dims), time_dim=model.time_dim,
                                             embed_dim=model.embed_dim)
        pc = config.prior
        self.schedule = diffusion.make_schedule(pc.schedule, pc.num_steps)
        self.train_config = config[config.stage].train
        self.learning_rate = optax.constant_schedule(self.train_config.learning_rate)
        self.optimizer = optax.adam(self.learning_rate)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_data(cls, config, data: OfflineData, upstream: dict | None = None) -> "LatentSkillAgent":
        """The agent of ``config.stage`` on ``data``; a later stage takes the earlier stages' parameters from
        ``upstream`` or, by default, from the finished stage in ``config.upstream``."""
        if config.stage != "vae" and upstream is None:
            upstream = load_upstream(config.upstream, config, ("dataset.id", "task", "model"))
        return cls(config, DatasetInfo.from_data(data), fit_normalizer(config.task.normalizer, data.observations),
                   upstream)

    @classmethod
    def from_artifacts(cls, config, artifacts: dict) -> "LatentSkillAgent":
        return cls(config, DatasetInfo.from_dict(artifacts["dataset"]), normalizer_from_dict(artifacts["normalizer"]))

    def artifacts(self) -> dict:
        return {"dataset": self.info.to_dict(), "normalizer": normalizer_to_json(self.normalizer)}

    # -- inputs ------------------------------------------------------------------------------------------------
    def skill_state(self, obs: jnp.ndarray) -> jnp.ndarray:
        """The normalised state the VAE sees, ``[..., S]``."""
        return self.normalizer.normalize(obs)[..., self.state_slice]

    def unnormalize_state(self, state: jnp.ndarray) -> jnp.ndarray:
        full = jnp.zeros(state.shape[:-1] + (self.info.observation_size,), state.dtype)
        return self.normalizer.unnormalize(full.at[..., self.state_slice].set(state))[..., self.state_slice]

    def goal(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.normalizer.normalize(obs)[..., self.goal_slice]

    def condition(self, obs: jnp.ndarray) -> jnp.ndarray:
        """The diffusion prior's condition: ``s`` (LDCQ, LDCP) or ``[s, g]`` (LDGC)."""
        if self.goal_conditioned_prior:
            return jnp.concatenate([self.skill_state(obs), self.goal(obs)], axis=-1)
        return self.skill_state(obs)

    # -- stage state ---------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.train_config.batch_size

    def init_vae(self, rng):
        s = jnp.zeros((1, self.horizon, self.state_dim))
        return self.vae.init(rng, s, jnp.zeros((1, self.horizon, self.action_dim)), rng)

    def init_prior(self, rng):
        return self.denoiser.init(rng, jnp.zeros((1, self.config.model.latent_dim)), jnp.zeros((1,), jnp.int32),
                                  jnp.zeros((1, self.condition_dim)))

    def init_upstream(self, rng) -> dict:
        """Frozen parameters of the earlier stages: the loaded ones, or a template to restore a checkpoint into."""
        if self.upstream is not None:
            return self.upstream
        rng_vae, rng_prior = jax.random.split(rng)
        params = {"vae": self.init_vae(rng_vae)}
        if self.config.stage == "q":
            params["prior"] = self.init_prior(rng_prior)
        return params

    def init(self, rng):
        rng_params, rng_upstream = jax.random.split(rng)
        step = jnp.zeros((), jnp.int32)
        if self.config.stage == "vae":
            params = self.init_vae(rng_params)
            return VAEState(params=params, opt_state=self.optimizer.init(params), step=step)
        params = self.init_prior(rng_params)
        return PriorState(params=params, opt_state=self.optimizer.init(params), step=step,
                          vae_params=self.init_upstream(rng_upstream)["vae"])

    def policy_params(self, state) -> dict:
        if isinstance(state, VAEState):
            return {"vae": state.params}
        return {"vae": state.vae_params, "prior": state.params}

    # -- data ----------------------------------------------------------------------------------------------------
    def prepare(self, store: DatasetStore):
        if self.config.stage == "vae":
            return store
        return self.encode_dataset(store, self.upstream["vae"])

    def encode_dataset(self, store: DatasetStore, vae_params, batch: int = 4096) -> ChunkData:
        """Posterior means of every chunk of ``store`` (one compiled encoder call per ``batch`` chunks)."""
        starts = chunk_starts(store, self.horizon)
        if len(starts) == 0:
            raise ValueError(f"no chunk of {self.horizon} steps fits in an episode of {self.info.dataset_id}")

        @jax.jit
        def encode(rows):
            chunk = gather_chunks(store, rows, self.horizon, 1.0)
            mean, _ = self.vae.apply(vae_params, self.skill_state(chunk["states"]), chunk["actions"],
                                     method=SkillVAE.encode)
            return self.condition(chunk["observations"]), mean

        parts = batched_over_rows(encode, starts, batch, "encode chunks", self.progress)
        conditions, latents = (jnp.concatenate(p)[: len(starts)] for p in zip(*parts))
        return ChunkData(conditions=conditions, latents=latents)

    def sample_batch(self, train_data, rng, state=None) -> dict:
        if self.config.stage == "vae":
            chunks = sample_chunks(train_data, rng, self.batch_size, self.horizon, 1.0)
            return {"states": self.skill_state(chunks["states"]), "actions": chunks["actions"],
                    "final_state": self.skill_state(chunks["next_observations"])}
        rows = jax.random.randint(rng, (self.batch_size,), 0, train_data.latents.shape[0])
        return {"condition": train_data.conditions[rows], "latent": train_data.latents[rows]}

    # -- updates -------------------------------------------------------------------------------------------------
    def update(self, state, batch: dict, rng):
        if self.config.stage == "vae":
            loss_fn = functools.partial(self.vae_loss, batch=batch, rng=rng)
        else:
            loss_fn = functools.partial(self.prior_loss, batch=batch, rng=rng)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": self.learning_rate(state.step)}
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                             step=state.step + 1), metrics

    def vae_loss(self, params, batch, rng):
        out = self.vae.apply(params, batch["states"], batch["actions"], rng)
        return skill_vae_loss(out, batch["actions"], batch["final_state"], self.config.vae.beta,
                              self.config.model.state_decoder)

    def prior_loss(self, params, batch, rng):
        """x0-prediction with Min-SNR-gamma weights (Sec. 4.2); the condition dropped to zeros w.p. ``drop_prob``."""
        pc = self.config.prior
        rng_drop, rng_loss = jax.random.split(rng)
        cond = diffusion.drop_condition(rng_drop, batch["condition"], jnp.zeros((self.condition_dim,)), pc.drop_prob)
        loss, aux = diffusion.diffusion_loss(functools.partial(self.denoiser.apply, params), self.schedule, rng_loss,
                                             batch["latent"], cond, prediction=pc.prediction,
                                             min_snr_gamma=pc.min_snr_gamma)
        return loss, {"unweighted_loss": jnp.mean(aux["per_sample_loss"])}

    # -- sampling ------------------------------------------------------------------------------------------------
    def sample_latents(self, prior_params, rng, conditions, samples: int, *, steps=None, extra_steps=None,
                       guidance_weight=None) -> jnp.ndarray:
        """``samples`` latents from the diffusion prior for every condition: ``[len(conditions), samples, Z]``.

        DDPM with the step variance ``I(t > 1) beta_t`` of Algorithm 1, x0-prediction, ``extra_steps`` noise-free
        steps at ``t = 0`` (App. E) and classifier-free guidance with weight ``w`` (``w = 1``: none).
        """
        sc = self.config.sampler
        steps = sc.steps if steps is None else steps
        extra_steps = sc.extra_steps if extra_steps is None else extra_steps
        weight = sc.guidance_weight if guidance_weight is None else guidance_weight
        config = diffusion.SamplerConfig(method="ddpm", steps=steps, prediction=self.config.prior.prediction,
                                         variance="beta", extra_steps=extra_steps)
        cond = jnp.repeat(conditions, samples, axis=0)
        cfg = None if weight == 1.0 else diffusion.ClassifierFreeGuidance(jnp.zeros((self.condition_dim,)), weight)

        def model_fn(x, t, c):
            return self.denoiser.apply(prior_params, x, t[:1], c)  # every sample is at the same step t

        z = diffusion.sample(rng, model_fn, self.schedule, (cond.shape[0], self.config.model.latent_dim), config,
                             cond, cfg=cfg)
        return z.reshape(conditions.shape[0], samples, -1)

    def decode_action(self, vae_params, obs, latent, rng) -> jnp.ndarray:
        """``a ~ pi(a | s, z)`` drawn autoregressively, clipped to the action box."""
        action = self.vae.apply(vae_params, self.skill_state(obs), latent, rng, method=SkillVAE.decode_action)
        return jnp.clip(action, -1.0, 1.0)

    def predict_final_state(self, vae_params, obs_state, latent) -> jnp.ndarray:
        """Mean of the state decoder ``p(s_{t+H} | s_t, z)`` on normalised states."""
        mean, _ = self.vae.apply(vae_params, obs_state, latent, method=SkillVAE.predict_final_state)
        return mean

    # -- policies ------------------------------------------------------------------------------------------------
    def policy(self) -> Policy:
        if self.config.stage == "vae":
            return LatentSkillPolicy(self, self.choose_prior_mean)
        if self.config.method == "ldcp":
            if not self.config.model.state_decoder:
                raise ValueError("LDCP plans with the state decoder: train the VAE with model.state_decoder=True")
            return LatentSkillPolicy(self, self.choose_by_planning)
        return LatentSkillPolicy(self, self.choose_prior_sample)

    def choose_prior_mean(self, params, rng, obs):
        """The VAE's Gaussian prior mean (official ``prior_policy``)."""
        mean, _ = self.vae.apply(params["vae"], self.skill_state(obs), method=SkillVAE.prior_distribution)
        return mean

    def choose_prior_sample(self, params, rng, obs):
        """One diffusion-prior sample (official ``diffusion_prior_policy``; LDGC when the condition has the goal)."""
        return self.sample_latents(params["prior"], rng, self.condition(obs), 1)[:, 0]

    def choose_by_planning(self, params, rng, obs):
        """LDCP (App. B, Algorithm 2): ``n`` prior latents per state, the state decoder's ``s_{t+H}`` for each,
        recursively to depth ``d`` (``n^d`` leaves); the first-level latent of the leaf whose state is nearest the
        goal (Euclidean distance of the state's first ``goal_dim`` entries, the position) is executed."""
        pc = self.config.plan
        n, depth = pc.num_candidates, pc.depth
        envs = obs.shape[0]
        goal = obs[:, self.goal_slice]
        states = self.skill_state(obs)
        first = None
        for level in range(depth):
            keys = jax.random.fold_in(rng, level)
            latents = self.sample_latents(params["prior"], keys, states, n)  # [E * n^level, n, Z]
            states = jnp.repeat(states, n, axis=0)
            latents = latents.reshape(-1, latents.shape[-1])
            states = self.predict_final_state(params["vae"], states, latents)
            if first is None:
                first = latents.reshape(envs, n, -1)
        position = self.unnormalize_state(states)[:, : self.goal_dim]
        cost = jnp.linalg.norm(position.reshape(envs, n**depth, -1) - goal[:, None], axis=-1)
        best_leaf = jnp.argmin(cost, axis=1)
        return first[jnp.arange(envs), best_leaf // n ** (depth - 1)]


class LatentSkillPolicy(Policy):
    """Choose a latent per environment every ``plan.replan_every`` steps; act with the decoder in between."""

    def __init__(self, agent: LatentSkillAgent, choose: Callable):
        self.agent = agent
        self.choose = choose

    def init(self, params, rng, obs):
        return {"latent": self.choose(params, rng, obs)}

    def act(self, params, policy_state, obs, t, rng):
        rng_choose, rng_act = jax.random.split(rng)
        replan = (t > 0) & (t % self.agent.config.plan.replan_every == 0)
        latent = jax.lax.cond(replan, lambda: self.choose(params, rng_choose, obs), lambda: policy_state["latent"])
        return self.agent.decode_action(params["vae"], obs, latent, rng_act), {"latent": latent}


def _padded_batches(rows: np.ndarray, batch: int):
    """``rows`` in batches of ``batch`` (the last padded by repeating its final row), one compiled shape."""
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        yield np.concatenate([part, np.full(batch - len(part), part[-1], part.dtype)])


def batched_over_rows(fn: Callable, rows: np.ndarray, batch: int, desc: str, progress: bool) -> list:
    """``fn`` applied to ``rows`` batch by batch with a progress bar (results still padded)."""
    out = []
    for padded in tqdm(_padded_batches(rows, batch), total=-(-len(rows) // batch), desc=desc, unit="batch",
                       disable=not progress):
        out.append(fn(jnp.asarray(padded)))
    return out
