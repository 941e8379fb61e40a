"""Evaluation for any environment: one compiled rollout per evaluator, and the gymnasium fallback chosen by
``diffrl evaluate`` for an environment with no MJX port, checked against a plain gymnasium rollout."""

import json
import logging

import gymnasium as gym
import jax
import numpy as np
import pytest
from synthetic import write_pointmaze_dataset, write_random_dataset
from tensorboard_reader import read_image_tags, read_scalars

from diffrl.cli import main
from diffrl.config import apply_overrides, load_config
from diffrl.envs.gym_fallback import make_gym_env
from diffrl.envs.registry import NoMJXPortError
from diffrl.eval.evaluate import Evaluator, choose_backend
from diffrl.eval.rollout import make_rollout
from diffrl.spaces import flatten_observation
from diffrl.train.pipeline import load_trained, train
from diffrl.train.sharding import put_replicated

TINY_BC = ["model.hidden=(8,)", "train.steps=10", "train.log_every=10", "train.checkpoint_every=10",
           "train.batch_size=8"]


def test_an_evaluator_compiles_its_rollout_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diffrl")
    root = tmp_path / "data"
    write_pointmaze_dataset(root)
    config = apply_overrides(load_config("bc.py:pointmaze-umaze"),
                             [*TINY_BC, f"dataset.root={root}", "eval.every=10", "eval.episodes=2"])
    train(config, tmp_path / "run", progress=False, make_evaluator=Evaluator)  # evaluates at step 10, the last
    method, params, _, _ = load_trained(tmp_path / "run")
    caplog.clear()
    evaluator = Evaluator(method, episodes=2)
    assert "2 episodes do not split evenly over 4 devices: evaluating on one device" in caplog.text
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(name) if name.endswith("backend_compile_duration") else None)
    caplog.clear()
    first = evaluator(params, 10)
    assert compiles  # the first evaluation compiles the rollout
    assert ("evaluating 2 episodes of 300 steps in parallel MJX envs (compiling the rollout on first use) ..."
            in caplog.text)
    assert "evaluated 2 episodes in " in caplog.text
    others = [jax.tree.map(lambda p: p + 0.01 * k, params) for k in (1, 2)]
    compiles.clear()
    for other in others:  # as periodic evaluation does: new parameters, the same program
        later = evaluator(other)
    assert compiles == [] and evaluator._rollout._cache_size() == 1
    assert not np.allclose(first["rollout"]["observations"], later["rollout"]["observations"])
    assert first["figure"] is not None and first["summary"]["success_rate"] is not None
    assert len(first["figure"].legends) == 1
    assert "step 10, 2 episodes" in first["figure"].get_suptitle()
    assert "success rate" in first["figure"].get_suptitle()
    # the periodic evaluation during training logged both maze scores of the same parameters to TensorBoard
    logged = read_scalars(tmp_path / "run" / "policy" / "tensorboard")
    for key in ("normalized_score", "first_hit_score", "first_hit_stderr", "success_rate"):
        assert logged[f"eval/{key}"] == [(10, pytest.approx(first["summary"][key], rel=1e-5, abs=1e-5))]
    assert read_image_tags(tmp_path / "run" / "policy" / "tensorboard") == ["eval/rollouts"]

    # 8 episodes split over the 4 devices: each device holds 2 of every episode array, the values are the
    # one-device rollout's
    caplog.clear()
    split = Evaluator(method, episodes=8)
    result = split(params)
    assert "evaluating 8 episodes of 300 steps in parallel MJX envs over 4 devices" in caplog.text
    whole = make_rollout(split.env, split.policy, 8, split.env.max_episode_steps)(params, jax.random.PRNGKey(0))
    np.testing.assert_allclose(result["rollout"]["observations"], whole["observations"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result["rollout"]["returns"], whole["returns"], rtol=1e-5)
    sharded = split._rollout(put_replicated(params, split.mesh), jax.random.PRNGKey(0))
    assert {shard.data.shape for shard in sharded["returns"].addressable_shards} == {(2,)}
    assert len(sharded["observations"].sharding.device_set) == 4


KITCHEN_TASKS = ["microwave", "kettle", "light switch", "slide cabinet"]  # D4RL/kitchen/complete-v2's


@pytest.mark.parametrize("env_id,make_kwargs,episode_steps,reports_success", [
    ("Pendulum-v1", {}, 200, False), ("AdroitHandDoor-v1", {}, 200, True),
    ("FrankaKitchen-v1", {"tasks_to_complete": KITCHEN_TASKS}, 280, False)])
def test_diffrl_evaluate_falls_back_to_gymnasium_for_an_env_without_mjx_port(env_id, make_kwargs, episode_steps,
                                                                             reports_success, tmp_path, capsys, caplog):
    """A classic-control env, an Adroit hand and the Franka kitchen (the dataset's own eval spec; the kitchen's
    per-task goals are dicts): the score of the CPU evaluator, its policy split over the 4 devices, equals the same
    policy stepped by hand in gymnasium, one episode at a time on one device; the hand reports success."""
    root = tmp_path / "data"
    dataset_id = write_random_dataset(root, env_id, f"toy/{env_id.lower()}/random-v0", steps=10, **make_kwargs)
    config = apply_overrides(load_config("bc.py:hopper-medium"), [*TINY_BC, f"dataset.root={root}",
                                                                   f"dataset.id={dataset_id}"])
    train(config, tmp_path / "run", progress=False)
    capsys.readouterr()
    json_path = tmp_path / "not" / "yet" / "eval.json"  # its folders are created
    assert main(["evaluate", "--workdir", str(tmp_path / "run"), "--episodes", "4", "--seed", "7",
                 "--json", str(json_path)]) == 0
    assert f"{env_id} has no MJX port: evaluating in 4 gymnasium environments on the CPU" in caplog.text
    assert (f"evaluating 4 episodes of {episode_steps} steps in 4 gymnasium environments on the CPU, the policy over "
            "4 devices ..." in caplog.text)
    assert "evaluated 4 episodes in " in caplog.text
    assert "4/4 [" in capsys.readouterr().err  # the progress bar counted every episode
    summary = json.loads(json_path.read_text())

    # The same policy stepped by hand in gymnasium, episode k reset with seed 7 + k.
    method, params, _, _ = load_trained(tmp_path / "run")
    policy = method.policy()
    act = jax.jit(lambda obs: policy.act(params, (), obs, 0, None)[0])  # eager calls: the 3 cases 39.7 s, not 20.2
    returns, lengths = [], []
    for k in range(4):
        env = make_gym_env(env_id, **make_kwargs)
        obs, _ = env.reset(seed=7 + k)
        total, done, length = 0.0, False, 0
        while not done:
            action = act(np.asarray(by_hand_flat(obs), np.float32)[None])
            obs, reward, terminated, truncated, _ = env.step(np.asarray(action)[0])
            total, done, length = total + reward, terminated or truncated, length + 1
        returns.append(total)
        lengths.append(length)
    assert summary["episodes"] == 4 and (summary["success_rate"] is not None) == reports_success
    np.testing.assert_allclose(summary["episode_returns"], returns, rtol=1e-4)
    assert summary["episode_lengths"] == lengths
    assert summary["return_mean"] == pytest.approx(np.mean(returns), rel=1e-4)
    assert summary["normalized_score"] == pytest.approx(100 * (np.mean(returns) + 1500) / 1500, rel=1e-4)


def test_the_gymnasium_evaluator_draws_the_ants_paths_over_the_maze(tmp_path):
    """AntMaze on a CPU is evaluated in gymnasium (MuJoCo C) and drawn on the MJX env's maze: each panel's path is
    the torso's xy of the same policy stepped by hand in gymnasium, from the reset to the last of its 700 steps, with
    the goal star on the episode's desired goal."""
    root = tmp_path / "data"
    dataset_id = write_random_dataset(root, "AntMaze_UMaze-v4", "toy/antmaze/random-v0", episodes=2, steps=10,
                                      ref_scores=(0.0, 1.0))
    config = apply_overrides(load_config("bc.py:antmaze-umaze"), [*TINY_BC, f"dataset.root={root}",
                                                                  f"dataset.id={dataset_id}"])
    train(config, tmp_path / "run", progress=False)
    method, params, _, _ = load_trained(tmp_path / "run")
    evaluator = Evaluator(method, episodes=2, seed=5)
    assert evaluator.env is None  # the CPU takes gymnasium
    result = evaluator(params, 10)
    rollout = result["rollout"]
    assert rollout["valid"].sum(1).tolist() == (rollout["lengths"] + 1).tolist() == [701, 701]
    envs = [make_gym_env("AntMaze_UMaze-v4") for _ in range(2)]  # stepped in lockstep: the same batch of 2
    obs = [env.reset(seed=5 + k)[0] for k, env in enumerate(envs)]
    goals, paths = [o["desired_goal"] for o in obs], [[o["achieved_goal"]] for o in obs]
    for t in range(700):
        actions, _ = evaluator._act(params, (), np.stack([by_hand_flat(o) for o in obs]).astype(np.float32), t, None)
        obs = [env.step(np.asarray(a))[0] for env, a in zip(envs, actions)]
        for path, o in zip(paths, obs):
            path.append(o["achieved_goal"])
    panels = result["figure"].axes
    for k, (path, goal) in enumerate(zip(paths, goals)):
        np.testing.assert_allclose(rollout["observations"][k, :, -4:-2], path, atol=1e-5)
        segments = np.asarray(panels[k].collections[0].get_segments())
        np.testing.assert_allclose(segments[:, 0], np.asarray(path[:-1]), atol=1e-5)
        np.testing.assert_allclose(segments[-1, 1], path[-1], atol=1e-5)
        goal_star = [line for line in panels[k].lines if line.get_marker() == "*"]
        np.testing.assert_allclose(np.ravel(goal_star[0].get_data()), goal, atol=1e-6)
    assert np.linalg.norm(np.subtract(path[-1], path[0])) > 0.1  # the ant moved


def by_hand_flat(obs):
    """A dict observation as ``[observation, achieved_goal, desired_goal]``, a goal dict in sorted key order."""
    if not isinstance(obs, dict):
        return obs
    goal = lambda g: np.concatenate([g[key] for key in sorted(g)]) if isinstance(g, dict) else g
    return np.concatenate([obs["observation"], goal(obs["achieved_goal"]), goal(obs["desired_goal"])])


def test_kitchen_datasets_flatten_the_per_task_goal_dicts(tmp_path):
    """FrankaKitchen's goals are dicts of per-task arrays: the dataset holds ``[59 joint/object values,
    achieved goals, desired goals]``, each goal dict in sorted task order, and its slices say where they are."""
    from diffrl.data.minari_io import load_dataset

    dataset_id = write_random_dataset(tmp_path, "FrankaKitchen-v1", "toy/kitchen/random-v0", episodes=1, steps=3,
                                      tasks_to_complete=KITCHEN_TASKS)
    data = load_dataset(dataset_id, root=tmp_path)
    sizes = {"kettle": 7, "light switch": 2, "microwave": 1, "slide cabinet": 1}  # gymnasium-robotics' task goals
    assert data.observation_slices == {"observation": slice(0, 59), "achieved_goal": slice(59, 70),
                                       "desired_goal": slice(70, 81)}
    env = make_gym_env("FrankaKitchen-v1", tasks_to_complete=KITCHEN_TASKS)
    obs, _ = env.reset(seed=0)
    assert {task: goal.shape[0] for task, goal in obs["desired_goal"].items()} == sizes
    np.testing.assert_array_equal(data.observations[0], np.asarray(by_hand_flat(obs), np.float32))
    # the env lists its goals in task order, Minari's file in sorted order: both flatten to the same vector
    assert list(obs["desired_goal"]) == KITCHEN_TASKS
    np.testing.assert_array_equal(data.observations[0], np.asarray(flatten_observation(obs), np.float32))


def test_the_backend_is_mujoco_c_for_locomotion_on_a_cpu_and_for_envs_without_an_mjx_port(caplog):
    caplog.set_level(logging.INFO, logger="diffrl")
    assert choose_backend(gym.spec("Hopper-v5")) == "gym"
    assert "Hopper-v5: evaluating in 10 gymnasium environments (MuJoCo C), faster than MJX on a CPU" in caplog.text
    assert choose_backend(gym.spec("Hopper-v5"), "mjx") == "mjx"
    assert choose_backend(gym.spec("Pendulum-v1"), num_envs=3) == "gym"
    assert "Pendulum-v1 has no MJX port: evaluating in 3 gymnasium environments on the CPU" in caplog.text
    with pytest.raises(NoMJXPortError, match="'Pendulum-v1' has no MJX port"):
        choose_backend(gym.spec("Pendulum-v1"), "mjx")
    with pytest.raises(ValueError, match="unknown evaluation backend 'warp'; choose one of auto, mjx, mjx-warp, gym"):
        choose_backend(gym.spec("Hopper-v5"), "warp")
    assert choose_backend(gym.spec("Walker2d-v5"), "mjx-warp") == "mjx-warp"  # asked for, never chosen by auto
    with pytest.raises(ValueError, match="mjx-warp backend is offered for Hopper-v5, HalfCheetah-v5, Walker2d-v5, "
                                         "not PointMaze_UMaze-v3"):
        choose_backend(gym.envs.registration.EnvSpec("PointMaze_UMaze-v3"), "mjx-warp")
    with pytest.raises(NoMJXPortError, match="'Pendulum-v1' has no MJX port"):
        choose_backend(gym.spec("Pendulum-v1"), "mjx-warp")


def test_the_warp_backend_scores_a_hopper_policy_as_mujoco_c_does(tmp_path, caplog):
    """``diffrl evaluate --backend mjx-warp`` (MJX's Warp implementation, here on the CPU) and the gymnasium
    evaluator score the same policy alike: 16 episodes of the spec's 40 steps (other reset draws), the same mean
    return within 3 standard errors and 2%. The backend's plumbing (the spec's time limit, buffers for every
    episode, the summary); the Warp step itself is checked against MuJoCo C in ``test_envs_locomotion.py``."""
    caplog.set_level(logging.INFO, logger="diffrl")
    root = tmp_path / "data"
    dataset_id = write_random_dataset(root, "Hopper-v5", "toy/hopper/random-v0", steps=40, max_episode_steps=40)
    config = apply_overrides(load_config("bc.py:hopper-medium"), [*TINY_BC, f"dataset.root={root}",
                                                                   f"dataset.id={dataset_id}"])
    train(config, tmp_path / "run", progress=False)
    summaries = {}
    for backend in ("mjx-warp", "gym"):
        json_path = tmp_path / f"{backend}.json"
        assert main(["evaluate", "--workdir", str(tmp_path / "run"), "--episodes", "16", "--backend", backend,
                     "--no-plot", "--json", str(json_path)]) == 0
        summaries[backend] = json.loads(json_path.read_text())
    assert ("evaluating 16 episodes of 40 steps in parallel MJX envs (MJX's Warp implementation) (compiling the "
            "rollout on first use) ..." in caplog.text)
    warp, mujoco_c = summaries["mjx-warp"], summaries["gym"]
    assert (warp["backend"], mujoco_c["backend"]) == ("mjx-warp", "gym")
    tolerance = 3 * np.hypot(warp["return_stderr"], mujoco_c["return_stderr"]) + 0.02 * abs(mujoco_c["return_mean"])
    assert abs(warp["return_mean"] - mujoco_c["return_mean"]) < tolerance, (warp, mujoco_c)
