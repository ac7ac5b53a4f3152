"""Editing: directions, x-space and Asyrp edits, the t_edit/t_boost rule, learned directions, transfer and the edit property table."""

from diffgeo.editing.edits import edit_x, edit_image, asyrp, edit_interval, EditInterval, ssim_distance, lpips_distance, X_METHODS, PAPER_T_EDIT, PAPER_T_BOOST
from diffgeo.editing.directions import Direction, mean_difference, pca, tangent, SPACES
from diffgeo.editing.properties import EditProperties, evaluate, edit_statistics, timestep_consistency, timestep_cosines, factor_directions, properties_stem, FACTOR_DEFAULTS
from diffgeo.editing.transfer import Transfer, transfer_edit, transport_all, wilson, VIAS
from diffgeo.editing.learned import DeltaNet, LearnedDirection, ProbeObjective, ClipObjective, probe_objective, clip_objective, clip_directional_loss, train_direction, edit_losses, timestep_embedding

__all__ = ['edit_x', 'edit_image', 'asyrp', 'edit_interval', 'EditInterval', 'ssim_distance', 'lpips_distance', 'X_METHODS', 'PAPER_T_EDIT', 'PAPER_T_BOOST', 'Direction', 'mean_difference', 'pca', 'tangent', 'SPACES', 'EditProperties', 'evaluate', 'edit_statistics', 'timestep_consistency', 'timestep_cosines', 'factor_directions', 'properties_stem', 'FACTOR_DEFAULTS', 'Transfer', 'transfer_edit', 'transport_all', 'wilson', 'VIAS', 'DeltaNet', 'LearnedDirection', 'ProbeObjective', 'ClipObjective', 'probe_objective', 'clip_objective', 'clip_directional_loss', 'train_direction', 'edit_losses', 'timestep_embedding']
