"""Expert PointMaze datasets generated in parallel in MJX and written as real Minari datasets.

Reproduces the generation of the public ``D4RL/pointmaze/*-v2`` datasets (Farama minari-dataset-generation-scripts,
``scripts/pointmaze/create_pointmaze_dataset.py``, ``controller.py``, ``maze_solver.py``):

* data env: ``PointMaze_*-v3`` with ``continuing_task=True, reset_target=True`` and no time limit; an episode ends
  (truncation) at the step where ``info["success"]``, a new goal is drawn and the point keeps moving;
* expert: waypoints from Q-iteration over maze cells (50 iterations, discount 0.99, reward 1 for entering the goal
  cell, greedy path); the first waypoint is the next cell's centre, later ones are jittered by ``-U(0, 1) * 0.2``
  per coordinate, the last one is the goal itself; a waypoint is passed within 0.1; the action is
  ``10 * (waypoint - xy) - 1 * velocity``, plus ``N(0, 0.5^2)`` noise, clipped to [-1, 1];
* reference scores as Minari measures them (``minari.utils.get_average_reference_score``): 100 episodes of an
  evaluation env with one fixed goal (``continuing_task=True, reset_target=False``, time limit 300 / 600 / 800);
  ``ref_max_score`` with the noise-free expert, ``ref_min_score`` with a uniformly random policy.

Re-planned inside the goal's own cell (a new goal may be drawn in the point's cell), the Q-iteration path is
``{goal: neighbour, neighbour: goal}``: the expert heads for the greedy neighbour's centre and then to the goal,
as the reference controller does. The stored ``controller.py`` revision defaults to a DFS solver while the public
datasets' metadata names ``QIteration``; diffrl follows the metadata.

Difference: the public data is one stream of ``N`` steps from one env; here ``num_envs`` streams run in parallel
(``num_envs`` reset points instead of one).

``maze2d-<maze>`` datasets follow D4RL's ``maze2d-*-v1`` recipe instead (``scripts/generation/
generate_maze2d_datasets.py`` and ``relabel_maze2d_rewards.py`` of rail-berkeley/d4rl), with the same expert, noise
and collection env as above:

* every stream is kept whole, one Minari episode per collection env (D4RL stores one unsplit stream; its
  ``timeouts`` mark goal switches, which the methods re-cut as they need);
* the reward of row ``t`` is relabelled against the one fixed evaluation target from the row's own observation,
  ``r_t = 1{||xy(o_t) - target|| <= 0.5}`` (D4RL's relabel reads ``observations[t]``, not the next one);
* ``desired_goal`` keeps the collection goal of the row (D4RL's ``infos/goal``), which LDGC conditions on;
* the evaluation spec is :class:`diffrl.envs.maze2d_gym.Maze2DEnv` (D4RL's ``maze_model`` protocol:
  :data:`diffrl.envs.pointmaze.MAZE2D_V1`), the reference scores are D4RL's (``d4rl/infos.py``).

Differences from D4RL: the collection goal switches when the point comes within 0.45 of it (gymnasium-robotics),
where D4RL's controller switches within 0.1 of the goal's cell point at low speed, and the collection goal's
noise is ``U(-0.25, 0.25)`` (D4RL ``U(-0.1, 0.1)``); D4RL's quirk of storing the pre-switch observation twice
after each switch is not reproduced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm.auto import tqdm

from diffrl.envs.pointmaze import MAZE2D_V1, MAZE_MAPS, MazeLayout, PointMaze, maze2d_id
from diffrl.envs.third_party import import_gymnasium_robotics_quietly, removing_maze_xml_files
from diffrl.locking import exclusive_lock

# D4RL-sized defaults (steps) and the time limits of the evaluation env.
DEFAULT_STEPS = {"umaze": 1_000_000, "open": 1_000_000, "medium": 2_000_000, "large": 4_000_000}
# Reference scores (min, max) of D4RL's sparse maze2d-*-v1 (d4rl/infos.py).
D4RL_MAZE2D_REF_SCORES = {"umaze": (23.85, 161.86), "medium": (13.13, 277.39), "large": (6.7, 273.99)}
PROTOCOLS = ("pointmaze", "maze2d")

CELL_MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # (di, dj) in maze_solver.EXPLORATION_ACTIONS order


def waypoint_table(layout: MazeLayout, iterations: int = 50, discount: float = 0.99) -> np.ndarray:
    """``next_cell[goal, cell]``: the greedy next cell (flat index ``i * width + j``) of Q-iteration to ``goal``.

    ``maze_solver.QIteration``: deterministic moves between free cells, reward 1 for a move into the goal cell,
    ``Q <- R + gamma P max Q`` for 50 iterations, ties broken by the first move.
    """
    n = layout.length * layout.width
    transition = np.zeros((n, len(CELL_MOVES), n))
    target = np.zeros((n, len(CELL_MOVES)), np.int64)
    for state in range(n):
        i, j = divmod(state, layout.width)
        for a, (di, dj) in enumerate(CELL_MOVES):
            ni, nj = i + di, j + dj
            target[state, a] = ni * layout.width + nj
            if 0 <= ni < layout.length and 0 <= nj < layout.width and layout.free[ni, nj]:
                transition[state, a, target[state, a]] = 1.0
    table = np.zeros((n, n), np.int32)
    for goal in range(n):
        if not layout.free[divmod(goal, layout.width)]:
            continue
        reward = (target == goal).astype(np.float64)
        q = np.zeros((n, len(CELL_MOVES)))
        for _ in range(iterations):
            q = reward + discount * transition @ q.max(axis=1)
        table[goal] = np.take_along_axis(target, q.argmax(axis=1)[:, None], axis=1)[:, 0]
    return table


@struct.dataclass
class WaypointState:
    target_xy: jnp.ndarray  # [2] current waypoint
    target_cell: jnp.ndarray  # flat cell index of the waypoint
    goal_xy: jnp.ndarray  # [2] the goal the plan was made for
    goal_cell: jnp.ndarray
    planned: jnp.ndarray  # bool


class WaypointExpert:
    """The PD waypoint controller of ``controller.WaypointController`` as a pure, vmappable function."""

    def __init__(self, layout: MazeLayout, p_gain=10.0, d_gain=-1.0, waypoint_threshold=0.1, jitter=0.2):
        self.layout = layout
        self.table = jnp.asarray(waypoint_table(layout))
        cells = np.stack(np.unravel_index(np.arange(layout.length * layout.width), (layout.length, layout.width)), -1)
        self.centres = jnp.asarray(layout.cell_to_xy(cells), jnp.float32)
        self.p_gain, self.d_gain = p_gain, d_gain
        self.threshold, self.jitter = waypoint_threshold, jitter

    def initial_state(self, env_index=None) -> WaypointState:
        zero2, zero = jnp.zeros(2, jnp.float32), jnp.zeros((), jnp.int32)
        return WaypointState(zero2, zero, zero2, zero, jnp.zeros((), bool))

    def _cell(self, xy):
        ij = self.layout.xy_to_cell(xy, xp=jnp)
        return ij[..., 0] * self.layout.width + ij[..., 1]

    def act(self, state: WaypointState, obs: jnp.ndarray, rng: jax.Array):
        """Noise-free action for one env (flat PointMaze observation) and the updated controller state."""
        xy, velocity, goal = obs[4:6], obs[2:4], obs[6:8]
        replan = jnp.logical_not(state.planned) | (jnp.linalg.norm(state.goal_xy - goal) > 1e-3)
        goal_cell = self._cell(goal)
        first = self.table[goal_cell, self._cell(xy)]  # from the goal cell itself: its greedy neighbour
        target_cell = jnp.where(replan, first, state.target_cell)
        target_xy = jnp.where(replan, self.centres[first], state.target_xy)
        goal_xy = jnp.where(replan, goal, state.goal_xy)
        goal_cell = jnp.where(replan, goal_cell, state.goal_cell)
        # pass the waypoint once within the threshold
        advance = (jnp.linalg.norm(target_xy - xy) <= self.threshold) & (target_cell != goal_cell)
        following = self.table[goal_cell, target_cell]
        jittered = self.centres[following] - jax.random.uniform(rng, (2,)) * self.jitter
        following_xy = jnp.where(following == goal_cell, goal_xy, jittered)
        target_cell = jnp.where(advance, following, target_cell)
        target_xy = jnp.where(advance, following_xy, target_xy)
        action = self.p_gain * (target_xy - xy) + self.d_gain * velocity
        return action, WaypointState(target_xy, target_cell, goal_xy, goal_cell, jnp.ones((), bool))


def _rollout(env: PointMaze, policy, num_envs: int, steps: int, rng: jax.Array, chunk: int, progress: bool, desc: str):
    """Run ``num_envs`` envs for ``steps`` steps in jitted ``lax.scan`` chunks; return host arrays [steps, envs, ...].

    ``policy.act(ctrl_state, obs, rng) -> (action, ctrl_state)`` acts for one env and is vmapped over envs;
    ``policy.initial_state(env_index)`` gives one env's controller state.
    """
    rng, reset_rng = jax.random.split(rng)

    @jax.jit
    def reset(rng):  # one compiled program (run eagerly, vmap dispatches and compiles every op of the reset)
        return (jax.vmap(env.reset)(jax.random.split(rng, num_envs)),
                jax.vmap(policy.initial_state)(jnp.arange(num_envs)))

    def one_step(carry, step_rng):
        env_state, ctrl_state = carry
        keys = jax.random.split(step_rng, num_envs)
        action, ctrl_state = jax.vmap(policy.act)(ctrl_state, env_state.obs, keys)
        obs = env_state.obs
        env_state = jax.vmap(env.step)(env_state, action)
        record = {"obs": obs, "action": action, "reward": env_state.reward, "success": env_state.info["success"],
                  "terminated": env_state.terminated, "next_obs": env_state.obs}
        return (env_state, ctrl_state), record

    @jax.jit
    def run_chunk(carry, rng):
        return jax.lax.scan(one_step, carry, jax.random.split(rng, chunk))

    records = []
    # the bar shows from the start: the first update comes after the reset and the chunk have compiled
    with tqdm(total=steps * num_envs, desc=desc, unit="step", unit_scale=True, disable=not progress) as bar:
        carry = reset(reset_rng)
        for done in range(0, steps, chunk):
            rng, chunk_rng = jax.random.split(rng)
            carry, record = run_chunk(carry, chunk_rng)
            records.append(jax.device_get(record))
            bar.update(min(chunk, steps - done) * num_envs)  # the last chunk's overshoot is cut below
    return {k: np.concatenate([r[k] for r in records])[:steps] for k in records[0]}


class NoisyExpert:
    """Expert action plus ``N(0, noise^2)`` and clipping to [-1, 1] (the data-collection policy)."""

    def __init__(self, expert: WaypointExpert, noise: float = 0.5):
        self.expert, self.noise = expert, noise

    def initial_state(self, env_index=None):
        return self.expert.initial_state()

    def act(self, state, obs, rng):
        rng_ctrl, rng_noise = jax.random.split(rng)
        action, state = self.expert.act(state, obs, rng_ctrl)
        return jnp.clip(action + self.noise * jax.random.normal(rng_noise, (2,)), -1.0, 1.0), state


class ExpertAndRandom:
    """Envs ``[0, n)`` follow the noise-free expert, envs ``[n, 2n)`` act uniformly in [-1, 1]: both reference
    policies of Minari's protocol in one compiled rollout."""

    def __init__(self, expert: WaypointExpert, episodes: int):
        self.expert, self.episodes = expert, episodes

    def initial_state(self, env_index):
        return self.expert.initial_state(), env_index >= self.episodes

    def act(self, state, obs, rng):
        expert_state, is_random = state
        rng_ctrl, rng_random = jax.random.split(rng)
        action, expert_state = self.expert.act(expert_state, obs, rng_ctrl)
        random_action = jax.random.uniform(rng_random, (2,), minval=-1.0, maxval=1.0)
        return jnp.where(is_random, random_action, action), (expert_state, is_random)


