"""Soft Actor-Critic with automatic entropy tuning (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications", Alg. 1), as Stable-Baselines3 implements it: the expert trainer of the locomotion datasets, whose
public Minari counterparts were made with SB3's SAC.

SB3 / paper defaults (``stable_baselines3/sac/sac.py``, ``policies.py``): actor and twin critics of two 256-unit
ReLU layers, Adam at 3e-4 for all three, batch 256, discount 0.99, Polyak ``tau = 0.005`` every step, a buffer of
1M transitions, one gradient step per environment step, a tanh-squashed Gaussian policy with ``log std`` clipped
to ``[-20, 2]`` and ``log(1 - tanh(u)^2 + 1e-6)`` as the squashing correction, entropy temperature learned from 1.0
towards the target entropy ``-|A|``. The order of one update is SB3's: temperature loss (with the current
policy's ``log pi``), critic loss ``0.5 * sum_i (Q_i(s, a) - y)^2`` with ``y = r + gamma (1 - terminated)
(min_i Q'_i(s', a') - alpha log pi(a'|s'))``, actor loss ``alpha log pi(a|s) - min_i Q_i(s, a)`` against the
updated critics, then the target update; ``alpha`` is the temperature before its own step. Only terminations
stop the bootstrap (SB3's ``handle_timeout_termination``): a time-limit truncation keeps it.

Layers are initialised as PyTorch's ``nn.Linear`` (SB3's SAC keeps that default). Actions live in ``[-1, 1]`` inside
the agent (buffer, losses) and are mapped affinely onto the environment's box, as SB3 rescales them.

OGBench's SAC (``impls/agents/sac.py``, which trained its directional ant) differs in four settings, each a field
of :class:`SACConfig`: Adam at 1e-4, target entropy ``-|A| / 2`` (``target_entropy_multiplier``), ``log std >= -5``
and ``initialization="ogbench"`` (``impls/utils/networks.py``: Glorot-uniform kernels, zero biases, the actor's two
output layers scaled by ``actor_fc_scale = 0.01``). :data:`OGBENCH_SAC` holds them. Its temperature loss
``alpha (H - target)`` steps ``log alpha`` by a gradient ``alpha`` times SB3's; that factor is not taken over (Adam
divides most of it out).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl.agents.base import Policy
from diffrl.agents.train_state import EMA, TrainState, apply_loss
from diffrl.nets.init import dense

SQUASH_EPSILON = 1e-6  # SB3 TanhBijector
INITIALIZATIONS = ("pytorch", "ogbench")
OGBENCH_ACTOR_FC_SCALE = 0.01  # impls/agents/sac.py actor_fc_scale


@dataclasses.dataclass(frozen=True)
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    buffer_size: int = 1_000_000
    learning_starts: int = 10_000  # uniform random actions before; Minari's mujoco/train.py sets 10k (SB3: 100)
    initial_alpha: float = 1.0
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    target_entropy_scale: float = 1.0  # target entropy -scale |A|: SB3 1.0, OGBench target_entropy_multiplier 0.5
    initialization: str = "pytorch"  # "pytorch" (nn.Linear, SB3) or "ogbench" (Glorot, zero bias, actor outputs x 0.01)

    def __post_init__(self):
        if self.initialization not in INITIALIZATIONS:
            raise ValueError(f"SAC initialization must be one of {INITIALIZATIONS}, got {self.initialization!r}")
        for name in ("batch_size", "buffer_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SAC {name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"SAC tau must be in (0, 1] and discount in [0, 1], got {self.tau}, {self.discount}")


OGBENCH_SAC = SACConfig(learning_rate=1e-4, log_std_min=-5.0, target_entropy_scale=0.5, initialization="ogbench")


def _dense(width: int, name: str, x, initialization: str = "pytorch", scale: float = 1.0):
    """A linear layer initialised as PyTorch's default ``nn.Linear`` (SB3 keeps it for SAC: weights and biases
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) or as OGBench's ``default_init(scale)`` (kernel ``variance_scaling(scale,
    fan_avg, uniform)``, bias zero)."""
    if initialization == "ogbench":
        return nn.Dense(width, kernel_init=nn.initializers.variance_scaling(scale, "fan_avg", "uniform"), name=name)(x)
    return dense(width, x.shape[-1], name=name)(x)


def _mlp(hidden, x, initialization: str = "pytorch"):
    for k, width in enumerate(hidden):
        x = nn.relu(_dense(width, f"hidden_{k}", x, initialization))
    return x


class Actor(nn.Module):
    """``s -> (mean, log std)`` of the pre-squash Gaussian; ``log std`` clipped (SB3 ``LOG_STD_MIN/MAX``)."""

    action_size: int
    hidden: tuple[int, ...]
    log_std_min: float
    log_std_max: float
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, obs):
        h = _mlp(self.hidden, obs, self.initialization)
        scale = OGBENCH_ACTOR_FC_SCALE if self.initialization == "ogbench" else 1.0
        mean = _dense(self.action_size, "mean", h, self.initialization, scale)
        log_std = _dense(self.action_size, "log_std", h, self.initialization, scale)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class Critic(nn.Module):
    """``Q(s, a)``: ``[s, a]`` through the hidden ReLU layers and a linear output."""

    hidden: tuple[int, ...]
    initialization: str = "pytorch"

    @nn.compact
    def __call__(self, obs, action):
        h = _mlp(self.hidden, jnp.concatenate([obs, action], axis=-1), self.initialization)
        return _dense(1, "q", h, self.initialization)[..., 0]


TwinCritic = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                     axis_size=2)


def squashed_gaussian(mean, log_std, rng):
    """A draw ``a = tanh(u)``, ``u ~ N(mean, std^2)``, and ``log pi(a) = sum log N(u) - sum log(1 - a^2 + eps)``."""
    noise = jax.random.normal(rng, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * noise
    action = jnp.tanh(u)
    log_normal = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    return action, jnp.sum(log_normal - jnp.log(1.0 - action**2 + SQUASH_EPSILON), axis=-1)


@struct.dataclass
class ReplayBuffer:
    """Transitions in insertion order, a ring of ``capacity`` rows; ``done`` (terminated or truncated) marks
    episode ends, so a buffer that never wrapped can be written out as episodes."""

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminated: jax.Array
    done: jax.Array
    position: jax.Array
    size: jax.Array

    @classmethod
    def create(cls, capacity: int, observation_size: int, action_size: int) -> ReplayBuffer:
        zeros = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)
        return cls(zeros(observation_size), zeros(action_size), zeros(), zeros(observation_size),
                   jnp.zeros(capacity, bool), jnp.zeros(capacity, bool), jnp.zeros((), jnp.int32),
                   jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.rewards.shape[0]

    def add(self, obs, actions, rewards, next_obs, terminated, done) -> ReplayBuffer:
        """Append a batch of transitions (one per environment) at the write position."""
        rows = (self.position + jnp.arange(rewards.shape[0])) % self.capacity
        put = lambda table, values: table.at[rows].set(values.astype(table.dtype))
        return self.replace(observations=put(self.observations, obs), actions=put(self.actions, actions),
                            rewards=put(self.rewards, rewards), next_observations=put(self.next_observations, next_obs),
                            terminated=put(self.terminated, terminated), done=put(self.done, done),
                            position=(self.position + rewards.shape[0]) % self.capacity,
                            size=jnp.minimum(self.size + rewards.shape[0], self.capacity))

    def end_episodes(self, num_envs: int) -> ReplayBuffer:
        """Mark the last row of each of ``num_envs`` streams as an episode end (a truncation: the bootstrap is
        kept), where a run stopped and its environments restart."""
        rows = (self.position - 1 - jnp.arange(num_envs)) % self.capacity
        return self.replace(done=self.done.at[rows].set(self.done[rows] | (self.size > 0)))

    def sample(self, rng, batch_size: int) -> dict:
        rows = jax.random.randint(rng, (batch_size,), 0, jnp.maximum(self.size, 1))
        return {"observations": self.observations[rows], "actions": self.actions[rows], "rewards": self.rewards[rows],
                "next_observations": self.next_observations[rows], "terminated": self.terminated[rows]}


@struct.dataclass
class SACState:
    actor: TrainState
    critic: TrainState  # ema_params: the target critics
    log_alpha: TrainState
    buffer: ReplayBuffer
    rng: jax.Array


class SAC:
    """The networks, losses and the jitted update of SAC for one observation and action size."""

    def __init__(self, config: SACConfig, observation_size: int, action_size: int):
        self.config, self.observation_size, self.action_size = config, observation_size, action_size
        self.actor = Actor(action_size, tuple(config.hidden), config.log_std_min, config.log_std_max,
                           config.initialization)
        self.critic = TwinCritic(tuple(config.hidden), config.initialization)
        self.optimizer = optax.adam(config.learning_rate)
        self.target_entropy = -config.target_entropy_scale * action_size
        self.target_update = EMA(decay=1.0 - config.tau)

    def init(self, rng: jax.Array) -> SACState:
        rng, actor_rng, critic_rng = jax.random.split(rng, 3)
        obs, action = jnp.zeros((1, self.observation_size)), jnp.zeros((1, self.action_size))
        actor = TrainState.create(self.actor.init(actor_rng, obs)["params"], self.optimizer)
        critic = TrainState.create(self.critic.init(critic_rng, obs, action)["params"], self.optimizer, ema=True)
        log_alpha = TrainState.create(jnp.log(jnp.float32(self.config.initial_alpha)), self.optimizer)
        buffer = ReplayBuffer.create(self.config.buffer_size, self.observation_size, self.action_size)
        return SACState(actor, critic, log_alpha, buffer, rng)

    def sample_action(self, actor_params, obs, rng):
        mean, log_std = self.actor.apply({"params": actor_params}, obs)
        return squashed_gaussian(mean, log_std, rng)

    def deterministic_action(self, actor_params, obs):
        """``tanh(mean)``: the policy's mode, for evaluation (SB3 ``deterministic=True``)."""
        return jnp.tanh(self.actor.apply({"params": actor_params}, obs)[0])

    def alpha_loss(self, log_alpha, log_prob):
        """``-log alpha * (log pi + target entropy)``, the policy's log-probabilities held fixed."""
        loss = -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + self.target_entropy))
        return loss, {"value": jnp.exp(log_alpha), "entropy": -jnp.mean(log_prob)}

    def critic_loss(self, critic_params, target_params, actor_params, alpha, batch, rng):
        """``0.5 * sum_i mean (Q_i(s, a) - y)^2``, ``y = r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha
        log pi(a'|s'))`` with ``a' ~ pi(s')``."""
        next_action, next_log_prob = self.sample_action(actor_params, batch["next_observations"], rng)
        next_q = jnp.min(self.critic.apply({"params": target_params}, batch["next_observations"], next_action), axis=0)
        bootstrap = 1.0 - batch["terminated"].astype(jnp.float32)
        target = batch["rewards"] + self.config.discount * bootstrap * (next_q - alpha * next_log_prob)
        q = self.critic.apply({"params": critic_params}, batch["observations"], batch["actions"])
        loss = 0.5 * jnp.sum(jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=-1))
        return loss, {"q": jnp.mean(q), "target": jnp.mean(target)}

    def actor_loss(self, actor_params, critic_params, alpha, obs, rng):
        """``mean(alpha log pi(a|s) - min_i Q_i(s, a))`` with ``a ~ pi(s)`` reparameterised."""
        action, log_prob = self.sample_action(actor_params, obs, rng)
        q = jnp.min(self.critic.apply({"params": critic_params}, obs, action), axis=0)
        return jnp.mean(alpha * log_prob - q), {"log_prob": jnp.mean(log_prob)}

    def update(self, state: SACState) -> tuple[SACState, dict]:
        """One SAC gradient step on a uniform batch from the buffer (SB3's order: temperature, critics, actor,
        targets)."""
        rng, batch_rng, policy_rng, next_rng = jax.random.split(state.rng, 4)
        batch = state.buffer.sample(batch_rng, self.config.batch_size)
        alpha = jnp.exp(state.log_alpha.params)
        _, log_prob = self.sample_action(state.actor.params, batch["observations"], policy_rng)
        log_alpha, alpha_metrics = apply_loss(state.log_alpha, self.optimizer, self.alpha_loss, log_prob,
                                              prefix="alpha")
        critic, critic_metrics = apply_loss(state.critic, self.optimizer, self.critic_loss, state.critic.ema_params,
                                            state.actor.params, alpha, batch, next_rng, prefix="critic")
        actor, actor_metrics = apply_loss(state.actor, self.optimizer, self.actor_loss, critic.params, alpha,
                                          batch["observations"], policy_rng, prefix="actor")
        critic = critic.replace(ema_params=self.target_update(critic.step, critic.params, critic.ema_params))
        new = state.replace(actor=actor, critic=critic, log_alpha=log_alpha, rng=rng)
        return new, {**alpha_metrics, **critic_metrics, **actor_metrics}


def to_env_action(action, low, high):
    """``[-1, 1] -> [low, high]`` (SB3 ``unscale_action``)."""
    return low + 0.5 * (action + 1.0) * (high - low)


class SACPolicy(Policy):
    """The actor as a batched policy over environment actions, for the MJX rollout and the gymnasium evaluator:
    the mode ``tanh(mean)`` (``deterministic``, SB3's evaluation) or a draw (``deterministic=False``, how
    Minari's datasets were collected: ``model.predict(obs)`` samples)."""

    def __init__(self, sac: SAC, low, high, deterministic: bool = True):
        self.sac, self.low, self.high, self.deterministic = sac, jnp.asarray(low), jnp.asarray(high), deterministic

    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        obs = obs.astype(jnp.float32)
        if self.deterministic:
            action = self.sac.deterministic_action(params, obs)
        else:
            action = self.sac.sample_action(params, obs, rng)[0]
        return to_env_action(action, self.low, self.high), policy_state
