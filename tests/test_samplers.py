"""Reverse samplers with exact (closed-form) denoisers: recovery of known distributions and exactness of hooks."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffrl.diffusion import (
    ClassifierFreeGuidance,
    EnergyGuidance,
    GradientGuidance,
    Inpainting,
    SamplerConfig,
    make_schedule,
    sample,
    step_table,
    timestep_sequence,
    warm_start,
)
from diffrl.diffusion.oracles import mixture_denoiser, mixture_log_density

M, V = 1.5, 0.25  # Gaussian test distribution N(M, V)
MIX = dict(weights=[0.3, 0.7], means=[[-2.0], [2.0]], variances=0.09)


def _draw(model_fn, schedule, n, config, dim=1, seed=0, **hooks):
    fn = jax.jit(lambda rng: sample(rng, model_fn, schedule, (n, dim), config, **hooks))
    return np.asarray(fn(jax.random.PRNGKey(seed)))


def _exact_gaussian_moments(schedule, config, m=M, v=V, start_step=None, mean=0.0, var=1.0):
    """Propagate mean/variance of x through the sampler's own (linear) recursion with the exact denoiser.

    Returns the final mean and variance and the gain d x_0 / d x_init of the whole chain.
    """
    table = step_table(schedule, config, start_step)
    total_gain = 1.0
    for i in range(table.t.shape[0]):
        t = int(table.t[i])
        a, sig = float(schedule.sqrt_alphas_cumprod[t]), float(schedule.sqrt_one_minus_alphas_cumprod[t])
        k = a * v / (a * a * v + sig * sig)
        b0 = m - k * a * m  # x0_hat = k x + b0 ; eps_hat = ((1 - a k) x - a b0) / sig
        gain = float(table.coef_x0[i]) * k + float(table.coef_xt[i]) + float(table.coef_eps[i]) * (1 - a * k) / sig
        bias = float(table.coef_x0[i]) * b0 - float(table.coef_eps[i]) * a * b0 / sig
        mean, var = gain * mean + bias, gain * gain * var + float(table.std[i]) ** 2
        total_gain *= gain
    return mean, var, total_gain


@pytest.mark.parametrize(
    "name,config,var_tol",
    [
        ("linear", SamplerConfig(method="ddpm", prediction="x0"), 0.04),
        ("cosine", SamplerConfig(method="ddpm", prediction="eps"), 0.04),
        ("linear", SamplerConfig(method="ddim", steps=200, prediction="x0"), 0.06),
        ("cosine", SamplerConfig(method="ddim", steps=100, eta=1.0, prediction="eps"), 0.10),
    ],
)
def test_gaussian_oracle_recovers_mean_and_variance(name, config, var_tol):
    s = make_schedule(name, 1000)
    oracle = mixture_denoiser(s, [1.0], [[M]], V, prediction=config.prediction)
    x = _draw(oracle, s, 20_000, config)
    exact_mean, exact_var, _ = _exact_gaussian_moments(s, config)
    # the sampler equals its own closed-form recursion up to Monte-Carlo error ...
    assert x.mean() == pytest.approx(exact_mean, abs=4 * np.sqrt(exact_var / x.size))
    assert x.var() == pytest.approx(exact_var, rel=4 * np.sqrt(2 / x.size))
    # ... and recovers the data distribution within the discretisation tolerance stated per configuration
    assert x.mean() == pytest.approx(M, abs=0.02)
    assert x.var() == pytest.approx(V, rel=var_tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "config",
    [SamplerConfig(method="ddpm", prediction="x0"), SamplerConfig(method="ddim", steps=100, prediction="eps")],
)
def test_mixture_oracle_recovers_mode_weights(config, dtype):
    """Also with the denoiser's arithmetic in bfloat16 (what ``compute_dtype=bfloat16`` does to a network): the
    sampler's own float32 arithmetic keeps the same tolerances."""
    s = make_schedule("linear", 1000)
    oracle = mixture_denoiser(s, prediction=config.prediction, dtype=dtype, **MIX)
    probe, t = jnp.linspace(-3.0, 3.0, 64)[:, None], jnp.full((64,), 500)
    exact = mixture_denoiser(s, prediction=config.prediction, **MIX)(probe, t)
    rounding = float(jnp.max(jnp.abs(oracle(probe, t) - exact)))  # bfloat16 arithmetic: 2^-8 relative per operation
    assert (rounding > 1e-3 if dtype == jnp.bfloat16 else rounding == 0.0) and rounding < 0.05
    x = _draw(oracle, s, 20_000, config)[:, 0]
    assert np.mean(x > 0) == pytest.approx(0.7, abs=0.02)
    assert np.mean(np.abs(x) < 1.0) < 0.005  # almost no mass between the modes
    assert x[x > 0].mean() == pytest.approx(2.0, abs=0.03) and x[x < 0].mean() == pytest.approx(-2.0, abs=0.03)
    assert x[x > 0].std() == pytest.approx(0.3, rel=0.1)


