"""Diffuser (Janner et al. 2022): plan by denoising whole state-action trajectories.

Stages (the official code trains them as two runs, ``train.py`` and ``train_values.py``):

* ``denoiser`` (Sec. 3.1, App. C): a temporal U-Net over trajectories ``x = [a_t, s_t]_{t<H}`` (actions first, as
  the official code lays them out), trained with the denoising loss, the first action up-weighted
  (``action_weight``), conditioning entries inpainted into ``x_t`` and the prediction (official code).
* ``value`` (Sec. 3.2, App. C), reward tasks only: the value function J, the first half of the U-Net plus a
  linear head, regressed on noised trajectories to the discounted return from the window's first step (official
  ``ValueDataset``).

Acting: inpainting of the current state and, for goal tasks, the goal (Sec. 3.3); value-guided sampling
(Algorithm 1) with the official ``n_guide_steps``/``t_stopgrad``/``scale_grad_by_std``; warm-start replanning
from the previous plan (Sec. 5.4). Every plan for a batch of environments is one jitted ``lax.scan``. Goal tasks
plan once and track the plan with the official maze2d controller ``a = (s'_{xy} - s_{xy}) + (s'_{v} - s_{v})``
towards the next planned state; reward tasks execute the first action of the highest-value plan and replan every
step (receding horizon).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from diffrl import diffusion
from diffrl.agents.base import AdamStage, Method, Policy
from diffrl.agents.train_state import EMA, TrainState, apply_loss
from diffrl.data.minari_io import OfflineData
from diffrl.data.store import DatasetStore, returns_to_go, sample_trajectory_windows
from diffrl.nets.unet import TemporalUNet, ValueUNet


class TrajectoryStage(AdamStage):
    """What both stages share: Adam with the official EMA, batches of normalised trajectory windows."""

    def __init__(self, method: "Diffuser", upstream=None):
        super().__init__(method, upstream)
        tc = self.train_config
        self.ema = EMA(tc.ema_decay, tc.ema_every, tc.ema_start)

    @property
    def batch_size(self) -> int:
        # gradient_accumulation batches of batch_size whose gradients are averaged: one batch of the product.
        return self.train_config.batch_size * self.train_config.gradient_accumulation

    def export(self, state):
        return state.ema_params


class DenoiserStage(TrajectoryStage):
    name = "denoiser"

    def init(self, rng):
        m = self.method
        return TrainState.create(m.net.init(rng, *m.example_inputs()), self.optimizer, ema=True)

    def sample_batch(self, store: DatasetStore, rng, state):
        return {"x": self.method.sample_windows(store, rng, self.batch_size)["x"]}

    def update(self, state, batch, rng):
        m = self.method
        x = batch["x"]

        def loss_fn(params):
            loss, _ = diffusion.diffusion_loss(functools.partial(m.net.apply, params), m.schedule, rng, x,
                                               prediction=m.config.diffusion.prediction, loss_weights=m.loss_weights,
                                               inpainting=m.conditions(x))
            return loss, {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, ema=self.ema,
                          learning_rate=self.learning_rate)


class ValueStage(TrajectoryStage):
    """J regression on noised trajectories (official ``ValueDiffusion.p_losses``, ``value_l2``)."""

    name = "value"

    def init(self, rng):
        m = self.method
        return TrainState.create(m.value_net.init(rng, *m.example_inputs()), self.optimizer, ema=True)

    def prepare(self, store: DatasetStore):
        vc = self.config.value
        # The official ValueDataset adds the termination penalty to the reward of a terminal step.
        penalised = store.replace(rewards=store.rewards + vc.termination_penalty * store.terminations)
        return {"store": store, "values": returns_to_go(penalised, vc.discount)}

    def sample_batch(self, train_data, rng, state):
        windows = self.method.sample_windows(train_data["store"], rng, self.batch_size)
        return {"x": windows["x"], "value": train_data["values"][windows["indices"]]}

    def update(self, state, batch, rng):
        m = self.method
        rng_t, rng_eps = jax.random.split(rng)
        x = batch["x"]
        t = diffusion.sample_timesteps(rng_t, m.schedule, x.shape[0])
        x_t = m.conditions(x)(diffusion.q_sample(m.schedule, x, t, jax.random.normal(rng_eps, x.shape)))

        def loss_fn(params):
            return jnp.mean(jnp.square(m.value_net.apply(params, x_t, t) - batch["value"])), {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, ema=self.ema,
                          learning_rate=self.learning_rate)


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
    """The U-Nets' computation dtype from ``config.compute_dtype`` (None: float32; workdirs saved before the key
    existed read as float32)."""
    name = config.get("compute_dtype", "float32")
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"config.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}")
    return COMPUTE_DTYPES[name]


class Diffuser(Method):
    name = "diffuser"

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        dc, task = config.diffusion, config.task
        if task.kind not in ("goal", "reward"):
            raise ValueError(f"config.task.kind must be 'goal' or 'reward', got {task.kind!r}")
        self.state_slice = info.slice(task.state_key)
        self.goal_slice = info.slice(task.goal_key) if task.kind == "goal" else None
        self.action_dim = info.action_size
        self.state_dim = self.state_slice.stop - self.state_slice.start
        # diffusion.jump = K > 1: a column holds s_{t+iK} and the K actions from it (PlanDQ's Gym conductor,
        # official changchencc/PlanDQ branch dmc, dmc/diffuser/datasets/sequence.py with jump_action False). Read
        # with a default: workdirs saved before the key existed hold one column per step.
        self.jump = dc.get("jump", 1)
        if self.jump > 1 and (task.kind == "goal" or config.plan.warm_start_steps):
            raise ValueError(f"diffusion.jump={self.jump} plans K-step columns, which neither the maze controller "
                             "nor warm starts (shifted by one step) read: use it on reward tasks without "
                             "plan.warm_start_steps")
        self.action_width = self.jump * self.action_dim
        self.transition_dim = self.action_width + self.state_dim
        self.horizon = task.horizon
        self.schedule = diffusion.make_schedule(dc.schedule, dc.num_steps)
        # read with a default: the initialisation does not matter to a saved run, whose workdir may predate the key
        dtype, init = compute_dtype(config), config.get("initialization", "pytorch")
        self.net = TemporalUNet(transition_dim=self.transition_dim, dim=config.model.dim,
                                dim_mults=tuple(config.model.dim_mults), dtype=dtype, initialization=init)
        self.value_net = (ValueUNet(dim=config.value.dim, dim_mults=tuple(config.value.dim_mults), dtype=dtype,
                                    initialization=init) if config.value.enabled else None)
        weights = diffusion.first_action_weights(self.horizon, self.transition_dim, self.action_width,
                                                 dc.action_weight)
        self.loss_weights = weights * (dc.loss_discount ** np.arange(self.horizon, dtype=np.float32))[:, None]
        self.sampler = diffusion.SamplerConfig(method="ddpm", prediction=dc.prediction, clip_x0=dc.clip_x0)

    @property
    def stages(self):
        return (DenoiserStage, ValueStage) if self.value_net is not None else (DenoiserStage,)

    @classmethod
    def normalized_columns(cls, config, info, data: OfflineData):
        return np.concatenate([data.actions, data.observations[:, info.slice(config.task.state_key)]], axis=-1)

    # -- trajectories ------------------------------------------------------------------------------------------
    def example_inputs(self):
        return jnp.zeros((1, self.horizon, self.transition_dim), jnp.float32), jnp.zeros((1,), jnp.int32)

    def to_trajectory(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        """``[..., H K, obs], [..., H K, act] -> normalised [..., H, K act + state]`` (``K = diffusion.jump``)."""
        x = self.normalizer.normalize(jnp.concatenate([actions, observations[..., self.state_slice]], axis=-1))
        if self.jump == 1:
            return x
        lead = x.shape[:-2]
        jumpy_actions = x[..., : self.action_dim].reshape(lead + (self.horizon, self.action_width))
        return jnp.concatenate([jumpy_actions, x[..., :: self.jump, self.action_dim:]], axis=-1)

    def sample_windows(self, store: DatasetStore, rng, batch_size: int) -> dict:
        dc = self.config.diffusion
        windows = sample_trajectory_windows(store, rng, batch_size, self.horizon * self.jump,
                                            use_padding=dc.use_padding, max_path_length=dc.max_path_length)
        return {"x": self.to_trajectory(windows["observations"], windows["actions"]), "indices": windows["indices"]}

    def conditions(self, x: jnp.ndarray) -> diffusion.Inpainting:
        """Training-time inpainting: the first state, and the last state for goal tasks (official datasets)."""
        steps = {0: x[:, 0, self.action_width:]}
        if self.goal_slice is not None:
            steps[self.horizon - 1] = x[:, -1, self.action_width:]
        return diffusion.Inpainting.at_timesteps(x.shape, steps, feature_start=self.action_width)

    # -- planning ------------------------------------------------------------------------------------------------
    def value(self, params, x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
        return self.value_net.apply(params["value"], x, t)

    def plan(self, params, rng: jax.Array, states: jnp.ndarray, goals: jnp.ndarray | None = None,
             candidates: int = 1, previous: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Plans for ``N`` start states: ``(normalised plans [N, candidates, H, D], values [N, candidates])``.

        ``states [N, state_dim]`` (and ``goals [N, 2]`` for goal tasks) are raw, unnormalised. With a value
        function, every denoising step is guided (Algorithm 1) and ``values`` are J of the last guide call, at ``t = 0``
        on the sample entering the last step (the official ``p_sample_loop`` ranks its plans by these); otherwise
        zeros.
        ``previous`` (normalised ``[N, candidates, H, D]``) warm-starts the chain from
        ``plan.warm_start_steps`` (Sec. 5.4).
        """
        pc = self.config.plan
        n = states.shape[0]
        shape = (n * candidates, self.horizon, self.transition_dim)
        s0 = self.normalize_states(jnp.repeat(states, candidates, axis=0))
        steps = {0: s0}
        if self.goal_slice is not None:
            goal_state = jnp.zeros((n, self.state_dim)).at[:, :2].set(goals)  # goal position at rest
            steps[self.horizon - 1] = self.normalize_states(jnp.repeat(goal_state, candidates, axis=0))
        inpainting = diffusion.Inpainting.at_timesteps(shape, steps, feature_start=self.action_width)
        guide = None
        if self.value_net is not None:  # at guide_scale 0 J still ranks the plans, as in the official code
            guide = diffusion.GradientGuidance(
                objective=lambda x, t: self.value(params, x, t), scale=pc.guide_scale, t_stopgrad=pc.t_stopgrad,
                n_steps=pc.n_guide_steps, scale_by_std=pc.scale_grad_by_std)
        rng_warm, rng_sample = jax.random.split(rng)
        x_init = start = None
        if previous is not None and pc.warm_start_steps:
            start = pc.warm_start_steps
            x_init = diffusion.warm_start(rng_warm, self.schedule, previous.reshape(shape), start)
        model_fn = lambda x, t, cond: self.net.apply(params["denoiser"], x, t)  # noqa: E731
        if guide is None:
            x = diffusion.sample(rng_sample, model_fn, self.schedule, shape, self.sampler, inpainting=inpainting,
                                 x_init=x_init, start_step=start)
            values = jnp.zeros((shape[0],))
        else:
            x, values = diffusion.sample(rng_sample, model_fn, self.schedule, shape, self.sampler,
                                         inpainting=inpainting, gradient_guidance=guide, x_init=x_init,
                                         start_step=start, return_guide_values=True)
        return x.reshape((n, candidates) + shape[1:]), values.reshape(n, candidates)

    def normalize_states(self, states: jnp.ndarray) -> jnp.ndarray:
        padded = jnp.concatenate([jnp.zeros(states.shape[:-1] + (self.action_dim,)), states], axis=-1)
        return self.normalizer.normalize(padded)[..., self.action_dim:]

    def unnormalize(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Normalised trajectories -> ``(actions [..., K act], states)`` in data units."""
        actions = x[..., : self.action_width].reshape(x.shape[:-1] + (self.jump, self.action_dim))
        padded = jnp.concatenate([actions, jnp.zeros(actions.shape[:-1] + (self.state_dim,))], axis=-1)
        actions = self.normalizer.unnormalize(padded)[..., : self.action_dim].reshape(x.shape[:-1] + (-1,))
        states = x[..., self.action_width:]
        padded = jnp.concatenate([jnp.zeros(states.shape[:-1] + (self.action_dim,)), states], axis=-1)
        return actions, self.normalizer.unnormalize(padded)[..., self.action_dim:]

    def policy(self) -> Policy:
        if self.goal_slice is not None:
            return MazePlanPolicy(self)
        return RecedingHorizonPolicy(self)


class MazePlanPolicy(Policy):
    """Goal tasks: plan once from ``s_0`` to the goal (official ``plan_maze2d.py``), optionally replan every
    ``plan.replan_every`` steps (warm-started when ``plan.warm_start_steps``), and track the plan with the
    official controller towards the next planned state (its velocity zeroed past the plan's end)."""

    def __init__(self, agent: Diffuser):
        self.agent = agent

    def _plan(self, params, rng, obs, previous=None):
        a = self.agent
        plans, _ = a.plan(params, rng, obs[:, a.state_slice], obs[:, a.goal_slice], previous=previous)
        return plans[:, 0]

    def init(self, params, rng, obs):
        plan = self._plan(params, rng, obs)
        return {"plan": plan, "first_plan": plan, "age": jnp.zeros((), jnp.int32)}

    def act(self, params, policy_state, obs, t, rng):
        a, replan_every = self.agent, self.agent.config.plan.replan_every
        if replan_every:
            def replan(state):
                shift = state["age"]
                previous = jnp.take(state["plan"], jnp.minimum(jnp.arange(a.horizon) + shift, a.horizon - 1), axis=1)
                return {"plan": self._plan(params, rng, obs, previous), "first_plan": state["first_plan"],
                        "age": jnp.zeros((), jnp.int32)}

            policy_state = jax.lax.cond((t > 0) & (t % replan_every == 0), replan, lambda s: s, policy_state)
        _, states = a.unnormalize(policy_state["plan"])
        index = policy_state["age"] + 1
        waypoint = jnp.take(states, jnp.minimum(index, a.horizon - 1), axis=1)
        past_end = index >= a.horizon
        waypoint = waypoint.at[:, 2:].set(jnp.where(past_end, 0.0, waypoint[:, 2:]))
        state = obs[:, a.state_slice]
        action = (waypoint[:, :2] - state[:, :2]) + (waypoint[:, 2:4] - state[:, 2:4])
        return action, {**policy_state, "age": policy_state["age"] + 1}

    def planned_states(self, policy_state):
        return self.agent.unnormalize(policy_state["first_plan"])[1]


class RecedingHorizonPolicy(Policy):
    """Reward tasks (official ``GuidedPolicy``): ``plan.candidates`` guided plans per environment and step, the
    first action of the one J values highest is executed; replanning happens every step."""

    def __init__(self, agent: Diffuser):
        self.agent = agent

    def init(self, params, rng, obs):
        a = self.agent
        return jnp.zeros((obs.shape[0], a.config.plan.candidates, a.horizon, a.transition_dim))

    def act(self, params, previous, obs, t, rng):
        a = self.agent
        states, candidates = obs[:, a.state_slice], a.config.plan.candidates
        cold = lambda: a.plan(params, rng, states, candidates=candidates)
        if a.config.plan.warm_start_steps:  # Sec. 5.4: from the previous plans shifted one step, after the first
            shifted = jnp.concatenate([previous[:, :, 1:], previous[:, :, -1:]], axis=2)
            plans, values = jax.lax.cond(
                t > 0, lambda: a.plan(params, rng, states, candidates=candidates, previous=shifted), cold)
        else:
            plans, values = cold()
        best = jnp.argmax(values, axis=1)
        best_plans = jnp.take_along_axis(plans, best[:, None, None, None], axis=1)[:, 0]
        actions, _ = a.unnormalize(best_plans[:, 0])
        return actions[:, : a.action_dim], plans
