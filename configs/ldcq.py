"""LDCQ, LDGC and LDCP (Venkatraman et al. 2024, "Reasoning with Latent Diffusion in Offline RL").

``--config=configs/ldcq.py:<task>`` trains LDCQ, ``<task>-ldgc`` the goal-conditioned prior (Sec. 4.3) and
``<task>-ldcp`` the planner with the state decoder (App. B). ``diffrl train`` runs the stages (``vae``, ``prior``
and, for LDCQ, ``q``) one after the other in WORKDIR/<stage>; ``--stage NAME`` runs one. A stage trains with the
plain fields of ``train`` updated by ``train.<stage>``. "Table N" cites the
paper's appendix A.3, "code" the official ldcq/ldcq defaults; where they differ the paper is followed unless
said otherwise.
"""

import ml_collections

# Sec. 5.4: H = 30 in the mazes, 20 in the kitchen, 10 in locomotion.
MAZES = ("umaze", "medium", "large")
LOCOMOTION = ("hopper", "halfcheetah", "walker2d")
TASKS = (
    tuple(f"pointmaze-{m}" for m in MAZES)
    + tuple(f"maze2d-{m}" for m in MAZES)
    + ("antmaze-umaze-diverse", "antmaze-medium-diverse", "antmaze-large-diverse")  # Table 1: medium, large
    + ("kitchen-mixed", "kitchen-partial", "kitchen-complete")
    + tuple(f"{env}-{q}" for env in LOCOMOTION for q in ("medium", "medium-replay", "medium-expert"))
)
VARIANTS = TASKS + tuple(f"{t}-{m}" for t in TASKS if t.startswith(("pointmaze", "maze2d", "antmaze"))
                         for m in ("ldgc", "ldcp"))


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    method = "ldcq"
    for suffix in ("ldgc", "ldcp"):
        if variant.endswith("-" + suffix):
            method, variant = suffix, variant.removesuffix("-" + suffix)
    kind, _, rest = variant.partition("-")
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    per_step_discount, rewards = True, "stored"
    if kind == "pointmaze":
        dataset_id, horizon = f"diffrl/pointmaze/{rest}-v0", 30
        # The VAE sees the point's position and velocity; the goal (the observation's desired_goal) enters Q
        # and, for LDGC, the prior's condition (code: append_goals concatenates the goal to the state).
        task = dict(kind="goal", state_key="observation", goal_key="desired_goal", done_on_reward=True)
    elif kind == "maze2d":
        # D4RL's protocol (diffrl data generate maze2d-<maze>): one fixed evaluation goal, so LDCQ's Q has no goal
        # input (code, maze2d Q); LDGC's prior and LDCP's planner take the goal: in the data the collection goal
        # of the row (code: append_goals stacks infos/goal), at evaluation the fixed target.
        dataset_id, horizon = f"diffrl/maze2d/{rest}-v1", 30
        task = dict(kind="goal", state_key="observation", goal_key=None if method == "ldcq" else "desired_goal",
                    done_on_reward=True)
        per_step_discount = False  # code maze2d Q (see q.per_step_discount)
    elif kind == "antmaze":
        # code (utils.get_dataset, append_goals=0): D4RL's 29-d ant state [x, y, observation] and D4RL's rewards,
        # which mark the one evaluation goal (dataset.rewards=evaluation_goal; Minari's follow each episode's own
        # goal), chunks within each episode, a chunk that collects reward ends the task, the maze2d Q code: as on
        # maze2d, LDCQ's Q has no goal input and LDGC's prior and LDCP's planner take the goal
        dataset_id, horizon = f"D4RL/antmaze/{rest}-v1", 30
        task = dict(kind="goal", state_key=("achieved_goal", "observation"),
                    goal_key=None if method == "ldcq" else "desired_goal", done_on_reward=True)
        rewards, per_step_discount = "evaluation_goal", False
    elif kind == "kitchen":
        dataset_id, horizon = f"D4RL/kitchen/{rest}-v2", 20
        task = dict(kind="reward", state_key="observation", goal_key=None, done_on_reward=False)
    else:
        dataset_id, horizon = f"mujoco/{kind}/{rest}-v0", 10
        task = dict(kind="reward", state_key=None, goal_key=None, done_on_reward=False)
    # Chunks start at every step of a collection stream, across the cuts Minari makes at reached goals (code:
    # utils.py chunks the whole D4RL stream); streams of locomotion data are its episodes.
    c.dataset = dict(id=dataset_id, root=None, episodes="streams", rewards=rewards)
    # done_on_reward: a chunk that collects reward ends the task (code, maze2d: `reward == 0` masks the bootstrap).
    c.task = dict(horizon=horizon, normalizer="gaussian", **task)
    # Deviation: every network starts from flax's initialisation (LeCun normal, zero biases), not the code's PyTorch
    # defaults (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases, which Diffuser's U-Nets now use)
    c.model = dict(
        latent_dim=16,  # Table 5
        hidden=256,  # Table 5 / App. A.2.1
        gru_layers=2,  # App. A.2.1: two stacked bidirectional GRUs (code default 4)
        # p(s_{t+H} | s_t, z), App. B (LDCP; DIAR). The official code always trains it, on a detached latent, so
        # it leaves the encoder, prior and Q as they are (an LDCQ maze2d-umaze seed scored the same to the last
        # digit with and without it); LDCQ needs it for plan.q_lookahead.
        state_decoder=method == "ldcp",
        prior_hidden_dims=(128, 32, 16, 8, 16, 32, 128),  # App. A.2.2
        time_dim=256,  # App. A.2.2: 256-d sinusoidal embedding (code: 128-d, then the 256-wide MLP)
        embed_dim=256,  # code: time and state MLP width
        q_hidden=256,  # App. A.2.3
    )
    # Table 5 beta; code: the state decoder (AbstractDynamics) learns on a detached latent
    c.vae = dict(beta=0.05, state_decoder_trains_encoder=False)
    c.diffusion = dict(  # the latent prior
        num_steps=500,  # Table 6 T (Sec. 5.4 says 200, the code trains with 100)
        schedule="linear",  # Table 6; code betas 1e-4 .. 0.02
        prediction="x0",  # Sec. 4.2
        min_snr_gamma=5.0,  # Table 6
        drop_prob=0.1,  # Table 6 (the code's default is 0, i.e. no guidance)
    )
    c.q = dict(
        discount=0.995,  # Table 7
        # True: Algorithm 1 / Eq. 8, y = sum_k gamma^k r_{t+k} + gamma^H max Q. False: the official maze2d Q
        # (models/dqn.py, collect_offline_q_learning_dataset.py), y = sum_k r_{t+k} + gamma max Q, one discount
        # per chunk and the chunk's rewards undiscounted.
        per_step_discount=per_step_discount,
        target_rate=0.995,  # Table 7 rho
        # "min": Algorithm 1 line 10, max_i min_j Q_target_j(s_{t+H}, z_i). "cross": the official models/dqn.py,
        # network j's latent is the argmax of target network 1 - j, valued by min_j Q_target_j there.
        target_latent="min",
        priority="abs_td",  # Schaul et al.'s |delta|; "squared_td": the official dqn.py's delta^2
        # Further differences of the official Q code, kept as the paper has them: it trains at DDQN's default lr
        # 1e-3 (train_q_net.py builds DDQN without --lr), 100 candidates (DDQN default) drawn anew for each
        # network, PER alpha 0.6, initial priorities 100, beta +0.01 per epoch, the lr cut 0.3x every 50 epochs
        # (StepLR; an epoch is len(data) / 128 steps, ~390k steps per cut on 1M chunks); its importance weights [B]
        # times the [B, 1] loss broadcast to [B, B], so the loss is mean(delta^2) * mean(w), no per-sample correction;
        # and it bootstraps at the chunk's last state s_{t+H-1} (collect_offline_q_learning_dataset.py), not s_{t+H}.
        num_candidates=500,  # Table 7: diffusion samples for the batch argmax
        candidates="pool",  # code: precomputed prior samples; "fresh": sampled inside the train step
        pool_size=1000,  # code: num_diffusion_samples
        pool_steps=100,  # code: diffusion_steps of the pool (respaced from the T-step schedule here)
        pool_extra_steps=5,  # code: extra_steps of the pool
        pool_dtype="float16",
        pool_batch=256,  # states per compiled sampler call while building the pool
        guidance_weight=1.0,  # code: cfg_weight 0, i.e. w = 1 (no guidance) for Q-learning
        per_alpha=0.7,  # Table 7
        per_beta_start=0.3,  # Table 7: 0.3, +0.03 every 3000 steps, up to 1
        per_beta_increment=0.03,
        per_beta_every=3000,
        per_beta_end=1.0,
        grad_clip=1.0,  # code: clip_grad_norm_(1) per Q-network
    )
    c.plan = dict(
        # Evaluation sampling: App. E, 10 extra steps at t = 0 "across experiments"; code 100 steps.
        sampler_steps=100,
        extra_steps=10,
        # LDGC samples with classifier-free guidance (Sec. 4.3); the paper gives no weight, 1.5 is diffrl's choice.
        guidance_weight=1.5 if method == "ldgc" else 1.0,
        num_candidates=500 if method == "ldcq" else 50,  # LDCQ: Table 7; LDCP: code num_diffusion_samples 50
        depth=2,  # LDCP, App. B: d = 2 in the navigation tasks
        replan_every=horizon,  # Sec. 4.2: the H decoded actions are executed (code maze2d: every 10 steps)
        # LDCQ: True chooses as the official maze2d evaluation's q_policy does (a state-decoder lookahead, see
        # LDCQ.choose_by_q_lookahead; needs model.state_decoder=True); False: Sec. 4.2's argmax Q at s.
        q_lookahead=False,
    )
    c.train = dict(
        log_every=1000,
        checkpoint_every=10_000,
        keep_checkpoints=2,
        # Table 5: lr 5e-5, batch 128, 100 epochs (~780k steps on 1M chunks; the step count is a default).
        vae=dict(steps=200_000, batch_size=128, learning_rate=5e-5),
        prior=dict(steps=300_000, batch_size=32, learning_rate=1e-4),  # Table 6: lr 1e-4, batch 32, 300 epochs
        q=dict(steps=100_000, batch_size=128, learning_rate=5e-4),  # Table 7: lr 5e-4, batch 128
    )
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c
