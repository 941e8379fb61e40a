"""The benchmark commands' arithmetic: XLA cost accounting, budget skipping, derived rates and synthetic data."""

from __future__ import annotations

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.benchmarks import common
from diffrl.data import make_store
from diffrl.data.minari_io import OfflineData
from diffrl.envs.gym_fallback import make_gym_env
from diffrl.envs.pointmaze import MazeLayout
from diffrl.nets import MLPDenoiser
from diffrl.spaces import DICT_OBSERVATION_KEYS, flatten_observation


def load(name: str):
    """The benchmark module ``diffrl.benchmarks.<name>`` (benchmarks/ installs as that package)."""
    return importlib.import_module(f"diffrl.benchmarks.{name}")


def tiny_limits(**_):
    """The real measurement at tiny sizes (the default sizes take seconds)."""
    return common.measure_device_limits(repeats=1, matmul_size=128, stream_mib=1)


def test_cost_counts_matmul_and_convolution_flops_and_a_loop_body_once():
    """The benchmarks multiply one step's cost by the steps because XLA counts a loop body once: pin both facts, and
    the FLOPs of a convolution (by hand: 2 x batch x the kernel taps that meet the input x in x out channels), which
    come from the traced program because a GPU's compiled program hides them in library calls."""
    a = jnp.ones((64, 32))
    b = jnp.ones((32, 16))
    flops, nbytes = common.cost(jax.jit(jnp.matmul).lower(a, b))
    assert flops == 2 * 64 * 32 * 16
    assert nbytes >= 4 * (64 * 32 + 32 * 16 + 64 * 16)
    square = jnp.ones((32, 32))
    looped = jax.jit(lambda x: jax.lax.scan(lambda y, _: (y @ x, None), x, None, length=10)[0])
    assert common.cost(looped.lower(square))[0] == pytest.approx(2 * 32**3, rel=1e-3)  # + loop counter
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), [(2, 2)],
                                                             dimension_numbers=("NWC", "WIO", "NWC")))
    x, kernel = jnp.ones((4, 16, 8)), jnp.ones((5, 8, 12))
    taps = 16 * 5 - 2 * (2 + 1)  # width 16, kernel 5, padding 2: the two outputs at each end miss 2 and 1 taps
    assert common.cost(conv.lower(x, kernel))[0] == 2 * 4 * taps * 8 * 12


