"""Sampling: one DDIM loop, inversion and prompt-grid generation."""

from diffgeo.sampling.ddim import Trajectory, ddim_timesteps, ddim_step, sample, denoise, invert, CLEAN
from diffgeo.sampling.generation import PromptSampler, generate, prompt_grid, DEFAULT_STEPS

__all__ = ['Trajectory', 'ddim_timesteps', 'ddim_step', 'sample', 'denoise', 'invert', 'CLEAN', 'PromptSampler', 'generate', 'prompt_grid', 'DEFAULT_STEPS']
