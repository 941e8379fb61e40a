"""PointMaze in MJX, reproducing gymnasium-robotics ``PointMaze_{UMaze,Open,Medium,Large}[Dense]-v3``.

Reproduced from gymnasium-robotics 1.4 (``envs/maze/point_maze.py``, ``maze_v4.py``, ``point.py``,
``assets/point/point.xml``, ``maps.py``):

* model: a 0.1-radius sphere on two slide joints (damping 1, gear 100 motors, ctrl in [-1, 1]), zero gravity,
  Euler integrator, timestep 0.01, frame skip 1; every wall cell a box of side ``maze_size_scaling = 1`` and
  height ``0.4``; cell ``(i, j)`` has centre ``x = (j + 0.5) - width / 2``, ``y = length / 2 - (i + 0.5)``.
* step: clip the action to [-1, 1], clip ``qvel`` to [-5, 5], one physics step; observation
  ``[qpos, qvel]``, achieved goal ``qpos``, desired goal the goal *before* any re-draw on this step.
* reward: sparse ``1{d <= 0.45}`` or dense ``exp(-d)``, ``d = |achieved - goal|``; ``success = d <= 0.45``;
  ``terminated = success`` only when ``continuing_task=False``.
* continuing tasks with ``reset_target=True`` draw a new goal (until it is more than 0.45 away) once the goal is
  reached (``maze_v4.update_goal``; the older ``maze.py`` re-drew once, ignoring ``reset_target``).
* reset: goal cell uniform over goal cells plus ``U(-0.25, 0.25)`` per coordinate; reset cell uniform over reset
  cells whose centre is more than 0.5 from the goal, plus the same noise; zero velocity.

Contacts: the model holds three wall boxes, not one per wall cell. Before every physics step they are moved (as
mocap bodies) onto the wall cells among the three neighbours of the ball's cell on the side of the ball's
quadrant (the cell beside it in x, the one beside it in y, the diagonal one); the rest of the walls lie at least
``0.5 - 0.1`` from the ball's surface, 200 times the contact margin, so the contacts, and the physics, are those
of the full maze, at a cost that no longer grows with its size (see :meth:`PointMaze.wall_boxes`).

A :class:`MazeProtocol` holds what the two published protocols set differently: :data:`POINTMAZE_V3` above, and
:data:`MAZE2D_V1`, the evaluation env of D4RL's ``maze2d-*-v1`` (``d4rl/pointmaze/maze_model.py``): goal radius
0.5, the fixed target exactly at the goal cell, resets uniform over every free cell (the goal's included) plus
``U(-0.1, 0.1)``, initial velocity ``N(0, 0.1^2)``. D4RL's cell ``(i, j)`` spans qpos ``[i - 0.7, i + 0.3]``
(its particle body sits at ``(1.2, 1.2)``, its walls at ``(i + 1, j + 1)``), so its integer target and reset
points lie 0.2 from the cell centre along both axes; here that is the offset ``(+0.2, -0.2)`` in ``(x, y)``
(D4RL's qpos is ``(row, column)``, gymnasium's ``x`` runs along columns and ``y`` against rows). The physics
(sphere, gear, damping, timestep, clipping) is the same in both.

Flat observation layout (:data:`diffrl.spaces.DICT_OBSERVATION_KEYS`): ``[x, y, vx, vy, ax, ay, gx, gy]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from diffrl.envs.base import Env, EnvState, put_model
from diffrl.envs.maze_plot import maze_figure
from diffrl.envs.mjx_contact import (
    use_early_exit_linesearch,
    use_exact_sphere_box_contacts,
)

RESET, GOAL, COMBINED = "r", "g", "c"

# Maze layouts of gymnasium-robotics ``maps.py`` (1 = wall, 0 = free).
MAZE_MAPS = {
    "open": [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ],
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}

# Single-goal evaluation maps used for the public D4RL/pointmaze datasets' reference scores
# (minari-dataset-generation-scripts, scripts/pointmaze/create_pointmaze_dataset.py, EVAL_ENV_MAPS).
EVAL_GOAL_CELLS = {"open": (2, 3), "umaze": (1, 1), "medium": (6, 6), "large": (7, 9)}

# gymnasium-robotics registration: max_episode_steps per maze.
MAX_EPISODE_STEPS = {"open": 300, "umaze": 300, "medium": 600, "large": 800}
GYM_IDS = {"open": "PointMaze_Open", "umaze": "PointMaze_UMaze", "medium": "PointMaze_Medium",
           "large": "PointMaze_Large"}

GOAL_RADIUS = 0.45
MAZE_HEIGHT = 0.4
WALL_BOXES = 3  # the walls that can touch the ball: beside it in x, in y, and diagonally
PARKED_Z = -10.0  # height of a wall box with no wall to stand for (far below the ball)
POSITION_NOISE = 0.25
VELOCITY_LIMIT = 5.0


@dataclasses.dataclass(frozen=True)
class MazeProtocol:
    """What a maze benchmark's env sets: when the goal is reached and how episodes start."""

    name: str
    goal_radius: float  # success and sparse reward: ``||xy - goal|| <= goal_radius``
    position_noise: float  # resets: ``U(-n, n)`` per coordinate around the reset point
    goal_noise: float  # goals: ``U(-n, n)`` per coordinate around the goal cell's point
    velocity_noise: float  # resets: initial velocity ``N(0, n^2)``
    resets_in_every_free_cell: bool  # else the reset cells whose centre is more than half a cell from the goal
    cell_offset: tuple[float, float]  # goal and reset points relative to the cell centre, (x, y)


