"""The demo job end to end on a small budget, the networks it uses, and the command-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl import diffusion
from diffrl.cli import main
from diffrl.demo import default_config, evaluate_samples, ring_mixture, run_demo, sample_mixture
from diffrl.nets import MLPDenoiser, sinusoidal_embedding


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


def test_evaluation_measures_tell_good_samples_from_bad():
    weights, means, variances = ring_mixture(8, 2.0, 0.1)
    good = sample_mixture(np.random.default_rng(0), 4000, weights, means, variances)
    one_mode = np.repeat(means[:1], 4000, axis=0) + 0.1 * np.random.default_rng(1).standard_normal((4000, 2))
    uniform = np.random.default_rng(2).uniform(-3, 3, (4000, 2))
    g, o, u = (evaluate_samples(s, weights, means, variances) for s in (good, one_mode, uniform))
    assert g["mode_share_max_error"] < 0.03 and o["mode_share_max_error"] == pytest.approx(0.875)
    assert g["off_mode_fraction"] < 0.02 and u["off_mode_fraction"] > 0.8
    assert g["mean_log_density"] > u["mean_log_density"] + 5


def test_demo_trains_a_sampler_that_beats_an_untrained_one(tmp_path):
    config = default_config()
    config.train.steps = 1500
    config.eval.num_samples = 2000
    summary = run_demo(config, tmp_path, progress=False)
    r = summary["results"]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["results"] == r
    # the exact denoiser is the ceiling the samplers reach; a short run gets well on the way to it ...
    assert r["exact/ddpm"]["off_mode_fraction"] < 0.02
    assert r["learned/ddpm"]["off_mode_fraction"] < 0.3
    assert r["learned/ddpm"]["mode_share_max_error"] < 0.05
    # ... and far beyond the same network untrained
    weights, means, variances = ring_mixture(8, 2.0, 0.1)
    net = MLPDenoiser(**config.model)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    untrained = diffusion.sample(jax.random.PRNGKey(1), lambda x, t, c: net.apply(params, x, t), schedule, (2000, 2))
    u = evaluate_samples(untrained, weights, means, variances)
    assert r["learned/ddpm"]["off_mode_fraction"] < u["off_mode_fraction"] - 0.4
    assert r["learned/ddpm"]["mean_log_density"] > u["mean_log_density"] + 3
    assert not any(name.startswith("tmp") for name in os.listdir(tmp_path))  # nothing half-written left


def test_cli_rejects_bad_steps_and_unwritable_workdir(tmp_path, capsys):
    assert main(["demo", "--steps", "100", "--workdir", str(tmp_path)]) == 2
    assert "--steps must be a positive multiple of 250" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write to workdir"):
        main(["demo", "--workdir", str(blocker / "sub"), "--no-progress"])
    with pytest.raises(SystemExit):
        main(["train"])
