"""Editing: directions, x-space and Asyrp edits, the t_edit/t_boost rule, learned directions, transfer and the edit property table."""

from diffgeo.editing.directions import SPACES, Direction, mean_difference, pca, tangent
from diffgeo.editing.factors import FACTOR_DEFAULTS, factor_directions, properties_stem, save_properties_figure
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.interval import (PAPER_T_BOOST, PAPER_T_EDIT, EditInterval, default_interval, edit_interval,
                                      lpips_distance, ssim, ssim_distance)
from diffgeo.editing.learned import DeltaNet, LearnedDirection, edit_losses, timestep_embedding, train_direction
from diffgeo.editing.loco import LocoDirections, loco_directions, scene_mask
from diffgeo.editing.named import list_named, load_named, named_edit, named_info
from diffgeo.editing.objectives import (CLIP_MEAN, CLIP_STD, ClipObjective, ProbeObjective, clip_directional_loss,
                                        clip_objective, probe_objective)
from diffgeo.editing.properties import (EditProperties, edit_properties, edit_statistics, evaluate, timestep_consistency,
                                        timestep_cosines)
from diffgeo.editing.transfer import VIAS, Transfer, transfer_edit, transport_all, wilson
from diffgeo.editing.xspace import X_METHODS, edit_image, edit_x

__all__ = ['edit_x', 'edit_image', 'asyrp', 'edit_interval', 'EditInterval', 'default_interval', 'ssim', 'ssim_distance', 'lpips_distance', 'X_METHODS', 'PAPER_T_EDIT', 'PAPER_T_BOOST', 'Direction', 'mean_difference', 'pca', 'tangent', 'SPACES', 'EditProperties', 'edit_properties', 'evaluate', 'edit_statistics', 'timestep_consistency', 'timestep_cosines', 'factor_directions', 'properties_stem', 'save_properties_figure', 'FACTOR_DEFAULTS', 'Transfer', 'transfer_edit', 'transport_all', 'wilson', 'VIAS', 'DeltaNet', 'LearnedDirection', 'ProbeObjective', 'ClipObjective', 'probe_objective', 'clip_objective', 'clip_directional_loss', 'CLIP_MEAN', 'CLIP_STD', 'train_direction', 'edit_losses', 'timestep_embedding', 'LocoDirections', 'loco_directions', 'scene_mask', 'load_named', 'list_named', 'named_info', 'named_edit']
