"""Tests for vision_core.ops.box_ops against hand-computed geometry."""

import math

import numpy as np
import pytest
import tensorflow as tf

from vision_core.ops import box_ops

# Anchor [0, 0, 20, 40]: center (10, 20), height 20, width 40.
ANCHOR = [0.0, 0.0, 20.0, 40.0]
# Box [0, 0, 40, 20]: center (20, 10), height 40, width 20.
BOX = [0.0, 0.0, 40.0, 20.0]
# dy = (20 - 10) / 20 = 0.5, dx = (10 - 20) / 40 = -0.25, dh = log(40 / 20), dw = log(20 / 40).
CODES = [0.5, -0.25, math.log(2.0), math.log(0.5)]


def test_encode_boxes_by_hand():
    out = box_ops.encode_boxes(tf.constant([BOX]), tf.constant([ANCHOR])).numpy()
    np.testing.assert_allclose(out[0], CODES, rtol=1e-6, atol=1e-7)


def test_encode_boxes_with_weights_scales_each_code():
    out = box_ops.encode_boxes(tf.constant([BOX]), tf.constant([ANCHOR]), [10.0, 10.0, 5.0, 5.0])
    expected = [CODES[0] * 10, CODES[1] * 10, CODES[2] * 5, CODES[3] * 5]
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=1e-6, atol=1e-6)


def test_decode_boxes_by_hand_and_round_trip():
    out = box_ops.decode_boxes(tf.constant([CODES]), tf.constant([ANCHOR])).numpy()
    np.testing.assert_allclose(out[0], BOX, atol=1e-4)
    weights = [10.0, 10.0, 5.0, 5.0]
    codes = box_ops.encode_boxes(tf.constant([BOX]), tf.constant([ANCHOR]), weights)
    np.testing.assert_allclose(
        box_ops.decode_boxes(codes, tf.constant([ANCHOR]), weights).numpy()[0], BOX, atol=1e-4
    )


def test_decode_boxes_clamps_log_scale_at_1000_over_16():
    # dh = dw = 10 is clamped to log(62.5): h = 62.5 * 20 = 1250 and w = 62.5 * 40 = 2500
    # about the anchor center (10, 20).
    out = box_ops.decode_boxes(tf.constant([[0.0, 0.0, 10.0, 10.0]]), tf.constant([ANCHOR]))
    np.testing.assert_allclose(out.numpy()[0], [-615.0, -1230.0, 635.0, 1270.0], rtol=1e-5)


def test_decode_boxes_broadcasts_anchors_over_batch():
    codes = tf.zeros([2, 3, 4])
    anchors = tf.constant([[ANCHOR, BOX, ANCHOR]])
    out = box_ops.decode_boxes(codes, anchors).numpy()
    np.testing.assert_allclose(out[1, 1], BOX, atol=1e-5)


def test_last_dimension_must_be_four():
    with pytest.raises(ValueError, match="must be 4"):
        box_ops.encode_boxes(tf.zeros([2, 3]), tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="encoded_boxes"):
        box_ops.decode_boxes(tf.zeros([2, 5]), tf.zeros([2, 4]))


def test_clip_boxes_with_pair_and_per_image_tensor():
    boxes = tf.constant([[[-5.0, 3.0, 70.0, 50.0]], [[-5.0, 3.0, 70.0, 50.0]]])
    np.testing.assert_allclose(
        box_ops.clip_boxes(boxes[0], [64.0, 48.0]).numpy(), [[0.0, 3.0, 64.0, 48.0]]
    )
    # Image 0 is 64x48, image 1 is 32x40: shape [2, 1, 2] broadcasts over the boxes axis.
    shapes = tf.constant([[[64.0, 48.0]], [[32.0, 40.0]]])
    np.testing.assert_allclose(
        box_ops.clip_boxes(boxes, shapes).numpy(),
        [[[0.0, 3.0, 64.0, 48.0]], [[0.0, 3.0, 32.0, 40.0]]],
    )


def test_normalize_and_denormalize_boxes():
    boxes = tf.constant([[10.0, 20.0, 30.0, 40.0]])
    # y / 100, x / 200.
    normalized = box_ops.normalize_boxes(boxes, [100.0, 200.0])
    np.testing.assert_allclose(normalized.numpy(), [[0.1, 0.1, 0.3, 0.2]], rtol=1e-6)
    back = box_ops.denormalize_boxes(normalized, tf.constant([100.0, 200.0]))
    np.testing.assert_allclose(back.numpy(), boxes.numpy(), rtol=1e-6)


def test_format_conversions():
    yxyx = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)
    # xywh = [xmin, ymin, xmax - xmin, ymax - ymin].
    np.testing.assert_allclose(box_ops.yxyx_to_xywh(yxyx), [[20.0, 10.0, 40.0, 20.0]])
    np.testing.assert_allclose(
        box_ops.yxyx_to_xywh(tf.constant(yxyx)).numpy(), [[20.0, 10.0, 40.0, 20.0]]
    )
    # cycxhw = [(10 + 30) / 2, (20 + 60) / 2, 20, 40].
    center = box_ops.yxyx_to_cycxhw(tf.constant(yxyx))
    np.testing.assert_allclose(center.numpy(), [[20.0, 40.0, 20.0, 40.0]])
    np.testing.assert_allclose(box_ops.cycxhw_to_yxyx(center).numpy(), yxyx)
    np.testing.assert_allclose(box_ops.box_area(tf.constant(yxyx)).numpy(), [800.0])


