"""AntMaze in MJX, reproducing gymnasium-robotics ``AntMaze_{UMaze,Open,Medium,Large}[_Diverse_G[R]][Dense]-v4``
and, as an option, ``-v5`` (:func:`diffrl.envs.registry.make_env` takes those ids; :class:`AntMaze` takes a maze
name or any map).

Reproduced from gymnasium-robotics 1.4 (``envs/maze/ant_maze_v4.py``, ``maze_v4.py``, ``maps.py``, the v4
registrations) and gymnasium's ``Ant-v4`` (``envs/mujoco/ant_v4.py``, ``assets/ant.xml``), the version the
Minari ``D4RL/antmaze/*-v1`` datasets record:

* model: gymnasium's ``ant.xml`` (RK4, timestep 0.01, frame skip 5, gear-150 motors, ctrl in [-1, 1]); the maze
  cells are ``maze_size_scaling = 4`` wide and the walls ``maze_height = 0.5`` (x 4) high, boxes with the ant
  model's default geom settings (condim 3, friction ``1 0.5 0.5``, margin 0.01).
* step: ``ctrl = action`` (MuJoCo clamps it to the ctrlrange), five physics steps. The ant's own reward and
  health termination are ignored (``AntMazeEnv.step`` keeps only its observation).
* observation: ``observation = [qpos[2:], qvel]`` (27, no contact forces), ``achieved_goal = qpos[:2]``,
  ``desired_goal`` the goal before any re-draw on this step; flat ``[observation, achieved_goal, desired_goal]``.
* reward, success, termination, goal re-draws and resets: ``maze_v4`` as for PointMaze (goal radius 0.45, cell
  and goal noise ``U(-0.25, 0.25) x 4`` per coordinate, resets in a reset cell more than half a cell from the
  goal) with the ant at ``qpos0`` (torso at height 0.75, joints at 0) moved to the reset xy, zero velocity:
  ``AntMazeEnv`` builds its ant with ``reset_noise_scale=0``.
* time limit: 700 steps on U-Maze and Open, 1000 on Medium and Large (the registrations), 2000 on Ultra.
* v5 (``version="v5"``, ``ant_maze_v5.py`` over gymnasium's ``Ant-v5``): the same model and dynamics; the
  observation adds Ant-v5's default ``cfrc_ext`` block, the external forces on the ant's 13 bodies (the world
  body left out) clipped to ``contact_force_range = (-1, 1)``, 78 entries after ``qvel`` (105 in all). MuJoCo C
  computes them by ``mj_rnePostConstraint`` after the five physics steps (``MujocoEnv._step_mujoco_simulation``),
  MJX by ``mjx.rne_postconstraint``; after a reset they are 0 (``mj_resetData``; ``mj_forward`` leaves them).

Contacts: as in :class:`diffrl.envs.pointmaze.PointMaze`, the model holds three wall boxes (mocap bodies) placed
before every physics step on the wall cells beside the torso's cell in x, in y and diagonally, on its quadrant's
side. No part of the ant reaches further than 1.22 from the torso centre (leg tips at ``0.8 sqrt 2`` plus the
0.08 capsule radius and the 0.01 margin), less than half of a 4-wide cell, so no other wall can touch it, and within
one step the torso moves far less than the 0.78 it would need to leave a quadrant whose walls it can touch. The
floor's ``contype`` is 0 and the boxes have ``contype="0" conaffinity="1"``: the ant (contype 1) still touches the
floor and the walls, while the boxes touch neither the floor nor each other, as the static walls of the original
(all in the world body) never do. A large maze's 1,575 MJX contact slots (819 geom pairs) thus become 100 (52).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Sequence

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from diffrl.envs.base import EnvState, put_model
from diffrl.envs.maze_plot import maze_figure
from diffrl.envs.mjx_contact import (
    use_early_exit_linesearch,
    use_exact_sphere_box_contacts,
    use_mujoco_capsule_plane_frames,
)
from diffrl.envs.pointmaze import GYM_IDS, MAZE_MAPS, POINTMAZE_V3, MazeGoalEnv, MazeProtocol

ANT_XML = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "ant.xml")
MAZE_SIZE_SCALING = 4.0  # ant_maze_v4.AntMazeEnv
MAZE_HEIGHT = 0.5
FRAME_SKIP = 5  # ant_v4.AntEnv
MAX_EPISODE_STEPS = {"open": 700, "umaze": 700, "medium": 1000, "large": 1000, "ultra": 2000}
ANT_BODIES = 14  # the world and the ant's 13 bodies; the wall boxes come after them
CONTACT_FORCE_RANGE = (-1.0, 1.0)  # ant_v5.AntEnv contact_force_range
VERSIONS = ("v4", "v5")
# PlanDQ's AntMaze Ultra (Jiang et al.'s D4RL extension, changchencc/PlanDQ branch antmaze,
# d4rl/locomotion/maze_env.py ULTRA_MAZE_TEST, antmaze-ultra-*-v0: 2,000-step episodes), walls only
ULTRA_MAZE = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
              [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1],
              [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1],
              [1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1],
              [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
              [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1],
              [1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1],
              [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1],
              [1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
ANT_ONLY_MAZES = {"ultra": ULTRA_MAZE}


def known_maze(maze_map) -> str | None:
    """The name of a maze (``umaze`` ... ``ultra``) whose walls ``maze_map`` has, whatever its reset and goal cells."""
    walls = [[kind == 1 for kind in row] for row in maze_map]
    for name, known in {**MAZE_MAPS, **ANT_ONLY_MAZES}.items():
        if walls == [[kind == 1 for kind in row] for row in known]:
            return name
    return None


def ant_maze_mjcf(layout) -> str:
    """gymnasium's ant with the floor's contype cleared and three movable wall boxes."""
    tree = ET.parse(ANT_XML)
    worldbody = tree.find("worldbody")
    worldbody.find("geom[@name='floor']").set("contype", "0")
    for body in ET.fromstring(f"<walls>{layout.wall_box_xml(contype=0, conaffinity=1)}</walls>"):
        worldbody.append(body)
    return ET.tostring(tree.getroot(), encoding="unicode")


class AntMaze(MazeGoalEnv):
    """MJX AntMaze with the gymnasium-robotics ``AntMaze_*-v4`` (or ``-v5``) dynamics, rewards and resets; ``maze`` is
    a gymnasium-robotics maze name, ``"ultra"`` (:data:`ULTRA_MAZE`, every free cell a reset and goal cell) or a map."""

    observation_size = 31
    action_size = 8

    def __init__(
        self,
        maze: str | Sequence[Sequence] = "umaze",
        reward_type: str = "sparse",
        continuing_task: bool = True,
        reset_target: bool = False,
        max_episode_steps: int | None = None,
        protocol: MazeProtocol = POINTMAZE_V3,
        version: str = "v4",
    ):
        if version not in VERSIONS:
            raise ValueError(f"AntMaze version must be one of {VERSIONS}, got {version!r}")
        self.version = version
        self.observation_size = 31 + (6 * (ANT_BODIES - 1) if version == "v5" else 0)
        super().__init__(ANT_ONLY_MAZES.get(maze, maze) if isinstance(maze, str) else maze, reward_type,
                         continuing_task, reset_target, protocol, MAZE_SIZE_SCALING, MAZE_HEIGHT)
        self.maze_name = known_maze(self.layout.maze_map) or "custom"
        self.max_episode_steps = int(max_episode_steps or MAX_EPISODE_STEPS.get(self.maze_name, 1000))
        suffix = "Dense" if reward_type == "dense" else ""
        maze_id = GYM_IDS.get(self.maze_name, "PointMaze_Custom").removeprefix("PointMaze_")
        self.name = f"AntMaze_{maze_id}{suffix}-{version}"
        self.mj_model = mujoco.MjModel.from_xml_string(ant_maze_mjcf(self.layout))
        use_exact_sphere_box_contacts()  # the torso is a sphere: exact sphere-box contacts within the margin
        use_mujoco_capsule_plane_frames()  # the legs on the floor: MuJoCo C's friction pyramid orientation
        use_early_exit_linesearch()
        self.model = put_model(self.mj_model)

    def reset(self, rng: jax.Array) -> EnvState:
        rng, rng_goal, rng_reset = jax.random.split(rng, 3)
        goal = self._draw_goal(rng_goal)
        qpos = self.model.qpos0.at[:2].set(self._draw_reset(rng_reset, goal).astype(self.model.qpos0.dtype))
        return self.reset_to(qpos, jnp.zeros(self.mj_model.nv, qpos.dtype), goal, rng)

    def step(self, state: EnvState, action: jnp.ndarray) -> EnvState:
        def physics_step(_, data):
            return mjx.step(self.model, data.replace(mocap_pos=self.wall_boxes(data.qpos)))

        data = state.data.replace(ctrl=jnp.asarray(action, state.data.ctrl.dtype))
        data = jax.lax.fori_loop(0, FRAME_SKIP, physics_step, data)
        if self.version == "v5":
            data = mjx.rne_postconstraint(self.model, data)
        return self._stepped(state, data)

    def _observation(self, data, goal) -> jnp.ndarray:
        parts = [data.qpos[2:], data.qvel]
        if self.version == "v5":
            forces = getattr(data, "_impl", data).cfrc_ext[1:ANT_BODIES]
            parts.append(jnp.clip(forces, *CONTACT_FORCE_RANGE).ravel())
        return jnp.concatenate([*parts, data.qpos[:2], goal])

    def draw_episodes(self, observations, valid, planned_states=None, titles=None):
        """The torso's paths over the maze (``achieved_goal``), the goals, and the plans' ``xy``: planned states that
        are whole flat observations have it at ``[-4:-2]``, D4RL's ``[x, y, observation]`` states (29) at ``[:2]``."""
        observations = np.asarray(observations)
        plans = None
        if planned_states is not None:
            planned = np.asarray(planned_states)
            plans = planned[..., -4:-2] if planned.shape[-1] == self.observation_size else planned[..., :2]
        return maze_figure(self.layout, observations[:, :, -4:-2], plans=plans, goals=observations[:, 0, -2:],
                           titles=titles, valid=valid, max_panels=len(observations))
