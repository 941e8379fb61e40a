"""Diffuser: overfitting a handful of trajectories, exact inpainting of start and goal, the value guide's gradient,
the official maze controller, and the behaviour-cloning baseline."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.agents import BC, Diffuser
from diffrl.agents.diffuser import MazePlanPolicy
from diffrl.config import apply_overrides, config_from_json, config_to_json, load_config
from diffrl.data import OfflineData, load_dataset, make_store
from diffrl.train.loop import init_carry, make_train_chunk
from diffrl.train.pipeline import with_later_keys
from diffrl.train.sharding import make_mesh, put_replicated
from synthetic import write_pointmaze_dataset

# The value stage trains with the plain fields of train (train.learning_rate=2e-3 here) updated by train.value.
SMALL = ["task.horizon=16", "diffusion.num_steps=20", "model.dim=16", "model.dim_mults=(1, 2)",
         "value.dim=16", "value.dim_mults=(1, 2)", "train.batch_size=16", "train.gradient_accumulation=1",
         "train.learning_rate=2e-3", "train.ema_start=0", "train.ema_every=1",
         "train.ema_decay=0.9", "diffusion.use_padding=false", "plan.candidates=4"]


def fit(method, data, steps: int, stage: str = "denoiser", upstream=None, seed: int = 0):
    """Train the stage ``stage`` of ``method`` on ``data`` for ``steps`` steps on one device with the training
    loop's chunk; returns ``(exported parameters, per-step metrics)``."""
    stage = method.stage(stage, upstream)
    mesh = make_mesh(jax.devices()[:1])
    train_data = put_replicated(stage.prepare(make_store(method.preprocess(data))), mesh)
    carry, metrics = make_train_chunk(stage, mesh, steps)(init_carry(stage, seed), train_data)
    return stage.export(carry["state"]), jax.device_get(metrics)


def untrained(method, stage: str = "denoiser", seed: int = 0):
    """The exported parameters of a freshly initialised stage."""
    stage = method.stage(stage)
    return stage.export(jax.jit(stage.init)(jax.random.PRNGKey(seed)))


def four_trajectories(horizon=16, rewards_from_level=False):
    """Four episodes of ``horizon + 1`` steps, 2-D states on distinct smooth curves, actions their velocities."""
    t = np.linspace(0, 1, horizon + 1)
    obs, act, rew = [], [], []
    for k in range(4):
        angle = k * np.pi / 2
        states = np.stack([np.cos(angle) * t + 0.3 * k, np.sin(angle) * t - 0.2 * k], -1)
        obs.append(states)
        act.append(np.gradient(states, axis=0))
        rew.append(states[:, 0] if rewards_from_level else np.zeros(horizon + 1))
    return (np.concatenate(obs), np.concatenate(act), np.concatenate(rew)), [horizon + 1] * 4


def reward_config(*extra):
    return apply_overrides(load_config("configs/diffuser.py:hopper-medium"),
                           [*SMALL, "value.enabled=false", "diffusion.action_weight=1.0", *extra])


def test_a_small_model_overfits_four_trajectories_and_replays_them_from_their_start():
    (obs, act, rew), lengths = four_trajectories()
    data = OfflineData.from_arrays(obs, act, rew, lengths)
    agent = Diffuser.from_data(reward_config(), data)
    assert agent.stage_names() == ("denoiser",)
    denoiser, metrics = fit(agent, data, steps=1000)  # rms.max() 0.02 at 1,000 steps (and 0.75 at 500)
    loss = metrics["denoiser/loss"]
    assert loss[-100:].mean() < 0.15 * loss[:20].mean()
    starts = obs[np.arange(4) * 17]
    truth = np.stack([obs[k * 17 : k * 17 + 16] for k in range(4)])
    planner = jax.jit(agent.plan)

    def plan(denoiser):  # host copies: the trained and the untrained parameters share one compiled planner
        return planner({"denoiser": jax.device_get(denoiser)}, jax.random.PRNGKey(0), jnp.asarray(starts))[0][:, 0]

    _, states = agent.unnormalize(plan(denoiser))
    rms = np.sqrt(np.mean((np.asarray(states) - truth) ** 2, axis=(1, 2)))
    random_plans = plan(untrained(agent, seed=5))
    rms_untrained = np.sqrt(np.mean((np.asarray(agent.unnormalize(random_plans)[1]) - truth) ** 2, axis=(1, 2)))
    assert rms.max() < 0.1 and rms_untrained.min() > 0.3, (rms, rms_untrained)


