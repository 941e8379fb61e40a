"""The dataset layer on tiny Minari datasets written on the fly (no network).

Every observation, action and reward encodes its (episode, step), so each sampled index can be checked exactly.
"""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    OfflineData,
    check_spaces,
    dataset_normalized_score,
    discounted_returns_to_go,
    fit_normalizer,
    load_dataset,
    make_store,
    normalized_score,
    normalizer_from_dict,
    reference_scores,
    replay,
    returns_to_go,
    sample_chunks,
    gather_jumpy_states,
    jumpy_starts,
    sample_subgoal_transitions,
    sample_trajectory_windows,
)

FLAT_ID = "test/flat/hand-v0"
DICT_ID = "test/goal/hand-v0"
# (length, terminated) per episode; an episode that is not terminated is truncated.
FLAT_EPISODES = [(6, True), (4, False), (1, True), (8, False)]
DICT_EPISODES = [(3, False), (5, True)]
OBS_DIM, ACT_DIM = 3, 2


def flat_obs(e, k):
    return np.array([100 * e + k, -(100 * e + k), e], np.float32)


def flat_action(e, k):
    return np.array([100 * e + k + 0.5, -e], np.float32)


def flat_reward(e, k):
    return 10.0 * e + k


def goal_obs(e, k):
    """The three keys of the dict observation at (episode e, step k)."""
    value = 100 * int(e) + int(k)
    return {
        "observation": np.array([value, value + 0.1, value + 0.2, value + 0.3], np.float32),
        "achieved_goal": np.array([1000 + value, 2000 + value], np.float32),
        "desired_goal": np.array([-1.0, -2.0], np.float32) * (int(e) + 1),
    }


def goal_flat(e, k):
    obs = goal_obs(e, k)
    return np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]])


def _flags(length, terminated):
    last = np.zeros(length, bool)
    last[-1] = True
    return (last, np.zeros(length, bool)) if terminated else (np.zeros(length, bool), last)


def _flat_buffer(e, length, terminated, corrupt=None):
    from minari.data_collector import EpisodeBuffer

    observations = np.stack([flat_obs(e, k) for k in range(length + 1)])
    rewards = np.array([flat_reward(e, k) for k in range(length)])
    if corrupt == "rewards":
        rewards[2] = np.nan
    if corrupt == "observations":
        observations[1, 0] = np.inf
    terminations, truncations = _flags(length, terminated)
    return EpisodeBuffer(
        observations=observations,
        actions=np.stack([flat_action(e, k) for k in range(length)]),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
    )


def _goal_buffer(e, length, terminated):
    from minari.data_collector import EpisodeBuffer

    steps = [goal_obs(e, k) for k in range(length + 1)]
    terminations, truncations = _flags(length, terminated)
    return EpisodeBuffer(
        observations={key: np.stack([s[key] for s in steps]) for key in steps[0]},
        actions=np.stack([np.array([e, k], np.float32) for k in range(length)]),
        rewards=np.zeros(length),
        terminations=terminations,
        truncations=truncations,
    )


