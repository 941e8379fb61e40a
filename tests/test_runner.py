"""The experiment runner: configs and overrides, the sharded train step, checkpoints and exact resume, SIGTERM,
TensorBoard logs, evaluation from a checkpoint, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import pytest

from diffrl.cli import main
from diffrl.config import ConfigError, apply_overrides, load_config, mismatched_keys, split_overrides
from diffrl.data import load_dataset, make_store
from diffrl.agents import Diffuser
from diffrl.train.checkpoint import CheckpointError
from diffrl.train.loop import init_carry, make_train_chunk
from diffrl.train.pipeline import train
from diffrl.train.sharding import batch_sharded, make_mesh, put_replicated
from synthetic import TINY, tiny_config, write_pointmaze_dataset
from tensorboard_reader import read_scalars

@pytest.fixture(scope="module")
def maze_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    write_pointmaze_dataset(root)
    return root


def test_configs_variants_and_overrides():
    config = load_config("configs/diffuser.py:pointmaze-large")
    assert (config.task.horizon, config.diffusion.num_steps, config.model.dim_mults) == (384, 256, (1, 4, 8))
    assert load_config("diffuser.py:hopper-medium").value.enabled  # bare names resolve to the bundled configs
    apply_overrides(config, ["train.batch_size=64", "train.learning_rate=1", "model.dim_mults=[1, 2]",
                             "dataset.root=/data", "eval.multi_goal=true", "diffusion.max_path_length=500"])
    assert config.train.batch_size == 64 and config.train.learning_rate == 1.0
    assert isinstance(config.train.learning_rate, float) and config.model.dim_mults == (1, 2)
    assert config.eval.multi_goal is True and config.diffusion.max_path_length == 500
    with pytest.raises(ConfigError, match="choose one of: pointmaze-umaze"):
        load_config("configs/diffuser.py:pointmaze-huge")
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.py:x")
    with pytest.raises(ConfigError, match="did you mean train.batch_size"):
        apply_overrides(config, ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="expected int, got float"):
        apply_overrides(config, ["train.batch_size=3.5"])
    with pytest.raises(ConfigError, match="expected a boolean"):
        apply_overrides(config, ["eval.multi_goal=maybe"])
    assert split_overrides(["train", "--config.seed", "3", "--config.train.steps=5"]) == (
        ["train"], ["seed=3", "train.steps=5"])


def test_sharded_step_matches_single_device_and_splits_the_batch(maze_root):
    assert len(jax.devices()) == 4
    config = tiny_config(maze_root)
    data = load_dataset(config.dataset.id, root=maze_root)
    method = Diffuser.from_data(config, data)
    stage = method.stage("denoiser")
    results, texts = {}, {}
    for name, devices in (("single", jax.devices()[:1]), ("sharded", jax.devices())):
        mesh = make_mesh(devices)
        train_data = put_replicated(stage.prepare(make_store(method.preprocess(data))), mesh)
        carry = put_replicated(init_carry(stage, 0), mesh)
        chunk = make_train_chunk(stage, mesh, steps=10)  # = TINY's log_every: train() below reuses it
        compiled = chunk.lower(carry, train_data).compile()
        texts[name] = compiled.as_text()
        carry, metrics = compiled(carry, train_data)
        results[name] = (jax.device_get(carry["state"].params), np.asarray(metrics["denoiser/loss"]))
        batch = jax.device_put(stage.sample_batch(train_data, jax.random.PRNGKey(2), None), batch_sharded(mesh))
        shard_sizes = [s.data.shape[0] for s in batch["x"].addressable_shards]
        assert shard_sizes == [stage.batch_size // len(devices)] * len(devices)
    np.testing.assert_allclose(results["single"][1], results["sharded"][1], rtol=1e-5)
    # Compare the trained networks' outputs, not raw parameters: a conv bias followed by GroupNorm has a zero
    # gradient up to rounding, which Adam turns into steps of size lr with a rounding-dependent sign.
    x = jax.random.normal(jax.random.PRNGKey(3), (8, 16, method.transition_dim))
    t = jnp.arange(8) % 8
    net = jax.jit(method.net.apply)
    outputs = [net(jax.device_get(results[name][0]), x, t) for name in ("single", "sharded")]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    # In the partitioned program each device convolves a quarter of the batch of 8 trajectories (16 x 8 channels).
    quarter, whole = "f32[2,16,8]", "f32[8,16,8]"
    assert quarter in texts["sharded"] and quarter not in texts["single"] and whole in texts["single"]


def test_sigterm_saves_and_resume_reproduces_the_uninterrupted_run(maze_root, tmp_path):
    # 30 steps and the last two checkpoints kept: six checkpoint saves in all (each takes ~2 s on the CPU)
    config = tiny_config(maze_root, "train.steps=30", "train.keep_checkpoints=2")
    full = train(config, tmp_path / "full", progress=False)["denoiser"]

    def send_sigterm(step, metrics):
        if step == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    first = train(config, tmp_path / "resumed", progress=False, on_log=send_sigterm)["denoiser"]
    assert signal.getsignal(signal.SIGTERM) is previous
    assert first["stopped_by_sigterm"] and first["step"] == 20
    second = train(config, tmp_path / "resumed", progress=False)["denoiser"]
    assert second["start_step"] == 20 and second["step"] == 30
    losses = lambda history: np.concatenate([m["denoiser/loss"] for _, m in history])  # noqa: E731
    np.testing.assert_array_equal(losses(full["history"]), np.concatenate([losses(first["history"]),
                                                                           losses(second["history"])]))
    scalars = read_scalars(tmp_path / "full" / "denoiser" / "tensorboard")
    assert [s for s, _ in scalars["train/denoiser/loss"]] == [10, 20, 30]
    assert np.isclose(scalars["train/denoiser/loss"][-1][1], losses(full["history"])[-10:].mean(), rtol=1e-6)
    assert {"train/denoiser/learning_rate", "train/steps_per_sec", "train/examples_per_sec",
            "train/denoiser/grad_norm"} <= set(scalars)
    checkpoints = tmp_path / "full" / "denoiser" / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [20, 30]


def test_resuming_with_another_model_is_refused(maze_root, tmp_path):
    train(tiny_config(maze_root, "train.steps=10"), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="another model"):
        # a twice as wide U-Net: the refused run compiles its init before it reads the checkpoint (~2 s)
        train(tiny_config(maze_root, "train.steps=20", "model.dim=16"), tmp_path, progress=False)


def test_config_comparison_reads_missing_groups_as_none_and_tuples_as_lists():
    saved = ml_collections.ConfigDict({"method": "ldcq", "model": {"dims": [1, 2]}, "task": {"horizon": 4}})
    config = ml_collections.ConfigDict({"method": "ldcq", "model": {"dims": (1, 2)}})
    assert mismatched_keys(saved, config, ("method", "model", "model.dims", "q.steps")) == []
    assert mismatched_keys(saved, config, ("task.horizon", "task")) == [("task.horizon", 4, None),
                                                                         ("task", {"horizon": 4}, None)]


def test_train_and_evaluate_from_the_command_line(maze_root, tmp_path, capsys):
    overrides = [f"--config.{o}" for o in TINY] + [f"--config.dataset.root={maze_root}", "--config.train.steps=10"]
    run = tmp_path / "run"
    assert main(["train", "--config=configs/diffuser.py:pointmaze-umaze", "--workdir", str(run), "--no-progress",
                 *overrides]) == 0
    assert main(["evaluate", "--workdir", str(run), "--json", str(tmp_path / "eval.json"), "--episodes", "4"]) == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert {"normalized_score", "stderr", "success_rate", "episodes", "dataset_id", "checkpoint_step"} <= set(summary)
    assert summary["episodes"] == 4 and summary["checkpoint_step"] == 10
    assert summary["dataset_id"] == "diffrl/pointmaze/umaze-v0" and 0.0 <= summary["success_rate"] <= 1.0
    # The synthetic dataset's reference returns are 0 and 100, so the score is the mean return.
    assert summary["normalized_score"] == pytest.approx(summary["return_mean"], rel=1e-6)
    with open(summary["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "normalized score" in capsys.readouterr().out