def test_flips_of_normalized_boxes():
    boxes = tf.constant([[0.1, 0.2, 0.3, 0.5]])
    np.testing.assert_allclose(
        box_ops.horizontal_flip_boxes(boxes).numpy(), [[0.1, 0.5, 0.3, 0.8]], rtol=1e-6
    )
    np.testing.assert_allclose(
        box_ops.vertical_flip_boxes(boxes).numpy(), [[0.7, 0.2, 0.9, 0.5]], rtol=1e-6
    )


def test_compute_outer_boxes_grows_about_center_and_clips():
    # Center (15, 20), size 10 x 20 doubled to 20 x 40: [5, 0, 25, 40]; clipped to 22 x 100.
    boxes = tf.constant([[10.0, 10.0, 20.0, 30.0]])
    out = box_ops.compute_outer_boxes(boxes, [22.0, 100.0], scale=2.0)
    np.testing.assert_allclose(out.numpy(), [[5.0, 0.0, 22.0, 40.0]])
    assert box_ops.compute_outer_boxes(boxes, [22.0, 100.0]) is boxes
    with pytest.raises(ValueError, match="greater than 1.0"):
        box_ops.compute_outer_boxes(boxes, [22.0, 100.0], scale=0.5)


def test_bbox_overlap_by_hand_with_padding():
    # [0, 0, 10, 10] vs [5, 5, 15, 15]: intersection 25, union 100 + 100 - 25 = 175.
    boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0], [-1.0, -1.0, -1.0, -1.0]]])
    gt = tf.constant([[[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [-1.0, -1.0, -1.0, -1.0]]])
    iou = box_ops.bbox_overlap(boxes, gt).numpy()
    np.testing.assert_allclose(iou[0, 0, :2], [25.0 / 175.0, 1.0], rtol=1e-6)
    assert iou[0, 0, 2] == -1.0  # padded groundtruth column
    np.testing.assert_array_equal(iou[0, 1], [-1.0, -1.0, -1.0])  # padded box row


def test_generalized_overlap_and_intersection_over_area():
    boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    # Disjoint [20, 0, 30, 10]: IoU 0, hull [0, 0, 30, 10] = 300, union 200:
    # GIoU = 0 - (300 - 200) / 300.
    far = tf.constant([[[20.0, 0.0, 30.0, 10.0]]])
    np.testing.assert_allclose(
        box_ops.bbox_generalized_overlap(boxes, far).numpy(), [[[-1.0 / 3.0]]], rtol=1e-5
    )
    # [5, 0, 15, 10] covers half of the box: intersection 50 / area 100.
    half = tf.constant([[[5.0, 0.0, 15.0, 10.0]]])
    np.testing.assert_allclose(
        box_ops.bbox_intersection_over_area(boxes, half).numpy(), [[[0.5]]], rtol=1e-6
    )


def test_box_matching_assigns_best_groundtruth_or_background():
    boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]])
    gt_boxes = tf.constant([[[0.0, 0.0, 10.0, 12.0], [-1.0, -1.0, -1.0, -1.0]]])
    gt_classes = tf.constant([[7, -1]])
    matched_boxes, classes, indices, matched_iou, _ = box_ops.box_matching(
        boxes, gt_boxes, gt_classes
    )
    np.testing.assert_array_equal(classes.numpy(), [[7, 0]])
    np.testing.assert_array_equal(indices.numpy(), [[0, -1]])
    np.testing.assert_allclose(matched_boxes.numpy()[0, 1], [0.0, 0.0, 0.0, 0.0])
    # 100 / 120 for the first box.
    np.testing.assert_allclose(matched_iou.numpy()[0, 0], 100.0 / 120.0, rtol=1e-6)


def test_filters():
    boxes = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0], [90.0, 90.0, 130.0, 130.0]])
    scores = tf.constant([0.9, 0.8, 0.7])
    # Box 1 is too small (2 <= 3); box 2 is centered at (110, 110), outside 100 x 100.
    kept_boxes, kept_scores = box_ops.filter_boxes(boxes, scores, [100.0, 100.0], 3.0)
    np.testing.assert_allclose(kept_scores.numpy(), [0.9, 0.0, 0.0])
    np.testing.assert_array_equal(kept_boxes.numpy()[1:], 0.0)
    kept_boxes, kept_scores = box_ops.filter_boxes_by_scores(boxes, scores, 0.75)
    np.testing.assert_allclose(kept_scores.numpy(), [0.9, 0.8, -1.0])
    np.testing.assert_array_equal(kept_boxes.numpy()[2], 0.0)


def test_top_k_boxes_gather_instances_and_non_empty_indices():
    boxes = tf.constant([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]]])
    scores = tf.constant([[0.1, 0.9, 0.5]])
    top_boxes, top_scores = box_ops.top_k_boxes(boxes, scores, 2)
    np.testing.assert_allclose(top_scores.numpy(), [[0.9, 0.5]])
    np.testing.assert_allclose(top_boxes.numpy()[0, 0], [0.0, 0.0, 2.0, 2.0])
    np.testing.assert_array_equal(box_ops.get_non_empty_box_indices(boxes[0]).numpy(), [0, 1])


def test_bbox2mask_marks_half_open_pixel_ranges():
    mask = box_ops.bbox2mask(
        tf.constant([[1.0, 2.0, 4.0, 4.0]]), image_height=5, image_width=5, dtype=tf.int32
    ).numpy()
    expected = np.zeros([1, 5, 5], np.int32)
    expected[0, 1:4, 2:4] = 1
    np.testing.assert_array_equal(mask, expected)
