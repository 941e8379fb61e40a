"""Batched evaluation: ``N`` episodes in parallel MJX environments in one jitted call.

The policy's first plan, every policy step and every environment step run inside one ``lax.scan`` over the
episode's time limit; finished episodes stop accumulating reward (environments are not reset). Scores are
normalised with the dataset's reference returns, ``100 (R - R_min) / (R_max - R_min)`` (D4RL / Minari).

Two scores of a goal-reaching episode of ``T`` steps: the D4RL return (the reward summed over all ``T`` steps)
and LDCQ's first-hit score (official ``eval/plan_skills_diffusion_maze2d.py``: the episode stops at the first
step ``t`` (0-based) whose reward is nonzero and scores ``T - t``, 0 if the goal is never reached), both
normalised with the same references.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.agents.base import Policy
from diffrl.data.minari_io import normalized_score
from diffrl.envs.base import Env


def make_rollout(env: Env, policy: Policy, episodes: int, max_steps: int,
                 mesh: jax.sharding.Mesh | None = None) -> Callable[[Any, jax.Array], dict]:
    """A jitted ``(params, rng) -> rollout`` of ``episodes`` episodes of at most ``max_steps`` steps, compiled once
    for the env and policy; every output has the episodes as axis 0.

    With a ``mesh`` (:func:`diffrl.train.sharding.make_mesh`) the episodes are split over its devices: every
    array of the environments and of the policy's state whose leading axis is the episodes is laid out in
    ``episodes / devices`` slices, one per device, and XLA runs each slice where it lies (data parallelism: the same
    computation, though rounding can differ in the last bits where a device's smaller batch changes how XLA tiles
    an operation). ``params`` should then be replicated on the mesh.

    Returns ``returns [N]``, ``success [N]`` (the goal was reached at least once; False for envs without a
    ``success`` flag), ``first_hit [N]`` (the 0-based step at which it was first reached, -1 if never),
    ``lengths [N]``, ``observations [N, T + 1, obs]``, ``valid [N, T + 1]`` (the observation belongs to the
    episode) and ``planned_states`` (``[N, H, S]`` for planners, else absent).
    """

    if mesh is not None and episodes % mesh.size:
        raise ValueError(f"{episodes} episodes cannot be split evenly over {mesh.size} devices")
    split = _episode_layout(episodes, mesh)

    def run(params, rng):
        rng_reset, rng_init, rng_steps = jax.random.split(rng, 3)
        env_state = split(jax.vmap(env.reset)(jax.random.split(rng_reset, episodes)))
        policy_state = split(policy.init(params, rng_init, env_state.obs))
        planned = policy.planned_states(policy_state)

        def step(carry, inputs):
            env_state, policy_state, done, returns, first_hit, lengths = carry
            t, step_rng = inputs
            action, policy_state = policy.act(params, policy_state, env_state.obs, t, step_rng)
            env_state = jax.vmap(env.step)(env_state, action)
            alive = ~done
            returns = returns + jnp.where(alive, env_state.reward, 0.0)
            reached = env_state.info.get("success", jnp.zeros((episodes,), bool))
            first_hit = jnp.where(alive & reached & (first_hit < 0), t, first_hit)
            lengths = lengths + alive.astype(jnp.int32)
            done = done | env_state.done
            carry = split((env_state, policy_state, done, returns, first_hit, lengths))
            return carry, (env_state.obs, alive)

        carry = (env_state, policy_state, jnp.zeros((episodes,), bool), jnp.zeros((episodes,), jnp.float32),
                 jnp.full((episodes,), -1, jnp.int32), jnp.zeros((episodes,), jnp.int32))
        inputs = (jnp.arange(max_steps, dtype=jnp.int32), jax.random.split(rng_steps, max_steps))
        (_, _, _, returns, first_hit, lengths), (observations, alive) = jax.lax.scan(step, carry, inputs)
        out = {
            "returns": returns,
            "success": first_hit >= 0,
            "first_hit": first_hit,
            "lengths": lengths,
            "observations": jnp.concatenate([env_state.obs[None], observations]).swapaxes(0, 1),
            "valid": jnp.concatenate([jnp.ones((1, episodes), bool), alive]).swapaxes(0, 1),
        }
        if planned is not None:
            out["planned_states"] = planned
        return out

    return jax.jit(run)


def _episode_layout(episodes: int, mesh: jax.sharding.Mesh | None) -> Callable:
    """``tree -> tree`` constraining the arrays whose leading axis is the episodes to be split over ``mesh`` (a
    layout for XLA's partitioner, not a change of values); the identity without a mesh."""
    if mesh is None or mesh.size == 1:
        return lambda tree: tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))

    def constrain(x):
        batched = isinstance(x, jax.Array) and x.ndim > 0 and x.shape[0] == episodes
        return jax.lax.with_sharding_constraint(x, sharding) if batched else x

    return lambda tree: jax.tree.map(constrain, tree)


def first_hit_returns(first_hit, max_steps: int) -> np.ndarray:
    """LDCQ's per-episode maze score ``T - t`` for a first arrival at step ``t`` (0-based), 0 for none (-1)."""
    first_hit = np.asarray(first_hit)
    return np.where(first_hit >= 0, max_steps - first_hit, 0).astype(np.float64)


def score_summary(returns, first_hit, ref_min: float | None, ref_max: float | None, max_steps: int | None) -> dict:
    """Normalised scores, mean and standard error over episodes (raw when the dataset has no references): the
    return, and for goal-reaching envs (``first_hit`` not ``None``) the success rate and the first-hit score."""
    returns = np.asarray(returns, np.float64)
    n = len(returns)
    has_references = ref_min is not None and ref_max is not None

    def stderr(x):
        return float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0

    def normalized(raw):
        return normalized_score(raw, ref_min, ref_max) if has_references else raw

    summary = {"episodes": n, "return_mean": float(returns.mean()), "return_stderr": stderr(returns),
               "normalized_score": None, "stderr": None, "success_rate": None, "first_hit_score": None,
               "first_hit_stderr": None}
    if has_references:
        scores = normalized(returns)
        summary.update(normalized_score=float(scores.mean()), stderr=stderr(scores))
    if first_hit is not None:
        hits = normalized(first_hit_returns(first_hit, max_steps))
        summary.update(success_rate=float(np.mean(np.asarray(first_hit) >= 0)), first_hit_score=float(hits.mean()),
                       first_hit_stderr=stderr(hits))
    return summary
