"""MJX AntMaze against gymnasium-robotics AntMaze_*-v4 and -v5: step parity, the wall boxes, the registrations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.envs.antmaze import AntMaze
from diffrl.envs.registry import make_env

PARITY_SCRIPT = Path(__file__).parent / "scripts" / "antmaze_parity.py"
ANT_REACH = 1.22  # leg tip at 0.8 * sqrt(2) from the torso centre, plus the capsule radius and the contact margin


@pytest.fixture(scope="module")
def parity():
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(PARITY_SCRIPT), "300"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_steps_match_gymnasium_robotics(parity):
    """Float64, one step at a time from gymnasium's state, 300 steps of flailing beside U-Maze's walls.

    Steps whose contacts stay the same through the five physics steps agree to 1e-3 in the observation (RK4
    stages, 1e-13 with Euler); steps where a foot lands or lifts off, or a leg touches a wall, can differ more (MJX
    computes capsule-box contacts with its own routine, not MuJoCo C's ``mjc_CapsuleBox``), so only the median over
    all steps is held to 1e-4. Without diffrl's plane-capsule frames a tilted leg on the floor is pushed along other
    friction directions: steady steps then differ by up to 0.82, and the free run by 0.04.
    """
    assert parity["steps"] == 300
    assert parity["wall_contact_steps"] >= 3  # the legs did hit the walls, in MuJoCo C
    assert parity["mjx_wall_contact_steps"] >= 1  # and the movable boxes pushed back in MJX
    assert 0 < parity["success_steps"] < 300  # the goal, 0.4 from the start, is reached and left
    assert parity["steady_obs"] < 1e-3, parity
    assert parity["median_obs"] < 1e-4, parity
    assert parity["reward"] == 0.0 and parity["flags"] == 0
    assert parity["free_qpos"] < 1e-3  # a free run of the first 30 steps stays on gymnasium's trajectory


def test_v5_adds_ant_v5s_clipped_contact_forces(parity):
    """The same run through the v5 env: its 78 contact forces (``mjx.rne_postconstraint`` after the step, clipped)
    against MuJoCo C's; gymnasium's AntMaze_UMaze-v5 set to each state observes exactly v4's observation plus
    them, and 0 after a reset. Forces left uncomputed (0) would be up to 1 off on the steps that touch."""
    assert parity["v5_layout"] == 0.0 and parity["reset_forces"] == 0.0
    assert parity["touching_forces"] >= 50  # the ant stands on the floor: forces are there to compare
    assert parity["steady_forces"] < 1e-2, parity
    assert parity["median_forces"] < 1e-6, parity


def test_wall_boxes_stand_on_every_wall_the_ant_can_reach():
    """In the large maze, for 4,000 torso positions in free cells, every wall cell whose box lies within the ant's
    reach of the torso has one of the three movable boxes on it."""
    env = AntMaze("large")
    layout = env.layout
    free = np.argwhere(layout.free)
    rng = np.random.default_rng(0)
    cells = free[rng.integers(len(free), size=4000)]
    xy = layout.cell_to_xy(cells) + rng.uniform(-2.0, 2.0, (4000, 2))
    boxes = np.asarray(jax.jit(jax.vmap(env.wall_boxes))(jnp.asarray(xy, jnp.float32)))
    walls = layout.cell_to_xy(np.argwhere(~layout.free))
    for point, placed in zip(xy, boxes):
        gap = np.maximum(np.abs(walls - point) - 2.0, 0.0)  # distance from the torso centre to each wall box
        reachable = walls[np.linalg.norm(gap, axis=1) < ANT_REACH]
        for wall in reachable:
            assert np.any(np.all(np.isclose(placed[:, :2], wall, atol=1e-5), axis=1)), (point, wall, placed)
        assert np.all((placed[:, 2] == 1.0) | (placed[:, 2] == -10.0))  # standing on the floor, or parked


def test_registrations_give_maps_time_limits_and_layout():
    env = make_env("AntMaze_Medium_Diverse_GR-v4")
    assert (env.name, env.max_episode_steps, env.observation_size, env.action_size) == (
        "AntMaze_Medium_Diverse_GR-v4", 1000, 31, 8)
    from gymnasium_robotics.envs.maze import maps

    combined = sorted(map(tuple, np.argwhere(np.array(maps.MEDIUM_MAZE_DIVERSE_GR, dtype=object) == "c")))
    assert sorted(map(tuple, env.layout.goal_cells)) == combined == sorted(map(tuple, env.layout.reset_cells))
    umaze = make_env("AntMaze_UMazeDense-v4")
    assert (umaze.max_episode_steps, umaze.reward_type) == (700, "dense")
    # cell (i, j) centre: x = 4 (j + 0.5) - 2 width, y = 2 length - 4 (i + 0.5)
    np.testing.assert_allclose(umaze.layout.cell_to_xy(np.array([1, 1])), [-4.0, 4.0])
    v5 = make_env("AntMaze_Large-v5")
    assert (v5.name, v5.version, v5.max_episode_steps, v5.observation_size) == ("AntMaze_Large-v5", "v5", 1000, 109)
    with pytest.raises(ValueError, match="version"):
        AntMaze("umaze", version="v3")


def test_ultra_is_plandqs_maze_with_its_time_limit_in_both_envs():
    """PlanDQ's Ultra maze (12 x 16 cells) by name in MJX; the evaluation spec of ``antmaze-ultra-diverse`` builds
    the same maze, start and goal in gymnasium-robotics and in MJX, with the 2,000-step limit of antmaze-ultra-v0."""
    import dataclasses

    import gymnasium

    from diffrl.envs.gym_fallback import make_gym_env
    from diffrl.envs.third_party import import_gymnasium_robotics_quietly
    from diffrl.experts.antmaze_data import DATASETS, EVAL_MAPS

    env = AntMaze("ultra")
    assert (env.maze_name, env.max_episode_steps, env.layout.free.shape, int(env.layout.free.sum())) == (
        "ultra", 2000, (12, 16), 89)
    env_id, maze_map = DATASETS["antmaze-ultra-diverse"]
    gymnasium.register_envs(import_gymnasium_robotics_quietly())
    spec = gymnasium.spec(env_id)
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "maze_map": EVAL_MAPS["ultra"]}, max_episode_steps=2000)
    mjx_env, gym_env = make_env(spec), make_gym_env(spec)
    obs, _ = gym_env.reset(seed=0)
    assert (mjx_env.maze_name, mjx_env.max_episode_steps, gym_env.spec.max_episode_steps) == ("ultra", 2000, 2000)
    np.testing.assert_array_equal(mjx_env.layout.free, env.layout.free)
    np.testing.assert_array_equal(gym_env.unwrapped.maze.maze_map, EVAL_MAPS["ultra"])
    assert mjx_env.layout.reset_cells.tolist() == [[1, 1]] and mjx_env.layout.goal_cells.tolist() == [[10, 14]]
    start, goal = mjx_env.layout.cell_to_xy(np.array([[1, 1], [10, 14]]))  # top left, bottom right
    assert np.abs(obs["achieved_goal"] - start).max() <= 1.0 and np.abs(obs["desired_goal"] - goal).max() <= 1.0
    assert {kind for row in maze_map for kind in row} == {1, "c"}  # the data's: every free cell a reset and goal
    gym_env.close()
