"""Evaluates the exported segmentation SavedModel exactly as it will be served.

The model is fed the encoded images stored in the TFRecords through its `serve_tf_example`
signature (decode + resize + normalize inside the model), and its `predicted_mask`, in original
image pixels, is compared with the original groundtruth mask. So the figure measured here is the
figure of the artifact that gets pushed, preprocessing included. IoU comes from a confusion
matrix accumulated in NumPy, independent of the training-time metric code.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.common.io import split_pattern, write_json_atomic, write_text_atomic

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

    pattern = split_pattern(dataset_dir, split)
    files = sorted(glob.glob(pattern)) if "://" not in pattern else tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"dataset_dir: no {split} TFRecords match {pattern}")
    names = list(class_names or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise ValueError(
            f"class_names: {len(names)} names given for num_classes={num_classes}: {names}"
        )
    loaded = tf.saved_model.load(saved_model_dir)
    if "serve_tf_example" not in loaded.signatures:
        raise ValueError(
            f"{saved_model_dir}: the SavedModel has no serve_tf_example signature "
            f"(has {sorted(loaded.signatures)})"
        )
    serve = loaded.signatures["serve_tf_example"]
    compression = "GZIP" if files[0].endswith(".gz") or _is_gzip(files[0]) else None
    dataset = tf.data.TFRecordDataset(files, compression_type=compression).batch(batch_size)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    count = 0
    for serialized in dataset:
        if 0 <= max_examples <= count:
            break
        if max_examples >= 0:
            serialized = serialized[: max_examples - count]
        pred = serve(serialized)["predicted_mask"].numpy()
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
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "metrics.json"), metrics)
    write_json_atomic(os.path.join(output_dir, "confusion_matrix.json"), cm.tolist())
    write_text_atomic(os.path.join(output_dir, "report.md"), markdown_report(metrics, names, cm))
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


def _is_gzip(path: str) -> bool:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"
