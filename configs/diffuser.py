"""Diffuser (Janner et al. 2022, "Planning with Diffusion for Flexible Behavior Synthesis").

``--config=configs/diffuser.py:<variant>``. "Paper" cites the paper (App. C unless said otherwise); "code"
cites the official configs (jannerm/diffuser ``config/maze2d.py``, ``config/locomotion.py``). Where the two
disagree the per-task values of the code are used, because the horizons the task list fixes (128/256/384,
32) are the code's and its other values were tuned with them; each such place says so.
"""

import ml_collections

MAZES = {
    # variant: (maze, horizon, diffusion steps). Horizons: paper App. C item 4 lists 128 / 265 / 384 (265 is a
    # typo for the code's 256, which also divides by 2^(levels-1)); diffusion steps: code 64 / 256 / 256 (the
    # paper's App. C item 5 says N = 100).
    "umaze": ("umaze", 128, 64),
    "medium": ("medium", 256, 256),
    "large": ("large", 384, 256),
}
LOCOMOTION = ("hopper", "halfcheetah", "walker2d")

VARIANTS = (
    tuple(f"pointmaze-{m}" for m in MAZES)
    + tuple(f"maze2d-{m}" for m in MAZES)
    + tuple(f"multi2d-{m}" for m in MAZES)
    + tuple(f"{env}-{quality}" for env in LOCOMOTION for quality in ("medium", "medium-replay", "medium-expert"))
)


def _base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "diffuser"
    c.seed = 0
    c.dataset = dict(
        id="",
        root=None,  # Minari datasets root; None: $MINARI_DATASETS_PATH or ~/.minari/datasets
        episodes="stored",  # stored | streams | goal_departures (diffrl.data.preprocess.segment_episodes)
    )
    c.task = dict(kind="reward", horizon=32, state_key=None, goal_key=None, normalizer="gaussian")
    c.model = dict(dim=32, dim_mults=(1, 2, 4, 8))  # temporal U-Net (App. C item 1); dim 32: code default
    # The U-Nets' (denoiser and J) initialisation, "pytorch" or "flax" (diffrl.nets.init). "pytorch": as the code's
    # layers start (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))). "flax" (LeCun normal, zero biases) was
    # diffrl's only one before ea47fa6, and every earlier Diffuser row in benchmarks/results used it; at small budgets
    # it trains faster (pointmaze-umaze, dim 16, 4,000 steps at lr 1e-3, seed 0: 60.9 against 36.7, cpu.md). Not a
    # shape key: it only decides where training starts.
    c.initialization = "pytorch"
    # diffrl's option (neither paper nor code has one): the U-Nets' (denoiser and J) computation dtype, float32 or
    # bfloat16 (mixed precision: parameters, optimizer, GroupNorm statistics and the sampler stay float32). Not a
    # shape key: a run trained in one dtype is evaluated or resumed in the other. benchmarks/results say what
    # bfloat16 does to accuracy; it pays on GPUs and TPUs, not on CPUs.
    c.compute_dtype = "float32"
    c.diffusion = dict(
        num_steps=20,
        schedule="cosine",  # code: GaussianDiffusion uses the cosine schedule (paper silent)
        prediction="x0",  # code: predict_epsilon=False; paper App. C item 8: eps vs x0 made no difference
        clip_x0=None,  # code: clip_denoised (maze True -> 1.0, locomotion False)
        action_weight=10.0,  # code: weight of the first action in the loss
        loss_discount=1.0,  # code
        use_padding=True,  # code
        max_path_length=None,  # code 1000 (locomotion) / 40000 (maze); None: the longest episode
        jump=1,  # one column per step (PlanDQ's Gym conductor: 4)
    )
    c.value = dict(
        enabled=False,
        dim=32,
        dim_mults=(1, 2, 4, 8),  # J: the first half of the U-Net + a linear head (App. C item 3)
        # Paper App. C item 7: insensitive above 0.99. Code: the released value models are the d0.997 runs.
        discount=0.997,
        termination_penalty=-100.0,  # code
        # As the code since its commit 28f23a0: J is trained on the diffusion's normalisation (the values run's
        # GaussianNormalizer, which plan_guided.py asserts equal to the diffusion's), the space it is queried in.
    )
    c.train = dict(
        steps=1_000_000,  # code n_train_steps (locomotion 1e6, maze 2e6); paper: 500k
        batch_size=32,  # paper App. C item 2 and code
        gradient_accumulation=2,  # code: gradient_accumulate_every = 2, so 64 examples per update
        learning_rate=2e-4,  # code; the paper's App. C item 2 says 4e-5
        ema_decay=0.995,  # code
        ema_every=10,  # code: update_ema_every
        ema_start=2000,  # code: step_start_ema (the EMA copies the parameters before it)
        log_every=1000,
        checkpoint_every=10_000,
        keep_checkpoints=3,
        # Stage ``value`` (reward tasks): the official train_values.py run, config/locomotion.py 'values':
        # 200e3 steps, the other settings as the denoiser's (batch 32 x 2, lr 2e-4, EMA 0.995).
        value=dict(steps=200_000),
    )
    c.plan = dict(
        # code: plan batch_size (the best of 64 guided plans), ranked as the code ranks them: by the J its last
        # guide call computed, on the sample entering the last denoising step (sampling/functions.py
        # n_step_guided_p_sample returns that y; p_sample_loop sorts by it)
        candidates=64,
        guide_scale=0.1,  # code; the paper's App. C item 6 says alpha = 0.001
        n_guide_steps=2,  # code
        t_stopgrad=2,  # code
        scale_grad_by_std=True,  # code
        replan_every=1,
        warm_start_steps=0,  # Sec. 5.4: > 0 re-noises the previous plan to this step instead of starting from noise
    )
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c


