"""Diffusion-QL (Wang et al. 2023, "Diffusion Policies as an Expressive Policy Class for Offline RL").

One stage, ``ql``, trains together (Algorithm 1; official ``agents/ql_diffusion.py``):

* the policy ``pi_theta(a | s)``, a conditional diffusion model over actions (Sec. 3.1, Eq. 1): a VP schedule of
  ``T = 5`` steps, eps-prediction, ``x0`` clipped to the action box while sampling and the sample clamped to it;
* two critics by clipped double Q-learning (Eq. 4) towards
  ``y = r + gamma (1 - done) min_j Q'_j(s', a')`` with ``a' ~ pi_EMA(. | s')``; with ``q.max_q_backup`` each target
  critic takes its maximum over ``q.backup_samples`` (10) actions before the minimum (official ``max_q_backup``);
* the policy by ``L = L_d(theta) - eta * Q_k(s, a_0) / mean |Q_l(s, a_0)|`` (Eq. 3 with the official normalisation:
  ``(k, l)`` is ``(1, 2)`` or ``(2, 1)`` with probability 1/2, the denominator a constant), where ``L_d`` is the
  denoising loss (Eq. 2) and ``a_0`` is drawn from the policy through the whole reverse chain (reparameterised),
  scored by the critics just updated;
* the EMA policy (decay 0.995 every 5 steps from step 1000, before which it keeps its initial weights) and the
  Polyak targets of the critics (``tau = 0.005``).

``q.lcb_coef = k`` replaces clipped double Q by an ensemble of ``q.num_critics`` critics scored by the lower
confidence bound ``mean_j Q_j - k std_j Q_j`` (PlanDQ's official AntMaze performer: 64 critics, ``k = 4``): each
critic then learns towards its own target ``r + gamma (1 - done) Q'_j(s', a')``, the policy loss is
``L_d - eta LCB(s, a_0) / mean_j |Q_j|`` and acting scores the candidates by the LCB of the target critics.

Acting (official ``sample_action``): ``plan.num_candidates`` (50) actions are sampled at ``s`` and one is drawn with
probability ``softmax(min_j Q'_j(s, a))``. Networks read raw states (``task.normalizer = "none"``, as the official
code) and actions mapped onto ``[-1, 1]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from diffrl import diffusion
from diffrl.agents.base import Method, Policy, Stage
from diffrl.agents.train_state import EMA, TrainState, apply_loss
from diffrl.data.store import DatasetStore
from diffrl.nets.critics import ActionQNetwork
from diffrl.nets.denoisers import ActionDenoiser


@struct.dataclass
class Transitions:
    """Every transition of the dataset as the networks read it."""

    inputs: jnp.ndarray  # [T, I] policy and critic input at s
    actions: jnp.ndarray  # [T, A] on [-1, 1]
    rewards: jnp.ndarray  # [T] after q.reward_shift and q.reward_scale
    next_inputs: jnp.ndarray  # [T, I] at s'
    not_done: jnp.ndarray  # [T] 1 - termination


def clipped_optimizer(learning_rate: float, grad_norm: float) -> optax.GradientTransformation:
    """Adam, after clipping the gradient's global norm to ``grad_norm`` when it is positive (official ``gn``)."""
    adam = optax.adam(learning_rate)
    return optax.chain(optax.clip_by_global_norm(grad_norm), adam) if grad_norm > 0 else adam


