"""Evaluates an exported image classifier exactly as it will be served.

The SavedModel gets the encoded images stored in the TFRecords through its `serve_tf_example`
signature (decode, crop, resize and normalize inside the model), and its `logits` are compared
with `image/class/label`. Top-1 / top-k and per-class accuracy come from NumPy counts,
independent of the training-time Keras metrics, so the figure is that of the artifact that gets
pushed, preprocessing included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.evaluate.served import resolve_class_names, served_batches, write_results

logger = logging.getLogger(__name__)


def top_k_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per example, whether the label is among the k highest logits.

    Ties at the k-th place count as hits, as `tf.math.in_top_k` does.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    target = logits[np.arange(len(labels)), labels]
    # Strictly higher logits than the label's: fewer than k of them means a hit.
    higher = (logits > target[:, None]).sum(axis=1)
    return higher < k


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts (rows: true class, columns: predicted class)."""
    idx = np.asarray(labels, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def run(
    saved_model_dir: str,
    dataset_dir: str,
    output_dir: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    split: str = "validation",
    batch_size: int = 32,
    max_examples: int = -1,
) -> dict[str, Any]:
    """Computes top-1 / top-k / per-class accuracy; writes metrics.json, report.md and the
    confusion matrix.

    Args:
      saved_model_dir: the exported classifier (with a `serve_tf_example` signature).
      dataset_dir: the convert step's output folder.
      output_dir: where metrics.json, confusion_matrix.json and report.md go.
      num_classes: the model's class count.
      class_names: names of the classes in id order; default the dataset summary's
        `class_names`, else the ids.
      top_k: k of the top-k accuracy (reported as `top_{k}_accuracy`).
      split: the split to evaluate.
      batch_size: examples per SavedModel call.
      max_examples: stop after this many examples (-1: all).

    Returns:
      The metrics: `top_1_accuracy`, `top_{k}_accuracy`, `accuracy/<class name>` (None for a
      class absent from the split), `num_examples`.

    Raises:
      FileNotFoundError: no TFRecords for the split.
      ValueError: bad arguments, a SavedModel without the signature, labels outside
        [0, num_classes), or an empty split.
    """
    import tensorflow as tf

    from vision_core.dataloaders import tf_example_keys as keys

    if num_classes < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k: expected a value in [1, num_classes={num_classes}], got {top_k}")
    names = resolve_class_names(class_names, dataset_dir, num_classes)
    all_logits, all_labels = [], []
    count = 0
    for serialized, outputs in served_batches(
        saved_model_dir, dataset_dir, split, batch_size, max_examples
    ):
        parsed = tf.io.parse_example(
            serialized, {keys.IMAGE_CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64, -1)}
        )
        labels = parsed[keys.IMAGE_CLASS_LABEL].numpy()
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f"{split} record {count + int(np.argmax(bad))} in {dataset_dir}: "
                f"{keys.IMAGE_CLASS_LABEL} {int(labels[bad][0])} is missing or outside "
                f"[0, num_classes={num_classes})"
            )
        all_logits.append(outputs["logits"].numpy())
        all_labels.append(labels)
        count += len(labels)
    if count == 0:
        raise ValueError(f"dataset_dir: the {split} TFRecords in {dataset_dir} hold no example")
    logits = np.concatenate(all_logits)
    labels = np.concatenate(all_labels)
    metrics = classification_metrics(logits, labels, names, top_k)
    cm = confusion_matrix(labels, logits.argmax(axis=1), num_classes)
    write_results(output_dir, metrics, cm, markdown_report(metrics, names, cm, top_k))
    logger.info("Evaluated %d examples: top_1_accuracy=%.4f", count, metrics["top_1_accuracy"])
    return metrics


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, names: Sequence[str], top_k: int
) -> dict[str, Any]:
    """Top-1, top-k and per-class (recall) accuracy of logits [N, C] against labels [N].

    Top-1 is the argmax (ties go to the lower id) as in Keras' `CategoricalAccuracy`; top-k
    counts ties at the k-th place as hits as in `TopKCategoricalAccuracy`.
    """
    top1 = np.asarray(logits).argmax(axis=1) == np.asarray(labels)
    metrics: dict[str, Any] = {
        "top_1_accuracy": float(top1.mean()),
        f"top_{top_k}_accuracy": float(top_k_correct(logits, labels, top_k).mean()),
        "num_examples": int(len(labels)),
    }
    for class_id, name in enumerate(names):
        members = labels == class_id
        metrics[f"accuracy/{name}"] = float(top1[members].mean()) if members.any() else None
    return metrics


def markdown_report(
    metrics: dict[str, Any], names: Sequence[str], cm: np.ndarray, top_k: int
) -> str:
    """A Markdown summary: overall accuracy, then one row per class."""
    lines = [
        "# Classification evaluation",
        "",
        f"- examples: {metrics['num_examples']}",
        f"- top-1 accuracy: **{metrics['top_1_accuracy']:.4f}**",
        f"- top-{top_k} accuracy: {metrics[f'top_{top_k}_accuracy']:.4f}",
        "",
        "| class | accuracy | examples | predicted as this class | precision |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, name in enumerate(names):
        value = metrics.get(f"accuracy/{name}")
        shown = "n/a (absent)" if value is None else f"{value:.4f}"
        predicted = int(cm[:, i].sum())
        precision = f"{cm[i, i] / predicted:.4f}" if predicted else "n/a"
        lines.append(f"| {name} | {shown} | {int(cm[i].sum())} | {predicted} | {precision} |")
    return "\n".join(lines) + "\n"
