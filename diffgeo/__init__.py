"""diffgeo: looking inside diffusion models.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> samples = diffgeo.sample(model, 4, steps=20, seed=0, progress=False).result
>>> samples.shape
torch.Size([4, 3, 32, 32])
"""

from .loading import list_models, load
from .models import Model
from .sampling import Trajectory, ddim_timesteps, denoise, invert, sample
from .pullback import HMap, LocalBasis, exact_basis, h_map, local_basis
from .geometry import (Curvedness, curvedness, distance_matrix, grassmann_distance, principal_angles,
                       projection_distance, radial_power_spectrum, spectral_centroid, transport, transport_agreement)

__all__ = ["Model", "Trajectory", "ddim_timesteps", "denoise", "invert", "list_models", "load", "sample"]
__all__ += ["HMap", "LocalBasis", "exact_basis", "h_map", "local_basis", "Curvedness", "curvedness",
            "distance_matrix", "grassmann_distance", "principal_angles", "projection_distance",
            "radial_power_spectrum", "spectral_centroid", "transport", "transport_agreement"]
from .alignment import text_alignment
from .editing import asyrp, edit_image, edit_interval, edit_x
from .transfer import Transfer, transfer_edit
from . import directions, learned_direction

__all__ += ["text_alignment", "asyrp", "edit_image", "edit_interval", "edit_x", "directions", "learned_direction",
            "Transfer", "transfer_edit"]
__version__ = "0.1.0"
