"""Diffusion-QL (Wang et al. 2023): ``--config=configs/dql.py:<variant>``.

"App. C" cites the paper's appendix, "code" the official Zhendong-Wang/Diffusion-Policies-for-Offline-RL (``main.py``'s
per-task ``hyperparameters`` table and argparse defaults, ``agents/ql_diffusion.py``). The D4RL ids of that table
are read here as their Minari successors. The official runs pick one checkpoint of the run (``--ms offline``:
the evaluation at the ``top_k``-th lowest BC loss); diffrl evaluates the last one.
"""

import ml_collections

# code main.py: (lr, eta, max_q_backup, reward_tune, epochs, gn) per task; reward_tune "cql_antmaze" is
# r' = 4 (r - 0.5) (utils/data_sampler.py).
HYPERPARAMETERS = {
    "halfcheetah-medium": (3e-4, 1.0, False, "no", 2000, 9.0),
    "hopper-medium": (3e-4, 1.0, False, "no", 2000, 9.0),
    "walker2d-medium": (3e-4, 1.0, False, "no", 2000, 1.0),
    "halfcheetah-medium-replay": (3e-4, 1.0, False, "no", 2000, 2.0),
    "hopper-medium-replay": (3e-4, 1.0, False, "no", 2000, 4.0),
    "walker2d-medium-replay": (3e-4, 1.0, False, "no", 2000, 4.0),
    "halfcheetah-medium-expert": (3e-4, 1.0, False, "no", 2000, 7.0),
    "hopper-medium-expert": (3e-4, 1.0, False, "no", 2000, 5.0),
    "walker2d-medium-expert": (3e-4, 1.0, False, "no", 2000, 5.0),
    "antmaze-umaze": (3e-4, 0.5, False, "cql_antmaze", 1000, 2.0),
    "antmaze-umaze-diverse": (3e-4, 2.0, True, "cql_antmaze", 1000, 3.0),
    "antmaze-medium-play": (1e-3, 2.0, True, "cql_antmaze", 1000, 2.0),
    "antmaze-medium-diverse": (3e-4, 3.0, True, "cql_antmaze", 1000, 1.0),
    "antmaze-large-play": (3e-4, 4.5, True, "cql_antmaze", 1000, 10.0),
    "antmaze-large-diverse": (3e-4, 3.5, True, "cql_antmaze", 1000, 7.0),
    "kitchen-complete": (3e-4, 0.005, False, "no", 250, 9.0),
    "kitchen-partial": (3e-4, 0.005, False, "no", 1000, 10.0),
    "kitchen-mixed": (3e-4, 0.005, False, "no", 1000, 10.0),
}
# The code has no maze2d or PointMaze entry: diffrl uses antmaze-umaze's (the nearest task: one goal, a sparse
# reward), without its reward shift, which changes nothing in a task that never terminates.
MAZES = ("umaze", "medium", "large")
for _maze in MAZES:
    HYPERPARAMETERS[f"maze2d-{_maze}"] = HYPERPARAMETERS[f"pointmaze-{_maze}"] = (3e-4, 0.5, False, "no", 1000, 2.0)
VARIANTS = tuple(HYPERPARAMETERS)


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in HYPERPARAMETERS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    lr, eta, max_q_backup, reward_tune, epochs, grad_norm = HYPERPARAMETERS[variant]
    kind, _, rest = variant.partition("-")
    c = ml_collections.ConfigDict()
    c.method = "dql"
    c.seed = 0
    rewards = "stored"
    if kind == "maze2d":  # D4RL's protocol: one fixed goal, the observation holds no goal
        dataset_id, task = f"diffrl/maze2d/{rest}-v1", dict(kind="goal", state_key="observation", goal_key=None)
    elif kind == "pointmaze":  # Minari's: a goal per episode, read from the observation
        dataset_id = f"diffrl/pointmaze/{rest}-v0"
        task = dict(kind="goal", state_key="observation", goal_key="desired_goal")
    elif kind == "antmaze":  # the paper's protocol (D4RL antmaze-v0 through d4rl.qlearning_dataset), as maze2d's
        dataset_id = f"D4RL/antmaze/{rest}-v1"
        # code: D4RL's 29-d ant state [x, y, observation] (Minari's observation drops x, y: they are the
        # achieved_goal) and no goal; D4RL's rewards and terminals mark the one evaluation goal, where Minari's
        # follow each episode's own goal and never terminate. dataset.rewards=stored task.goal_key=desired_goal
        # trains the goal-conditioned task of Minari's files instead.
        task = dict(kind="goal", state_key=("achieved_goal", "observation"), goal_key=None)
        rewards = "evaluation_goal"
    elif kind == "kitchen":
        dataset_id, task = f"D4RL/kitchen/{rest}-v2", dict(kind="reward", state_key="observation", goal_key=None)
    else:
        dataset_id, task = f"mujoco/{kind}/{rest}-v0", dict(kind="reward", state_key=None, goal_key=None)
    c.dataset = dict(id=dataset_id, root=None, episodes="stored", rewards=rewards)
    c.task = dict(normalizer="none", **task)  # code: raw states
    c.model = dict(
        hidden=256, depth=3, time_dim=16,  # App. C / code agents/model.py: 3 x 256 Mish, 16-d time embedding
        critic_hidden=256, critic_depth=3,  # code Critic: 3 x 256 Mish
        # Deviation: the layers start from flax's initialisation (LeCun normal, zero biases), not the code's PyTorch
        # defaults (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases, which Diffuser's U-Nets now use)
    )
    c.diffusion = dict(num_steps=5, beta_min=0.1, beta_max=10.0)  # code: T = 5, vp_beta_schedule (b_min 0.1, b_max 10)
    c.q = dict(
        discount=0.99,  # code --discount
        tau=0.005,  # code --tau
        eta=eta,  # code table
        max_q_backup=max_q_backup,  # code table
        num_critics=2, lcb_coef=None,  # clipped double Q (Eq. 4); lcb_coef k: an ensemble scored by mean - k std
        backup_samples=10,  # code: repeat_interleave(next_state, repeats=10)
        grad_norm=grad_norm,  # code table gn: global-norm clipping of each network's gradient
        critic_learning_rate=3e-4,  # code: the critics' Adam is fixed at 3e-4
        reward_scale=4.0 if reward_tune == "cql_antmaze" else 1.0,
        reward_shift=-0.5 if reward_tune == "cql_antmaze" else 0.0,
    )
    c.plan = dict(num_candidates=50)  # code sample_action: 50 samples, one drawn by softmax over Q
    c.train = dict(
        # code: epochs x 1000 steps, batch 256. --lr_decay steps a cosine of T_max = epochs once per 50 epochs, so it
        # lowers the rate by at most 0.25% over a run: the rate is constant here.
        steps=epochs * 1000, batch_size=256, learning_rate=lr,
        ema_decay=0.995, ema_every=5, ema_start=1000,  # code: EMA policy for the targets
        log_every=1000, checkpoint_every=10_000, keep_checkpoints=2,
    )
    c.eval = dict(episodes=100, seed=0, multi_goal=False, plot_episodes=8, every=0)
    return c
