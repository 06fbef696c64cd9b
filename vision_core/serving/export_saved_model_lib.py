"""SavedModel export (Model Garden's `serving/export_saved_model_lib`).

`export_inference_graph` picks the serving module by the task config: image classification
gets `vision_core.serving.image_classification.ClassificationModule` (`logits`, `probs`,
`classes`), RetinaNet `vision_core.serving.detection.DetectionModule` (boxes, classes, scores,
num_detections in original-image pixels); semantic segmentation gets `SegmentationExportModule`,
below.

The exported model takes raw images, so callers never re-implement the training preprocessing:
  * `image_bytes`: a batch of encoded JPEG/PNG strings, shape [B];
  * `image_tensor`: uint8 images [B, H, W, 3];
  * `tf_example`: serialized tf.Examples carrying `image/encoded`.
Each returns `logits` at the model's input size, `image_info` ([B, 4, 2], Model Garden's layout),
and `predicted_mask` (int32) in original-image pixels. Images of different sizes in one batch get
masks padded to the largest with -1; a batch of one is exactly the image's size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.hyperparams import save_yaml
from vision_core.ops import preprocess_ops
from vision_core.serving import export_base
from vision_core.serving.export_base import INPUT_TYPES  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

# Written beside the SavedModel when the exporter knows the class names.
CLASS_NAMES_FILE = "class_names.json"


class SegmentationExportModule(export_base.ExportModule):
    """Wraps a segmentation model with preprocessing and postprocessing for serving."""

    def __init__(
        self,
        model: tf_keras.Model,
        input_image_size: list[int],
        num_channels: int = 3,
        rescale_output: bool = True,
    ):
        super().__init__(model, input_image_size, num_channels)
        self._rescale = rescale_output

    def preprocess_one(self, image: tf.Tensor):
        image = tf.image.convert_image_dtype(image, tf.uint8)  # no-op for uint8
        image = preprocess_ops.normalize_image(image)
        image, image_info = preprocess_ops.resize_and_crop_image(
            image, self._size, padded_size=self._size, aug_scale_min=1.0, aug_scale_max=1.0
        )
        image.set_shape(self._size + [self._channels])
        return image, image_info

    def preprocess_signature(self):
        return (super().preprocess_signature(), tf.TensorSpec([4, 2], tf.float32))

    def postprocess(self, preprocessed) -> dict[str, tf.Tensor]:
        processed, image_info = preprocessed
        outputs = self.model(processed, training=False)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        logits = tf.cast(logits, tf.float32)
        logits = tf.image.resize(logits, self._size, method="bilinear")
        result = {"logits": logits, "image_info": image_info}
        if not self._rescale:
            result["predicted_mask"] = tf.argmax(logits, -1, output_type=tf.int32)
            return result
        original = tf.cast(tf.round(image_info[:, 0, :]), tf.int32)
        max_h = tf.reduce_max(original[:, 0])
        max_w = tf.reduce_max(original[:, 1])

        def to_original(args):
            one_logits, info = args
            scaled = tf.cast(tf.round(info[1]), tf.int32)
            offset = tf.cast(tf.round(info[3]), tf.int32)
            size = tf.cast(tf.round(info[0]), tf.int32)
            valid = one_logits[offset[0] : offset[0] + scaled[0], offset[1] : offset[1] + scaled[1]]
            resized = tf.image.resize(valid, size, method="bilinear")
            mask = tf.argmax(resized, -1, output_type=tf.int32)
            return tf.pad(mask, [[0, max_h - size[0]], [0, max_w - size[1]]], constant_values=-1)

        result["predicted_mask"] = tf.map_fn(
            to_original, (logits, image_info), fn_output_signature=tf.int32
        )
        return result


def build_export_module(
    model: tf_keras.Model, params: Any, input_image_size: list[int], num_channels: int = 3
) -> tf.Module:
    """The serving module for `params.task`'s type (classification, detection, segmentation)."""
    from vision_core.configs.image_classification import ImageClassificationTask
    from vision_core.configs.retinanet import RetinaNetTask

    if isinstance(params.task, ImageClassificationTask):
        from vision_core.serving import image_classification

        return image_classification.build_module(model, params, input_image_size, num_channels)
    if isinstance(params.task, RetinaNetTask):
        from vision_core.serving import detection

        return detection.build_module(model, params, input_image_size, num_channels)
    rescale = getattr(getattr(params.task, "export_config", None), "rescale_output", True)
    return SegmentationExportModule(model, input_image_size, num_channels, rescale)


def export_inference_graph(
    input_type: str,
    batch_size: int | None,
    input_image_size: list[int],
    params: Any,
    checkpoint_path: str | None,
    export_dir: str,
    model: tf_keras.Model | None = None,
    num_channels: int = 3,
    class_names: list[str] | None = None,
) -> str:
    """Builds (or takes) the model, restores weights and writes a SavedModel to `export_dir`.

    `class_names` (by class id), when given, are saved as `class_names.json` beside the model so
    `vision-pipelines predict` can label its drawings.

    The SavedModel is written to a temporary sibling folder and renamed into place, so a failed
    export never leaves a directory that looks like a model. `params.yaml` is saved beside it.
    Returns `export_dir`.
    """
    del batch_size  # Signatures accept any batch size.
    if model is None:
        from vision_core.tasks.factory import get_task

        model = get_task(params.task).build_model()
    if checkpoint_path:
        path = checkpoint_path
        if tf.io.gfile.isdir(path):
            path = tf.train.latest_checkpoint(path)
            if path is None:
                raise FileNotFoundError(f"checkpoint_path: no checkpoint in {checkpoint_path}")
        tf.train.Checkpoint(model=model).read(
            path
        ).expect_partial().assert_existing_objects_matched()
        logger.info("Restored model weights from %s", path)
    module = build_export_module(model, params, input_image_size, num_channels)
    parent = os.path.dirname(os.path.abspath(export_dir)) if "://" not in export_dir else None
    if parent is None:
        tmp = f"{export_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    else:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures(input_type))
        save_yaml(params, os.path.join(tmp, "params.yaml"))
        if class_names:
            with tf.io.gfile.GFile(os.path.join(tmp, CLASS_NAMES_FILE), "w") as f:
                f.write(json.dumps(list(class_names)))
        if tf.io.gfile.exists(export_dir) and not tf.io.gfile.listdir(export_dir):
            tf.io.gfile.rmtree(export_dir)  # An empty placeholder (e.g. a KFP output path).
        if tf.io.gfile.exists(export_dir):
            raise FileExistsError(f"export_dir: {export_dir} already exists; choose a new folder")
        tf.io.gfile.rename(tmp, export_dir)
    finally:
        if tf.io.gfile.exists(tmp):
            if parent is None:
                tf.io.gfile.rmtree(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Exported SavedModel (%s) to %s", input_type, export_dir)
    return export_dir
