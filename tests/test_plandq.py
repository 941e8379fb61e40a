"""PlanDQ's family: the Q-Performer's relabelled batches (intrinsic reward, done, inputs) by hand, the D-Conductor's
inpainted ends, the Q-Conductor's K-step chunks, the Diffuser performer's conditions and what it learns on a toy
point, and the orchestration of sub-goals against a plain-Python reference of the official loop on a toy point with a
stand-in conductor and performer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.agents import METHODS, DatasetInfo, PlanDQ
from diffrl.config import apply_overrides, load_config
from diffrl.data import LimitsNormalizer, OfflineData, make_store
from diffrl.train.loop import init_carry, make_train_chunk
from diffrl.train.sharding import make_mesh, put_replicated

TINY = ["conductor.num_states=4", "conductor.stride=3", "conductor.dim=8", "conductor.dim_mults=(1, 2)",
        "conductor.num_steps=8", "plan.sampler_steps=4", "model.hidden=16", "model.critic_hidden=16",
        "model.time_dim=8", "train.performer.batch_size=512"]


def _line_data(steps: int = 60) -> OfflineData:
    """A point moving 0.1 a step along x: observation [x, y, vx, vy] and desired_goal [5, 0]; reward 0."""
    x = 0.1 * np.arange(steps, dtype=np.float32)
    obs = np.stack([x, np.zeros_like(x), np.ones_like(x), np.zeros_like(x), np.full_like(x, 5.0),
                    np.zeros_like(x)], -1)
    return OfflineData.from_arrays(obs, np.full((steps, 2), 0.5, np.float32), np.zeros(steps, np.float32), [steps],
                                   observation_slices={"observation": slice(0, 4), "desired_goal": slice(4, 6)})


def _agent(data, *overrides, variant="maze2d-umaze"):
    config = apply_overrides(load_config(f"plandq.py:{variant}"), [*overrides])
    state = data.observations[:, :4]
    return METHODS[config.method](config, DatasetInfo.from_data(data), LimitsNormalizer.fit(state))


@pytest.mark.parametrize("maze, antmaze", [("medium", "medium-diverse"), ("large", "large-diverse")])
def test_maze2d_orchestration_distances_are_the_official_antmaze_ones_over_the_cell_ratio(maze, antmaze):
    """A maze2d cell is 1 wide, an AntMaze cell 4: every distance of the official loop (dist_thr 4 Medium / 6 Large,
    too far 7, reached 0.5) is a quarter of AntMaze's, so the goal is handed over 1.0 / 1.5 from it, outside D4RL's
    0.5 reward disk."""
    for member in ("", "-planqq"):
        small, big = (load_config(f"plandq.py:{k}{member}").plan for k in (f"maze2d-{maze}", f"antmaze-{antmaze}"))
        assert big.straight_distance == {"medium": 4.0, "large": 6.0}[maze]
        for key in ("straight_distance", "too_far", "reach"):
            assert small[key] == big[key] / 4


def test_performer_batches_add_the_intrinsic_reward_and_end_where_the_subgoal_is_the_next_state():
    data = _line_data()
    agent = _agent(data, *TINY, "q.subgoal_p=0.5", "q.intrinsic_length=0.5")
    stage = agent.stage("performer")
    batch = jax.tree.map(np.asarray, jax.jit(stage.sample_batch)(stage.prepare(make_store(data)),
                                                                 jax.random.PRNGKey(0), None))
    x, subgoal = batch["input"][:, 0], batch["input"][:, 4:]
    np.testing.assert_allclose(batch["input"][:, 1:4], [[0.0, 1.0, 0.0]] * 512)  # raw state, then the sub-goal
    np.testing.assert_allclose(subgoal[:, 1], 0.0)
    offsets = np.round((subgoal[:, 0] - x) / 0.1).astype(int)  # the relabelled offset o
    assert offsets.min() == 0 and offsets.max() > 6  # o ~ U{0 .. 3 Delta - 1}
    next_x = batch["next_input"][:, 0]
    np.testing.assert_allclose(next_x, np.minimum(x + 0.1, 5.9), atol=1e-6)
    np.testing.assert_allclose(batch["next_input"][:, 4:], subgoal)
    np.testing.assert_allclose(batch["reward"], np.exp(-np.abs(next_x - subgoal[:, 0]) / 0.5), rtol=1e-5)
    np.testing.assert_array_equal(batch["not_done"], (np.abs(next_x - subgoal[:, 0]) > 1e-6).astype(np.float32))
    assert 0 < batch["not_done"].mean() < 1
    np.testing.assert_allclose(batch["action"], 0.5)


def test_conductor_plans_start_at_the_state_and_end_at_the_goal_at_rest():
    data = _line_data()
    agent = _agent(data, *TINY)
    stage = agent.stage("conductor")
    params = stage.export(stage.init(jax.random.PRNGKey(0)))
    states = jnp.array([[0.5, 0.0, 1.0, 0.0], [2.0, 0.0, 1.0, 0.0]])
    plan = np.asarray(agent.plan(params, jax.random.PRNGKey(1), states, jnp.array([[5.0, 0.0], [4.0, 0.0]])))
    assert plan.shape == (2, 4, 4)
    np.testing.assert_allclose(plan[:, 0], states, atol=1e-5)
    np.testing.assert_allclose(plan[:, -1], [[5.0, 0, 0, 0], [4.0, 0, 0, 0]], atol=1e-5)
    batch = stage.sample_batch(stage.prepare(make_store(data)), jax.random.PRNGKey(2), None)
    # 4 states 3 steps apart: x moves 0.3 between them (0.2 into the final observation, which from_arrays repeats),
    # normalised by the limits [0, 5.9] onto [-1, 1]
    moves = np.diff(np.asarray(batch["x"])[..., 0], axis=1) * 5.9 / 2
    np.testing.assert_allclose(moves[:, :2], 0.3, rtol=1e-4)
    assert np.all(np.isclose(moves[:, 2], 0.3, rtol=1e-4) | np.isclose(moves[:, 2], 0.2, rtol=1e-4))


def test_q_conductor_learns_from_k_step_chunks_of_summed_reward_towards_the_normalised_state_k_ahead():
    data = _line_data()
    data = dataclasses.replace(data, rewards=0.01 * np.arange(60, dtype=np.float32))
    agent = _agent(data, "conductor.stride=3", "model.hidden=16", "model.critic_hidden=16", "model.time_dim=8",
                   "plan.num_candidates=4",
                   variant="maze2d-umaze-planqq")
    stage = agent.stage("conductor")
    chunks = jax.tree.map(np.asarray, stage.prepare(make_store(data)))
    t = np.arange(58)  # every start with 3 steps left; the last chunk ends on the final observation
    x = 0.1 * t
    later = np.minimum(x + 0.3, 5.9)
    np.testing.assert_allclose(chunks.inputs, np.stack([x, 0 * x, 1 + 0 * x, 0 * x], -1), atol=1e-6)
    np.testing.assert_allclose(chunks.next_inputs[:, 0], later, atol=1e-6)
    np.testing.assert_allclose(chunks.actions[:, 0], 2 * later / 5.9 - 1, atol=1e-5)  # limits [0, 5.9] -> [-1, 1]
    np.testing.assert_allclose(chunks.rewards, 0.01 * (3 * t + 3), rtol=1e-5)  # r_t + r_{t+1} + r_{t+2}
    np.testing.assert_array_equal(chunks.not_done, 1.0)
    params = {"conductor": stage.export(stage.init(jax.random.PRNGKey(0)))}
    obs = jnp.asarray(data.observations[:5])
    plan = np.asarray(agent.draw_plan(params, jax.random.PRNGKey(1), obs))
    assert plan.shape == (5, 2, 4)
    np.testing.assert_allclose(plan[:, 0], data.observations[:5, :4])
    assert np.all((plan[:, 1, 0] >= 0) & (plan[:, 1, 0] <= 5.9))  # a state inside the data's limits


def _two_way_data(steps: int = 12) -> OfflineData:
    """Ten episodes of a point with zero velocity columns, from x = -0.6 .. 0.6, each start once moving +0.1 a step
    (action 0.5) and once -0.1 (action -0.5): the state alone does not tell the way, a sub-goal ahead does."""
    x = np.concatenate([start + d * 0.1 * np.arange(steps) for start in (-0.6, -0.3, 0.0, 0.3, 0.6) for d in (1, -1)])
    zeros = np.zeros_like(x)
    obs = np.stack([x, zeros, zeros, zeros, np.full_like(x, 5.0), zeros], -1).astype(np.float32)
    actions = np.stack([np.tile(np.repeat([0.5, -0.5], steps), 5), zeros], -1).astype(np.float32)
    return OfflineData.from_arrays(obs, actions, zeros.astype(np.float32), [steps] * 10,
                                   observation_slices={"observation": slice(0, 4), "desired_goal": slice(4, 6)})


def test_diffuser_performer_plans_from_the_state_to_the_subgoal_k_ahead_and_learns_which_way_to_go():
    data = _two_way_data()
    agent = _agent(data, "conductor.num_states=4", "conductor.stride=6", "conductor.dim=8",
                   "conductor.dim_mults=(1, 2)", "conductor.num_steps=8", "plan.sampler_steps=4",
                   "performer.horizon=8", "performer.dim=16", "performer.dim_mults=(1,)", "performer.num_steps=10",
                   "train.performer.batch_size=64", "train.performer.gradient_accumulation=1",
                   "train.performer.learning_rate=1e-3", "train.performer.ema_start=0",
                   "train.performer.ema_every=1", "train.performer.ema_decay=0.9", variant="maze2d-umaze-plandd")
    stage = agent.stage("performer")
    store = stage.prepare(make_store(data))
    x = jax.jit(stage.sample_batch)(store, jax.random.PRNGKey(0), None)["x"]
    np.testing.assert_allclose(np.abs(x[:, 0, :2]), [[0.5, 0.0]] * 64)  # actions in the box [-1, 1] as they are
    np.testing.assert_allclose(np.abs(np.diff(x[..., 2], axis=1)), 0.1 / 1.7, rtol=1e-4)  # limits [-1.7, 1.7]
    mask = np.asarray(agent.performer_conditions(x.shape, x[:, 0, 2:], x[:, 6, 2:]).mask)
    expected = np.zeros(mask.shape, bool)
    expected[:, 0, 2:] = True  # the first state (after the 2 action columns)
    expected[:, 6, 2:4] = True  # the sub-goal's xy, K = 6 steps ahead
    np.testing.assert_array_equal(mask, expected)

    mesh = make_mesh(jax.devices()[:1])
    carry, _ = make_train_chunk(stage, mesh, 1000)(init_carry(stage, 0), put_replicated(store, mesh))
    params = {"performer": stage.export(carry["state"])}
    obs = jnp.zeros((4, 6)).at[:, 0].set(jnp.array([0.0, 0.0, 0.6, -0.6])).at[:, 4].set(5.0)
    subgoal = jnp.zeros((4, 4)).at[:, 0].set(jnp.array([0.6, -0.6, 0.0, 0.0]))
    # one program for both (one compilation): the plan and the action drawn with the same key
    plan, action = jax.tree.map(np.asarray, jax.jit(lambda *a: (agent.performer_plan(*a), agent.perform(*a)))(
        params, jax.random.PRNGKey(1), obs, subgoal))
    np.testing.assert_allclose(plan[:, 0, 2:], np.asarray(agent.normalizer.normalize(obs[:, :4])), atol=1e-6)
    np.testing.assert_allclose(plan[:, 6, 2:4], np.asarray(agent.normalizer.normalize(subgoal))[:, :2], atol=1e-6)
    np.testing.assert_allclose(action, np.clip(plan[:, 0, :2], -1, 1), atol=1e-6)  # the first action
    np.testing.assert_allclose(action[:, 0], [0.5, -0.5, -0.5, 0.5], atol=0.15)  # towards the sub-goal


GYM_TINY = ["conductor.model.dim=8", "conductor.model.dim_mults=(1, 2)", "conductor.value.dim=16",
            "conductor.value.dim_mults=(1, 2)", "conductor.num_states=4", "conductor.stride=2",
            "conductor.plan.candidates=3", "model.hidden=16", "model.critic_hidden=16",
            "train.performer.batch_size=512"]


def _gym_data(steps: int = 40) -> OfflineData:
    """A 3-d state ``[t, 2 - t, (-1)^t] / 10`` and the 2-d action ``[t, -t] / 40``, reward ``t / 100``."""
    t = np.arange(steps, dtype=np.float32)
    obs = np.stack([t, 2 - t, (-1.0) ** t], -1) / 10
    return OfflineData.from_arrays(obs, np.stack([t, -t], -1) / 40, t / 100, [steps // 2, steps // 2],
                                   terminal_last=True)


def _gym_agent(data, *overrides):
    config = apply_overrides(load_config("plandq.py:hopper-medium"), [*GYM_TINY, *overrides])
    return METHODS[config.method].from_data(config, data)


def test_gym_conductor_columns_hold_a_state_and_the_k_actions_from_it_and_invert():
    data = _gym_data()
    agent = _gym_agent(data)
    conductor = agent.conductor
    assert (conductor.jump, conductor.horizon, conductor.transition_dim) == (2, 4, 2 * 2 + 3)
    obs, actions = jnp.asarray(data.observations[None, :8]), jnp.asarray(data.actions[None, :8])
    x = np.asarray(conductor.to_trajectory(obs, actions))[0]
    normalized = np.asarray(agent.normalizer.normalize(np.concatenate([data.actions, data.observations], -1)[:8]))
    np.testing.assert_allclose(x[:, 4:], normalized[::2, 2:], atol=1e-6)  # s_0, s_2, s_4, s_6
    np.testing.assert_allclose(x[:, :4], normalized[:, :2].reshape(4, 4), atol=1e-6)  # [a_2i, a_2i+1]
    back_actions, back_states = conductor.unnormalize(jnp.asarray(x))
    np.testing.assert_allclose(back_states, data.observations[:8:2], atol=1e-5)
    np.testing.assert_allclose(back_actions, data.actions[:8].reshape(4, 4), atol=1e-5)
    expected = np.zeros((4, 7), bool)
    expected[0, 4:] = True  # the first state, after the 2 x 2 actions of its column
    np.testing.assert_array_equal(np.asarray(conductor.conditions(jnp.asarray(x[None])).mask)[0], expected)


def test_gym_performer_batches_relabel_whole_state_subgoals_with_the_cosine_max_reward():
    data = _gym_data()
    agent = _gym_agent(data)
    stage = agent.stage("performer")
    batch = jax.tree.map(np.asarray, jax.jit(stage.sample_batch)(stage.prepare(make_store(data)),
                                                                 jax.random.PRNGKey(0), None))
    state, goal = batch["input"][:, :3], batch["input"][:, 3:]
    t = np.round(state[:, 0] * 10).astype(int)
    reached = data.observations[np.minimum(t + 1, 39)]  # s' (from_arrays: the next row; the last repeats)
    np.testing.assert_allclose(batch["next_input"][:, :3], reached, atol=1e-6)
    scale = np.maximum(np.linalg.norm(goal, axis=-1), np.linalg.norm(reached, axis=-1))
    np.testing.assert_allclose(batch["reward"], t / 100 + np.sum(goal * reached, -1) / scale**2, rtol=1e-4, atol=1e-6)
    last = (t == 19) | (t == 39)  # episode ends (terminal_last): done there only
    np.testing.assert_array_equal(batch["not_done"], (~last).astype(np.float32))
    g = np.round(goal[:, 0] * 10).astype(int)
    assert (g - t).min() == 0 and (g - t).max() > 2  # s_{t + o}, o ~ U{0 .. 2 Delta - 1}
    assert np.all(g <= np.where(t < 20, 20, 39))  # at most the episode's final (next) observation


def test_gym_subgoal_is_the_second_state_of_the_highest_valued_plan():
    data = _gym_data()
    agent = _gym_agent(data)
    plans = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 3, 4, 7)), jnp.float32)
    values = jnp.array([[0.1, 0.9, 0.3], [2.0, -1.0, 1.0]])
    calls = []

    def fake_plan(params, rng, states, candidates):
        calls.append((params, candidates))
        return plans, values

    agent.conductor.plan = fake_plan
    params = {"conductor": "c", "value": "v", "performer": None}
    subgoals = np.asarray(agent.subgoals(params, jax.random.PRNGKey(0), jnp.zeros((2, 3))))
    np.testing.assert_allclose(subgoals[0], agent.conductor.unnormalize(plans[0, 1, 1])[1], atol=1e-6)
    np.testing.assert_allclose(subgoals[1], agent.conductor.unnormalize(plans[1, 0, 1])[1], atol=1e-6)
    assert calls == [({"denoiser": "c", "value": "v"}, 3)]


# The official loop on a toy point: state = goal-free xy, s' = s + 0.1 a; the stand-in conductor's plan[1] is
# s + (g - s) u + 0.4 (u - 0.5) (1, -1) with u ~ U(0, 1) from the plan's key; the stand-in performer heads for the
# sub-goal, a = clip(g' - s, -1, 1).
RULES = dict(too_far=1.2, reach=0.15, straight_distance=0.5, retries=2, replan_every=4)


def _fake_plan(params, key, states, goals):
    u = jax.random.uniform(key, (states.shape[0], 1))
    subgoal = states + (goals - states) * u + 0.4 * (u - 0.5) * jnp.array([1.0, -1.0])
    return jnp.stack([states, subgoal, subgoal, goals], axis=1)


def _fake_performer(params, key, obs, subgoal):
    return jnp.clip(subgoal - obs[:, :2], -1.0, 1.0)


def _reference_choose(state, xy, goal, rng_plan, due):
    """The official rules for a new sub-goal in every ``due`` environment (plain Python); environment ``i``'s draw
    ``j`` comes from key ``fold_in(split(rng_plan, N)[i], j)``."""
    keys = jax.random.split(rng_plan, len(xy))
    for i in np.flatnonzero(due):
        to_goal = np.linalg.norm(xy[i] - goal[i])
        if to_goal <= RULES["straight_distance"]:
            state["subgoal"][i], state["refused"][i] = goal[i], False
        else:  # the first acceptable draw, else the last; "refused" once every retry was needed (n_try > 5)
            for retries in range(RULES["retries"] + 1):
                draw = np.asarray(_fake_plan(None, jax.random.fold_in(keys[i], retries), jnp.asarray(xy[i:i + 1]),
                                             jnp.asarray(goal[i:i + 1])))[0, 1]
                distance = np.linalg.norm(draw - xy[i])
                if not (distance > RULES["too_far"] or distance <= RULES["reach"]
                        or np.linalg.norm(draw - goal[i]) > to_goal):
                    break
            state["subgoal"][i], state["refused"][i] = draw, retries >= RULES["retries"]
        state["age"][i] = 0


def _reference_step(state, xy, goal, rng_plan):
    """One step of every environment: new sub-goals where due, then the performer's action."""
    reached = np.linalg.norm(xy - state["subgoal"], axis=-1) <= RULES["reach"]
    due = (state["age"] >= RULES["replan_every"]) | (reached & ~state["refused"])
    _reference_choose(state, xy, goal, rng_plan, due)
    action = np.clip(state["subgoal"] - xy, -1.0, 1.0)
    state["age"] = state["age"] + 1
    return action


