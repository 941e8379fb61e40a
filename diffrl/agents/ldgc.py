"""LDGC: latent diffusion goal conditioning (Venkatraman et al. 2024, Sec. 4.3).

Stages: the skill VAE and a latent diffusion prior conditioned on the state and the goal, ``p(z | s_t, g)``,
trained with condition dropout. Acting: one prior sample at ``[s, g]`` with classifier-free guidance
(``plan.guidance_weight``), decoded by the VAE's policy and chosen again every ``plan.replan_every`` steps.
"""

from __future__ import annotations

from diffrl.agents.base import Policy
from diffrl.agents.latent_skills import LatentSkillMethod, LatentSkillPolicy, PriorStage, VAEStage


class LDGC(LatentSkillMethod):
    name = "ldgc"
    stages = (VAEStage, PriorStage)
    goal_conditioned_prior = True

    def policy(self) -> Policy:
        return LatentSkillPolicy(self, self.choose_prior_sample)
