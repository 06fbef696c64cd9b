"""What every evaluate step shares: feeding a split's TFRecords to the exported SavedModel and
writing the results atomically.

Evaluation goes through the SavedModel's `serve_tf_example` signature, i.e. exactly the artifact
that gets pushed, preprocessing included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from components.common.io import split_pattern, write_json_atomic, write_text_atomic


def read_class_names(dataset_dir: str) -> list[str] | None:
    """The `class_names` the convert step stored in the dataset's summary.json, if any."""
    import tensorflow as tf

    path = os.path.join(dataset_dir, "summary.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        names = json.load(f).get("class_names")
    return list(names) if names else None


def resolve_class_names(
    class_names: Sequence[str] | None, dataset_dir: str, num_classes: int
) -> list[str]:
    """The given names, else the dataset's, else the ids; checked against `num_classes`.

    Raises:
      ValueError: the count differs from `num_classes`.
    """
    names = list(class_names or read_class_names(dataset_dir) or map(str, range(num_classes)))
    if len(names) != num_classes:
        raise ValueError(
            f"class_names: {len(names)} names given for num_classes={num_classes}: {names}"
        )
    return names


def is_gzip(path: str) -> bool:
    """Whether a TFRecord file is GZIP-compressed (by suffix, else by its magic bytes)."""
    import tensorflow as tf

    if path.endswith(".gz"):
        return True
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def served_batches(
    saved_model_dir: str,
    dataset_dir: str,
    split: str = "validation",
    batch_size: int = 8,
    max_examples: int = -1,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Yields (serialized tf.Examples [b], the SavedModel's outputs for them) per batch.

    Raises:
      FileNotFoundError: no TFRecords for the split.
      ValueError: the SavedModel has no `serve_tf_example` signature.
    """
    import tensorflow as tf

    pattern = split_pattern(dataset_dir, split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"dataset_dir: no {split} TFRecords match {pattern}")
    loaded = tf.saved_model.load(saved_model_dir)
    if "serve_tf_example" not in loaded.signatures:
        raise ValueError(
            f"{saved_model_dir}: the SavedModel has no serve_tf_example signature "
            f"(has {sorted(loaded.signatures)})"
        )
    serve = loaded.signatures["serve_tf_example"]
    compression = "GZIP" if is_gzip(files[0]) else None
    dataset = tf.data.TFRecordDataset(files, compression_type=compression).batch(batch_size)
    count = 0
    for serialized in dataset:
        if 0 <= max_examples <= count:
            return
        if max_examples >= 0:
            serialized = serialized[: max_examples - count]
        count += int(serialized.shape[0])
        yield serialized, serve(serialized)


def write_results(
    output_dir: str, metrics: dict[str, Any], confusion: np.ndarray, report: str
) -> None:
    """metrics.json, confusion_matrix.json and report.md under `output_dir`, each atomically."""
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "metrics.json"), metrics)
    write_json_atomic(os.path.join(output_dir, "confusion_matrix.json"), confusion.tolist())
    write_text_atomic(os.path.join(output_dir, "report.md"), report)
