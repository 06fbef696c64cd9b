"""Losses (Model Garden's `official.vision.losses`)."""
