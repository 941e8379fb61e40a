"""LatentDiffuser: the contrastive energy loss by hand, the VAE's pooling and tiling, energy-guided sampling with a
trained energy model against the exactly tilted mixture, and the three stages end to end with the planner's action."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffrl.agents import LatentDiffuser
from diffrl.agents.latent_diffuser import contrastive_energy_loss
from diffrl.agents.train_state import TrainState, apply_loss
from diffrl.config import apply_overrides, load_config
from diffrl.data import OfflineData, make_store
from diffrl.diffusion import EnergyGuidance, SamplerConfig, make_schedule, q_sample, sample
from diffrl.diffusion.oracles import mixture_denoiser, mixture_log_density
from diffrl.nets.latent_actions import LatentActionVAE, LatentEnergy, pool_latent_steps, tile_latents
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
    assert float(contrastive_energy_loss(jnp.asarray(target + 7.0), jnp.asarray(target))) == pytest.approx(entropy, 1e-5)


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
    params = vae.init(jax.random.PRNGKey(0), tokens, states[:, 0], states, actions, jax.random.PRNGKey(1))
    encode = jax.jit(lambda x: vae.apply(params, x, method=LatentActionVAE.encode))
    mean, std = encode(tokens)
    assert mean.shape == std.shape == (1, 3, 4) and bool(jnp.all(std > 0))
    # the last token reaches the first latent: no causal mask in the encoder (nor in the decoder, below)
    assert not np.allclose(encode(tokens.at[:, -1].add(1.0))[0][:, 0], mean[:, 0])
    decode = jax.jit(lambda s1, z: vae.apply(params, s1, z, method=LatentActionVAE.decode_states))
    decoded = decode(states[:, 0], mean)
    assert decoded.shape == (1, 6, 3)
    assert not np.allclose(decode(states[:, 0], mean.at[:, -1].add(1.0))[:, 0], decoded[:, 0])
    assert not np.allclose(decode(states[:, 0] + 1.0, mean), decoded)  # s_1 enters every step


# A 1-D behaviour distribution of two modes; the target tilts it by exp(c z): each component N(m, v) becomes
# N(m + c v, v) with weight w exp(c m + c^2 v / 2), so the positive mode's weight goes from 1/2 to 0.818.
MIX = dict(weights=[0.5, 0.5], means=[[-1.5], [1.5]], variances=0.1)
TILT = 0.5


def tilted_mixture():
    w, m, v = np.asarray(MIX["weights"]), np.asarray(MIX["means"])[:, 0], MIX["variances"]
    weights = w * np.exp(TILT * m + TILT**2 * v / 2)
    return dict(weights=list(weights / weights.sum()), means=[[x] for x in m + TILT * v], variances=v)


def test_energy_guidance_with_the_contrastively_trained_energy_samples_the_tilted_target(optimized_compilation):
    """Eq. 8 trained on 16 supports per initial state drawn from the behaviour mixture, values -E_0 = z and beta =
    TILT; the guided sampler (the behaviour's exact score plus grad f_eta) then draws the positive mode with the
    tilted weight, as it does with the exact intermediate energy log p_k - log q_k, while plain sampling keeps 1/2."""
    schedule = make_schedule("cosine", 100)
    energy = LatentEnergy(hidden=64, depth=3)
    states, supports = 64, 16
    s1 = jnp.zeros((states, supports, 1))
    params = energy.init(jax.random.PRNGKey(0), jnp.zeros((1, supports, 1, 1)), s1[:1], jnp.zeros((1, supports), int))
    optimizer = optax.adam(3e-3)

    @jax.jit
    def train_steps(state, rng):
        def step(state, key):
            key_z, key_mode, key_k, key_eps = jax.random.split(key, 4)
            mode = jax.random.bernoulli(key_mode, 0.5, (states, supports, 1, 1))
            z0 = jnp.where(mode, 1.5, -1.5) + jnp.sqrt(0.1) * jax.random.normal(key_z, mode.shape)
            k = jax.random.randint(key_k, (states,), 0, schedule.num_steps)
            zk = q_sample(schedule, z0, k, jax.random.normal(key_eps, z0.shape))
            k_each = jnp.broadcast_to(k[:, None], (states, supports))

            def loss_fn(p):
                return contrastive_energy_loss(energy.apply(p, zk, s1, k_each), TILT * z0[..., 0, 0]), {}

            return apply_loss(state, optimizer, loss_fn, prefix="energy")

        return jax.lax.scan(step, state, jax.random.split(rng, 1500))

    state, metrics = train_steps(TrainState.create(params, optimizer), jax.random.PRNGKey(1))
    assert float(metrics["energy/loss"][-100:].mean()) < float(metrics["energy/loss"][:20].mean())

    oracle = mixture_denoiser(schedule, prediction="eps", **MIX)
    n = 8000
    trained = EnergyGuidance(lambda z, k: energy.apply(state.params, z[:, None], jnp.zeros((z.shape[0], 1)), k))
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
    summaries = train(config, tmp_path, progress=False, data=data)
    assert {name: s["step"] for name, s in summaries.items()} == {"vae": 10, "prior": 10, "energy": 10}
    agent, params, _, _ = load_trained(tmp_path)
    assert isinstance(agent, LatentDiffuser) and set(params) == {"vae", "prior", "energy"}

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
        first = agent.vae.apply(params["vae"], agent.state(current), plan["states"][:, 1], method=LatentActionVAE.actions)
        return values, action, state, plan, first

    values, action, state, plan, first = probe(params, supports.latents[rows].astype(jnp.float32).reshape(-1, 4, 4),
                                               jnp.repeat(supports.first_states[rows], 4, axis=0))
    np.testing.assert_allclose(np.asarray(values).reshape(3, 4), supports.values[rows], rtol=2e-2, atol=2e-2)
    np.testing.assert_array_equal(plan["states"][:, 0], agent.state(current))  # the plan starts at the observed state
    np.testing.assert_allclose(action, agent.info.from_unit_action(jnp.clip(first, -1, 1)), atol=1e-5)
    np.testing.assert_allclose(state["plan"], agent.unnormalize_states(plan["states"]), atol=1e-5)
    assert state["plan"].shape == (3, 8, 5)
