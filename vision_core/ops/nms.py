"""Non-maximum suppression (NMS) for detection post-processing (Model Garden's
`official.vision.ops.nms`, plus the batched forms our detection generator uses).

Everything here runs TensorFlow's C++ NMS kernels, which visit candidates best-first and stop
once enough boxes are kept, instead of Model Garden's tiled pure-TensorFlow loop; results are
the same greedy NMS.

A note on the IoU boundary: the C++ kernels suppress a box when IoU > threshold, Model
Garden's v1/v2 generators when IoU >= threshold. `suppress_at_threshold=True` reproduces the
latter by lowering the threshold by one float32 step (no float32 IoU lies in between).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _kernel_iou_threshold(iou_threshold: float, suppress_at_threshold: bool) -> float:
    if not suppress_at_threshold:
        return float(iou_threshold)
    return float(np.nextafter(np.float32(iou_threshold), np.float32(-np.inf)))


def greedy_nms_padded(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
    suppress_at_threshold: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Class-agnostic greedy NMS on every image of a batch.

    Candidates scoring at most `score_threshold` are dropped; the rest are visited in
    descending score order (ties: lower index first) and kept unless they overlap an already
    kept box by more than `iou_threshold` (at least, with `suppress_at_threshold`).

    Args:
      boxes: [batch, K, 4] boxes.
      scores: [batch, K] scores.
      max_output_size: most boxes kept per image.
      iou_threshold: IoU threshold.
      score_threshold: candidates must score above this.
      suppress_at_threshold: also suppress at IoU == threshold (Model Garden v1/v2).

    Returns:
      indices: int32 [batch, max_output_size] kept candidates best first; entries past
        `num_valid` are 0.
      num_valid: int32 [batch].
    """
    threshold = _kernel_iou_threshold(iou_threshold, suppress_at_threshold)

    def one_image(args):
        image_boxes, image_scores = args
        indices, num_valid = tf.raw_ops.NonMaxSuppressionV4(
            boxes=image_boxes,
            scores=image_scores,
            max_output_size=max_output_size,
            iou_threshold=threshold,
            score_threshold=score_threshold,
            pad_to_max_output_size=True,
        )
        keep = tf.range(max_output_size) < num_valid
        return tf.where(keep, indices, 0), num_valid

    return tf.map_fn(
        one_image,
        (tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)),
        fn_output_signature=(
            tf.TensorSpec([max_output_size], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )


def class_aware_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size_per_class: int,
    max_total_size: int,
    iou_threshold: float,
    score_threshold: float,
    suppress_at_threshold: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-class greedy NMS for a batch, merged into the best `max_total_size` per image.

    Args:
      boxes: [batch, K, q, 4] boxes, q = 1 (shared by all classes) or num_classes.
      scores: [batch, K, num_classes] scores; a candidate competes only within each class in
        which it scores above `score_threshold`.
      max_output_size_per_class: most boxes kept per class.
      max_total_size: most boxes kept per image over all classes.
      iou_threshold: IoU threshold.
      score_threshold: candidates must score above this.
      suppress_at_threshold: also suppress at IoU == threshold (Model Garden v1/v2).

    Returns:
      boxes [batch, max_total_size, 4], scores [batch, max_total_size], classes int32
      [batch, max_total_size] (0-based column of `scores`), num_valid int32 [batch]; sorted by
      score, padded with zeros.
    """
    result = tf.image.combined_non_max_suppression(
        tf.cast(boxes, tf.float32),
        tf.cast(scores, tf.float32),
        max_output_size_per_class=max_output_size_per_class,
        max_total_size=max_total_size,
        iou_threshold=_kernel_iou_threshold(iou_threshold, suppress_at_threshold),
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    return (
        result.nmsed_boxes,
        result.nmsed_scores,
        tf.cast(result.nmsed_classes, tf.int32),
        result.valid_detections,
    )


def match_selected_indices(
    candidate_boxes: tf.Tensor,
    candidate_scores: tf.Tensor,
    candidate_classes: tf.Tensor,
    selected_boxes: tf.Tensor,
    selected_scores: tf.Tensor,
    selected_classes: tf.Tensor,
) -> tf.Tensor:
    """Finds which candidate each NMS output is, for kernels that return values only.

    `class_aware_nms` copies boxes and scores through unchanged, so an output is the candidate
    with the same class, score and box. Identical candidates (same class, score and box) are
    interchangeable; the first is returned.

    Args:
      candidate_boxes: [batch, K, 4]; candidate_scores, candidate_classes: [batch, K].
      selected_boxes: [batch, M, 4]; selected_scores, selected_classes: [batch, M].

    Returns:
      int32 [batch, M] candidate indices (0 for outputs matching nothing, e.g. padding).
    """
    same = tf.equal(selected_scores[:, :, None], candidate_scores[:, None, :])
    same &= tf.equal(selected_classes[:, :, None], candidate_classes[:, None, :])
    for i in range(4):
        same &= tf.equal(selected_boxes[:, :, None, i], candidate_boxes[:, None, :, i])
    return tf.argmax(tf.cast(same, tf.int8), axis=-1, output_type=tf.int32)


def soft_nms_padded(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    max_output_size: int,
    iou_threshold: float,
    score_threshold: float,
    soft_nms_sigma: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Soft-NMS (Bodla et al., https://arxiv.org/abs/1704.04503) on every row of a batch.

    Overlapping boxes are rescored by a Gaussian of their IoU with each kept box instead of
    being dropped outright, exactly as `tf.image.non_max_suppression_with_scores` defines it;
    boxes whose score falls to `score_threshold` or below are dropped.

    Args:
      boxes: [rows, K, 4]; scores: [rows, K].
      max_output_size: most boxes kept per row.
      iou_threshold: IoU threshold.
      score_threshold: candidates (and rescored boxes) must score above this.
      soft_nms_sigma: the Gaussian's sigma; 0 gives hard NMS.

    Returns:
      indices int32 [rows, max_output_size] (0-padded), rescored scores [rows,
      max_output_size] (-1-padded, as Model Garden pads them) and num_valid int32 [rows].
    """

    def one_row(args):
        row_boxes, row_scores = args
        indices, new_scores = tf.image.non_max_suppression_with_scores(
            row_boxes,
            row_scores,
            max_output_size,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            soft_nms_sigma=soft_nms_sigma,
        )
        num_valid = tf.shape(indices)[0]
        pad = [[0, max_output_size - num_valid]]
        return (
            tf.pad(indices, pad),
            tf.pad(new_scores, pad, constant_values=-1.0),
            num_valid,
        )

    return tf.map_fn(
        one_row,
        (tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32)),
        fn_output_signature=(
            tf.TensorSpec([max_output_size], tf.int32),
            tf.TensorSpec([max_output_size], tf.float32),
            tf.TensorSpec([], tf.int32),
        ),
    )


