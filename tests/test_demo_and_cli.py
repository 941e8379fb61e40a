"""The demo job end to end on a small budget, the small networks, and the command-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.cli import main
from diffrl.nets import MLPDenoiser, sinusoidal_embedding
from synthetic import write_pointmaze_dataset


def test_sinusoidal_embedding_closed_form():
    e = sinusoidal_embedding(jnp.array([0, 3]), 8)
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(e[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-5)
    np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(jnp.zeros(2), 7)


def test_mlp_denoiser_shapes_and_conditioning():
    net = MLPDenoiser(hidden=32, depth=2, time_dim=16)
    x, t, cond = jnp.ones((5, 3)), jnp.arange(5), jnp.ones((5, 4))
    params = net.init(jax.random.PRNGKey(0), x, t, cond)
    out = net.apply(params, x, t, cond)
    assert out.shape == (5, 3)
    assert not np.allclose(out, net.apply(params, x, t, jnp.zeros((5, 4))))  # the condition is used
    assert not np.allclose(out[0], out[1])  # so is the time step


def test_demo_runs_the_whole_pipeline_and_writes_its_outputs(tmp_path, capsys, caplog):
    """The demo on a tiny budget, on a synthetic dataset placed where the demo looks for its data (generation
    itself is tested in test_generate.py)."""
    write_pointmaze_dataset(tmp_path / "datasets")
    # The tiny model of test_runner.py, undoing the demo's own training overrides, so the session's compilation
    # cache already holds the programs.
    tiny = ["task.horizon=16", "diffusion.num_steps=8", "model.dim=8", "model.dim_mults=(1,)",
            "train.batch_size=4", "train.gradient_accumulation=2", "train.steps=10", "train.log_every=10",
            "train.checkpoint_every=10", "train.ema_start=0", "train.learning_rate=2e-4", "eval.episodes=4"]
    assert main(["demo", "--workdir", str(tmp_path), "--no-progress", *(f"--config.{o}" for o in tiny)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["checkpoint_step"] == 10 and summary["episodes"] == 4
    assert f"normalized score {summary['normalized_score']:.1f}" in out  # the result on stdout
    assert "[1/3] using diffrl/pointmaze/umaze-v0" in caplog.text  # progress is logged (the CLI shows it on stderr)
    with open(tmp_path / "demo.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if p.startswith("tmp") or p.endswith(".tmp")]


def test_demo_rejects_a_bad_override_and_an_unwritable_workdir(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--config.train.stepz=5"]) == 2
    assert "unknown config key 'train.stepz'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--workdir", str(blocker / "sub"), "--no-progress"]) == 2
    assert "cannot write to workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train"])