@pytest.fixture(scope="module")
def maze_agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    write_pointmaze_dataset(root)
    config = apply_overrides(load_config("configs/diffuser.py:pointmaze-umaze"),
                             ["task.horizon=16", "diffusion.num_steps=8", "model.dim=8", "model.dim_mults=(1,)"])
    return Diffuser.from_data(config, load_dataset(config.dataset.id, root=root))


@pytest.fixture(scope="module")
def maze_params(maze_agent):
    """Untrained parameters of ``maze_agent``'s denoiser (and of any agent with its model settings)."""
    return {"denoiser": untrained(maze_agent)}


def test_inpainted_plans_start_at_the_state_and_end_at_the_goal_in_one_program(maze_agent, maze_params):
    agent, params = maze_agent, maze_params
    traces = []

    def plan(params, rng, states, goals):
        traces.append(1)
        return agent.plan(params, rng, states, goals)[0][:, 0]

    planner = jax.jit(plan)
    rng = np.random.default_rng(0)
    for seed in range(2):
        states = np.stack([rng.uniform(-0.8, 0.8, 64), np.full(64, -1.0), rng.uniform(-1, 1, 64),
                           np.zeros(64)], -1).astype(np.float32)
        goals = np.stack([rng.uniform(-0.8, 0.8, 64), np.full(64, -1.0)], -1).astype(np.float32)
        actions, plan_states = agent.unnormalize(planner(params, jax.random.PRNGKey(seed), states, goals))
        assert plan_states.shape == (64, 16, 4) and actions.shape == (64, 16, 2)
        np.testing.assert_allclose(plan_states[:, 0], states, atol=1e-5)
        np.testing.assert_allclose(plan_states[:, -1, :2], goals, atol=1e-5)
        np.testing.assert_allclose(plan_states[:, -1, 2:], 0.0, atol=1e-5)
    assert len(traces) == 1  # a batch of 64 plans is one compiled program, traced once


def test_bfloat16_compute_dtype_plans_in_float32_with_its_constraints_exact(maze_agent, maze_params):
    """``compute_dtype=bfloat16``: the U-Net computes in bfloat16, the sampler and its inpainting stay float32."""
    config = maze_agent.config.copy_and_resolve_references()
    config.compute_dtype = "bfloat16"
    half = Diffuser(config, maze_agent.info, maze_agent.normalizer)
    assert half.net.dtype == jnp.bfloat16 and maze_agent.net.dtype is None
    states = np.tile(np.array([[0.3, -1.0, 0.0, 0.0]], np.float32), (8, 1))
    goals = np.tile(np.array([[-0.5, -1.0]], np.float32), (8, 1))  # inside the fixture maze's range
    plans = {name: jax.jit(agent.plan)(maze_params, jax.random.PRNGKey(0), states, goals)[0][:, 0]
             for name, agent in (("float32", maze_agent), ("bfloat16", half))}
    assert plans["bfloat16"].dtype == jnp.float32
    _, plan_states = half.unnormalize(plans["bfloat16"])
    np.testing.assert_allclose(plan_states[:, 0], states, atol=1e-5)
    np.testing.assert_allclose(plan_states[:, -1, :2], goals, atol=1e-5)
    assert 0 < np.abs(plans["bfloat16"] - plans["float32"]).max() < 0.5


def test_a_run_saved_before_compute_dtype_reads_float32_and_takes_the_override():
    saved = json.loads(config_to_json(load_config("configs/diffuser.py:pointmaze-umaze")))
    del saved["compute_dtype"]  # a workdir written before the key existed
    old = with_later_keys(config_from_json(json.dumps(saved)))
    assert old.compute_dtype == "float32"
    assert apply_overrides(old, ["compute_dtype=bfloat16"]).compute_dtype == "bfloat16"