class ActorCriticStage(Stage):
    """The policy and the critics, updated in one step (critics first, then the policy against them). The networks
    and the ``q`` settings are the method's :meth:`DiffusionQL.actor_critic` for this stage."""

    name = "ql"

    def __init__(self, method: "DiffusionQL", upstream=None):
        super().__init__(method, upstream)
        self.learner, self.q = method.actor_critic(self.name)
        tc = self.train_config
        self.actor_optimizer = clipped_optimizer(tc.learning_rate, self.q.grad_norm)
        self.critic_optimizer = clipped_optimizer(self.q.critic_learning_rate, self.q.grad_norm)
        self.actor_ema = EMA(tc.ema_decay, tc.ema_every, tc.ema_start, hold_before_start=True)
        self.target = EMA(1.0 - self.q.tau)

    def init(self, rng):
        rng_actor, rng_critic = jax.random.split(rng)
        learner = self.learner
        return {"actor": TrainState.create(learner.init_actor(rng_actor), self.actor_optimizer, ema=True),
                "critic": TrainState.create(learner.init_critics(rng_critic), self.critic_optimizer, ema=True)}

    def export(self, state):
        # The official agent acts with the trained policy (not its EMA) and the target critics.
        return {"actor": state["actor"].params, "critic": state["critic"].ema_params}

    def prepare(self, store: DatasetStore) -> Transitions:
        m, qc = self.method, self.q
        return Transitions(inputs=m.inputs(store.observations), actions=m.info.to_unit_action(store.actions),
                           rewards=qc.reward_scale * (store.rewards + qc.reward_shift),
                           next_inputs=m.inputs(store.next_observations),
                           not_done=1.0 - store.terminations.astype(jnp.float32))

    def sample_batch(self, data: Transitions, rng, state):
        rows = jax.random.randint(rng, (self.batch_size,), 0, data.rewards.shape[0])
        return {"input": data.inputs[rows], "action": data.actions[rows], "reward": data.rewards[rows],
                "next_input": data.next_inputs[rows], "not_done": data.not_done[rows]}

    def target_values(self, state, batch: dict, rng) -> jnp.ndarray:
        """``y`` of Eq. 4 from the EMA policy and the target critics (max over sampled actions with max-Q backup)."""
        learner, qc = self.learner, self.q
        samples = qc.backup_samples if qc.max_q_backup else 1
        next_inputs = jnp.repeat(batch["next_input"], samples, axis=0)
        next_actions = learner.sample_actions(state["actor"].ema_params, rng, next_inputs)
        q = learner.q_values(state["critic"].ema_params, next_inputs, next_actions)
        next_q = jnp.max(q.reshape(q.shape[0], -1, samples), axis=-1)  # [E, B]
        if qc.lcb_coef is None:
            next_q = jnp.min(next_q, axis=0)  # clipped double Q: one target for both critics
        return batch["reward"] + qc.discount * batch["not_done"] * next_q

    def critic_loss(self, params, batch: dict, target: jnp.ndarray):
        q = self.learner.q_values(params, batch["input"], batch["action"])
        squared = jnp.mean(jnp.square(q - target), axis=-1)  # per critic
        # official: the twin critics' two mean squared errors summed; the ensemble's averaged
        loss = jnp.sum(squared) if self.q.lcb_coef is None else jnp.mean(squared)
        return loss, {"q_mean": jnp.mean(q), "target_mean": jnp.mean(target)}

    def actor_loss(self, params, critic_params, batch: dict, rng):
        """``L_d + eta * L_q`` (Eq. 3, official normalisation); returns the loss and both terms."""
        learner = self.learner
        rng_bc, rng_sample, rng_pick = jax.random.split(rng, 3)
        bc_loss, _ = diffusion.diffusion_loss(functools.partial(learner.actor.apply, params), learner.schedule, rng_bc,
                                              batch["action"], batch["input"], prediction="eps")
        q = learner.q_values(critic_params, batch["input"], learner.sample_actions(params, rng_sample, batch["input"]))
        if self.q.lcb_coef is None:
            first = jax.random.bernoulli(rng_pick)
            numerator, denominator = jnp.where(first, q[0], q[1]), jnp.where(first, q[1], q[0])
        else:
            numerator, denominator = learner.q_score(q), q
        q_loss = -jnp.mean(numerator) / jax.lax.stop_gradient(jnp.mean(jnp.abs(denominator)))
        return bc_loss + self.q.eta * q_loss, {"bc_loss": bc_loss, "q_loss": q_loss}

    def update(self, state, batch, rng):
        rng_target, rng_actor = jax.random.split(rng)
        target = jax.lax.stop_gradient(self.target_values(state, batch, rng_target))
        critic, critic_metrics = apply_loss(state["critic"], self.critic_optimizer, self.critic_loss, batch, target,
                                            prefix="critic", ema=self.target)
        actor, actor_metrics = apply_loss(state["actor"], self.actor_optimizer, self.actor_loss, critic.params, batch,
                                          rng_actor, prefix="actor", ema=self.actor_ema)
        return {"actor": actor, "critic": critic}, {**critic_metrics, **actor_metrics}


