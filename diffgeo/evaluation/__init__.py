"""Evaluation of samples: quality read by the probe, text alignment."""

from diffgeo.evaluation.quality import QualityReport, evaluate_samples, sample_images, quality_of, plot_invalid, ks_statistic, tv_floor, ks_floor, frechet_distance, feature_frechet_distance, precision_recall, digit_features, DigitQuality, digit_quality_of, evaluate_digits
from diffgeo.evaluation.alignment import Alignment, text_alignment, sweep, agreement_table, save_prompt_grid, GUIDANCE_SWEEP

__all__ = ['QualityReport', 'evaluate_samples', 'sample_images', 'quality_of', 'plot_invalid', 'ks_statistic', 'tv_floor', 'ks_floor', 'frechet_distance', 'feature_frechet_distance', 'precision_recall', 'digit_features', 'DigitQuality', 'digit_quality_of', 'evaluate_digits', 'Alignment', 'text_alignment', 'sweep', 'agreement_table', 'save_prompt_grid', 'GUIDANCE_SWEEP']
