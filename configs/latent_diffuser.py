"""LatentDiffuser (Li et al. 2023, "Efficient Planning with Latent Diffusion"):
``--config=configs/latent_diffuser.py:<task>``.

``diffrl train`` runs the three stages of Algorithm 1 one after the other in WORKDIR/<stage>: ``vae`` (the latent
action VAE and its heads), ``prior`` (the score-based prior over latent actions) and ``energy`` (the support
latents, then the intermediate energy model of Eq. 8). "Sec." and "App." cite the paper; the paper's code is not
public, so where it is silent the value is diffrl's choice and says why; QGPO (Lu et al. 2023, thu-ml/CEP-energy-
guided-diffusion) is the reference for the energy model, TAP (Jiang et al. 2023, ZhengyaoJiang/latentplan) for the
encoder the paper adopts ("almost consistent encoder design with TAP").
"""

import ml_collections

LOCOMOTION = tuple(f"{env}-{level}" for env in ("hopper", "halfcheetah", "walker2d")
                   for level in ("medium", "medium-replay", "medium-expert"))
ADROIT = tuple(f"{env}-{level}" for env in ("pen", "hammer", "door", "relocate")
               for level in ("human", "cloned", "expert"))
ANTMAZE = ("antmaze-umaze", "antmaze-umaze-diverse", "antmaze-large-diverse")
VARIANTS = LOCOMOTION + ADROIT + ANTMAZE


