"""SAC (the expert trainer of the locomotion datasets): its density and losses against hand computations, one
update's order, learning Pendulum-v1 on the host backend with a resume, and the locomotion datasets it makes."""

import dataclasses
import json
import os

import distrax
import gymnasium as gym
import jax
import jax.numpy as jnp
import minari
import numpy as np
import pytest
from tensorboard_reader import read_scalars

from diffrl.envs.random_walk import RandomWalk1D
from diffrl.experts.locomotion_data import D4RL_REF_SCORES, generate_locomotion_dataset
from diffrl.experts.sac import OGBENCH_SAC, SAC, ReplayBuffer, SACConfig, squashed_gaussian
from diffrl.experts.training import train_sac


def test_squashed_gaussian_log_prob_is_the_change_of_variables_density():
    mean = jnp.asarray([[0.3, -1.2, 0.0], [2.0, 0.5, -0.4]])
    log_std = jnp.asarray([[-0.5, 0.1, -1.0], [0.2, -2.0, 0.4]])
    action, log_prob = squashed_gaussian(mean, log_std, jax.random.PRNGKey(0))
    reference = distrax.Transformed(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
                                    distrax.Block(distrax.Tanh(), 1))
    assert np.all(np.abs(action) < 1)
    # distrax's exact Jacobian vs SB3's log(1 - tanh^2 + 1e-6): equal up to the 1e-6 guard
    np.testing.assert_allclose(log_prob, reference.log_prob(action), rtol=1e-4, atol=1e-3)


def _dense(layer, x):
    return x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])


@pytest.fixture(scope="module")
def tiny():
    """A SAC of one 5-unit layer on 3-d observations and 2-d actions, a buffer of 6 random transitions."""
    sac = SAC(SACConfig(hidden=(5,), batch_size=4, buffer_size=6, discount=0.9, tau=0.25, initial_alpha=0.7), 3, 2)
    state = sac.init(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    obs, next_obs = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    terminated = np.array([False, True, False, False, True, False])
    buffer = state.buffer.add(obs, rng.uniform(-1, 1, (6, 2)), rng.normal(size=6), next_obs, terminated, terminated)
    return sac, state.replace(buffer=buffer)


def test_critic_actor_and_temperature_losses_by_hand(tiny):
    sac, state = tiny
    batch = state.buffer.sample(jax.random.PRNGKey(2), 4)
    def twin(params, obs, action):  # the two critics' stacked layers, one at a time
        layers = [jax.tree.map(lambda x, i=i: x[i], params) for i in range(2)]
        return np.stack([_dense(p["q"], np.maximum(_dense(p["hidden_0"], np.concatenate([obs, action], -1)), 0))[:, 0]
                         for p in layers])

    critic_params, target_params = state.critic.params, state.critic.ema_params
    alpha, rng = 0.7, jax.random.PRNGKey(3)
    next_action, next_log_prob = map(np.asarray, sac.sample_action(state.actor.params, batch["next_observations"], rng))
    y = np.asarray(batch["rewards"]) + 0.9 * (1 - np.asarray(batch["terminated"])) * (
        twin(target_params, batch["next_observations"], next_action).min(0) - alpha * next_log_prob)
    q = twin(critic_params, batch["observations"], batch["actions"])
    loss, _ = sac.critic_loss(critic_params, target_params, state.actor.params, alpha, batch, rng)
    np.testing.assert_allclose(loss, 0.5 * ((q - y) ** 2).mean(1).sum(), rtol=1e-5)

    # the actor's mean and log std heads written out; a = tanh(mean + std * noise) with the same noise draw
    actor = state.actor.params
    hidden = np.maximum(_dense(actor["hidden_0"], np.asarray(batch["observations"])), 0)
    log_std, mean = np.clip(_dense(actor["log_std"], hidden), -20, 2), _dense(actor["mean"], hidden)
    noise = np.asarray(jax.random.normal(rng, mean.shape))
    u = mean + np.exp(log_std) * noise
    a = np.tanh(u)
    log_prob = (-0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi) - np.log(1 - a**2 + 1e-6)).sum(-1)
    loss, aux = sac.actor_loss(actor, critic_params, alpha, batch["observations"], rng)
    # float32 against float64: log(1 - a^2 + 1e-6) loses digits where |a| is near 1
    np.testing.assert_allclose(loss, (alpha * log_prob - twin(critic_params, batch["observations"], a).min(0)).mean(),
                               rtol=2e-3)
    np.testing.assert_allclose(aux["log_prob"], log_prob.mean(), rtol=2e-3)

    # temperature: d/d(log alpha) of -log alpha * (log pi - |A|) is -(mean log pi - |A|) (target entropy -2)
    grad = jax.grad(lambda la: sac.alpha_loss(la, jnp.asarray(log_prob))[0])(jnp.log(0.7))
    np.testing.assert_allclose(grad, -(log_prob.mean() - 2.0), rtol=1e-5)


