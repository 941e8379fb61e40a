"""Flax networks shared by the methods: time embeddings, denoisers, and Diffuser's temporal U-Net and value function."""

from diffrl.nets.denoisers import MLPDenoiser, TimeEmbedding, sinusoidal_embedding
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
