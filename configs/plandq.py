"""PlanDQ (Chen et al. 2024): ``--config=configs/plandq.py:<task>``, and its family (Sec. 3.3) as ``<task>-planqq``
(a Q-Conductor over the Q-Performer), ``<task>-planqd`` (the Q-Conductor over a Diffuser performer) and
``<task>-plandd`` (the D-Conductor over a Diffuser performer); ``diffrl train`` runs the stages ``conductor`` and
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

from diffrl.configs.dql import get_config as dql_config

# (M sub-goal states, straight-to-goal distance in AntMaze units, scaled below): code horizon H = M K with K = 30
# (App. C: H K = 270 / 450 for AntMaze Medium / Large); here M is a multiple of 4 for the U-Net's (1, 4, 8) levels
# (the code shapes odd lengths with special kernels): maze2d U-Maze 8, Medium 12, Large 16 states, spanning 210 / 330 /
# 450 steps. The distance is the code's dist_thr (4 Medium, 6 Large; U-Maze takes Medium's).
MAZE2D = {"umaze": (8, 4.0), "medium": (12, 4.0), "large": (16, 6.0)}
# code: dist_thr 4 (medium), 6 (large). U-Maze is in neither the paper nor the code: 16 states (the goal 450 steps
# after the start, past the 443-step mean route of the expert that made diffrl's U-Maze data) and Medium's distance.
# With 8 states (210 steps) the plans from the evaluation start, whose end is inpainted at the goal, crossed a wall
# in 97-98% of draws (benchmarks/results/cpu.md, "Maze scores antmaze-umaze-diverse: plandq"). Medium by the same
# rule: 28 states (the goal 810 steps after the start, past the 784-step mean route of the data's expert), not the
# code's 9 (270 steps); from 64 evaluation starts 14% of 28-state plans cross a wall against 66% of 12-state ones
# (cpu.md, "Plans through walls"). Large keeps 16 (no Large data made here yet to measure its route).
ANTMAZE = {"umaze-diverse": (16, 4.0), "medium-diverse": (28, 4.0), "large-diverse": (16, 6.0)}
TASKS = tuple(f"maze2d-{m}" for m in MAZE2D) + tuple(f"antmaze-{m}" for m in ANTMAZE)
FAMILY = ("plandq", "planqq", "planqd", "plandd")  # conductor D / Q, performer Q / D (Sec. 3.3)
# Gym-MuJoCo (the official branch dmc): the D-Conductor's value guidance per task, code dmc/config/locomotion_hl.py
# 'plan' (scale, t_stopgrad, n_guide_steps), its defaults 0.1 / 2 / 2 where no override names the task
GUIDANCE = {"halfcheetah-medium": (0.001, 4, 1), "halfcheetah-medium-replay": (0.001, 4, 1),
            "halfcheetah-medium-expert": (0.001, 4, 1), "hopper-medium": (0.0001, 2, 1),
            "hopper-medium-replay": (0.0001, 4, 1), "hopper-medium-expert": (0.0001, 2, 1),
            "walker2d-medium": (0.0001, 2, 1), "walker2d-medium-replay": (0.1, 4, 2),
            "walker2d-medium-expert": (0.0001, 2, 1)}
VARIANTS = TASKS + tuple(f"{t}-{member}" for member in FAMILY[1:] for t in TASKS) + tuple(GUIDANCE)


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant in GUIDANCE:
        return _gym(variant)
    method = next((m for m in FAMILY[1:] if variant.endswith(f"-{m}")), "plandq")
    kind, _, rest = variant.removesuffix(f"-{method}").partition("-")
    d_conductor, q_performer = method in ("plandq", "plandd"), method in ("plandq", "planqq")
    antmaze = kind == "antmaze"
    num_states, straight_distance = (ANTMAZE if antmaze else MAZE2D)[rest]  # num_states: PlanDQ's conductor
    scale = 1.0 if antmaze else 0.25  # the evaluation loop's distances: a maze2d cell is 1, an AntMaze cell 4
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    # code: AntMaze's performer reads D4RL's data (env.get_dataset()), whose rewards mark the one evaluation goal;
    # Minari's files reward each episode's own goal, so they are relabelled (as dql.py's antmaze). Deviation: the
    # relabelled terminals (the goal) end the performer's transitions, as in dql.py and ldcq.py; the code's sampler
    # takes not_done from D4RL's timeouts. maze2d data made here already carries D4RL's relabelled rewards.
    c.dataset = dict(id=f"D4RL/antmaze/{rest}-v1" if antmaze else f"diffrl/maze2d/{rest}-v1", root=None,
                     episodes="stored", rewards="evaluation_goal" if antmaze else "stored")
    # The goal of the evaluation is read from the observation's desired_goal; xy: the position within the state;
    # subgoal: the columns of a sub-goal state the performer reads (code goal_dim 15, the ant's qpos; a point's xy).
    # AntMaze's state is D4RL's [x, y, observation] (Minari's observation drops x, y: they are the achieved_goal).
    c.task = dict(kind="goal", state_key=("achieved_goal", "observation") if antmaze else "observation",
                  goal_key="desired_goal", xy=(0, 2),
                  subgoal=(0, 15) if antmaze else (0, 2),
                  normalizer="limits")  # code: LimitsNormalizer for the conductor; the Q-Performer reads raw states
    shaping = dict(reward_scale=4.0 if antmaze else 1.0, reward_shift=-0.5 if antmaze else 0.0)  # code: cql_antmaze
    if d_conductor:
        c.conductor = dict(
            num_states=num_states,
            stride=30,  # App. C: K = 30 in the long-horizon tasks
            dim=32, dim_mults=(1, 4, 8),  # code: dim 32, (1, 4, 8) for Large and Ultra
            num_steps=256,  # code n_diffusion_steps, cosine schedule
            prediction="x0",  # code predict_epsilon False
            clip_x0=1.0,  # code clip_denoised
            min_displacement=0.01 * scale,  # code dist_thre x horizon
        )
    else:  # Sec. 3.3: the Q-Conductor learns as the Q-Performer does; its settings are the performer's (and the
        # task's reward shaping, which its K-step returns sum)
        c.conductor = dict(stride=30, discount=0.99, tau=0.005, eta=1.0, max_q_backup=False, backup_samples=10,
                           grad_norm=7.0, critic_learning_rate=3e-4, num_critics=2, lcb_coef=None, **shaping)
    if q_performer or not d_conductor:  # Diffusion-QL's networks: the Q-Performer's, the Q-Conductor's
        # Sec. 3.2. Deviation, as in configs/dql.py: flax's initialisation, not the code's PyTorch defaults (the
        # conductor's U-Net starts from PyTorch's, as Diffuser's)
        c.model = dict(hidden=256, depth=3, time_dim=16, critic_hidden=256, critic_depth=3)
        c.diffusion = dict(num_steps=5, beta_min=0.1, beta_max=10.0)  # code: T = 5, vp schedule
    if not q_performer:  # Sec. 3.3: "a Diffuser at the low level"; settings of Diffuser's receding-horizon
        # (locomotion) config, jannerm/diffuser config/locomotion.py, as neither the paper nor the code gives them
        c.performer = dict(
            horizon=32,  # K + 2: the sub-goal at most K = 30 steps ahead, a multiple of 8 for the U-Net's levels
            dim=32, dim_mults=(1, 2, 4, 8), num_steps=20, prediction="x0",  # Diffuser locomotion
            clip_x0=1.0,  # Diffuser maze2d clip_denoised (every column lies on [-1, 1])
            action_weight=10.0,  # Diffuser locomotion: the executed first action up-weighted
        )
    if q_performer:
        c.q = dict(
            discount=0.99, tau=0.005,  # code
            eta=1.0,  # code eta
            max_q_backup=False, backup_samples=10,  # code
            # Sec. 3.2: Diffusion-QL's clipped double Q. The code scores by 64 critics' mean - 4 std (with ReLU critics
            # and no Q gradient reaching its policy); num_critics=64, lcb_coef=4.0 gives that ensemble and bound here.
            num_critics=2, lcb_coef=None,
            grad_norm=7.0,  # code gn
            critic_learning_rate=3e-4,  # code
            **shaping,
            subgoal_p=0.2,  # Sec. 3.2 / code p: Delta ~ Geometric(0.2)
            intrinsic_reward="distance",  # App. C, navigation tasks
            intrinsic_length=scale,  # App. C / code: r_int = exp(-||s'_xy - g_xy|| / intrinsic_length)
        )
    c.plan = dict(
        replan_every=15,  # code replan: performer steps per sub-goal
        retries=5,  # code: up to 5 more plans while the sub-goal is refused
        too_far=7.0 * scale, reach=0.5 * scale,  # code: refuse a sub-goal > 7 or <= 0.5 away; 0.5: reached
        straight_distance=straight_distance * scale,
        # diffrl: on CPU, plan only the environments that need a sub-goal, this many per call (0: all at once, as on
        # accelerators); the official code runs one environment at a time
        subgoal_batch=16,
    )
    if q_performer or not d_conductor:
        c.plan.num_candidates = 50  # code sample_action: 50 samples, one drawn by softmax over Q
    if d_conductor:
        c.plan.sampler_steps = 256  # the D-Conductor's reverse steps per plan (code: all 256)
    c.train = dict(
        log_every=1000, checkpoint_every=10_000, keep_checkpoints=2,
        # code: batch 32 x 2 accumulated, lr 2e-4, 2.5M steps, EMA 0.995 every 10 steps from step 2000
        conductor=dict(steps=2_500_000, batch_size=32, gradient_accumulation=2, learning_rate=2e-4, ema_decay=0.995,
                       ema_every=10, ema_start=2000) if d_conductor else
        dict(steps=2_000_000, batch_size=256, gradient_accumulation=1, learning_rate=3e-4, ema_decay=0.995, ema_every=5,
             ema_start=1000),  # the Q-Conductor: the Q-Performer's schedule
        # code: batch 256, lr 3e-4, 2000 epochs x 1000 steps, EMA policy 0.995 every 5 steps from step 1000
        performer=dict(steps=2_000_000, batch_size=256, gradient_accumulation=1, learning_rate=3e-4, ema_decay=0.995,
                       ema_every=5, ema_start=1000) if q_performer else
        # the Diffuser performer: Diffuser locomotion's batch 32 x 2, lr 2e-4, 1M steps, EMA 0.995 / 10 from 2000
        dict(steps=1_000_000, batch_size=32, gradient_accumulation=2, learning_rate=2e-4, ema_decay=0.995,
             ema_every=10, ema_start=2000),
    )
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c


def _gym(variant: str) -> ml_collections.ConfigDict:
    """PlanDQ on a Gym-MuJoCo task (``diffrl.agents.plandq_gym``): a value-guided jumpy Diffuser over a Q-Performer.
    "code" cites the branch ``dmc`` (``dmc/config/locomotion_hl.py``, ``dmc/Diffusion-Policies-for-Offline-RL/``).
    Deviations: 100 evaluation episodes (code: 10 on v2 tasks); the performer trains on every row, terminal
    transitions included (the code's sampler skips rows within K steps of an episode's end)."""
    c = dql_config(variant)  # the Q-Performer: Diffusion-QL with its per-task table, which the code's main.py repeats
    c.method = "plandq-gym"
    c.task.update(subgoal=None,  # code: the whole state is the sub-goal
                  normalizer="gaussian")  # code: the conductor's GaussianNormalizer; the performer reads raw states
    scale, t_stopgrad, n_guide_steps = GUIDANCE[variant]
    c.conductor = dict(
        stride=4,  # App. C: K = 4 on Gym-MuJoCo (code jump 4, jump_action False: K actions per column)
        num_states=8,  # App. C: H K = 32 (code horizon 36, 9 columns; 8 fit the U-Net's (1, 2, 4, 8) levels)
        model=dict(dim=32, dim_mults=(1, 2, 4, 8)),  # code
        diffusion=dict(num_steps=20, schedule="cosine", prediction="x0", clip_x0=None, action_weight=1.0,
                       loss_discount=1.0, use_padding=True, max_path_length=None),  # code (max_path_length 1000)
        value=dict(enabled=True, dim=32, dim_mults=(1, 2, 4, 8), discount=0.997, termination_penalty=-100.0),  # code
        plan=dict(candidates=64,  # code: the best of a batch of 64 guided plans
                  guide_scale=scale, t_stopgrad=t_stopgrad, n_guide_steps=n_guide_steps, scale_grad_by_std=True,
                  warm_start_steps=0),  # code
    )
    # Sec. 3.2: Delta ~ Geometric(0.2) (the code's argparse default p is 1.0); App. C: cosineMax on Gym. The code also
    # noises each sub-goal by the conductor's forward process at a random step (GoalDiffusion), which the paper
    # does not mention and which the published main.py cannot construct (args.goal_diff is never defined): not done.
    c.q.update(subgoal_p=0.2, intrinsic_reward="cosine_max")
    performer = {key: c.train[key] for key in ("steps", "batch_size", "learning_rate", "ema_decay", "ema_every",
                                               "ema_start")}
    c.train = dict(
        log_every=1000, checkpoint_every=10_000, keep_checkpoints=2,
        # code (locomotion_hl.py): batch 32 x 2, lr 2e-4, 1M steps, EMA 0.995 every 10 steps from 2000; values 400k
        conductor=dict(steps=1_000_000, batch_size=32, gradient_accumulation=2, learning_rate=2e-4, ema_decay=0.995,
                       ema_every=10, ema_start=2000),
        value=dict(steps=400_000, batch_size=32, gradient_accumulation=2, learning_rate=2e-4, ema_decay=0.995,
                   ema_every=10, ema_start=2000),
        performer=dict(gradient_accumulation=1, **performer),
    )
    return c
