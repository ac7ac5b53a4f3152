"""diffgeo: looking inside diffusion models through the U-Net's bottleneck (h-space).

The package is layered, each layer importing only from those below it (the contract in
pyproject.toml, checked by ``lint-imports``): ``core`` < ``data`` < ``viz`` < ``models`` <
``sampling`` < ``geometry`` < ``readers`` < ``evaluation`` < ``editing`` < ``analyses`` <
``widgets`` / ``training`` < ``cli``. This face lists the public API in one ``__all__``.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> samples = diffgeo.sample(model, 4, steps=20, seed=0, progress=False).result
>>> samples.shape
torch.Size([4, 3, 32, 32])
"""

import importlib.metadata

from diffgeo import _moved
from diffgeo.core.progress import set_progress
from diffgeo.editing import directions
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.interval import edit_interval
from diffgeo.editing.transfer import Transfer, transfer_edit
from diffgeo.editing.xspace import edit_image, edit_x
from diffgeo.evaluation.alignment import text_alignment
from diffgeo.geometry.basis import LocalBasis, exact_basis, local_basis
from diffgeo.geometry.batched import local_bases
from diffgeo.geometry.curvedness import Curvedness, curvedness
from diffgeo.geometry.pullback import HMap, h_map
from diffgeo.geometry.subspaces import (distance_matrix, grassmann_distance, principal_angles, projection_distance,
                                       radial_power_spectrum, spectral_centroid, transport, transport_agreement)
from diffgeo.models.loading import list_models, load
from diffgeo.models.model import Model
from diffgeo.sampling.ddim import ddim_timesteps, denoise, sample
from diffgeo.sampling.inversion import invert
from diffgeo.sampling.trajectory import Trajectory

__all__ = [
    # models and sampling
    "Model", "load", "list_models", "Trajectory", "sample", "denoise", "invert", "ddim_timesteps",
    # geometry
    "HMap", "LocalBasis", "h_map", "local_basis", "local_bases", "exact_basis", "principal_angles",
    "grassmann_distance",
    "projection_distance", "distance_matrix", "radial_power_spectrum", "spectral_centroid", "transport",
    "transport_agreement", "Curvedness", "curvedness",
    # evaluation and editing
    "text_alignment", "edit_x", "edit_image", "asyrp", "edit_interval", "Transfer", "transfer_edit", "directions",
    # every progress bar on or off
    "set_progress",
]
__version__ = importlib.metadata.version("diffgeo")

_moved.install()