def test_one_update_steps_the_three_losses_then_moves_the_targets_by_tau(tiny):
    sac, state = tiny
    new, metrics = jax.jit(sac.update)(state)
    for name in ("actor", "critic", "log_alpha"):
        assert int(getattr(new, name).step) == 1
    np.testing.assert_allclose(metrics["alpha/value"], 0.7, rtol=1e-6)  # the temperature before its own step
    # Adam's first step moves log alpha by -lr * sign(grad), grad = -(mean log pi - |A|) = entropy + |A|
    np.testing.assert_allclose(new.log_alpha.params - np.log(0.7), -3e-4 * np.sign(metrics["alpha/entropy"] + 2.0),
                               rtol=1e-3)
    jax.tree.map(lambda t, t0, p: np.testing.assert_allclose(t, 0.75 * t0 + 0.25 * p, rtol=1e-5, atol=1e-7),
                 new.critic.ema_params, state.critic.ema_params, new.critic.params)
    assert not jax.tree.all(jax.tree.map(np.allclose, new.actor.params, state.actor.params))


def test_ogbench_settings_initialise_glorot_with_zero_biases_and_small_actor_outputs():
    """OGBench ``default_init(scale)``: kernel ``U(-b, b)``, ``b = sqrt(3 scale / fan_avg)``; biases 0; the actor's
    mean and log std layers at scale 0.01; target entropy ``-|A| / 2``."""
    sac = SAC(dataclasses.replace(OGBENCH_SAC, hidden=(64, 64)), 29, 8)
    state = sac.init(jax.random.PRNGKey(0))
    assert sac.target_entropy == -4.0
    for params, name, fan_in, fan_out, scale in [
            (state.actor.params, "hidden_0", 29, 64, 1.0), (state.actor.params, "hidden_1", 64, 64, 1.0),
            (state.actor.params, "mean", 64, 8, 0.01), (state.actor.params, "log_std", 64, 8, 0.01),
            (state.critic.params, "hidden_0", 37, 64, 1.0), (state.critic.params, "q", 64, 1, 1.0)]:
        kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        bound = np.sqrt(3 * scale / ((fan_in + fan_out) / 2))
        assert np.all(bias == 0) and np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.9 * bound  # uniform over the whole range, not a narrower one
    with pytest.raises(ValueError, match="initialization"):
        SACConfig(initialization="xavier")


def test_replay_buffer_wraps_around_in_insertion_order():
    buffer = ReplayBuffer.create(5, 1, 1)
    for start in (0, 3):
        values = np.arange(start, start + 3, dtype=np.float32)
        buffer = buffer.add(values[:, None], values[:, None], values, values[:, None] + 1, values > 4, values > 3)
    np.testing.assert_array_equal(buffer.rewards, [5, 1, 2, 3, 4])  # row 0 overwritten by the 6th transition
    assert int(buffer.position) == 1 and int(buffer.size) == 5
    np.testing.assert_array_equal(buffer.done, [True, False, False, False, True])
    np.testing.assert_array_equal(buffer.terminated, [True, False, False, False, False])


def test_sac_learns_pendulum_on_the_host_backend_and_resumes(tmp_path, optimized_compilation):
    """Pendulum-v1 (random policy about -1,200 per episode) with a small SAC: above -400 within 4,000 steps;
    the run is split in two calls, the second resuming from the first's checkpoint at step 2,100, mid-episode."""
    config = SACConfig(hidden=(64, 64), learning_rate=1e-3, batch_size=64, learning_starts=500, buffer_size=10_000)
    kwargs = {"config": config, "seed": 0, "backend": "gym", "eval_every": 4000, "eval_episodes": 5, "progress": False}
    first = train_sac("Pendulum-v1", tmp_path, steps=2100, **kwargs)
    assert first.steps == 2100 and int(first.state.buffer.size) == 2100
    run = train_sac("Pendulum-v1", tmp_path, steps=4000, **kwargs)
    assert [step for step, _ in run.evaluations] == [2100, 4000]
    assert run.evaluations[0][1] == first.evaluations[0][1]  # carried over by the checkpoint
    assert run.evaluations[0][1] < -800 and run.evaluations[-1][1] > -400
    assert int(run.state.critic.step) == 4000 - 500  # one update per step after learning_starts, across the resume
    buffer = jax.device_get(run.state.buffer)  # the episode cut by the resume ends (truncated) at its last row
    assert buffer.done[2099] and not buffer.terminated[2099]
    assert buffer.done.sum() == 10 + 1 + 9  # 200-step episodes: 10 whole ones, the cut one, 9 after the resume
    logged = read_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in logged["eval/return"]] == [2100, 4000]
    assert len(logged["episode/return"]) == 10 + 9  # finished episodes only
    with pytest.raises(ValueError, match="other settings"):
        train_sac("Pendulum-v1", tmp_path, steps=6000, **{**kwargs, "config": SACConfig(hidden=(32,))})


