"""Data sets with known ground truth."""
