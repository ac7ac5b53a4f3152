"""diffgeo: looking inside diffusion models.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> samples = diffgeo.sample(model, 4, steps=20, seed=0, progress=False).result
>>> samples.shape
torch.Size([4, 3, 32, 32])
"""

from .models import Model, list_models, load
from .sampling import Trajectory, ddim_timesteps, denoise, invert, sample

__all__ = ["Model", "Trajectory", "ddim_timesteps", "denoise", "invert", "list_models", "load", "sample"]
__version__ = "0.1.0"
