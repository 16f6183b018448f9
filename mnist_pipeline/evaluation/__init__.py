"""Scoring a trained model: metrics, calibration, robustness, plots, the gate."""
