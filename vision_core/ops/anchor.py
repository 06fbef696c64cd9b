"""Anchor boxes and the dense-detector anchor labeler (Model Garden's
`official.vision.ops.anchor`).

Anchors tile every pyramid level: at level l the image is covered by a grid of
ceil(H / 2^l) x ceil(W / 2^l) cells, and every cell center carries `num_scales *
len(aspect_ratios)` boxes of side `anchor_size * 2^l * 2^(s / num_scales)` stretched to the
aspect ratio (width / height). Per level the boxes are stored as [H_l, W_l, A * 4], scale
major then aspect ratio, which is the layout RetinaNet heads predict in.

The labeler is plain vectorized TensorFlow, so it runs inside `tf.data` on one image at a
time.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence

import tensorflow as tf

from vision_core.ops import box_ops
from vision_core.ops.box_matcher import BoxMatcher
from vision_core.ops.iou_similarity import IouSimilarity
from vision_core.ops.target_gather import TargetGather


def _feature_size(image_extent, level: int):
    if isinstance(image_extent, int | float):
        return math.ceil(image_extent / 2**level)
    return tf.math.ceil(tf.cast(image_extent, tf.float32) / 2**level)


class Anchor:
    """Multi-level anchor boxes for one image size.

    Example:
      `Anchor(3, 4, 2, [0.5, 1.0, 2.0], 4.0, [256, 256]).multilevel_boxes['3']` has shape
      [32, 32, 24]: a 32x32 grid (stride 8) with 2 scales x 3 ratios = 6 anchors of 4 values.

    Attributes:
      multilevel_boxes: OrderedDict level str -> [H_l, W_l, anchors_per_location * 4] boxes.
    """

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_scales: int,
        aspect_ratios: Sequence[float],
        anchor_size: float,
        image_size: Sequence[int] | tf.Tensor,
    ):
        """Generates the anchors.

        Args:
          min_level: lowest pyramid level (stride 2^min_level).
          max_level: highest pyramid level.
          num_scales: intermediate scales per level; scale s is 2^(s / num_scales).
          aspect_ratios: width / height ratios, e.g. [0.5, 1.0, 2.0].
          anchor_size: base anchor side in units of the level's stride.
          image_size: [height, width] of the (padded) input image, ints or tensors.
        """
        if min_level > max_level:
            raise ValueError(
                f"min_level ({min_level}) must not be greater than max_level ({max_level})."
            )
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
        if not aspect_ratios:
            raise ValueError("aspect_ratios must name at least one ratio, got none.")
        self.min_level = min_level
        self.max_level = max_level
        self.num_scales = num_scales
        self.aspect_ratios = aspect_ratios
        self.anchor_size = anchor_size
        self.image_size = image_size
        self.multilevel_boxes = self._generate_multilevel_boxes()

    def _generate_multilevel_boxes(self) -> dict[str, tf.Tensor]:
        height, width = self.image_size[0], self.image_size[1]
        if not isinstance(height, int | float) or not isinstance(width, int | float):
            height = tf.cast(height, tf.float32)
            width = tf.cast(width, tf.float32)
        boxes = collections.OrderedDict()
        for level in range(self.min_level, self.max_level + 1):
            # The stride is image / grid rather than 2^level, so for sizes that are not a
            # multiple of 2^level the grid still spans the whole image.
            stride_y = tf.cast(height / _feature_size(height, level), tf.float32)
            stride_x = tf.cast(width / _feature_size(width, level), tf.float32)
            center_x, center_y = tf.meshgrid(
                tf.range(stride_x / 2, width, stride_x), tf.range(stride_y / 2, height, stride_y)
            )
            level_boxes = []
            for scale in range(self.num_scales):
                side = self.anchor_size * 2**level * 2 ** (scale / self.num_scales)
                for ratio in self.aspect_ratios:
                    half_w = side * ratio**0.5 / 2.0
                    half_h = side * ratio**-0.5 / 2.0
                    level_boxes.append(
                        tf.stack(
                            [
                                center_y - half_h,
                                center_x - half_w,
                                center_y + half_h,
                                center_x + half_w,
                            ],
                            axis=-1,
                        )
                    )
            boxes[str(level)] = tf.concat(level_boxes, axis=-1)
        return boxes

    @property
    def anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


class AnchorGeneratorv2:
    """Callable that makes `Anchor(...).multilevel_boxes` for an image size given later."""

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_scales: int,
        aspect_ratios: Sequence[float],
        anchor_size: float,
    ):
        self.min_level = min_level
        self.max_level = max_level
        self.num_scales = num_scales
        self.aspect_ratios = aspect_ratios
        self.anchor_size = anchor_size

    def __call__(self, image_size: Sequence[int] | tf.Tensor) -> dict[str, tf.Tensor]:
        """Anchors for `image_size` = [height, width]: level str -> [H_l, W_l, A * 4]."""
        return Anchor(
            min_level=self.min_level,
            max_level=self.max_level,
            num_scales=self.num_scales,
            aspect_ratios=self.aspect_ratios,
            anchor_size=self.anchor_size,
            image_size=image_size,
        ).multilevel_boxes


def build_anchor_generator(
    min_level: int,
    max_level: int,
    num_scales: int,
    aspect_ratios: Sequence[float],
    anchor_size: float,
) -> AnchorGeneratorv2:
    """An anchor generator for the given pyramid; call it with [height, width]."""
    return AnchorGeneratorv2(
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=aspect_ratios,
        anchor_size=anchor_size,
    )


def unpack_targets(
    targets: tf.Tensor, anchor_boxes_dict: Mapping[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
    """Splits per-anchor targets [num_anchors, M] back into levels [H_l, W_l, A_l * M].

    `anchor_boxes_dict` (level -> [H_l, W_l, A_l * 4], static shapes) gives the order and
    sizes of the levels the anchors were flattened from.
    """
    unpacked = collections.OrderedDict()
    start = 0
    for level, boxes in anchor_boxes_dict.items():
        height, width, four_a = boxes.shape.as_list()
        count = height * width * (four_a // 4)
        unpacked[level] = tf.reshape(targets[start : start + count], [height, width, -1])
        start += count
    return unpacked


class AnchorLabeler:
    """Assigns classification and box-regression targets to anchors for one image.

    Each anchor takes the groundtruth box it overlaps most. Its best IoU grades it:
    >= match_threshold positive, < unmatched_threshold negative (background), in between
    ignored (no loss at all). As in Model Garden, every groundtruth box's best anchor is also
    made positive for that box whatever the IoU, so small or oddly shaped objects still train
    some anchor (ties between boxes go to the lower groundtruth index).

    Rows of `gt_boxes` whose coordinates are all negative are padding (Model Garden's -1
    convention): they never match an anchor. (Model Garden's labeler would force-match anchor 0
    to such a row; its input pipeline never passes padded rows, so results agree there.)
    """

    def __init__(
        self,
        match_threshold: float = 0.5,
        unmatched_threshold: float = 0.5,
        box_coder_weights: Sequence[float] | None = None,
    ):
        """Initializes the labeler.

        Args:
          match_threshold: IoU at or above which an anchor is positive.
          unmatched_threshold: IoU below which an anchor is negative; must not exceed
            `match_threshold`.
          box_coder_weights: None or four positive multipliers for the (dy, dx, dh, dw) box
            codes, e.g. [10, 10, 5, 5] for Faster R-CNN.
        """
        if unmatched_threshold > match_threshold:
            raise ValueError(
                f"unmatched_threshold ({unmatched_threshold}) must not exceed match_threshold "
                f"({match_threshold})."
            )
        if box_coder_weights is not None and (
            len(box_coder_weights) != 4 or any(w <= 0 for w in box_coder_weights)
        ):
            raise ValueError(
                f"box_coder_weights must be None or 4 positive numbers, got {box_coder_weights}."
            )
        self.similarity_calc = IouSimilarity()
        self.target_gather = TargetGather()
        self.matcher = BoxMatcher(
            thresholds=[unmatched_threshold, match_threshold],
            indicators=[-1, -2, 1],
            force_match_for_each_col=True,
        )
        self.box_coder_weights = list(box_coder_weights) if box_coder_weights else None

    def label_anchors(
        self,
        anchor_boxes: Mapping[str, tf.Tensor],
        gt_boxes: tf.Tensor,
        gt_labels: tf.Tensor,
        gt_attributes: Mapping[str, tf.Tensor] | None = None,
        gt_weights: tf.Tensor | None = None,
    ):
        """Labels all anchors of one image.

        Args:
          anchor_boxes: level str -> [H_l, W_l, A * 4] anchors (static shapes), e.g.
            `Anchor(...).multilevel_boxes`.
          gt_boxes: [N, 4] groundtruth boxes in the anchors' coordinates (pixels).
          gt_labels: [N, 1] (or [N]) integer classes.
          gt_attributes: optional name -> [N, attribute_size] float attributes.
          gt_weights: optional [N] per-box weights multiplied into both loss weights.

        Returns:
          cls_targets: level -> [H_l, W_l, A] class per anchor, -1 for negative and ignored.
          box_targets: level -> [H_l, W_l, A * 4] encoded boxes (0 where not positive).
          attribute_targets: name -> level -> [H_l, W_l, A * attribute_size] (0 where not
            positive).
          cls_weights: [num_anchors] 0 for ignored anchors, else the matched box's weight
            (1 for every anchor when there is no groundtruth).
          box_weights: [num_anchors] the matched box's weight for positives, 0 otherwise.
        """
        anchors = tf.concat([tf.reshape(a, [-1, 4]) for a in anchor_boxes.values()], axis=0)
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        if len(gt_labels.shape) == 1:
            gt_labels = gt_labels[:, None]
        padding = tf.reduce_max(gt_boxes, axis=-1, keepdims=True) < 0.0
        similarity = self.similarity_calc(anchors, gt_boxes, boxes_2_masks=padding)
        match_indices, match_indicators = self.matcher(similarity)

        not_positive = match_indicators <= 0  # negatives (-1) and ignored (-2)
        cls_targets = self.target_gather(gt_labels, match_indices, not_positive[:, None], -1)
        matched_boxes = self.target_gather(
            gt_boxes, match_indices, tf.tile(not_positive[:, None], [1, 4])
        )
        box_targets = box_ops.encode_boxes(matched_boxes, anchors, self.box_coder_weights)
        # Model Garden leaves the encoding of a zero box here; zeros say "no target" plainly
        # and carry no loss either way (box_weights is 0 for these anchors).
        box_targets = tf.where(not_positive[:, None], tf.zeros_like(box_targets), box_targets)
        attribute_targets = {}
        for name, values in (gt_attributes or {}).items():
            size = values.shape[-1]
            attribute_targets[name] = self.target_gather(
                values, match_indices, tf.tile(not_positive[:, None], [1, size]), 0.0
            )

        # With no groundtruth every anchor is a negative that gathers row 0 of this [1] vector,
        # so negatives keep weight 1.
        num_gt = tf.shape(gt_labels)[0]
        weights = tf.cond(
            num_gt > 0,
            lambda: tf.ones([num_gt], tf.float32),
            lambda: tf.ones([1], tf.float32),
        )
        if gt_weights is not None:
            weights = tf.cond(
                num_gt > 0, lambda: weights * tf.cast(gt_weights, tf.float32), lambda: weights
            )
        box_weights = self.target_gather(weights, match_indices, not_positive)
        cls_weights = self.target_gather(weights, match_indices, tf.equal(match_indicators, -2))

        return (
            unpack_targets(cls_targets, anchor_boxes),
            unpack_targets(box_targets, anchor_boxes),
            {name: unpack_targets(t, anchor_boxes) for name, t in attribute_targets.items()},
            cls_weights,
            box_weights,
        )
