"""LatentDiffuser: the contrastive energy loss by hand, the VAE's pooling and tiling, energy-guided sampling with a
trained energy model against the exactly tilted mixture, and the three stages end to end with the planner's action."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import optimizing

from diffrl.agents import LatentDiffuser
from diffrl.agents.latent_diffuser import contrastive_energy_loss
from diffrl.config import apply_overrides, load_config
from diffrl.data import OfflineData, make_store
from diffrl.diffusion import EnergyGuidance, SamplerConfig, sample
from diffrl.diffusion.oracles import mixture_denoiser, mixture_log_density
from diffrl.nets.latent_actions import LatentActionVAE, pool_latent_steps, tile_latents
from diffrl.nets.unet import TemporalUNet
from diffrl.train.checkpoint import CheckpointError
from diffrl.train.pipeline import load_trained, train


def test_contrastive_loss_is_eq_8_by_hand():
    target = np.array([[0.0, 1.0, 2.0], [3.0, 3.0, -1.0]])  # -beta E_0 of three supports, two initial states
    logits = np.array([[0.5, -0.5, 1.0], [0.0, 2.0, 1.0]])  # f_eta at their noised copies
    expected = 0.0
    for row in range(2):
        weights = np.exp(target[row]) / np.exp(target[row]).sum()
        log_p = logits[row] - np.log(np.exp(logits[row]).sum())
        expected -= (weights * log_p).sum() / 2
    assert float(contrastive_energy_loss(jnp.asarray(logits), jnp.asarray(target))) == pytest.approx(expected, 1e-6)
    # minimised by f = target + const: the cross entropy then equals the targets' entropy
    weights = jax.nn.softmax(target)
    entropy = -np.mean(np.sum(weights * np.log(weights), -1))
    minimum = float(contrastive_energy_loss(jnp.asarray(target + 7.0), jnp.asarray(target)))
    assert minimum == pytest.approx(entropy, 1e-5)


def test_vae_pools_l_steps_into_a_latent_and_tiles_it_back_without_a_causal_mask():
    h = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 3)), jnp.float32)
    pooled = np.asarray(pool_latent_steps(h, 2))
    np.testing.assert_array_equal(pooled, np.asarray(h).reshape(2, 3, 2, 3).max(axis=2))
    tiled = np.asarray(tile_latents(jnp.asarray(pooled), 2))
    np.testing.assert_array_equal(tiled[:, ::2], pooled)
    np.testing.assert_array_equal(tiled[:, 1::2], pooled)
    with pytest.raises(ValueError, match="multiple of the latent step"):
        pool_latent_steps(h, 4)

    vae = LatentActionVAE(state_dim=3, action_dim=2, latent_dim=4, latent_step=2, width=16, layers=1, heads=2,
                          inverse_hidden=8, return_hidden=8)
    tokens = jnp.asarray(np.random.default_rng(1).normal(size=(1, 6, 7)), jnp.float32)
    states, actions = tokens[..., :3], tokens[..., 3:5]
    params = jax.jit(vae.init)(jax.random.PRNGKey(0), tokens, states[:, 0], states, actions, jax.random.PRNGKey(1))
    encode = jax.jit(lambda x: vae.apply(params, x, method=LatentActionVAE.encode))
    mean, std = encode(tokens)
    assert mean.shape == std.shape == (1, 3, 4) and bool(jnp.all(std > 0))
    # the last token reaches the first latent: no causal mask in the encoder (nor in the decoder, below)
    assert not np.allclose(encode(tokens.at[:, -1].add(1.0))[0][:, 0], mean[:, 0])
    decode = jax.jit(lambda s1, z: vae.apply(params, s1, z, method=LatentActionVAE.decode_states))
    decoded = decode(states[:, 0], mean)
    assert decoded.shape == (1, 6, 3)
    assert not np.allclose(decode(states[:, 0], mean.at[:, -1].add(1.0))[:, 0], decoded[:, 0])
    assert not np.allclose(decode(states[:, 0] + 1.0, mean), decoded)  # s_1 enters the decoder

    # the prior's condition: its embedding is zeroed where keep = 0 (the null condition of classifier-free guidance)
    prior = TemporalUNet(transition_dim=4, dim=8, dim_mults=(1,), condition_dim=3)
    cond = lambda state, keep: {"state": state, "keep": jnp.full((2,), keep)}  # noqa: E731
    z, t, s_a, s_b = jnp.ones((2, 3, 4)), jnp.array([0, 5]), jnp.zeros((2, 3)), jnp.ones((2, 3))
    prior_params = jax.jit(prior.init)(jax.random.PRNGKey(2), z, t, cond(s_a, 1.0))
    out = jax.jit(lambda c: prior.apply(prior_params, z, t, c))
    np.testing.assert_array_equal(out(cond(s_a, 0.0)), out(cond(s_b, 0.0)))
    assert not np.allclose(out(cond(s_a, 1.0)), out(cond(s_b, 1.0)))


# A 1-D behaviour distribution of two modes; the target tilts it by exp(c z): each component N(m, v) becomes
# N(m + c v, v) with weight w exp(c m + c^2 v / 2), so the positive mode's weight goes from 1/2 to 0.818.
MIX = dict(weights=[0.5, 0.5], means=[[-1.5], [1.5]], variances=0.1)
TILT = 0.5


def tilted_mixture():
    w, m, v = np.asarray(MIX["weights"]), np.asarray(MIX["means"])[:, 0], MIX["variances"]
    weights = w * np.exp(TILT * m + TILT**2 * v / 2)
    return dict(weights=list(weights / weights.sum()), means=[[x] for x in m + TILT * v], variances=v)


def test_energy_guidance_with_the_contrastively_trained_energy_samples_the_tilted_target(optimized_compilation):
    """The energy stage's update (Eq. 8) on 16 supports per initial state drawn from the behaviour mixture, with
    values -E_0 = z and beta = TILT; the guided sampler (the behaviour's exact score plus grad f_eta) then draws the
    positive mode with the tilted weight, as it does with the exact intermediate energy log p_k - log q_k, while
    plain sampling keeps 1/2."""
    obs = np.random.default_rng(0).normal(size=(8, 1)).astype(np.float32)
    data = OfflineData.from_arrays(obs, np.zeros((8, 1), np.float32), np.zeros(8, np.float32), [8])
    config = apply_overrides(load_config("latent_diffuser.py:hopper-medium"), [
        "task.horizon=1", "task.latent_step=1", "model.latent_dim=1", "model.prior_dim_mults=(1,)",
        "model.energy_hidden=64", "model.energy_depth=3", f"energy.beta={TILT}", "energy.num_supports=16",
        "train.energy.batch_size=64", "train.energy.learning_rate=3e-3"])
    agent = LatentDiffuser.from_data(config, data)
    stage = agent.stage("energy", {"vae": None, "prior": None})
    states, supports = stage.batch_size, config.energy.num_supports

    @jax.jit
    def train_steps(state, rng):
        def step(state, key):
            key_z, key_mode, key_update = jax.random.split(key, 3)
            mode = jax.random.bernoulli(key_mode, 0.5, (states, supports, 1, 1))
            z0 = jnp.where(mode, 1.5, -1.5) + jnp.sqrt(0.1) * jax.random.normal(key_z, mode.shape)
            batch = {"first_state": jnp.zeros((states, 1)), "latents": z0, "values": z0[..., 0, 0]}
            return stage.update(state, batch, key_update)

        return jax.lax.scan(step, state, jax.random.split(rng, 1500))

    state, metrics = train_steps(jax.jit(stage.init)(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    assert float(metrics["energy/loss"][-100:].mean()) < float(metrics["energy/loss"][:20].mean())

    schedule = agent.schedule
    oracle = mixture_denoiser(schedule, prediction="eps", **MIX)
    n = 8000
    trained = EnergyGuidance(lambda z, k: agent.energy.apply(state.params, z[:, :, None], jnp.zeros((len(z), 1)), k))
    alpha, sigma = schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod

    def exact_energy(z, k):
        a, s = alpha[k][:, None], sigma[k][:, None]
        return (mixture_log_density(z, **tilted_mixture(), alpha=a, sigma=s)
                - mixture_log_density(z, **MIX, alpha=a, sigma=s))

    @jax.jit
    def draw(rng):
        config = SamplerConfig(prediction="eps")
        return [sample(rng, oracle, schedule, (n, 1), config, energy_guidance=guide)
                for guide in (None, trained, EnergyGuidance(exact_energy))]

    plain, guided, exact = (float(np.mean(np.asarray(x) > 0)) for x in draw(jax.random.PRNGKey(2)))
    target = tilted_mixture()["weights"][1]
    assert plain == pytest.approx(0.5, abs=0.03)
    assert exact == pytest.approx(target, abs=0.03)
    assert guided == pytest.approx(target, abs=0.04), (plain, guided, exact, target)


TINY = ["task.horizon=8", "task.latent_step=2", "model.latent_dim=4", "model.width=16", "model.layers=1",
        "model.heads=2", "model.inverse_hidden=32", "model.return_hidden=32", "model.prior_dim=8",
        "model.prior_dim_mults=(1,)", "model.embed_hidden=16", "model.energy_hidden=32", "model.energy_depth=2",
        "diffusion.num_steps=10", "energy.num_supports=4", "energy.support_steps=10", "energy.support_batch=64",
        "plan.sampler_steps=10", "train.vae.steps=10", "train.prior.steps=10", "train.energy.steps=10",
        "train.log_every=10", "train.checkpoint_every=10"]


def test_three_stages_train_and_the_planner_acts_by_inverse_dynamics_from_the_state(tmp_path):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6 * 30, 5)).astype(np.float32)
    data = OfflineData.from_arrays(obs, rng.uniform(-1, 1, (180, 2)).astype(np.float32),
                                   rng.normal(size=180).astype(np.float32), [30] * 6)
    config = apply_overrides(load_config("latent_diffuser.py:hopper-medium"), TINY)
    # At the suite's XLA CPU setting (most optimisations off) the VAE step's gradient turns NaN from its second step,
    # while the same step run eagerly or compiled at level 1 stays finite: the VAE stage compiles at level 1.
    with optimizing():
        summaries = train(config, tmp_path, stages=["vae"], progress=False, data=data)
    with pytest.raises(CheckpointError, match="stage prior .* is not trained yet"):
        load_trained(tmp_path)
    with pytest.raises(CheckpointError, match="has no stage critic; its stages: vae, prior, energy"):
        load_trained(tmp_path, stages=["critic"])
    _, vae_only, _, step = load_trained(tmp_path, stages=["vae"])  # the trained stages of a pipeline still running
    assert set(vae_only) == {"vae"} and step == 10
    later = train(config, tmp_path, progress=False, data=data)  # the VAE is skipped
    summaries.update({name: summary for name, summary in later.items() if name != "vae"})
    assert {name: s["step"] for name, s in summaries.items()} == {"vae": 10, "prior": 10, "energy": 10}
    agent, params, _, _ = load_trained(tmp_path)
    assert isinstance(agent, LatentDiffuser) and set(params) == {"vae", "prior", "energy"}
    for name, summary in summaries.items():
        assert all(np.isfinite(v).all() for _, metrics in summary["history"] for v in metrics.values()), name
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params[name])), name

    # the support set: M latents for every state that starts a window (6 episodes x 23), valued by their plans
    supports = agent.stage("energy", params).prepare(make_store(agent.preprocess(data)))
    assert supports.latents.shape == (6 * 23, 4, 4, 4) and supports.values.shape == (6 * 23, 4)
    rows = np.array([0, 50, 137])
    policy, current, key = agent.policy(), jnp.asarray(obs[:3]), jax.random.PRNGKey(3)

    @jax.jit
    def probe(params, supports_z, supports_s1):
        """The supports' values recomputed, the policy's action and plan, and the inverse dynamics on that plan."""
        values = agent.plan_value(params["vae"], supports_s1, supports_z)
        action, state = policy.act(params, policy.init(params, None, current), current, jnp.asarray(0), key)
        plan = agent.plan(params, key, current)
        first = agent.vae.apply(params["vae"], agent.state(current), plan["states"][:, 1],
                                method=LatentActionVAE.actions)
        s1 = agent.state(current)
        variants = [agent.sample_latents(params, key, s1, 1, **kwargs) for kwargs in (
            {}, {"energy_params": None}, {"guidance_weight": 1.0}, {"temperature": 1.0})]
        return values, action, state, first, variants

    values, action, state, first, variants = probe(params, supports.latents[rows].astype(jnp.float32).reshape(
        -1, 4, 4), jnp.repeat(supports.first_states[rows], 4, axis=0))
    assert np.isfinite(supports.values).all() and np.isfinite(supports.latents).all()
    np.testing.assert_allclose(np.asarray(values).reshape(3, 4), supports.values[rows], rtol=2e-2, atol=2e-2)
    # the action: the inverse dynamics from the observed state to the plan's second state, on the action box
    np.testing.assert_allclose(action, agent.info.from_unit_action(jnp.clip(first, -1, 1)), atol=1e-5)
    assert state["plan"].shape == (3, 8, 5)
    # the plan uses the energy's gradient, classifier-free guidance and the low temperature: leaving out any one
    # changes the latents drawn with the same key
    planned, *without = (np.asarray(z) for z in variants)
    for other in without:
        assert np.abs(planned - other).max() > 1e-4
