"""PointMaze expert data generation: the planner, the expert, and real Minari datasets written atomically."""

import os

import gymnasium as gym
import gymnasium_robotics
import jax
import minari
import numpy as np
import pytest

from diffrl.cli import main
from diffrl.data import load_dataset
from diffrl.data import generate as gen
from diffrl.envs.pointmaze import PointMaze
from synthetic import write_pointmaze_dataset

gym.register_envs(gymnasium_robotics)


def test_q_iteration_waypoints_follow_the_shortest_path():
    layout = PointMaze("umaze").layout
    table = gen.waypoint_table(layout)
    flat = lambda i, j: i * layout.width + j
    cell, path = flat(1, 1), []
    while cell != flat(3, 1):
        cell = int(table[flat(3, 1), cell])
        path.append(divmod(cell, layout.width))
    assert path == [(1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    # in the large maze every free cell reaches every goal cell through free cells only
    large = PointMaze("large").layout
    big = gen.waypoint_table(large)
    free = [flat_ for flat_ in range(large.length * large.width) if large.free[divmod(flat_, large.width)]]
    for goal in free[::7]:
        for start in free:
            cell = start
            for _ in range(len(free)):
                if cell == goal:
                    break
                cell = int(big[goal, cell])
                assert large.free[divmod(cell, large.width)]
            assert cell == goal


def test_expert_replanned_in_the_goal_cell_goes_out_and_back():
    """QIteration.generate_path from the goal cell is {goal: neighbour, neighbour: goal} (maze_solver.py)."""
    env = PointMaze("umaze")
    expert = gen.WaypointExpert(env.layout)
    goal = env.layout.cell_to_xy((1, 1)) + 0.2  # goal and point both in cell (1, 1)
    obs = np.concatenate([goal - 0.3, [0.0, 0.0], goal - 0.3, goal]).astype(np.float32)
    _, state = expert.act(expert.initial_state(), obs, jax.random.PRNGKey(0))
    assert int(state.target_cell) == 1 * env.layout.width + 2  # the only free neighbour, (1, 2)
    np.testing.assert_allclose(state.target_xy, env.layout.cell_to_xy((1, 2)))
    at_neighbour = obs.copy()
    at_neighbour[[0, 1, 4, 5]] = np.tile(env.layout.cell_to_xy((1, 2)), 2)
    _, state = expert.act(state, at_neighbour, jax.random.PRNGKey(1))
    np.testing.assert_allclose(state.target_xy, goal)  # then the goal itself


def test_generate_writes_a_real_minari_dataset(tmp_path, capsys):
    root = tmp_path / "datasets"
    assert main(["data", "generate", "pointmaze-umaze", "--steps", "3000", "--num-envs", "6", "--root", str(root),
                 "--no-progress"]) == 0
    assert "wrote diffrl/pointmaze/umaze-v0: 3000 steps" in capsys.readouterr().out
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        dataset = minari.load_dataset("diffrl/pointmaze/umaze-v0")
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    reference = gym.make("PointMaze_UMaze-v3")
    assert dataset.observation_space == reference.observation_space
    assert dataset.action_space == reference.action_space
    spec = dataset.spec.env_spec
    assert spec.id == "PointMaze_UMaze-v3" and spec.kwargs["continuing_task"] and spec.kwargs["reset_target"]
    metadata = dataset.storage.metadata
    eval_spec = gym.envs.registration.EnvSpec.from_json(metadata["eval_env_spec"])
    assert eval_spec.max_episode_steps == 300 and eval_spec.kwargs["reset_target"] is False
    assert eval_spec.kwargs["maze_map"][1][1] == "g"
    # 100 episodes on the single-goal map: the noise-free expert reaches the goal and stays, a random policy rarely
    assert metadata["ref_max_score"] > 150 > 40 > metadata["ref_min_score"]
    assert dataset.total_steps == 3000

    episodes = list(dataset.iterate_episodes())
    for previous, episode in zip(episodes, episodes[1:]):
        assert not episode.terminations.any() and episode.truncations[-1] and not episode.truncations[:-1].any()
        assert np.all(np.abs(episode.actions) <= 1.0)
        if previous.infos["success"][-1]:  # the point keeps moving: the next episode starts where this one ended
            for key in ("observation", "desired_goal"):
                np.testing.assert_array_equal(episode.observations[key][0], previous.observations[key][-1])
            assert previous.rewards[-1] == 1.0 and episode.infos["success"][0]
    assert np.mean([e.infos["success"][-1] for e in episodes]) > 0.8

    # the recorded transitions are the gymnasium-robotics dynamics: replay one episode through the original env
    episode = max(episodes, key=lambda e: len(e.actions))
    env = reference.unwrapped
    env.reset(seed=0)
    obs = episode.observations
    # the first observation after a success still shows the old goal (the env re-draws it after observing)
    env.goal = obs["desired_goal"][1].copy()
    env.point_env.set_state(obs["observation"][0, :2], obs["observation"][0, 2:])
    for k in range(min(60, len(episode.actions))):
        step_obs, reward, *_ = env.step(episode.actions[k])
        np.testing.assert_allclose(step_obs["observation"], obs["observation"][k + 1], atol=1e-4)
        assert reward == episode.rewards[k]

    data = load_dataset("diffrl/pointmaze/umaze-v0", root=root)
    assert data.observations.shape == (3000, 8) and data.ref_max_score == pytest.approx(metadata["ref_max_score"])
    np.testing.assert_array_equal(data.observations[0, 6:], episodes[0].observations["desired_goal"][0])

    # the same id again needs --overwrite
    assert main(["data", "generate", "pointmaze-umaze", "--steps", "3000", "--num-envs", "6", "--root", str(root),
                 "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    episodes = [{"observations": np.zeros((3, 8), np.float32), "actions": np.zeros((2, 2), np.float32),
                 "rewards": np.zeros(2, np.float32), "success": np.zeros(3, bool)}]
    real_create = minari.create_dataset_from_buffers

    def create_then_crash(*args, **kwargs):
        real_create(*args, **kwargs)  # the files are complete in the staging folder ...
        raise KeyboardInterrupt  # ... when the user interrupts

    monkeypatch.setattr(minari, "create_dataset_from_buffers", create_then_crash)
    with pytest.raises(KeyboardInterrupt):
        gen.write_minari_dataset(episodes, "diffrl/pointmaze/umaze-v0", "umaze", "sparse", 0.0, 1.0, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_relative_root_is_written_and_read_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `diffrl demo` writes to demo_out/datasets, relative to the working directory
    write_pointmaze_dataset("relative/datasets", num_streams=1, stream_length=20, cut_every=10)
    data = load_dataset("diffrl/pointmaze/umaze-v0", root="relative/datasets")
    assert data.observations.shape == (20, 8) and list(data.episode_lengths) == [10, 10]


def test_generate_rejects_unknown_environment(capsys):
    assert main(["data", "generate", "pointmaze-huge", "--steps", "100"]) == 2
    assert "unknown environment 'pointmaze-huge'" in capsys.readouterr().err
    assert main(["data", "info", "D4RL/pointmaze/umaze-v2", "--root", "/nonexistent"]) == 2
    assert "diffrl data download D4RL/pointmaze/umaze-v2" in capsys.readouterr().err