def reference_scores(env: PointMaze, episodes: int = 100, seed: int = 123, progress: bool = False):
    """Minari's reference protocol in MJX: returns of ``episodes`` full episodes of the noise-free expert
    (``ref_max_score`` is their mean) and of a uniformly random policy (``ref_min_score``)."""
    policy = ExpertAndRandom(WaypointExpert(env.layout), episodes)
    out = _rollout(env, policy, 2 * episodes, env.max_episode_steps, jax.random.PRNGKey(seed),
                   chunk=env.max_episode_steps, progress=progress, desc="reference")
    returns = out["reward"].sum(axis=0)
    return returns[:episodes], returns[episodes:]


def collect_pointmaze(maze: str, steps: int, num_envs: int = 64, seed: int = 0, reward_type: str = "sparse",
                      chunk: int = 500, progress: bool = True) -> list[dict]:
    """Generate ``steps`` transitions in ``num_envs`` parallel streams; return the episodes (dicts of arrays).

    Each stream is split after every step with ``success``; the last episode of a stream ends where the
    stream does. Every episode ends with a truncation, as in the public data (never a termination). An episode's
    ``success`` has one flag per observation: the first is that of the step that opened it (Minari's collector
    starts the next episode with the last step's observation and info).
    """
    out, per_env = _expert_streams(maze, steps, num_envs, seed, reward_type, chunk, progress, "pointmaze")
    episodes = []
    for e in range(num_envs):
        ends = np.flatnonzero(out["success"][:, e]) + 1
        bounds = np.concatenate([[0], ends[ends < per_env], [per_env]])
        for start, stop in zip(bounds[:-1], bounds[1:]):
            observations = np.concatenate([out["obs"][start:stop, e], out["next_obs"][stop - 1 : stop, e]])
            opened_by_success = bool(out["success"][start - 1, e]) if start > 0 else False
            episodes.append({
                "observations": observations,
                "actions": out["action"][start:stop, e],
                "rewards": out["reward"][start:stop, e],
                "success": np.concatenate([[opened_by_success], out["success"][start:stop, e]]),
            })
    excess = sum(len(ep["actions"]) for ep in episodes) - steps
    while excess > 0:  # trim the overshoot of the last chunk from the last episodes
        cut = min(excess, len(episodes[-1]["actions"]) - 1)
        if cut <= 0:
            excess -= len(episodes.pop()["actions"])
            continue
        last = episodes[-1]
        episodes[-1] = {k: v[: len(v) - cut] for k, v in last.items()}
        excess -= cut
    return episodes


