"""Diffusion-QL: the critic target with and without max-Q backup against a plain computation, the policy loss's
terms, the EMA held before its start, and a one-step bandit that Diffusion-QL solves and behaviour cloning cannot."""

import dataclasses

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.agents import EMA, METHODS, DatasetInfo, DiffusionQL
from diffrl.config import apply_overrides, load_config
from diffrl.data import IdentityNormalizer, OfflineData, make_store
from diffrl.experts.antmaze_data import EVAL_MAPS
from diffrl.train.loop import init_carry, make_train_chunk
from diffrl.train.sharding import make_mesh, put_replicated

TINY = ["model.hidden=32", "model.critic_hidden=32", "model.time_dim=8", "train.batch_size=64",
        "train.ema_start=0"]


def _config(*overrides):
    config = load_config("dql.py:hopper-medium")  # flat observations, raw states
    return apply_overrides(config, [*TINY, *overrides])


def _bandit(num: int = 256, seed: int = 0) -> OfflineData:
    """One-step episodes from s = 0: the behaviour policy picks a ~ N(-0.6, 0.05) or N(+0.6, 0.05) with equal
    probability; only the positive mode is rewarded (r = 1). The behaviour mean, BC's regression target, gets 0."""
    rng = np.random.default_rng(seed)
    modes = np.where(rng.random(num) < 0.5, -0.6, 0.6)
    actions = np.clip(modes + 0.05 * rng.standard_normal(num), -1, 1)[:, None].astype(np.float32)
    rewards = (actions[:, 0] > 0).astype(np.float32)
    return OfflineData.from_arrays(np.zeros((num, 1), np.float32), actions, rewards, np.ones(num, int),
                                   terminal_last=True)


def _method(data, *overrides):
    config = _config(*overrides)
    return DiffusionQL(config, DatasetInfo.from_data(data), IdentityNormalizer.fit(data.observations))


@pytest.mark.parametrize("critics", ["twin", "ensemble"])
def test_critic_target_takes_each_critics_max_over_sampled_actions_then_the_minimum_or_one_per_critic(critics):
    """Max-Q backup with 3 samples (without it the same code takes one sample); twin critics share the minimum,
    an ensemble scored by its lower confidence bound gives each critic its own target."""
    data = _bandit(32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    ensemble = ["q.num_critics=4", "q.lcb_coef=2.0"] if critics == "ensemble" else []
    agent = _method(data, "q.max_q_backup=True", "q.backup_samples=3", "q.discount=0.9", *ensemble)
    stage = agent.stage("ql")
    state = stage.init(keys[0])
    # perturb the targets so that they differ from the online networks and from each other
    state["critic"] = state["critic"].replace(ema_params=jax.tree.map(
        lambda p: p + 0.3 * jax.random.normal(keys[1], p.shape), state["critic"].ema_params))
    batch = stage.sample_batch(stage.prepare(make_store(data)), keys[2], state)
    batch["not_done"] = jnp.asarray(np.arange(64) % 2, jnp.float32)  # half terminal, half not
    next_inputs = np.repeat(np.asarray(batch["next_input"]), 3, axis=0)  # each next state's 3 samples in a row
    actions = agent.learner.sample_actions(state["actor"].ema_params, keys[3], jnp.asarray(next_inputs))
    q = np.stack([np.asarray(agent.learner.critic.apply(jax.tree.map(lambda p, j=j: p[j], state["critic"].ema_params),
                                                next_inputs, actions)).reshape(64, 3)
                  for j in range(agent.config.q.num_critics)])
    best = q.max(-1)  # [E, B]: each critic's maximum over the samples
    bootstrap = best.min(0) if critics == "twin" else best
    expected = np.asarray(batch["reward"]) + 0.9 * np.asarray(batch["not_done"]) * bootstrap
    np.testing.assert_allclose(stage.target_values(state, batch, keys[3]), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(actions) <= 1.0)
    assert not np.allclose(best[0], q[0, :, 0])  # the maximum is not the first sample's value
    score = q[:, :, 0].min(0) if critics == "twin" else q[:, :, 0].mean(0) - 2.0 * q[:, :, 0].std(0, ddof=1)
    np.testing.assert_allclose(agent.learner.q_score(jnp.asarray(q[:, :, 0])), score, rtol=1e-5, atol=1e-6)


def test_policy_loss_is_the_denoising_loss_minus_eta_times_the_normalised_q_of_a_reparameterised_action():
    data = _bandit(32)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    agent = _method(data, "q.eta=2.5")
    stage = agent.stage("ql")
    state = stage.init(keys[0])
    batch = stage.sample_batch(stage.prepare(make_store(data)), keys[1], state)
    params, critic = state["actor"].params, state["critic"].params
    loss, terms = stage.actor_loss(params, critic, batch, keys[2])
    np.testing.assert_allclose(loss, terms["bc_loss"] + 2.5 * terms["q_loss"], rtol=1e-6)
    # the same draws as the loss: its split of keys[2]
    _, rng_sample, _ = jax.random.split(keys[2], 3)
    actions = agent.learner.sample_actions(params, rng_sample, batch["input"])
    q = np.asarray(agent.learner.q_values(critic, batch["input"], actions))
    candidates = [-q[0].mean() / np.abs(q[1]).mean(), -q[1].mean() / np.abs(q[0]).mean()]
    assert min(abs(terms["q_loss"] - c) for c in candidates) < 1e-5 * max(map(abs, candidates))
    # the Q term reaches the policy through the sampled action (whole reverse chain), not only the BC term
    q_grad = jax.grad(lambda p: stage.actor_loss(p, critic, batch, keys[2])[1]["q_loss"])(params)
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(q_grad))) > 0


