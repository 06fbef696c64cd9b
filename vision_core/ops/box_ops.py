"""Box arithmetic (Model Garden's `official.vision.ops.box_ops`).

Boxes are `[ymin, xmin, ymax, xmax]` in the last dimension, in pixels unless a name says
normalized. Box coding is the Faster R-CNN (dy, dx, dh, dw) parameterisation relative to an
anchor, optionally scaled by four `weights`; decoding clamps dh/dw at log(1000/16) so a wild
regression output cannot overflow `exp`.

Padded rows follow Model Garden's convention: a box whose coordinates are all negative
(`-1` padding) is invalid, and the pairwise overlap functions report -1 for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# Added to sizes before dividing or taking logs so degenerate boxes stay finite.
EPSILON = 1e-8
# Largest log-scale change decode_boxes allows: a box at most 1000/16 times its anchor.
BBOX_XFORM_CLIP = np.log(1000.0 / 16.0)

ImageShape = Sequence[float] | tf.Tensor


def _check_boxes(boxes, name: str = "boxes") -> None:
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name}.shape[-1] is {boxes.shape[-1]}, but must be 4.")


def _height_width(image_shape: ImageShape, dtype: tf.DType, keepdims: bool):
    """Splits an image shape ([..., 2] tensor or a (height, width) pair) into two parts."""
    if isinstance(image_shape, list | tuple):
        return image_shape[0], image_shape[1]
    image_shape = tf.cast(image_shape, dtype)
    if keepdims:
        return image_shape[..., 0:1], image_shape[..., 1:2]
    return image_shape[..., 0], image_shape[..., 1]


def yxyx_to_xywh(boxes):
    """[ymin, xmin, ymax, xmax] to COCO's [xmin, ymin, width, height] (numpy or tensor)."""
    _check_boxes(boxes)
    stack = tf.stack if tf.is_tensor(boxes) else np.stack
    return stack(
        [
            boxes[..., 1],
            boxes[..., 0],
            boxes[..., 3] - boxes[..., 1],
            boxes[..., 2] - boxes[..., 0],
        ],
        axis=-1,
    )


def yxyx_to_cycxhw(boxes: tf.Tensor) -> tf.Tensor:
    """Corner form to [center_y, center_x, height, width]."""
    _check_boxes(boxes)
    return tf.stack(
        [
            (boxes[..., 0] + boxes[..., 2]) / 2,
            (boxes[..., 1] + boxes[..., 3]) / 2,
            boxes[..., 2] - boxes[..., 0],
            boxes[..., 3] - boxes[..., 1],
        ],
        axis=-1,
    )


