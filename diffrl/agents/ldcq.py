"""LDCQ: latent diffusion-constrained Q-learning (Venkatraman et al. 2024, Sec. 4.2, Algorithm 1, App. A.2.3).

The third stage after the skill VAE and the latent diffusion prior (:mod:`diffrl.agents.latent_skills`). Over
every ``H``-step chunk ``(s_t, z, r_{t:t+H}, s_{t+H})`` of the dataset (``z`` the frozen encoder's posterior
mean, ``r_{t:t+H} = sum_k gamma^k r_{t+k}``) two Q-networks ``Q(s, z)`` learn by clipped double Q-learning
towards

    y = r_{t:t+H} + gamma^H (1 - done) max_{z_i ~ p(z | s_{t+H}), i <= n} min_j Q_target_j(s_{t+H}, z_i),

their targets updated ``theta_target <- rho theta_target + (1 - rho) theta`` every step, minibatches drawn by
proportional prioritized replay (importance-weighted loss, priorities ``|delta|`` averaged over the two nets).

The candidates ``z_i`` come, by default, from a pool of ``pool_size`` prior samples for every ``s_{t+H}`` made
once before Q-learning (official ``collect_offline_q_learning_dataset.py``: 1000 samples, 100 DDPM steps,
5 extra steps) and stored in float16; every step reads ``n`` of them (the same random subset for the batch, as
the official ``get_max_skills``). ``q.candidates = "fresh"`` samples them inside the train step instead.
At evaluation ``n`` latents are sampled at the current state and the argmax of ``min_j Q_j`` is executed.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from diffrl.agents.base import Policy
from diffrl.agents.latent_skills import ChunkData, LatentSkillAgent, LatentSkillPolicy, batched_over_rows
from diffrl.data import replay
from diffrl.data.store import DatasetStore, chunk_starts, count_chunks, gather_chunks
from diffrl.nets.critics import LatentQNetwork

CANDIDATE_SOURCES = ("pool", "fresh")


@struct.dataclass
class QState:
    params: Any  # the two Q-networks, stacked on a leading axis of 2
    target_params: Any
    opt_state: Any
    replay: replay.PrioritizedReplayState
    step: jnp.ndarray
    vae_params: Any  # frozen
    prior_params: Any  # frozen


@struct.dataclass
class QData:
    states: jnp.ndarray  # [M, Q_in] Q input at s_t
    latents: jnp.ndarray  # [M, Z]
    rewards: jnp.ndarray  # [M] discounted reward of the chunk
    next_states: jnp.ndarray  # [M, Q_in] Q input at s_{t+H}
    next_conditions: jnp.ndarray  # [M, C] prior condition at s_{t+H}
    dones: jnp.ndarray  # [M]
    pool: jnp.ndarray | None  # [M, P, Z] float16 prior samples at s_{t+H}; None with fresh candidates


class LDCQAgent(LatentSkillAgent):
    """The skill stages of :class:`LatentSkillAgent` plus stage ``q``."""

    def __init__(self, config, info, normalizer, upstream=None):
        super().__init__(config, info, normalizer, upstream)
        qc = config.q
        if qc.candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"q.candidates must be one of {CANDIDATE_SOURCES}, got {qc.candidates!r}")
        if qc.candidates == "pool" and qc.num_candidates > qc.pool_size:
            raise ValueError(f"q.num_candidates ({qc.num_candidates}) exceeds q.pool_size ({qc.pool_size})")
        self.q_net = LatentQNetwork(hidden=config.model.q_hidden)
        self._num_chunks = None
        self.q_input_dim = self.state_dim + self.goal_dim
        if config.stage == "q":
            # Per-network gradient clipping and Adam, as the official code keeps one optimizer per Q-network.
            self.optimizer = optax.chain(optax.clip_by_global_norm(qc.grad_clip), optax.adam(self.learning_rate))

    def q_input(self, obs: jnp.ndarray) -> jnp.ndarray:
        """``Q``'s state: the skill state, and the goal where the observation has one (goal-reaching tasks)."""
        if self.goal_slice is None:
            return self.skill_state(obs)
        return jnp.concatenate([self.skill_state(obs), self.goal(obs)], axis=-1)

    def q_values(self, q_params, states, latents) -> jnp.ndarray:
        """``[2, ...]``: both Q-networks on ``states [..., Q_in]`` and ``latents [..., Z]``."""
        return jax.vmap(lambda p: self.q_net.apply(p, states, latents))(q_params)

    # -- state ---------------------------------------------------------------------------------------------------
    def init_q(self, rng):
        """Parameters of the two Q-networks, stacked on a leading axis of 2."""
        init_one = lambda key: self.q_net.init(key, jnp.zeros((1, self.q_input_dim)),  # noqa: E731
                                               jnp.zeros((1, self.config.model.latent_dim)))
        return jax.vmap(init_one)(jax.random.split(rng, 2))

    def init(self, rng):
        if self.config.stage != "q":
            return super().init(rng)
        rng_q, rng_upstream = jax.random.split(rng)
        params = self.init_q(rng_q)
        upstream = self.init_upstream(rng_upstream)
        return QState(params=params, target_params=jax.tree.map(jnp.copy, params),
                      opt_state=jax.vmap(self.optimizer.init)(params),
                      replay=replay.init_prioritized_replay(self.num_chunks), step=jnp.zeros((), jnp.int32),
                      vae_params=upstream["vae"], prior_params=upstream["prior"])

    @property
    def num_chunks(self) -> int:
        if self._num_chunks is None:
            raise ValueError("the Q stage learns over the chunks of a dataset: build it with from_data")
        return self._num_chunks

    def policy_params(self, state) -> dict:
        if isinstance(state, QState):
            return {"vae": state.vae_params, "prior": state.prior_params, "q": state.params}
        return super().policy_params(state)

    def artifacts(self) -> dict:
        out = super().artifacts()
        if self.config.stage == "q":
            out["num_chunks"] = self.num_chunks
        return out

    @classmethod
    def from_artifacts(cls, config, artifacts: dict) -> "LDCQAgent":
        agent = super().from_artifacts(config, artifacts)
        agent._num_chunks = artifacts.get("num_chunks")
        return agent

    @classmethod
    def from_data(cls, config, data, upstream: dict | None = None) -> "LDCQAgent":
        agent = super().from_data(config, data, upstream)
        agent._num_chunks = count_chunks(data.episode_lengths, config.task.horizon)
        return agent

    # -- data ----------------------------------------------------------------------------------------------------
    def prepare(self, store: DatasetStore):
        if self.config.stage != "q":
            return super().prepare(store)
        qc = self.config.q
        chunks: ChunkData = self.encode_dataset(store, self.upstream["vae"])
        starts = chunk_starts(store, self.horizon)
        if len(starts) != self.num_chunks:
            raise ValueError(f"this agent was built for {self.num_chunks} chunks but the dataset has {len(starts)}")

        @jax.jit
        def transitions(rows):
            c = gather_chunks(store, rows, self.horizon, qc.discount)
            done = c["dones"]
            if self.config.task.done_on_reward:
                done = jnp.maximum(done, (jnp.sum(c["rewards"], -1) > 0).astype(jnp.float32))
            return (self.q_input(c["observations"]), c["discounted_rewards"], self.q_input(c["next_observations"]),
                    self.condition(c["next_observations"]), done)

        parts = batched_over_rows(transitions, starts, 4096, "chunk transitions", self.progress)
        states, rewards, next_states, next_conditions, dones = (jnp.concatenate(p)[: len(starts)] for p in zip(*parts))
        pool = None
        if qc.candidates == "pool":
            pool = self.build_pool(self.upstream["prior"], next_conditions)
        return QData(states=states, latents=chunks.latents, rewards=rewards, next_states=next_states,
                     next_conditions=next_conditions, dones=dones, pool=pool)

    def build_pool(self, prior_params, conditions: jnp.ndarray, seed: int | None = None) -> jnp.ndarray:
        """``[M, pool_size, Z]`` float16 prior samples, ``q.pool_batch`` conditions per compiled sampler call."""
        qc = self.config.q
        rng = jax.random.PRNGKey(self.config.seed + 2 if seed is None else seed)

        @jax.jit
        def sample(rows):
            key = jax.random.fold_in(rng, rows[0])
            z = self.sample_latents(prior_params, key, conditions[rows], qc.pool_size, steps=qc.pool_steps,
                                    extra_steps=qc.pool_extra_steps, guidance_weight=qc.guidance_weight)
            return z.astype(jnp.dtype(qc.pool_dtype))

        started = time.perf_counter()
        rows = np.arange(conditions.shape[0], dtype=np.int32)
        parts = batched_over_rows(sample, rows, qc.pool_batch, "prior-sample pool", self.progress)
        pool = jnp.concatenate(parts)[: len(rows)]
        pool.block_until_ready()
        self.pool_seconds = time.perf_counter() - started
        if self.progress:
            print(f"prior-sample pool: {pool.shape[0]} states x {pool.shape[1]} samples x {pool.shape[2]} dims, "
                  f"{pool.nbytes / 2**20:.1f} MiB {pool.dtype}, built in {self.pool_seconds:.1f} s")
        return pool

    def sample_batch(self, train_data, rng, state=None) -> dict:
        if self.config.stage != "q":
            return super().sample_batch(train_data, rng, state)
        qc = self.config.q
        rng_rows, rng_subset = jax.random.split(rng)
        beta = jnp.minimum(qc.per_beta_end, qc.per_beta_start
                           + qc.per_beta_increment * (state.step // qc.per_beta_every).astype(jnp.float32))
        rows, weights = replay.sample(state.replay, rng_rows, self.batch_size, beta, qc.per_alpha)
        batch = {"rows": rows, "weights": weights, "state": train_data.states[rows],
                 "latent": train_data.latents[rows], "reward": train_data.rewards[rows],
                 "next_state": train_data.next_states[rows], "done": train_data.dones[rows]}
        if train_data.pool is None:
            batch["next_condition"] = train_data.next_conditions[rows]
        else:
            subset = jax.random.choice(rng_subset, qc.pool_size, (qc.num_candidates,), replace=False)
            batch["candidates"] = train_data.pool[rows[:, None], subset[None, :]].astype(jnp.float32)
        return batch

    # -- update --------------------------------------------------------------------------------------------------
    def target_values(self, state: QState, batch: dict, rng) -> jnp.ndarray:
        """``y`` of Algorithm 1 line 10."""
        qc = self.config.q
        candidates = batch.get("candidates")
        if candidates is None:
            candidates = self.sample_latents(state.prior_params, rng, batch["next_condition"], qc.num_candidates,
                                             steps=qc.pool_steps, extra_steps=qc.pool_extra_steps,
                                             guidance_weight=qc.guidance_weight)
        next_state = batch["next_state"]
        next_states = jnp.broadcast_to(next_state[:, None], candidates.shape[:2] + next_state.shape[1:])
        next_q = jnp.max(jnp.min(self.q_values(state.target_params, next_states, candidates), axis=0), axis=-1)
        return batch["reward"] + qc.discount**self.horizon * (1.0 - batch["done"]) * next_q

    def update(self, state, batch: dict, rng):
        if self.config.stage != "q":
            return super().update(state, batch, rng)
        qc = self.config.q
        target = jax.lax.stop_gradient(self.target_values(state, batch, rng))

        def loss_fn(params):
            q = self.q_values(params, batch["state"], batch["latent"])  # [2, B]
            td = q - target
            per_net = jnp.mean(batch["weights"] * jnp.square(td), axis=-1)
            return jnp.sum(per_net), (td, q)

        (loss, (td, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = jax.vmap(self.optimizer.update)(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        target_params = jax.tree.map(lambda t, p: qc.target_rate * t + (1.0 - qc.target_rate) * p,
                                     state.target_params, params)
        priorities = replay.update(state.replay, batch["rows"], jnp.mean(jnp.abs(td), axis=0))
        metrics = {"loss": loss, "q_mean": jnp.mean(q), "target_mean": jnp.mean(target),
                   "td_abs": jnp.mean(jnp.abs(td)), "grad_norm": optax.tree.norm(grads),
                   "learning_rate": self.learning_rate(state.step)}
        return state.replace(params=params, target_params=target_params, opt_state=opt_state, replay=priorities,
                             step=state.step + 1), metrics

    # -- policy --------------------------------------------------------------------------------------------------
    def policy(self) -> Policy:
        if self.config.stage != "q":
            return super().policy()
        return LatentSkillPolicy(self, self.choose_by_q)

    def choose_by_q(self, params, rng, obs):
        """Execution (Sec. 4.2): ``n`` prior latents at ``s``, the argmax of ``min_j Q_j(s, z)``."""
        n = self.config.plan.num_candidates
        candidates = self.sample_latents(params["prior"], rng, self.condition(obs), n)  # [E, n, Z]
        states = jnp.broadcast_to(self.q_input(obs)[:, None], (obs.shape[0], n, self.q_input_dim))
        scores = jnp.min(self.q_values(params["q"], states, candidates), axis=0)
        return candidates[jnp.arange(obs.shape[0]), jnp.argmax(scores, axis=-1)]