def test_ddpm_step_table_is_the_precomputed_posterior():
    s = make_schedule("cosine", 50)
    table = step_table(s, SamplerConfig())
    np.testing.assert_array_equal(table.t, np.arange(49, -1, -1))
    np.testing.assert_allclose(table.coef_x0, s.posterior_mean_coef1[::-1], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(table.coef_xt, s.posterior_mean_coef2[::-1], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(table.std[:-1], np.sqrt(s.posterior_variance[::-1][:-1]), rtol=2e-4)
    assert float(table.std[-1]) == 0.0  # no noise on the last step
    beta_table = step_table(s, SamplerConfig(variance="beta"))
    np.testing.assert_allclose(beta_table.std[:-1], np.sqrt(s.betas[::-1][:-1]), rtol=2e-4)
    # low-temperature sampling (LatentDiffuser App. B.2): every step's variance times alpha, the means unchanged
    cold = step_table(s, SamplerConfig(temperature=0.5))
    np.testing.assert_allclose(cold.std, np.sqrt(0.5) * table.std, rtol=1e-6)
    np.testing.assert_array_equal(cold.coef_x0, table.coef_x0)


def test_ddim_with_eta_one_on_every_step_is_ddpm():
    """Song et al. (2021) Sec. 4.1: eta = 1 on the full schedule gives the DDPM posterior step."""
    s = make_schedule("linear", 100)
    oracle = mixture_denoiser(s, **MIX)
    ddpm = _draw(oracle, s, 512, SamplerConfig(prediction="x0"), seed=3)
    ddim = _draw(oracle, s, 512, SamplerConfig(method="ddim", eta=1.0, prediction="x0"), seed=3)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-4)  # float32 rounding over 100 steps


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_eps_and_x0_parameterisations_give_the_same_sampler(method):
    s = make_schedule("cosine", 200)
    x0_model = mixture_denoiser(s, prediction="x0", **MIX)
    eps_model = mixture_denoiser(s, prediction="eps", **MIX)
    a = _draw(x0_model, s, 1000, SamplerConfig(method=method, steps=50, prediction="x0"), seed=1)
    b = _draw(eps_model, s, 1000, SamplerConfig(method=method, steps=50, prediction="eps"), seed=1)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_inpainting_entries_equal_their_constraints_exactly():
    s = make_schedule("cosine", 50)
    batch, horizon, dim = 16, 8, 3
    start = jax.random.normal(jax.random.PRNGKey(0), (batch, 2))
    goal = jnp.array([0.25, -0.75])
    inpaint = Inpainting.at_timesteps((batch, horizon, dim), {0: start, horizon - 1: goal}, feature_start=1)
    model = lambda x, t, c: jnp.sin(x)  # any denoiser; inpainting must hold regardless
    guide = GradientGuidance(lambda x, t: jnp.sum(x, axis=(1, 2)), scale=0.5, n_steps=2)
    for config, hooks in [
        (SamplerConfig(), {}),
        (SamplerConfig(method="ddim", steps=10, return_chain=True), {"gradient_guidance": guide}),
    ]:
        out = sample(jax.random.PRNGKey(1), model, s, (batch, horizon, dim), config, inpainting=inpaint, **hooks)
        plans, chain = out if config.return_chain else (out, out[None])
        np.testing.assert_array_equal(plans[:, 0, 1:], start)
        np.testing.assert_array_equal(plans[:, -1, 1:], jnp.broadcast_to(goal, (batch, 2)))
        np.testing.assert_array_equal(chain[:, :, 0, 1:], jnp.broadcast_to(start, chain[:, :, 0, 1:].shape))
        assert not np.allclose(plans[:, 1:-1], 0.0)


def test_cfg_weight_one_is_conditional_and_zero_is_unconditional():
    s = make_schedule("linear", 100)
    models = {m: mixture_denoiser(s, [1.0], [[m]], V) for m in (-1.0, 0.5, 2.0)}

    def conditional(x, t, cond):  # cond is 1 for "conditioned on mean 2", 0 for the null condition
        return jnp.where(cond[:, None] > 0, models[2.0](x, t), models[-1.0](x, t))

    cond, null = jnp.ones(256), jnp.zeros(())
    run = lambda w: _draw(
        conditional, s, 256, SamplerConfig(prediction="x0"), seed=4, cond=cond, cfg=ClassifierFreeGuidance(null, w)
    )
    np.testing.assert_allclose(run(1.0), _draw(models[2.0], s, 256, SamplerConfig(prediction="x0"), seed=4), atol=1e-5)
    np.testing.assert_allclose(run(0.0), _draw(models[-1.0], s, 256, SamplerConfig(prediction="x0"), seed=4), atol=1e-5)
    # For equal-variance Gaussians, weight w gives the Gaussian with mean -1 + w * (2 - -1): w = 0.5 -> 0.5.
    np.testing.assert_allclose(run(0.5), _draw(models[0.5], s, 256, SamplerConfig(prediction="x0"), seed=4), atol=1e-4)


def test_gradient_guidance_moves_samples_toward_higher_objective():
    s = make_schedule("cosine", 100)
    oracle = mixture_denoiser(s, **MIX)
    config = SamplerConfig(prediction="x0")
    objective = lambda x, t: -jnp.sum((x + 2.0) ** 2, axis=-1)  # prefers the left (minority) mode
    plain = _draw(oracle, s, 4000, config, seed=5)
    guided = _draw(oracle, s, 4000, config, seed=5, gradient_guidance=GradientGuidance(objective, scale=5.0, n_steps=2))
    assert np.mean(objective(guided, None)) > np.mean(objective(plain, None)) + 1.0
    assert np.mean(guided < 0) > np.mean(plain < 0) + 0.2
    # guidance switched off on every step (t_stopgrad beyond the chain) reproduces the unguided sampler exactly
    off = GradientGuidance(objective, scale=5.0, t_stopgrad=100)
    np.testing.assert_array_equal(_draw(oracle, s, 4000, config, seed=5, gradient_guidance=off), plain)


def test_gradient_guidance_step_is_scaled_by_posterior_variance():
    """One guided step: x <- x + scale * Var_t * grad J, as the official Diffuser code's scale_grad_by_std."""
    s = make_schedule("linear", 10)
    zero_noise_config = SamplerConfig(method="ddim", steps=1, eta=0.0, prediction="x0")
    identity = lambda x, t, c: x  # x0_hat = x, so the final DDIM step returns the (guided) input
    c = jnp.array([[1.0, -2.0]])
    guide = GradientGuidance(lambda x, t: jnp.sum(c * x, axis=-1), scale=0.3)
    x_init = jnp.array([[0.1, 0.2]])
    out = sample(jax.random.PRNGKey(0), identity, s, (1, 2), zero_noise_config, gradient_guidance=guide,
                 x_init=x_init, start_step=10)
    var = float(np.exp(s.posterior_log_variance_clipped[9]))
    np.testing.assert_allclose(out, x_init + 0.3 * var * c, rtol=1e-5)


def test_guide_values_are_the_objective_of_the_last_guide_call():
    """The official ``p_sample_loop`` ranks its plans by the ``y`` of the last guide call: J on the sample entering
    that call's gradient step; below ``t_stopgrad`` the sample is not moved and J is of the unguided sample."""
    s = make_schedule("linear", 10)
    zero_noise_config = SamplerConfig(method="ddim", steps=1, eta=0.0, prediction="x0")
    identity = lambda x, t, c: x  # x0_hat = x, so the one DDIM step returns the (guided) input
    c, x_init = jnp.array([[1.0, -2.0]]), jnp.array([[0.1, 0.2]])  # J(x_init) = -0.3
    var = float(np.exp(s.posterior_log_variance_clipped[9]))

    def run(t_stopgrad, scale=0.3):
        guide = GradientGuidance(lambda x, t: jnp.sum(c * x, axis=-1), scale=scale, n_steps=2, t_stopgrad=t_stopgrad)
        return sample(jax.random.PRNGKey(0), identity, s, (1, 2), zero_noise_config, gradient_guidance=guide,
                      x_init=x_init, start_step=10, return_guide_values=True)

    out, values = run(t_stopgrad=0)  # two steps of 0.3 * var * c; J after the first: -0.3 + 0.3 * var * |c|^2
    np.testing.assert_allclose(out, x_init + 0.6 * var * c, rtol=1e-5)
    np.testing.assert_allclose(values, [-0.3 + 1.5 * var], rtol=1e-5)
    for out, values in (run(t_stopgrad=10), run(t_stopgrad=0, scale=0.0)):  # t = 9 < 10, or no step: J(x_init)
        np.testing.assert_allclose(out, x_init, rtol=1e-6)
        np.testing.assert_allclose(values, [-0.3], rtol=1e-5)


def test_energy_guidance_samples_the_exponentially_tilted_distribution():
    """N(0, 1) tilted by exp(c x0) is N(c, 1); its exact intermediate energy has gradient c * alpha_t (Lu et al.)."""
    s = make_schedule("linear", 1000)
    oracle = mixture_denoiser(s, [1.0], [[0.0]], 1.0, prediction="eps")
    c = 1.5
    energy = EnergyGuidance(lambda x, t: jnp.sum(c * s.sqrt_alphas_cumprod[t][:, None] * x, axis=-1), scale=1.0)
    x = _draw(oracle, s, 20_000, SamplerConfig(prediction="eps"), energy_guidance=energy)
    assert x.mean() == pytest.approx(c, abs=0.03)
    assert x.var() == pytest.approx(1.0, rel=0.05)


def test_extra_steps_repeat_the_final_denoising_step():
    s = make_schedule("linear", 200)
    oracle = mixture_denoiser(s, **MIX)
    base = _draw(oracle, s, 4000, SamplerConfig(prediction="x0"), seed=6)
    extra = _draw(oracle, s, 4000, SamplerConfig(prediction="x0", extra_steps=10), seed=6)
    manual = jnp.asarray(base)
    for _ in range(10):
        manual = oracle(manual, jnp.zeros(4000, jnp.int32))
    np.testing.assert_allclose(extra, manual, atol=1e-5)
    # Diffusion-X: the extra steps move samples toward higher likelihood under the data distribution
    density = lambda x: float(jnp.mean(mixture_log_density(jnp.asarray(x), **MIX)))
    assert density(extra) > density(base)


def test_warm_start_denoises_only_from_the_partially_noised_plan():
    s = make_schedule("linear", 1000)
    oracle = mixture_denoiser(s, [1.0], [[M]], V)
    n = 20_000
    previous = M + np.sqrt(V) * jax.random.normal(jax.random.PRNGKey(0), (n, 1))
    k = 100
    config = SamplerConfig(prediction="x0", return_chain=True)
    x_init = warm_start(jax.random.PRNGKey(1), s, previous, k)
    out, chain = jax.jit(
        lambda r, x: sample(r, oracle, s, (n, 1), config, x_init=x, start_step=k)
    )(jax.random.PRNGKey(2), x_init)
    assert chain.shape == (k + 1, n, 1)  # k denoising steps, not 1000
    # a plan drawn from the data distribution, re-noised and denoised, is still a data sample ...
    assert float(out.mean()) == pytest.approx(M, abs=0.02)
    assert float(out.var()) == pytest.approx(V, rel=0.04)
    # ... and stays correlated with the plan it started from (the point of warm starting)
    # exactly as much as the linear chain predicts: corr = gain * sqrt(bar_alpha_k) * V / (std_out * sqrt(V))
    corr = np.corrcoef(np.asarray(out)[:, 0], np.asarray(previous)[:, 0])[0, 1]
    ab = float(s.alphas_cumprod[k - 1])
    _, var_out, gain = _exact_gaussian_moments(s, config, start_step=k, mean=np.sqrt(ab) * M, var=ab * V + 1 - ab)
    expected = gain * np.sqrt(ab) * V / np.sqrt(var_out * V)
    assert corr > 0.5 and corr == pytest.approx(expected, abs=0.02)


def test_sampler_compiles_once_independent_of_the_number_of_steps():
    traces = {"model": 0, "objective": 0}

    def model(x, t, cond):
        traces["model"] += 1
        return 0.5 * x

    def objective(x, t):
        traces["objective"] += 1
        return -jnp.sum(x**2, axis=-1)

    for steps in (10, 400):
        traces.update(model=0, objective=0)
        s = make_schedule("cosine", steps)
        hooks = dict(
            gradient_guidance=GradientGuidance(objective, n_steps=2),
            cfg=ClassifierFreeGuidance(jnp.zeros(()), 2.0),
        )
        planner = jax.jit(lambda rng, cond: sample(rng, model, s, (64, 4), SamplerConfig(), cond, **hooks))
        for seed in range(3):
            planner(jax.random.PRNGKey(seed), jnp.ones(64)).block_until_ready()
        # the objective twice: the guided branch and the one below t_stopgrad (J alone)
        assert traces == {"model": 1, "objective": 2}, f"retraced with {steps} steps: {traces}"
        assert planner._cache_size() == 1


def test_sampler_under_vmap_matches_separate_calls():
    s = make_schedule("linear", 50)
    oracle = mixture_denoiser(s, **MIX)
    draw = lambda rng: sample(rng, oracle, s, (32, 1), SamplerConfig(prediction="x0"))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batched = jax.jit(jax.vmap(draw))(keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], draw(keys[i]), atol=1e-5)


