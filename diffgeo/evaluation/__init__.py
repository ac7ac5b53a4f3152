"""Evaluation of samples: quality read by the probe, text alignment; the report's statistics and nulls."""

from diffgeo.evaluation.alignment import (GUIDANCE_SWEEP, Alignment, agreement_table, save_prompt_grid, sweep,
                                          text_alignment)
from diffgeo.evaluation.nulls import (SubspaceNull, chance_retention, ddim_shift_gain, mantel_test,
                                      random_directions_like, random_subspace_null)
from diffgeo.evaluation.plots import plot_invalid, plot_report
from diffgeo.evaluation.stats import bca_interval, spearman, wilson_interval
from diffgeo.evaluation.quality import (DigitQuality, QualityReport, digit_features, digit_quality_of, evaluate_digits,
                                        evaluate_samples, feature_frechet_distance, frechet_distance, ks_floor,
                                        ks_statistic, precision_recall, quality_of, sample_images, tv_floor)

__all__ = ['QualityReport', 'evaluate_samples', 'sample_images', 'quality_of', 'plot_report', 'plot_invalid', 'ks_statistic', 'tv_floor', 'ks_floor', 'frechet_distance', 'feature_frechet_distance', 'precision_recall', 'digit_features', 'DigitQuality', 'digit_quality_of', 'evaluate_digits', 'Alignment', 'text_alignment', 'sweep', 'agreement_table', 'save_prompt_grid', 'GUIDANCE_SWEEP', 'SubspaceNull', 'random_subspace_null', 'chance_retention', 'random_directions_like', 'mantel_test', 'ddim_shift_gain', 'bca_interval', 'wilson_interval', 'spearman']
