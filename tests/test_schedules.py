"""Schedules against their closed forms (Ho et al. 2020; Nichol & Dhariwal 2021; Song et al. 2021)."""

import math

import jax
import numpy as np
import pytest

from diffrl.diffusion import make_schedule, schedule_from_betas


def test_linear_schedule_closed_form():
    s = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-5)
    # Ho et al. report bar_alpha_T ~ 4e-5 for this schedule.
    assert 3e-5 < float(s.alphas_cumprod[-1]) < 5e-5


def test_cosine_schedule_matches_nichol_dhariwal_formula():
    n, s_off = 100, 0.008
    s = make_schedule("cosine", n)
    f = lambda t: math.cos((t / n + s_off) / (1 + s_off) * math.pi / 2) ** 2
    expected = np.array([f(t + 1) / f(0) for t in range(n)])
    # beta is clipped at 0.999 only at the very last step.
    np.testing.assert_allclose(s.alphas_cumprod[:-1], expected[:-1], rtol=2e-5, atol=1e-7)
    assert float(s.betas.max()) <= 0.999 + 1e-6
    assert float(s.betas[-1]) == pytest.approx(0.999, abs=1e-6)


def test_vp_schedule_alpha_sigma_view():
    n, bmin, bmax = 50, 0.1, 20.0
    s = make_schedule("vp", n, beta_min=bmin, beta_max=bmax)
    tau = np.arange(1, n + 1) / n
    log_alpha = -0.25 * tau**2 * (bmax - bmin) - 0.5 * tau * bmin  # Song et al. 2021, Eq. 33
    np.testing.assert_allclose(s.alpha, np.exp(log_alpha), rtol=2e-5)
    np.testing.assert_allclose(s.sigma, np.sqrt(1 - np.exp(2 * log_alpha)), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(s.alpha) ** 2 + np.asarray(s.sigma) ** 2, 1.0, rtol=1e-6)
    np.testing.assert_allclose(s.log_snr, 2 * log_alpha - np.log1p(-np.exp(2 * log_alpha)), rtol=1e-4)


@pytest.mark.parametrize("name", ["linear", "cosine", "vp"])
def test_derived_quantities(name):
    s = make_schedule(name, 64)
    b = np.asarray(s.betas, np.float64)
    ac = np.cumprod(1 - b)
    acp = np.concatenate([[1.0], ac[:-1]])
    post_var = b * (1 - acp) / (1 - ac)
    np.testing.assert_allclose(s.alphas_cumprod_prev, acp, rtol=1e-5)
    np.testing.assert_allclose(s.posterior_variance, post_var, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef1, b * np.sqrt(acp) / (1 - ac), rtol=1e-4)
    np.testing.assert_allclose(s.posterior_mean_coef2, (1 - acp) * np.sqrt(1 - b) / (1 - ac), rtol=1e-4)
    # tilde beta_0 = 0, so the log is clipped to the t = 1 value (Ho et al.'s code)
    assert float(s.posterior_variance[0]) == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0], np.log(post_var[1]), rtol=1e-5)
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(post_var[1:]), rtol=1e-5)
    np.testing.assert_allclose(s.snr, ac / (1 - ac), rtol=1e-4)
    # posterior mean is unbiased: c1 + c2 sqrt(bar_alpha_t) = sqrt(bar_alpha_{t-1})
    np.testing.assert_allclose(
        np.asarray(s.posterior_mean_coef1) + np.asarray(s.posterior_mean_coef2) * np.sqrt(ac), np.sqrt(acp), rtol=1e-5
    )


def test_schedule_is_an_immutable_pytree():
    s = make_schedule("cosine", 10)
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert len(leaves) == 14 and treedef.unflatten(leaves).name == "cosine"
    with pytest.raises(Exception):
        s.betas = s.betas * 2


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("linear", 0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        schedule_from_betas([0.1, 1.0])
