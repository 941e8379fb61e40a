"""AntMaze data made here: the waypoint controller's paths and targets, and a tiny generated Minari dataset."""

import pathlib
from types import SimpleNamespace

import gymnasium as gym
import minari
import numpy as np
import pytest
from flax.traverse_util import unflatten_dict

from diffrl.envs.pointmaze import MAZE_MAPS, MazeLayout
from diffrl.experts.antmaze_data import (ACTION_NOISE, DATASETS, EVAL_MAPS, U_MAZE_FIXED, WaypointController, collect,
                                         generate_antmaze_dataset, next_cells)
from diffrl.experts.sac import OGBENCH_SAC, SAC, SACPolicy

EXPERT = pathlib.Path(__file__).parent / "data" / "ant_direction_expert.npz"


def test_next_cells_follow_the_shortest_path_around_the_u():
    layout = MazeLayout(MAZE_MAPS["umaze"], 4.0)
    table = next_cells(layout.free)
    path, cell = [(3, 1)], (3, 1)
    while cell != (1, 1):
        cell = tuple(table[1, 1, cell[0], cell[1]])
        path.append(cell)
    assert path == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    assert tuple(table[1, 1, 1, 1]) == (1, 1)  # at the goal: stay


def test_waypoint_controller_heads_for_cell_centres_then_the_goal():
    layout = MazeLayout(MAZE_MAPS["umaze"], 4.0)  # cell (i, j) centre: (4 j - 8, 8 - 4 i)
    controller = WaypointController(layout, 1, np.random.default_rng(0))
    goal = np.array([[-3.5, 4.5]])  # in cell (1, 1)
    start = np.array([[-4.0, -4.0]])  # centre of cell (3, 1)
    np.testing.assert_allclose(controller(start, goal), [[1.0, 0.0]], atol=1e-6)  # to (3, 2)'s centre (0, -4)
    near = np.array([[0.3, -4.2]])  # within 0.45 of (3, 2)'s centre: on to (3, 3), centre (4, -4) - U(0, 0.2)
    direction = controller(near, goal)
    assert np.all((controller.target >= [3.8, -4.2]) & (controller.target <= [4.0, -4.0]))
    np.testing.assert_allclose(direction, (controller.target - near) / np.linalg.norm(controller.target - near),
                               atol=1e-5)
    controller.cell[0], controller.target[0] = (1, 2), (0.0, 4.0)  # the waypoint before the goal cell
    controller(np.array([[0.1, 4.1]]), goal)
    np.testing.assert_allclose(controller.target, goal)  # in the goal cell: the goal itself, not its centre


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """2 U-Maze episodes (1,400 steps) collected with a 200-step (untrained, warm-up only) ant."""
    root = tmp_path_factory.mktemp("antmaze")
    summary = generate_antmaze_dataset("antmaze-umaze", 1400, expert_steps=200, num_envs=2, root=root / "data",
                                       experts_root=root / "experts", reference_episodes=1, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "data"))
        return summary, minari.load_dataset(summary["dataset_id"])


def test_dataset_holds_time_limited_episodes_with_goal_rewards(tiny_dataset):
    summary, dataset = tiny_dataset
    assert (summary["steps"], summary["episodes"]) == (1400, 2)
    assert dataset.observation_space["observation"].shape == (27,)
    for episode in dataset.iterate_episodes():
        obs = episode.observations
        assert len(episode.actions) == 700  # AntMaze_UMaze-v4's time limit
        assert not episode.terminations.any() and episode.truncations[-1] and not episode.truncations[:-1].any()
        assert np.all(obs["desired_goal"] == obs["desired_goal"][0])  # the goal is never re-drawn
        distance = np.linalg.norm(obs["achieved_goal"][1:] - obs["desired_goal"][1:], axis=-1)
        np.testing.assert_array_equal(episode.rewards, (distance <= 0.45).astype(float))
        assert np.all(np.abs(episode.actions) <= 1.0)
    metadata = dataset.storage.metadata
    assert metadata["diffrl_recipe"]["first_episode_seed"] == 123
    assert dataset.spec.env_spec.kwargs["maze_map"] == U_MAZE_FIXED
    eval_env = dataset.recover_environment(eval_env=True)
    eval_map = eval_env.spec.kwargs["maze_map"]
    eval_env.close()
    # D4RL's antmaze-umaze-v2 task on the collection walls (U_MAZE_TEST: start and goal at the U's two ends), not
    # Minari's EVAL_ENV_MAPS["umaze"], whose U is mirrored (Minari issue #304)
    assert eval_map == [[1, 1, 1, 1, 1], [1, "g", 0, 0, 1], [1, 1, 1, 0, 1], [1, "r", 0, 0, 1], [1, 1, 1, 1, 1]]


def test_first_episode_replays_through_gymnasium(tiny_dataset):
    """Episode 0 is gymnasium's AntMaze from ``reset(seed=123)`` stepped with the stored actions."""
    summary, dataset = tiny_dataset
    episode = next(dataset.iterate_episodes())
    env = gym.make(dataset.spec.env_spec)
    obs, _ = env.reset(seed=123)
    np.testing.assert_allclose(obs["observation"], episode.observations["observation"][0])
    for t in range(50):
        obs, reward, *_ = env.step(episode.actions[t])
        np.testing.assert_allclose(obs["observation"], episode.observations["observation"][t + 1], atol=1e-6)
        np.testing.assert_allclose(obs["achieved_goal"], episode.observations["achieved_goal"][t + 1], atol=1e-6)
    env.close()


def test_the_stored_expert_reaches_the_goal_in_most_u_maze_episodes():
    """The direction-following ant of the datasets (OGBench's SAC recipe, 400k steps, stored by
    ``tests/scripts/export_ant_expert.py``), driven by the waypoint controller with the collection noise, reaches
    the goal of D4RL's U-Maze task in most evaluation episodes (14 of these 20, 23 of the benchmark's 30; a
    freshly initialised actor: 0 of 10)."""
    stored = np.load(EXPERT)
    params = unflatten_dict({tuple(key.split("/")): stored[key] for key in stored.files if key != "steps"})
    sac = SAC(OGBENCH_SAC, 29, 8)
    low, high = -np.ones(8, np.float32), np.ones(8, np.float32)
    run = SimpleNamespace(policy=lambda deterministic: SACPolicy(sac, low, high, deterministic),
                          state=SimpleNamespace(actor=SimpleNamespace(params=params)))
    episodes = collect(run, DATASETS["antmaze-umaze"][0], EVAL_MAPS["umaze"], 20 * 700, noise=ACTION_NOISE,
                       progress=False)
    assert len(episodes) == 20
    reached = [bool(episode["successes"].any()) for episode in episodes]
    assert sum(reached) > 10, reached