def test_maze_controller_is_the_official_one(maze_agent):
    agent = maze_agent
    policy = MazePlanPolicy(agent)
    rng = np.random.default_rng(1)
    states = rng.uniform(-0.5, 0.5, (3, 16, 4)).astype(np.float32)
    plan = agent.to_trajectory(jnp.asarray(states), jnp.zeros((3, 16, 2)))
    obs = np.concatenate([rng.uniform(-0.5, 0.5, (3, 4)), np.zeros((3, 4))], -1).astype(np.float32)
    _, decoded = agent.unnormalize(plan)
    for age in (0, 7, 14, 15, 40):
        action, new_state = policy.act(None, {"plan": plan, "first_plan": plan, "age": jnp.asarray(age)}, obs,
                                       jnp.asarray(age), jax.random.PRNGKey(0))
        waypoint = np.array(decoded[:, min(age + 1, 15)])
        if age + 1 >= 16:
            waypoint[:, 2:] = 0.0  # plan_maze2d.py: past the plan's end, the last state at rest
        expected = (waypoint[:, :2] - obs[:, :2]) + (waypoint[:, 2:4] - obs[:, 2:4])
        np.testing.assert_allclose(action, expected, atol=1e-5)
        assert int(new_state["age"]) == age + 1


def test_warm_started_replanning_keeps_start_and_goal_exact(maze_agent, maze_params):
    """Sec. 5.4: every ``replan_every`` steps the previous plan, shifted by the steps taken, is re-noised to
    ``warm_start_steps`` and denoised from there, inpainted with the current state and the goal."""
    config = apply_overrides(maze_agent.config.copy_and_resolve_references(),
                             ["plan.replan_every=2", "plan.warm_start_steps=3"])
    agent, params = Diffuser(config, maze_agent.info, maze_agent.normalizer), maze_params
    policy = agent.policy()
    obs = np.array([[-0.5, -1.0, 0.1, 0.0, -0.5, -1.0, 0.6, -1.0]] * 3, np.float32)
    act = jax.jit(policy.act)
    # jnp copies: on CPU a jitted call may read a NumPy argument's memory after it returns (async dispatch),
    # so the in-place moves of ``obs`` below must not reach a call still running.
    policy_state = jax.jit(policy.init)(params, jax.random.PRNGKey(1), jnp.array(obs))
    expected_start = obs[:, :4].copy()
    for t, age in zip(range(4), (1, 2, 1, 2)):
        obs[:, 0] += 0.05
        _, policy_state = act(params, policy_state, jnp.array(obs), jnp.asarray(t), jax.random.PRNGKey(t))
        if t == 2:  # replanned from the current state
            expected_start = obs[:, :4].copy()
        _, states = agent.unnormalize(policy_state["plan"])
        np.testing.assert_allclose(states[:, 0], expected_start, atol=1e-5)
        np.testing.assert_allclose(states[:, -1, :2], obs[:, 6:8], atol=1e-5)
        assert int(policy_state["age"]) == age