def test_sampler_with_batch_sharded_over_devices_matches_single_device():
    devices = np.array(jax.devices())
    assert len(devices) == 4, "conftest sets 4 simulated host devices"
    mesh = Mesh(devices, ("data",))
    s = make_schedule("linear", 50)
    oracle = mixture_denoiser(s, **MIX)
    n = 64
    x_init = jax.random.normal(jax.random.PRNGKey(0), (n, 1))
    goal = jnp.linspace(-1, 1, n)[:, None]

    def plan(rng, x, g):
        mask = jnp.broadcast_to(jnp.arange(1) == 0, x.shape) & (jnp.arange(n)[:, None] % 2 == 0)
        inpaint = Inpainting(mask=mask, values=g)
        return sample(rng, oracle, s, x.shape, SamplerConfig(prediction="x0", steps=None), x_init=x, start_step=50,
                      inpainting=inpaint)

    sharding = NamedSharding(mesh, PartitionSpec("data"))
    sharded = jax.jit(plan)(jax.random.PRNGKey(1), jax.device_put(x_init, sharding), jax.device_put(goal, sharding))
    single = jax.jit(plan)(jax.random.PRNGKey(1), x_init, goal)
    assert len(sharded.sharding.device_set) == 4
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def test_bad_sampler_input():
    s = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="sampler method"):
        SamplerConfig(method="euler")
    with pytest.raises(ValueError, match="prediction"):
        SamplerConfig(prediction="v")
    with pytest.raises(ValueError, match="start_step"):
        warm_start(jax.random.PRNGKey(0), s, jnp.zeros((2, 1)), 11)
    with pytest.raises(ValueError, match="x_init has shape"):
        sample(jax.random.PRNGKey(0), lambda x, t, c: x, s, (2, 1), x_init=jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="horizon index 9"):
        Inpainting.at_timesteps((2, 8, 3), {9: jnp.zeros(2)})
    with pytest.raises(ValueError, match="return_guide_values needs gradient_guidance"):
        sample(jax.random.PRNGKey(0), lambda x, t, c: x, s, (2, 1), return_guide_values=True)


def test_timestep_sequences_start_at_the_initial_noise_level():
    np.testing.assert_array_equal(timestep_sequence(10, 10, 1), [9])
    np.testing.assert_array_equal(timestep_sequence(1000, 1000, 4), [999, 666, 333, 0])
    np.testing.assert_array_equal(timestep_sequence(1000, 30, None), np.arange(29, -1, -1))
    table = step_table(make_schedule("linear", 100), SamplerConfig(method="ddim", steps=5, extra_steps=2))
    np.testing.assert_array_equal(table.t, [99, 74, 50, 25, 0, 0, 0])
    assert float(table.coef_x0[-1]) == 1.0 and float(table.std[-3]) == 0.0
