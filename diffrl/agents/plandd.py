"""PlanDD and PlanQD (Chen et al. 2024, Sec. 3.3): PlanDQ's family with a Diffuser as the performer.

The Diffuser performer "models the sub-trajectory linking state ``s_t`` to state ``s_{t+K}``, including actions, as
in equation 7; the first action ``a_0`` is executed". It is Diffuser's temporal U-Net over ``performer.horizon``
steps of ``[a, s]`` (actions on ``[-1, 1]`` by the action box, states by the method's limits normaliser) with the
first state inpainted at index 0 and the sub-goal columns (``task.subgoal``) of the state ``K`` steps later at
index ``K``:

* training (stage ``performer``): dataset windows, the denoising loss of Diffuser with the first action up-weighted;
* acting: a plan from the current state to the current sub-goal at index ``K``, replanned at every step, its first
  action executed (as Diffuser on locomotion). ``performer.horizon`` must exceed ``K``; the U-Net needs a multiple
  of ``2^(levels - 1)`` (``K + 2 = 32`` for ``K = 30``).

The sub-goal stays at the fixed index ``K`` even as the agent nears it (the paper's ``s_t -> s_{t+K}``): with the
index moving to ``K - age`` the network cannot tell at high noise which entry holds the sub-goal, and a toy point
trained that way ignores it (tested). Neither the paper nor the official code gives this performer's settings;
they are Diffuser's locomotion ones (receding horizon, first action executed: ``configs/plandq.py``). PlanDD plans
its sub-goals with PlanDQ's D-Conductor (two Diffusers, the hierarchical Diffuser of Chen et al. 2024 the paper
names); PlanQD with PlanQQ's Q-Conductor. The orchestration is PlanDQ's (:class:`~diffrl.agents.plandq.SubgoalPolicy`).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from diffrl import diffusion
from diffrl.agents.diffuser import TrajectoryStage
from diffrl.agents.plandq import ConductorStage, PlanDQ
from diffrl.agents.planqq import PlanQQ, QConductorStage
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.data.store import DatasetStore, sample_trajectory_windows
from diffrl.nets.unet import TemporalUNet, check_unet_horizon


class TrajectoryPerformer:
    """The Diffuser performer's network, schedule, sampler and loss weights."""

    def __init__(self, performer_config, action_dim: int, state_dim: int, stride: int):
        pc = performer_config
        if pc.horizon <= stride:
            raise ValueError(f"performer.horizon={pc.horizon} must exceed the sub-goal stride K={stride}")
        check_unet_horizon(pc.horizon, pc.dim_mults)
        self.horizon, self.action_dim = pc.horizon, action_dim
        self.transition_dim = action_dim + state_dim
        self.net = TemporalUNet(transition_dim=self.transition_dim, dim=pc.dim, dim_mults=tuple(pc.dim_mults))
        self.schedule = diffusion.make_schedule("cosine", pc.num_steps)
        self.sampler = diffusion.SamplerConfig(method="ddpm", prediction=pc.prediction, clip_x0=pc.clip_x0)
        self.loss_weights = diffusion.first_action_weights(pc.horizon, self.transition_dim, action_dim,
                                                           pc.action_weight)


class TrajectoryPerformerStage(TrajectoryStage):
    """The Diffuser performer: the denoising loss on windows with their first state and a sub-goal inpainted."""

    name = "performer"

    def init(self, rng):
        p = self.method.performer
        x = jnp.zeros((1, p.horizon, p.transition_dim))
        return TrainState.create(p.net.init(rng, x, jnp.zeros((1,), jnp.int32)), self.optimizer, ema=True)

    def prepare(self, store: DatasetStore) -> DatasetStore:
        horizon = self.method.performer.horizon
        if store.longest_episode <= horizon:
            raise ValueError(f"performer.horizon={horizon} needs an episode longer than that; the longest of "
                             f"{self.method.info.dataset_id} has {store.longest_episode} steps")
        return store

    def sample_batch(self, store: DatasetStore, rng, state):
        m = self.method
        windows = sample_trajectory_windows(store, rng, self.batch_size, m.performer.horizon, use_padding=False)
        return {"x": m.trajectory(windows["observations"], windows["actions"])}

    def update(self, state, batch, rng):
        m, x, a = self.method, batch["x"], self.method.performer.action_dim
        inpainting = m.performer_conditions(x.shape, x[:, 0, a:], x[:, m.stride, a:])

        def loss_fn(params):
            loss, _ = diffusion.diffusion_loss(functools.partial(m.performer.net.apply, params), m.performer.schedule,
                                               rng, x, prediction=self.config.performer.prediction,
                                               loss_weights=m.performer.loss_weights, inpainting=inpainting)
            return loss, {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, ema=self.ema,
                          learning_rate=self.learning_rate)


class DiffuserPerformer:
    """The performer of PlanDD and PlanQD (module docstring), mixed in before a :class:`SubgoalMethod`."""

    def make_performer(self) -> TrajectoryPerformer:
        return TrajectoryPerformer(self.config.performer, self.action_dim, self.state_dim, self.stride)

    def trajectory(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """``[..., H, obs], [..., H, act]`` -> ``[..., H, act + state]`` on the networks' scale."""
        return jnp.concatenate([self.info.to_unit_action(actions), self.normalizer.normalize(self.state(observations))],
                               axis=-1)

    def performer_conditions(self, shape, first_state, subgoal_state) -> diffusion.Inpainting:
        """The first state (normalised ``[B, S]``) at index 0, the sub-goal columns of the normalised sub-goal state
        ``[B, S]`` at index ``K``."""
        a, columns = self.performer.action_dim, self.subgoal_columns
        first = diffusion.Inpainting.at_timesteps(shape, {0: first_state}, feature_start=a)
        return first | diffusion.Inpainting.at_timesteps(shape, {self.stride: subgoal_state[:, columns]},
                                                         feature_start=a + columns.start)

    def performer_plan(self, params, rng, obs, subgoal) -> jnp.ndarray:
        """A plan ``[N, H, A + S]`` (networks' scale) from ``s`` to the sub-goal at index ``K``."""
        p = self.performer
        shape = (obs.shape[0], p.horizon, p.transition_dim)
        inpainting = self.performer_conditions(shape, self.normalizer.normalize(self.state(obs)),
                                               self.normalizer.normalize(subgoal))
        model_fn = lambda x, t, cond: p.net.apply(params["performer"], x, t)  # noqa: E731
        return diffusion.sample(rng, model_fn, p.schedule, shape, p.sampler, inpainting=inpainting)

    def perform(self, params, rng, obs, subgoal):
        """The plan's first action."""
        x = self.performer_plan(params, rng, obs, subgoal)
        return self.info.from_unit_action(jnp.clip(x[:, 0, : self.performer.action_dim], -1.0, 1.0))


class PlanDD(DiffuserPerformer, PlanDQ):
    name = "plandd"
    stages = (ConductorStage, TrajectoryPerformerStage)


class PlanQD(DiffuserPerformer, PlanQQ):
    name = "planqd"
    stages = (QConductorStage, TrajectoryPerformerStage)