def test_ema_held_at_its_initial_value_before_its_start():
    params, initial = {"w": jnp.ones(())}, {"w": jnp.zeros(())}
    held, copied = EMA(0.5, every=1, start=10, hold_before_start=True), EMA(0.5, every=1, start=10)
    assert float(held(jnp.int32(3), params, initial)["w"]) == 0.0
    assert float(copied(jnp.int32(3), params, initial)["w"]) == 1.0
    assert float(held(jnp.int32(10), params, initial)["w"]) == 0.5


def test_diffusion_ql_takes_the_rewarded_mode_of_a_bimodal_bandit_where_behaviour_cloning_cannot():
    data = _bandit()
    # BC's answer, the behaviour mean, is the unrewarded middle between the modes
    assert abs(float(np.mean(data.actions))) < 0.1
    agent = _method(data, "train.learning_rate=1e-3", "q.critic_learning_rate=1e-3")
    stage = agent.stage("ql")
    mesh = make_mesh(jax.devices()[:1])
    train_data = put_replicated(stage.prepare(make_store(data)), mesh)
    carry, _ = make_train_chunk(stage, mesh, 500)(init_carry(stage, 0), train_data)
    params = stage.export(carry["state"])
    q = agent.learner.q_values(params["critic"], jnp.zeros((2, 1)), jnp.array([[0.6], [-0.6]]))
    np.testing.assert_allclose(q, [[1.0, 0.0], [1.0, 0.0]], atol=0.2)  # Q = r in a one-step task
    # the policy itself (no selection by Q) has moved onto the rewarded mode, and acting keeps to it
    sampled = agent.learner.sample_actions(params["actor"], jax.random.PRNGKey(2), jnp.zeros((1000, 1)))
    assert float(jnp.mean(sampled > 0)) > 0.9
    assert float(jnp.mean(agent.learner.choose(params, jax.random.PRNGKey(3), jnp.zeros((200, 1))) > 0)) > 0.95


def test_antmaze_follows_d4rls_task_position_then_observation_and_the_evaluation_goals_rewards():
    """The paper's AntMaze protocol on Minari's files: the state is D4RL's [x, y, obs] (Minari's observation drops
    x, y, its achieved_goal), no goal is read, and rewards and terminals mark the one evaluation goal within 0.5
    (D4RL's relabel_antmaze_rewards.py), whatever goal each episode was collected for."""
    slices = {"observation": slice(0, 4), "achieved_goal": slice(4, 6), "desired_goal": slice(6, 8)}
    info = DatasetInfo(dataset_id="toy/ant-v0", observation_size=8, action_size=2,
                       observation_slices={k: (v.start, v.stop) for k, v in slices.items()},
                       ref_min_score=None, ref_max_score=None, env_spec=None, eval_env_spec=None,
                       action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    config = apply_overrides(load_config("dql.py:antmaze-medium-diverse"), TINY)
    assert tuple(config.task.state_key) == ("achieved_goal", "observation") and config.task.goal_key is None
    np.testing.assert_array_equal(info.columns(config.task.state_key), [4, 5, 0, 1, 2, 3])
    agent = DiffusionQL(config, info, IdentityNormalizer.fit(np.zeros((2, 8))))
    np.testing.assert_array_equal(agent.inputs(jnp.arange(8.0)[None]), [[4, 5, 0, 1, 2, 3]])
    assert agent.learner.input_dim == 6
    # Medium's evaluation goal cell (6, 6): centre (4 * 6.5 - 16, 16 - 4 * 6.5) = (10, -10)
    xy = np.array([[0.0, 0.0], [9.7, -9.7], [10.3, -10.3], [10.0, -9.4], [0.0, 0.0], [10.0, -10.4]])
    obs = np.zeros((6, 8), np.float32)
    obs[:, 4:6], obs[:, 6:8] = xy, [2.0, 2.0]  # collected for another goal: its stored rewards are all 1
    data = OfflineData.from_arrays(obs, np.zeros((6, 2)), np.ones(6), [3, 3], observation_slices=slices)
    spec = gym.envs.registration.EnvSpec("AntMaze_Medium_Diverse_GR-v4", kwargs={"maze_map": EVAL_MAPS["medium"]})
    relabelled = agent.preprocess(dataclasses.replace(data, eval_env_spec=spec))
    # r_t from o_{t+1}: rows 0-1 see (9.7, -9.7) and (10.3, -10.3), 0.42 away; row 2 sees (10, -9.4), 0.6 away;
    # row 3 sees (0, 0); row 4 sees (10, -10.4), 0.4 away; the last row's next observation repeats it
    np.testing.assert_array_equal(relabelled.rewards, [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(relabelled.terminations, [True, True, False, False, True, True])
    # PlanDQ's Q-Performer reads the same task (official main_Antmaze.py: D4RL's env.get_dataset())
    plandq = apply_overrides(load_config("plandq.py:antmaze-medium-diverse"), ["task.subgoal=(0, 4)"])
    planner = METHODS[plandq.method](plandq, info, IdentityNormalizer.fit(np.zeros((2, 6))))
    np.testing.assert_array_equal(planner.preprocess(dataclasses.replace(data, eval_env_spec=spec)).rewards,
                                  relabelled.rewards)
    stored = apply_overrides(load_config("dql.py:antmaze-medium-diverse"), [*TINY, "dataset.rewards=stored"])
    assert DiffusionQL(stored, info, agent.normalizer).preprocess(data).rewards.tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="env spec"):
        agent.preprocess(data)
    with pytest.raises(ValueError, match="no such key"):
        agent.preprocess(dataclasses.replace(OfflineData.from_arrays(obs, np.zeros((6, 2)), np.ones(6), [6]),
                                             eval_env_spec=spec))
