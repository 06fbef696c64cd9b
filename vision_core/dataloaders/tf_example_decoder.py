"""tf.Example decoder for detection and instance segmentation (Model Garden's
`official.vision.dataloaders.tf_example_decoder`).

The output dict has Model Garden's keys and dtypes, so Model Garden parsers can consume it:
`source_id`, `image`, `height`, `width`, `groundtruth_classes`, `groundtruth_is_crowd`,
`groundtruth_area`, `groundtruth_boxes` (+ `groundtruth_instance_masks`,
`groundtruth_instance_masks_png` with `include_mask`, `groundtruth_attributes` with
`attribute_names`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from vision_core.dataloaders import tf_example_keys as keys

# 22 bits: a float32 (23-bit mantissa) represents every id exactly, as Model Garden relies on.
_SOURCE_ID_BUCKETS = 2**22 - 1


def _generate_source_id(image_bytes: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(tf.strings.to_hash_bucket_fast(image_bytes, _SOURCE_ID_BUCKETS))


class TfExampleDecoder:
    """Decodes serialized tf.Examples holding an image and its objects."""

    def __init__(
        self,
        include_mask: bool = False,
        regenerate_source_id: bool = False,
        mask_binarize_threshold: float | None = None,
        attribute_names: Sequence[str] | None = None,
    ):
        """Initializes the decoder.

        Args:
          include_mask: also decode `image/object/mask` (one PNG per object).
          regenerate_source_id: always derive `source_id` from a hash of the encoded image,
            ignoring `image/source_id` (it is derived anyway when that feature is empty).
          mask_binarize_threshold: when set, instance masks become `mask > threshold` as 0/1.
          attribute_names: per-object integer attributes to decode from
            `image/object/attribute/<name>` into `groundtruth_attributes` {name: int64 [N, 1]}.
        """
        self._include_mask = include_mask
        self._regenerate_source_id = regenerate_source_id
        self._mask_binarize_threshold = mask_binarize_threshold
        self._keys_to_features = {
            keys.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
            keys.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, -1),
            keys.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, -1),
            keys.OBJECT_BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
            keys.OBJECT_BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
            keys.OBJECT_BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
            keys.OBJECT_BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
            keys.OBJECT_CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
            keys.OBJECT_AREA: tf.io.VarLenFeature(tf.float32),
            keys.OBJECT_IS_CROWD: tf.io.VarLenFeature(tf.int64),
        }
        self._attribute_names = list(attribute_names or [])
        for name in self._attribute_names:
            self._keys_to_features[keys.OBJECT_ATTRIBUTE_PREFIX + name] = tf.io.VarLenFeature(
                tf.int64
            )
        if include_mask:
            self._keys_to_features[keys.OBJECT_MASK] = tf.io.VarLenFeature(tf.string)
        if not regenerate_source_id:
            # Model Garden requires the feature when it is not regenerating the id.
            self._keys_to_features[keys.IMAGE_SOURCE_ID] = tf.io.FixedLenFeature((), tf.string)

    def _decode_image(self, parsed: dict[str, tf.Tensor]) -> tf.Tensor:
        image = tf.io.decode_image(parsed[keys.IMAGE_ENCODED], channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    def _decode_boxes(self, parsed: dict[str, tf.Tensor]) -> tf.Tensor:
        # Model Garden's box order: [ymin, xmin, ymax, xmax], normalized.
        return tf.stack(
            [
                parsed[keys.OBJECT_BBOX_YMIN],
                parsed[keys.OBJECT_BBOX_XMIN],
                parsed[keys.OBJECT_BBOX_YMAX],
                parsed[keys.OBJECT_BBOX_XMAX],
            ],
            axis=-1,
        )

    def _decode_areas(self, parsed: dict[str, tf.Tensor]) -> tf.Tensor:
        """The stored areas, or box areas in pixels when the record has none."""
        height = tf.cast(parsed[keys.IMAGE_HEIGHT], tf.float32)
        width = tf.cast(parsed[keys.IMAGE_WIDTH], tf.float32)
        box_areas = (
            (parsed[keys.OBJECT_BBOX_XMAX] - parsed[keys.OBJECT_BBOX_XMIN])
            * (parsed[keys.OBJECT_BBOX_YMAX] - parsed[keys.OBJECT_BBOX_YMIN])
            * height
            * width
        )
        areas = parsed[keys.OBJECT_AREA]
        return tf.cond(tf.greater(tf.shape(areas)[0], 0), lambda: areas, lambda: box_areas)

    def _decode_masks(self, parsed: dict[str, tf.Tensor]) -> tf.Tensor:
        """Decodes one PNG per object into float32 [N, H, W] (pixel values kept, e.g. 0/255)."""

        def decode_png(png_bytes):
            mask = tf.squeeze(tf.io.decode_png(png_bytes, channels=1, dtype=tf.uint8), axis=-1)
            mask = tf.cast(mask, tf.float32)
            mask.set_shape([None, None])
            return mask

        masks = parsed[keys.OBJECT_MASK]
        height = parsed[keys.IMAGE_HEIGHT]
        width = parsed[keys.IMAGE_WIDTH]
        return tf.cond(
            tf.greater(tf.size(masks), 0),
            lambda: tf.map_fn(
                decode_png, masks, fn_output_signature=tf.TensorSpec([None, None], tf.float32)
            ),
            lambda: tf.zeros(tf.stack([0, height, width]), tf.float32),
        )

    def decode(self, serialized_example: tf.Tensor) -> dict[str, tf.Tensor]:
        """Decodes one serialized tf.Example.

        Returns:
          A dict with `source_id` (string scalar), `image` (uint8 [H, W, 3]), `height` and
          `width` (int64 scalars, taken from the decoded image when the record lacks them),
          `groundtruth_classes` (int64 [N]), `groundtruth_is_crowd` (bool [N]),
          `groundtruth_area` (float32 [N]), `groundtruth_boxes` (float32 [N, 4]) and, with
          `include_mask`, `groundtruth_instance_masks` (float32 [N, H, W]) and
          `groundtruth_instance_masks_png` (string [N]); with `attribute_names`,
          `groundtruth_attributes` ({name: int64 [N, 1]}).
        """
        parsed = tf.io.parse_single_example(serialized_example, self._keys_to_features)
        for key, value in list(parsed.items()):
            if isinstance(value, tf.SparseTensor):
                default = "" if value.dtype == tf.string else 0
                parsed[key] = tf.sparse.to_dense(value, default_value=default)

        if self._regenerate_source_id:
            source_id = _generate_source_id(parsed[keys.IMAGE_ENCODED])
        else:
            stored = parsed[keys.IMAGE_SOURCE_ID]
            source_id = tf.cond(
                tf.greater(tf.strings.length(stored), 0),
                lambda: stored,
                lambda: _generate_source_id(parsed[keys.IMAGE_ENCODED]),
            )

        image = self._decode_image(parsed)
        # A missing height or width (-1) is taken from the image; this must precede the area
        # and empty-mask computations, which need the real size.
        missing_size = tf.logical_or(
            tf.equal(parsed[keys.IMAGE_HEIGHT], -1), tf.equal(parsed[keys.IMAGE_WIDTH], -1)
        )
        image_shape = tf.cast(tf.shape(image), tf.int64)
        parsed[keys.IMAGE_HEIGHT] = tf.where(
            missing_size, image_shape[0], parsed[keys.IMAGE_HEIGHT]
        )
        parsed[keys.IMAGE_WIDTH] = tf.where(missing_size, image_shape[1], parsed[keys.IMAGE_WIDTH])

        boxes = self._decode_boxes(parsed)
        classes = parsed[keys.OBJECT_CLASS_LABEL]
        areas = self._decode_areas(parsed)
        is_crowd_raw = parsed[keys.OBJECT_IS_CROWD]
        is_crowds = tf.cond(
            tf.greater(tf.shape(is_crowd_raw)[0], 0),
            lambda: tf.cast(is_crowd_raw, tf.bool),
            lambda: tf.zeros_like(classes, dtype=tf.bool),
        )

        decoded = {
            "source_id": source_id,
            "image": image,
            "height": parsed[keys.IMAGE_HEIGHT],
            "width": parsed[keys.IMAGE_WIDTH],
            "groundtruth_classes": classes,
            "groundtruth_is_crowd": is_crowds,
            "groundtruth_area": areas,
            "groundtruth_boxes": boxes,
        }
        if self._attribute_names:
            decoded["groundtruth_attributes"] = {
                name: tf.expand_dims(parsed[keys.OBJECT_ATTRIBUTE_PREFIX + name], -1)
                for name in self._attribute_names
            }
        if self._include_mask:
            masks = self._decode_masks(parsed)
            if self._mask_binarize_threshold is not None:
                masks = tf.cast(masks > self._mask_binarize_threshold, tf.float32)
            decoded["groundtruth_instance_masks"] = masks
            decoded["groundtruth_instance_masks_png"] = parsed[keys.OBJECT_MASK]
        return decoded