def _maze(c: ml_collections.ConfigDict, maze: str, multi_goal: bool, protocol: str) -> ml_collections.ConfigDict:
    name, horizon, steps = MAZES[maze]
    if protocol == "maze2d":
        # D4RL's protocol (diffrl data generate maze2d-<maze>): the official maze2d_set_terminals cuts the streams
        # where the point leaves the evaluation goal, so no window shows a departure.
        c.dataset.update(id=f"diffrl/maze2d/{name}-v1", episodes="goal_departures")
    else:
        # Minari's protocol (diffrl data generate pointmaze-<maze>): the streams are cut at every reached goal;
        # they are joined back so that the 128-384 step windows fit (episodes last ~70 steps). Not the official
        # rule, which cuts at goal departures of the one evaluation goal that these datasets do not have.
        c.dataset.update(id=f"diffrl/pointmaze/{name}-v0", episodes="streams")
    c.task.update(kind="goal", state_key="observation", goal_key="desired_goal")
    c.model.dim_mults = (1, 4, 8)  # code (maze2d)
    c.task.update(horizon=horizon, normalizer="limits")
    c.diffusion.update(num_steps=steps, clip_x0=1.0, action_weight=1.0, use_padding=False)
    c.train.steps = 2_000_000  # code (maze2d)
    c.plan.update(candidates=1, replan_every=0)  # code: plan_maze2d.py plans once, batch 1, and tracks the plan
    c.eval.multi_goal = multi_goal  # Multi2D (Table 1): the same model, a new goal every episode
    return c


def _locomotion(c: ml_collections.ConfigDict, env: str, quality: str) -> ml_collections.ConfigDict:
    c.dataset.id = f"mujoco/{env}/{quality}-v0"  # Minari's D4RL successor: diffrl data download <id>
    c.value.enabled = True
    # The code's halfcheetah override (horizon 4, dim_mults (1, 4, 8), attention) is not taken: the task list
    # fixes horizon 32 for all three, and the U-Net here has no attention blocks (App. C has none).
    if env == "hopper" and quality == "medium-expert":
        c.plan.update(guide_scale=0.0001, t_stopgrad=4)  # code override (hopper_medium_expert_v2)
    return c


def get_config(variant: str) -> ml_collections.ConfigDict:
    c = _base()
    kind, _, rest = variant.partition("-")
    if kind in ("pointmaze", "maze2d", "multi2d"):
        return _maze(c, rest, multi_goal=kind == "multi2d", protocol="maze2d" if kind == "maze2d" else "pointmaze")
    return _locomotion(c, kind, rest)