def test_locomotion_datasets_follow_the_recipe(tmp_path):
    """hopper-medium-replay and hopper-expert from a 400-step 'expert' (learning starts at 10k: an untrained
    policy): Minari files with the v5 spec, episodes that end exactly once, the collection seeds 123, 124, ...
    replayed by gymnasium, the medium run's replay buffer in order, reference scores and the recipe."""
    common = {"expert_steps": 400, "root": tmp_path / "datasets", "experts_root": tmp_path / "experts",
              "reference_episodes": 3, "progress": False}
    replay = generate_locomotion_dataset("hopper-medium-replay", **common)
    expert = generate_locomotion_dataset("hopper-expert", steps=2500, **common)
    assert replay["recipe"]["medium_eval_return"] >= replay["recipe"]["medium_threshold"]
    cached = json.loads((tmp_path / "experts" / "Hopper-v5" / "expert-gym-seed0" / "reference_scores.json").read_text())
    reference = gym.make("Hopper-v5")
    for summary in (replay, expert):
        dataset = _load(tmp_path / "datasets", summary)
        assert dataset.observation_space == reference.observation_space
        assert dataset.action_space == reference.action_space
        assert dataset.spec.env_spec.id == "Hopper-v5" and dataset.spec.env_spec.max_episode_steps == 1000
        metadata = dataset.storage.metadata
        assert (metadata["ref_min_score"], metadata["ref_max_score"]) == pytest.approx(
            (cached["ref_min_score"], cached["ref_max_score"]))
        assert (metadata["d4rl_ref_min_score"], metadata["d4rl_ref_max_score"]) == D4RL_REF_SCORES["hopper"]
        assert metadata["diffrl_recipe"]["expert_steps"] == 400
        for episode in dataset.iterate_episodes():
            ends = episode.terminations | episode.truncations
            assert ends[-1] and not ends[:-1].any()
            assert episode.truncations[-1] == (not episode.terminations[-1])
    assert replay["steps"] == replay["recipe"]["medium_steps"] == 5000  # stopped at its first evaluation
    replayed = list(_load(tmp_path / "datasets", replay).iterate_episodes())
    assert replayed[-1].truncations[-1] and sum(e.terminations[-1] for e in replayed) == len(replayed) - 1

    episodes = list(_load(tmp_path / "datasets", expert).iterate_episodes())
    assert 1500 <= expert["steps"] <= 2500 and expert["steps"] == sum(len(e.actions) for e in episodes)
    first = min(episodes, key=lambda e: e.id)
    obs, _ = reference.reset(seed=123)
    np.testing.assert_array_equal(first.observations[0], obs)
    for t, action in enumerate(first.actions):
        obs, reward, terminated, _, _ = reference.step(action)
        np.testing.assert_allclose(first.observations[t + 1], obs, rtol=1e-6, atol=1e-8)
        assert first.rewards[t] == pytest.approx(reward, rel=1e-6)
    assert terminated and first.terminations[-1]


def _load(root, summary):
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return minari.load_dataset(summary["dataset_id"])
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


def test_the_device_loop_steps_resets_and_resumes_bit_exactly(tmp_path, optimized_compilation):
    """The device loop on LDCQ's 1-D random walk (4 envs, a JAX env with no MuJoCo): an uninterrupted run of 2,000
    steps and one resumed at 1,000 end in the same state (the environments are part of the checkpoint); every
    stored transition is the walk's own step, each env's rows follow on from each other, a reset at 0 after an
    episode's end, and one update per vector step after ``learning_starts``."""
    config = SACConfig(hidden=(16,), batch_size=32, learning_starts=400, buffer_size=2000)
    kwargs = {"config": config, "seed": 3, "backend": "mjx", "num_envs": 4, "eval_every": 1000, "eval_episodes": 2,
              "progress": False}
    whole = train_sac(RandomWalk1D(), tmp_path / "whole", steps=2000, **kwargs)
    train_sac(RandomWalk1D(), tmp_path / "split", steps=1000, **kwargs)
    split = train_sac(RandomWalk1D(), tmp_path / "split", steps=2000, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, whole.state, split.state)
    assert whole.evaluations == split.evaluations and [s for s, _ in whole.evaluations] == [1000, 2000]
    assert int(whole.state.critic.step) == (2000 - 400) // 4

    b = jax.device_get(whole.state.buffer)
    assert int(b.size) == 2000
    x, step, after = b.observations[:, 0], b.actions[:, 0], b.next_observations[:, 0]
    np.testing.assert_allclose(after, np.clip(x + step, -10, 10), atol=1e-5)  # the walk: x' = clip(x + a)
    reached = np.abs(after) >= 10
    np.testing.assert_array_equal(b.terminated, reached)
    np.testing.assert_array_equal(b.rewards, np.where(reached, 10.0, -1.0))
    rows = np.arange(2000 - 4)
    np.testing.assert_array_equal(x[rows + 4], np.where(b.done[rows], 0.0, after[rows]))  # reset to 0 after an end
    assert b.done.sum() >= 4
    # the mean return of the episodes finished in each compiled stretch (here 1,000 steps each)
    assert [s for s, _ in read_scalars(tmp_path / "whole" / "tensorboard")["episode/return"]] == [1000, 2000]
