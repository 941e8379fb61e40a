"""Batched evaluation: ``N`` episodes in parallel MJX environments in one jitted call.

The policy's first plan, every policy step and every environment step run inside one ``lax.scan`` over the
episode's time limit; finished episodes stop accumulating reward (environments are not reset). Scores are
normalised with the dataset's reference returns, ``100 (R - R_min) / (R_max - R_min)`` (D4RL / Minari).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.agents.base import Policy
from diffrl.data.minari_io import normalized_score
from diffrl.envs.base import Env


def make_rollout(env: Env, policy: Policy, episodes: int, max_steps: int) -> Callable[[Any, jax.Array], dict]:
    """A jitted ``(params, rng) -> rollout`` of ``episodes`` episodes of at most ``max_steps`` steps, compiled once
    for the env and policy; every output has the episodes as axis 0.

    Returns ``returns [N]``, ``success [N]`` (the goal was reached at least once; False for envs without a
    ``success`` flag), ``lengths [N]``, ``observations [N, T + 1, obs]``, ``valid [N, T + 1]`` (the observation
    belongs to the episode) and ``planned_states`` (``[N, H, S]`` for planners, else absent).
    """

    def run(params, rng):
        rng_reset, rng_init, rng_steps = jax.random.split(rng, 3)
        env_state = jax.vmap(env.reset)(jax.random.split(rng_reset, episodes))
        policy_state = policy.init(params, rng_init, env_state.obs)
        planned = policy.planned_states(policy_state)

        def step(carry, inputs):
            env_state, policy_state, done, returns, success, lengths = carry
            t, step_rng = inputs
            action, policy_state = policy.act(params, policy_state, env_state.obs, t, step_rng)
            env_state = jax.vmap(env.step)(env_state, action)
            alive = ~done
            returns = returns + jnp.where(alive, env_state.reward, 0.0)
            reached = env_state.info.get("success", jnp.zeros((episodes,), bool))
            success = success | (alive & reached)
            lengths = lengths + alive.astype(jnp.int32)
            done = done | env_state.done
            return (env_state, policy_state, done, returns, success, lengths), (env_state.obs, alive)

        carry = (env_state, policy_state, jnp.zeros((episodes,), bool), jnp.zeros((episodes,), jnp.float32),
                 jnp.zeros((episodes,), bool), jnp.zeros((episodes,), jnp.int32))
        inputs = (jnp.arange(max_steps, dtype=jnp.int32), jax.random.split(rng_steps, max_steps))
        (_, _, _, returns, success, lengths), (observations, alive) = jax.lax.scan(step, carry, inputs)
        out = {
            "returns": returns,
            "success": success,
            "lengths": lengths,
            "observations": jnp.concatenate([env_state.obs[None], observations]).swapaxes(0, 1),
            "valid": jnp.concatenate([jnp.ones((1, episodes), bool), alive]).swapaxes(0, 1),
        }
        if planned is not None:
            out["planned_states"] = planned
        return out

    return jax.jit(run)


def score_summary(returns, success, ref_min: float | None, ref_max: float | None, has_success: bool) -> dict:
    """Normalised score mean and standard error over episodes (raw returns when the dataset has no references)."""
    returns = np.asarray(returns, np.float64)
    n = len(returns)

    def stderr(x):
        return float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0

    summary = {"episodes": n, "return_mean": float(returns.mean()), "return_stderr": stderr(returns),
               "normalized_score": None, "stderr": None}
    if ref_min is not None and ref_max is not None:
        scores = normalized_score(returns, ref_min, ref_max)
        summary.update(normalized_score=float(scores.mean()), stderr=stderr(scores))
    summary["success_rate"] = float(np.mean(success)) if has_success else None
    return summary
