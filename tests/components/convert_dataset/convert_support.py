"""Helpers shared by the converter's tests (imported as `import convert_support`, like
`rle_reference`)."""

import numpy as np

from components.convert_dataset import pipeline
from vision_core.evaluation import coco_evaluator


def capture_run(monkeypatch):
    """Replaces `pipeline.run` with a stub; returns the dict its last call's arguments go to."""
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return {"records": 0, "fingerprint": "f", "bad_records": 0, "splits": {}}

    monkeypatch.setattr(pipeline, "run", fake_run)
    return seen


def own_boxes_ap(annotation_file, records, keep, size, **evaluator_options):
    """COCO AP of decoded detection records' own groundtruth boxes used as detections.

    Args:
      annotation_file: The groundtruth JSON written by the converter.
      records: {source id: TfExampleDecoder output as numpy}.
      keep: Gives, for one record, the boolean mask of the boxes to use as detections.
      size: (height, width) of the images, to turn the normalized boxes into pixels.
      **evaluator_options: More `COCOEvaluator` arguments (e.g. include_mask=False).
    """
    height, width = size
    evaluator = coco_evaluator.COCOEvaluator(
        annotation_file=str(annotation_file), need_rescale_bboxes=False, **evaluator_options
    )
    for source_id, r in records.items():
        kept = keep(r)
        boxes = r["groundtruth_boxes"][kept] * [height, width, height, width]
        n = len(boxes)
        evaluator.update_state(
            None,
            {
                "source_id": np.array([source_id]),
                "detection_boxes": np.reshape(boxes, (1, n, 4)),
                "detection_classes": r["groundtruth_classes"][kept][None],
                "detection_scores": np.ones((1, n)),
                "num_detections": np.array([n]),
            },
        )
    return evaluator.result()["AP"]