class DiffusionActorCritic:
    """Diffusion-QL's networks for one kind of (input, action on ``[-1, 1]``): the diffusion policy and its sampler,
    the critics and their score. Diffusion-QL has one; PlanDQ's family has one per level that learns by Q."""

    def __init__(self, model, diffusion_config, q, input_dim: int, action_dim: int, num_candidates: int):
        if q.lcb_coef is None and q.num_critics != 2:
            raise ValueError(f"clipped double Q takes 2 critics, got num_critics={q.num_critics}; set lcb_coef to "
                             "score a larger ensemble by its lower confidence bound")
        self.input_dim, self.action_dim, self.num_candidates = input_dim, action_dim, num_candidates
        self.num_critics, self.lcb_coef = q.num_critics, q.lcb_coef
        self.actor = ActionDenoiser(hidden=model.hidden, depth=model.depth, time_dim=model.time_dim)
        self.critic = ActionQNetwork(hidden=model.critic_hidden, depth=model.critic_depth)
        dc = diffusion_config
        self.schedule = diffusion.make_schedule("vp", dc.num_steps, beta_min=dc.beta_min, beta_max=dc.beta_max)
        self.sampler = diffusion.SamplerConfig(method="ddpm", prediction="eps", variance="posterior", clip_x0=1.0)

    def init_actor(self, rng):
        return self.actor.init(rng, jnp.zeros((1, self.action_dim)), jnp.zeros((1,), jnp.int32),
                               jnp.zeros((1, self.input_dim)))

    def init_critics(self, rng):
        """The critics' parameters, stacked on a leading axis."""
        def init_one(key):
            return self.critic.init(key, jnp.zeros((1, self.input_dim)), jnp.zeros((1, self.action_dim)))

        return jax.vmap(init_one)(jax.random.split(rng, self.num_critics))

    def q_values(self, critic_params, inputs, actions) -> jnp.ndarray:
        """``[E, ...]``: every critic."""
        return jax.vmap(lambda p: self.critic.apply(p, inputs, actions))(critic_params)

    def q_score(self, q: jnp.ndarray) -> jnp.ndarray:
        """One value from the critics' ``[E, ...]``: their minimum, or their lower confidence bound (``lcb_coef``)."""
        k = self.lcb_coef
        return jnp.min(q, axis=0) if k is None else jnp.mean(q, axis=0) - k * jnp.std(q, axis=0, ddof=1)

    def sample_actions(self, actor_params, rng, inputs: jnp.ndarray) -> jnp.ndarray:
        """One action on ``[-1, 1]`` per input row ``[B, I] -> [B, A]``, differentiable in ``actor_params``."""
        model_fn = lambda x, t, cond: self.actor.apply(actor_params, x, t, cond)  # noqa: E731
        actions = diffusion.sample(rng, model_fn, self.schedule, (inputs.shape[0], self.action_dim), self.sampler,
                                   inputs)
        return jnp.clip(actions, -1.0, 1.0)

    def choose(self, params: dict, rng, inputs: jnp.ndarray) -> jnp.ndarray:
        """``num_candidates`` actions per input, one drawn with probability ``softmax`` of the target critics'
        score (:meth:`q_score`); on ``[-1, 1]``."""
        n = self.num_candidates
        rng_sample, rng_pick = jax.random.split(rng)
        repeated = jnp.repeat(inputs, n, axis=0)
        actions = self.sample_actions(params["actor"], rng_sample, repeated)
        q = self.q_score(self.q_values(params["critic"], repeated, actions)).reshape(-1, n)
        pick = jax.random.categorical(rng_pick, q, axis=-1)
        return actions.reshape(-1, n, self.action_dim)[jnp.arange(inputs.shape[0]), pick]


class DiffusionQL(Method):
    name = "dql"
    stages = (ActorCriticStage,)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        # task.state_key: one observation key or several, concatenated (AntMaze: D4RL's [x, y, observation])
        self.state_columns = info.columns(config.task.state_key)
        self.goal_slice = info.slice(config.task.goal_key) if config.task.goal_key else None
        self.action_dim = info.action_size
        self.state_dim = len(self.state_columns)
        goal_dim = 0 if self.goal_slice is None else self.goal_slice.stop - self.goal_slice.start
        self.learner = self.make_learner(self.state_dim + goal_dim)

    def make_learner(self, input_dim: int) -> DiffusionActorCritic:
        """The policy and critics over ``input_dim`` inputs and the dataset's actions."""
        c = self.config
        return DiffusionActorCritic(c.model, c.diffusion, c.q, input_dim, self.action_dim, c.plan.num_candidates)

    def actor_critic(self, stage: str) -> tuple[DiffusionActorCritic, ml_collections.ConfigDict]:
        """The networks and the ``q`` settings the actor-critic stage ``stage`` trains."""
        return self.learner, self.config.q

    # -- inputs and actions --------------------------------------------------------------------------------------
    def inputs(self, obs: jnp.ndarray) -> jnp.ndarray:
        """The networks' state: ``task.state_key``'s part of the observation, and the goal where ``task.goal_key``
        names one."""
        obs = self.normalizer.normalize(obs)
        if self.goal_slice is None:
            return obs[..., self.state_columns]
        return jnp.concatenate([obs[..., self.state_columns], obs[..., self.goal_slice]], axis=-1)

    def policy(self) -> Policy:
        return DiffusionQLPolicy(self)


class DiffusionQLPolicy(Policy):
    def __init__(self, method: DiffusionQL):
        self.method = method

    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        m = self.method
        return m.info.from_unit_action(m.learner.choose(params["ql"], rng, m.inputs(obs))), policy_state
