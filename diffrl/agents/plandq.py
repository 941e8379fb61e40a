"""PlanDQ (Chen et al. 2024, "PlanDQ: Hierarchical Plan Orchestration via D-Conductor and Q-Performer").

Two stages, trained independently (Sec. 3; official ``changchencc/PlanDQ``, branch ``antmaze``):

* ``conductor`` (Sec. 3.1, Eq. 11): Diffuser's temporal U-Net over sub-goal sequences
  ``x_g = [s_t, s_{t+K}, ..., s_{t+(M-1)K}]`` of whole states (no actions, as the official AntMaze conductor), the first
  and last states inpainted, x0-prediction with ``x0`` clipped, a limits normaliser and an EMA; a window is kept
  only where its first and last positions lie more than ``conductor.min_displacement x M K`` apart (official
  ``datasets/sequence.py``, which compares with the state ``K`` steps after the last one);
* ``performer`` (Sec. 3.2, Eqs. 13-16): Diffusion-QL (:mod:`diffrl.agents.dql`) on ``[s, g]`` with ``g`` the
  ``task.subgoal`` columns (the position in a maze; AntMaze's code takes the 15 of qpos) of a sub-goal state
  relabelled from the same episode (:func:`~diffrl.data.sample_subgoal_transitions`, ``Delta ~
  Geometric(q.subgoal_p)``), reward ``r' + exp(-||s'_xy - g_xy|| / q.intrinsic_length)`` (App. C; ``r'`` the
  extrinsic reward after the task's shift and scale) and ``done`` where the sub-goal is the next state itself
  (official ``data_sampler.py``); with ``q.intrinsic_reward = "cosine_max"`` (Gym-MuJoCo, App. C) the reward is
  Director's cosineMax on the ``task.subgoal`` columns and only the data ends episodes.

Acting (official ``main_Antmaze.py: eval_policy``), for ``N`` environments inside the rollout's scan: a new sub-goal
is chosen after ``plan.replan_every`` steps, or as soon as the agent is within ``plan.reach`` of it; it is the
second state of a plan from ``s`` to the goal (at rest), drawn again up to ``plan.retries`` times while it lies
farther than ``plan.too_far``, within ``plan.reach``, or farther from the goal than the agent; within
``plan.straight_distance`` of the goal the sub-goal is the goal itself (no plan is drawn). If every retry was needed
the performer runs the whole ``replan_every`` steps towards the last draw.

:class:`SubgoalMethod` holds what every member of the family shares (the performer and its inputs),
:class:`GoalSubgoalMethod` adds this orchestration for goal tasks; PlanQQ (``planqq.py``), PlanQD and PlanDD
(``plandd.py``) are members, and PlanDQ on Gym-MuJoCo (``plandq_gym.py``) plans with a value-guided conductor instead.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffrl import diffusion
from diffrl.agents.base import Method, Policy
from diffrl.agents.diffuser import TrajectoryStage
from diffrl.agents.dql import ActorCriticStage, DiffusionActorCritic
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.data.minari_io import OfflineData
from diffrl.data.store import DatasetStore, gather_jumpy_states, jumpy_starts, sample_subgoal_transitions
from diffrl.nets.unet import TemporalUNet, check_unet_horizon


def map_active_rows(fn: Callable, active: jnp.ndarray, rows: int, *args):
    """``fn(*args)`` for arrays ``args`` with one row per environment, computed only for the ``active`` rows,
    ``rows`` at a time (a ``while_loop`` over as many blocks as the active rows fill); ``fn`` must compute each row
    on its own. The other rows of the result are zero."""
    n = active.shape[0]
    order = jnp.argsort(~active, stable=True)  # the active rows first, in order
    order = jnp.concatenate([order, jnp.zeros((-n % rows,), order.dtype)])
    count = jnp.sum(active)
    shapes = jax.eval_shape(fn, *(a[:rows] for a in args))
    out = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape[1:], s.dtype), shapes)

    def block(carry):
        i, out = carry
        index = jax.lax.dynamic_slice(order, (i * rows,), (rows,))
        valid = i * rows + jnp.arange(rows) < count
        result = fn(*(a[index] for a in args))
        target = jnp.where(valid, index, n)  # n: out of range, dropped
        return i + 1, jax.tree.map(lambda o, r: o.at[target].set(r, mode="drop"), out, result)

    return jax.lax.while_loop(lambda c: c[0] * rows < count, block, (0, out))[1]


class ConductorStage(TrajectoryStage):
    """The D-Conductor: the denoising loss on normalised sub-goal sequences, start and end inpainted."""

    name = "conductor"

    def init(self, rng):
        m = self.method
        x = jnp.zeros((1, m.num_states, m.state_dim))
        return TrainState.create(m.conductor.init(rng, x, jnp.zeros((1,), jnp.int32)), self.optimizer, ema=True)

    def prepare(self, store: DatasetStore) -> dict:
        m, cc = self.method, self.config.conductor
        threshold = cc.min_displacement * m.num_states * m.stride
        starts = jumpy_starts(store, m.num_states, m.stride, m.state_columns[m.xy], threshold)
        if len(starts) == 0:
            raise ValueError(f"no sequence of {m.num_states} states {m.stride} steps apart that moves more than "
                             f"{threshold:g} fits in an episode of {m.info.dataset_id}")
        return {"store": store, "starts": jnp.asarray(starts)}

    def sample_batch(self, train_data, rng, state):
        starts = train_data["starts"]
        rows = starts[jax.random.randint(rng, (self.batch_size,), 0, starts.shape[0])]
        m = self.method
        states = gather_jumpy_states(train_data["store"], rows, m.num_states, m.stride)[..., m.state_columns]
        return {"x": m.normalizer.normalize(states)}

    def update(self, state, batch, rng):
        m, x = self.method, batch["x"]
        inpainting = diffusion.Inpainting.at_timesteps(x.shape, {0: x[:, 0], m.num_states - 1: x[:, -1]})

        def loss_fn(params):
            loss, _ = diffusion.diffusion_loss(lambda y, t, c: m.conductor.apply(params, y, t), m.conductor_schedule,
                                               rng, x, prediction=self.config.conductor.prediction,
                                               inpainting=inpainting)
            return loss, {}

        return apply_loss(state, self.optimizer, loss_fn, prefix=self.name, ema=self.ema,
                          learning_rate=self.learning_rate)


class PerformerStage(ActorCriticStage):
    """The Q-Performer: Diffusion-QL's step on sub-goal-relabelled transitions with the intrinsic reward."""

    name = "performer"

    def __init__(self, method: "SubgoalMethod", upstream=None):
        super().__init__(method, upstream)
        kind = self.config.q.intrinsic_reward
        if kind not in ("distance", "cosine_max") or (kind == "distance" and not isinstance(method, GoalSubgoalMethod)):
            raise ValueError(f"q.intrinsic_reward={kind!r}: 'distance' (goal tasks, to the sub-goal's position) or "
                             "'cosine_max'")

    def prepare(self, store: DatasetStore) -> DatasetStore:
        return store

    def sample_batch(self, store: DatasetStore, rng, state):
        m, qc = self.method, self.config.q
        out = sample_subgoal_transitions(store, rng, self.batch_size, qc.subgoal_p, m.stride)
        subgoal = m.state(out["subgoals"])
        if qc.intrinsic_reward == "distance":  # App. C, navigation: exp(-||s'_xy - g_xy||); done at the sub-goal
            distance = jnp.linalg.norm(m.position(out["next_observations"]) - subgoal[..., m.xy], axis=-1)
            intrinsic, not_done = jnp.exp(-distance / qc.intrinsic_length), distance > 0
        else:  # App. C, other tasks: cosineMax of Director (official dmc data_sampler.py), on the sub-goal columns
            goal = subgoal[..., m.subgoal_columns]
            reached = m.state(out["next_observations"])[..., m.subgoal_columns]
            scale = jnp.maximum(jnp.linalg.norm(goal, axis=-1), jnp.linalg.norm(reached, axis=-1)) + 1e-12
            intrinsic, not_done = jnp.sum(goal * reached, axis=-1) / scale**2, True
        return {"input": m.performer_input(out["observations"], subgoal),
                "action": m.info.to_unit_action(out["actions"]),
                "reward": qc.reward_scale * (out["rewards"] + qc.reward_shift) + intrinsic,
                "next_input": m.performer_input(out["next_observations"], subgoal),
                "not_done": (1.0 - out["terminations"]) * not_done}


