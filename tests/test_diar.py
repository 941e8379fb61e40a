"""DIAR: the expectile loss, the Q and V targets of a hand-made stream, and Adaptive Revaluation against a
plain-Python reference of Algorithm 2 (the random-walk run is in test_ldcq.py, on LDCQ's trained stages)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffrl.agents import DIAR, DatasetInfo
from diffrl.agents.diar import expectile_loss
from diffrl.config import apply_overrides, load_config
from diffrl.data import GaussianNormalizer, OfflineData, make_store

TINY = ["model.hidden=16", "model.gru_layers=1", "model.prior_hidden_dims=(16,8,16)", "model.time_dim=8",
        "model.embed_dim=16", "model.q_hidden=16", "vae.prior_width=16", "vae.prior_layers=1", "vae.prior_heads=2",
        "vae.prior_time_dim=8", "vae.prior_steps=10", "diffusion.num_steps=10"]


def _flat_config(*overrides):
    """``diar.py:kitchen-mixed`` made tiny, on datasets with flat observations (no ``observation`` key)."""
    config = load_config("diar.py:kitchen-mixed")
    config.task.state_key = None
    return apply_overrides(config, [*TINY, *overrides])


def _bisect_expectile(x: np.ndarray, tau: float) -> float:
    """The tau-expectile of a sample: the root of ``sum_i |tau - 1(x_i < m)| (x_i - m) = 0``, by bisection."""
    lo, hi = x.min(), x.max()
    for _ in range(100):
        m = 0.5 * (lo + hi)
        if np.sum(np.abs(tau - (x < m)) * (x - m)) > 0:
            lo = m
        else:
            hi = m
    return 0.5 * (lo + hi)


def test_expectile_loss_is_half_the_square_at_one_half_and_minimised_by_the_expectile():
    u = jnp.linspace(-3.0, 2.0, 11)
    np.testing.assert_allclose(expectile_loss(u, 0.5), 0.5 * u**2, rtol=1e-6)
    np.testing.assert_allclose(expectile_loss(u, 0.9), np.where(u < 0, 0.1, 0.9) * u**2, rtol=1e-6)
    x = np.random.default_rng(0).gamma(2.0, size=200)  # skewed, so the expectiles differ from the mean
    mean_loss = jax.jit(lambda m, tau: jnp.mean(expectile_loss(jnp.asarray(x) - m, tau)))
    for tau in (0.5, 0.9):
        m = _bisect_expectile(x, tau)
        assert abs(float(jax.grad(mean_loss)(jnp.float32(m), tau))) < 1e-4
        assert mean_loss(m, tau) < min(mean_loss(m - 0.05, tau), mean_loss(m + 0.05, tau))
    assert _bisect_expectile(x, 0.9) > x.mean() + 0.5  # tau = 0.9 leans to the sample's top
    np.testing.assert_allclose(_bisect_expectile(x, 0.5), x.mean(), atol=1e-6)


def test_q_and_v_targets_of_a_hand_made_stream():
    """A 12-step stream ``s_t = t`` with reward at t = 5, 6; H = 3, gamma = 0.9, the reward ends the task."""
    steps = 12
    rewards = np.zeros(steps, np.float32)
    rewards[[5, 6]] = 1.0
    obs = np.arange(steps, dtype=np.float32)[:, None]
    data = OfflineData.from_arrays(obs, np.zeros((steps, 1), np.float32), rewards, [steps])
    config = _flat_config(
        "task.horizon=3", "task.done_on_reward=True", "q.discount=0.9", "q.pool_size=5", "q.num_candidates=3",
        "q.pool_steps=2", "q.pool_extra_steps=0", "q.pool_batch=16", "train.qv.batch_size=8")
    agent = DIAR(config, DatasetInfo.from_data(data), GaussianNormalizer.fit(obs))
    agent.progress = False
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    vae = agent.stage("vae").export(jax.jit(agent.stage("vae").init)(keys[0]))  # jitted: eager inits take seconds
    stage = agent.stage("qv", {"vae": vae, "prior": jax.jit(agent.init_prior)(keys[1])})
    store = make_store(agent.preprocess(data))
    train_data = stage.prepare(store)
    state = jax.jit(stage.init)(keys[2])
    batch = jax.jit(stage.sample_batch)(train_data, keys[3], state)

    starts = agent.chunk_starts(store)[np.asarray(batch["rows"])]
    norm = lambda s: (s - obs.mean()) / obs.std()  # noqa: E731
    chunk_reward = np.array([rewards[k : k + 3].sum() for k in starts])
    np.testing.assert_allclose(batch["reward"], chunk_reward)  # undiscounted chunk reward (q.per_step_discount)
    np.testing.assert_array_equal(batch["done"], chunk_reward > 0)
    np.testing.assert_allclose(batch["state"][:, 0], norm(starts), rtol=1e-6)
    np.testing.assert_allclose(batch["next_state"][:, 0], norm(np.minimum(starts + 3, steps - 1)), rtol=1e-6)
    # V's candidates are the pool's samples at s_t (Eq. 6), whose condition is the normalised s_t
    np.testing.assert_allclose(train_data.conditions[:, 0], norm(agent.chunk_starts(store)), rtol=1e-6)
    assert stage.candidate_conditions(train_data) is train_data.conditions

    v_params = state["v"].params
    v_apply = jax.jit(agent.v_net.apply)
    v = lambda s: np.asarray(v_apply(v_params, jnp.asarray(s, jnp.float32)[:, None]))  # noqa: E731
    expected_y = chunk_reward + 0.9 * (chunk_reward == 0) * v(norm(np.minimum(starts + 3, steps - 1)))
    np.testing.assert_allclose(stage.q_targets(v_params, batch), expected_y, rtol=1e-5, atol=1e-6)

    target_q = state["q"].ema_params
    candidates = np.asarray(batch["candidates"])  # [B, 3, Z]
    pairs = np.repeat(norm(starts)[:, None], 3, axis=1)[..., None]
    q = np.asarray(jax.jit(jax.vmap(agent.q_net.apply, (0, None, None)))(target_q, jnp.asarray(pairs, jnp.float32),
                                                                      candidates))
    u = q.min(0) - v(norm(starts))[:, None]
    expected_loss = np.mean(np.asarray(batch["weights"])[:, None] * np.where(u < 0, 0.1, 0.9) * u**2)
    loss, _ = stage.value_loss(v_params, target_q, batch, keys[3])
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)


# Adaptive Revaluation on a toy line: s' = s + 0.25 a, or s + 0.45 a on the ice at s > 1, which the stand-in state
# decoder (s_{t+H} = s + 0.25 H z) does not know about; V(s) = -|s - 3|; Q(s, z) = V of the predicted s_{t+H}
# (the second net 0.1 lower, so min_j Q_j is the second); the decoder executes a = z.
H, GOAL, SKILLS = 4, 3.0, np.array([-1.0, -0.4, 0.3, 0.9], np.float32)


def _toy_step(s, a):
    return s + np.where(s > 1.0, np.float32(0.45), np.float32(0.25)) * a


def _reference_revaluation(s: float, steps: int):
    """Algorithm 2, one environment, in plain Python and float32 (a fresh latent acts at least once)."""
    value = lambda x: -np.abs(x - np.float32(GOAL))  # noqa: E731
    s = np.float32(s)

    def choose(x):
        z = SKILLS[np.argmax([value(x + np.float32(0.25 * H) * k) - np.float32(0.1) for k in SKILLS])]
        return z, value(x + np.float32(0.25 * H) * z)

    z, future = choose(s)
    age, actions, resampled = 0, [], []
    for _ in range(steps):
        fresh = (age > 0 and value(s) > future) or age >= H
        if fresh:
            z, future = choose(s)
            age = 0
        resampled.append(fresh)
        actions.append(z)
        s = _toy_step(s, z)
        age += 1
    return np.array(actions), np.array(resampled)


@pytest.fixture(scope="module")
def toy_revaluation():
    config = _flat_config(f"task.horizon={H}", f"plan.replan_every={H}", "model.latent_dim=1",
                          f"plan.num_candidates={len(SKILLS)}")
    data = OfflineData.from_arrays(np.zeros((8, 1), np.float32), np.zeros((8, 1)), np.zeros(8), [8])
    agent = DIAR(config, DatasetInfo.from_data(data), GaussianNormalizer(mean=jnp.zeros(1), std=jnp.ones(1)))
    agent.sample_latents = lambda params, key, cond, n: jnp.broadcast_to(jnp.asarray(SKILLS)[:, None],
                                                                         (cond.shape[0], n, 1))
    agent.predict_final_state = lambda params, s, z: s + 0.25 * H * z
    agent.values = lambda params, s: -jnp.abs(s[..., 0] - GOAL)
    agent.q_values = lambda params, s, z: jnp.stack([-jnp.abs(s + 0.25 * H * z - GOAL)[..., 0]] * 2) - jnp.array(
        [0.0, 0.1])[:, None, None]
    agent.decode_action = lambda params, obs, z, key: z
    policy = agent.policy()
    params = {"vae": None, "prior": None, "qv": {"q": None, "v": None}}

    def run(starts, steps):
        s = jnp.asarray(starts, jnp.float32)[:, None]
        policy_state = policy.init(params, jax.random.PRNGKey(0), s)
        act = jax.jit(policy.act)
        actions = []
        for t in range(steps):
            action, policy_state = act(params, policy_state, s, jnp.int32(t), jax.random.PRNGKey(t))
            actions.append(np.asarray(action[:, 0]))
            s = jnp.asarray(_toy_step(np.asarray(s), np.asarray(action)))
        return np.stack(actions, 1)

    return run


def test_adaptive_revaluation_matches_a_plain_python_algorithm_2(toy_revaluation):
    starts = [0.0, -2.0, 1.6, 2.9, -0.7]
    actions = toy_revaluation(starts, 24)
    for i, s in enumerate(starts):
        expected, _ = _reference_revaluation(s, 24)
        np.testing.assert_allclose(actions[i], expected, err_msg=f"start {s}")
    # From s = 0 by hand: z = 0.9 (predicted s_{t+4} = 0.9, V -2.1) through 0.225, 0.45, 0.675, 0.9; the 4 steps
    # are up at step 4 and z = 0.9 again (predicted 1.8, V -1.2): 1.125, then the ice: 1.53, 1.935, where
    # V = -1.065 beats -1.2, so Adaptive Revaluation chooses again at step 7 instead of 8 (z = 0.9, predicted
    # 2.835, V -0.165): 2.34, 2.745, 3.15, where V = -0.15 beats -0.165 at step 10; there z = -0.4 (predicted
    # 2.75, V -0.25) leads to 2.97, whose V = -0.03 beats that at once (step 11).
    _, resampled = _reference_revaluation(0.0, 12)
    assert list(np.flatnonzero(resampled)) == [4, 7, 10, 11]


def test_adaptive_revaluation_in_a_batch_acts_as_each_environment_alone(toy_revaluation):
    starts = [0.0, -2.0, 1.6, 2.9, -0.7]
    together = toy_revaluation(starts, 24)
    for i, s in enumerate(starts):
        np.testing.assert_array_equal(together[i], toy_revaluation([s], 24)[0])


def test_every_variant_loads_with_the_papers_values_and_bad_settings_are_refused():
    horizons = {}
    for variant in ("maze2d-umaze", "maze2d-large", "pointmaze-medium", "antmaze-large-diverse", "kitchen-mixed"):
        c = load_config(f"diar.py:{variant}")
        assert (c.method, c.vae.beta, c.model.latent_dim, c.q.expectile, c.q.discount, c.q.target_rate) == (
            "diar", 0.1, 16, 0.9, 0.995, 0.995)  # Tables 3 and 5
        assert (c.diffusion.num_steps, c.diffusion.min_snr_gamma, c.diffusion.drop_prob) == (500, 5.0, 0.1)  # Table 4
        assert c.plan.adaptive_revaluation and c.model.state_decoder and c.q.value_states == "current"
        horizons[variant] = (c.task.horizon, c.dataset.id, c.task.goal_key)
    assert horizons["maze2d-umaze"] == (30, "diffrl/maze2d/umaze-v1", None)  # Sec. 4.2: H = 30 in Maze2D
    assert horizons["antmaze-large-diverse"] == (20, "D4RL/antmaze/large-diverse-v1", None)  # D4RL's one goal
    assert horizons["kitchen-mixed"][0] == 20
    data = OfflineData.from_arrays(np.zeros((8, 1), np.float32), np.zeros((8, 1)), np.zeros(8), [8])
    info, normalizer = DatasetInfo.from_data(data), GaussianNormalizer(mean=jnp.zeros(1), std=jnp.ones(1))
    with pytest.raises(ValueError, match="model.state_decoder=True or plan.adaptive_revaluation=False"):
        DIAR(_flat_config("model.state_decoder=False"), info, normalizer)
    agent = DIAR(_flat_config("q.value_states=previous"), info, normalizer)
    with pytest.raises(ValueError, match="q.value_states must be one of"):
        agent.stage("qv", {"vae": None, "prior": None})


def test_vae_stage_loss_adds_the_scaled_prior_loss_and_the_state_decoder_trains_the_encoder():
    """Algorithm 3: L_total = L1 + beta L2 + L3 + L4 on one per-step scale, and L3's gradient reaches the encoder
    (LDCQ's code detaches the latent there)."""
    from diffrl import diffusion
    from diffrl.agents.diar import DIARVAEStage
    from diffrl.nets.skills import SkillVAE, skill_vae_loss

    rng = np.random.default_rng(1)
    obs = rng.normal(size=(40, 2)).astype(np.float32)
    data = OfflineData.from_arrays(obs, rng.uniform(-1, 1, (40, 1)), np.zeros(40), [40])
    agent = DIAR(_flat_config("task.horizon=4", "plan.replan_every=4", "train.vae.batch_size=8"),
                 DatasetInfo.from_data(data), GaussianNormalizer.fit(obs))
    stage = agent.stage("vae")
    assert isinstance(stage, DIARVAEStage)
    state = stage.init(jax.random.PRNGKey(0))
    batch = stage.sample_batch(make_store(agent.preprocess(data)), jax.random.PRNGKey(1), state)
    rng_z, rng_prior = jax.random.split(jax.random.PRNGKey(2))

    @jax.jit
    def losses(params):
        """The stage's loss, and its parts computed here: L1 + beta L2 + L3 per step, and L4."""
        _, metrics = stage.update(state.replace(params=params), batch, jax.random.PRNGKey(2))
        out = agent.vae.apply(params["vae"], batch["states"], batch["actions"], rng_z)
        vae_loss, _ = skill_vae_loss(out, batch["actions"], batch["final_state"], 0.1, True)
        prior_loss, _ = diffusion.diffusion_loss(lambda x, t, c: agent.vae_prior.apply(params["prior"], x, t, c),
                                                 agent.vae_prior_schedule, rng_prior, out["z"],
                                                 batch["states"][:, 0], prediction="x0", min_snr_gamma=5.0)
        encoder_grads = {}
        for trains_encoder in (True, False):
            vae = SkillVAE(state_dim=2, action_dim=1, latent_dim=16, hidden=16, gru_layers=1, state_decoder=True,
                           state_decoder_trains_encoder=trains_encoder)

            def final_state_error(p, vae=vae):
                o = vae.apply(p, batch["states"], batch["actions"], rng_z)
                return jnp.sum(jnp.square(o["final_mean"] - batch["final_state"]))

            grads = jax.grad(final_state_error)(params["vae"])
            encoder_grads[trains_encoder] = optax.tree.norm(grads["params"]["encoder"])
        return metrics["vae/loss"], vae_loss, prior_loss, encoder_grads

    total, vae_loss, prior_loss, encoder_grads = losses(state.params)
    np.testing.assert_allclose(total, vae_loss + prior_loss * 16 / 4, rtol=1e-5)  # Z = 16, H = 4
    assert encoder_grads[True] > 0 and encoder_grads[False] == 0
