"""Small synthetic datasets for runner and agent tests (no MJX generation, written in well under a second)."""

from __future__ import annotations

import copy

import numpy as np

from diffrl.config import apply_overrides, load_config
from diffrl.data.generate import write_minari_dataset

# A Diffuser small enough to compile and train in seconds: the runner tests share its compiled programs.
TINY = [
    "task.horizon=16", "diffusion.num_steps=8", "model.dim=8", "model.dim_mults=(1,)",
    "train.batch_size=4", "train.gradient_accumulation=2", "train.steps=40", "train.log_every=10",
    "train.checkpoint_every=10", "train.ema_start=0", "eval.episodes=4",
]


def tiny_config(root, *extra):
    """``diffuser.py:pointmaze-umaze`` made :data:`TINY`, on the dataset written under ``root``."""
    return apply_overrides(load_config("diffuser.py:pointmaze-umaze"), [*TINY, f"dataset.root={root}", *extra])


def pointmaze_streams(num_streams: int = 4, stream_length: int = 120, cut_every: int = 40, seed: int = 0) -> list[dict]:
    """Episodes in the PointMaze layout ``[x, y, vx, vy, ax, ay, gx, gy]``: each stream is a point sliding along
    U-Maze's bottom corridor, cut into episodes of ``cut_every`` steps that continue one another, as Minari's
    PointMaze collection cuts its streams at every reached goal."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(num_streams):
        phase = rng.uniform(0, 2 * np.pi)
        t = np.arange(stream_length + 1)
        x = 0.9 * np.sin(phase + 0.05 * t)
        vx = np.gradient(x) * 100
        xy = np.stack([x, np.full_like(x, -1.0)], -1)
        goal = np.broadcast_to([1.0, 1.0], xy.shape)
        obs = np.concatenate([xy, np.stack([vx, np.zeros_like(vx)], -1), xy, goal], -1).astype(np.float32)
        actions = np.clip(np.stack([np.diff(vx) / 10, np.zeros(stream_length)], -1), -1, 1).astype(np.float32)
        for start in range(0, stream_length, cut_every):
            stop = min(start + cut_every, stream_length)
            episodes.append({"observations": obs[start : stop + 1], "actions": actions[start:stop],
                             "rewards": np.zeros(stop - start, np.float32),
                             "success": np.zeros(stop - start + 1, bool)})
    return episodes


def write_pointmaze_dataset(root, dataset_id: str = "diffrl/pointmaze/umaze-v0", **kwargs) -> str:
    write_minari_dataset(pointmaze_streams(**kwargs), dataset_id, "umaze", "sparse", 0.0, 100.0, root)
    return dataset_id


def write_random_dataset(root, env_id: str = "Pendulum-v1", dataset_id: str = "toy/pendulum/random-v0",
                         episodes: int = 3, steps: int = 40, ref_scores: tuple[float, float] = (-1500.0, 0.0),
                         **make_kwargs) -> str:
    """Uniform-random-action episodes of a gymnasium env with no MJX port (``Pendulum-v1``, the Adroit hands,
    FrankaKitchen with its dict of per-task goals), made with ``make_kwargs``."""
    import minari
    from minari.data_collector import EpisodeBuffer

    from diffrl.data.generate import _minari_root
    from diffrl.envs.gym_fallback import make_gym_env

    env = make_gym_env(env_id, **make_kwargs)
    rng = np.random.default_rng(0)
    buffers = []
    for k in range(episodes):
        obs, _ = env.reset(seed=k)
        observations, actions, rewards = [copy.deepcopy(obs)], [], []  # FrankaKitchen reuses its dict
        for _ in range(steps):
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            obs, reward, *_ = env.step(action)
            observations.append(copy.deepcopy(obs)), actions.append(action), rewards.append(reward)
        buffers.append(EpisodeBuffer(id=k, observations=_stacked(observations), actions=np.asarray(actions),
                                     rewards=np.asarray(rewards), terminations=np.zeros(steps, bool),
                                     truncations=np.arange(steps) == steps - 1, infos={}))
    with _minari_root(root):
        minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, env=env.spec,
                                           ref_min_score=ref_scores[0], ref_max_score=ref_scores[1], author="diffrl",
                                           algorithm_name="uniform random actions", description="test data")
    return dataset_id


def _stacked(observations: list):
    """Per-step observations (arrays, or dicts of them, nested) stacked along a new first axis."""
    if isinstance(observations[0], dict):
        return {key: _stacked([obs[key] for obs in observations]) for key in observations[0]}
    return np.asarray(observations)
