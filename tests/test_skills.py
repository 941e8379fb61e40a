"""The skill beta-VAE objective of LDCQ (App. A.2.1) against a closed-form computation in numpy."""

import numpy as np
import pytest

from diffrl.nets.skills import skill_vae_loss


def _log_normal(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _kl_normal(mean_q, std_q, mean_p, std_p):
    return np.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5


@pytest.mark.parametrize("state_decoder", [False, True])
def test_skill_vae_loss_matches_closed_form_gaussians(state_decoder):
    """Batch 2, horizon 4, 3 action, 2 latent and 5 state dimensions: every axis reduced differently."""
    rng = np.random.default_rng(0)
    batch, horizon, action_dim, latent_dim, state_dim, beta = 2, 4, 3, 2, 5, 0.3
    out = {"action_mean": rng.normal(size=(batch, horizon, action_dim)),
           "action_std": rng.uniform(0.3, 2.0, (batch, horizon, action_dim)),
           "final_mean": rng.normal(size=(batch, state_dim)), "final_std": rng.uniform(0.3, 2.0, (batch, state_dim))}
    for name in ("post", "prior"):
        out[f"{name}_mean"] = rng.normal(size=(batch, latent_dim))
        out[f"{name}_std"] = rng.uniform(0.3, 2.0, (batch, latent_dim))
    actions, final_state = rng.normal(size=(batch, horizon, action_dim)), rng.normal(size=(batch, state_dim))
    out = {key: value.astype(np.float32) for key, value in out.items()}

    loss, metrics = skill_vae_loss(out, actions.astype(np.float32), final_state.astype(np.float32), beta,
                                   state_decoder)

    # -E_{b,t}[sum_a log pi(a | s, z)] + beta E_b[sum_z KL(q || p)] / H [+ E_b[-sum_s log p(s_{t+H} | s, z)] / H]
    action_nll = -np.mean(np.sum(_log_normal(actions, out["action_mean"], out["action_std"]), -1))
    kl = np.mean(np.sum(_kl_normal(out["post_mean"], out["post_std"], out["prior_mean"], out["prior_std"]), -1))
    expected = action_nll + beta * kl / horizon
    np.testing.assert_allclose(metrics["action_nll"], action_nll, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl"], kl / horizon, rtol=1e-5)
    if state_decoder:
        final_nll = -np.mean(np.sum(_log_normal(final_state, out["final_mean"], out["final_std"]), -1)) / horizon
        np.testing.assert_allclose(metrics["final_state_nll"], final_nll, rtol=1e-5)
        expected += final_nll
    else:
        assert "final_state_nll" not in metrics
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