def sorted_non_max_suppression_padded(
    scores: tf.Tensor, boxes: tf.Tensor, max_output_size: int, iou_threshold: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Model Garden's NMS over boxes already sorted best first.

    Only the order of the inputs matters, not the score values; all-zero (or all
    non-positive) boxes are placeholders that are never kept. A box is suppressed by an earlier
    kept box with IoU >= `iou_threshold`.

    Args:
      scores: [batch, K] scores, sorted descending along K.
      boxes: [batch, K, 4] boxes in the same order.
      max_output_size: most boxes kept per image.
      iou_threshold: IoU threshold.

    Returns:
      (scores [batch, max_output_size], boxes [batch, max_output_size, 4]) of the kept boxes
      in input order, zero-padded.
    """
    boxes = tf.cast(boxes, tf.float32)
    num_boxes = tf.shape(boxes)[1]
    # Rank K..1 keeps the input order; placeholders get 0, which the threshold 0 drops.
    rank = tf.cast(tf.range(num_boxes, 0, -1), tf.float32)[None, :]
    real = tf.reduce_any(boxes > 0.0, axis=-1)
    rank = tf.where(real, rank, 0.0)
    indices, num_valid = greedy_nms_padded(
        boxes, rank, max_output_size, iou_threshold, 0.0, suppress_at_threshold=True
    )
    keep = tf.range(max_output_size)[None, :] < num_valid[:, None]
    kept_scores = tf.gather(tf.cast(scores, tf.float32), indices, axis=1, batch_dims=1)
    kept_boxes = tf.gather(boxes, indices, axis=1, batch_dims=1)
    kept_scores = tf.where(keep, kept_scores, 0.0)
    kept_boxes = tf.where(keep[..., None], kept_boxes, 0.0)
    return kept_scores, kept_boxes