class SubgoalMethod(Method):
    """What PlanDQ's family shares (Sec. 3.3): a conductor that proposes sub-goal states ``K = conductor.stride``
    steps ahead and a performer that reaches them. A member defines its conductor's stages and its policy; the
    performer is the Q-Performer (:class:`PerformerStage`) unless the member overrides :meth:`make_performer` and
    :meth:`perform`."""

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        task = config.task
        # task.state_key: one observation key or several, concatenated (AntMaze: D4RL's [x, y, observation])
        self.state_columns = info.columns(task.state_key)
        self.state_dim = len(self.state_columns)
        self.action_dim = info.action_size
        # the performer's goal: these columns of a state (None: all of them)
        self.subgoal_columns = slice(0, self.state_dim) if task.subgoal is None else slice(*task.subgoal)
        if not 0 <= self.subgoal_columns.start < self.subgoal_columns.stop <= self.state_dim:
            raise ValueError(f"task.subgoal={tuple(task.subgoal)} must be a column range of the {self.state_dim}-d "
                             "state")
        self.stride = config.conductor.stride
        self.performer = self.make_performer()

    def make_performer(self) -> DiffusionActorCritic:
        """The Q-Performer's policy and critics over ``[s, g]``."""
        c, goal_dim = self.config, self.subgoal_columns.stop - self.subgoal_columns.start
        return DiffusionActorCritic(c.model, c.diffusion, c.q, self.state_dim + goal_dim, self.action_dim,
                                    c.plan.num_candidates)

    def actor_critic(self, stage: str) -> tuple[DiffusionActorCritic, ml_collections.ConfigDict]:
        """The networks and settings of the actor-critic stage ``stage`` (:class:`ActorCriticStage`)."""
        if stage != "performer":
            raise ValueError(f"{self.name} has no actor-critic stage {stage!r}")
        return self.performer, self.config.q

    @classmethod
    def normalized_columns(cls, config, info, data: OfflineData) -> np.ndarray:
        return data.observations[:, info.columns(config.task.state_key)]  # the conductor's states

    # -- inputs --------------------------------------------------------------------------------------------------
    def state(self, obs: jnp.ndarray) -> jnp.ndarray:
        return obs[..., self.state_columns]

    def performer_input(self, obs: jnp.ndarray, subgoal: jnp.ndarray) -> jnp.ndarray:
        """``[s, g]`` for a sub-goal state ``[..., S]``, in raw units (the performer reads raw states, as
        Diffusion-QL)."""
        return jnp.concatenate([self.state(obs), subgoal[..., self.subgoal_columns]], axis=-1)

    def perform(self, params, rng, obs: jnp.ndarray, subgoal: jnp.ndarray) -> jnp.ndarray:
        """The action towards the sub-goal state: the Q-Performer's (Diffusion-QL's choice among its samples)."""
        unit_action = self.performer.choose(params["performer"], rng, self.performer_input(obs, subgoal))
        return self.info.from_unit_action(unit_action)


