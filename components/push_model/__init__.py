"""The push step: a validated SavedModel → a new model-registry version (+ alias move)."""

from components.push_model.step import run

__all__ = ["run"]
