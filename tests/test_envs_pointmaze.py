"""MJX PointMaze against gymnasium-robotics PointMaze_*-v3, and its reset/goal/termination rules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.envs import mjx_contact
from diffrl.envs.pointmaze import GOAL_RADIUS, MazeLayout, PointMaze

PARITY_SCRIPT = Path(__file__).parent / "scripts" / "pointmaze_parity.py"


@pytest.fixture(scope="module")
def parity():
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(PARITY_SCRIPT)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_trajectories_match_gymnasium_robotics_step_by_step(parity):
    """Float64, identical start, goal and actions: observations agree to 1e-6 over 300 steps with wall contacts.

    U-Maze with the dense reward as a continuing task, Large with the sparse reward as an episodic task (it ends
    at the goal or the 800-step limit). In float32 the same rollouts stay within about 1e-3 until repeated wall
    contacts amplify rounding.
    """
    for gym_id, worst in parity["exact"].items():
        assert worst["initial_obs"] < 1e-6, gym_id
        assert worst["steps"] >= 200, gym_id
        assert worst["obs"] < 1e-6, (gym_id, worst)
        assert worst["reward"] < 1e-6, (gym_id, worst)
        assert worst["flags"] == 0, (gym_id, worst)


def test_parity_check_catches_mjx_stock_sphere_box_contacts(parity):
    """MJX's own sphere-convex collider drops contacts inside the geom margin; the check must see it."""
    assert max(worst["obs"] for worst in parity["stock"].values()) > 1e-3


CONTACT_REGISTRATION_SCRIPT = """
from mujoco.mjx._src.collision_driver import _COLLISION_FUNC
from mujoco.mjx._src.types import GeomType

pair, stock = (GeomType.SPHERE, GeomType.BOX), dict(_COLLISION_FUNC)
from diffrl.envs import pointmaze
assert _COLLISION_FUNC == stock, "importing diffrl.envs.pointmaze changed MJX's collision table"
pointmaze.PointMaze("umaze")
changed = {key for key, func in _COLLISION_FUNC.items() if func is not stock[key]}
assert changed == {pair} and _COLLISION_FUNC[pair].ncon == 1, changed
exact = _COLLISION_FUNC[pair]
pointmaze.PointMaze("open")
assert _COLLISION_FUNC[pair] is exact
"""