class GoalSubgoalMethod(SubgoalMethod):
    """The family on goal tasks (mazes): sub-goals on the way to the goal in the observation, chosen by the official
    orchestration (:class:`SubgoalPolicy`). A member defines :meth:`draw_plan`."""

    def __init__(self, config, info, normalizer):
        if not config.task.goal_key:
            raise ValueError(f"{config.method} plans to the goal: set task.goal_key to the observation key holding it")
        super().__init__(config, info, normalizer)
        self.goal_slice = info.slice(config.task.goal_key)
        self.xy = slice(*config.task.xy)  # the position's columns within the state
        if not 0 <= self.xy.start < self.xy.stop <= self.state_dim:
            raise ValueError(f"task.xy={tuple(config.task.xy)} must be a column range of the {self.state_dim}-d state")

    def position(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.state(obs)[..., self.xy]

    # -- sub-goals -----------------------------------------------------------------------------------------------
    def draw_plan(self, params, rng, obs: jnp.ndarray) -> jnp.ndarray:
        """A plan ``[N, M, S]`` in data units whose second state is the proposed sub-goal."""
        raise NotImplementedError

    def draw_plans(self, params, keys: jnp.ndarray, obs: jnp.ndarray, active: jnp.ndarray) -> jnp.ndarray:
        """:meth:`draw_plan` for the ``active`` environments, each with its own key (``keys [N]``), so that a plan
        does not depend on which others are drawn with it. On CPU only the active rows are computed,
        ``plan.subgoal_batch`` at a time (0: every row at once, as on accelerators); the other rows are zero."""
        def draw(keys, obs):
            return jax.vmap(lambda key, o: self.draw_plan(params, key, o[None])[0])(keys, obs)

        rows = self.config.plan.subgoal_batch
        if not 0 < rows < obs.shape[0]:
            return draw(keys, obs)
        return jax.lax.platform_dependent(keys, obs, active, default=lambda k, o, _: draw(k, o),
                                          cpu=lambda k, o, a: map_active_rows(draw, a, rows, k, o))

    def choose_subgoals(self, params, rng, obs: jnp.ndarray, active: jnp.ndarray):
        """``(sub-goal state [N, S], plan [N, M, S], exhausted [N])`` for the ``active`` environments: plan[1],
        drawn again up to ``plan.retries`` times while refused (official rules); ``exhausted`` where every retry
        was needed (official ``n_try > 5``). Environment ``i``'s draw ``j`` comes from its own key, the same however
        many draws the others need; on CPU a retry draws only for the environments still refused."""
        pc = self.config.plan
        keys = jax.random.split(rng, obs.shape[0])
        xy, goal = self.position(obs), obs[..., self.goal_slice]
        to_goal = jnp.linalg.norm(xy - goal, axis=-1)

        def draw(j, pending):
            plan = self.draw_plans(params, jax.vmap(jax.random.fold_in, (0, None))(keys, j), obs, pending)
            subgoal = plan[:, 1]
            distance = jnp.linalg.norm(subgoal[:, self.xy] - xy, axis=-1)
            refused = (distance > pc.too_far) | (distance <= pc.reach) | (
                jnp.linalg.norm(subgoal[:, self.xy] - goal, axis=-1) > to_goal)
            return plan, subgoal, refused

        def retry(carry):
            tries, used, plan, subgoal, refused = carry
            new_plan, new_subgoal, new_refused = draw(tries + 1, refused & active)
            take = refused[:, None]
            return (tries + 1, used + refused, jnp.where(take[..., None], new_plan, plan),
                    jnp.where(take, new_subgoal, subgoal), refused & new_refused)

        plan, subgoal, refused = draw(0, active)
        _, used, plan, subgoal, _ = jax.lax.while_loop(
            lambda c: (c[0] < pc.retries) & jnp.any(c[4] & active), retry,
            (0, jnp.zeros(refused.shape, jnp.int32), plan, subgoal, refused))
        return subgoal, plan, used >= pc.retries

    def policy(self) -> Policy:
        return SubgoalPolicy(self)


class PlanDQ(GoalSubgoalMethod):
    name = "plandq"
    stages = (ConductorStage, PerformerStage)

    def __init__(self, config, info, normalizer):
        super().__init__(config, info, normalizer)
        cc = config.conductor
        self.num_states = cc.num_states
        check_unet_horizon(self.num_states, cc.dim_mults)
        self.conductor = TemporalUNet(transition_dim=self.state_dim, dim=cc.dim, dim_mults=tuple(cc.dim_mults))
        self.conductor_schedule = diffusion.make_schedule("cosine", cc.num_steps)
        self.conductor_sampler = diffusion.SamplerConfig(method="ddpm", steps=config.plan.sampler_steps,
                                                         prediction=cc.prediction, clip_x0=cc.clip_x0)

    def plan(self, conductor_params, rng, states: jnp.ndarray, goals: jnp.ndarray) -> jnp.ndarray:
        """Sub-goal sequences ``[N, M, S]`` in data units from ``states [N, S]`` to ``goals [N, 2]`` (at rest)."""
        shape = (states.shape[0], self.num_states, self.state_dim)
        goal_states = jnp.zeros_like(states).at[:, self.xy].set(goals)
        ends = {0: self.normalizer.normalize(states), self.num_states - 1: self.normalizer.normalize(goal_states)}
        model_fn = lambda x, t, cond: self.conductor.apply(conductor_params, x, t)  # noqa: E731
        x = diffusion.sample(rng, model_fn, self.conductor_schedule, shape, self.conductor_sampler,
                             inpainting=diffusion.Inpainting.at_timesteps(shape, ends))
        return self.normalizer.unnormalize(x)

    def draw_plan(self, params, rng, obs):
        return self.plan(params["conductor"], rng, self.state(obs), obs[..., self.goal_slice])


class SubgoalPolicy(Policy):
    """The orchestration of the module docstring, batched over environments; the first sub-goals are chosen in
    :meth:`init`, so that the initial plans can be drawn."""

    def __init__(self, method: GoalSubgoalMethod):
        self.method = method

    def init(self, params, rng, obs):
        m = self.method
        n = obs.shape[0]
        plan = jax.eval_shape(lambda: m.draw_plan(params, rng, obs))
        state = {"subgoal": jnp.zeros((n, m.state_dim)), "plan": jnp.zeros(plan.shape, plan.dtype),
                 "age": jnp.zeros((n,), jnp.int32), "refused": jnp.zeros((n,), bool)}
        return self.new_subgoals(params, rng, obs, state, jnp.ones((n,), bool))

    def new_subgoals(self, params, rng, obs, state: dict, due: jnp.ndarray) -> dict:
        """``state`` with new sub-goals where ``due`` (the goal itself near it, else a conductor's choice)."""
        m, pc = self.method, self.method.config.plan
        goal = obs[..., m.goal_slice]
        near = jnp.linalg.norm(m.position(obs) - goal, axis=-1) <= pc.straight_distance
        planning = due & ~near
        subgoal, plan, exhausted = jax.lax.cond(
            jnp.any(planning), lambda: m.choose_subgoals(params, rng, obs, planning),
            lambda: (state["subgoal"], state["plan"], state["refused"]))
        # near the goal the sub-goal is the goal (official: the previous sub-goal moved onto it)
        subgoal = jnp.where(near[:, None], state["subgoal"].at[:, m.xy].set(goal), subgoal)
        return {"subgoal": jnp.where(due[:, None], subgoal, state["subgoal"]),
                "plan": jnp.where(planning[:, None, None], plan, state["plan"]),
                "age": jnp.where(due, 0, state["age"]), "refused": jnp.where(due, exhausted & ~near, state["refused"])}

    def act(self, params, policy_state, obs, t, rng):
        m, pc = self.method, self.method.config.plan
        rng_plan, rng_act = jax.random.split(rng)
        reached = jnp.linalg.norm(m.position(obs) - policy_state["subgoal"][:, m.xy], axis=-1) <= pc.reach
        due = (policy_state["age"] >= pc.replan_every) | (reached & ~policy_state["refused"])
        state = jax.lax.cond(jnp.any(due), lambda s: self.new_subgoals(params, rng_plan, obs, s, due), lambda s: s,
                             policy_state)
        return m.perform(params, rng_act, obs, state["subgoal"]), {**state, "age": state["age"] + 1}

    def planned_states(self, policy_state):
        return policy_state["plan"]
