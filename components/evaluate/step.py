"""Evaluates the exported segmentation SavedModel exactly as it will be served.

The model is fed the encoded images stored in the TFRecords through its `serve_tf_example`
signature (decode + resize + normalize inside the model), and its `predicted_mask`, in original
image pixels, is compared with the original groundtruth mask. So the figure measured here is the
figure of the artifact that gets pushed, preprocessing included. IoU comes from a confusion
matrix accumulated in NumPy, independent of the training-time metric code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.evaluate.served import resolve_class_names, served_batches, write_results

logger = logging.getLogger(__name__)


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int
) -> np.ndarray:
    """[num_classes, num_classes] counts (rows: groundtruth, columns: prediction)."""
    valid = (gt != ignore_label) & (gt >= 0) & (gt < num_classes) & (pred >= 0)
    idx = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    return {
        "per_class_iou": iou,
        "mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "present": present,
    }


def run(
    saved_model_dir: str,
    dataset_dir: str,
    output_dir: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_label: int = 255,
    split: str = "validation",
    batch_size: int = 8,
    max_examples: int = -1,
) -> dict[str, Any]:
    """Computes mIoU / per-class IoU / pixel accuracy; writes metrics.json and report.md.

    Returns the metrics dict (`mean_iou`, `pixel_accuracy`, `iou/<class name>`, `num_examples`).
    """
    import tensorflow as tf

    from vision_core.dataloaders import tf_example_keys as keys

    names = resolve_class_names(class_names, dataset_dir, num_classes)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    count = 0
    for serialized, outputs in served_batches(
        saved_model_dir, dataset_dir, split, batch_size, max_examples
    ):
        pred = outputs["predicted_mask"].numpy()
        parsed = tf.io.parse_example(
            serialized,
            {keys.SEGMENTATION_CLASS_ENCODED: tf.io.FixedLenFeature([], tf.string)},
        )
        for i, encoded in enumerate(parsed[keys.SEGMENTATION_CLASS_ENCODED].numpy()):
            gt = tf.io.decode_png(encoded, channels=1).numpy()[..., 0].astype(np.int64)
            h, w = gt.shape
            cm += confusion_matrix(gt, pred[i, :h, :w], num_classes, ignore_label)
            count += 1
    if count == 0:
        raise ValueError(f"dataset_dir: the {split} TFRecords in {dataset_dir} hold no example")
    stats = iou_from_confusion(cm)
    metrics: dict[str, Any] = {
        "mean_iou": stats["mean_iou"],
        "pixel_accuracy": stats["pixel_accuracy"],
        "num_examples": count,
    }
    for name, value in zip(names, stats["per_class_iou"]):
        metrics[f"iou/{name}"] = None if np.isnan(value) else float(value)
    write_results(output_dir, metrics, cm, markdown_report(metrics, names, cm))
    logger.info("Evaluated %d examples: mean_iou=%.4f", count, metrics["mean_iou"])
    return metrics


def markdown_report(metrics: dict[str, Any], names: Sequence[str], cm: np.ndarray) -> str:
    lines = [
        "# Segmentation evaluation",
        "",
        f"- examples: {metrics['num_examples']}",
        f"- mean IoU: **{metrics['mean_iou']:.4f}**",
        f"- pixel accuracy: {metrics['pixel_accuracy']:.4f}",
        "",
        "| class | IoU | groundtruth pixels | predicted pixels |",
        "|---|---:|---:|---:|",
    ]
    for i, name in enumerate(names):
        value = metrics.get(f"iou/{name}")
        shown = "n/a (absent)" if value is None else f"{value:.4f}"
        lines.append(f"| {name} | {shown} | {int(cm[i].sum())} | {int(cm[:, i].sum())} |")
    return "\n".join(lines) + "\n"
