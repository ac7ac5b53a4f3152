"""Figures: ``draw_*(ax, data)`` functions and the one atomic save path."""

from diffgeo.viz.draw import image_grid, save_image_grid, labelled_grid, save_figure, draw_labelled_grid, draw_h_statistics, h_statistics_figure, draw_quality, draw_images, draw_spectra, draw_curves, draw_scatter, draw_matrix, draw_band_vs_t, draw_spectral_centroid, draw_shared_tangents, draw_basis_heatmap, draw_prompt_geometry, draw_cond_uncond, draw_curvedness, draw_guidance_artefact, draw_edit_transfer

__all__ = ['image_grid', 'save_image_grid', 'labelled_grid', 'save_figure', 'draw_labelled_grid', 'draw_h_statistics', 'h_statistics_figure', 'draw_quality', 'draw_images', 'draw_spectra', 'draw_curves', 'draw_scatter', 'draw_matrix', 'draw_band_vs_t', 'draw_spectral_centroid', 'draw_shared_tangents', 'draw_basis_heatmap', 'draw_prompt_geometry', 'draw_cond_uncond', 'draw_curvedness', 'draw_guidance_artefact', 'draw_edit_transfer']
