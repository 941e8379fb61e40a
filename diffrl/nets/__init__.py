"""Flax networks shared by the methods: time embeddings, denoisers, Diffuser's temporal U-Net and value function,
the skill beta-VAE, Diffusion-QL's action denoiser and Q-network, the latent Q-network of LDCQ / DIAR and DIAR's
value network."""

from diffrl.nets.critics import ActionQNetwork, LatentQNetwork, StateValueNetwork
from diffrl.nets.denoisers import (
    ActionDenoiser,
    LatentResNetDenoiser,
    LatentTransformerDenoiser,
    MLPDenoiser,
    TimeEmbedding,
    sinusoidal_embedding,
)
from diffrl.nets.skills import (
    AutoregressivePolicy,
    GaussianPrior,
    SkillEncoder,
    SkillVAE,
    StateDecoder,
    skill_vae_loss,
)
from diffrl.nets.unet import (
    Conv1dBlock,
    Downsample1d,
    ResidualTemporalBlock,
    TemporalUNet,
    Upsample1d,
    ValueUNet,
    check_unet_horizon,
    official_value_fc_dim,
    unet_horizon_divisor,
    value_fc_dim,
)

__all__ = [
    "ActionDenoiser",
    "ActionQNetwork",
    "AutoregressivePolicy",
    "GaussianPrior",
    "LatentQNetwork",
    "LatentResNetDenoiser",
    "LatentTransformerDenoiser",
    "SkillEncoder",
    "SkillVAE",
    "StateDecoder",
    "StateValueNetwork",
    "skill_vae_loss",
    "MLPDenoiser",
    "TimeEmbedding",
    "sinusoidal_embedding",
    "Conv1dBlock",
    "Downsample1d",
    "ResidualTemporalBlock",
    "TemporalUNet",
    "Upsample1d",
    "ValueUNet",
    "check_unet_horizon",
    "official_value_fc_dim",
    "unet_horizon_divisor",
    "value_fc_dim",
]
