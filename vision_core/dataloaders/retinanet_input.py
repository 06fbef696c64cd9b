"""RetinaNet input (Model Garden's `official.vision.dataloaders.retinanet_input`).

`Parser` turns a decoded detection example (`tf_example_decoder.TfExampleDecoder` output) into

    image:  [H, W, 3] normalized, padded to a multiple of 2**max_level (dtype as configured)
    labels: {'cls_targets':  {level: [H_l, W_l, A]} int class per anchor (-1 ignored, 0 bg),
             'box_targets':  {level: [H_l, W_l, A*4]} encoded box offsets,
             'cls_weights':  [num_anchors] float (0 for ignored anchors),
             'box_weights':  [num_anchors] float (1 for positive anchors),
             'anchor_boxes': {level: [H_l, W_l, A*4]} anchors in padded-image pixels,
             'image_info':   [4, 2] float32, see `vision_core.ops.preprocess_ops`,
             'groundtruths': (evaluation only) the original boxes, classes, crowd flags,
                             areas, source_id, height and width, padded to
                             `max_num_instances` rows with -1}

Training applies Model Garden's augmentations: random horizontal flip, then scale jitter
(resize by a random factor in [aug_scale_min, aug_scale_max], take a random output-size window,
which crops when the factor is above 1) and zero padding. Crowd regions are dropped from the
training targets by default; boxes the crop leaves empty are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from vision_core.ops import anchor, box_ops, preprocess_ops


def process_source_id(source_id: tf.Tensor) -> tf.Tensor:
    """Source ids as int64 (-1 for an empty or non-numeric one), as the COCO evaluator needs."""
    if source_id.dtype == tf.string:
        is_number = tf.strings.regex_full_match(source_id, r"-?[0-9]+")
        safe = tf.where(is_number, source_id, tf.fill(tf.shape(source_id), "-1"))
        return tf.strings.to_number(safe, out_type=tf.int64)
    return tf.cast(source_id, tf.int64)


class Parser:
    """Parses decoded detection examples into RetinaNet training or evaluation inputs."""

    def __init__(
        self,
        output_size: Sequence[int],
        min_level: int,
        max_level: int,
        num_scales: int,
        aspect_ratios: Sequence[float],
        anchor_size: float,
        match_threshold: float = 0.5,
        unmatched_threshold: float = 0.5,
        box_coder_weights: Sequence[float] | None = None,
        aug_rand_hflip: bool = False,
        aug_scale_min: float = 1.0,
        aug_scale_max: float = 1.0,
        skip_crowd_during_training: bool = True,
        max_num_instances: int = 100,
        dtype: str = "float32",
        pad: bool = True,
    ):
        """Initializes the parser.

        Args:
          output_size: [height, width] the image is resized into (before padding).
          min_level: finest pyramid level with anchors.
          max_level: coarsest pyramid level; the padded size is a multiple of 2**max_level.
          num_scales: anchor scales per octave.
          aspect_ratios: anchor width/height ratios.
          anchor_size: anchor side over the level's stride.
          match_threshold: IoU at or above which an anchor is positive.
          unmatched_threshold: IoU below which an anchor is background (between: ignored).
          box_coder_weights: optional [4] scales of (y, x, h, w) in the box coding.
          aug_rand_hflip: flip training images (and boxes) at random.
          aug_scale_min: smallest training scale-jitter factor (<= 1).
          aug_scale_max: largest training scale-jitter factor (>= 1).
          skip_crowd_during_training: drop is_crowd boxes from training targets.
          max_num_instances: evaluation groundtruth rows (padded or truncated to this).
          dtype: image dtype: 'float32', 'bfloat16' or 'float16'.
          pad: pad the image to a multiple of 2**max_level (needed by FPN-style decoders).

        Raises:
          ValueError: a bad scale range, size or threshold pair.
        """
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"output_size: expected [height, width] > 0, got {output_size}")
        if not 0 < aug_scale_min <= 1.0 <= aug_scale_max:
            raise ValueError(
                "aug_scale_min/aug_scale_max: expected 0 < min <= 1 <= max, got "
                f"{aug_scale_min}, {aug_scale_max}"
            )
        if unmatched_threshold > match_threshold:
            raise ValueError(
                f"unmatched_threshold ({unmatched_threshold}) must not exceed match_threshold "
                f"({match_threshold})"
            )
        self._output_size = [int(s) for s in output_size]
        self._min_level = min_level
        self._max_level = max_level
        self._max_num_instances = max_num_instances
        self._skip_crowd = skip_crowd_during_training
        self._aug_rand_hflip = aug_rand_hflip
        self._aug_scale_min = aug_scale_min
        self._aug_scale_max = aug_scale_max
        self._dtype = tf.dtypes.as_dtype(dtype)
        if pad:
            self._padded_size = [int(s) for s in preprocess_ops.compute_padded_size(
                self._output_size, 2**max_level
            )]  # fmt: skip
        else:
            self._padded_size = list(self._output_size)
        # The image size is fixed after padding, so the anchors are too: built once.
        self._anchor_boxes = anchor.build_anchor_generator(
            min_level=min_level,
            max_level=max_level,
            num_scales=num_scales,
            aspect_ratios=list(aspect_ratios),
            anchor_size=anchor_size,
        )(self._padded_size)
        self._labeler = anchor.AnchorLabeler(
            match_threshold=match_threshold,
            unmatched_threshold=unmatched_threshold,
            box_coder_weights=box_coder_weights,
        )

    @property
    def padded_size(self) -> list[int]:
        """[height, width] of the parsed images."""
        return list(self._padded_size)

    def parse_fn(self, is_training: bool):
        """Returns the function for `dataset.map`: training or evaluation parsing."""

        def parse(decoded_tensors):
            if is_training:
                return self._parse_train_data(decoded_tensors)
            return self._parse_eval_data(decoded_tensors)

        return parse

    def __call__(self, decoded_tensors, is_training: bool = True):
        return self.parse_fn(is_training)(decoded_tensors)

    def _resize(self, image, boxes, jitter: bool):
        """Normalized image + pixel boxes → (padded image, boxes in it, image_info)."""
        image, image_info = preprocess_ops.resize_and_crop_image(
            image,
            self._output_size,
            padded_size=self._padded_size,
            aug_scale_min=self._aug_scale_min if jitter else 1.0,
            aug_scale_max=self._aug_scale_max if jitter else 1.0,
        )
        image = tf.ensure_shape(image, self._padded_size + [3])
        boxes = preprocess_ops.resize_and_crop_boxes(
            boxes, image_info[2, :], image_info[1, :], image_info[3, :]
        )
        return image, boxes, image_info

    def _targets(self, boxes, classes, image_info, image) -> tuple[tf.Tensor, dict[str, Any]]:
        keep = box_ops.get_non_empty_box_indices(boxes)
        boxes = tf.gather(boxes, keep)
        classes = tf.gather(classes, keep)
        cls_targets, box_targets, _, cls_weights, box_weights = self._labeler.label_anchors(
            self._anchor_boxes, boxes, tf.expand_dims(classes, axis=1)
        )
        labels = {
            "cls_targets": cls_targets,
            "box_targets": box_targets,
            "anchor_boxes": self._anchor_boxes,
            "cls_weights": cls_weights,
            "box_weights": box_weights,
            "image_info": image_info,
        }
        return tf.cast(image, self._dtype), labels

    def _parse_train_data(self, data: dict[str, tf.Tensor]):
        classes = data["groundtruth_classes"]
        boxes = data["groundtruth_boxes"]
        if self._skip_crowd:
            keep = tf.where(tf.logical_not(tf.cast(data["groundtruth_is_crowd"], tf.bool)))[:, 0]
            # An example without crowd flags keeps all its boxes.
            keep = tf.cond(
                tf.size(data["groundtruth_is_crowd"]) > 0,
                lambda: keep,
                lambda: tf.range(tf.shape(classes, out_type=tf.int64)[0]),
            )
            classes = tf.gather(classes, keep)
            boxes = tf.gather(boxes, keep)
        image = preprocess_ops.normalize_image(data["image"])
        if self._aug_rand_hflip:
            image, boxes, _ = preprocess_ops.random_horizontal_flip(image, boxes)
        boxes = box_ops.denormalize_boxes(boxes, tf.shape(image)[0:2])
        image, boxes, image_info = self._resize(image, boxes, jitter=True)
        return self._targets(boxes, classes, image_info, image)

    def _parse_eval_data(self, data: dict[str, tf.Tensor]):
        classes = data["groundtruth_classes"]
        image_shape = tf.shape(data["image"])[0:2]
        original_boxes = box_ops.denormalize_boxes(data["groundtruth_boxes"], image_shape)
        image = preprocess_ops.normalize_image(data["image"])
        image, boxes, image_info = self._resize(image, original_boxes, jitter=False)
        image, labels = self._targets(boxes, classes, image_info, image)
        size = self._max_num_instances
        labels["groundtruths"] = {
            "source_id": process_source_id(data["source_id"]),
            "height": data["height"],
            "width": data["width"],
            "num_detections": tf.minimum(tf.shape(classes)[0], size),
            "image_info": image_info,
            "boxes": preprocess_ops.clip_or_pad_to_fixed_size(original_boxes, size, -1),
            "classes": preprocess_ops.clip_or_pad_to_fixed_size(classes, size, -1),
            "areas": preprocess_ops.clip_or_pad_to_fixed_size(data["groundtruth_area"], size, -1),
            "is_crowds": preprocess_ops.clip_or_pad_to_fixed_size(
                tf.cast(data["groundtruth_is_crowd"], tf.int32), size, 0
            ),
        }
        return image, labels