POINTMAZE_V3 = MazeProtocol("pointmaze-v3", GOAL_RADIUS, POSITION_NOISE, POSITION_NOISE, 0.0, False, (0.0, 0.0))
MAZE2D_V1 = MazeProtocol("maze2d-v1", 0.5, 0.1, 0.0, 0.1, True, (0.2, -0.2))

_POINT_MJCF = """<mujoco>
  <compiler inertiafromgeom="true" angle="radian" coordinate="local"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
  <worldbody>
    <!-- the ground collides with nothing: the ball has no z joint, so its contact (J = 0) never moves it, and in
         MJX it keeps the line search iterating (24 steps instead of 0-1) -->
    <geom name="ground" size="40 40 0.25" pos="0 0 -0.1" type="plane" contype="0" conaffinity="0"/>
    <!-- wall boxes moved next to the ball at every step; conaffinity 2: they touch the ball only -->
    <body name="particle" pos="0 0 0">
      <geom name="particle_geom" type="sphere" size="0.1" contype="1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
{walls}
  </worldbody>
  <actuator>
    <motor name="motor_x" joint="ball_x" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
    <motor name="motor_y" joint="ball_y" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>"""


class MazeLayout:
    """Cells of a maze map and the cell <-> (x, y) conversion of gymnasium-robotics ``Maze``."""

    def __init__(self, maze_map: Sequence[Sequence], scaling: float = 1.0, height: float = MAZE_HEIGHT):
        self.maze_map = [list(row) for row in maze_map]
        self.length, self.width = len(self.maze_map), len(self.maze_map[0])
        self.scaling, self.height = scaling, height
        self.x_center, self.y_center = self.width / 2 * scaling, self.length / 2 * scaling
        cells = {kind: [] for kind in (RESET, GOAL, COMBINED, 0)}
        for i, row in enumerate(self.maze_map):
            for j, kind in enumerate(row):
                if kind != 1:
                    cells[kind].append((i, j))
        goals, resets, combined = cells[GOAL], cells[RESET], cells[COMBINED]
        if not goals and not resets and not combined:
            combined = cells[0]
        elif not resets and not combined:
            resets = cells[0]
        elif not goals and not combined:
            goals = cells[0]
        self.goal_cells = np.array(goals + combined, np.int32).reshape(-1, 2)
        self.reset_cells = np.array(resets + combined, np.int32).reshape(-1, 2)
        self.free = np.array([[kind != 1 for kind in row] for row in self.maze_map])
        self._walls = np.pad(~self.free, 1, constant_values=True)  # cell (i, j) at [i + 1, j + 1]

    def cell_to_xy(self, cells, xp=np):
        """Centres of ``cells`` (``[..., (i, j)]``); works on numpy or jax arrays."""
        cells = xp.asarray(cells)
        x = (cells[..., 1] + 0.5) * self.scaling - self.x_center
        y = self.y_center - (cells[..., 0] + 0.5) * self.scaling
        return xp.stack([x, y], axis=-1)

    def xy_to_cell(self, xy, xp=np):
        """``floor`` of the inverse map, as ``Maze.cell_xy_to_rowcol``; works on numpy or jax arrays."""
        i = xp.floor((self.y_center - xy[..., 1]) / self.scaling)
        j = xp.floor((xy[..., 0] + self.x_center) / self.scaling)
        return xp.stack([i, j], axis=-1).astype(xp.int32)

    def is_wall(self, cells, xp=np):
        """Whether ``cells`` (``[..., (i, j)]``) are walls; a cell outside the map counts as one."""
        cells = xp.asarray(cells)
        # the padded map's border row / column stands for everything beyond it
        i, j = xp.clip(cells[..., 0], -1, self.length) + 1, xp.clip(cells[..., 1], -1, self.width) + 1
        return xp.asarray(self._walls)[i, j]

    def wall_box_xml(self, contype: int, conaffinity: int) -> str:
        """:data:`WALL_BOXES` mocap bodies, each a box the size of a wall cell, parked until a step places them."""
        h, s = self.height / 2 * self.scaling, 0.5 * self.scaling
        return "\n".join(f'    <body name="wall_{k}" mocap="true" pos="0 0 {PARKED_Z}">\n'
                         f'      <geom name="wall_{k}" size="{s} {s} {h}" type="box" contype="{contype}" '
                         f'conaffinity="{conaffinity}"/>\n'
                         '    </body>' for k in range(WALL_BOXES))

    def wall_boxes(self, xy) -> jnp.ndarray:
        """``[WALL_BOXES, 3]`` positions of the wall boxes for an agent at ``xy``: on the wall cells among its cell's
        neighbours beside it in x, in y and diagonally, on the side of the quadrant it is in (the only walls that a
        body reaching less than half a cell from ``xy`` can touch); a neighbour that is free gets a box parked at
        ``PARKED_Z``."""
        cell = self.xy_to_cell(xy, xp=jnp)
        centre = self.cell_to_xy(cell, xp=jnp)
        column = jnp.where(xy[0] >= centre[0], 1, -1)  # x grows with the column
        row = jnp.where(xy[1] >= centre[1], -1, 1)  # y falls as the row grows
        neighbours = cell + jnp.stack([jnp.stack([0, column]), jnp.stack([row, 0]), jnp.stack([row, column])])
        is_wall = self.is_wall(neighbours, xp=jnp)
        height = self.height / 2 * self.scaling
        placed = jnp.concatenate([self.cell_to_xy(neighbours, xp=jnp), jnp.full((WALL_BOXES, 1), height)], -1)
        parked = jnp.asarray([0.0, 0.0, PARKED_Z])
        return jnp.where(is_wall[:, None], placed, parked).astype(xy.dtype)

    def mjcf(self) -> str:
        """The point model with :data:`WALL_BOXES` movable wall boxes (conaffinity 2: they touch the ball only)."""
        return _POINT_MJCF.replace("{walls}", self.wall_box_xml(contype=1, conaffinity=2))