def test_cost_off_the_cpu_gives_the_traced_flops_and_no_bytes(monkeypatch, tmp_path):
    """A GPU behind a PJRT plugin has no analysis before compilation (``Lowered.cost_analysis`` is None): the
    FLOPs then come from the CPU client's analysis of the same module."""
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    lowered = jax.jit(jnp.matmul).lower(a, b)
    monkeypatch.setattr(common.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(type(lowered), "cost_analysis", lambda self: None)
    flops, nbytes = common.cost(lowered)
    assert flops == 2 * 64 * 32 * 16 and np.isnan(nbytes)
    assert common.giga(nbytes) == "-" and common.percent(nbytes, 1.0) == "-" and common.giga(2.5e9) == "2.5"
    # and null in the JSON, which a strict parser reads (bare NaN is not JSON)
    path = common.write_json(tmp_path / "figures.json", {"bytes": nbytes, "rows": [{"flops": flops, "x": np.inf}]})
    refuse = lambda constant: pytest.fail(f"{constant} in {path.read_text()}")  # noqa: E731
    assert json.loads(path.read_text(), parse_constant=refuse) == {"bytes": None, "rows": [{"flops": flops, "x": None}]}


def test_sampler_benchmark_skips_over_budget_and_derives_rates(tmp_path, monkeypatch):
    bench = load("sampler")
    monkeypatch.setattr(bench, "measure_device_limits", tiny_limits)
    out = tmp_path / "sampler.json"
    assert bench.main(["--samplers", "ddim", "ddpm-cfg", "--batches", "1", "2", "--steps", "10", "--repeats", "1",
                       "--budget", "0", "--no-write", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["figures"]
    measured = [f for f in figures if "skipped" not in f]
    assert [(f["sampler"], f["batch"]) for f in measured] == [("ddim", 1), ("ddpm-cfg", 1)]
    assert [(f["sampler"], f["batch"]) for f in figures if "skipped" in f] == [("ddim", 2), ("ddpm-cfg", 2)]
    ddim, cfg = measured
    assert ddim["steps"] == 2 and cfg["steps"] == 10  # DDIM takes N / 5 of the N = 10 steps
    # a denoiser call costs ~2 FLOPs per weight per example (the MLP's kernels; norms and Mish add a few percent),
    # and CFG evaluates it on twice the batch
    params = MLPDenoiser(hidden=256, depth=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 16)),
                                                   jnp.zeros((1,), jnp.int32), jnp.zeros((1, 8)))
    dense = 2 * sum(leaf.size for leaf in jax.tree.leaves(params) if leaf.ndim == 2)
    assert cfg["flops"] / cfg["steps"] == pytest.approx(2 * dense, rel=0.1)
    assert ddim["flops"] / ddim["steps"] == pytest.approx(dense, rel=0.1)
    for f in measured:
        assert f["samples_per_s"] == pytest.approx(f["batch"] / f["latency_s"])
        assert f["flops_per_s"] == pytest.approx(f["flops"] / f["latency_s"])


def test_batch_over_devices_splits_the_batch_where_the_devices_divide_it():
    n = jax.local_device_count()  # the suite runs on 4 host devices (conftest)
    assert n > 1
    split, other = common.batch_over_devices(jnp.arange(2 * n * 3.0).reshape(2 * n, 3), jnp.ones((2 * n,)))
    assert common.devices_of(split) == common.devices_of(other) == n
    assert [shard.data.shape for shard in split.addressable_shards] == [(2, 3)] * n
    np.testing.assert_array_equal(split, np.arange(2 * n * 3.0).reshape(2 * n, 3))
    (odd,) = common.batch_over_devices(jnp.ones((n + 1, 3)))
    assert common.devices_of(odd) == 1


def test_sampler_benchmark_compute_dtype_is_for_the_diffuser_samplers(capsys):
    with pytest.raises(SystemExit):
        load("sampler").main(["--samplers", "diffuser-maze", "ddim", "--compute-dtype", "bfloat16", "--no-write"])
    assert "--compute-dtype applies to the diffuser-* samplers only, not to ddim" in capsys.readouterr().err


def test_train_benchmark_times_the_runner_chunk(tmp_path, monkeypatch):
    from diffrl.train import loop

    bench = load("train")
    monkeypatch.setattr(bench, "measure_device_limits", tiny_limits)
    built = []  # the chunks the benchmark times: the training loop's own, for the stage the run names

    def chunk_of_the_loop(stage, mesh, steps):
        built.append((stage.name, mesh.size, steps))
        return loop.make_train_chunk(stage, mesh, steps)

    monkeypatch.setattr(bench, "make_train_chunk", chunk_of_the_loop)
    out = tmp_path / "train.json"
    assert bench.main(["--runs", "bc:pointmaze-umaze", "--steps", "2", "--repeats", "1",
                       "--overrides", "train.batch_size=32", "--no-write", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["figures"]
    device_counts = [1, len(jax.devices())] if len(jax.devices()) > 1 else [1]
    assert [f["devices"] for f in figures] == device_counts
    assert built == [("policy", n, 2) for n in device_counts]
    one = figures[0]
    assert one["batch"] == 32 and one["stage"] == "policy"
    assert one["examples_per_s"] == pytest.approx(32 * one["steps_per_s"])
    # one Adam step of an MLP: forward + backward ~ 6 FLOPs per weight per example (tanh/Adam add a few percent)
    weights = 8 * 256 + 256 * 256 + 256 * 2  # the flat observation (8) -> 256 -> 256 -> action (2)
    assert 6 * 32 * weights <= one["flops_per_step"] <= 1.5 * 6 * 32 * weights


def test_train_benchmark_holds_each_run_to_its_compute_dtypes_matmul_rate(tmp_path, monkeypatch, capsys):
    bench = load("train")
    rates = {"float32": 100e9, "bfloat16": 400e9}
    monkeypatch.setattr(bench, "measure_device_limits", lambda matmul_dtype="float32": {
        "matmul_flops_per_s": rates[matmul_dtype], "stream_bytes_per_s": 10e9, "matmul_size": 8,
        "matmul_dtype": matmul_dtype, "stream_mib": 1})
    monkeypatch.setattr(bench.jax, "devices", lambda: jax.local_devices()[:1])

    def measure(run, devices, steps, repeats, overrides):  # 200 GFLOP/s, 5 GB/s either way
        return {"run": run, "stage": "denoiser", "devices": 1, "batch": 8, "prepare_s": 0.0, "compile_s": 1.0,
                "compute_dtype": "bfloat16" if "bfloat16" in run else "float32", "seconds_per_step": 0.5,
                "steps_per_s": 2.0, "examples_per_s": 16.0, "flops_per_step": 100e9, "bytes_per_step": 2.5e9,
                "flops_per_s": 200e9, "bytes_per_s": 5e9}

    monkeypatch.setattr(bench, "measure", measure)
    out = tmp_path / "train.json"
    assert bench.main(["--runs", "diffuser:pointmaze-umaze", "diffuser:pointmaze-umaze,compute_dtype=bfloat16",
                       "--no-write", "--json", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| diffuser")]
    assert [r.split("|")[11].strip() for r in rows] == ["200%", "50%"]  # % peak: 200 of 100, 200 of 400
    limits = json.loads(out.read_text())["limits"]
    assert {dtype: limit["matmul_flops_per_s"] for dtype, limit in limits.items()} == rates


def test_train_benchmark_run_specs_and_staged_methods():
    bench = load("train")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--runs", "bc"])
    assert exit_info.value.code == 2
    assert bench.parse_run("ldcq:pointmaze-umaze:q,q.candidates=fresh,q.num_candidates=4") == (
        "ldcq", "pointmaze-umaze", "q", ["q.candidates=fresh", "q.num_candidates=4"])
    assert bench.parse_run("diffuser:hopper-medium") == ("diffuser", "hopper-medium", None, [])
    # the default runs time every stage of Diffuser's value-guided variant and of LDCQ
    stages = {bench.parse_run(run)[:3] for run in bench.RUNS}
    assert {("diffuser", "hopper-medium", None), ("diffuser", "hopper-medium", "value")} <= stages
    assert {("ldcq", "pointmaze-umaze", s) for s in ("vae", "prior", "q")} <= stages
    assert {("diar", "pointmaze-umaze", s) for s in ("vae", "qv")} <= stages
    # without a stage, a method's first; a later stage gets random upstream parameters of the earlier stages'
    # shapes instead of a workdir
    data = common.synthetic_data("pointmaze-umaze", episodes=2, episode_length=40)
    small = ["model.hidden=8", "q.pool_size=4", "q.num_candidates=2", "q.pool_steps=1", "q.pool_extra_steps=0"]
    method, stage = common.synthetic_stage("pointmaze-umaze", small, method="ldcq", data=data)
    assert method.name == "ldcq" and stage.name == "vae" and stage.upstream == {}
    method, stage = common.synthetic_stage("pointmaze-umaze", small, method="ldcq", data=data, stage="q")
    assert stage.name == "q" and set(stage.upstream) == {"vae", "prior"}
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)  # noqa: E731
    key = jax.random.PRNGKey(1)
    assert shapes(stage.upstream["vae"]) == shapes(jax.eval_shape(method.stage("vae").init, key).params)
    assert shapes(stage.upstream["prior"]) == shapes(jax.eval_shape(method.init_prior, key))
    assert stage.num_chunks is None  # the Q stage's replay has a slot per chunk, counted by prepare
    stage.prepare(make_store(method.preprocess(data)))
    # from_arrays chains its episodes (each starts at the last one's next observation): one stream of 80 steps
    assert stage.num_chunks == 2 * 40 - 30 + 1
    with pytest.raises(ValueError, match="vae, prior, q"):
        common.synthetic_stage("pointmaze-umaze", small, method="ldcq", data=data, stage="critic")


def test_synthetic_data_has_the_variant_shapes():
    maze = common.synthetic_data("multi2d-umaze", episodes=2, episode_length=50)
    assert maze.observations.shape == (100, 8) and maze.actions.shape == (100, 2)
    assert maze.observation_slices["desired_goal"] == slice(6, 8)
    assert list(maze.episode_lengths) == [50, 50] and maze.truncations.sum() == 2
    hopper = common.synthetic_data("hopper-medium-expert", episodes=1, episode_length=10)
    assert hopper.observations.shape == (10, 11) and hopper.observation_slices is None
    np.testing.assert_array_equal(hopper.next_observations[:-1], hopper.observations[1:])


def test_compare_pytorch_interleaves_the_sides_and_reports_median_ratios(tmp_path):
    """Both sides warm up first, then alternate with the order turning each repeat; the row is the medians' ratio
    per unit. A folder that is not the official checkout is refused by name, before anything is imported."""
    compare = load("compare_pytorch")
    order = []
    calls = {"pytorch": lambda: order.append("pytorch"), "diffrl": lambda: order.append("diffrl")}
    seconds = compare.interleaved(calls, repeats=3)
    assert order == ["pytorch", "diffrl", "pytorch", "diffrl", "diffrl", "pytorch", "pytorch", "diffrl"]
    assert [len(v) for v in seconds.values()] == [3, 3]

    figure = compare.summary("maze-train", 64, {"pytorch": [3.0, 1.0, 2.0], "diffrl": [0.5, 2.0, 1.0]}, per_call=2)
    assert (figure["pytorch_median_s"], figure["pytorch_best_s"]) == (1.0, 0.5)
    assert (figure["diffrl_median_s"], figure["diffrl_best_s"]) == (0.5, 0.25)
    assert figure["speedup"] == 2.0
    assert compare.row(figure | {"parameters": 1234, "target": compare.target("maze-train", 64, on_gpu=False)}) == (
        "| maze-train | 64 | 1,234 | 1.000 s (500.0 ms) | 500.0 ms (250.0 ms) | 2.00x | 1.3x |")
    assert [compare.target(w, b, on_gpu=True) for w, b in [("maze-plan", 1), ("maze-plan", 1024), ("guided-plan", 64),
                                                           ("maze-train", 64)]] == ["-", "10x", "10x", "-"]

    (tmp_path / "diffuser" / "models").mkdir(parents=True)
    (tmp_path / "diffuser" / "models" / "temporal.py").write_text("raise AssertionError('imported')\n")
    with pytest.raises(FileNotFoundError, match="diffuser/models/diffusion.py"):
        compare.load_official(tmp_path)


def test_maze_scores_pools_runs_from_earlier_json_files(tmp_path, monkeypatch, capsys):
    """Seeds run in separate jobs pool into one row: mean and standard error over all seeds x episodes."""
    bench = load("maze_scores")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")

    def run(seed, scores, overrides=("train.steps=5",)):
        return {"method": "bc", "seed": seed, "variant": "maze2d-large", "overrides": list(overrides),
                "eval_overrides": [], "budget": {"policy": 5},
                "train_seconds": 60.0 * (seed + 1), "scores": scores, "first_hit_scores": [2 * s for s in scores],
                "success": [1, 0], "summary": {"dataset_id": "d", "env": "e", "max_episode_steps": 300}}

    (tmp_path / "a.json").write_text(json.dumps([run(0, [1.0, 3.0])]))
    (tmp_path / "b.json").write_text(json.dumps([run(1, [5.0, 7.0]), run(2, [0.0, 0.0])]))
    args = ["--root", "unused", "--variant", "maze2d-large", "--methods", "bc", "--seeds", "0", "1", "--episodes", "2",
            "--set", "bc", "train.steps=5", "--runs-from", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    assert bench.main([*args, "--json", str(tmp_path / "all.json")]) == 0
    assert [r["seed"] for r in json.loads((tmp_path / "all.json").read_text())] == [0, 1]
    (results,) = (tmp_path / "results").glob("*.md")
    row = next(line for line in results.read_text().splitlines() if line.startswith("| bc |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    stderr = np.std([1.0, 3.0, 5.0, 7.0], ddof=1) / 2
    assert cells[3:9] == ["1.5", "2.0, 6.0", f"4.0 +/- {stderr:.1f}", f"8.0 +/- {2 * stderr:.1f}", "0.50", "5.0"]
    assert "2 seeds x 2 episodes in parallel MJX envs" in results.read_text()  # runs that record no backend
    capsys.readouterr()
    for changed, differ in [(["--set", "bc", "train.steps=6"], "{'overrides': ['train.steps=5']}"),
                            (["--dataset-id", "diffrl/maze2d/other-v1"], "{'overrides': ['train.steps=5']}"),
                            (["--variant", "maze2d-umaze"], "{'variant': 'maze2d-large'}"),
                            (["--episodes", "3"], "{'episodes': 2}")]:
        with pytest.raises(SystemExit):  # a run made with other settings is refused
            bench.main([*args, *changed])
        assert f"bc seed 0 in --runs-from ran with other settings: {differ}" in capsys.readouterr().err


def test_results_land_in_the_checkout_diffrl_is_imported_from(tmp_path, monkeypatch):
    """A clone put first on PYTHONPATH writes its own results, whichever checkout the editable install maps."""
    import diffrl

    monkeypatch.delenv("DIFFRL_BENCHMARK_RESULTS", raising=False)
    checkout = tmp_path / "clone"
    (checkout / "benchmarks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    monkeypatch.setattr(diffrl, "__file__", str(checkout / "diffrl" / "__init__.py"))
    assert common._results_dir() == checkout / "benchmarks" / "results"
    monkeypatch.setattr(diffrl, "__file__", str(tmp_path / "site-packages" / "diffrl" / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    assert common._results_dir() == tmp_path / "benchmarks" / "results"


def test_maze_scores_evaluates_nothing_when_training_was_stopped_by_sigterm(tmp_path, monkeypatch):
    """A SIGTERM makes training save and return early; the partly trained run must not become a row."""
    bench = load("maze_scores")
    monkeypatch.setattr(bench, "train", lambda *args, **kwargs: {"policy": {"stopped_by_sigterm": True, "step": 3}})
    monkeypatch.setattr(bench, "load_trained", lambda *args, **kwargs: pytest.fail("evaluated a stopped run"))
    with pytest.raises(SystemExit, match="bc seed 0: stage policy stopped by SIGTERM at step 3"):
        bench.run("bc", "maze2d-large", ["train.steps=5"], 0, "unused", tmp_path, 2)


def test_plan_walls_counts_inner_states_in_wall_cells_and_outside_the_map():
    """U-Maze (cell 1 wide): cell (2, 2) at (0, 0) is the wall inside the U, (10, 0) lies outside the map."""
    from diffrl.envs.pointmaze import MAZE_MAPS, MazeLayout

    layout = MazeLayout(MAZE_MAPS["umaze"])
    assert layout.is_wall([[2, 2], [2, 3], [-3, 2], [1, 9]]).tolist() == [True, False, True, True]
    assert np.asarray(layout.is_wall(jnp.asarray([[1, 1], [4, 0]]), xp=jnp)).tolist() == [False, True]
    plans = np.array([[[-1, 1], [0, 1], [0, 0], [1, 0]],  # the second inner state in the wall
                      [[1, 0], [10, 0], [1, 0], [1, 1]]], float)  # the sub-goal outside the maze
    stats = load("plan_walls").wall_statistics(layout, plans)
    assert stats == pytest.approx({"states_in_walls": 0.5, "plans_with_a_wall_state": 1.0, "subgoals_in_walls": 0.5,
                                   "mean_step_between_states": 22 / 6})


def test_maze_values_route_bins_and_means_by_hand():
    """Medium's route from (1, 1) to (6, 6) (11 cells; the tie at the start goes to (1, 2), met first from the
    goal), U-Maze's states binned by cell with the cap, and the per-cell means of the chosen states."""
    from diffrl.envs.pointmaze import MAZE_MAPS, MazeLayout

    bench = load("maze_values")
    medium = MazeLayout(MAZE_MAPS["medium"])
    assert bench.route(medium, (1, 1), (6, 6)) == [(1, 1), (1, 2), (2, 2), (3, 2), (3, 3), (3, 4), (4, 4), (4, 5),
                                                   (4, 6), (5, 6), (6, 6)]
    with pytest.raises(ValueError, match=r"the goal cell \(2, 3\) is a wall"):
        bench.route(medium, (1, 1), (2, 3))
    umaze = MazeLayout(MAZE_MAPS["umaze"])  # cell (i, j) has its centre at x = j - 2, y = 2 - i
    cells = umaze_route = bench.route(umaze, (3, 1), (1, 1))
    assert umaze_route == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    xy = np.array([[-1.2, -1.1], [-0.9, -0.8], [-1.0, -1.0], [1.0, 0.1], [-1.0, 1.0], [0.0, 0.0]])  # 3 in (3, 1)
    chosen = bench.states_by_cell(umaze, xy, cells, 2, np.random.default_rng(0))
    assert [len(rows) for rows in chosen] == [2, 0, 0, 1, 0, 0, 1]
    assert set(chosen[0]) < {0, 1, 2} and chosen[3].tolist() == [3] and chosen[6].tolist() == [4]
    values = {"max_q": np.array([1.0, 3.0, 5.0, 7.0]), "v": np.array([0.0, 2.0, 4.0, 8.0])}
    rows = bench.route_table(cells, chosen, values)
    assert [r["steps_to_goal"] for r in rows] == [6, 5, 4, 3, 2, 1, 0]
    assert (rows[0]["max_q"], rows[0]["v"], rows[3]["max_q"], rows[6]["v"]) == (2.0, 1.0, 5.0, 8.0)
    assert rows[1]["max_q"] is None and rows[1]["states"] == 0


def test_maze_values_takes_the_max_over_latents_of_the_min_over_critics_and_v_where_there_is_one():
    bench = load("maze_values")

    class Latents:  # two states, three latents each; two critics
        config = type("C", (), {"plan": type("P", (), {"num_candidates": 3})})

        def sample_latents(self, prior, rng, conditions, n):
            return jnp.arange(len(conditions) * n, dtype=jnp.float32).reshape(len(conditions), n, 1)

        def condition(self, obs):
            return obs

        def q_input(self, obs):
            return obs

        def q_params(self, params):  # LDCQ's "q" stage, DIAR's "qv"
            return params["qv"]["q"] if "qv" in params else params["q"]

        def min_q(self, q_params, states, candidates):
            q = jnp.stack([candidates[..., 0] * states[:, :1], 10 - candidates[..., 0]])  # [2, B, n]
            return q.min(axis=0)

        def values(self, v_params, states):
            return v_params * states[:, 0]

    obs = jnp.array([[1.0], [2.0]])
    # state 1: min(z, 10 - z) over z = 0, 1, 2 -> max 2; state 2: min(2z, 10 - z) over z = 3, 4, 5 -> max 6
    out = bench.latent_values(Latents(), {"prior": None, "q": None}, None, obs)
    assert set(out) == {"max_q"} and out["max_q"].tolist() == [2.0, 6.0]
    out = bench.latent_values(Latents(), {"prior": None, "qv": {"q": None, "v": 3.0}}, None, obs)
    assert out["v"].tolist() == [3.0, 6.0]


def test_skill_replay_chunks_stay_inside_episodes_and_statistics_by_hand():
    bench = load("skill_replay")
    data = OfflineData.from_arrays(np.zeros((47, 4), np.float32), np.zeros((47, 2), np.float32), np.zeros(47),
                                   [5, 12, 30])
    rows = bench.chunk_rows(data, 10, 2000, np.random.default_rng(0))
    episode = np.searchsorted(data.episode_starts, rows, side="right") - 1
    ends = data.episode_starts[episode] + data.episode_lengths[episode]
    assert (episode > 0).all() and (rows + 10 <= ends).all()  # the 5-step episode holds no chunk
    assert set(rows) == set(range(5, 8)) | set(range(17, 38))  # every start that fits, the last ones included
    start = np.zeros((3, 2))
    data_end = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    end = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    stats = bench.endpoint_statistics(start, end, data_end)
    assert stats["final_xy_error"] == pytest.approx((2 ** 0.5 + 1.0 + 3.0) / 3)
    assert stats["displacement"] == pytest.approx(2.0)
    assert stats["cosine"] == pytest.approx(0.5)  # (0 + 1) / 2: the third chunk did not move in the data


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "AntMaze_UMaze-v4"])
def test_skill_replay_restarts_a_recorded_chunk_and_ends_where_the_recording_did(env_id):
    """The gymnasium original as the oracle: a chunk replayed from its recorded first state with its recorded
    actions ends at the recorded (x, y), which only holds when every position and velocity is set (the env's own
    reset state, at rest, would end elsewhere)."""
    bench = load("skill_replay")
    env = make_gym_env(env_id)
    obs, _ = env.reset(seed=3)
    bounds = np.cumsum([0] + [obs[k].size for k in DICT_OBSERVATION_KEYS])
    slices = {k: slice(int(bounds[i]), int(bounds[i + 1])) for i, k in enumerate(DICT_OBSERVATION_KEYS)}
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (40, env.action_space.shape[0]))
    recorded = np.stack([flatten_observation(obs)] + [flatten_observation(env.step(a)[0]) for a in actions])
    end = bench.replay([env], recorded[None, 10], lambda o, t: actions[None, 10 + t], 20, slices)
    np.testing.assert_allclose(end[0], recorded[30, slices["achieved_goal"]], atol=1e-9)
    env.close()


def test_skill_replay_walker_is_for_antmaze_only():
    env = make_gym_env("PointMaze_UMaze-v3")
    with pytest.raises(ValueError, match="AntMaze data only"):
        load("skill_replay").walker_actions("/nonexistent", [env], np.zeros((1, 2)), {}, 0)
    env.close()


def test_skill_choice_geodesic_distance_around_the_u_by_hand():
    """Centre of (3, 1) to the centre of (1, 1) round U-Maze's wall, on 8 x 8 points per cell: 4 diagonal and 8
    straight steps to the corner, 9 straight up the right arm, then 3 diagonal and 9 straight: 26 + 7 sqrt(2) steps
    of 1/8; along the top corridor the straight 2 cells."""
    bench = load("skill_choice")
    layout = MazeLayout([[1] * 5, [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1] * 5], 1.0)
    distance = bench.GeodesicDistance(layout, layout.cell_to_xy(np.array([1, 1])))
    got = distance(layout.cell_to_xy(np.array([[3, 1], [1, 3], [1, 1]])))
    np.testing.assert_allclose(got, [(26 + 7 * 2 ** 0.5) / 8, 2.0, 0.0], atol=1e-12)


def test_skill_choice_statistics_by_hand():
    q = np.array([[1.0, 3.0, 2.0], [0.0, 0.5, -1.0]])
    progress = np.array([[0.1, 0.5, -0.2], [0.3, -0.1, 0.2]])
    stats = load("skill_choice").choice_statistics(q, progress)
    assert stats["q_choice"] == pytest.approx((0.5 - 0.1) / 2)  # each state's argmax-Q latent
    assert stats["random"] == pytest.approx(0.4 / 3)
    assert stats["best"] == pytest.approx((0.5 + 0.3) / 2)
    assert stats["spearman"] == pytest.approx((0.5 - 0.5) / 2)  # ranks (0 2 1 | 1 2 0) and (1 2 0 | 2 0 1)