def test_exact_contact_is_registered_by_construction_not_by_import():
    """A fresh process: the import leaves MJX's table alone, the first PointMaze swaps in only (sphere, box)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CONTACT_REGISTRATION_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("installed", ["3.16.1", "3.18.0", "4.0.0", "nightly"])
def test_unsupported_mjx_release_is_refused_before_patching(monkeypatch, installed):
    monkeypatch.setattr(mjx_contact.importlib.metadata, "version", lambda name: installed)
    lowest, first_unsupported = mjx_contact.SUPPORTED_MJX_VERSIONS
    with pytest.raises(mjx_contact.UnsupportedMJXError, match=rf">={lowest},<{first_unsupported}, but {installed}"):
        mjx_contact.use_exact_sphere_box_contacts.__wrapped__()


def test_layout_cells_match_gymnasium_robotics_conversion():
    layout = MazeLayout(PointMaze("umaze").layout.maze_map)
    # U-Maze is 5 x 5: cell (1, 1) is at (-1, 1), cell (3, 3) at (1, -1)
    np.testing.assert_allclose(layout.cell_to_xy([(1, 1), (3, 3)]), [[-1.0, 1.0], [1.0, -1.0]])
    np.testing.assert_array_equal(layout.xy_to_cell(np.array([[-1.2, 0.8], [0.99, -1.4]])), [[1, 1], [3, 3]])
    assert len(layout.goal_cells) == 7 and len(layout.reset_cells) == 7


@pytest.fixture(scope="module")
def umaze():
    env = PointMaze("umaze", continuing_task=True, reset_target=True, max_episode_steps=50)
    return env, jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))


def test_wall_boxes_stand_on_every_wall_the_ball_can_reach():
    """The model's three movable wall boxes cover, for any ball position in a free cell, every wall cell whose box
    lies within 0.4 of the ball's centre (0.3 beyond its surface, 150 times the contact margin): checked against
    all wall cells of the large maze for 4,000 positions."""
    env = PointMaze("large")
    layout = env.layout
    rng = np.random.default_rng(0)
    free = np.argwhere(layout.free)
    xy = layout.cell_to_xy(free[rng.integers(len(free), size=4000)]) + rng.uniform(-0.5, 0.5, (4000, 2))
    boxes = np.asarray(jax.jit(jax.vmap(env.wall_boxes))(jnp.asarray(xy)))  # [N, 3, xyz]
    walls = layout.cell_to_xy(np.argwhere(~layout.free))  # [W, 2]
    gap = np.linalg.norm(np.maximum(np.abs(xy[:, None] - walls[None]) - 0.5, 0), axis=-1)  # centre to box
    for n, w in zip(*np.nonzero(gap < 0.4)):
        placed = boxes[n][boxes[n, :, 2] > 0, :2]
        assert np.any(np.all(np.isclose(placed, walls[w]), axis=-1)), (xy[n], walls[w], boxes[n])
    assert (gap < 0.4).sum() > 1000  # many positions are near walls
    assert np.all((boxes[..., 2] > 0).sum(-1) <= 3)


def test_reset_distribution(umaze):
    env, reset, _ = umaze
    states = reset(jax.random.split(jax.random.PRNGKey(0), 2000))
    goal, start = np.asarray(states.info["goal"]), np.asarray(states.obs[:, :2])
    centres = env.layout.cell_to_xy(env.layout.goal_cells)
    # goal and start are free-cell centres plus U(-0.25, 0.25) noise, the start never in the goal's cell
    goal_offset = np.abs(goal[:, None] - centres[None]).max(-1).min(-1)
    start_offset = np.abs(start[:, None] - centres[None]).max(-1).min(-1)
    assert goal_offset.max() <= 0.25 + 1e-6 and start_offset.max() <= 0.25 + 1e-6
    assert np.all(env.layout.xy_to_cell(start).tolist() != env.layout.xy_to_cell(goal).tolist())
    assert np.all(np.asarray(states.obs[:, 2:4]) == 0.0)
    np.testing.assert_array_equal(states.obs[:, 4:6], states.obs[:, :2])
    np.testing.assert_array_equal(states.obs[:, 6:], goal)
    cells = env.layout.xy_to_cell(goal)
    counts = np.unique(cells[:, 0] * 10 + cells[:, 1], return_counts=True)[1]
    assert len(counts) == 7 and counts.min() > 2000 / 7 * 0.75  # uniform over the seven free cells


def test_goal_redraw_termination_and_truncation(umaze):
    env, reset, step = umaze
    # four goals drawn by the batch-of-2000 reset of test_reset_distribution (one compiled program less)
    goal = reset(jax.random.split(jax.random.PRNGKey(1), 2000)).info["goal"][:4]
    # place every point on its goal: success, reward 1, the observed goal is the old one, then a new far goal
    on_goal = jax.jit(jax.vmap(env.reset_to))(goal, jnp.zeros((4, 2)), goal, jax.random.split(jax.random.PRNGKey(2), 4))
    after = step(on_goal, jnp.zeros((4, 2)))
    assert np.all(after.info["success"]) and np.all(after.reward == 1.0) and not np.any(after.terminated)
    np.testing.assert_array_equal(after.obs[:, 6:], goal)
    assert np.all(np.linalg.norm(np.asarray(after.info["goal"]) - np.asarray(after.obs[:, :2]), axis=-1) > GOAL_RADIUS)
    # an episodic task terminates on the goal instead (the same maze: its states are the continuing task's)
    episodic = PointMaze("umaze", continuing_task=False)
    state = jax.jit(jax.vmap(episodic.step))(on_goal, jnp.zeros((4, 2)))
    assert np.all(state.terminated) and np.all(state.info["success"])
    # truncation at the time limit, never before
    state = on_goal
    for k in range(50):
        assert not np.any(state.truncated)
        state = step(state, jnp.zeros((4, 2)))
    assert np.all(state.truncated) and np.all(state.step == 50)


def test_bad_maze_arguments():
    with pytest.raises(ValueError, match="unknown maze 'tiny'"):
        PointMaze("tiny")
    with pytest.raises(ValueError, match="reward_type"):
        PointMaze("umaze", reward_type="shaped")


def test_line_search_loop_stops_per_environment_as_mjx_scan_does():
    """The while loop that replaces MJX's line-search scan: at most ``max_iter`` bodies, none once ``cond`` fails,
    each batch lane on its own under vmap; installed by building an env."""
    from mujoco.mjx._src import solver

    def loop(max_iter):
        return jax.vmap(lambda x: mjx_contact._bounded_while_loop(lambda v: v < 10, lambda v: v + 3, x, max_iter))

    start = jnp.array([0, 8, 20])
    assert loop(50)(start).tolist() == [12, 11, 20]
    assert loop(2)(start).tolist() == [6, 11, 20]
    PointMaze("umaze")
    assert solver._while_loop_scan is mjx_contact._bounded_while_loop