class MazeGoalEnv(Env):
    """What PointMaze and AntMaze share (gymnasium-robotics ``maze_v4.MazeEnv``): the maze, goals and resets drawn
    by a :class:`MazeProtocol`, the sparse or dense goal reward, ``success``, continuing tasks and goal re-draws.

    Subclasses build ``self.model``, step the agent's physics and give ``_observation(data, goal)``; xy is
    ``qpos[:2]`` in both."""

    reports_success = True

    def __init__(self, maze: str | Sequence[Sequence], reward_type: str, continuing_task: bool, reset_target: bool,
                 protocol: MazeProtocol, scaling: float = 1.0, height: float = MAZE_HEIGHT):
        if isinstance(maze, str):
            if maze not in MAZE_MAPS:
                raise ValueError(f"unknown maze {maze!r}; choose one of {', '.join(MAZE_MAPS)} or pass a map")
            maze_name, maze_map = maze, MAZE_MAPS[maze]
        else:
            maze_name, maze_map = "custom", maze
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        self.maze_name = maze_name
        self.layout = MazeLayout(maze_map, scaling, height)
        if len(self.layout.goal_cells) == 0 or len(self.layout.reset_cells) == 0:
            raise ValueError("the maze map has no free cell for goals or resets")
        self.reward_type = reward_type
        self.protocol = protocol
        self.continuing_task = continuing_task
        self.reset_target = reset_target
        reset_cells = np.argwhere(self.layout.free) if protocol.resets_in_every_free_cell else self.layout.reset_cells
        offset = np.asarray(protocol.cell_offset) * self.layout.scaling
        self._goal_xy = jnp.asarray(self.layout.cell_to_xy(self.layout.goal_cells) + offset, jnp.float32)
        self._reset_xy = jnp.asarray(self.layout.cell_to_xy(reset_cells) + offset, jnp.float32)

    # -- goals and resets ----------------------------------------------------------------------------------------
    def _noise(self, rng, scale: float) -> jnp.ndarray:
        return jax.random.uniform(rng, (2,), minval=-scale, maxval=scale) * self.layout.scaling

    def _draw_goal(self, rng) -> jnp.ndarray:
        rng_cell, rng_noise = jax.random.split(rng)
        cell = self._goal_xy[jax.random.randint(rng_cell, (), 0, self._goal_xy.shape[0])]
        return cell + self._noise(rng_noise, self.protocol.goal_noise)

    def _draw_reset(self, rng, goal) -> jnp.ndarray:
        """Uniform over the reset cells (pointmaze-v3: those whose centre is further than half a cell from the goal,
        the law of its rejection sampling), plus the protocol's position noise."""
        rng_cell, rng_noise = jax.random.split(rng)
        allowed = jnp.ones(self._reset_xy.shape[0], bool)
        if not self.protocol.resets_in_every_free_cell:
            allowed = jnp.linalg.norm(self._reset_xy - goal, axis=-1) > 0.5 * self.layout.scaling
        index = jax.random.choice(rng_cell, self._reset_xy.shape[0], p=allowed / jnp.sum(allowed))
        return self._reset_xy[index] + self._noise(rng_noise, self.protocol.position_noise)

    def wall_boxes(self, qpos) -> jnp.ndarray:
        """:meth:`MazeLayout.wall_boxes` for the agent at ``qpos[:2]``."""
        return self.layout.wall_boxes(qpos[:2])

    def reset_to(self, qpos, qvel, goal, rng: jax.Array) -> EnvState:
        """A state at given joint positions, velocities and goal (``MujocoEnv.set_state``: evaluation from fixed
        starts, parity checks)."""
        data = mjx.make_data(self.model)
        qpos = jnp.asarray(qpos, data.qpos.dtype)
        data = data.replace(qpos=qpos, qvel=jnp.asarray(qvel, data.qvel.dtype), mocap_pos=self.wall_boxes(qpos))
        data = mjx.forward(self.model, data)
        goal = jnp.asarray(goal, data.qpos.dtype)
        success = jnp.linalg.norm(data.qpos[:2] - goal) <= self.protocol.goal_radius
        return EnvState(
            data=data, obs=self._observation(data, goal), reward=jnp.zeros((), data.qpos.dtype),
            terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), step=jnp.zeros((), jnp.int32), rng=rng,
            info={"success": success, "goal": goal},
        )

    def _stepped(self, state: EnvState, data) -> EnvState:
        """The state after ``state``'s physics advanced to ``data``: goal outcome, observation, time limit."""
        reward, success, terminated, goal, rng = self._goal_outcome(data.qpos[:2], state.info["goal"], state.rng)
        steps = state.step + 1
        return EnvState(
            data=data, obs=self._observation(data, state.info["goal"]), reward=reward, terminated=terminated,
            truncated=steps >= self.max_episode_steps, step=steps, rng=rng, info={"success": success, "goal": goal},
        )

    def _goal_outcome(self, xy, goal, rng):
        """``(reward, success, terminated, goal, rng)`` after a step that ended at ``xy`` (``maze_v4``: reward and
        success against the goal before any re-draw, then ``update_goal``)."""
        distance = jnp.linalg.norm(xy - goal)
        success = distance <= self.protocol.goal_radius
        reward = success.astype(xy.dtype) if self.reward_type == "sparse" else jnp.exp(-distance)
        terminated = success if not self.continuing_task else jnp.zeros((), bool)
        rng, rng_goal = jax.random.split(rng)
        if self.continuing_task and self.reset_target and self._goal_xy.shape[0] > 1:
            goal = jax.lax.cond(success, lambda: self._redraw_goal(rng_goal, xy), lambda: goal)
        return reward.astype(xy.dtype), success, terminated, goal, rng

    def _redraw_goal(self, rng, achieved) -> jnp.ndarray:
        """``maze_v4.update_goal``: draw goals until one is further than the goal radius from the point."""

        def far_enough(carry):
            return jnp.linalg.norm(achieved - carry[1]) <= self.protocol.goal_radius

        def draw(carry):
            key, _ = carry
            key, sub = jax.random.split(key)
            return key, self._draw_goal(sub)

        return jax.lax.while_loop(far_enough, draw, draw((rng, jnp.zeros(2))))[1]


