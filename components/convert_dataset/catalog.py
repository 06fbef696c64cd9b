"""The dataset sources the converter knows and the tasks each converts for.

Kept free of heavy imports so the command line can check its arguments before Beam and
TensorFlow load.
"""

from __future__ import annotations

# The tasks each source can convert for, the first being its default.
SOURCE_TASKS: dict[str, tuple[str, ...]] = {
    "folders": ("segmentation", "classification"),
    "shapes": ("segmentation", "classification", "detection"),
    "coco": ("detection", "segmentation"),
    "voc": ("segmentation", "detection"),
    "cityscapes": ("segmentation", "detection"),
}
SOURCE_NAMES = tuple(SOURCE_TASKS)
TASKS = ("segmentation", "classification", "detection")
# Split names a source uses when none are given: the names its own layout uses.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {
    "voc": ("train", "val"),
    "cityscapes": ("train", "val"),
}
GENERIC_SPLITS = ("train", "validation")


def default_task(source: str) -> str:
    return SOURCE_TASKS[source][0]


def default_splits(source: str) -> tuple[str, ...]:
    return DEFAULT_SPLITS.get(source, GENERIC_SPLITS)
