"""The D4RL maze2d-v1 protocol: its datasets, its evaluation env, the episode cuts each method reads, and the two
maze scores (D4RL return, LDCQ first hit), each checked against a hand computation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.agents import LDCQ
from diffrl.cli import main
from diffrl.config import apply_overrides, load_config
from diffrl.data import OfflineData, chunk_starts, gather_chunks, load_dataset, make_store
from diffrl.data.generate import generate_maze_dataset
from diffrl.data.normalizers import GaussianNormalizer
from diffrl.data.preprocess import segment_episodes
from diffrl.envs.base import Env, EnvState
from diffrl.envs.maze2d_gym import Maze2DEnv
from diffrl.envs.registry import make_env
from diffrl.eval.rollout import make_rollout, score_summary
from diffrl.agents.base import DatasetInfo, Policy

# U-Maze: free cells (1, 1..3), (2, 3), (3, 1..3); cell (i, j) has its centre at x = j + 0.5 - 2.5, y = 2.5 - (i + 0.5).
# D4RL's points lie 0.2 from the centre, (+0.2, -0.2) in (x, y); the goal is cell (1, 1).
UMAZE_FREE = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
UMAZE_POINTS = np.array([[j - 2.0 + 0.2, 2.0 - i - 0.2] for i, j in UMAZE_FREE])
TARGET = np.array([-0.8, 0.8])


def _collection_streams(maze, steps, num_envs, seed, reward_type, chunk, progress, protocol):
    """Stands in for the MJX expert rollout (checked in test_generate.py): ``num_envs`` streams of 6 steps in
    which the collection goal switches after step 2 (an arrival) and the point passes the evaluation target at
    distances 0.3, 0.5 (in), 0.51 and 2 (out)."""
    distance = np.array([2.0, 0.51, 0.5, 0.3, 2.0, 0.51])
    xy = TARGET + np.stack([distance, np.zeros(6)], -1)
    goal = np.where(np.arange(6)[:, None] < 3, [1.0, -1.0], [0.0, 1.0])
    obs = np.concatenate([xy, np.zeros((6, 2)), xy, goal], -1).astype(np.float32)
    obs = np.repeat(obs[:, None], num_envs, axis=1)
    return {"obs": obs, "next_obs": obs + 0.01, "action": np.zeros((6, num_envs, 2), np.float32)}, 6


@pytest.fixture(scope="module")
def maze2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("maze2d")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("diffrl.data.generate._expert_streams", _collection_streams)
        generate_maze_dataset("umaze", 11, num_envs=2, root=root, progress=False, protocol="maze2d")
    return root, load_dataset("diffrl/maze2d/umaze-v1", root=root)


def test_maze2d_dataset_keeps_streams_whole_relabels_rewards_and_records_d4rl_references(maze2d, capsys):
    root, data = maze2d
    # one unsplit stream per collection env (the last cut to the 11 steps asked for), across the goal switch
    np.testing.assert_array_equal(data.episode_lengths, [6, 5])
    assert not data.truncations[[2, 3]].any() and data.truncations[[5, 10]].all()
    # r_t = 1{||xy(o_t) - target|| <= 0.5} from the row's own observation (D4RL's relabel), by hand:
    np.testing.assert_array_equal(data.rewards, [0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0])
    assert (data.ref_min_score, data.ref_max_score) == (23.85, 161.86)
    assert data.eval_env_spec.id == "diffrl/Maze2D_UMaze-v1" and data.eval_env_spec.max_episode_steps == 300
    assert main(["data", "info", "diffrl/maze2d/umaze-v1", "--root", str(root)]) == 0
    assert "(protocol maze2d-v1)" in capsys.readouterr().out


def _nearest_point(xy):
    distance = np.abs(xy[:, None, :] - UMAZE_POINTS[None]).max(-1)
    return distance.argmin(-1), distance.min(-1)


def test_maze2d_evaluation_env_resets_and_goal_radius_in_mjx_and_gymnasium(maze2d):
    env = make_env(maze2d[1].eval_env_spec)
    probes = TARGET + np.array([[0.49, 0.0], [0.51, 0.0]])

    @jax.jit
    def resets(keys):
        at_probes = jax.vmap(lambda xy: env.reset_to(xy, jnp.zeros(2), TARGET, keys[0]))(probes)
        return jax.vmap(env.reset)(keys), at_probes.info["success"]

    states, reached = resets(jax.random.split(jax.random.PRNGKey(0), 3500))
    np.testing.assert_array_equal(reached, [True, False])
    xy, velocity = np.asarray(states.obs[:, :2]), np.asarray(states.obs[:, 2:4])
    np.testing.assert_array_equal(np.asarray(states.info["goal"]),
                                  np.broadcast_to(TARGET, (3500, 2)).astype(np.float32))
    cell, offset = _nearest_point(xy)
    assert offset.max() <= 0.1 + 1e-6 and offset.max() > 0.09  # U(-0.1, 0.1) around the point
    np.testing.assert_allclose(np.bincount(cell, minlength=7) / 3500, np.full(7, 1 / 7), atol=0.02)  # goal cell too
    np.testing.assert_allclose(velocity.std(0), [0.1, 0.1], rtol=0.08)

    gym_env = Maze2DEnv("umaze")
    resets = np.array([gym_env.reset(seed=k)[0]["achieved_goal"] for k in range(400)])
    cell, offset = _nearest_point(resets)
    assert offset.max() <= 0.1 and len(np.unique(cell)) == 7
    np.testing.assert_array_equal(gym_env.goal, TARGET)
    for shift, reward in ((0.49, 1.0), (0.51, 0.0)):
        gym_env.point_env.set_state(TARGET + [shift, 0.0], np.zeros(2))
        _, r, terminated, _, info = gym_env.step(np.zeros(2))
        assert (r, info["success"], terminated) == (reward, bool(reward), False)


def _stream_data():
    """Rows 0-4 and 5-10: one stream cut at a goal arrival (row 4 rewarded); rows 11-14 another episode."""
    observations = np.arange(15, dtype=np.float32)[:, None]
    rewards = np.zeros(15, np.float32)
    rewards[[4, 7]] = 1.0
    data = OfflineData.from_arrays(observations, np.zeros((15, 1)), rewards, [5, 6, 4])
    next_observations = data.next_observations.copy()
    next_observations[10] = -1.0  # the third episode does not start where the second ended
    return dataclasses.replace(data, next_observations=next_observations)


def test_latent_skill_chunks_start_at_every_step_of_a_stream_and_carry_rewards_across_the_cut():
    for variant in ("pointmaze-umaze", "maze2d-large-ldgc", "hopper-medium"):
        assert load_config(f"ldcq.py:{variant}").dataset.episodes == "streams"
    store = make_store(segment_episodes(_stream_data(), "streams"))
    starts = chunk_starts(store, 3)
    np.testing.assert_array_equal(starts, [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12])  # 3, 4 cross the cut at row 4
    chunks = gather_chunks(store, jnp.asarray([3, 4, 5]), 3, 0.5)
    np.testing.assert_array_equal(chunks["rewards"], [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(chunks["discounted_rewards"], [0.5, 1.0, 0.25])
    np.testing.assert_array_equal(chunks["next_observations"][:, 0], [6, 7, 8])
    assert not np.asarray(chunks["dones"]).any()


@pytest.mark.parametrize("per_step", [True, False])
def test_q_target_discounts_by_algorithm_1_or_by_the_official_maze_code(per_step):
    data = _stream_data()
    config = apply_overrides(load_config("ldcq.py:hopper-medium"), [
        "task.horizon=3", "model.hidden=8", "model.gru_layers=1", "model.prior_hidden_dims=(8,)", "model.q_hidden=8",
        "model.latent_dim=2", "q.discount=0.9", f"q.per_step_discount={per_step}"])
    method = LDCQ(config, DatasetInfo.from_data(data), GaussianNormalizer.fit(data.observations))
    stage = method.stage("q", {"vae": None, "prior": None})
    params = method.init_q(jax.random.PRNGKey(0))
    candidates = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 2))
    batch = {"reward": jnp.array([1.0, 2.0]), "done": jnp.array([0.0, 1.0]), "next_state": jnp.ones((2, 1)),
             "candidates": candidates}
    best = jnp.max(jnp.min(jax.jit(method.q_values)(params, jnp.ones((2, 4, 1)), candidates), axis=0), axis=-1)
    discount = 0.9**3 if per_step else 0.9
    target = jax.jit(stage.target_values)(params, batch, None)
    np.testing.assert_allclose(target, [1.0 + discount * best[0], 2.0], rtol=1e-6)
    assert stage.reward_discount == (0.9 if per_step else 1.0)


def test_diffuser_maze2d_episodes_end_where_the_point_leaves_the_goal():
    rewards = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1], np.float32)
    data = OfflineData.from_arrays(np.arange(11, dtype=np.float32)[:, None], np.zeros((11, 1)), rewards, [4, 7])
    split = segment_episodes(data, "goal_departures")  # one stream (rows 0-10), cut after rows 2, 5 and 8
    np.testing.assert_array_equal(split.episode_starts, [0, 3, 6, 9])
    np.testing.assert_array_equal(split.episode_lengths, [3, 3, 3, 2])
    np.testing.assert_array_equal(np.flatnonzero(split.truncations), [2, 5, 8, 10])
    assert load_config("diffuser.py:maze2d-umaze").dataset.episodes == "goal_departures"


class _Line(Env):
    """x moves by the action; the goal band is 2.5 <= x <= 3.5 (reward 1 and success inside it)."""

    name, observation_size, action_size, max_episode_steps, reports_success = "line", 1, 1, 10, True

    def reset(self, rng):
        zero = jnp.zeros(())
        return EnvState(data=zero, obs=jnp.zeros(1), reward=zero, terminated=zero > 0, truncated=zero > 0,
                        step=jnp.zeros((), jnp.int32), rng=rng, info={"success": zero > 0})

    def step(self, state, action):
        x = state.obs + action
        inside = (x[0] >= 2.5) & (x[0] <= 3.5)
        return state.replace(obs=x, reward=inside.astype(jnp.float32), step=state.step + 1,
                             truncated=state.step + 1 >= self.max_episode_steps, info={"success": inside})


class _Speeds(Policy):
    def init(self, params, rng, obs):
        return ()

    def act(self, params, policy_state, obs, t, rng):
        return params[:, None], policy_state


def test_first_hit_score_of_hand_made_trajectories():
    # speed 1 is in the band at step 2 (x = 3) and leaves it; speed 0 never arrives; speed 3 arrives at step 0
    out = make_rollout(_Line(), _Speeds(), 3, 10)(jnp.array([1.0, 0.0, 3.0]), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out["first_hit"], [2, -1, 0])
    np.testing.assert_array_equal(out["returns"], [1, 0, 1])
    summary = score_summary(out["returns"], out["first_hit"], 0.0, 10.0, 10)
    # first hit: (10 - 2, 0, 10 - 0), normalised by 100 / (10 - 0)
    np.testing.assert_allclose(summary["first_hit_score"], 100 * (8 + 0 + 10) / 3 / 10)
    np.testing.assert_allclose(summary["first_hit_stderr"], np.std([80, 0, 100], ddof=1) / np.sqrt(3))
    np.testing.assert_allclose(summary["normalized_score"], 100 * 2 / 3 / 10)
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert score_summary(out["returns"], None, 0.0, 10.0, 10)["first_hit_score"] is None