def cycxhw_to_yxyx(boxes: tf.Tensor) -> tf.Tensor:
    """[center_y, center_x, height, width] to corner form."""
    _check_boxes(boxes)
    half_h = boxes[..., 2] / 2
    half_w = boxes[..., 3] / 2
    return tf.stack(
        [
            boxes[..., 0] - half_h,
            boxes[..., 1] - half_w,
            boxes[..., 0] + half_h,
            boxes[..., 1] + half_w,
        ],
        axis=-1,
    )


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of each box, shape `boxes.shape[:-1]` (no clamping of inverted boxes)."""
    _check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def jitter_boxes(boxes: tf.Tensor, noise_scale: float = 0.025) -> tf.Tensor:
    """Randomly shifts centers and rescales sides (noise relative to the box size).

    Args:
      boxes: [..., 4] boxes.
      noise_scale: standard deviation of the normal noise on the center shift (in box widths/
        heights) and on the log of the side lengths.
    """
    _check_boxes(boxes)
    noise = tf.random.normal(tf.shape(boxes), stddev=noise_scale)
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    height = ymax - ymin
    width = xmax - xmin
    center_x = (xmin + xmax) / 2.0 + noise[..., 0:1] * width
    center_y = (ymin + ymax) / 2.0 + noise[..., 1:2] * height
    width = width * tf.math.exp(noise[..., 2:3])
    height = height * tf.math.exp(noise[..., 3:4])
    return tf.concat(
        [
            center_y - height * 0.5,
            center_x - width * 0.5,
            center_y + height * 0.5,
            center_x + width * 0.5,
        ],
        axis=-1,
    )


def normalize_boxes(boxes: tf.Tensor, image_shape: ImageShape) -> tf.Tensor:
    """Divides y by the image height and x by its width.

    Args:
      boxes: [..., 4] boxes in pixels.
      image_shape: (height, width), or a tensor [..., 2] broadcastable against `boxes[..., :1]`.
    """
    _check_boxes(boxes)
    height, width = _height_width(image_shape, boxes.dtype, keepdims=True)
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    return tf.concat([ymin / height, xmin / width, ymax / height, xmax / width], axis=-1)


def denormalize_boxes(boxes: tf.Tensor, image_shape: ImageShape) -> tf.Tensor:
    """Inverse of `normalize_boxes`: scales normalized boxes back to pixels."""
    _check_boxes(boxes)
    height, width = _height_width(image_shape, boxes.dtype, keepdims=True)
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    return tf.concat([ymin * height, xmin * width, ymax * height, xmax * width], axis=-1)


def horizontal_flip_boxes(normalized_boxes: tf.Tensor) -> tf.Tensor:
    """Mirrors normalized boxes left-right (x -> 1 - x, keeping xmin < xmax)."""
    _check_boxes(normalized_boxes, "normalized_boxes")
    ymin, xmin, ymax, xmax = tf.split(normalized_boxes, 4, axis=-1)
    return tf.concat([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def vertical_flip_boxes(normalized_boxes: tf.Tensor) -> tf.Tensor:
    """Mirrors normalized boxes top-bottom (y -> 1 - y, keeping ymin < ymax)."""
    _check_boxes(normalized_boxes, "normalized_boxes")
    ymin, xmin, ymax, xmax = tf.split(normalized_boxes, 4, axis=-1)
    return tf.concat([1.0 - ymax, xmin, 1.0 - ymin, xmax], axis=-1)


def clip_boxes(boxes: tf.Tensor, image_shape: ImageShape) -> tf.Tensor:
    """Clamps coordinates into [0, height] (y) and [0, width] (x).

    Args:
      boxes: [..., 4] boxes in pixels.
      image_shape: (height, width), or a tensor [..., 2] whose leading dimensions broadcast
        against `boxes[..., 0]` (e.g. [batch, 1, 2] for boxes [batch, N, 4]).
    """
    _check_boxes(boxes)
    height, width = _height_width(image_shape, boxes.dtype, keepdims=False)
    if isinstance(image_shape, list | tuple):
        upper = [height, width, height, width]
    else:
        upper = tf.stack([height, width, height, width], axis=-1)
    return tf.math.maximum(tf.math.minimum(boxes, upper), 0.0)


def compute_outer_boxes(boxes: tf.Tensor, image_shape: ImageShape, scale: float = 1.0) -> tf.Tensor:
    """Grows boxes about their centers by `scale` (>= 1) and clips them to the image."""
    if scale < 1.0:
        raise ValueError(f"scale is {scale}, but outer box scale must be greater than 1.0.")
    if scale == 1.0:
        return boxes
    center = yxyx_to_cycxhw(boxes)
    outer = cycxhw_to_yxyx(tf.concat([center[..., :2], center[..., 2:] * scale], axis=-1))
    return clip_boxes(outer, image_shape)


def _centers_and_sizes(boxes: tf.Tensor):
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    height = ymax - ymin
    width = xmax - xmin
    return ymin + 0.5 * height, xmin + 0.5 * width, height, width


def encode_boxes(
    boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] | None = None
) -> tf.Tensor:
    """Encodes boxes as (dy, dx, dh, dw) offsets from their anchors.

    dy = (yc - yc_a) / h_a, dx = (xc - xc_a) / w_a, dh = log(h / h_a), dw = log(w / w_a), each
    multiplied by the matching entry of `weights` when given. EPSILON is added to every size
    first so zero-size boxes give large finite codes instead of inf.

    Args:
      boxes: [..., 4] boxes.
      anchors: anchors broadcastable to `boxes`.
      weights: None or four multipliers for (dy, dx, dh, dw), e.g. [10, 10, 5, 5].
    """
    _check_boxes(boxes)
    boxes = tf.cast(boxes, anchors.dtype)
    box_yc, box_xc, box_h, box_w = _centers_and_sizes(boxes)
    anchor_yc, anchor_xc, anchor_h, anchor_w = _centers_and_sizes(anchors)
    anchor_h += EPSILON
    anchor_w += EPSILON
    box_h += EPSILON
    box_w += EPSILON
    codes = [
        (box_yc - anchor_yc) / anchor_h,
        (box_xc - anchor_xc) / anchor_w,
        tf.math.log(box_h / anchor_h),
        tf.math.log(box_w / anchor_w),
    ]
    if weights:
        codes = [code * weight for code, weight in zip(codes, weights)]
    return tf.concat(codes, axis=-1)


def decode_boxes(
    encoded_boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] | None = None
) -> tf.Tensor:
    """Inverse of `encode_boxes`; dh and dw are clamped at BBOX_XFORM_CLIP first.

    Args:
      encoded_boxes: [..., 4] codes (dy, dx, dh, dw).
      anchors: anchors broadcastable to `encoded_boxes`.
      weights: the same weights the codes were made with, or None.
    """
    _check_boxes(encoded_boxes, "encoded_boxes")
    encoded_boxes = tf.cast(encoded_boxes, anchors.dtype)
    dy, dx, dh, dw = tf.split(encoded_boxes, 4, axis=-1)
    if weights:
        dy, dx, dh, dw = dy / weights[0], dx / weights[1], dh / weights[2], dw / weights[3]
    dh = tf.math.minimum(dh, BBOX_XFORM_CLIP)
    dw = tf.math.minimum(dw, BBOX_XFORM_CLIP)
    anchor_yc, anchor_xc, anchor_h, anchor_w = _centers_and_sizes(anchors)
    height = tf.math.exp(dh) * anchor_h
    width = tf.math.exp(dw) * anchor_w
    ymin = dy * anchor_h + anchor_yc - 0.5 * height
    xmin = dx * anchor_w + anchor_xc - 0.5 * width
    # max = min + size (not center + size/2) keeps the decoded size exact in float32.
    return tf.concat([ymin, xmin, ymin + height, xmin + width], axis=-1)


def filter_boxes(
    boxes: tf.Tensor, scores: tf.Tensor, image_shape: ImageShape, min_size_threshold: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Zeroes boxes (and their scores) that are too small or centered outside the image.

    A box survives when both sides exceed max(min_size_threshold, 0) and its center lies
    strictly inside (0, height) x (0, width).

    Returns:
      (boxes, scores) with the same shapes; removed entries are 0.
    """
    _check_boxes(boxes)
    height, width = _height_width(image_shape, boxes.dtype, keepdims=False)
    yc, xc, box_h, box_w = (t[..., 0] for t in _centers_and_sizes(boxes))
    min_size = tf.cast(tf.math.maximum(min_size_threshold, 0.0), boxes.dtype)
    keep = (
        (box_h > min_size)
        & (box_w > min_size)
        & (yc > 0.0)
        & (yc < height)
        & (xc > 0.0)
        & (xc < width)
    )
    filtered_scores = tf.where(keep, scores, tf.zeros_like(scores))
    return tf.cast(keep[..., None], boxes.dtype) * boxes, filtered_scores


