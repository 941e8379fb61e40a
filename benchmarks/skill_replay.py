"""Do a latent-skill run's skills go where the data went? Dataset chunks replayed through the skill decoder.

    diffrl benchmark skill_replay --workdir W [--chunks 200] [--seed 0] [--experts DIR] [--json PATH] [--no-write]

For an LDCQ-family or DIAR run trained in ``W`` on AntMaze or PointMaze data, ``--chunks`` random H-step chunks of
the dataset (each inside one episode) start gymnasium envs of the recording spec, MuJoCo C as the data was
recorded, at their first state; each is then rolled H steps four ways: with the chunk's own actions (the simulator
check: it must end where the data ended), with the decoder ``pi(a | s, z)`` and the chunk's posterior-mean latent
(how much of the chunk the skill keeps: the VAE's reconstruction, closed loop), with one latent of the diffusion
prior at the chunk's start, and with zero actions (what coasting alone gives). For AntMaze data made here,
``--experts DIR`` (the folder ``diffrl data generate`` cached its expert in) adds a fifth: the walker that made the
data, restarted at the chunk's start towards the episode's goal with fresh action noise, the spread that even the
chunk's own intent leaves. Per way: the mean distance from the rolled final (x, y) to the chunk's, the mean
displacement, and the mean cosine between the rolled and the chunk's displacement (over the chunks where both moved).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.agents.latent_skills import LatentSkillMethod
from diffrl.benchmarks.common import benchmark_parser, report, versions
from diffrl.data.minari_io import OfflineData, load_dataset
from diffrl.envs.gym_fallback import make_gym_env
from diffrl.envs.antmaze import MAZE_SIZE_SCALING
from diffrl.envs.pointmaze import MazeLayout
from diffrl.eval.evaluate import eval_env_spec
from diffrl.experts.antmaze_data import MazeWalker, train_direction_expert
from diffrl.nets.skills import SkillVAE
from diffrl.spaces import flatten_observation
from diffrl.train.pipeline import load_trained


def chunk_rows(data: OfflineData, horizon: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """First rows of ``count`` random ``horizon``-step chunks, each inside one episode."""
    episodes = np.flatnonzero(data.episode_lengths >= horizon)
    if len(episodes) == 0:
        raise ValueError(f"no episode of {data.dataset_id} holds a chunk of {horizon} steps")
    episodes = rng.choice(episodes, count)
    return data.episode_starts[episodes] + rng.integers(0, data.episode_lengths[episodes] - horizon + 1)


def set_maze_state(env, obs: np.ndarray, slices: dict) -> None:
    """Put a gymnasium AntMaze or PointMaze env at the state of a flat dataset observation ``obs``."""
    inner = env.unwrapped
    body, xy = obs[slices["observation"]], obs[slices["achieved_goal"]]
    if hasattr(inner, "ant_env"):  # observation = qpos[2:] (13), qvel (14); achieved_goal = qpos[:2]
        inner.ant_env.set_state(np.concatenate([xy, body[:13]]), body[13:27])
    elif hasattr(inner, "point_env"):  # observation = qpos (2), qvel (2)
        inner.point_env.set_state(body[:2], body[2:4])
    else:
        raise ValueError(f"{env.spec.id} is not an AntMaze or PointMaze env")


def replay(envs, first_obs: np.ndarray, act, horizon: int, slices: dict) -> np.ndarray:
    """Final (x, y) of ``envs`` started at ``first_obs`` and stepped ``horizon`` times with
    ``act(obs [N, O], t) -> actions [N, A]``."""
    obs = first_obs.copy()
    for env, o in zip(envs, obs):
        env.reset(seed=0)
        set_maze_state(env, o, slices)
    for t in range(horizon):
        actions = np.asarray(act(obs, t))
        for i, env in enumerate(envs):
            obs[i] = flatten_observation(env.step(actions[i])[0])
    return obs[:, slices["achieved_goal"]]


def walker_actions(experts, envs, goals: np.ndarray, slices: dict, seed: int):
    """``act(obs, t)`` of the AntMaze data's walker (:class:`MazeWalker`, the collection noise) heading for ``goals``
    (the chunks' episode goals, not the goal of the env the chunk is replayed in)."""
    inner = envs[0].unwrapped
    if not hasattr(inner, "ant_env"):
        raise ValueError("--experts: the walker made AntMaze data only")
    layout = MazeLayout(inner.maze.maze_map, MAZE_SIZE_SCALING)
    walker = MazeWalker(train_direction_expert(experts, progress=False), layout, len(envs), seed)

    def act(obs, t):
        obs = obs.copy()
        obs[:, slices["desired_goal"]] = goals
        return walker(obs)

    return act


def endpoint_statistics(start_xy: np.ndarray, end_xy: np.ndarray, data_end_xy: np.ndarray) -> dict:
    """Mean final-point error to the data, mean displacement, and mean cosine to the data's displacement over the
    rows where both displacements are above 1e-6."""
    moved, data_moved = end_xy - start_xy, data_end_xy - start_xy
    length, data_length = np.linalg.norm(moved, axis=-1), np.linalg.norm(data_moved, axis=-1)
    both = (length > 1e-6) & (data_length > 1e-6)
    cosine = (moved * data_moved).sum(-1)[both] / (length * data_length)[both]
    return {"final_xy_error": float(np.linalg.norm(end_xy - data_end_xy, axis=-1).mean()),
            "displacement": float(length.mean()), "cosine": float(cosine.mean()) if both.any() else None}


def main(argv=None):
    parser = benchmark_parser("skill_replay", __doc__)
    parser.add_argument("--workdir", required=True, help="a trained latent-skill workdir (LDCQ family, DIAR)")
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experts", default=None, metavar="DIR", help="AntMaze: add the walker that made the data")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    method, params, config, step = load_trained(args.workdir, stages=["vae", "prior"])
    if not isinstance(method, LatentSkillMethod):
        raise SystemExit(f"{config.method} has no skill decoder (the LDCQ family and DIAR have)")
    data = load_dataset(config.dataset.id, root=config.dataset.root)
    slices, horizon = data.observation_slices or {}, method.horizon
    if not {"observation", "achieved_goal"} <= set(slices):
        raise SystemExit(f"{config.dataset.id} is not maze data (no observation / achieved_goal keys)")
    rows = chunk_rows(data, horizon, args.chunks, np.random.default_rng(args.seed))
    first_obs = data.observations[rows]
    actions = data.actions[rows[:, None] + np.arange(horizon)]  # [N, H, A]
    start_xy = first_obs[:, slices["achieved_goal"]]
    data_end_xy = data.next_observations[rows + horizon - 1][:, slices["achieved_goal"]]

    rng_prior, rng_act = jax.random.split(jax.random.PRNGKey(args.seed))
    encode = jax.jit(lambda p, obs, a: method.vae.apply(p, method.skill_state(obs), a, method=SkillVAE.encode)[0])
    posterior = encode(params["vae"], data.observations[rows[:, None] + np.arange(horizon)], actions)
    prior = jax.jit(lambda p, key, obs: method.sample_latents(p, key, method.condition(obs), 1)[:, 0])(
        params["prior"], rng_prior, first_obs)
    decode = jax.jit(method.decode_action)

    def with_latent(latent):
        return lambda obs, t: decode(params["vae"], jnp.asarray(obs), latent, jax.random.fold_in(rng_act, t))

    ways = {"the chunk's actions": lambda obs, t: actions[:, t],
            "decoder, posterior-mean latent": with_latent(posterior),
            "decoder, one prior latent": with_latent(prior),
            "zero actions": lambda obs, t: np.zeros_like(actions[:, t])}
    spec = data.env_spec or eval_env_spec(method)[0]
    envs = [make_gym_env(spec) for _ in rows]
    if args.experts:
        goals = first_obs[:, slices["desired_goal"]]
        ways["the data's walker, fresh noise"] = walker_actions(args.experts, envs, goals, slices, args.seed)
    started, results = time.perf_counter(), []
    try:
        for way, act in ways.items():
            stats = endpoint_statistics(start_xy, replay(envs, first_obs, act, horizon, slices), data_end_xy)
            results.append({"way": way, **stats})
            print(f"{way}: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items() if v is not None), flush=True)
    finally:
        for env in envs:
            env.close()
    seconds = time.perf_counter() - started
    data_length = np.linalg.norm(data_end_xy - start_xy, axis=-1)
    header = (f"{versions('flax', 'mujoco', 'gymnasium')}; {config.method} of `{args.workdir}` (VAE and prior at "
              f"their last checkpoints, the prior's step {step}), dataset `{config.dataset.id}`; {args.chunks} "
              f"chunks of {horizon} steps drawn at random (seed {args.seed}), each replayed from its first state in "
              f"`{spec.id}` (gymnasium); the data's own displacement over a chunk: mean {data_length.mean():.3f}, "
              f"median {np.median(data_length):.3f}; rolled in {seconds:.1f} s.")

    def cell(value):
        return "-" if value is None else f"{value:.3f}"

    table = ["| rolled with | final (x, y) to the chunk's | displacement | cosine to the chunk's displacement |",
             "|---|---:|---:|---:|"]
    table += [f"| {r['way']} | {cell(r['final_xy_error'])} | {cell(r['displacement'])} | {cell(r['cosine'])} |"
              for r in results]
    figures = {"workdir": args.workdir, "method": config.method, "env": spec.id, "step": step, "chunks": args.chunks,
               "horizon": horizon, "data_displacement_mean": float(data_length.mean()), "seconds": seconds,
               "ways": results}
    report(f"Skills replayed: {config.method} seed {config.seed}, {spec.id}", "skill_replay", argv, header, table,
           [figures], json_path=args.json, write=not args.no_write)


if __name__ == "__main__":
    main()
