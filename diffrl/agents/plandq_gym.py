"""PlanDQ on Gym-MuJoCo (Chen et al. 2024, App. C; official ``changchencc/PlanDQ`` branch ``dmc``).

On the dense-reward locomotion tasks the D-Conductor is Diffuser with value guidance over jumpy trajectories
(``dmc/config/locomotion_hl.py``): a column ``i`` holds ``s_{t+iK}`` and the ``K`` actions that follow it
(``K = conductor.stride = 4``, ``jump_action`` False), ``conductor.num_states`` columns (App. C: ``H K = 32``), the
first state inpainted, x0-prediction, 20 cosine steps, a Gaussian normaliser, and a value function J regressed on the
discounted return from the window's first step. The stages:

* ``conductor`` and ``value``: Diffuser's denoiser and value stages (:mod:`diffrl.agents.diffuser`) of the Diffuser
  that ``conductor`` configures;
* ``performer``: the Q-Performer on ``[s, g]`` with the whole state as the sub-goal and the cosineMax intrinsic
  reward (App. C; official ``utils/data_sampler.py``). That sampler draws only rows whose next ``K`` steps end no
  episode, so its critics never see a terminal transition; diffrl draws every row and ends the return at
  terminations, as Diffusion-QL on its own does.

Acting (official ``main.py: eval_policy``): at every step ``plan.candidates`` guided plans from ``s``; the sub-goal
is the second state of the one J values highest (``K`` steps ahead) and the Q-Performer acts towards it. Plans are
ranked by J of the final sample at ``t = 0`` (:meth:`Diffuser.plan`); the official sampler ranks by J of the last
step's input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffrl.agents.base import Policy
from diffrl.agents.diffuser import DenoiserStage, Diffuser, ValueStage
from diffrl.agents.plandq import PerformerStage, SubgoalMethod
from diffrl.data.minari_io import OfflineData


class JumpyConductorStage(DenoiserStage):
    """Diffuser's denoiser stage, trained on the conductor's Diffuser."""

    name = "conductor"

    def __init__(self, method: "PlanDQGym", upstream=None):
        super().__init__(method.conductor, upstream)


class ConductorValueStage(ValueStage):
    """Diffuser's value stage (J), trained on the conductor's Diffuser."""

    def __init__(self, method: "PlanDQGym", upstream=None):
        super().__init__(method.conductor, upstream)


class PlanDQGym(SubgoalMethod):
    name = "plandq-gym"
    stages = (JumpyConductorStage, ConductorValueStage, PerformerStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        self.conductor = Diffuser(self.conductor_config(config), info, normalizer)

    @staticmethod
    def conductor_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """The conductor's Diffuser config: the ``conductor`` group's networks, diffusion, value and planning, over
        ``num_states`` columns ``stride`` steps apart, with this config's dataset, task and training."""
        cc = config.conductor
        groups = {"dataset": config.dataset, "task": config.task, "model": cc.model, "diffusion": cc.diffusion,
                  "value": cc.value, "plan": cc.plan, "train": config.train, "eval": config.eval}
        c = ml_collections.ConfigDict({"method": "diffuser", "seed": config.seed,
                                       **{name: group.to_dict() for name, group in groups.items()}})
        c.task.horizon, c.diffusion.jump = cc.num_states, cc.stride
        return c

    @classmethod
    def normalized_columns(cls, config, info, data: OfflineData) -> np.ndarray:
        return Diffuser.normalized_columns(cls.conductor_config(config), info, data)

    def subgoals(self, params, rng, obs: jnp.ndarray) -> jnp.ndarray:
        """The second state ``[N, S]`` of the best of ``conductor.plan.candidates`` value-guided plans from ``s``."""
        conductor = self.conductor
        plans, values = conductor.plan({"denoiser": params["conductor"], "value": params["value"]}, rng,
                                       self.state(obs), candidates=self.config.conductor.plan.candidates)
        best = jnp.take_along_axis(plans, jnp.argmax(values, axis=1)[:, None, None, None], axis=1)[:, 0]
        return conductor.unnormalize(best[:, 1])[1]

    def policy(self) -> Policy:
        return GuidedSubgoalPolicy(self)


class GuidedSubgoalPolicy(Policy):
    """A new sub-goal at every step, the Q-Performer's action towards it (module docstring)."""

    def __init__(self, method: PlanDQGym):
        self.method = method

    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        m = self.method
        rng_plan, rng_act = jax.random.split(rng)
        return m.perform(params, rng_act, obs, m.subgoals(params, rng_plan, obs)), policy_state
