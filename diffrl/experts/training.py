"""Training a SAC expert: gymnasium vector environments stepped on the host (CPU MuJoCo, where MJX on a CPU is
slower than MuJoCo C) or an MJX environment with the whole loop on the device (GPUs, TPUs).

Both run the same jitted update (:class:`diffrl.experts.sac.SAC`), one gradient step per vector-env step after
``learning_starts`` uniform random steps (SB3's ``train_freq = 1``, ``gradient_steps = 1``), evaluate the mode of
the policy every ``eval_every`` steps (SB3's ``EvalCallback``: ``deterministic=True``), can stop once that return
reaches ``stop_at_return`` (how the medium policies are made), write TensorBoard curves (``episode/return`` of
the training episodes, ``eval/return``, the losses) and orbax checkpoints (the whole state: networks, optimisers,
replay buffer, rng) every ``checkpoint_every`` steps and at the end. A run resumes from its latest checkpoint; on
the host backend the episodes in progress restart (gymnasium environments cannot be checkpointed), on MJX the
environment state is part of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from diffrl.envs.base import Env
from diffrl.envs.gym_fallback import evaluate_gym, make_gym_env
from diffrl.envs.registry import has_mjx_port, make_env
from diffrl.eval.rollout import make_rollout
from diffrl.experts.sac import SAC, SACConfig, SACPolicy, SACState, to_env_action
from diffrl.train.checkpoint import Checkpointer
from diffrl.train.logging import SummaryWriter

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "gym", "mjx")
LOG_EVERY = 1000  # steps between loss summaries


def choose_backend(env, backend: str = "auto") -> str:
    """``"mjx"`` on an accelerator for an env with an MJX port or for an :class:`Env` instance, else ``"gym"``
    (``backend="auto"``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(env, Env):
        if backend == "gym":
            raise ValueError(f"the gym backend needs a gymnasium id, not the JAX env {env.name}")
        return "mjx"
    if backend != "auto":
        return backend
    return "gym" if jax.default_backend() == "cpu" or not has_mjx_port(env) else "mjx"


@dataclasses.dataclass
class SACRun:
    """What a finished (or stopped) run returns: its last state, the agent, and its evaluation history."""

    sac: SAC
    state: SACState
    low: np.ndarray
    high: np.ndarray
    steps: int
    evaluations: list  # [(step, mean deterministic return)]
    stopped_at_return: bool
    seconds: float

    def policy(self, deterministic: bool = True) -> SACPolicy:
        return SACPolicy(self.sac, self.low, self.high, deterministic)


def train_sac(env: str | Env, workdir, *, steps: int, config: SACConfig | None = None, seed: int = 0,
              backend: str = "auto", num_envs: int = 1, eval_every: int = 10_000, eval_episodes: int = 10,
              stop_at_return: float | None = None, checkpoint_every: int = 50_000, progress: bool = True) -> SACRun:
    """Train SAC on ``env`` (a gymnasium id, or a JAX :class:`Env` for the device loop) for ``steps`` environment
    steps (all envs together) in ``workdir``, resuming from its latest checkpoint."""
    config = config or SACConfig()
    backend = choose_backend(env, backend)
    env_id = env if isinstance(env, str) else env.name
    for name, value in (("steps", steps), ("num_envs", num_envs), ("eval_every", eval_every),
                        ("eval_episodes", eval_episodes), ("checkpoint_every", checkpoint_every)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if backend == "mjx":
        env = make_env(env) if isinstance(env, str) else env
        if getattr(env, "impl", "jax") != "jax":  # its auto-reset selects whole states with jnp.where
            raise ValueError(f"train_sac steps MJX's JAX implementation only, not {env.impl!r}")
        observation_size, low, high = env.observation_size, np.asarray(env.action_low), np.asarray(env.action_high)
    else:
        probe = make_gym_env(env_id)
        space, observations = probe.action_space, probe.observation_space
        probe.close()
        if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
            raise ValueError(f"SAC needs a bounded Box action space; {env_id} has {space}")
        if not isinstance(observations, gym.spaces.Box) or len(observations.shape) != 1:
            raise ValueError(f"SAC on gymnasium envs needs flat Box observations; {env_id} has {observations}")
        observation_size = observations.shape[0]
        low, high = space.low, space.high
    low, high = low.astype(np.float32), high.astype(np.float32)
    sac = SAC(config, observation_size, low.shape[0])
    workdir = pathlib.Path(workdir)
    checkpointer = Checkpointer(workdir, keep=2)
    meta = {"env_id": env_id, "sac": json.loads(json.dumps(dataclasses.asdict(config))), "seed": seed,
            "backend": backend, "num_envs": num_envs, "stop_at_return": stop_at_return}
    state = sac.init(jax.random.PRNGKey(seed))
    start, evaluations, stopped = 0, [], False
    if checkpointer.latest_step() is not None:
        start, saved = checkpointer.restore_meta()
        # runs saved before a SACConfig field existed ran with its default
        saved["sac"] = {**json.loads(json.dumps(dataclasses.asdict(SACConfig()))), **saved.get("sac", {})}
        if any(saved.get(key) != value for key, value in meta.items()):
            raise ValueError(f"{workdir} holds a SAC run of {saved.get('env_id')} with other settings "
                             f"({ {k: saved.get(k) for k in meta} }); use a new workdir")
        evaluations, stopped = [tuple(e) for e in saved["evaluations"]], saved["stopped_at_return"]
        logger.info("resuming the SAC run in %s from step %d", workdir, start)
    runner = _GymRunner if backend == "gym" else _MJXRunner
    started = time.perf_counter()
    with SummaryWriter(workdir / "tensorboard") as writer:
        loop = runner(sac, env, low, high, num_envs, seed, writer)
        carry = loop.initial(state)
        if start:
            carry = _with_empty_arrays(carry, checkpointer.restore_state(start, _non_empty_arrays(carry)))
        step, next_eval, next_checkpoint = (start, _next_multiple(start, eval_every),
                                            _next_multiple(start, checkpoint_every))
        bar = tqdm(total=steps, initial=start, desc=f"SAC {env_id}", unit="step", disable=not progress, smoothing=0.05)
        while step < steps and not stopped:
            horizon = min(steps, next_eval, next_checkpoint)
            carry, reached = loop.run(carry, step, horizon, config.learning_starts)
            bar.update(reached - step)
            step = reached
            if step >= next_eval or step == steps:
                value = loop.evaluate(loop.agent(carry), eval_episodes, seed + step)
                evaluations.append((step, value))
                writer.scalar("eval/return", value, step)
                bar.set_postfix(eval_return=f"{value:.1f}")
                next_eval = _next_multiple(step, eval_every)
                stopped = stop_at_return is not None and value >= stop_at_return
            if step >= next_checkpoint or step == steps or stopped:
                checkpointer.save(step, _non_empty_arrays(carry), loop.agent(carry).actor.params,
                                  {"low": low, "high": high},
                                  {**meta, "evaluations": evaluations, "stopped_at_return": stopped}, force=True)
                next_checkpoint = _next_multiple(step, checkpoint_every)
        bar.close()
    checkpointer.close()
    return SACRun(sac, loop.agent(carry), low, high, step, evaluations, stopped, time.perf_counter() - started)


def _non_empty_arrays(carry) -> list:
    """The carry's arrays that hold values (orbax refuses the zero-size fields of an MJX ``Data``)."""
    return [leaf for leaf in jax.tree.leaves(carry) if leaf.size]


def _with_empty_arrays(template, arrays: list):
    values = iter(arrays)
    return jax.tree.map(lambda leaf: leaf if not leaf.size else next(values), template)


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


class _GymRunner:
    """Host stepping: gymnasium's synchronous vector env (same-step autoreset, so a finished episode's last
    observation is in ``info["final_obs"]``) and two jitted calls per step: the insert, then the update with the
    next action (one program doing both copied the whole buffer every step)."""

    def __init__(self, sac: SAC, env_id, low, high, num_envs, seed, writer):
        self.sac, self.low, self.high, self.writer, self.seed = sac, low, high, writer, seed
        self.envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                 vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
        self.env_id, self.num_envs = env_id, num_envs
        self.obs = None
        self.episode_return = np.zeros(num_envs)
        self.policy = SACPolicy(sac, low, high)

        def insert(state, obs, action, reward, next_obs, terminated, done):
            return state.replace(buffer=state.buffer.add(obs, action, reward, next_obs, terminated, done))

        def update_act(state, following_obs):
            state, metrics = sac.update(state)
            rng, act_rng = jax.random.split(state.rng)
            next_action, _ = sac.sample_action(state.actor.params, following_obs, act_rng)
            return state.replace(rng=rng), metrics, next_action

        def act(state, obs):
            rng, act_rng = jax.random.split(state.rng)
            return state.replace(rng=rng), sac.sample_action(state.actor.params, obs, act_rng)[0]

        self._insert = jax.jit(insert, donate_argnums=0)
        self._update_act = jax.jit(update_act, donate_argnums=0)
        self._act = jax.jit(act, donate_argnums=0)
        self._eval_act = jax.jit(self.policy.act)

    def initial(self, agent: SACState) -> SACState:
        """What the loop carries (and a checkpoint holds): here the agent alone."""
        return agent

    def agent(self, carry: SACState) -> SACState:
        return carry

    def run(self, state, step, stop, learning_starts):
        """Steps ``step .. stop`` (rounded up to whole vector steps); returns the state and the step reached."""
        if self.obs is None:  # the start of the run, or a resume: the episodes in progress end here
            state = state.replace(buffer=state.buffer.end_episodes(self.num_envs))
            obs, _ = self.envs.reset(seed=self.seed + step)
            self.obs = obs.astype(np.float32)
            self.random = np.random.default_rng([self.seed, step])  # warm-up actions, fresh after a resume
        action = None
        for t in range(step, stop, self.num_envs):
            if t < learning_starts:
                action = self.random.uniform(-1.0, 1.0, (self.num_envs, self.sac.action_size)).astype(np.float32)
            elif action is None:
                state, action = self._act(state, self.obs)
                action = np.asarray(action)
            next_obs, reward, terminated, truncated, info = self.envs.step(to_env_action(action, self.low, self.high))
            next_obs = next_obs.astype(np.float32)
            stored_next = next_obs.copy()
            done = terminated | truncated
            if done.any():
                stored_next[done] = np.stack(info["final_obs"][done]).astype(np.float32)
            self.episode_return += reward
            for i in np.flatnonzero(done):
                self.writer.scalar("episode/return", self.episode_return[i], t + self.num_envs)
                self.episode_return[i] = 0.0
            state = self._insert(state, self.obs, action, reward, stored_next, terminated, done)
            if t + self.num_envs <= learning_starts:
                action = None
            else:
                state, metrics, action = self._update_act(state, next_obs)
                action = np.asarray(action)
                if (t // self.num_envs) % (LOG_EVERY // self.num_envs or 1) == 0:
                    self.writer.scalars(jax.device_get(metrics), t + self.num_envs)
            self.obs = next_obs
        return state, step + -(-(stop - step) // self.num_envs) * self.num_envs

    def evaluate(self, state, episodes, seed):
        result = evaluate_gym(self.env_id, lambda obs: (), lambda s, obs, t: (
            np.asarray(self._eval_act(state.actor.params, (), obs, t, None)[0]), s),
            episodes=episodes, num_envs=min(episodes, 10), seed=seed)
        return float(np.mean(result["returns"]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _MJXCarry:
    agent: SACState
    env_state: object
    episode_return: jax.Array
    rng: jax.Array


class _MJXRunner:
    """Device loop: ``num_envs`` MJX environments stepped, reset, inserted and learned from inside one
    ``lax.scan`` per stretch of steps; finished episodes' returns come back as per-stretch sums."""

    CHUNK = 1000  # vector steps per compiled call

    def __init__(self, sac: SAC, env: Env, low, high, num_envs, seed, writer):
        self.sac, self.writer, self.num_envs, self.seed, self.env = sac, writer, num_envs, seed, env
        self.low, self.high = jnp.asarray(low), jnp.asarray(high)
        self._chunks = {}
        self._eval = {}

    def initial(self, agent: SACState) -> _MJXCarry:
        """What the loop carries (and a checkpoint holds): the agent, the environments and their returns so far."""
        rng = jax.random.PRNGKey(self.seed + 1)
        env_state = jax.jit(jax.vmap(self.env.reset))(jax.random.split(rng, self.num_envs))
        return _MJXCarry(agent, env_state, jnp.zeros(self.num_envs), jax.random.fold_in(rng, 1))

    def agent(self, carry: _MJXCarry) -> SACState:
        return carry.agent

    def _chunk(self, length: int):
        if length in self._chunks:
            return self._chunks[length]
        sac, env, n = self.sac, self.env, self.num_envs

        def run(carry: _MJXCarry, start, learning_starts):
            def one_step(carry: _MJXCarry, t):
                rng, act_rng, random_rng, reset_rng = jax.random.split(carry.rng, 4)
                obs = carry.env_state.obs
                learned = sac.sample_action(carry.agent.actor.params, obs, act_rng)[0]
                uniform = jax.random.uniform(random_rng, learned.shape, minval=-1.0, maxval=1.0)
                action = jnp.where(t < learning_starts, uniform, learned)
                stepped = jax.vmap(env.step)(carry.env_state, to_env_action(action, self.low, self.high))
                done = stepped.done
                agent = carry.agent.replace(buffer=carry.agent.buffer.add(obs, action, stepped.reward, stepped.obs,
                                                                          stepped.terminated, done))
                no_update = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(sac.update, agent)[1])
                agent, metrics = jax.lax.cond(t + n > learning_starts, sac.update, lambda a: (a, no_update), agent)
                def reset_ended(stepped):  # only on steps where an episode ended
                    fresh = jax.vmap(env.reset)(jax.random.split(reset_rng, n))
                    return jax.tree.map(lambda f, s: jnp.where(done.reshape(done.shape + (1,) * (s.ndim - 1)), f, s),
                                        fresh, stepped)

                env_state = jax.lax.cond(jnp.any(done), reset_ended, lambda s: s, stepped)
                episode_return = carry.episode_return + stepped.reward
                finished = (jnp.sum(jnp.where(done, episode_return, 0.0)), jnp.sum(done))
                carry = _MJXCarry(agent, env_state, jnp.where(done, 0.0, episode_return), rng)
                return carry, (finished, metrics)

            carry, ((returns, counts), metrics) = jax.lax.scan(one_step, carry, start + n * jnp.arange(length))
            return carry, jnp.sum(returns), jnp.sum(counts), jax.tree.map(lambda m: m[-1], metrics)

        self._chunks[length] = jax.jit(run, donate_argnums=0)
        return self._chunks[length]

    def run(self, carry, step, stop, learning_starts):
        while step < stop:
            length = min(self.CHUNK, -(-(stop - step) // self.num_envs))
            carry, total, count, metrics = self._chunk(length)(carry, step, learning_starts)
            step += length * self.num_envs
            if int(count):
                self.writer.scalar("episode/return", float(total) / int(count), step)
            if step > learning_starts:
                self.writer.scalars(jax.device_get(metrics), step)
        return carry, step

    def evaluate(self, agent, episodes, seed):
        if episodes not in self._eval:
            policy = SACPolicy(self.sac, self.low, self.high)
            self._eval[episodes] = make_rollout(self.env, policy, episodes, self.env.max_episode_steps)
        out = self._eval[episodes](agent.actor.params, jax.random.PRNGKey(seed))
        return float(jnp.mean(out["returns"]))
