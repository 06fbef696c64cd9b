"""Task config class → task class, as one explicit table."""

from __future__ import annotations

from typing import Any

from vision_core.configs import image_classification as cls_cfg
from vision_core.configs import retinanet as det_cfg
from vision_core.configs import semantic_segmentation as seg_cfg
from vision_core.tasks.base_task import Task


def get_task(task_config: Any, logging_dir: str | None = None) -> Task:
    """The task object for a task config (e.g. `SemanticSegmentationTask` for segmentation)."""
    from vision_core.tasks.image_classification import ImageClassificationTask
    from vision_core.tasks.retinanet import RetinaNetTask
    from vision_core.tasks.semantic_segmentation import SemanticSegmentationTask

    table: dict[type, type[Task]] = {
        seg_cfg.SemanticSegmentationTask: SemanticSegmentationTask,
        cls_cfg.ImageClassificationTask: ImageClassificationTask,
        det_cfg.RetinaNetTask: RetinaNetTask,
    }
    for cfg_type, task_type in table.items():
        if isinstance(task_config, cfg_type):
            return task_type(task_config, logging_dir=logging_dir)
    known = ", ".join(t.__name__ for t in table)
    raise ValueError(
        f"task: no task is registered for {type(task_config).__name__}; known: {known}"
    )
