"""Image classification input (Model Garden's `official.vision.dataloaders.classification_input`).

`Decoder` parses a tf.Example holding an encoded image (`image/encoded`) and an integer class id
(`image/class/label`); `Parser` turns it into

    image: [H, W, 3] normalized with the ImageNet mean / stddev (dtype as configured)
    label: int32 scalar

Training crops a random window (Inception-style area and aspect-ratio jitter), flips at random
and resizes to `output_size`; evaluation takes a centred square crop and resizes. The serving
module (`vision_core.serving.image_classification`) calls `Parser.serving_fn`, the same
evaluation preprocessing, so a served model sees exactly what it was evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from vision_core.dataloaders import tf_example_keys as keys
from vision_core.ops import preprocess_ops

DEFAULT_IMAGE_FIELD_KEY = keys.IMAGE_ENCODED
DEFAULT_LABEL_FIELD_KEY = keys.IMAGE_CLASS_LABEL
_DTYPES = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}
_RESIZE_METHODS = (
    "bilinear",
    "nearest",
    "bicubic",
    "area",
    "lanczos3",
    "lanczos5",
    "gaussian",
    "mitchellcubic",
)


class Decoder:
    """Parses a classification tf.Example into {image key: encoded bytes, label key: int64}.

    A record without a label gets -1, which the `Parser` rejects with the key's name.
    """

    def __init__(
        self,
        image_field_key: str = DEFAULT_IMAGE_FIELD_KEY,
        label_field_key: str = DEFAULT_LABEL_FIELD_KEY,
        keys_to_features: dict[str, Any] | None = None,
    ):
        """Initializes the decoder.

        Args:
          image_field_key: tf.Example key of the encoded image.
          label_field_key: tf.Example key of the integer class id.
          keys_to_features: a complete `tf.io.parse_single_example` spec to use instead.
        """
        self._keys_to_features = keys_to_features or {
            image_field_key: tf.io.FixedLenFeature((), tf.string, default_value=""),
            label_field_key: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
        }

    def decode(self, serialized_example: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns the parsed features of one serialized tf.Example."""
        return tf.io.parse_single_example(serialized_example, self._keys_to_features)


def _check_sizes(output_size: Sequence[int]) -> list[int]:
    size = [int(s) for s in list(output_size)[:2]] if output_size is not None else []
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output_size: expected [height, width], got {output_size!r}")
    return size


