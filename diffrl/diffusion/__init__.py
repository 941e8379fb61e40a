"""The functional diffusion core shared by every method: schedules, noising, losses, samplers, guidance."""

from diffrl.diffusion.forward import (
    eps_from_x0,
    extract,
    q_posterior,
    q_sample,
    sample_timesteps,
    split_prediction,
    x0_from_eps,
)
from diffrl.diffusion.guidance import (
    ClassifierFreeGuidance,
    EnergyGuidance,
    GradientGuidance,
    Inpainting,
    drop_condition,
)
from diffrl.diffusion.losses import diffusion_loss, first_action_weights, min_snr_weight
from diffrl.diffusion.samplers import SamplerConfig, StepTable, sample, step_table, timestep_sequence, warm_start
from diffrl.diffusion.schedules import Schedule, make_schedule, schedule_from_betas

__all__ = [
    "ClassifierFreeGuidance",
    "EnergyGuidance",
    "GradientGuidance",
    "Inpainting",
    "SamplerConfig",
    "Schedule",
    "StepTable",
    "diffusion_loss",
    "drop_condition",
    "eps_from_x0",
    "extract",
    "first_action_weights",
    "make_schedule",
    "min_snr_weight",
    "q_posterior",
    "q_sample",
    "sample",
    "sample_timesteps",
    "schedule_from_betas",
    "split_prediction",
    "step_table",
    "timestep_sequence",
    "warm_start",
    "x0_from_eps",
]
