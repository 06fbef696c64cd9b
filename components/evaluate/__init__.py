"""The evaluate step: an exported SavedModel + validation TFRecords → mIoU and per-class IoU."""

from components.evaluate.step import run

__all__ = ["run"]
