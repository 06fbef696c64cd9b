"""The train step: a config + converted TFRecords → checkpoints and an exported SavedModel."""

from components.train.step import run

__all__ = ["run"]
