"""Figures: ``draw_*(ax, data)`` functions (:mod:`diffgeo.viz.draw`, :mod:`diffgeo.viz.results`) and the one path to a Figure, a file
(atomic) or PNG bytes (:mod:`diffgeo.viz.figures`)."""

from diffgeo.viz.draw import (draw_curves, draw_h_statistics, draw_images, draw_labelled_grid, draw_matrix,
                              draw_quality, draw_scatter, draw_spectra, image_grid)
from diffgeo.viz.figures import figure, figure_bytes, h_statistics_figure, labelled_grid, save_figure, save_image_grid
from diffgeo.viz.results import (draw_band_vs_t, draw_basis_heatmap, draw_cond_uncond, draw_curvedness,
                                 draw_edit_properties, draw_edit_transfer, draw_guidance_artefact, draw_prompt_geometry,
                                 draw_shared_tangents, draw_spectral_centroid)

__all__ = ['image_grid', 'draw_labelled_grid', 'draw_h_statistics', 'draw_quality', 'draw_edit_properties', 'draw_images', 'draw_spectra', 'draw_curves', 'draw_scatter', 'draw_matrix', 'draw_band_vs_t', 'draw_spectral_centroid', 'draw_shared_tangents', 'draw_basis_heatmap', 'draw_prompt_geometry', 'draw_cond_uncond', 'draw_curvedness', 'draw_guidance_artefact', 'draw_edit_transfer', 'figure', 'save_figure', 'figure_bytes', 'labelled_grid', 'h_statistics_figure', 'save_image_grid']
