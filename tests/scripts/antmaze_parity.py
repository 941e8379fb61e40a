"""Step MJX AntMaze and gymnasium-robotics AntMaze_UMaze-v4 side by side; print the deviations as JSON.

The MJX env is the v5 one: its observation is v4's with Ant-v5's clipped contact forces after ``qvel``. The v4
part is compared with the v4 original, the forces with ``clip(cfrc_ext[1:], -1, 1)`` of the original's data (its
step calls ``mj_rnePostConstraint``), and that this is v5's observation is checked against gymnasium's
AntMaze_UMaze-v5 set to the same states.

Run in float64 (JAX_ENABLE_X64=1). The ant starts beside the walls of U-Maze's corner cell (1, 1) and flails with
piecewise-constant random actions, so its legs hit the walls. Two comparisons:

* one step at a time ("teacher forced"): the MJX env is set to the gymnasium state before every step, so each
  step's deviation is the modelling difference of that step alone (the ant's contact-rich motion is chaotic: any
  difference, even float rounding, grows over a free run);
* a free run of the first ``FREE_STEPS`` steps from the same start.

Each step is labelled by stepping a copy of gymnasium's state through the five physics steps: "steady" when its
contact set stays the same through them and holds no wall.
"""

import json
import sys

import gymnasium as gym
import jax
import mujoco
import numpy as np

from diffrl.envs.antmaze import ANT_BODIES, AntMaze
from diffrl.envs.third_party import import_gymnasium_robotics_quietly
from diffrl.spaces import flatten_observation

gym.register_envs(import_gymnasium_robotics_quietly())
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
FREE_STEPS = 30
START_XY = (-4.9, 3.3)  # cell (1, 1): 1.1 from the wall cell (1, 0) in x and 1.3 from (2, 1) in y


def main():
    reference = gym.make("AntMaze_UMaze-v4", continuing_task=True, reset_target=False)
    reference.reset(seed=0)
    ant = reference.unwrapped.ant_env
    qpos = ant.data.qpos.copy()
    qpos[:2] = START_XY
    ant.set_state(qpos, np.zeros(ant.model.nv))
    goal = np.asarray(START_XY) + (0.4, 0.0)  # within the goal radius at the start: success and reward both occur
    reference.unwrapped.goal = goal.copy()
    walls = {i for i in range(ant.model.ngeom) if ant.model.geom(i).name.startswith("block_")}

    env = AntMaze("umaze", version="v5")
    forces = slice(27, 27 + 6 * (ANT_BODIES - 1))
    v5_reference = gym.make("AntMaze_UMaze-v5", continuing_task=True, reset_target=False)
    v5_obs, _ = v5_reference.reset(seed=0)
    v5_ant = v5_reference.unwrapped.ant_env
    v5_reference.unwrapped.goal = goal.copy()
    # jitted: run eagerly, op by op, the float64 reset takes ~35 s on a 2-core CPU against ~4 s to compile it
    reset = jax.jit(env.reset_to)(qpos, np.zeros(ant.model.nv), goal, jax.random.PRNGKey(0))
    reset_forces = max(np.abs(v5_obs["observation"][27:]).max(), np.abs(np.asarray(reset.obs)[forces]).max())
    boxes = np.array([env.mj_model.geom(f"wall_{k}").id for k in range(3)])
    # one compiled program: set the state from (qpos, qvel), then step (the free run feeds back its own state)
    step_from = jax.jit(lambda qpos, qvel, action: env.step(env.reset_to(qpos, qvel, goal, jax.random.PRNGKey(0)),
                                                             action))
    actions = np.repeat(np.random.default_rng(0).uniform(-1.0, 1.0, (STEPS // 10 + 1, 8)), 10, axis=0)[:STEPS]
    free_qpos, free_qvel = qpos.copy(), np.zeros(ant.model.nv)
    out = {"steps": 0, "wall_contact_steps": 0, "mjx_wall_contact_steps": 0, "success_steps": 0, "reward": 0.0,
           "flags": 0, "free_qpos": 0.0, "reset_forces": float(reset_forces), "v5_layout": 0.0, "touching_forces": 0}
    deviations, force_deviations, steady = [], [], []
    scratch = mujoco.MjData(ant.model)
    for t, action in enumerate(actions):
        scratch.qpos[:], scratch.qvel[:], scratch.ctrl[:] = ant.data.qpos, ant.data.qvel, action
        contact_sets = set()
        for _ in range(ant.frame_skip):
            mujoco.mj_step(ant.model, scratch)
            contact_sets.add(frozenset((c.geom1, c.geom2) for c in scratch.contact[: scratch.ncon]))
        touches_wall = any(g in walls for pairs in contact_sets for pair in pairs for g in pair)
        v5_ant.set_state(ant.data.qpos.copy(), ant.data.qvel.copy())
        after = step_from(ant.data.qpos.copy(), ant.data.qvel.copy(), action)
        obs, reward, terminated, truncated, info = reference.step(action)
        v5_obs, *_ = v5_reference.step(action)
        contact_forces = np.clip(ant.data.cfrc_ext[1:], -1.0, 1.0).ravel()
        out["v5_layout"] = max(out["v5_layout"], float(np.abs(
            flatten_observation(v5_obs) - np.concatenate([obs["observation"], contact_forces,
                                                          obs["achieved_goal"], obs["desired_goal"]])).max()))
        out["touching_forces"] += bool(np.abs(contact_forces).max() > 0)
        mine = np.asarray(after.obs)
        deviations.append(float(np.abs(np.delete(mine, np.r_[forces]) - flatten_observation(obs)).max()))
        force_deviations.append(float(np.abs(mine[forces] - contact_forces).max()))
        steady.append(len(contact_sets) == 1 and not touches_wall)
        out["reward"] = max(out["reward"], abs(float(after.reward) - reward))
        out["flags"] += int(bool(after.info["success"]) != info["success"]) + int(bool(after.terminated) != terminated)
        out["wall_contact_steps"] += touches_wall
        contact = getattr(after.data, "_impl", after.data).contact  # the last physics step's contacts
        touching = (np.asarray(contact.dist) < np.asarray(contact.includemargin)) & np.isin(
            np.asarray(contact.geom), boxes).any(-1)
        out["mjx_wall_contact_steps"] += bool(touching.any())
        out["success_steps"] += bool(info["success"])
        if t < FREE_STEPS:
            free = step_from(free_qpos, free_qvel, action)
            free_qpos, free_qvel = np.asarray(free.data.qpos), np.asarray(free.data.qvel)
            out["free_qpos"] = max(out["free_qpos"], float(np.abs(free_qpos - ant.data.qpos).max()))
        out["steps"] += 1
    deviations, force_deviations, steady = np.asarray(deviations), np.asarray(force_deviations), np.asarray(steady)
    assert steady.any(), "no step kept its contacts: the check has nothing steady to compare"
    out.update(steady_steps=int(steady.sum()), steady_obs=float(deviations[steady].max()),
               median_obs=float(np.median(deviations)), worst_obs=float(deviations.max()),
               steady_forces=float(force_deviations[steady].max()), median_forces=float(np.median(force_deviations)),
               worst_forces=float(force_deviations.max()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