class Parser:
    """Turns decoded classification features into `(image, label)` for training or evaluation."""

    def __init__(
        self,
        output_size: Sequence[int],
        num_classes: int,
        image_field_key: str = DEFAULT_IMAGE_FIELD_KEY,
        label_field_key: str = DEFAULT_LABEL_FIELD_KEY,
        decode_jpeg_only: bool = True,
        aug_rand_hflip: bool = True,
        aug_crop: bool = True,
        dtype: str = "float32",
        crop_area_range: Sequence[float] = (0.08, 1.0),
        center_crop_fraction: float = preprocess_ops.CENTER_CROP_FRACTION,
        tf_resize_method: str = "bilinear",
    ):
        """Initializes the parser.

        Args:
          output_size: [height, width] of the model input.
          num_classes: labels must lie in [0, num_classes).
          image_field_key: key of the encoded image in the decoded dict.
          label_field_key: key of the class id in the decoded dict.
          decode_jpeg_only: decode JPEGs only inside the crop window (faster); other formats
            are decoded whole and then cropped.
          aug_rand_hflip: flip training images left-right at random.
          aug_crop: training takes a random crop, evaluation a centred crop; False keeps the
            whole image both ways.
          dtype: output image dtype: 'float32', 'float16' or 'bfloat16'.
          crop_area_range: (min, max) area of the random training crop, as a fraction of the
            image.
          center_crop_fraction: side of the evaluation crop over the image's short side.
          tf_resize_method: `tf.image.resize` method.

        Raises:
          ValueError: an argument outside its allowed values (the message names it).
        """
        self._output_size = _check_sizes(output_size)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
        if tf_resize_method not in _RESIZE_METHODS:
            raise ValueError(
                f"tf_resize_method: expected one of {', '.join(_RESIZE_METHODS)}, "
                f"got {tf_resize_method!r}"
            )
        area = [float(a) for a in crop_area_range]
        if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0:
            raise ValueError(
                "crop_area_range: expected (min, max) with 0 < min <= max <= 1, "
                f"got {crop_area_range!r}"
            )
        if not 0.0 < center_crop_fraction <= 1.0:
            raise ValueError(
                f"center_crop_fraction: expected a value in (0, 1], got {center_crop_fraction}"
            )
        self._num_classes = int(num_classes)
        self._image_field_key = image_field_key
        self._label_field_key = label_field_key
        self._decode_jpeg_only = decode_jpeg_only
        self._aug_rand_hflip = aug_rand_hflip
        self._aug_crop = aug_crop
        self._dtype = _DTYPES[dtype]
        self._crop_area_range = tuple(area)
        self._center_crop_fraction = center_crop_fraction
        self._tf_resize_method = tf_resize_method

    def parse_fn(self, is_training: bool):
        """Returns the function for `dataset.map`: training or evaluation parsing."""

        def parse(decoded_tensors):
            if is_training:
                return self._parse_train_data(decoded_tensors)
            return self._parse_eval_data(decoded_tensors)

        return parse

    def __call__(self, decoded_tensors, is_training: bool = True):
        return self.parse_fn(is_training)(decoded_tensors)

    # ------------------------------------------------------------------------------ labels
    def _parse_label(self, decoded_tensors) -> tf.Tensor:
        label = tf.cast(decoded_tensors[self._label_field_key], tf.int32)
        check = tf.debugging.assert_less(
            tf.cast(label, tf.uint32),  # -1 (missing) wraps to a huge value and fails too.
            tf.cast(self._num_classes, tf.uint32),
            message=(
                f"{self._label_field_key}: the label is missing or outside "
                f"[0, num_classes={self._num_classes})"
            ),
        )
        with tf.control_dependencies([check]):
            return tf.identity(label)

    # ------------------------------------------------------------------------------ images
    def _decode_window(self, image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
        """Decodes the window `window_fn(image_shape)` of the image as uint8 [h, w, 3]."""

        def decode_whole():
            image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            offset, size = window_fn(tf.shape(image))
            return preprocess_ops.crop_to_window(image, offset, size)

        if not self._decode_jpeg_only:
            return decode_whole()

        def decode_jpeg_window():
            offset, size = window_fn(tf.image.extract_jpeg_shape(image_bytes))
            image = preprocess_ops.decode_and_crop_jpeg(image_bytes, offset, size)
            image.set_shape([None, None, 3])
            return image

        return tf.cond(tf.io.is_jpeg(image_bytes), decode_jpeg_window, decode_whole)

    def _train_window(self, image_shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if not self._aug_crop:
            return tf.zeros([2], tf.int32), tf.cast(image_shape[:2], tf.int32)
        offset, size = preprocess_ops.random_crop_window(
            image_shape, area_range=self._crop_area_range
        )
        # A draw that failed every attempt returns the whole image; take the evaluation crop
        # instead so training still sees some scale change (as Model Garden does).
        center_offset, center_size = preprocess_ops.center_crop_window(
            image_shape, self._center_crop_fraction
        )
        whole = tf.reduce_all(tf.equal(size, tf.cast(image_shape[:2], tf.int32)))
        return (
            tf.where(whole, center_offset, offset),
            tf.where(whole, center_size, size),
        )

    def _eval_window(self, image_shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if not self._aug_crop:
            return tf.zeros([2], tf.int32), tf.cast(image_shape[:2], tf.int32)
        return preprocess_ops.center_crop_window(image_shape, self._center_crop_fraction)

    def _finish(self, image: tf.Tensor) -> tf.Tensor:
        """Resizes a uint8 crop to `output_size` and normalizes it (float [0, 255] statistics)."""
        image = tf.image.resize(image, self._output_size, method=self._tf_resize_method)
        image.set_shape(self._output_size + [3])
        image = preprocess_ops.normalize_scaled_float_image(
            image, preprocess_ops.MEAN_RGB, preprocess_ops.STDDEV_RGB
        )
        return tf.cast(image, self._dtype)

    def parse_train_image(self, decoded_tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """The augmented, resized and normalized training image."""
        image = self._decode_window(decoded_tensors[self._image_field_key], self._train_window)
        if self._aug_rand_hflip:
            image = tf.image.random_flip_left_right(image)
        return self._finish(image)

    def parse_eval_image(self, decoded_tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """The centre-cropped (if `aug_crop`), resized and normalized evaluation image."""
        image = self._decode_window(decoded_tensors[self._image_field_key], self._eval_window)
        return self._finish(image)

    def _parse_train_data(self, decoded_tensors) -> tuple[tf.Tensor, tf.Tensor]:
        return self.parse_train_image(decoded_tensors), self._parse_label(decoded_tensors)

    def _parse_eval_data(self, decoded_tensors) -> tuple[tf.Tensor, tf.Tensor]:
        return self.parse_eval_image(decoded_tensors), self._parse_label(decoded_tensors)

    def serving_fn(self, image: tf.Tensor) -> tf.Tensor:
        """This parser's evaluation preprocessing of one decoded [H, W, 3] image, for serving."""
        offset, size = self._eval_window(tf.shape(image))
        return self._finish(preprocess_ops.crop_to_window(image, offset, size))

    @classmethod
    def inference_fn(
        cls, image: tf.Tensor, input_image_size: Sequence[int], num_channels: int = 3
    ) -> tf.Tensor:
        """Model Garden's default serving preprocessing: centre crop, bilinear resize, normalize.

        Args:
          image: one decoded [H, W, num_channels] image.
          input_image_size: [height, width] of the model input.
          num_channels: channels of the image.
        """
        size = _check_sizes(input_image_size)
        image = preprocess_ops.center_crop_image(tf.cast(image, tf.float32))
        image = tf.image.resize(image, size, method="bilinear")
        image = preprocess_ops.normalize_scaled_float_image(
            image, preprocess_ops.MEAN_RGB, preprocess_ops.STDDEV_RGB
        )
        image.set_shape(size + [num_channels])
        return image
