"""diffrl: functional, accelerator-first JAX/Flax diffusion-based offline reinforcement learning."""

__version__ = "0.1.0"
