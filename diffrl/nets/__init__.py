"""Flax networks shared by the methods: time embeddings and denoisers."""

from diffrl.nets.denoisers import MLPDenoiser, TimeEmbedding, sinusoidal_embedding

__all__ = ["MLPDenoiser", "TimeEmbedding", "sinusoidal_embedding"]
