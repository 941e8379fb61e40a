"""PlanQQ (Chen et al. 2024, Sec. 3.3): PlanDQ with a Q-Conductor in place of the D-Conductor.

The Q-Conductor is a diffusion policy ``pi(s_{t+K} | s_t)`` whose action is the state ``K`` steps ahead (as HIQL's
high level), learned as Diffusion-QL is (:class:`~diffrl.agents.dql.ActorCriticStage`, the ``conductor`` group's
settings) over every ``K``-step chunk of the dataset with the TD target
``R_K + gamma (1 - done) Q'(s_{t+K}, s')``, ``R_K = sum_{i<K} r_{t+i}`` (of the reward shaped by
``conductor.reward_scale`` and ``conductor.reward_shift``) and
``s' ~ pi_EMA(. | s_{t+K})``. Its action is the sub-goal state normalised onto ``[-1, 1]`` (the limits normaliser);
one is chosen among ``plan.num_candidates`` samples by softmax over Q and goes through the same orchestration as
PlanDQ's (refusal rules, retries, straight to the goal near it). The Q-Performer is PlanDQ's.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from diffrl.agents.dql import ActorCriticStage, DiffusionActorCritic, Transitions
from diffrl.agents.plandq import GoalSubgoalMethod, PerformerStage
from diffrl.data.store import DatasetStore, chunk_starts


class QConductorStage(ActorCriticStage):
    """The Q-Conductor: Diffusion-QL's step on ``(s_t, s_{t+K}, R_K, s_{t+K})`` chunks."""

    name = "conductor"

    def prepare(self, store: DatasetStore) -> Transitions:
        m, qc, k = self.method, self.q, self.method.stride
        starts = chunk_starts(store, k)
        if len(starts) == 0:
            raise ValueError(f"no chunk of {k} steps fits in an episode of {m.info.dataset_id}")
        rows, last = jnp.asarray(starts), jnp.asarray(starts + k - 1)
        shaped = qc.reward_scale * (np.asarray(store.rewards, np.float64) + qc.reward_shift)
        summed = np.concatenate([[0.0], np.cumsum(shaped)])  # R_K = summed[t + K] - summed[t], exact in float64
        first, later = m.state(store.observations[rows]), m.state(store.next_observations[last])
        return Transitions(inputs=first, actions=m.normalizer.normalize(later),
                           rewards=jnp.asarray(summed[starts + k] - summed[starts], jnp.float32), next_inputs=later,
                           not_done=1.0 - store.terminations[last].astype(jnp.float32))


class PlanQQ(GoalSubgoalMethod):
    name = "planqq"
    stages = (QConductorStage, PerformerStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        c = config
        self.conductor_learner = DiffusionActorCritic(c.model, c.diffusion, c.conductor, self.state_dim, self.state_dim,
                                                      c.plan.num_candidates)

    def actor_critic(self, stage: str):
        if stage == "conductor":
            return self.conductor_learner, self.config.conductor
        return super().actor_critic(stage)

    def draw_plan(self, params, rng, obs):
        """``[s, s_{t+K}]``: the Q-Conductor's choice among its samples at ``s``."""
        state = self.state(obs)
        subgoal = self.normalizer.unnormalize(self.conductor_learner.choose(params["conductor"], rng, state))
        return jnp.stack([state, subgoal], axis=1)