@pytest.mark.parametrize("subgoal_batch", [0, 4])  # 4: the environments due are planned 4 at a time on CPU
def test_orchestration_matches_a_plain_python_reference_of_the_official_loop(subgoal_batch):
    n, steps = 6, 80
    info = DatasetInfo(dataset_id="toy/point-v0", observation_size=4, action_size=2,
                       observation_slices={"observation": (0, 2), "desired_goal": (2, 4)}, ref_min_score=None,
                       ref_max_score=None, env_spec=None, eval_env_spec=None, action_low=(-1.0, -1.0),
                       action_high=(1.0, 1.0))
    config = apply_overrides(load_config("plandq.py:maze2d-umaze"),
                             [*TINY, *(f"plan.{k}={v}" for k, v in RULES.items()),
                              f"plan.subgoal_batch={subgoal_batch}"])
    agent = PlanDQ(config, info, LimitsNormalizer.fit(np.random.default_rng(0).normal(size=(10, 2))))
    agent.plan, agent.perform = _fake_plan, _fake_performer
    policy = agent.policy()
    rng = np.random.default_rng(1)
    xy = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    goal = np.tile(np.array([[1.5, 1.0]], np.float32), (n, 1))
    params = {"conductor": None, "performer": None}
    act = jax.jit(policy.act)
    state = policy.init(params, jax.random.PRNGKey(0), jnp.asarray(np.concatenate([xy, goal], -1)))
    reference = {"subgoal": np.zeros((n, 2), np.float32), "age": np.zeros(n, int), "refused": np.zeros(n, bool)}
    _reference_choose(reference, xy, goal, jax.random.PRNGKey(0), np.ones(n, bool))  # the first sub-goals, in init
    np.testing.assert_allclose(state["subgoal"], reference["subgoal"], atol=1e-6)
    np.testing.assert_allclose(policy.planned_states(state)[:, 1], reference["subgoal"], atol=1e-6)
    replans = refusals = 0
    for t in range(steps):
        key = jax.random.fold_in(jax.random.PRNGKey(2), t)
        obs = jnp.asarray(np.concatenate([xy, goal], -1))
        action, state = act(params, state, obs, jnp.int32(t), key)
        expected = _reference_step(reference, xy, goal, jax.random.split(key)[0])
        np.testing.assert_allclose(action, expected, atol=1e-5)
        np.testing.assert_array_equal(state["age"], reference["age"])
        np.testing.assert_array_equal(state["refused"], reference["refused"])
        replans += int(np.sum(reference["age"] == 1))
        refusals += int(np.sum(reference["refused"]))
        xy = (xy + 0.1 * np.asarray(action)).astype(np.float32)
    assert replans > n * steps / RULES["replan_every"] and refusals > 0  # early replans and refused draws happened
    assert np.all(np.linalg.norm(xy - goal, axis=-1) < 0.3)  # every point ends near the goal