def _create(dataset_id, buffers, **kwargs):
    import minari

    with warnings.catch_warnings():  # Minari warns that datasets without an env spec cannot recreate their env
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            algorithm_name="hand-made",
            author="diffrl tests",
            author_email="tests@diffrl.invalid",
            code_permalink="https://example.invalid/diffrl",
            description="tiny test dataset",
            **kwargs,
        )


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """A datasets root holding a flat, a goal-dict, two NaN/inf and two corrupt datasets; MINARI_DATASETS_PATH set."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        box = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        action_box = gym.spaces.Box(-np.inf, np.inf, (ACT_DIM,), np.float32)
        # A registered env spec is needed for Minari to store reference scores; the spaces are overridden.
        _create(
            FLAT_ID,
            [_flat_buffer(e, n, t) for e, (n, t) in enumerate(FLAT_EPISODES)],
            env="Pendulum-v1",
            eval_env="Pendulum-v1",
            observation_space=box,
            action_space=action_box,
            ref_min_score=-10.0,
            ref_max_score=30.0,
        )
        goal_space = gym.spaces.Dict(
            {
                "observation": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            }
        )
        _create(
            DICT_ID,
            [_goal_buffer(e, n, t) for e, (n, t) in enumerate(DICT_EPISODES)],
            observation_space=goal_space,
            action_space=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        )
        for field in ("rewards", "observations"):
            _create(
                f"test/nan-{field}/hand-v0",
                [_flat_buffer(0, 4, True), _flat_buffer(1, 4, True, corrupt=field)],
                observation_space=box,
                action_space=action_box,
            )
        for name, victim in (("badfile", "main_data.hdf5"), ("badmeta", "metadata.json")):
            target = root / "test" / name / "hand-v0"
            shutil.copytree(root / FLAT_ID, target)
            (target / "data" / victim).write_bytes(b"this is not a valid file")
        yield root


@pytest.fixture(scope="module")
def flat(minari_root):
    return load_dataset(FLAT_ID)


@pytest.fixture(scope="module")
def goal(minari_root):
    return load_dataset(DICT_ID)


@pytest.fixture(scope="module")
def flat_store(flat):
    return make_store(flat)


# ----------------------------------------------------------------------------------------------- loading


def test_flat_dataset_rows_and_episode_tables(flat):
    lengths = [n for n, _ in FLAT_EPISODES]
    assert flat.num_steps == sum(lengths) and flat.num_episodes == len(lengths)
    np.testing.assert_array_equal(flat.episode_lengths, lengths)
    np.testing.assert_array_equal(flat.episode_starts, np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    pairs = [(e, k) for e, n in enumerate(lengths) for k in range(n)]
    np.testing.assert_array_equal(flat.observations, [flat_obs(e, k) for e, k in pairs])
    # N + 1 observations for N actions: next_observations of an episode's last step is its final observation.
    np.testing.assert_array_equal(flat.next_observations, [flat_obs(e, k + 1) for e, k in pairs])
    np.testing.assert_array_equal(flat.actions, [flat_action(e, k) for e, k in pairs])
    np.testing.assert_array_equal(flat.rewards, [flat_reward(e, k) for e, k in pairs])
    last = np.array([k == lengths[e] - 1 for e, k in pairs])
    terminated = np.array([FLAT_EPISODES[e][1] for e, _ in pairs])
    np.testing.assert_array_equal(flat.terminations, last & terminated)
    np.testing.assert_array_equal(flat.truncations, last & ~terminated)
    assert flat.observations.dtype == np.float32 and flat.terminations.dtype == bool
    assert flat.observation_slices is None
    assert flat.dataset_id == FLAT_ID and flat.env_spec.id == "Pendulum-v1"
    assert (flat.ref_min_score, flat.ref_max_score) == (-10.0, 30.0)
    assert flat.observation_space.shape == (OBS_DIM,) and flat.action_space.shape == (ACT_DIM,)


def test_dict_observations_flatten_in_diffrl_order(goal):
    # gymnasium sorts Dict keys alphabetically; diffrl's order is observation, achieved_goal, desired_goal.
    assert list(goal.observation_space.spaces) == ["achieved_goal", "desired_goal", "observation"]
    assert goal.observation_slices == {
        "observation": slice(0, 4),
        "achieved_goal": slice(4, 6),
        "desired_goal": slice(6, 8),
    }
    pairs = [(e, k) for e, (n, _) in enumerate(DICT_EPISODES) for k in range(n)]
    np.testing.assert_array_equal(goal.observations, [goal_flat(e, k) for e, k in pairs])
    np.testing.assert_array_equal(goal.next_observations, [goal_flat(e, k + 1) for e, k in pairs])
    assert goal.env_spec is None and goal.ref_min_score is None and goal.ref_max_score is None


def test_root_argument_overrides_environment(minari_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert load_dataset(FLAT_ID, root=minari_root).num_steps == sum(n for n, _ in FLAT_EPISODES)


def test_missing_dataset_names_id_command_and_root(minari_root):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("D4RL/pointmaze/umaze-v2")
    message = str(info.value)
    assert "'D4RL/pointmaze/umaze-v2'" in message
    assert "diffrl data download D4RL/pointmaze/umaze-v2" in message
    assert str(minari_root) in message and "MINARI_DATASETS_PATH" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", ["rewards", "observations"])
def test_non_finite_values_name_field_and_episode(minari_root, field):
    with pytest.raises(DatasetCorruptError, match=rf"field {field} of episode 1 \(first at step"):
        load_dataset(f"test/nan-{field}/hand-v0")


@pytest.mark.parametrize("name, victim", [("badfile", "main_data.hdf5"), ("badmeta", "metadata.json")])
def test_unreadable_file_is_named(minari_root, name, victim):
    with pytest.raises(DatasetCorruptError, match=victim):
        load_dataset(f"test/{name}/hand-v0")


def test_in_memory_dataset_from_arrays():
    obs = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    data = OfflineData.from_arrays(obs, np.zeros((10, 2)), np.ones(10), [4, 6], terminal_last=True)
    np.testing.assert_array_equal(data.episode_starts, [0, 4])
    np.testing.assert_array_equal(np.flatnonzero(data.terminations), [3, 9])
    assert not data.truncations.any()
    np.testing.assert_array_equal(data.next_observations[:9], obs[1:])
    with pytest.raises(ValueError, match="episode lengths sum to 9, but there are 10 observations"):
        OfflineData.from_arrays(obs, np.zeros((10, 2)), np.ones(10), [4, 5])


def test_space_check_and_scores(flat, goal):
    check_spaces(flat, OBS_DIM, ACT_DIM)
    mismatch = "observation size 3 and action size 2, but the environment has observation size 3 and action size 1"
    with pytest.raises(ValueError, match=mismatch):
        check_spaces(flat, OBS_DIM, 1)
    np.testing.assert_allclose(normalized_score([-10.0, 10.0, 30.0, 50.0], -10.0, 30.0), [0.0, 50.0, 100.0, 150.0])
    assert reference_scores(flat) == (-10.0, 30.0)
    np.testing.assert_allclose(dataset_normalized_score(flat, 0.0), 25.0)
    with pytest.raises(ValueError, match="has no reference scores"):
        dataset_normalized_score(goal, 0.0)
    with pytest.raises(ValueError, match="must differ"):
        normalized_score(1.0, 2.0, 2.0)


# ----------------------------------------------------------------------------------------------- samplers


def _episode_and_step(data, rows):
    episodes = np.searchsorted(data.episode_starts, rows, side="right") - 1
    return episodes, rows - data.episode_starts[episodes]


def official_make_indices(path_lengths, horizon, max_path_length, use_padding):
    """Copy of jannerm/diffuser ``SequenceDataset.make_indices`` (diffuser/datasets/sequence.py)."""
    indices = []
    for i, path_length in enumerate(path_lengths):
        max_start = min(path_length - 1, max_path_length - horizon)
        if not use_padding:
            max_start = min(max_start, path_length - horizon)
        for start in range(max_start):
            indices.append((i, start))
    return indices


@pytest.mark.parametrize("use_padding, max_path_length", [(True, None), (True, 10), (False, None)])
def test_trajectory_windows_follow_official_indices(flat, flat_store, use_padding, max_path_length):
    horizon, batch = 3, 3000
    out = sample_trajectory_windows(flat_store, jax.random.key(0), batch, horizon, use_padding, max_path_length)
    out = jax.tree.map(np.asarray, out)
    lengths = [n for n, _ in FLAT_EPISODES]
    expected = official_make_indices(lengths, horizon, max_path_length or max(lengths), use_padding)
    episodes, steps = _episode_and_step(flat, out["indices"])
    np.testing.assert_array_equal(episodes, out["episode_ids"])
    drawn = list(zip(episodes.tolist(), steps.tolist()))
    assert set(drawn) == set(expected)
    counts = np.array([drawn.count(pair) for pair in expected])  # uniform over the official index list
    assert np.all(np.abs(counts / batch - 1 / len(expected)) < 5 * np.sqrt(1 / len(expected) / batch))
    for b, (e, k) in enumerate(drawn):
        for j in range(horizon):
            inside = k + j < lengths[e]
            assert out["mask"][b, j] == float(inside)
            np.testing.assert_array_equal(out["observations"][b, j], flat_obs(e, k + j) if inside else 0.0)
            np.testing.assert_array_equal(out["actions"][b, j], flat_action(e, k + j) if inside else 0.0)
            assert out["rewards"][b, j] == (flat_reward(e, k + j) if inside else 0.0)
            assert out["terminations"][b, j] == float(inside and k + j == lengths[e] - 1 and FLAT_EPISODES[e][1])
    if use_padding:
        assert (out["mask"] == 0).any()  # some windows run into the zero padding
    else:
        assert (out["mask"] == 1).all()


def test_trajectory_window_shape_errors(flat_store):
    with pytest.raises(ValueError, match="shorter than the longest episode"):
        sample_trajectory_windows(flat_store, jax.random.key(0), 4, 3, True, 7)
    with pytest.raises(ValueError, match="no unpadded window of horizon 8"):
        sample_trajectory_windows(flat_store, jax.random.key(0), 4, 8, False)
    with pytest.raises(ValueError, match="no padded window of horizon 8"):
        sample_trajectory_windows(flat_store, jax.random.key(0), 4, 8, True)


def test_chunks_rewards_next_states_and_done_flags(flat, flat_store):
    horizon, gamma, batch = 3, 0.9, 2000
    out = jax.tree.map(np.asarray, sample_chunks(flat_store, jax.random.key(1), batch, horizon, gamma))
    lengths = [n for n, _ in FLAT_EPISODES]
    episodes, steps = _episode_and_step(flat, out["indices"])
    drawn = set(zip(episodes.tolist(), steps.tolist()))
    assert drawn == {(e, k) for e, n in enumerate(lengths) for k in range(n - horizon + 1)}
    for b, (e, k) in enumerate(zip(episodes, steps)):
        np.testing.assert_array_equal(out["observations"][b], flat_obs(e, k))
        np.testing.assert_array_equal(out["actions"][b], [flat_action(e, k + j) for j in range(horizon)])
        hand = sum(gamma**j * flat_reward(e, k + j) for j in range(horizon))
        np.testing.assert_allclose(out["discounted_rewards"][b], hand, rtol=1e-6)
        np.testing.assert_array_equal(out["next_observations"][b], flat_obs(e, k + horizon))
        at_end = k + horizon == lengths[e]
        assert out["dones"][b] == float(at_end and FLAT_EPISODES[e][1])
        assert out["truncations"][b] == float(at_end and not FLAT_EPISODES[e][1])
    # Episode 0 (terminated) ends at step 6: the chunk t = 3 ends on the final observation with done = 1;
    # episode 3 (truncated) ends at step 8: the chunk t = 5 has done = 0 and truncation = 1.
    (b0,) = np.flatnonzero((episodes == 0) & (steps == 3))[:1]
    np.testing.assert_allclose(out["discounted_rewards"][b0], 3 + 0.9 * 4 + 0.81 * 5, rtol=1e-6)
    assert out["dones"][b0] == 1.0 and out["next_observations"][b0][0] == 6.0
    (b3,) = np.flatnonzero((episodes == 3) & (steps == 5))[:1]
    assert out["dones"][b3] == 0.0 and out["truncations"][b3] == 1.0 and out["next_observations"][b3][0] == 308.0
    with pytest.raises(ValueError, match="no chunk of 9 steps"):
        sample_chunks(flat_store, jax.random.key(1), 4, 9, gamma)


def test_jumpy_starts_and_states_stay_inside_episodes_and_drop_windows_that_barely_move(flat, flat_store):
    num_states, stride = 3, 2
    starts = jumpy_starts(flat_store, num_states, stride)
    lengths = [n for n, _ in FLAT_EPISODES]
    episodes, steps = _episode_and_step(flat, starts)
    assert set(zip(episodes.tolist(), steps.tolist())) == {(e, k) for e, n in enumerate(lengths) for k in range(n - 3)}
    states = np.asarray(gather_jumpy_states(flat_store, jnp.asarray(starts), num_states, stride))
    for b, (e, k) in enumerate(zip(episodes, steps)):  # the last state may be the final observation o_L
        np.testing.assert_array_equal(states[b], [flat_obs(e, k + stride * i) for i in range(num_states)])
    # every window moves 4 along the first column: a threshold of 3.9 keeps them all, 4.1 none
    np.testing.assert_array_equal(jumpy_starts(flat_store, num_states, stride, slice(0, 1), 3.9), starts)
    assert len(jumpy_starts(flat_store, num_states, stride, slice(0, 1), 4.1)) == 0
    with pytest.raises(ValueError, match="num_states >= 2"):
        jumpy_starts(flat_store, 1, stride)


def test_subgoals_are_relabelled_at_geometric_times_k_offsets_clipped_at_the_episode_end():
    """One 200-step episode with s_t = t: the sub-goal state is the offset itself. ``o ~ U{0..Delta K - 1}``,
    ``Delta ~ Geometric(p)``, so ``P(o) = sum_{Delta K > o} p (1 - p)^(Delta - 1) / (Delta K)`` far from the end."""
    steps, p, k = 200, 0.2, 3
    data = OfflineData.from_arrays(np.arange(steps, dtype=np.float32)[:, None], np.zeros((steps, 1), np.float32),
                                   np.arange(steps, dtype=np.float32), [steps], terminal_last=True)
    out = jax.tree.map(np.asarray, sample_subgoal_transitions(make_store(data), jax.random.key(4), 40_000, p, k))
    rows, offsets = out["indices"], out["goal_offsets"]
    room = steps - rows  # offset `room` reads the final observation (o_200 = 199 here, as from_arrays repeats)
    np.testing.assert_array_equal(offsets, np.minimum(offsets, room))
    np.testing.assert_array_equal(out["subgoals"][:, 0], np.minimum(rows + offsets, steps - 1))
    np.testing.assert_array_equal(out["rewards"], rows)
    np.testing.assert_array_equal(out["terminations"], rows == steps - 1)
    deltas = np.arange(1, 400)
    weights = p * (1 - p) ** (deltas - 1) / (deltas * k)
    closed = np.array([weights[deltas * k > o].sum() for o in range(10)])
    free = room > 100
    empirical = np.array([np.mean(offsets[free] == o) for o in range(10)])
    np.testing.assert_allclose(empirical, closed, atol=0.01)
    near = room <= 2  # the tail mass P(o >= room) collects at the end
    expected_at_end = np.array([1.0 - closed[:r].sum() for r in room[near]])
    assert abs(np.mean(offsets[near] == room[near]) - expected_at_end.mean()) < 0.05
    with pytest.raises(ValueError, match="p must lie in"):
        sample_subgoal_transitions(make_store(data), jax.random.key(4), 4, 0.0, k)


def test_samplers_are_deterministic_and_run_inside_jit(flat_store):
    @jax.jit
    def train_step_batches(store, rng):
        keys = jax.random.split(rng, 3)
        return (
            sample_trajectory_windows(store, keys[0], 8, 3),
            sample_chunks(store, keys[1], 8, 3, 0.99),
            sample_subgoal_transitions(store, keys[2], 8, 0.2, 2),
        )

    first = train_step_batches(flat_store, jax.random.key(7))
    again = train_step_batches(flat_store, jax.random.key(7))
    other = train_step_batches(flat_store, jax.random.key(8))
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other)))
    keys = jax.random.split(jax.random.key(7), 3)
    jax.tree.map(np.testing.assert_array_equal, first[1], sample_chunks(flat_store, keys[1], 8, 3, 0.99))


def test_returns_to_go_match_numpy_loop(flat, flat_store):
    gamma = 0.9
    expected = np.zeros(flat.num_steps)
    for start, length in zip(flat.episode_starts, flat.episode_lengths):
        future = 0.0
        for t in reversed(range(start, start + length)):
            future = flat.rewards[t] + gamma * future
            expected[t] = future
    np.testing.assert_allclose(np.asarray(returns_to_go(flat_store, gamma)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(jax.jit(discounted_returns_to_go)(jnp.ones(4), jnp.array([False, True, False, True]), 0.5)),
        [1.5, 1.0, 1.5, 1.0],
    )


# ----------------------------------------------------------------------------------------------- normalizers


@pytest.fixture(scope="module")
def fit_data():
    x = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 5.0, 1.0] + [0.0, 2.0, 0.0]
    x[:, 2] = 4.0  # a constant dimension
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["gaussian", "limits", "cdf"])
def test_normalizer_round_trip_and_saving(fit_data, kind):
    normalizer = fit_normalizer(kind, fit_data)
    y = jax.jit(lambda n, x: n.normalize(x))(normalizer, fit_data)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(normalizer.unnormalize(y), fit_data, atol=1e-4)
    restored = normalizer_from_dict(normalizer.to_dict())
    assert type(restored) is type(normalizer)
    np.testing.assert_array_equal(restored.normalize(fit_data), normalizer.normalize(fit_data))
    np.testing.assert_allclose(normalizer.normalize(fit_data), y, atol=1e-6)
    batched = fit_data[:12].reshape(3, 4, 3)  # leading axes are broadcast
    np.testing.assert_allclose(normalizer.normalize(batched), np.asarray(y[:12]).reshape(3, 4, 3), atol=1e-6)


def test_normalizer_ranges(fit_data):
    y = np.asarray(fit_normalizer("gaussian", fit_data).normalize(fit_data))
    np.testing.assert_allclose(y[:, :2].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[:, :2].std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(y[:, 2], 0.0)

    limits = fit_normalizer("limits", fit_data)
    y = np.asarray(limits.normalize(fit_data))
    np.testing.assert_allclose(y[:, :2].min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(y[:, :2].max(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(y[:, 2], 0.0)  # constant 4 normalised against [3, 5]
    # Out-of-range inputs are clipped to [-1, 1]: 7 unnormalises to the maxima (5 = 4 + 1 in the constant dim).
    top = np.array([fit_data[:, 0].max(), fit_data[:, 1].max(), 5.0])
    np.testing.assert_allclose(limits.unnormalize(np.full((1, 3), 7.0)), top[None], rtol=1e-6)

    y = np.asarray(fit_normalizer("cdf", fit_data).normalize(fit_data))
    empirical = (fit_data[None, :, :] <= fit_data[:, None, :]).mean(axis=1)  # F(x) = #{x' <= x} / N
    np.testing.assert_allclose(y, 2 * empirical - 1, atol=1e-6)
    assert y.min() >= -1.0 and y.max() == 1.0


def test_cdf_normalizer_interpolates_between_knots():
    cdf = fit_normalizer("cdf", np.array([[0.0, 7.0], [1.0, 7.0], [2.0, 7.0], [3.0, 7.0]]))
    # Dimension 0: F = 0.25, 0.5, 0.75, 1 at 0, 1, 2, 3; dimension 1 is constant (one knot, F = 1).
    # Forward: 0.5 is halfway between F = 0.25 and 0.5 -> 2 * 0.375 - 1; -5 is clipped to 0 -> 2 * 0.25 - 1.
    forward = cdf.normalize(np.array([[0.5, 7.0], [-5.0, 9.0], [3.0, 0.0]]))
    np.testing.assert_allclose(forward, [[-0.25, 1.0], [-0.5, 1.0], [1.0, 1.0]])
    # Inverse: -1 -> F = 0 clipped to 0.25 -> 0; 0.25 -> F = 0.625, halfway between knots 1 and 2.
    inverse = cdf.unnormalize(np.array([[-1.0, -1.0], [0.25, 0.3], [1.0, 1.0]]))
    np.testing.assert_allclose(inverse, [[0.0, 7.0], [1.5, 7.0], [3.0, 7.0]])


def test_normalizer_errors(fit_data):
    with pytest.raises(ValueError, match="must be one of"):
        fit_normalizer("minmax", fit_data)
    with pytest.raises(ValueError, match="shape"):
        fit_normalizer("limits", fit_data[:, 0])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_normalizer("gaussian", np.array([[np.nan]]))
    with pytest.raises(ValueError, match="lacks"):
        normalizer_from_dict({"kind": "gaussian", "mean": np.zeros(2)})


# ----------------------------------------------------------------------------------------------- prioritized replay


def test_prioritized_sampling_frequencies_and_weights():
    state = replay.init_prioritized_replay(6, num_filled=5)  # slot 5 is empty
    td = np.array([0.5, -1.0, 2.0, -4.0, 8.0], np.float32)
    eps = 1e-3
    state = replay.update(state, jnp.arange(5), td, eps=eps)
    priorities = np.abs(td) + eps
    alpha, beta, batch = 0.7, 0.4, 200_000
    indices, weights = replay.sample(state, jax.random.key(0), batch, beta, alpha)
    indices, weights = np.asarray(indices), np.asarray(weights)
    expected = priorities**alpha / np.sum(priorities**alpha)
    frequencies = np.bincount(indices, minlength=6) / batch
    assert frequencies[5] == 0.0
    np.testing.assert_array_less(np.abs(frequencies[:5] - expected), 5 * np.sqrt(expected * (1 - expected) / batch))
    closed_form = (5 * expected[indices]) ** -beta
    np.testing.assert_allclose(weights, closed_form / closed_form.max(), rtol=1e-5)
    again = replay.sample(state, jax.random.key(0), batch, beta, alpha)
    np.testing.assert_array_equal(again[0], indices)


def test_prioritized_update_and_new_entries():
    state = replay.init_prioritized_replay(4, num_filled=2)
    np.testing.assert_array_equal(state.priorities, [1.0, 1.0, 0.0, 0.0])
    state = jax.jit(replay.update)(state, jnp.array([1]), jnp.array([-3.0]))
    np.testing.assert_allclose(state.priorities, [1.0, 3.0 + 1e-6, 0.0, 0.0])
    np.testing.assert_allclose(state.max_priority, 3.0 + 1e-6)
    state = replay.update(state, jnp.array([1]), jnp.array([0.5]))
    np.testing.assert_allclose(state.priorities[1], 0.5 + 1e-6)
    np.testing.assert_allclose(state.max_priority, 3.0 + 1e-6)  # the maximum ever seen is kept
    state = replay.add_entries(state, jnp.array([2]))
    np.testing.assert_allclose(state.priorities, [1.0, 0.5 + 1e-6, 3.0 + 1e-6, 0.0])
    indices, _ = replay.sample(state, jax.random.key(1), 1000, 1.0)
    assert set(np.asarray(indices).tolist()) == {0, 1, 2}
    # beta = 0: all weights are 1; uniform priorities: all weights are 1 for any beta.
    np.testing.assert_array_equal(replay.sample(state, jax.random.key(1), 64, 0.0)[1], 1.0)
    uniform = replay.init_prioritized_replay(8)
    np.testing.assert_allclose(replay.sample(uniform, jax.random.key(1), 64, 1.0)[1], 1.0, rtol=1e-6)


def test_annealed_beta_steps_up_and_saturates():
    steps = (0, 2999, 3000, 6000, 70_000)
    np.testing.assert_allclose([replay.annealed_beta(s) for s in steps], [0.3, 0.3, 0.33, 0.36, 0.99], rtol=1e-6)
    assert float(replay.annealed_beta(10**6)) == 1.0
    np.testing.assert_allclose(replay.annealed_beta(50, 0.3, 1.0, 0.007, 1), 0.65, rtol=1e-6)
    with pytest.raises(ValueError):
        replay.annealed_beta(0, every=0)

