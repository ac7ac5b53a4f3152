"""Training and exporting the embedded models from their recipes (:mod:`diffgeo.models.recipes`).

:mod:`~diffgeo.training.data` (recipes, batches), :mod:`~diffgeo.training.losses` (targets, weightings,
held-out loss), :mod:`~diffgeo.training.loop` (``train``, checkpoints) and :mod:`~diffgeo.training.export`
(``export``, ``average``). The command line is ``diffgeo train`` (:mod:`diffgeo.cli.train`).
"""

from diffgeo.training.data import get_recipe, recipe_names
from diffgeo.training.export import average, export
from diffgeo.training.loop import train, warm_start_record
from diffgeo.training.losses import (DEFAULT_CAP, HELD_OUT_SEED, LOSS_WEIGHTS, PREDICTIONS, held_out_loss, loss_weights,
                                     training_target)

__all__ = ['recipe_names', 'get_recipe', 'LOSS_WEIGHTS', 'DEFAULT_CAP', 'PREDICTIONS', 'HELD_OUT_SEED', 'training_target', 'loss_weights', 'held_out_loss', 'train', 'warm_start_record', 'export', 'average']
