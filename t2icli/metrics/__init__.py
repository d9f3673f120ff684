"""Evaluation metrics: retrieval R-precision (and later IS, FID, attribute accuracy)."""
