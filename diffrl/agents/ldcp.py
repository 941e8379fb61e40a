"""LDCP: planning with the latent prior and the state decoder (Venkatraman et al. 2024, App. B, Algorithm 2).

Stages: the skill VAE with its state decoder ``p(s_{t+H} | s_t, z)`` and the latent diffusion prior ``p(z | s_t)``.
Acting: ``n`` prior latents per state, the state decoder's ``s_{t+H}`` for each, recursively to depth ``d``
(``n^d`` leaves); the first-level latent of the leaf whose state is nearest the goal is executed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffrl.agents.base import Policy
from diffrl.agents.latent_skills import LatentSkillMethod, LatentSkillPolicy, PriorStage, VAEStage


class LDCP(LatentSkillMethod):
    name = "ldcp"
    stages = (VAEStage, PriorStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        if not config.model.state_decoder:
            raise ValueError("LDCP plans with the state decoder: train the VAE with model.state_decoder=True")
        if self.goal_slice is None:
            raise ValueError("LDCP plans towards a goal: set task.goal_key to the observation key holding it")

    def choose_by_planning(self, params, rng, obs):
        """Algorithm 2: the cost of a leaf is the Euclidean distance of its state's first ``goal_dim`` entries
        (the position) to the goal."""
        pc = self.config.plan
        n, depth = pc.num_candidates, pc.depth
        envs = obs.shape[0]
        goal = obs[:, self.goal_slice]
        states = self.skill_state(obs)
        first = None
        for level in range(depth):
            latents = self.sample_latents(params["prior"], jax.random.fold_in(rng, level), states, n)  # [E n^l, n, Z]
            states = jnp.repeat(states, n, axis=0)
            latents = latents.reshape(-1, latents.shape[-1])
            states = self.predict_final_state(params["vae"], states, latents)
            if first is None:
                first = latents.reshape(envs, n, -1)
        position = self.unnormalize_state(states)[:, : self.goal_dim]
        cost = jnp.linalg.norm(position.reshape(envs, n**depth, -1) - goal[:, None], axis=-1)
        best_leaf = jnp.argmin(cost, axis=1)
        return first[jnp.arange(envs), best_leaf // n ** (depth - 1)]

    def policy(self) -> Policy:
        return LatentSkillPolicy(self, self.choose_by_planning)
