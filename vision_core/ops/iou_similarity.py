"""Pairwise IoU between box sets (Model Garden's `official.vision.ops.iou_similarity`).

Unlike `box_ops.bbox_overlap`, these take unbatched or batched inputs, add no epsilon (a pair
that does not intersect has IoU exactly 0, even for degenerate boxes) and mark padding only
through explicit masks.
"""

from __future__ import annotations

import tensorflow as tf


def area(box: tf.Tensor) -> tf.Tensor:
    """Areas of [N, 4] or [B, N, 4] boxes: [N] or [B, N]."""
    return (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])


def intersection(gt_boxes: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection areas: [N, 4] x [M, 4] -> [N, M] (or batched [B, N, M])."""
    a = gt_boxes[..., :, None, :]
    b = boxes[..., None, :, :]
    heights = tf.math.minimum(a[..., 2], b[..., 2]) - tf.math.maximum(a[..., 0], b[..., 0])
    widths = tf.math.minimum(a[..., 3], b[..., 3]) - tf.math.maximum(a[..., 1], b[..., 1])
    zero = tf.cast(0, heights.dtype)
    return tf.math.maximum(heights, zero) * tf.math.maximum(widths, zero)


def iou(gt_boxes: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Pairwise IoU [N, M] (or [B, N, M]); 0 wherever the intersection is 0."""
    inter = intersection(gt_boxes, boxes)
    union = area(gt_boxes)[..., :, None] + area(boxes)[..., None, :] - inter
    return tf.where(inter == 0.0, tf.zeros_like(inter), inter / union)


class IouSimilarity:
    """IoU similarity with optional masking of rows/columns (e.g. padded boxes).

    Args:
      mask_val: value written where a mask marks a row or column as background.
    """

    def __init__(self, mask_val: float = -1):
        self.mask_val = mask_val

    def __call__(
        self,
        boxes_1: tf.Tensor,
        boxes_2: tf.Tensor,
        boxes_1_masks: tf.Tensor | None = None,
        boxes_2_masks: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """IoU of every box in `boxes_1` (rows) with every box in `boxes_2` (columns).

        Args:
          boxes_1: [N, 4] or [B, N, 4].
          boxes_2: [M, 4] or [B, M, 4]; may not be batched when `boxes_1` is not.
          boxes_1_masks: optional bool [N, 1] / [B, N, 1], True marks a row as background.
          boxes_2_masks: optional bool [M, 1] / [B, M, 1], True marks a column as background.

        Returns:
          [N, M] or [B, N, M] IoU, `mask_val` on masked rows and columns.
        """
        boxes_1 = tf.cast(boxes_1, tf.float32)
        boxes_2 = tf.cast(boxes_2, tf.float32)
        rank_1, rank_2 = len(boxes_1.shape), len(boxes_2.shape)
        if rank_1 not in (2, 3):
            raise ValueError(f"`boxes_1` must be rank 2 or 3, got rank {rank_1}.")
        if rank_2 not in (2, 3):
            raise ValueError(f"`boxes_2` must be rank 2 or 3, got rank {rank_2}.")
        if rank_1 < rank_2:
            raise ValueError(
                f"`boxes_1` (rank {rank_1}) is unbatched while `boxes_2` (rank {rank_2}) is "
                "batched; batch both or neither."
            )
        result = iou(boxes_1, boxes_2)
        if boxes_1_masks is None and boxes_2_masks is None:
            return result
        background = tf.zeros(tf.shape(result), tf.bool)
        if boxes_1_masks is not None:
            background |= tf.cast(boxes_1_masks, tf.bool)
        if boxes_2_masks is not None:
            background |= tf.linalg.matrix_transpose(tf.cast(boxes_2_masks, tf.bool))
        return tf.where(background, tf.cast(self.mask_val, result.dtype), result)
