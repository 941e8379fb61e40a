"""Forward noising moments and the training losses (Ho et al. Eq. 4, 14; Min-SNR-gamma, LDCQ Sec. 4.2)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffrl.diffusion import (
    Inpainting,
    diffusion_loss,
    eps_from_x0,
    first_action_weights,
    make_schedule,
    min_snr_weight,
    q_sample,
    split_prediction,
    x0_from_eps,
)
from diffrl.diffusion.oracles import mixture_denoiser


def test_q_sample_moments():
    s = make_schedule("linear", 100)
    n = 200_000
    x0 = jnp.full((n, 1), 2.0)
    for t in (0, 30, 99):
        x = q_sample(s, x0, jnp.full((n,), t), jax.random.normal(jax.random.PRNGKey(t), (n, 1)))
        mean, std = float(s.sqrt_alphas_cumprod[t]) * 2.0, float(s.sqrt_one_minus_alphas_cumprod[t])
        assert float(x.mean()) == pytest.approx(mean, abs=4 * std / np.sqrt(n))
        assert float(x.std()) == pytest.approx(std, rel=0.01)


def test_eps_x0_conversions_are_inverse():
    s = make_schedule("cosine", 50)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0, eps = jax.random.normal(k1, (8, 3, 2)), jax.random.normal(k2, (8, 3, 2))
    t = jnp.arange(8) * 6
    x_t = q_sample(s, x0, t, eps)
    np.testing.assert_allclose(x0_from_eps(s, x_t, t, eps), x0, atol=2e-4)
    np.testing.assert_allclose(eps_from_x0(s, x_t, t, x0), eps, atol=2e-3)
    x0_hat, eps_hat = split_prediction(s, "x0", x_t, t, x0)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3)


def test_min_snr_weights_closed_form():
    s = make_schedule("linear", 500)
    t = jnp.arange(500)
    snr = np.asarray(s.snr)
    np.testing.assert_allclose(min_snr_weight(s, t, "x0", 5.0), np.minimum(snr, 5.0), rtol=1e-6)
    np.testing.assert_allclose(min_snr_weight(s, t, "eps", 5.0), np.minimum(snr, 5.0) / snr, rtol=1e-5)
    np.testing.assert_allclose(min_snr_weight(s, t, "eps", None), 1.0)


def _x0_model(x, t, cond):
    """An arbitrary (non-optimal) smooth denoiser used to compare loss forms."""
    return jnp.tanh(x) * (1.0 + 0.01 * t.reshape((-1,) + (1,) * (x.ndim - 1)))


def test_x0_loss_matches_manual_computation():
    s = make_schedule("linear", 200)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (64, 4, 3))
    rng = jax.random.PRNGKey(7)
    loss, aux = diffusion_loss(_x0_model, s, rng, x0, prediction="x0", min_snr_gamma=5.0)
    rng_t, rng_eps = jax.random.split(rng)
    t = jax.random.randint(rng_t, (64,), 0, 200)
    noise = jax.random.normal(rng_eps, x0.shape)
    a = np.asarray(s.sqrt_alphas_cumprod)[t][:, None, None]
    sg = np.asarray(s.sqrt_one_minus_alphas_cumprod)[t][:, None, None]
    x_t = a * np.asarray(x0) + sg * np.asarray(noise)
    err = ((np.asarray(_x0_model(jnp.asarray(x_t), t, None)) - np.asarray(x0)) ** 2).reshape(64, -1).mean(-1)
    expected = np.mean(np.minimum(np.asarray(s.snr)[t], 5.0) * err)
    np.testing.assert_array_equal(aux["t"], t)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_min_snr_eps_and_x0_losses_agree():
    """||x0 - x0_hat||^2 = ||eps - eps_hat||^2 / SNR, so Min-SNR weighting gives the same loss in both forms."""
    s = make_schedule("cosine", 100)
    x0 = jax.random.normal(jax.random.PRNGKey(2), (128, 6))

    def eps_model(x, t, cond):
        return eps_from_x0(s, x, t, _x0_model(x, t, cond))

    for gamma in (5.0, 1.0):
        rng = jax.random.PRNGKey(3)
        l_x0, _ = diffusion_loss(_x0_model, s, rng, x0, prediction="x0", min_snr_gamma=gamma)
        l_eps, _ = diffusion_loss(eps_model, s, rng, x0, prediction="eps", min_snr_gamma=gamma)
        assert float(l_eps) == pytest.approx(float(l_x0), rel=2e-3)


def test_first_action_weights_and_weighted_loss():
    w = first_action_weights(horizon=4, transition_dim=5, action_dim=2, action_weight=10.0)
    assert w.shape == (4, 5) and w[0, :2].tolist() == [10.0, 10.0] and w.sum() == 20 + 18
    s = make_schedule("linear", 20)
    x0 = jax.random.normal(jax.random.PRNGKey(4), (16, 4, 5))
    zero = lambda x, t, c: jnp.zeros_like(x)
    rng = jax.random.PRNGKey(5)
    loss_w, _ = diffusion_loss(zero, s, rng, x0, prediction="x0", loss_weights=w)
    expected = np.mean(np.asarray(x0) ** 2 * w)
    assert float(loss_w) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="action_dim"):
        first_action_weights(4, 5, 6, 10.0)


def test_inpainted_entries_carry_no_x0_loss():
    s = make_schedule("linear", 20)
    x0 = jax.random.normal(jax.random.PRNGKey(6), (8, 4, 3))
    inpaint = Inpainting.at_timesteps(x0.shape, {0: x0[:, 0, 1:]}, feature_start=1)
    # a model that is perfect except at the inpainted entries, where it is wildly wrong
    model = lambda x, t, c: jnp.where(inpaint.mask, 100.0, x0)
    loss, _ = diffusion_loss(model, s, jax.random.PRNGKey(0), x0, prediction="x0", inpainting=inpaint)
    assert float(loss) == pytest.approx(0.0, abs=1e-10)


def test_oracle_denoiser_minimises_the_loss():
    s = make_schedule("linear", 100)
    data = 1.5 + 0.5 * jax.random.normal(jax.random.PRNGKey(8), (4096, 2))
    oracle = mixture_denoiser(s, [1.0], [[1.5, 1.5]], 0.25)
    rng = jax.random.PRNGKey(9)
    best, _ = diffusion_loss(oracle, s, rng, data, prediction="x0")
    for delta in (0.05, -0.05):
        worse, _ = diffusion_loss(lambda x, t, c: oracle(x, t) + delta, s, rng, data, prediction="x0")
        assert float(worse) > float(best)


def test_training_a_per_step_linear_denoiser_recovers_the_closed_form():
    """x0_hat = a_t x_t + b_t trained on N(m, v) data converges to a_t = alpha v / (alpha^2 v + sigma^2)."""
    s = make_schedule("linear", 10, beta_start=0.05, beta_end=0.5)
    m, v = 1.0, 0.36
    params = {"a": jnp.zeros(10), "b": jnp.zeros(10)}

    def model(p, x, t, cond):
        return p["a"][t][:, None] * x + p["b"][t][:, None]

    optimizer = optax.adam(optax.cosine_decay_schedule(5e-2, 600, alpha=0.01))

    @jax.jit
    def step(p, opt_state, rng):
        rng_data, rng_loss = jax.random.split(rng)
        x0 = m + np.sqrt(v) * jax.random.normal(rng_data, (4096, 1))
        loss_fn = lambda q: diffusion_loss(functools.partial(model, q), s, rng_loss, x0, prediction="x0")[0]
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for i in range(600):
        params, opt_state, _ = step(params, opt_state, jax.random.PRNGKey(i))
    alpha = np.asarray(s.sqrt_alphas_cumprod)
    sigma2 = 1 - alpha**2
    a_star = alpha * v / (alpha**2 * v + sigma2)
    np.testing.assert_allclose(params["a"], a_star, atol=0.03)
    np.testing.assert_allclose(params["b"], (1 - a_star * alpha) * m, atol=0.03)
