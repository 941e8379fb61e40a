"""AntMaze datasets made here, the way the public ones were made: ``diffrl data generate antmaze-umaze``.

Recipe (Minari's ``D4RL/antmaze/*-v1``, ``minari-dataset-generation-scripts/scripts/antmaze``:
``create_antmaze_dataset.py``, ``controller.py``), with OGBench's low-level expert:

* low-level expert: a direction-following ant (:mod:`diffrl.envs.ant_direction`, OGBench's ``online-ant-xy``
  task) trained with the project's SAC at OGBench's settings (:data:`diffrl.experts.sac.OGBENCH_SAC`) for
  ``expert_steps`` (default 400k, OGBench's budget). Minari trains a goal-reaching SB3 SAC for 30M steps instead,
  which this machine cannot pay for; a direction follower is what the waypoint controller needs.
* waypoint controller (``controller.py: WaypointController``): a shortest path over the maze's cells to the goal
  cell (Minari's ``QIteration`` solver; ties between equally short paths may be broken differently); the ant
  heads for the next cell's centre, and once within ``WAYPOINT_THRESHOLD`` of it for the following one, whose
  centre is jittered by ``-U(0, 1) x 0.2`` per coordinate; in the goal's cell it heads for the goal itself (Minari
  keeps heading for the cell centre when the goal cell is the first waypoint; the intent, "if target is global goal
  go directly to goal position", is followed here). The expert sees the unit vector towards that point, takes the
  mode of its policy (OGBench's ``temperature=0``) plus ``N(0, 0.2^2)`` noise per action, clipped to [-1, 1].
* environments and episodes: gymnasium-robotics ``AntMaze_*-v4`` on the maps of Minari's table
  (:data:`DATASETS`), continuing, the goal never re-drawn (``continuing_task=True, reset_target=False``), episodes
  cut by the registered time limit (700 steps on U-Maze, 1000 elsewhere; D4RL reset every 1000 steps), resets drawn
  by the env from seeds 123, 124, ..., ``steps`` transitions in whole episodes (default 1M). Sparse rewards,
  ``success`` and nothing terminated: as in the public data.
* evaluation env: the same env id on Minari's ``EVAL_ENV_MAPS`` (:data:`EVAL_MAPS`: one reset cell, one goal
  cell). Minari's U-Maze evaluation map is the collection map mirrored (its wall on the other side: a maze the data
  never shows, Minari issue #304); diffrl evaluates U-Maze on D4RL's ``antmaze-umaze-v2`` task instead, the
  collection map from the bottom-left cell to the top-left one (:data:`U_MAZE_FIXED`), on which the papers' U-Maze
  numbers were measured. Ultra's is PlanDQ's ``antmaze-ultra-*-v0`` one, with its 2,000-step limit. Reference
  scores by Minari's ``get_average_reference_score`` (``reference_episodes`` episodes
  from ``reset(seed=123)``): ``ref_max_score`` of the controller driving the expert without the action noise
  (Minari's ``expert_policy``; Minari's expert samples its SAC policy, here its mode is taken), ``ref_min_score`` of
  a uniformly random policy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import deque
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
from tqdm.auto import tqdm

from diffrl.envs.ant_direction import ENV_ID as DIRECTION_ENV_ID
from diffrl.envs.antmaze import MAX_EPISODE_STEPS, MAZE_SIZE_SCALING, ULTRA_MAZE
from diffrl.envs.pointmaze import COMBINED, GOAL, RESET, MazeLayout
from diffrl.envs.third_party import import_gymnasium_robotics_quietly, removing_maze_xml_files
from diffrl.experts.sac import OGBENCH_SAC
from diffrl.experts.training import SACRun, choose_backend, train_sac
from diffrl.spaces import flatten_observation

logger = logging.getLogger(__name__)


U_MAZE_FIXED = [[1, 1, 1, 1, 1], [1, GOAL, 0, 0, 1], [1, 1, 1, 0, 1], [1, RESET, 0, 0, 1], [1, 1, 1, 1, 1]]
DATASETS = {  # create_antmaze_dataset.py: DATASET_ID_TO_ENV_ID (maze map None: the registered one)
    "antmaze-umaze": ("AntMaze_UMaze-v4", U_MAZE_FIXED),
    "antmaze-umaze-diverse": ("AntMaze_UMaze-v4", None),
    "antmaze-medium-play": ("AntMaze_Medium-v4", None),
    "antmaze-medium-diverse": ("AntMaze_Medium_Diverse_GR-v4", None),
    "antmaze-large-play": ("AntMaze_Large-v4", None),
    "antmaze-large-diverse": ("AntMaze_Large_Diverse_GR-v4", None),
    # PlanDQ's Ultra maze in gymnasium-robotics' AntMaze (the Large registration with its map): every free cell a
    # reset and goal cell, as in the *_Diverse_GR maps of the -diverse datasets
    "antmaze-ultra-diverse": ("AntMaze_Large_Diverse_GR-v4",
                              [[COMBINED if kind == 0 else kind for kind in row] for row in ULTRA_MAZE]),
}
EVAL_MAPS = {  # create_antmaze_dataset.py: EVAL_ENV_MAPS, but for U-Maze (see the module's docstring)
    "umaze": U_MAZE_FIXED,
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, RESET, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, GOAL, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, RESET, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1, 0, GOAL, 0, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
    "ultra": [[RESET if (i, j) == (1, 1) else GOAL if (i, j) == (10, 14) else kind for j, kind in enumerate(row)]
              for i, row in enumerate(ULTRA_MAZE)],  # ULTRA_MAZE_TEST: start top left, goal bottom right
}
WAYPOINT_THRESHOLD = 0.45  # controller.py: WaypointController(waypoint_threshold=0.45)
WAYPOINT_JITTER = 0.2
ACTION_NOISE = 0.2  # create_antmaze_dataset.py --action-noise; OGBench generate_locomaze.py --noise
DEFAULT_EXPERT_STEPS = 400_000  # OGBench data_gen_scripts/commands.sh, online-ant-xy-v0
DEFAULT_COLLECT_STEPS = 1_000_000
FIRST_EPISODE_SEED = 123
REFERENCE_EPISODES = 100
ANT_OBSERVATION = 27  # the "observation" entry of AntMaze's dict: [qpos[2:], qvel]


def next_cells(free: np.ndarray) -> np.ndarray:
    """``[I, J, I, J, 2]``: for a goal cell ``(gi, gj)`` and a cell ``(i, j)``, the neighbour of ``(i, j)`` on a
    shortest 4-connected path of free cells to the goal (breadth first from the goal); the cell itself when it is
    the goal or cannot reach it."""
    rows, cols = free.shape
    table = np.zeros((rows, cols, rows, cols, 2), np.int32)
    table[..., 0] = np.arange(rows)[None, None, :, None]
    table[..., 1] = np.arange(cols)[None, None, None, :]
    for goal in map(tuple, np.argwhere(free)):
        seen, queue = {goal}, deque([goal])
        while queue:
            cell = queue.popleft()
            for di, dj in ((-1, 0), (0, -1), (1, 0), (0, 1)):  # controller.py's QIteration action order
                near = (cell[0] + di, cell[1] + dj)
                if 0 <= near[0] < rows and 0 <= near[1] < cols and free[near] and near not in seen:
                    seen.add(near)
                    table[goal + near] = cell
                    queue.append(near)
    return table


class WaypointController:
    """Minari's ``WaypointController`` for ``n`` environments at once (numpy): where each ant should head next."""

    def __init__(self, layout: MazeLayout, n: int, rng: np.random.Generator,
                 threshold: float = WAYPOINT_THRESHOLD, jitter: float = WAYPOINT_JITTER):
        self.layout, self.rng, self.threshold, self.jitter = layout, rng, threshold, jitter
        self.table = next_cells(layout.free)
        self.goal = np.full((n, 2), np.nan)
        self.cell = np.zeros((n, 2), np.int32)  # the waypoint's cell
        self.target = np.zeros((n, 2))  # the point the ant heads for

    def _point(self, cells, goal_cells, goals, jitter: bool):
        at_goal = np.all(cells == goal_cells, axis=-1, keepdims=True)
        centres = self.layout.cell_to_xy(cells)
        if jitter:
            centres = centres - self.rng.uniform(size=centres.shape) * self.jitter
        return np.where(at_goal, goals, centres)

    def __call__(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Unit directions ``[n, 2]`` from the ants at ``xy`` towards their waypoints, for goals ``goal``."""
        goal_cells = self.layout.xy_to_cell(goal)
        fresh = np.linalg.norm(self.goal - goal, axis=-1) > 1e-3
        fresh |= np.isnan(self.goal[:, 0])
        if fresh.any():  # a new goal: the path starts from the ant's cell
            here = self.layout.xy_to_cell(xy[fresh])
            g = goal_cells[fresh]
            self.cell[fresh] = self.table[g[:, 0], g[:, 1], here[:, 0], here[:, 1]]
            self.target[fresh] = self._point(self.cell[fresh], g, goal[fresh], jitter=False)
            self.goal[fresh] = goal[fresh]
        advance = (np.linalg.norm(self.target - xy, axis=-1) <= self.threshold) & np.any(self.cell != goal_cells, -1)
        if advance.any():
            g, c = goal_cells[advance], self.cell[advance]
            self.cell[advance] = self.table[g[:, 0], g[:, 1], c[:, 0], c[:, 1]]
            self.target[advance] = self._point(self.cell[advance], g, goal[advance], jitter=True)
        offset = self.target - xy
        return offset / (np.linalg.norm(offset, axis=-1, keepdims=True) + 1e-6)


def direction_expert_workdir(experts_root, seed: int = 0) -> Path:
    """Where the SAC run of the direction-following ant is cached."""
    return Path(experts_root) / "AntDirection-v4" / f"expert-{choose_backend(DIRECTION_ENV_ID)}-seed{seed}"


def train_direction_expert(experts_root, steps: int = DEFAULT_EXPERT_STEPS, seed: int = 0,
                           progress: bool = True) -> SACRun:
    """The cached SAC run of the direction-following ant (trained, or resumed, up to ``steps``)."""
    return train_sac(DIRECTION_ENV_ID, direction_expert_workdir(experts_root, seed), steps=steps, config=OGBENCH_SAC,
                     seed=seed, eval_every=25_000, eval_episodes=10, checkpoint_every=25_000, progress=progress)


class MazeWalker:
    """The collection policy: a waypoint controller per environment driving the expert's mode plus Gaussian noise."""

    def __init__(self, run: SACRun, layout: MazeLayout, n: int, seed: int, noise: float = ACTION_NOISE):
        policy = run.policy(deterministic=True)
        self._act = jax.jit(lambda params, obs: policy.act(params, (), obs, 0, None)[0])
        self.params, self.noise = run.state.actor.params, noise
        self.rng = np.random.default_rng(seed)
        self.controller = WaypointController(layout, n, self.rng)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``[n, 8]`` for flat AntMaze observations ``[n, 31]`` (``[observation, achieved, desired]``)."""
        body, achieved, desired = obs[:, :ANT_OBSERVATION], obs[:, ANT_OBSERVATION:-2], obs[:, -2:]
        directions = self.controller(achieved, desired)
        mode = np.asarray(self._act(self.params, np.concatenate([body, directions], -1).astype(np.float32)))
        return np.clip(mode + self.noise * self.rng.standard_normal(mode.shape), -1.0, 1.0).astype(np.float32)

    def forget(self, i: int) -> None:
        """Env ``i`` starts a new episode: its path is planned afresh."""
        self.controller.goal[i] = np.nan


def collect(run: SACRun, env_id: str, maze_map, steps: int, num_envs: int = 10, seed: int = 0,
            progress: bool = True, noise: float = ACTION_NOISE, max_episode_steps: int | None = None) -> list[dict]:
    """Whole episodes of the maze walker (action noise ``noise``) in ``env_id`` on ``maze_map``, at most ``steps``
    transitions, cut at ``max_episode_steps`` (default: the registered limit); episode ``k`` resets with seed
    ``123 + k``; each is ``{observations (dict of [T + 1] arrays), actions, rewards, terminations, truncations,
    successes}``."""
    gym.register_envs(import_gymnasium_robotics_quietly())
    kwargs = {"continuing_task": True, "reset_target": False, **({"maze_map": maze_map} if maze_map else {}),
              **({"max_episode_steps": max_episode_steps} if max_episode_steps else {})}
    with removing_maze_xml_files():
        envs = [gym.make(env_id, **kwargs) for _ in range(num_envs)]
    max_steps = envs[0].spec.max_episode_steps
    walker = MazeWalker(run, MazeLayout(envs[0].unwrapped.maze.maze_map, MAZE_SIZE_SCALING), num_envs, seed, noise)
    next_seed, reserved = FIRST_EPISODE_SEED, 0
    episodes, current, obs = [], [None] * num_envs, np.zeros((num_envs, 31))

    def start(i):
        nonlocal next_seed, reserved
        current[i] = None
        if reserved + max_steps > steps:
            return
        first, _ = envs[i].reset(seed=next_seed)
        next_seed, reserved = next_seed + 1, reserved + max_steps
        obs[i] = flatten_observation(first)
        walker.forget(i)
        current[i] = {"observations": [first], "actions": [], "rewards": [], "terminations": [], "truncations": [],
                      "successes": [], "seed": next_seed - 1}

    for i in range(num_envs):
        start(i)
    bar = tqdm(total=steps, desc=f"collecting {env_id}", unit="step", disable=not progress)
    try:
        while any(ep is not None for ep in current):
            actions = walker(obs)
            for i, ep in enumerate(current):
                if ep is None:
                    continue
                o, r, terminated, truncated, info = envs[i].step(actions[i])
                for key, value in (("observations", o), ("actions", actions[i]), ("rewards", r),
                                   ("terminations", terminated), ("truncations", truncated),
                                   ("successes", info["success"])):
                    ep[key].append(value)
                obs[i] = flatten_observation(o)
                bar.update(1)
                if terminated or truncated:
                    ep["observations"] = {k: np.stack([o[k] for o in ep["observations"]])
                                          for k in ep["observations"][0]}
                    episodes.append({k: v if k in ("seed", "observations") else np.asarray(v) for k, v in ep.items()})
                    start(i)
    finally:
        bar.close()
        for e in envs:
            e.close()
    episodes.sort(key=lambda ep: ep.pop("seed"))
    return episodes


def reference_scores(run: SACRun, eval_spec, episodes: int = REFERENCE_EPISODES) -> tuple[float, float]:
    """``(ref_min_score, ref_max_score)``: Minari's ``get_average_reference_score`` of a random policy and of the
    controller driving the expert's mode without action noise, in ``eval_spec``."""
    from minari.utils import get_average_reference_score

    with removing_maze_xml_files():
        env = gym.make(eval_spec)
    walker = MazeWalker(run, MazeLayout(env.unwrapped.maze.maze_map, MAZE_SIZE_SCALING), 1, FIRST_EPISODE_SEED,
                        noise=0.0)  # a new goal every episode (the goal noise) makes it plan afresh
    ref_max = get_average_reference_score(env, lambda o: walker(flatten_observation(o)[None])[0], episodes)
    env.action_space.seed(FIRST_EPISODE_SEED)
    ref_min = get_average_reference_score(env, lambda o: env.action_space.sample(), episodes)
    env.close()
    return ref_min, ref_max


def generate_antmaze_dataset(name: str, steps: int | None = None, *, expert_steps: int = DEFAULT_EXPERT_STEPS,
                             seed: int = 0, num_envs: int = 10, dataset_id: str | None = None, root=None,
                             experts_root=None, overwrite: bool = False,
                             reference_episodes: int = REFERENCE_EPISODES, progress: bool = True) -> dict:
    """Make ``name`` (``antmaze-umaze``, ``antmaze-large-diverse``, ...) by the recipe above as a Minari dataset."""
    from minari.data_collector import EpisodeBuffer

    from diffrl.data.generate import checked_request, create_dataset_atomically
    from diffrl.experts.locomotion_data import default_experts_root
    from diffrl.locking import exclusive_lock

    if name not in DATASETS:
        raise ValueError(f"unknown AntMaze dataset {name!r}; choose one of {', '.join(DATASETS)}")
    env_id, maze_map = DATASETS[name]
    steps = DEFAULT_COLLECT_STEPS if steps is None else steps
    dataset_id = dataset_id or f"diffrl/antmaze/{name.removeprefix('antmaze-')}-v1"
    root = checked_request(dataset_id, root, overwrite, steps=steps, expert_steps=expert_steps, num_envs=num_envs,
                           reference_episodes=reference_episodes)
    gym.register_envs(import_gymnasium_robotics_quietly())
    if steps < gym.spec(env_id).max_episode_steps:
        raise ValueError(f"steps={steps} holds no whole episode of {env_id} "
                         f"({gym.spec(env_id).max_episode_steps} steps)")
    experts_root = Path(experts_root) if experts_root is not None else default_experts_root()
    with exclusive_lock(experts_root / "AntDirection-v4", f"the SAC runs of the ant under {experts_root}"):
        expert = train_direction_expert(experts_root, expert_steps, seed, progress)
    episodes = collect(expert, env_id, maze_map, steps, num_envs, seed, progress)
    spec = gym.spec(env_id)
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "continuing_task": True, "reset_target": False,
                                             **({"maze_map": maze_map} if maze_map else {})})
    maze = name.split("-")[1]
    eval_spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "maze_map": EVAL_MAPS[maze]},
                                    max_episode_steps=MAX_EPISODE_STEPS[maze])
    ref_min, ref_max = reference_scores(expert, eval_spec, reference_episodes)
    if ref_max <= ref_min:
        logger.warning("the walker scored no better than a random policy in the evaluation env (ref_max_score %.2f, "
                       "ref_min_score %.2f): normalized scores of this dataset are undefined; train the ant longer "
                       "(--expert-steps)", ref_max, ref_min)
    recipe = {"env_id": env_id, "sac": json.loads(json.dumps(dataclasses.asdict(OGBENCH_SAC))),
              "expert_env_id": DIRECTION_ENV_ID, "expert_steps": expert.steps,
              "expert_eval_return": expert.evaluations[-1][1], "action_noise": ACTION_NOISE,
              "waypoint_threshold": WAYPOINT_THRESHOLD, "collect_steps": steps,
              "first_episode_seed": FIRST_EPISODE_SEED, "seed": seed}
    buffers = [EpisodeBuffer(id=k, observations={key: value.astype(np.float64) for key, value in
                                                 ep["observations"].items()},
                             actions=ep["actions"].astype(np.float32), rewards=ep["rewards"].astype(np.float64),
                             terminations=ep["terminations"].astype(bool), truncations=ep["truncations"].astype(bool),
                             infos={"success": ep["successes"].astype(bool)})
               for k, ep in enumerate(episodes)]
    path = create_dataset_atomically(
        dataset_id, buffers, root, overwrite, extra_metadata={"diffrl_recipe": recipe},
        env=spec, eval_env=eval_spec, ref_min_score=float(ref_min), ref_max_score=float(ref_max),
        algorithm_name="diffrl/QIteration waypoints + SAC direction expert",
        description=f"{env_id} data made by diffrl with Minari's AntMaze recipe (diffrl.experts.antmaze_data): a "
                    f"direction-following SAC ant of {expert.steps} steps driven by a waypoint controller.")
    success = [bool(ep["successes"].any()) for ep in episodes]
    return {"dataset_id": dataset_id, "path": str(path), "steps": int(sum(len(ep["actions"]) for ep in episodes)),
            "episodes": len(episodes), "success_rate": float(np.mean(success)), "ref_min_score": float(ref_min),
            "ref_max_score": float(ref_max), "expert_steps": expert.steps, "recipe": recipe}
