"""Serving module for detectors (Model Garden's `serving/detection.py`, RetinaNet).

The exported model takes raw images, resizes and pads them as evaluation does, runs the network
and its detection generator, and returns detections in **original-image pixels**:
  * `detection_boxes` [B, N, 4] float32 (ymin, xmin, ymax, xmax; normalized to [0, 1] with
    `export_config.output_normalized_coordinates`),
  * `detection_scores` [B, N] float32, `detection_classes` [B, N] int32 (float32 on request),
  * `num_detections` [B] int32 (float32 on request): rows past it are padding,
  * `image_info` [B, 4, 2] (Model Garden's layout).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.ops import anchor, preprocess_ops
from vision_core.serving import export_base


class DetectionModule(export_base.ExportModule):
    """Wraps a `RetinaNetModel` with preprocessing and box rescaling for serving."""

    def __init__(
        self,
        model: tf_keras.Model,
        input_image_size: list[int],
        min_level: int,
        max_level: int,
        num_scales: int,
        aspect_ratios: list[float],
        anchor_size: float,
        num_channels: int = 3,
        output_normalized_coordinates: bool = False,
        cast_num_detections_to_float: bool = False,
        cast_detection_classes_to_float: bool = False,
    ):
        """Initializes the module.

        Args:
          model: a RetinaNet model (inference mode returns detections).
          input_image_size: [height, width] images are resized into (then padded to a multiple
            of 2**max_level).
          min_level: finest anchor level.
          max_level: coarsest anchor level.
          num_scales: anchor scales per octave.
          aspect_ratios: anchor aspect ratios.
          anchor_size: anchor side over the level's stride.
          num_channels: image channels (3: RGB).
          output_normalized_coordinates: boxes as fractions of the original image size.
          cast_num_detections_to_float: `num_detections` as float32 (for TF Serving clients
            that expect it).
          cast_detection_classes_to_float: `detection_classes` as float32.
        """
        super().__init__(model, input_image_size, num_channels)
        padded = preprocess_ops.compute_padded_size(self._size, 2**max_level)
        self._padded_size = [int(s) for s in padded]
        # The padded size is fixed, so the anchors are constants of the exported graph.
        self._anchors = {
            level: tf.constant(boxes, tf.float32)
            for level, boxes in anchor.build_anchor_generator(
                min_level=min_level,
                max_level=max_level,
                num_scales=num_scales,
                aspect_ratios=list(aspect_ratios),
                anchor_size=anchor_size,
            )(self._padded_size).items()
        }
        self._normalized = output_normalized_coordinates
        self._float_count = cast_num_detections_to_float
        self._float_classes = cast_detection_classes_to_float

    def preprocess_one(self, image: tf.Tensor):
        image = preprocess_ops.normalize_image(image)
        image, image_info = preprocess_ops.resize_and_crop_image(
            image, self._size, padded_size=self._padded_size, aug_scale_min=1.0, aug_scale_max=1.0
        )
        image.set_shape(self._padded_size + [self._channels])
        return image, image_info

    def preprocess_signature(self):
        return (
            tf.TensorSpec(self._padded_size + [self._channels], tf.float32),
            tf.TensorSpec([4, 2], tf.float32),
        )

    def postprocess(self, preprocessed) -> dict[str, tf.Tensor]:
        images, image_info = preprocessed
        batch = tf.shape(images)[0]
        anchors = {k: tf.tile(v[None], [batch, 1, 1, 1]) for k, v in self._anchors.items()}
        outputs = self.model(
            images, image_shape=image_info[:, 1, :], anchor_boxes=anchors, training=False
        )
        boxes = tf.cast(outputs["detection_boxes"], tf.float32)
        # Padded-input pixels → original pixels: undo the resize scale (no crop at eval).
        scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])
        boxes = boxes / tf.maximum(scale, 1e-12)
        original = tf.tile(image_info[:, 0:1, :], [1, 1, 2])
        boxes = tf.clip_by_value(boxes, 0.0, original)
        if self._normalized:
            boxes = boxes / tf.maximum(original, 1.0)
        count = tf.cast(outputs["num_detections"], tf.int32)
        classes = tf.cast(outputs["detection_classes"], tf.int32)
        # Padding rows beyond num_detections are zeroed so clients can't misread them.
        valid = tf.sequence_mask(count, tf.shape(boxes)[1])
        boxes = tf.where(valid[..., None], boxes, 0.0)
        scores = tf.where(valid, tf.cast(outputs["detection_scores"], tf.float32), 0.0)
        classes = tf.where(valid, classes, 0)
        return {
            "detection_boxes": boxes,
            "detection_scores": scores,
            "detection_classes": tf.cast(classes, tf.float32) if self._float_classes else classes,
            "num_detections": tf.cast(count, tf.float32) if self._float_count else count,
            "image_info": image_info,
        }


def build_module(
    model: tf_keras.Model, params: Any, input_image_size: list[int], num_channels: int = 3
) -> DetectionModule:
    """The serving module for a RetinaNet experiment config."""
    model_cfg = params.task.model
    export = params.task.export_config
    return DetectionModule(
        model,
        input_image_size,
        min_level=model_cfg.min_level,
        max_level=model_cfg.max_level,
        num_scales=model_cfg.anchor.num_scales,
        aspect_ratios=list(model_cfg.anchor.aspect_ratios),
        anchor_size=model_cfg.anchor.anchor_size,
        num_channels=num_channels,
        output_normalized_coordinates=export.output_normalized_coordinates,
        cast_num_detections_to_float=export.cast_num_detections_to_float,
        cast_detection_classes_to_float=export.cast_detection_classes_to_float,
    )
