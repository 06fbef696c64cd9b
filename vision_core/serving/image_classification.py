"""Serving module for image classifiers (Model Garden's `serving/image_classification.py`).

The exported model takes raw images and applies the evaluation preprocessing itself (centre
crop when `validation_data.aug_crop`, resize, ImageNet normalization), through the same
`classification_input.Parser` the evaluation used, so served predictions equal evaluated ones:
  * `image_tensor`: uint8 images [B, H, W, 3] (one size per batch);
  * `image_bytes`: encoded JPEG/PNG strings [B] (sizes may differ);
  * `tf_example`: serialized tf.Examples carrying the encoded image.
Each returns `logits` [B, num_classes] (float32), `probs` (their softmax) and `classes` (int32
argmax).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.dataloaders import classification_input
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.serving import export_base


class ClassificationModule(export_base.ExportModule):
    """Wraps a classifier with preprocessing and softmax for serving."""

    def __init__(
        self,
        model: tf_keras.Model,
        input_image_size: list[int],
        parser: classification_input.Parser | None = None,
        num_channels: int = 3,
        image_field_key: str = keys.IMAGE_ENCODED,
    ):
        """Initializes the module.

        Args:
          model: a model mapping normalized images [B, H, W, 3] to logits [B, num_classes].
          input_image_size: [height, width] the model takes.
          parser: the parser whose evaluation preprocessing serving repeats; None gives Model
            Garden's default (centre crop of 0.875, bilinear resize).
          num_channels: image channels (3: RGB).
          image_field_key: tf.Example key of the encoded image for the `tf_example` input.
        """
        super().__init__(model, input_image_size, num_channels, image_field_key)
        self._parser = parser or classification_input.Parser(
            output_size=self._size, num_classes=1, aug_rand_hflip=False
        )

    def preprocess_one(self, image: tf.Tensor) -> tf.Tensor:
        image.set_shape([None, None, self._channels])
        return tf.cast(self._parser.serving_fn(image), tf.float32)

    def postprocess(self, preprocessed: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(self.model(preprocessed, training=False), tf.float32)
        return {
            "logits": logits,
            "probs": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }


def build_module(
    model: tf_keras.Model, params: Any, input_image_size: list[int], num_channels: int = 3
) -> ClassificationModule:
    """The serving module for an image classification experiment config."""
    task = params.task
    data = task.validation_data
    parser = classification_input.Parser(
        output_size=list(input_image_size[:2]),
        num_classes=max(int(task.model.num_classes), 1),
        image_field_key=data.image_field_key,
        aug_rand_hflip=False,
        aug_crop=data.aug_crop,
        center_crop_fraction=data.center_crop_fraction,
        tf_resize_method=data.tf_resize_method,
    )
    return ClassificationModule(
        model,
        input_image_size,
        parser=parser,
        num_channels=num_channels,
        image_field_key=data.image_field_key,
    )
