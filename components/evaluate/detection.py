"""Evaluates an exported detector exactly as it will be served: COCO AP with pycocotools.

The SavedModel gets the encoded images stored in the TFRecords through its `serve_tf_example`
signature and returns boxes in original-image pixels, which are scored against the records'
groundtruth boxes (or the dataset's COCO annotation file, when the convert step wrote one) by
`vision_core.evaluation.coco_evaluator.COCOEvaluator`. Besides metrics.json and report.md (with a
per-class AP table), it draws a few validation images with predicted and true boxes into
detections.png.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.common.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from components.evaluate.served import resolve_class_names, served_batches

logger = logging.getLogger(__name__)

# The COCO summary as reported (pycocotools' stats order).
SUMMARY_KEYS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
)  # fmt: skip
# Where the convert step writes the validation groundtruth in COCO form (contiguous class ids).
ANNOTATION_FILE = os.path.join("annotations", "instances_validation.json")


def _groundtruths(decoded: list[dict[str, Any]], max_instances: int) -> dict[str, np.ndarray]:
    """Batched groundtruth arrays (pixels, padded with -1) in the evaluator's format."""
    batch = len(decoded)
    boxes = -np.ones((batch, max_instances, 4), np.float32)
    classes = -np.ones((batch, max_instances), np.int64)
    areas = -np.ones((batch, max_instances), np.float32)
    crowds = np.zeros((batch, max_instances), np.int64)
    for i, d in enumerate(decoded):
        n = len(d["classes"])
        boxes[i, :n] = d["boxes"]
        classes[i, :n] = d["classes"]
        areas[i, :n] = d["areas"]
        crowds[i, :n] = d["is_crowds"]
    return {
        "source_id": np.array([d["source_id"] for d in decoded], np.int64),
        "height": np.array([d["height"] for d in decoded], np.int64),
        "width": np.array([d["width"] for d in decoded], np.int64),
        "num_detections": np.array([len(d["classes"]) for d in decoded], np.int64),
        "boxes": boxes,
        "classes": classes,
        "areas": areas,
        "is_crowds": crowds,
    }


def _decode_examples(serialized) -> list[dict[str, Any]]:
    """Per example: the image, its groundtruth in pixels and its numeric source id."""
    from vision_core.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(include_mask=False)
    out = []
    for record in serialized:
        d = decoder.decode(record)
        height, width = int(d["height"]), int(d["width"])
        boxes = d["groundtruth_boxes"].numpy() * np.array([height, width, height, width])
        source = d["source_id"].numpy().decode()
        if not source.lstrip("-").isdigit():
            raise ValueError(
                f"record with image/source_id {source!r}: COCO evaluation needs numeric source "
                "ids (the convert step writes the COCO image id there)"
            )
        out.append(
            {
                "image": d["image"].numpy(),
                "source_id": int(source),
                "height": height,
                "width": width,
                "boxes": boxes.astype(np.float32),
                "classes": d["groundtruth_classes"].numpy().astype(np.int64),
                "areas": d["groundtruth_area"].numpy().astype(np.float32),
                "is_crowds": d["groundtruth_is_crowd"].numpy().astype(np.int64),
            }
        )
    return out


