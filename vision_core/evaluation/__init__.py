"""Evaluation metrics (Model Garden's `official.vision.evaluation`)."""
