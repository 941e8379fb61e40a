"""Behaviour cloning, the baseline next to every diffrl score: ``--config=configs/bc.py:<variant>``.

No paper defines it here, so its values are the usual ones for D4RL-scale BC (two hidden layers of 256, Adam
3e-4, batch 256); it reads the same datasets and is evaluated by the same rollout as the methods.
"""

import ml_collections

VARIANTS = ("pointmaze-umaze", "pointmaze-medium", "pointmaze-large", "maze2d-umaze", "maze2d-medium", "maze2d-large",
            "multi2d-umaze", "multi2d-medium", "multi2d-large",
            "hopper-medium", "halfcheetah-medium", "walker2d-medium",
            "antmaze-umaze", "antmaze-umaze-diverse", "antmaze-medium-play", "antmaze-medium-diverse",
            "antmaze-large-play", "antmaze-large-diverse")


def get_config(variant: str) -> ml_collections.ConfigDict:
    kind, _, rest = variant.partition("-")
    c = ml_collections.ConfigDict()
    c.method = "bc"
    c.seed = 0
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    maze = kind in ("pointmaze", "maze2d", "multi2d", "antmaze")
    dataset_id = {"pointmaze": f"diffrl/pointmaze/{rest}-v0", "multi2d": f"diffrl/pointmaze/{rest}-v0",
                  "maze2d": f"diffrl/maze2d/{rest}-v1", "antmaze": f"D4RL/antmaze/{rest}-v1"}.get(
                      kind, f"mujoco/{kind}/{rest}-v0")
    c.dataset = dict(id=dataset_id, root=None, episodes="stored")
    # Gaussian-normalised observations. PointMaze's and AntMaze's carry the goal (Minari's antmaze-v1 episodes each
    # follow their own), so BC is goal-conditioned there; on maze2d BC sees D4RL's observation (position and
    # velocity, no goal), as the papers' BC rows did.
    c.task = dict(kind="goal" if maze else "reward", state_key="observation" if kind == "maze2d" else None,
                  goal_key=None, normalizer="gaussian")
    c.model = dict(hidden=(256, 256))
    c.train = dict(steps=100_000, batch_size=256, learning_rate=3e-4, log_every=1000, checkpoint_every=10_000,
                   keep_checkpoints=3)
    c.eval = dict(episodes=100, seed=0, multi_goal=kind == "multi2d", plot_episodes=8, every=0)
    return c
