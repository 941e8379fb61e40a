"""DIAR (Park et al., "Diffusion-Guided Q-Learning for Offline RL: Adaptive Revaluation for Long-Horizon Decision
Making").

``--config=configs/diar.py:<task>`` trains the stages ``vae``, ``prior`` and ``qv`` one after the other in
WORKDIR/<stage> (``--stage NAME`` runs one); ``plan.adaptive_revaluation=False`` evaluates without Adaptive
Revaluation (Table 2). "Table N" cites the paper's Appendix A, "Alg. N" its algorithm boxes. No official code is
linked from the paper; where it is silent the values are LDCQ's (its official ldcq/ldcq code, on which DIAR
builds: "LDCQ code"), each said so below.
"""

import ml_collections

MAZES = ("umaze", "medium", "large")
VARIANTS = (
    tuple(f"maze2d-{m}" for m in MAZES)  # D4RL maze2d-v1 protocol (diffrl data generate maze2d-<maze>)
    + tuple(f"pointmaze-{m}" for m in MAZES)  # Minari pointmaze protocol (diffrl data generate pointmaze-<maze>)
    + tuple(f"antmaze-{m}-diverse" for m in MAZES)
    + ("kitchen-mixed", "kitchen-partial", "kitchen-complete")
)


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    kind, _, rest = variant.partition("-")
    c = ml_collections.ConfigDict()
    c.method = "diar"
    c.seed = 0
    rewards = "stored"
    # Sec. 4.2: H = 30 in Maze2D, 20 in AntMaze and Kitchen.
    if kind == "maze2d":
        # One fixed evaluation goal: Q and V take no goal (LDCQ code, maze2d Q).
        dataset_id, horizon = f"diffrl/maze2d/{rest}-v1", 30
        task = dict(kind="goal", state_key="observation", goal_key=None, done_on_reward=True)
    elif kind == "pointmaze":
        # Minari's goals change per episode: the goal (desired_goal) enters Q and V.
        dataset_id, horizon = f"diffrl/pointmaze/{rest}-v0", 30
        task = dict(kind="goal", state_key="observation", goal_key="desired_goal", done_on_reward=True)
    elif kind == "antmaze":
        # D4RL's task, as LDCQ's code reads it: the 29-d ant state [x, y, observation] (Minari keeps x, y in
        # achieved_goal), no goal, D4RL's rewards of the one evaluation goal (Minari's follow each episode's own)
        dataset_id, horizon = f"D4RL/antmaze/{rest}-v1", 20
        task = dict(kind="goal", state_key=("achieved_goal", "observation"), goal_key=None, done_on_reward=True)
        rewards = "evaluation_goal"
    else:
        dataset_id, horizon = f"D4RL/kitchen/{rest}-v2", 20
        task = dict(kind="reward", state_key="observation", goal_key=None, done_on_reward=False)
    # Chunks start at every step of a collection stream (LDCQ code: utils.py chunks the whole D4RL stream).
    c.dataset = dict(id=dataset_id, root=None, episodes="streams", rewards=rewards)
    # done_on_reward: a chunk that collects reward ends the task (LDCQ code, maze2d: `reward == 0` masks the
    # bootstrap); Eq. 7 writes no mask.
    c.task = dict(horizon=horizon, normalizer="gaussian", **task)
    c.model = dict(
        latent_dim=16,  # Table 3
        hidden=256,  # LDCQ App. A.2.1 (DIAR gives no VAE width)
        gru_layers=2,  # App. A.1: two stacked bidirectional GRUs
        state_decoder=True,  # App. A.1 / Alg. 3 L3: f(s_{t+H} | s_t, z), used by Adaptive Revaluation
        # App. A.2: "a U-Net structure, where the dimensionality decreases and then increases", residual blocks;
        # the widths are LDCQ's (App. A.2.2).
        prior_hidden_dims=(128, 32, 16, 8, 16, 32, 128),
        time_dim=256,
        embed_dim=256,
        q_hidden=256,  # App. A.3: the state into 256 units, the latent into 128 (= q_hidden / 2)
    )
    c.vae = dict(
        beta=0.1,  # Table 3
        state_decoder_trains_encoder=True,  # Alg. 3 line 12: the whole VAE is updated on L_total, L3 included
        # Alg. 3 L4: the diffusion prior trained with the VAE, a transformer (App. A.1) over Table 3's 200 steps,
        # with Min-SNR (gamma 5 as Table 4). Its schedule, width, depth and heads are not given: diffrl's choice
        # (cosine, since a linear 1e-4 .. 0.02 schedule over 200 steps leaves bar_alpha_T = 0.13 of the latent).
        prior_steps=200,
        prior_schedule="cosine",
        prior_min_snr_gamma=5.0,
        prior_width=128,
        prior_layers=2,
        prior_heads=4,
        prior_time_dim=128,
    )
    c.diffusion = dict(  # the latent diffusion model (Alg. 4)
        num_steps=500,  # Table 4
        schedule="linear",  # App. A.2: "operates similarly to the DDPM method" (LDCQ: betas 1e-4 .. 0.02)
        prediction="x0",  # App. A.2
        min_snr_gamma=5.0,  # Table 4
        drop_prob=0.1,  # Table 4
    )
    c.q = dict(
        discount=0.995,  # Table 5
        # Eq. 7 bootstraps with gamma per chunk, y = r_{t:t+H} + gamma V(s_{t+H}); the chunk's rewards are summed
        # undiscounted as in the LDCQ code (Sec. 2 calls r_{t:t+H} "the sum of rewards with discount factor gamma").
        per_step_discount=False,
        expectile=0.9,  # Table 5 / Sec. 4.2 tau
        # Eq. 6 trains V(s_t) on latents sampled at s_t ("current"); Alg. 1 line 6 samples them at s_{t+H}
        # ("next"). The equations are the definition.
        value_states="current",
        # Table 5 rho, as a slow Polyak average, target <- rho target + (1 - rho) online (LDCQ code); Alg. 1 line 9
        # writes rho on the online network, which would make the target a copy of it.
        target_rate=0.995,
        num_candidates=500,  # Table 5: latent samples n per state
        candidates="pool",  # LDCQ code: precomputed prior samples; "fresh": sampled inside the train step
        pool_size=1000,  # LDCQ code: num_diffusion_samples
        pool_steps=100,  # LDCQ code: diffusion_steps of the pool
        pool_extra_steps=5,  # Table 5: extra steps 5
        pool_dtype="float16",
        pool_batch=256,
        guidance_weight=1.0,
        per_alpha=0.7,  # Table 5
        priority="abs_td",  # Schaul et al.'s |delta| (the LDCQ code's dqn.py uses delta^2)
        per_beta_start=0.3,  # Table 5: 0.3 -> 1 (the schedule, +0.03 every 3000 steps, is LDCQ's Table 7)
        per_beta_increment=0.03,
        per_beta_every=3000,
        per_beta_end=1.0,
        grad_clip=1.0,  # LDCQ code: clip_grad_norm_(1) per Q-network; V the same
        # Table 5: StepLR step 50 (epochs, as LDCQ code's dqn.py steps it): 50 passes over 1M chunks at batch 128
        # are ~390k steps, so at the default 100k steps the rate never decays.
        lr_decay_epochs=50,
        lr_decay_rate=0.3,  # Table 5: StepLR gamma 0.3
    )
    c.plan = dict(
        adaptive_revaluation=True,  # Alg. 2 (Table 2 compares without)
        sampler_steps=100,  # LDCQ code: 100 DDPM steps
        extra_steps=5,  # Table 5: extra steps 5
        guidance_weight=1.0,
        num_candidates=500,  # Alg. 2 line 6: n, Table 5
        replan_every=horizon,  # Alg. 2: a latent runs for at most H steps
    )
    c.train = dict(
        log_every=1000,
        checkpoint_every=10_000,
        keep_checkpoints=2,
        # Table 3: lr 5e-5, batch 128, 100 epochs (~780k steps on 1M chunks; the step count is a default).
        vae=dict(steps=200_000, batch_size=128, learning_rate=5e-5),
        # Table 4: lr 1e-4, batch 128, 450 epochs (3.5M steps on 1M chunks; the default is LDCQ's 300k steps).
        prior=dict(steps=300_000, batch_size=128, learning_rate=1e-4),
        qv=dict(steps=100_000, batch_size=128, learning_rate=5e-4),  # Table 5: lr 5e-4, batch 128
    )
    # Sec. 4: 100 episodes, repeated 5 times (diffrl evaluate --seed).
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c