class PointMaze(MazeGoalEnv):
    """MJX PointMaze with the gymnasium-robotics ``PointMaze_*-v3`` dynamics, rewards and resets."""

    observation_size = 8
    action_size = 2

    def __init__(
        self,
        maze: str | Sequence[Sequence] = "umaze",
        reward_type: str = "sparse",
        continuing_task: bool = True,
        reset_target: bool = False,
        max_episode_steps: int | None = None,
        protocol: MazeProtocol = POINTMAZE_V3,
    ):
        super().__init__(maze, reward_type, continuing_task, reset_target, protocol)
        self.max_episode_steps = int(max_episode_steps or MAX_EPISODE_STEPS.get(self.maze_name, 300))
        suffix = "Dense" if reward_type == "dense" else ""
        self.name = f"{GYM_IDS.get(self.maze_name, 'PointMaze_Custom')}{suffix}-v3"
        self.mj_model = mujoco.MjModel.from_xml_string(self.layout.mjcf())
        use_exact_sphere_box_contacts()  # before MJX sizes (make_data) or traces (step) this model's contacts
        use_early_exit_linesearch()
        self.model = put_model(self.mj_model)

    # -- API -----------------------------------------------------------------------------------------------------
    def reset(self, rng: jax.Array) -> EnvState:
        rng, rng_goal, rng_reset = jax.random.split(rng, 3)
        goal = self._draw_goal(rng_goal)
        velocity = jnp.zeros(2)
        if self.protocol.velocity_noise:
            rng, rng_velocity = jax.random.split(rng)
            velocity = self.protocol.velocity_noise * jax.random.normal(rng_velocity, (2,))
        return self.reset_to(self._draw_reset(rng_reset, goal), velocity, goal, rng)

    def step(self, state: EnvState, action: jnp.ndarray) -> EnvState:
        data = state.data
        data = data.replace(
            qvel=jnp.clip(data.qvel, -VELOCITY_LIMIT, VELOCITY_LIMIT),
            ctrl=jnp.clip(jnp.asarray(action, data.ctrl.dtype), -1.0, 1.0),
            mocap_pos=self.wall_boxes(data.qpos),
        )
        return self._stepped(state, mjx.step(self.model, data))

    @staticmethod
    def _observation(data, goal) -> jnp.ndarray:
        return jnp.concatenate([data.qpos, data.qvel, data.qpos[:2], goal])

    def draw_episodes(self, observations, valid, planned_states=None, titles=None):
        """Paths over the maze (the observation's ``xy``), the plans' ``xy`` and the goals (its last two entries)."""
        observations = np.asarray(observations)
        plans = None if planned_states is None else np.asarray(planned_states)[..., :2]
        return maze_figure(self.layout, observations[:, :, :2], plans=plans, goals=observations[:, 0, -2:],
                           titles=titles, valid=valid, max_panels=len(observations))

    def evaluation_env(self, protocol: MazeProtocol = POINTMAZE_V3) -> "PointMaze":
        """The single-goal evaluation env of ``protocol`` on this maze (continuing, goal never re-drawn): the map of
        the public pointmaze datasets' reference scores, or D4RL's maze2d-v1 env (same goal cells)."""
        env = PointMaze(evaluation_map(self.maze_name), self.reward_type, continuing_task=True, reset_target=False,
                        max_episode_steps=MAX_EPISODE_STEPS[self.maze_name], protocol=protocol)
        env.maze_name = self.maze_name
        env.name = self.name if protocol == POINTMAZE_V3 else maze2d_id(self.maze_name)
        return env


def evaluation_map(maze: str) -> list[list]:
    """The maze's map with its single evaluation goal cell marked."""
    if maze not in EVAL_GOAL_CELLS:
        raise ValueError(f"no reference evaluation map for maze {maze!r}; choose one of {', '.join(EVAL_GOAL_CELLS)}")
    maze_map = [list(row) for row in MAZE_MAPS[maze]]
    i, j = EVAL_GOAL_CELLS[maze]
    maze_map[i][j] = GOAL
    return maze_map


def maze2d_id(maze: str) -> str:
    """The gymnasium id of the maze2d-v1 evaluation env (:class:`diffrl.envs.maze2d_gym.Maze2DEnv`)."""
    return f"diffrl/Maze2D_{GYM_IDS[maze].removeprefix('PointMaze_')}-v1"


@functools.lru_cache(maxsize=None)
def make_pointmaze(name: str, **kwargs) -> PointMaze:
    """``make_pointmaze("umaze", reward_type="dense")``; cached, so the MJX model is built once per setting."""
    return PointMaze(name, **kwargs)
