"""Locomotion datasets made here, by the recipe of the public ones: ``diffrl data generate hopper-medium``.

Recipe: Minari's collection and reference scores (``minari-dataset-generation-scripts/scripts/mujoco``:
``train.py``, ``create_dataset.py``) and D4RL's definitions of the medium and medium-replay policies (Fu et al.
2020, Sec. 5; Minari instead trains "medium" for a fixed budget, 4M Hopper / 6M Walker2d and HalfCheetah steps, and
has no medium-replay for these envs, only "simple-replay", a fresh 1M-step single-env run):

* envs: gymnasium ``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5`` (the v5 spec is the dataset's env spec and
  evaluation spec), 1,000-step time limit.
* expert: SAC with SB3's defaults (PyTorch's layer initialisation) and Minari's ``learning_starts = 10_000``
  (:class:`diffrl.experts.sac.SACConfig`), trained for ``expert_steps`` environment steps, one environment
  (default 1M, D4RL's SAC budget; Minari trained SB3 SAC for far longer with 5 environments: Hopper 25M, Walker2d
  25M, HalfCheetah TQC 25M for "expert"). The run is cached under ``experts_root`` and resumed, so a longer
  ``expert_steps`` continues it. Runs are cached per env, role, backend and seed (``Hopper-v5/expert-gym-seed0``).
* medium: D4RL's definition, a policy "trained to about a third of the expert's performance": a second SAC run
  (seed + 1) evaluated every ``medium_eval_every`` steps (10 episodes of the policy's mode) stops as soon as that
  return reaches a third of the expert's; the policy at that moment is the medium policy.
* medium-replay: D4RL's "replay buffer of the medium policy's training run": every transition that run stored, in
  order, cut into episodes where they ended (the run's last, unfinished episode ends in a truncation).
* collection (``create_dataset.py: collect_data_from_policy``): the policy's stochastic actions (SB3's
  ``model.predict`` samples), episodes reset with seeds 123, 124, ...; an episode is started only while a whole
  one still fits into ``steps`` (Minari's trim of a trailing partial episode), ``num_envs`` episodes run side by
  side and are stored in seed order. Terminations and truncations are kept apart.
* reference scores (Minari ``get_average_reference_score``, as ``create_dataset.py`` passes its expert policy):
  ``ref_max_score`` the mean return of 100 episodes of the expert's stochastic policy, ``ref_min_score`` of a
  uniformly random policy, from ``reset(seed=123)``; every dataset of an env carries its expert's pair. D4RL's
  pairs (``d4rl/infos.py``) are recorded in the metadata as ``d4rl_ref_min_score`` / ``d4rl_ref_max_score``.

The recipe itself (steps, seeds, the returns at which each policy was taken) is in the metadata under
``diffrl_recipe``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
from tqdm.auto import tqdm

from diffrl.experts.sac import SACConfig, to_env_action
from diffrl.experts.training import SACRun, choose_backend, train_sac

logger = logging.getLogger(__name__)

ENV_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
LEVELS = ("expert", "medium", "medium-replay")
D4RL_REF_SCORES = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0),
                   "walker2d": (1.629008, 4592.3)}  # d4rl/infos.py (min, max)
DEFAULT_EXPERT_STEPS = 1_000_000
DEFAULT_COLLECT_STEPS = 1_000_000
FIRST_EPISODE_SEED = 123  # create_dataset.py: collect_data_from_policy
REFERENCE_EPISODES = 100  # minari.create_dataset_from_buffers(num_episodes_average_score=100)
MEDIUM_FRACTION = 1 / 3
MEDIUM_MAX_STEPS = 1_000_000


def parse_name(name: str) -> tuple[str, str]:
    """``"hopper-medium-replay" -> ("hopper", "medium-replay")``."""
    env, _, level = name.partition("-")
    if env not in ENV_IDS or level not in LEVELS:
        choices = [f"{e}-{lvl}" for e in ENV_IDS for lvl in LEVELS]
        raise ValueError(f"unknown locomotion dataset {name!r}; choose one of {', '.join(choices)}")
    return env, level


def default_experts_root() -> Path:
    return Path.home() / ".cache" / "diffrl" / "experts"


def run_folder(experts_root, env: str, name: str, seed: int) -> Path:
    """Where a cached SAC run lives: by env, role, backend (a host run and a device run carry different states)
    and seed."""
    return Path(experts_root) / ENV_IDS[env] / f"{name}-{choose_backend(ENV_IDS[env])}-seed{seed}"


def train_expert(env: str, experts_root, steps: int = DEFAULT_EXPERT_STEPS, seed: int = 0,
                 progress: bool = True) -> SACRun:
    """The cached expert SAC run of ``env`` (trained, or resumed, up to ``steps``)."""
    workdir = run_folder(experts_root, env, "expert", seed)
    return train_sac(ENV_IDS[env], workdir, steps=steps, config=SACConfig(), seed=seed, eval_every=10_000,
                     eval_episodes=10, checkpoint_every=25_000, progress=progress)


def train_medium(env: str, experts_root, expert: SACRun, seed: int = 0, eval_every: int = 5_000,
                 max_steps: int = MEDIUM_MAX_STEPS, progress: bool = True) -> SACRun:
    """A SAC run (seed + 1) stopped when its evaluation return reaches a third of the expert's last one; cached
    per expert (a longer expert sets another threshold)."""
    expert_return = expert.evaluations[-1][1]
    workdir = run_folder(experts_root, env, f"medium-of-expert{expert.steps}", seed)
    run = train_sac(ENV_IDS[env], workdir, steps=max_steps, config=SACConfig(buffer_size=max_steps), seed=seed + 1,
                    eval_every=eval_every, eval_episodes=10, checkpoint_every=25_000,
                    stop_at_return=MEDIUM_FRACTION * expert_return, progress=progress)
    if not run.stopped_at_return:
        raise RuntimeError(f"the medium SAC run of {ENV_IDS[env]} did not reach {MEDIUM_FRACTION:.3f} x the expert's "
                           f"return {expert_return:.1f} within {max_steps} steps (last evaluations: "
                           f"{run.evaluations[-3:]})")
    return run


def collect(run: SACRun, env_id: str, steps: int, num_envs: int = 10, seed: int = 0,
            progress: bool = True) -> list[dict]:
    """Whole episodes of ``run``'s stochastic policy, at most ``steps`` transitions in all (see the module
    docstring); each episode is ``{observations [T + 1], actions, rewards, terminations, truncations}``."""
    act = _stochastic_policy(run)
    max_steps = gym.spec(env_id).max_episode_steps
    envs = [gym.make(env_id) for _ in range(num_envs)]
    draws = 0
    next_seed, reserved = FIRST_EPISODE_SEED, 0
    episodes, current, obs = [], [None] * num_envs, np.zeros((num_envs, run.sac.observation_size), np.float32)

    def start(i):
        nonlocal next_seed, reserved
        if reserved + max_steps > steps:
            current[i] = None
            return
        first, _ = envs[i].reset(seed=next_seed)
        next_seed, reserved = next_seed + 1, reserved + max_steps
        obs[i] = first
        current[i] = {"observations": [first], "actions": [], "rewards": [], "terminations": [], "truncations": [],
                      "seed": next_seed - 1}

    for i in range(num_envs):
        start(i)
    bar = tqdm(total=steps, desc=f"collecting {env_id}", unit="step", disable=not progress)
    try:
        while any(ep is not None for ep in current):
            actions = act(obs, seed, draws)
            draws += 1
            for i, ep in enumerate(current):
                if ep is None:
                    continue
                o, r, terminated, truncated, _ = envs[i].step(actions[i])
                for key, value in (("observations", o), ("actions", actions[i]), ("rewards", r),
                                    ("terminations", terminated), ("truncations", truncated)):
                    ep[key].append(value)
                obs[i] = o
                bar.update(1)
                if terminated or truncated:
                    episodes.append({k: v if k == "seed" else np.asarray(v) for k, v in ep.items()})
                    reserved -= max_steps - len(ep["actions"])
                    start(i)
    finally:
        bar.close()
        for e in envs:
            e.close()
    episodes.sort(key=lambda ep: ep.pop("seed"))  # in seed order, as one env collects them: episode k has seed 123 + k
    return episodes


def _stochastic_policy(run: SACRun):
    """``(obs [n, d], seed, k) -> actions [n, a]``: draws of ``run``'s policy in environment units, the ``k``-th
    with the key ``fold_in(PRNGKey(seed), k)`` (one jitted call, no key handling on the host)."""
    policy = run.policy(deterministic=False)
    act = jax.jit(lambda params, obs, seed, k: policy.act(
        params, (), obs.astype(np.float32), 0, jax.random.fold_in(jax.random.PRNGKey(seed), k))[0])
    params = run.state.actor.params
    return lambda obs, seed, k: np.asarray(act(params, obs, seed, k))


def replay_episodes(run: SACRun, num_envs: int = 1) -> list[dict]:
    """The transitions of ``run``'s replay buffer, in the order they were stored, as episodes (rows of
    environment ``i`` are ``i, i + num_envs, ...``); the buffer must not have wrapped."""
    buffer = jax.device_get(run.state.buffer)
    size = int(buffer.size)
    if size == buffer.rewards.shape[0] and int(buffer.position) != 0:
        raise ValueError("the replay buffer wrapped around: its oldest transitions are lost")
    episodes = []
    for env_index in range(num_envs):
        rows = np.arange(env_index, size, num_envs)
        ends = list(np.flatnonzero(buffer.done[rows]) + 1)
        if not ends or ends[-1] != len(rows):
            ends.append(len(rows))
        begin = 0
        for end in ends:
            chunk = rows[begin:end]
            terminations = buffer.terminated[chunk].copy()
            truncations = buffer.done[chunk] & ~terminations
            truncations[-1] = not terminations[-1]  # the unfinished last episode is cut by the end of the run
            episodes.append({
                "observations": np.concatenate([buffer.observations[chunk], buffer.next_observations[chunk[-1:]]]),
                "actions": to_env_action(buffer.actions[chunk], run.low, run.high),
                "rewards": buffer.rewards[chunk], "terminations": terminations, "truncations": truncations,
            })
            begin = end
    return episodes


def reference_scores(run: SACRun, env_id: str, cache: Path, episodes: int = REFERENCE_EPISODES) -> tuple[float, float]:
    """``(ref_min_score, ref_max_score)`` by Minari's ``get_average_reference_score`` (random policy; the expert's
    stochastic policy), cached in ``cache`` (a JSON file beside the expert's run)."""
    from minari.utils import get_average_reference_score

    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("steps") == run.steps and saved.get("episodes") == episodes:
            return saved["ref_min_score"], saved["ref_max_score"]
    act, draws = _stochastic_policy(run), iter(range(10**9))
    env = gym.make(env_id)
    ref_max = get_average_reference_score(env, lambda o: act(o[None], FIRST_EPISODE_SEED, next(draws))[0], episodes)
    env.action_space.seed(FIRST_EPISODE_SEED)
    ref_min = get_average_reference_score(env, lambda o: env.action_space.sample(), episodes)
    env.close()
    cache.write_text(json.dumps({"steps": run.steps, "episodes": episodes, "ref_min_score": ref_min,
                                 "ref_max_score": ref_max}))
    return ref_min, ref_max


def generate_locomotion_dataset(name: str, steps: int | None = None, *, expert_steps: int = DEFAULT_EXPERT_STEPS,
                                seed: int = 0, num_envs: int = 10, dataset_id: str | None = None, root=None,
                                experts_root=None, overwrite: bool = False,
                                reference_episodes: int = REFERENCE_EPISODES, progress: bool = True) -> dict:
    """Make ``name`` (``hopper-medium``, ...) by the recipe above and write it as a Minari dataset."""
    from minari.data_collector import EpisodeBuffer

    from diffrl.data.generate import checked_request, create_dataset_atomically
    from diffrl.locking import exclusive_lock

    env, level = parse_name(name)
    env_id = ENV_IDS[env]
    steps = DEFAULT_COLLECT_STEPS if steps is None else steps
    dataset_id = dataset_id or f"diffrl/{env}/{level}-v0"
    root = checked_request(dataset_id, root, overwrite, steps=steps, expert_steps=expert_steps, num_envs=num_envs,
                           reference_episodes=reference_episodes)
    experts_root = Path(experts_root) if experts_root is not None else default_experts_root()
    with exclusive_lock(experts_root / env_id, f"the SAC runs of {env_id} under {experts_root}"):
        expert = train_expert(env, experts_root, expert_steps, seed, progress)
        expert_return = expert.evaluations[-1][1]
        ref_min, ref_max = reference_scores(expert, env_id, run_folder(experts_root, env, "expert", seed) /
                                            "reference_scores.json", reference_episodes)
        recipe = {"env_id": env_id, "level": level, "sac": json.loads(json.dumps(dataclasses.asdict(SACConfig()))),
                  "expert_steps": expert.steps, "expert_eval_return": expert_return, "seed": seed}
        if level == "expert":
            episodes = collect(expert, env_id, steps, num_envs, seed, progress)
        else:
            medium = train_medium(env, experts_root, expert, seed, progress=progress)
            recipe.update(medium_steps=medium.steps, medium_eval_return=medium.evaluations[-1][1],
                          medium_threshold=MEDIUM_FRACTION * expert_return)
            episodes = collect(medium, env_id, steps, num_envs, seed, progress) if level == "medium" else \
                replay_episodes(medium)
    if level != "medium-replay":
        recipe.update(collect_steps=steps, first_episode_seed=FIRST_EPISODE_SEED, stochastic_actions=True)
    buffers = [EpisodeBuffer(id=k, observations=ep["observations"].astype(np.float64),
                             actions=ep["actions"].astype(np.float32), rewards=ep["rewards"].astype(np.float64),
                             terminations=ep["terminations"].astype(bool), truncations=ep["truncations"].astype(bool))
               for k, ep in enumerate(episodes)]
    d4rl_min, d4rl_max = D4RL_REF_SCORES[env]
    description = (f"{env_id} {level} data made by diffrl with the Minari / D4RL recipe (diffrl.experts."
                   f"locomotion_data): SAC expert of {expert.steps} steps (evaluation return {expert_return:.1f})"
                   + ("" if level == "expert" else
                      f", medium policy at {recipe['medium_steps']} steps (return {recipe['medium_eval_return']:.1f})")
                   + ".")
    spec = gym.spec(env_id)
    path = create_dataset_atomically(
        dataset_id, buffers, root, overwrite, extra_metadata={
            "diffrl_recipe": recipe, "d4rl_ref_min_score": d4rl_min, "d4rl_ref_max_score": d4rl_max},
        env=spec, eval_env=spec, ref_min_score=float(ref_min), ref_max_score=float(ref_max),
        algorithm_name="diffrl/SAC (SB3 defaults)", description=description)
    returns = [float(ep["rewards"].sum()) for ep in episodes]
    return {"dataset_id": dataset_id, "path": str(path), "steps": int(sum(len(ep["actions"]) for ep in episodes)),
            "episodes": len(episodes), "ref_min_score": float(ref_min), "ref_max_score": float(ref_max),
            "mean_return": float(np.mean(returns)), "expert_eval_return": expert_return, "recipe": recipe}
