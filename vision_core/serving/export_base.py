"""The serving module every task exports (Model Garden's `serving/export_base.ExportModule`).

A subclass says how one decoded image becomes model input (`preprocess_one`, with the spec of
what it returns) and how a batch of those becomes the outputs (`postprocess`). This class turns
that into three SavedModel signatures taking raw images, so callers never re-implement the
training preprocessing:
  * `image_tensor`: uint8 images [B, H, W, C] (one size per batch);
  * `image_bytes`: encoded JPEG/PNG strings [B] (sizes may differ);
  * `tf_example`: serialized tf.Examples carrying the encoded image.
`signatures(input_type)` gives `serving_default` for the chosen type plus `serve_<type>` for
every type, so one export serves all three.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.dataloaders import tf_example_keys as keys

INPUT_TYPES = ("image_tensor", "image_bytes", "tf_example")


class ExportModule(tf.Module):
    """Raw images in, task outputs out; subclasses fill in the per-task steps."""

    def __init__(
        self,
        model: tf_keras.Model,
        input_image_size: list[int],
        num_channels: int = 3,
        image_field_key: str = keys.IMAGE_ENCODED,
    ):
        """Initializes the module.

        Args:
          model: the Keras model to serve.
          input_image_size: [height, width] the model takes.
          num_channels: image channels (3: RGB).
          image_field_key: tf.Example key of the encoded image for the `tf_example` input.
        """
        super().__init__()
        self.model = model
        self._size = [int(s) for s in input_image_size[:2]]
        self._channels = num_channels
        self._image_field_key = image_field_key

    # --- what a task defines ---------------------------------------------------------------

    def preprocess_one(self, image: tf.Tensor) -> Any:
        """One uint8 image [H, W, C] → the model input (and any side information) for it."""
        raise NotImplementedError

    def preprocess_signature(self) -> Any:
        """The `tf.TensorSpec` structure `preprocess_one` returns."""
        return tf.TensorSpec(self._size + [self._channels], tf.float32)

    def postprocess(self, preprocessed: Any) -> dict[str, tf.Tensor]:
        """A batch of `preprocess_one` results → the signature's outputs."""
        raise NotImplementedError

    # --- shared plumbing -------------------------------------------------------------------

    def _decode(self, encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=self._channels, expand_animations=False)
        image.set_shape([None, None, self._channels])
        return image

    def _serve(self, fn: Any, elements: tf.Tensor) -> dict[str, tf.Tensor]:
        preprocessed = tf.map_fn(fn, elements, fn_output_signature=self.preprocess_signature())
        return self.postprocess(preprocessed)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)])
    def serve_image_tensor(self, images):
        images = tf.ensure_shape(images, [None, None, None, self._channels])
        return self._serve(self.preprocess_one, images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_image_bytes(self, image_bytes):
        return self._serve(lambda encoded: self.preprocess_one(self._decode(encoded)), image_bytes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_tf_example(self, serialized):
        parsed = tf.io.parse_example(
            serialized, {self._image_field_key: tf.io.FixedLenFeature([], tf.string)}
        )
        return self.serve_image_bytes(parsed[self._image_field_key])

    def signatures(self, input_type: str) -> dict[str, Any]:
        """`serving_default` for `input_type`, plus `serve_<type>` for every input type."""
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type: expected one of {INPUT_TYPES}, got {input_type!r}")
        fns = {
            "image_tensor": self.serve_image_tensor,
            "image_bytes": self.serve_image_bytes,
            "tf_example": self.serve_tf_example,
        }
        sigs = {"serving_default": fns[input_type].get_concrete_function()}
        for name, fn in fns.items():
            sigs[f"serve_{name}"] = fn.get_concrete_function()
        return sigs