def test_value_gradient_points_to_higher_return_and_guides_plans_there():
    """Reward = the first state coordinate, so J increases with it: grad J must point along +x, and guided plans
    must reach larger x than the data from the same starts (which the unguided model replays, see above)."""
    (obs, act, _), lengths = four_trajectories()
    rng = np.random.default_rng(0)
    offsets = np.repeat(rng.uniform(-1, 1, (40, 1)), 17, axis=0)
    obs = np.tile(obs, (10, 1)) + np.concatenate([offsets, np.zeros_like(offsets)], -1)
    act = np.tile(act, (10, 1))
    data = OfflineData.from_arrays(obs, act, obs[:, 0], lengths * 10)
    config = reward_config("value.enabled=true", "value.discount=0.9", "value.termination_penalty=0.0",
                           "plan.guide_scale=10.0", "plan.t_stopgrad=0", "model.dim=8")
    agent = Diffuser.from_data(config, data)
    assert agent.stage_names() == ("denoiser", "value")
    denoiser, _ = fit(agent, data, steps=200)
    # J is a stage of its own (train_values.py). At 200 steps sum |dJ/dy| came within 4% of sum dJ/dx, and which
    # was larger depended on float rounding (XLA flags); at 400 steps dJ/dx is 1.6 times larger.
    value, metrics = fit(agent, data, steps=400, stage="value")
    loss = metrics["value/loss"]
    assert loss[-50:].mean() < 0.25 * loss[:20].mean()
    params = {"denoiser": denoiser, "value": value}
    value_of = jax.jit(lambda trajectories: agent.value(params, trajectories, jnp.zeros(len(trajectories), jnp.int32)))
    x = agent.to_trajectory(jnp.asarray(obs[:16][None]), jnp.asarray(act[:16][None]))
    grad = jax.jit(jax.grad(lambda y: value_of(y).sum()))(x)[0]
    dx = grad[:, agent.action_dim]  # d J / d (normalised x_t)
    assert float(dx.sum()) > 0 and float(jnp.abs(grad[:, agent.action_dim + 1]).sum()) < float(dx.sum()), grad
    # The receding-horizon policy (official GuidedPolicy): 4 guided plans per state, the first action of the one
    # its last guide call valued highest (the sampler's test checks those values by hand)
    starts = np.arange(8) * 17
    policy, current = agent.policy(), jnp.asarray(obs[starts])

    @jax.jit
    def act_and_plan(rng):  # one program, so that both see the same plans (guide_scale 10 amplifies rounding)
        actions, plans = policy.act(params, policy.init(params, None, current), current, jnp.asarray(0), rng)
        return actions, plans, agent.plan(params, rng, current, candidates=4)

    actions, plans, (same_plans, values) = act_and_plan(jax.random.PRNGKey(3))
    plans, actions = np.asarray(plans), np.asarray(actions)
    np.testing.assert_allclose(same_plans, plans, atol=1e-5)
    best = plans[np.arange(8), np.asarray(values).argmax(axis=1)]
    np.testing.assert_allclose(actions, agent.unnormalize(best)[0][:, 0], atol=1e-5)
    guided_x = float(agent.unnormalize(plans)[1][..., 0].mean())
    data_x = float(np.mean([obs[s : s + 16, 0] for s in starts]))  # what the unguided model replays
    assert guided_x > data_x + 0.05, (guided_x, data_x)


def test_behaviour_cloning_recovers_a_linear_policy():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (2000, 3)).astype(np.float32)
    act = np.stack([0.5 * obs[:, 0] - 0.3 * obs[:, 1], 0.4 * obs[:, 2]], -1)
    data = OfflineData.from_arrays(obs, act, np.zeros(2000), [200] * 10)
    config = load_config("configs/bc.py:hopper-medium")
    agent = BC.from_data(config, data)
    policy_params, metrics = fit(agent, data, steps=500, stage="policy")
    loss = metrics["policy/loss"]
    assert loss[-20:].mean() < 2e-3 < loss[0]
    actions, _ = agent.policy().act({"policy": policy_params}, (), jnp.asarray(obs[:5]), 0, None)
    np.testing.assert_allclose(actions, act[:5], atol=0.1)


def test_multi2d_evaluates_in_the_data_map_with_a_new_goal_every_episode(maze_agent):
    from diffrl.envs.registry import make_env
    from diffrl.eval.evaluate import eval_env_spec

    spec, kwargs = eval_env_spec(maze_agent)
    single = make_env(spec, **kwargs)
    config = apply_overrides(maze_agent.config.copy_and_resolve_references(), ["eval.multi_goal=true"])
    spec, kwargs = eval_env_spec(Diffuser(config, maze_agent.info, maze_agent.normalizer))
    multi = make_env(spec, **kwargs)
    assert len(single.layout.goal_cells) == 1 and len(multi.layout.goal_cells) == len(multi.layout.reset_cells) > 1
    assert (multi.reset_target, multi.continuing_task, multi.max_episode_steps) == (False, True, 300)
    assert multi.max_episode_steps == single.max_episode_steps