def _expert_streams(maze: str, steps: int, num_envs: int, seed: int, reward_type: str, chunk: int, progress: bool,
                    protocol: str):
    """``num_envs`` streams of ``ceil(steps / num_envs)`` steps of the noisy expert in the collection env
    (continuing, a new goal drawn at every arrival): host arrays ``[steps_per_env, envs, ...]``."""
    if steps < num_envs:
        raise ValueError(f"steps ({steps}) must be at least num_envs ({num_envs})")
    env = PointMaze(maze, reward_type=reward_type, continuing_task=True, reset_target=True,
                    max_episode_steps=np.iinfo(np.int32).max)
    per_env = -(-steps // num_envs)
    out = _rollout(env, NoisyExpert(WaypointExpert(env.layout)), num_envs, per_env, jax.random.PRNGKey(seed),
                   min(chunk, per_env), progress, f"generate {protocol}-{maze}")
    return out, per_env


def collect_maze2d(maze: str, steps: int, num_envs: int = 64, seed: int = 0, chunk: int = 500,
                   progress: bool = True) -> list[dict]:
    """D4RL maze2d-v1 data: one whole stream per env (the last one cut so that ``steps`` are kept in all), rewards
    relabelled against the evaluation target from each row's own observation (sparse, radius 0.5)."""
    out, per_env = _expert_streams(maze, steps, num_envs, seed, "sparse", chunk, progress, "maze2d")
    target = np.asarray(PointMaze(maze).evaluation_env(MAZE2D_V1)._goal_xy[0])
    excess = per_env * num_envs - steps
    episodes = []
    for e in range(num_envs):
        length = per_env - (excess if e == num_envs - 1 else 0)
        observations = np.concatenate([out["obs"][:length, e], out["next_obs"][length - 1 : length, e]])
        at_target = np.linalg.norm(observations[:-1, 4:6] - target, axis=-1) <= MAZE2D_V1.goal_radius
        episodes.append({"observations": observations, "actions": out["action"][:length, e],
                         "rewards": at_target.astype(np.float32)})
    return episodes


def default_dataset_id(maze: str, reward_type: str = "sparse", protocol: str = "pointmaze") -> str:
    if protocol == "maze2d":
        return f"diffrl/maze2d/{maze}-v1"
    return f"diffrl/pointmaze/{maze}{'-dense' if reward_type == 'dense' else ''}-v0"


def _env_spec(maze: str, reward_type: str, eval_env: bool, protocol: str = "pointmaze"):
    from gymnasium.envs.registration import EnvSpec

    base = PointMaze(maze, reward_type=reward_type)
    if eval_env and protocol == "maze2d":
        return EnvSpec(id=maze2d_id(maze), entry_point="diffrl.envs.maze2d_gym:Maze2DEnv",
                       kwargs={"maze": maze, "reward_type": reward_type}, max_episode_steps=base.max_episode_steps)
    kwargs = {"maze_map": MAZE_MAPS[maze], "reward_type": reward_type, "continuing_task": True,
              "reset_target": not eval_env}
    if eval_env:
        kwargs["maze_map"] = base.evaluation_env().layout.maze_map
    return EnvSpec(id=base.name, entry_point="gymnasium_robotics.envs.maze.point_maze:PointMazeEnv", kwargs=kwargs,
                   max_episode_steps=base.max_episode_steps if eval_env else 1_000_000)


DESCRIPTIONS = {
    "pointmaze": "PointMaze {maze} ({reward_type}) expert data generated with diffrl in MJX "
                 "(Minari pointmaze-v2 recipe)",
    "maze2d": "maze2d {maze} expert data generated with diffrl in MJX, D4RL maze2d-v1 recipe: one stream per "
              "collection env, rewards relabelled against the fixed evaluation target",
}


@contextlib.contextmanager
def _minari_root(root: Path):
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def create_dataset_atomically(dataset_id: str, buffers: list, root: Path, overwrite: bool = False,
                              extra_metadata: dict | None = None, **create_kwargs) -> Path:
    """``minari.create_dataset_from_buffers`` into a temporary root, then move the dataset into place (with
    ``extra_metadata`` added to its ``metadata.json``).

    An interrupted write leaves nothing under ``root``; an existing dataset is replaced only with ``overwrite``.
    """
    import gymnasium as gym
    import minari

    gym.register_envs(import_gymnasium_robotics_quietly())
    root = Path(root).resolve()  # Minari re-joins a relative root onto itself when it sizes the written files
    final = root.joinpath(*dataset_id.split("/"))
    if final.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id} already exists at {final}; pass --overwrite to replace it")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".diffrl-staging-", dir=root))
    try:
        with removing_maze_xml_files(), _minari_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*author_email.*")
            warnings.filterwarnings("ignore", message=".*code_permalink.*")  # no code URL to give
            dataset = minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, author="diffrl",
                                                         **create_kwargs)
            if extra_metadata:
                dataset.storage.update_metadata(extra_metadata)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging.joinpath(*dataset_id.split("/")), final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_minari_dataset(episodes: list[dict], dataset_id: str, maze: str, reward_type: str, ref_min: float,
                         ref_max: float, root: Path, overwrite: bool = False, protocol: str = "pointmaze") -> Path:
    """Write maze episodes as a Minari dataset (:func:`create_dataset_atomically`)."""
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for k, ep in enumerate(episodes):
        obs = ep["observations"].astype(np.float64)
        n = len(ep["actions"])
        buffers.append(EpisodeBuffer(
            id=k,
            observations={"observation": obs[:, :4], "achieved_goal": obs[:, 4:6], "desired_goal": obs[:, 6:8]},
            actions=ep["actions"].astype(np.float32),
            rewards=ep["rewards"].astype(np.float64),
            terminations=np.zeros(n, bool),
            truncations=np.arange(n) == n - 1,
            infos={"success": np.asarray(ep["success"], bool)} if "success" in ep else None,
        ))
    return create_dataset_atomically(
        dataset_id, buffers, root, overwrite, env=_env_spec(maze, reward_type, eval_env=False),
        eval_env=_env_spec(maze, reward_type, True, protocol), ref_min_score=float(ref_min),
        ref_max_score=float(ref_max), algorithm_name="QIteration waypoint expert + N(0, 0.5^2) noise (diffrl)",
        description=DESCRIPTIONS[protocol].format(maze=maze, reward_type=reward_type),
    )


