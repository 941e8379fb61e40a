"""PlanDQ (Chen et al. 2024): ``--config=configs/plandq.py:<task>``, and its family member PlanQQ (Sec. 3.3, a
Q-Conductor over the same Q-Performer) as ``<task>-planqq``; ``diffrl train`` runs the stages ``conductor`` and
``performer`` (independent of each other, as the paper trains them) in WORKDIR/<stage>.

"Sec." and "App. C" cite the paper, "code" the official changchencc/PlanDQ branch ``antmaze``
(``config/antmaze_hl.py`` for the conductor, ``Diffusion-Policies-for-Offline-RL/main_Antmaze.py`` for the performer
and the evaluation loop). Where the paper and the code differ the paper is followed, as said on the line:
the code's performer predicts x0 (the paper's Eq. 14: eps, as Diffusion-QL) and scores its actions with a
64-critic ensemble and a lower confidence bound that no Q gradient reaches; diffrl's performer is Diffusion-QL's.
The paper has no maze2d experiment: the ``maze2d-*`` variants carry the AntMaze settings over, with every distance
(the evaluation loop's, the conductor's window filter, the intrinsic reward's length) divided by 4, AntMaze's maze
scaling (D4RL builds AntMaze cells 4 units wide, maze2d cells 1).
"""

import ml_collections

# (M sub-goal states, straight-to-goal distance): code horizon H = M K with K = 30 (App. C: H K = 270 / 450 for
# AntMaze Medium / Large); here M is a multiple of 4 for the U-Net's (1, 4, 8) levels (the code shapes odd lengths
# with special kernels): maze2d U-Maze 8, Medium 12, Large 16 states, spanning 210 / 330 / 450 steps.
MAZE2D = {"umaze": (8, 1.0), "medium": (12, 1.0), "large": (16, 1.5)}
ANTMAZE = {"medium-diverse": (12, 4.0), "large-diverse": (16, 6.0)}  # code: dist_thr 4 (medium), 6 (large)
TASKS = tuple(f"maze2d-{m}" for m in MAZE2D) + tuple(f"antmaze-{m}" for m in ANTMAZE)
VARIANTS = TASKS + tuple(f"{t}-planqq" for t in TASKS)


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    method = "planqq" if variant.endswith("-planqq") else "plandq"
    kind, _, rest = variant.removesuffix("-planqq").partition("-")
    antmaze = kind == "antmaze"
    num_states, straight_distance = (ANTMAZE if antmaze else MAZE2D)[rest]  # num_states: PlanDQ's conductor
    scale = 1.0 if antmaze else 0.25  # the evaluation loop's distances, in maze2d units
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.dataset = dict(id=f"D4RL/antmaze/{rest}-v1" if antmaze else f"diffrl/maze2d/{rest}-v1", root=None,
                     episodes="stored")
    # The goal of the evaluation is read from the observation's desired_goal; xy: the position within the state;
    # subgoal: the columns of a sub-goal state the performer reads (code goal_dim 15, the ant's qpos; a point's xy).
    # AntMaze's state is D4RL's [x, y, observation] (Minari's observation drops x, y: they are the achieved_goal).
    c.task = dict(kind="goal", state_key=("achieved_goal", "observation") if antmaze else "observation",
                  goal_key="desired_goal", xy=(0, 2),
                  subgoal=(0, 15) if antmaze else (0, 2),
                  normalizer="limits")  # code: LimitsNormalizer for the conductor; the performer reads raw states
    if method == "plandq":
        c.conductor = dict(
            num_states=num_states,
            stride=30,  # App. C: K = 30 in the long-horizon tasks
            dim=32, dim_mults=(1, 4, 8),  # code: dim 32, (1, 4, 8) for Large and Ultra
            num_steps=256,  # code n_diffusion_steps, cosine schedule
            prediction="x0",  # code predict_epsilon False
            clip_x0=1.0,  # code clip_denoised
            min_displacement=0.01 * scale,  # code dist_thre x horizon
        )
    else:  # Sec. 3.3: the Q-Conductor learns as the Q-Performer does; its settings are the performer's
        c.conductor = dict(stride=30, discount=0.99, tau=0.005, eta=1.0, max_q_backup=False, backup_samples=10,
                           grad_norm=7.0, critic_learning_rate=3e-4, num_critics=2, lcb_coef=None)
    c.model = dict(hidden=256, depth=3, time_dim=16, critic_hidden=256, critic_depth=3)  # Sec. 3.2: Diffusion-QL's MLPs
    c.diffusion = dict(num_steps=5, beta_min=0.1, beta_max=10.0)  # code: T = 5, vp schedule
    c.q = dict(
        discount=0.99, tau=0.005,  # code
        eta=1.0,  # code eta
        max_q_backup=False, backup_samples=10,  # code
        # Sec. 3.2: Diffusion-QL's clipped double Q. The code scores by 64 critics' mean - 4 std (with ReLU critics
        # and no Q gradient reaching its policy); num_critics=64, lcb_coef=4.0 gives that ensemble and bound here.
        num_critics=2, lcb_coef=None,
        grad_norm=7.0,  # code gn
        critic_learning_rate=3e-4,  # code
        reward_scale=4.0 if antmaze else 1.0, reward_shift=-0.5 if antmaze else 0.0,  # code: cql_antmaze shaping
        subgoal_p=0.2,  # Sec. 3.2 / code p: Delta ~ Geometric(0.2)
        intrinsic_length=scale,  # App. C / code: r_int = exp(-||s'_xy - g_xy|| / intrinsic_length)
    )
    c.plan = dict(
        num_candidates=50,  # code sample_action: 50 performer samples, one drawn by softmax over Q
        replan_every=15,  # code replan: performer steps per sub-goal
        retries=5,  # code: up to 5 more plans while the sub-goal is refused
        too_far=7.0 * scale, reach=0.5 * scale,  # code: refuse a sub-goal > 7 or <= 0.5 away; 0.5: reached
        straight_distance=straight_distance * scale,
    )
    if method == "plandq":
        c.plan.sampler_steps = 256  # the D-Conductor's reverse steps per plan (code: all 256)
    c.train = dict(
        log_every=1000, checkpoint_every=10_000, keep_checkpoints=2,
        # code: batch 32 x 2 accumulated, lr 2e-4, 2.5M steps, EMA 0.995 every 10 steps from step 2000
        conductor=dict(steps=2_500_000, batch_size=32, gradient_accumulation=2, learning_rate=2e-4, ema_decay=0.995,
                       ema_every=10, ema_start=2000) if method == "plandq" else
        dict(steps=2_000_000, batch_size=256, gradient_accumulation=1, learning_rate=3e-4, ema_decay=0.995, ema_every=5,
             ema_start=1000),  # the Q-Conductor: the performer's schedule
        # code: batch 256, lr 3e-4, 2000 epochs x 1000 steps, EMA policy 0.995 every 5 steps from step 1000
        performer=dict(steps=2_000_000, batch_size=256, gradient_accumulation=1, learning_rate=3e-4, ema_decay=0.995,
                       ema_every=5, ema_start=1000),
    )
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c
