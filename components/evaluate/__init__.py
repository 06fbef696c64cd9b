"""The evaluate step: an exported SavedModel + validation TFRecords → its metrics and a report.

`run` evaluates a segmentation model (mIoU, per-class IoU); `run_classification` an image
classifier (top-1 / top-k and per-class accuracy); `run_detection` a detector (COCO AP, per-class
AP, a figure of detections); `run_for_task` picks by task name, which is
what the pipeline's one evaluate op and the CLI call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.evaluate.classification import run as run_classification
from components.evaluate.detection import run as run_detection
from components.evaluate.step import run

# Task name → (evaluator, the options it takes beyond the common arguments).
EVALUATORS = {
    "segmentation": (run, ("ignore_label", "split", "batch_size", "max_examples")),
    "classification": (run_classification, ("top_k", "split", "batch_size", "max_examples")),
    "detection": (
        run_detection,
        ("split", "batch_size", "max_examples", "num_figure_images", "figure_min_score"),
    ),
}


def run_for_task(
    task: str,
    saved_model_dir: str,
    dataset_dir: str,
    output_dir: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluates with the task's evaluator; `options` are its own keyword arguments.

    Raises:
      ValueError: an unknown task, or an option the task's evaluator does not take.
    """
    if task not in EVALUATORS:
        raise ValueError(f"task: expected one of {sorted(EVALUATORS)}, got {task!r}")
    evaluator, allowed = EVALUATORS[task]
    # KFP hands dict parameters over as JSON structs, whose numbers are all floats: 2 → 2.0.
    options = {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in (options or {}).items()
    }
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"evaluate options {unknown} do not apply to {task}; it takes {list(allowed)}"
        )
    return evaluator(
        saved_model_dir, dataset_dir, output_dir, num_classes, class_names or None, **options
    )


__all__ = ["EVALUATORS", "run", "run_classification", "run_detection", "run_for_task"]