def checked_request(dataset_id: str, root, overwrite: bool, **counts) -> Path:
    """The datasets root for writing ``dataset_id``, after refusing non-positive ``counts``, a malformed id, a root
    that is a file and an existing dataset (unless ``overwrite``): all before any work is done."""
    from minari.dataset.minari_dataset import parse_dataset_id

    from diffrl.data.minari_io import datasets_root

    for name, value in counts.items():
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        parse_dataset_id(dataset_id)
    except ValueError as err:
        raise ValueError(f"dataset id: {err}") from None
    root = datasets_root(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"the datasets root {root} is a file, not a folder (--root / $MINARI_DATASETS_PATH)")
    if root.joinpath(*dataset_id.split("/")).exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id} already exists under {root}; pass --overwrite to replace it")
    return root


def generate_maze_dataset(maze: str, steps: int | None = None, *, reward_type: str = "sparse",
                               num_envs: int = 64, seed: int = 0, dataset_id: str | None = None,
                               root: str | Path | None = None, overwrite: bool = False,
                               reference_episodes: int = 100, progress: bool = True,
                               protocol: str = "pointmaze") -> dict:
    """Generate a maze dataset by ``protocol`` (``"pointmaze"``: Minari's pointmaze-v2 recipe, reference scores
    measured; ``"maze2d"``: D4RL's maze2d-v1 recipe and reference scores) and write it as a Minari dataset."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    mazes = DEFAULT_STEPS if protocol == "pointmaze" else D4RL_MAZE2D_REF_SCORES
    if maze not in mazes:
        raise ValueError(f"unknown {protocol} maze {maze!r}; choose one of {', '.join(mazes)}")
    if protocol == "maze2d" and reward_type != "sparse":
        raise ValueError("maze2d datasets are generated with D4RL's sparse reward only")
    steps = DEFAULT_STEPS[maze] if steps is None else steps
    dataset_id = dataset_id or default_dataset_id(maze, reward_type, protocol)
    root = checked_request(dataset_id, root, overwrite, steps=steps, num_envs=num_envs,
                           reference_episodes=reference_episodes)
    # one generator per dataset id and root at a time (they would race for the same folder)
    with exclusive_lock(root, f"dataset {dataset_id} under {root}", name=f".{dataset_id.replace('/', '_')}.lock"):
        if protocol == "maze2d":
            episodes = collect_maze2d(maze, steps, num_envs, seed, progress=progress)
            ref_min, ref_max = D4RL_MAZE2D_REF_SCORES[maze]
        else:
            episodes = collect_pointmaze(maze, steps, num_envs, seed, reward_type, progress=progress)
            expert_returns, random_returns = reference_scores(
                PointMaze(maze, reward_type=reward_type).evaluation_env(), reference_episodes, progress=progress)
            ref_max, ref_min = float(expert_returns.mean()), float(random_returns.mean())
        path = write_minari_dataset(episodes, dataset_id, maze, reward_type, ref_min, ref_max, root, overwrite,
                                    protocol)
    return {"dataset_id": dataset_id, "path": str(path), "steps": int(sum(len(e["actions"]) for e in episodes)),
            "episodes": len(episodes), "ref_min_score": ref_min, "ref_max_score": ref_max}
