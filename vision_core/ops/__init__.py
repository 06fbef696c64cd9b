"""Tensor ops: preprocessing and augmentation (Model Garden's `official.vision.ops`)."""
