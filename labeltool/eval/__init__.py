"""Evaluation: round metrics, compactness, confidence calibration, review statistics."""
