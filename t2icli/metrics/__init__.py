"""Evaluation metrics: R-precision (DM-GAN protocol), Inception Score, FID, attribute accuracy, and the generation they share."""