def get_config(variant: str) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    kind, _, rest = variant.partition("-")
    c = ml_collections.ConfigDict()
    c.method = "latent-diffuser"
    c.seed = 0
    # App. E.2.2: planning horizon H = 40 and M = 16 for Gym locomotion and Adroit, H = 100 and M = 32 for AntMaze;
    # H counts latent actions (App. G: "the planning horizon (referring to the latent rather than the raw action)").
    plan_latents, supports = 40, 16
    if kind == "antmaze":
        # Table 3's AntMaze tasks are HDMI's (Play U-Maze-3, Diverse U-Maze-3, Diverse Large-2, MultiAnt); these are
        # D4RL's single-goal mazes in their Minari form. Minari's AntMaze draws a goal per episode, which the
        # observation's desired_goal holds: it is part of the state the prior is conditioned on. The support set
        # is large here (~1e6 states x 32 x 100 x 16 float16, ~10 GB of device memory per 1e6 states).
        dataset_id, plan_latents, supports = f"D4RL/antmaze/{rest}-v1", 100, 32
        task = dict(kind="goal", state_key=("achieved_goal", "observation", "desired_goal"), goal_key=None)
    elif variant in ADROIT:
        dataset_id = f"D4RL/{kind}/{rest}-v2"  # Minari's successors of the paper's v0 ids (App. E)
        task = dict(kind="reward", state_key=None, goal_key=None)
    else:
        dataset_id = f"mujoco/{kind}/{rest}-v0"  # Minari's successors of D4RL's v2 (App. E)
        task = dict(kind="reward", state_key=None, goal_key=None)
    c.dataset = dict(id=dataset_id, root=None, episodes="stored")
    latent_step = 3  # L is not given; TAP's latent_step (config/vqvae.py)
    c.task = dict(
        # T, the raw steps of a window: H latent actions of L steps each. Windows lie inside one episode and are
        # not padded (TAP pads episodes to max_path_length with a -100 termination penalty; the paper says
        # neither): an episode shorter than T gives no window, and the last T - 1 states of each are no s_1.
        # D4RL's pen episodes were 100 steps: pen data without a longer episode stops with a clear error.
        horizon=plan_latents * latent_step,
        latent_step=latent_step,
        # states, rewards and returns are z-scored (TAP: normalize, normalize_reward), so Q = G_t is in units of the
        # data's return standard deviation and beta = 3 tilts towards sum_t Q in those units (QGPO rescales its
        # rewards by 1000 / (max return - min return) instead)
        normalizer="gaussian",
        discount=0.99,  # G_t = sum_i gamma^(i-t) r_i (Sec. 3); TAP's discount
        **task,
    )
    c.model = dict(
        # the VAE (Sec. 4.1): TAP's GPT sizes (config/vqvae.py: n_layer 4, n_head 4, n_embd 128); the latent width is
        # not given (TAP's quantised codes are 512-d): 16 per latent action here
        latent_dim=16, width=128, layers=4, heads=4,
        inverse_hidden=512,  # App. E.2.1: action decoder, 2 x 512 ReLU
        return_hidden=1024,  # App. E.2.1: reward and return decoder, 3 x 1024 ReLU
        # the prior (App. E.2.1): Decision Diffuser's U-Net, 6 residual blocks on the way down (3 levels x 2),
        # 128-d step and condition embeddings from 2-layer Mish MLPs of 256 units; no EMA of its parameters (the
        # paper names none; Decision Diffuser's code keeps one) and no dropout in the transformers (TAP's GPT has it)
        prior_dim=128, prior_dim_mults=(1, 4, 8), embed_hidden=256,
        energy_hidden=256, energy_depth=4,  # App. E.2.2; QGPO's GuidanceQt: 4 x 256 SiLU
    )
    # Sec. 4.1: "a low-weighted (~1e-6) KL penalty towards a standard normal". The paper does not say how either
    # term is reduced: here the KL is summed over a window's latent entries (H x latent_dim) and the squared
    # error averaged per token entry, its "mean squared error"
    c.vae = dict(kl_weight=1e-6)
    c.diffusion = dict(
        num_steps=100,  # App. E.2.1: K = 100
        schedule="cosine",  # not given; Decision Diffuser's (whose U-Net and recipe App. E.2.1 follows)
        prediction="eps",  # App. B.2, Eq. 9
        drop_prob=0.25,  # App. E.2.1: p of excluding s_1
    )
    c.energy = dict(
        beta=3.0,  # App. E.2.2, all tasks
        num_supports=supports,  # M
        # The support latents are conditional prior samples (w = 1): Eq. 7 needs q(z_0 | s_1), the behaviour's.
        support_steps=100,  # reverse steps: all K (fewer, evenly spaced, for a quicker, coarser support set)
        # initial states per compiled sampler call; the decoded plans' return head holds batch x M x T x 1024 floats
        # per layer (0.5 GB at 64 x 16 x 120 on Gym, 0.6 GB at 16 x 32 x 300 on AntMaze; 1,024 states ran out of
        # 24 GiB here)
        support_batch=16 if kind == "antmaze" else 64,
    )
    c.plan = dict(
        # App. E.2.2: w from {1.2, 1.4, 1.6, 1.8} "depending on the task"; the per-task choice is not given
        guidance_weight=1.4,
        # App. B.2 / E.2.2: low-temperature sampling alpha, scaling the variance as B.2 says (Decision Diffuser's
        # code, which B.2 cites, scales the standard deviation by 0.5 and starts from 0.5 N(0, I))
        temperature=0.5,
        # The paper gives no scale. 1.0 is Eq. 6's exact guidance for the chain f was fitted on (w = 1,
        # temperature 1) and the value QGPO's model is built with; QGPO's train_critic.py evaluates a sweep
        # (s in {0, 1, 2, 3, 5, 8, 10} Gym, {1, ..., 4} AntMaze) and reports its best. With w and alpha above
        # it tilts a sharpened prior instead, as the paper combines them
        energy_scale=1.0,
        sampler_steps=100,  # reverse steps: all K
        # E.2.2's "context length C = 20" has no counterpart here: the prior is conditioned on s_1 alone (Sec. 4.1)
    )
    c.train = dict(
        log_every=1000, checkpoint_every=50_000, keep_checkpoints=2,
        # The VAE's encoder and state decoder have no stated budget; its heads do (App. E.2.1: action decoder
        # 2e6 steps, batch 32, lr 2e-4; reward and return decoder 1e6 steps, batch 64). They train together here,
        # on the action decoder's budget.
        vae=dict(steps=2_000_000, batch_size=32, learning_rate=2e-4),
        prior=dict(steps=2_000_000, batch_size=32, learning_rate=2e-4),  # App. E.2.1
        energy=dict(steps=1_000_000, batch_size=256, learning_rate=3e-4),  # App. E.2.2
    )
    c.eval = dict(episodes=20, seed=0, multi_goal=False, plot_episodes=4, every=0)  # App. E: 20 episodes per seed
    return c