def filter_boxes_by_scores(
    boxes: tf.Tensor, scores: tf.Tensor, min_score_threshold: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Drops boxes scoring at most `min_score_threshold`: their box becomes 0, score -1."""
    _check_boxes(boxes)
    keep = scores > min_score_threshold
    filtered_scores = tf.where(keep, scores, -tf.ones_like(scores))
    return tf.cast(keep[..., None], boxes.dtype) * boxes, filtered_scores


def gather_instances(selected_indices: tf.Tensor, instances: tf.Tensor, *aux_instances):
    """Gathers along the instance axis (axis 1) of [batch, N, ...] tensors.

    Args:
      selected_indices: [batch, K] indices into axis 1.
      instances: [batch, N, ...] tensor.
      *aux_instances: more [batch, N, ...] tensors gathered with the same indices.

    Returns:
      The gathered `instances` [batch, K, ...], or a tuple with the gathered auxiliary
      tensors after it when any are given.
    """
    gathered = [
        tf.gather(t, selected_indices, axis=1, batch_dims=1) for t in (instances, *aux_instances)
    ]
    return tuple(gathered) if aux_instances else gathered[0]


def top_k_boxes(boxes: tf.Tensor, scores: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """The k best-scoring boxes per image, sorted: ([batch, k, 4], [batch, k])."""
    top_scores, indices = tf.math.top_k(scores, k=k, sorted=True)
    return gather_instances(indices, boxes), top_scores


def get_non_empty_box_indices(boxes: tf.Tensor) -> tf.Tensor:
    """Indices of the rows of [N, 4] `boxes` with positive height and width."""
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    return tf.where((height > 0) & (width > 0))[:, 0]


def _pairwise_intersection(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
    """Intersection areas [batch, N, M] of [batch, N, 4] with [batch, M, 4]."""
    b = boxes[:, :, None, :]
    g = gt_boxes[:, None, :, :]
    return _extent(b, g, 1, inner=True) * _extent(b, g, 0, inner=True)


def _extent(b: tf.Tensor, g: tf.Tensor, axis: int, inner: bool) -> tf.Tensor:
    """Length along y (axis 0) or x (axis 1) of the overlap (inner) or hull of two boxes."""
    if inner:
        lo = tf.math.maximum(b[..., axis], g[..., axis])
        hi = tf.math.minimum(b[..., axis + 2], g[..., axis + 2])
    else:
        lo = tf.math.minimum(b[..., axis], g[..., axis])
        hi = tf.math.maximum(b[..., axis + 2], g[..., axis + 2])
    return tf.math.maximum(hi - lo, 0)


def _mark_padding(values: tf.Tensor, boxes: tf.Tensor, gt_boxes: tf.Tensor, mark_boxes: bool):
    """Sets entries of padded (all-negative) gt columns, and optionally box rows, to -1."""
    invalid = tf.reduce_max(gt_boxes, axis=-1) < 0.0  # [batch, M]
    mask = tf.broadcast_to(invalid[:, None, :], tf.shape(values))
    if mark_boxes:
        mask = mask | (tf.reduce_max(boxes, axis=-1) < 0.0)[:, :, None]
    return tf.where(mask, -tf.ones_like(values), values)


def bbox_overlap(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
    """Pairwise IoU between [batch, N, 4] boxes and [batch, M, 4] groundtruth boxes.

    IoU = intersection / (area_box + area_gt - intersection + 1e-8). Entries involving a padded
    (all-negative) box or groundtruth row are -1.

    Returns:
      [batch, N, M] IoU.
    """
    intersection = _pairwise_intersection(boxes, gt_boxes)
    union = box_area(boxes)[:, :, None] + box_area(gt_boxes)[:, None, :] - intersection + 1e-8
    return _mark_padding(intersection / union, boxes, gt_boxes, mark_boxes=True)


def bbox_generalized_overlap(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
    """Pairwise generalized IoU (https://giou.stanford.edu/GIoU.pdf), [batch, N, M].

    GIoU = IoU - (hull - union) / hull, where hull is the smallest box enclosing both. Padded
    groundtruth columns give -1.
    """
    _check_boxes(boxes)
    _check_boxes(gt_boxes, "gt_boxes")
    b = boxes[:, :, None, :]
    g = gt_boxes[:, None, :, :]
    hull = _extent(b, g, 1, inner=False) * _extent(b, g, 0, inner=False) + 1e-8
    intersection = _pairwise_intersection(boxes, gt_boxes)
    union = box_area(boxes)[:, :, None] + box_area(gt_boxes)[:, None, :] - intersection + 1e-8
    giou = intersection / union - (hull - union) / hull
    return _mark_padding(giou, boxes, gt_boxes, mark_boxes=False)


def bbox_intersection_over_area(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection over the area of `boxes` (0 for empty boxes), [batch, N, M].

    Padded rows of either input give -1.
    """
    intersection = _pairwise_intersection(boxes, gt_boxes)
    ioa = tf.math.divide_no_nan(intersection, box_area(boxes)[:, :, None])
    return _mark_padding(ioa, boxes, gt_boxes, mark_boxes=True)


def box_matching(boxes: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor):
    """Assigns every box its highest-IoU groundtruth box.

    Args:
      boxes: [batch, N, 4] boxes to match.
      gt_boxes: [batch, M, 4] groundtruth boxes, padded with -1.
      gt_classes: [batch, M] groundtruth classes, padded with -1.

    Returns:
      matched_gt_boxes [batch, N, 4] (0 for boxes overlapping nothing),
      matched_gt_classes [batch, N] (0, the background, for those),
      matched_gt_indices [batch, N] (-1 for those),
      matched_iou [batch, N] (max IoU; <= 0 means unmatched),
      iou [batch, N, M].
    """
    iou = bbox_overlap(boxes, gt_boxes)
    matched_iou = tf.reduce_max(iou, axis=-1)
    background = matched_iou <= 0.0
    best = tf.argmax(iou, axis=-1, output_type=tf.int32)
    matched_gt_boxes, matched_gt_classes = gather_instances(best, gt_boxes, gt_classes)
    matched_gt_boxes = tf.where(
        background[..., None], tf.zeros_like(matched_gt_boxes), matched_gt_boxes
    )
    matched_gt_classes = tf.where(background, tf.zeros_like(matched_gt_classes), matched_gt_classes)
    matched_gt_indices = tf.where(background, -tf.ones_like(best), best)
    return matched_gt_boxes, matched_gt_classes, matched_gt_indices, matched_iou, iou


def bbox2mask(
    bbox: tf.Tensor, *, image_height: int, image_width: int, dtype: tf.DType = tf.bool
) -> tf.Tensor:
    """Rasterizes boxes into [..., image_height, image_width] masks.

    Pixel (y, x) is inside when ymin <= y < ymax and xmin <= x < xmax (integer pixel grid).
    """
    if bbox.shape[-1] != 4:
        raise ValueError(
            "Expected the last dimension of `bbox` has size == 4, but the shape of `bbox` was: "
            f"{bbox.shape.as_list()}"
        )
    ys = tf.range(image_height, dtype=bbox.dtype)[:, None]  # [H, 1]
    xs = tf.range(image_width, dtype=bbox.dtype)[None, :]  # [1, W]
    ymin, xmin, ymax, xmax = (bbox[..., i, None, None] for i in range(4))
    inside = (ys >= ymin) & (ys < ymax) & (xs >= xmin) & (xs < xmax)
    return tf.cast(inside, dtype)