def run(
    saved_model_dir: str,
    dataset_dir: str,
    output_dir: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    split: str = "validation",
    batch_size: int = 8,
    max_examples: int = -1,
    num_figure_images: int = 8,
    figure_min_score: float = 0.3,
) -> dict[str, Any]:
    """Computes COCO AP / AR and per-class AP; writes metrics.json, report.md, detections.png.

    Args:
      saved_model_dir: the exported detector (with a `serve_tf_example` signature).
      dataset_dir: the convert step's output folder.
      output_dir: where the results go.
      num_classes: the model's class count, background (id 0) included.
      class_names: names by class id (background first); default the dataset's, else the ids.
      split: the split to evaluate.
      batch_size: examples per SavedModel call.
      max_examples: stop after this many examples (-1: all).
      num_figure_images: validation images drawn into detections.png (0: none).
      figure_min_score: the lowest detection score drawn.

    Returns:
      The metrics: AP, AP50, AP75, APs/m/l, ARmax1/10/100, ARs/m/l, `AP/<class>` and
      `AP50/<class>` per class present in the groundtruth, `num_examples`.

    Raises:
      FileNotFoundError: no TFRecords for the split.
      ValueError: a SavedModel without the signature, non-numeric source ids, an empty split.
    """
    import tensorflow as tf

    from vision_core.evaluation import coco_evaluator
    from vision_core.utils import visualization

    names = resolve_class_names(class_names, dataset_dir, num_classes)
    annotation_file = os.path.join(dataset_dir, ANNOTATION_FILE)
    if split != "validation" or not tf.io.gfile.exists(annotation_file):
        annotation_file = None
    evaluator = coco_evaluator.COCOEvaluator(
        annotation_file=annotation_file, need_rescale_bboxes=False, per_category_metrics=True
    )
    figures, count, gt_instances = [], 0, np.zeros(num_classes, np.int64)
    for serialized, outputs in served_batches(
        saved_model_dir, dataset_dir, split, batch_size, max_examples
    ):
        decoded = _decode_examples(serialized)
        width = max([len(d["classes"]) for d in decoded] + [1])
        groundtruths = _groundtruths(decoded, width)
        predictions = {
            "source_id": groundtruths["source_id"],
            "detection_boxes": outputs["detection_boxes"].numpy(),
            "detection_scores": outputs["detection_scores"].numpy(),
            "detection_classes": outputs["detection_classes"].numpy().astype(np.int64),
            "num_detections": outputs["num_detections"].numpy().astype(np.int64),
            "image_info": outputs["image_info"].numpy(),
        }
        evaluator.update_state(None if annotation_file else groundtruths, predictions)
        for d in decoded:
            known = d["classes"][(d["classes"] >= 0) & (d["classes"] < num_classes)]
            np.add.at(gt_instances, known, 1)
        for i, d in enumerate(decoded):
            if len(figures) >= num_figure_images:
                break
            n = int(predictions["num_detections"][i])
            figures.append(
                visualization.draw_boxes(
                    d["image"],
                    predictions["detection_boxes"][i, :n],
                    predictions["detection_classes"][i, :n],
                    predictions["detection_scores"][i, :n],
                    class_names=names,
                    groundtruth_boxes=d["boxes"],
                    min_score=figure_min_score,
                )
            )
        count += len(decoded)
    if count == 0:
        raise ValueError(f"dataset_dir: the {split} TFRecords in {dataset_dir} hold no example")
    result = evaluator.result()
    metrics: dict[str, Any] = {key: float(result[key]) for key in SUMMARY_KEYS}
    per_class = per_class_ap(result, names)
    for name, values in per_class.items():
        metrics[f"AP/{name}"] = values["AP"]
        metrics[f"AP50/{name}"] = values["AP50"]
    metrics["num_examples"] = count
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "metrics.json"), metrics)
    report = markdown_report(metrics, per_class, gt_instances, names)
    write_text_atomic(os.path.join(output_dir, "report.md"), report)
    if figures:
        write_bytes_atomic(
            os.path.join(output_dir, "detections.png"),
            visualization.png_bytes(visualization.grid(figures)),
        )
    logger.info("Evaluated %d examples: AP=%.4f AP50=%.4f", count, metrics["AP"], metrics["AP50"])
    return metrics


def per_class_ap(result: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """{class name: {'AP', 'AP50'}} from the evaluator's per-category entries (absent classes,
    which pycocotools reports as -1, are left out)."""
    out = {}
    for class_id, name in enumerate(names):
        ap = result.get(f"Precision mAP ByCategory/{class_id}")
        ap50 = result.get(f"Precision mAP ByCategory@50IoU/{class_id}")
        if ap is None or float(ap) < 0:
            continue
        out[name] = {"AP": float(ap), "AP50": float(ap50) if ap50 is not None else float("nan")}
    return out


def markdown_report(
    metrics: dict[str, Any],
    per_class: dict[str, dict[str, float]],
    gt_instances: np.ndarray,
    names: Sequence[str],
) -> str:
    """A Markdown summary: the COCO figures, then one row per class."""
    lines = [
        "# Detection evaluation (COCO, pycocotools)",
        "",
        f"- examples: {metrics['num_examples']}",
        f"- AP (IoU 0.50:0.95): **{metrics['AP']:.4f}**",
        f"- AP50: **{metrics['AP50']:.4f}**, AP75: {metrics['AP75']:.4f}",
        f"- AP small / medium / large: {metrics['APs']:.4f} / {metrics['APm']:.4f} / "
        f"{metrics['APl']:.4f}",
        f"- AR@1 / @10 / @100: {metrics['ARmax1']:.4f} / {metrics['ARmax10']:.4f} / "
        f"{metrics['ARmax100']:.4f}",
        "",
        "| class | AP | AP50 | true instances |",
        "|---|---:|---:|---:|",
    ]
    for class_id, name in enumerate(names):
        if class_id == 0 and not gt_instances[0]:
            continue  # The background class has no boxes.
        values = per_class.get(name)
        ap, ap50 = (
            ("n/a", "n/a")
            if values is None
            else (
                f"{values['AP']:.4f}",
                f"{values['AP50']:.4f}",
            )
        )
        lines.append(f"| {name} | {ap} | {ap50} | {int(gt_instances[class_id])} |")
    return "\n".join(lines) + "\n"
