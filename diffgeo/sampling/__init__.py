"""Sampling: one DDIM loop (:func:`~diffgeo.sampling.ddim.ddim_loop`), inversion and prompt-grid generation."""

from diffgeo.sampling.ddim import (
                                   BLOWUP,
                                   CLEAN,
                                   abar,
                                   clip_range,
                                   ddim_loop,
                                   ddim_step,
                                   ddim_timesteps,
                                   denoise,
                                   make_generator,
                                   model_eps,
                                   sample,
)
from diffgeo.sampling.generation import DEFAULT_STEPS, PromptSampler, generate, prompt_grid
from diffgeo.sampling.inversion import invert
from diffgeo.sampling.trajectory import Trajectory

__all__ = ['Trajectory', 'ddim_timesteps', 'ddim_step', 'ddim_loop', 'model_eps', 'abar', 'clip_range',
           'make_generator', 'sample', 'denoise', 'invert', 'CLEAN', 'BLOWUP', 'PromptSampler', 'generate',
           'prompt_grid', 'DEFAULT_STEPS']
