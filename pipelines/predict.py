"""`vision-pipelines predict MODEL IMAGE...`: run an exported SavedModel on image files.

Detection models get their boxes drawn into `<output>/<image stem>.png`; classifiers print the
top classes; segmentation models get their predicted mask blended over the image. Every
prediction is also printed as one JSON line per image (original-image pixels).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.common.io import write_bytes_atomic


class PredictError(ValueError):
    """A model or image that cannot be used, with the path and what was expected."""


def load_class_names(model_dir: str, given: Sequence[str] | None = None) -> list[str] | None:
    """`given`, else the `class_names.json` the exporter saved beside the model, else None."""
    from vision_core.serving.export_saved_model_lib import CLASS_NAMES_FILE

    if given:
        return list(given)
    path = os.path.join(model_dir, CLASS_NAMES_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return list(json.load(f))
    return None


def _read_image(path: str) -> tuple[bytes, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            encoded = f.read()
    except OSError as err:
        raise PredictError(f"{path}: cannot read the image ({err.strerror})") from err
    try:
        with Image.open(io.BytesIO(encoded)) as im:
            if im.format not in ("JPEG", "PNG", "BMP", "GIF"):
                raise PredictError(
                    f"{path}: expected a JPEG, PNG, BMP or GIF image, got {im.format}"
                )
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise PredictError(f"{path}: not a readable image ({err})") from err
    return encoded, rgb


def predict(
    model_dir: str,
    images: Sequence[str],
    output_dir: str,
    min_score: float = 0.3,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Runs the SavedModel's `serve_image_bytes` signature on each image.

    Returns:
      Per image: {'image', 'output' (drawn PNG, when written), and the task's predictions}.

    Raises:
      PredictError: a model folder without a SavedModel or its signature, or a bad image.
    """
    import tensorflow as tf

    from vision_core.utils import visualization

    if not tf.saved_model.contains_saved_model(model_dir):
        raise PredictError(f"{model_dir}: no SavedModel here (expected saved_model.pb)")
    loaded = tf.saved_model.load(model_dir)
    if "serve_image_bytes" not in loaded.signatures:
        raise PredictError(
            f"{model_dir}: the SavedModel has no serve_image_bytes signature "
            f"(has {sorted(loaded.signatures)}); export it with vision_core"
        )
    serve = loaded.signatures["serve_image_bytes"]
    names = load_class_names(model_dir, class_names)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for path in images:
        encoded, rgb = _read_image(path)
        outputs = {k: v.numpy()[0] for k, v in serve(tf.constant([encoded])).items()}
        stem = os.path.splitext(os.path.basename(path))[0]
        out_path = os.path.join(output_dir, f"{stem}.png")
        record: dict[str, Any] = {"image": path}
        if "detection_boxes" in outputs:
            n = int(outputs["num_detections"])
            keep = outputs["detection_scores"][:n] >= min_score
            boxes = outputs["detection_boxes"][:n][keep]
            classes = outputs["detection_classes"][:n][keep].astype(int)
            scores = outputs["detection_scores"][:n][keep]
            drawn = visualization.draw_boxes(rgb, boxes, classes, scores, class_names=names)
            record["detections"] = [
                {
                    "box": [round(float(v), 2) for v in box],
                    "class": visualization.class_label(int(c), names),
                    "class_id": int(c),
                    "score": round(float(s), 4),
                }
                for box, c, s in zip(boxes, classes, scores)
            ]
        elif "predicted_mask" in outputs:
            mask = outputs["predicted_mask"][: rgb.shape[0], : rgb.shape[1]]
            drawn = visualization.overlay_mask(rgb, mask)
            ids, counts = np.unique(mask[mask >= 0], return_counts=True)
            record["pixels"] = {
                visualization.class_label(int(i), names): int(c) for i, c in zip(ids, counts)
            }
        elif "probs" in outputs:
            order = np.argsort(-outputs["probs"])[:5]
            record["top_classes"] = [
                {
                    "class": visualization.class_label(int(i), names),
                    "class_id": int(i),
                    "probability": round(float(outputs["probs"][i]), 4),
                }
                for i in order
            ]
            results.append(record)
            continue
        else:
            raise PredictError(f"{model_dir}: unrecognised outputs {sorted(outputs)}")
        write_bytes_atomic(out_path, visualization.png_bytes(drawn))
        record["output"] = out_path
        results.append(record)
    return results
