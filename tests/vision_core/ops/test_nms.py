"""Tests for vision_core.ops.nms on crafted overlaps."""

import math

import numpy as np
import tensorflow as tf

from vision_core.ops import nms

# B0 and B1 overlap: intersection 10 x 9 = 90, union 100 + 100 - 90 = 110, IoU 0.818.
# B2 is disjoint from both; B3 repeats B0 with a score under the 0.05 threshold.
BOXES = tf.constant(
    [
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 1.0, 10.0, 11.0],
            [0.0, 20.0, 10.0, 30.0],
            [0.0, 0.0, 10.0, 10.0],
        ]
    ]
)
SCORES = tf.constant([[0.9, 0.8, 0.7, 0.01]])
# [0, 0, 10, 10] and [0, 0, 10, 5]: intersection 50, union 100 -> IoU exactly 0.5.
HALF = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]]])
HALF_SCORES = tf.constant([[0.9, 0.8]])


def test_greedy_nms_suppresses_overlap_and_low_scores():
    indices, num_valid = nms.greedy_nms_padded(BOXES, SCORES, 4, 0.5, score_threshold=0.05)
    assert num_valid.numpy().tolist() == [2]
    np.testing.assert_array_equal(indices.numpy(), [[0, 2, 0, 0]])  # padded with 0


def test_greedy_nms_max_output_size_and_batch():
    boxes = tf.concat([BOXES, BOXES[:, ::-1]], axis=0)
    scores = tf.constant([[0.9, 0.8, 0.7, 0.01], [0.9, 0.8, 0.7, 0.6]])
    indices, num_valid = nms.greedy_nms_padded(boxes, scores, 1, 0.5, score_threshold=0.05)
    np.testing.assert_array_equal(num_valid.numpy(), [1, 1])
    np.testing.assert_array_equal(indices.numpy(), [[0], [0]])


def test_iou_boundary_follows_the_requested_convention():
    _, strict = nms.greedy_nms_padded(HALF, HALF_SCORES, 2, 0.5)
    _, inclusive = nms.greedy_nms_padded(HALF, HALF_SCORES, 2, 0.5, suppress_at_threshold=True)
    assert strict.numpy().tolist() == [2]  # IoU 0.5 is not > 0.5
    assert inclusive.numpy().tolist() == [1]  # but it is >= 0.5


def test_class_aware_nms_separates_classes():
    # B0 and B1 overlap (IoU 0.818) but B1 is class 1, so both survive; B3 would be
    # suppressed by B0 in class 0 but scores under the threshold anyway.
    scores = tf.constant([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0], [0.01, 0.0]]])
    boxes, out_scores, classes, num_valid = nms.class_aware_nms(
        BOXES[:, :, None, :], scores, 5, 5, 0.5, 0.05
    )
    assert num_valid.numpy().tolist() == [3]
    np.testing.assert_allclose(out_scores.numpy(), [[0.9, 0.8, 0.7, 0.0, 0.0]])
    np.testing.assert_array_equal(classes.numpy()[0, :3], [0, 1, 0])
    np.testing.assert_allclose(boxes.numpy()[0, 1], [0.0, 1.0, 10.0, 11.0])
    np.testing.assert_array_equal(boxes.numpy()[0, 3:], 0.0)

    # Same class: B1 is suppressed. A total budget of 1 keeps only the best.
    same = tf.constant([[[0.9], [0.8], [0.7], [0.01]]])
    _, out_scores, _, num_valid = nms.class_aware_nms(BOXES[:, :, None, :], same, 5, 5, 0.5, 0.05)
    np.testing.assert_allclose(out_scores.numpy()[0, :2], [0.9, 0.7])
    assert num_valid.numpy().tolist() == [2]
    _, out_scores, _, num_valid = nms.class_aware_nms(BOXES[:, :, None, :], scores, 5, 1, 0.5, 0.05)
    assert num_valid.numpy().tolist() == [1]


def test_class_aware_nms_iou_boundary():
    scores = HALF_SCORES[..., None]
    *_, strict = nms.class_aware_nms(HALF[:, :, None, :], scores, 2, 2, 0.5, 0.0)
    *_, inclusive = nms.class_aware_nms(
        HALF[:, :, None, :], scores, 2, 2, 0.5, 0.0, suppress_at_threshold=True
    )
    assert strict.numpy().tolist() == [2] and inclusive.numpy().tolist() == [1]


def test_match_selected_indices_recovers_candidates():
    scores = tf.constant([[0.9, 0.8, 0.7, 0.01]])
    classes = tf.constant([[0, 1, 0, 0]])
    selected_boxes = tf.stack([BOXES[0, 2], BOXES[0, 0]])[None]
    index = nms.match_selected_indices(
        BOXES, scores, classes, selected_boxes, tf.constant([[0.7, 0.9]]), tf.constant([[0, 0]])
    )
    np.testing.assert_array_equal(index.numpy(), [[2, 0]])


def test_soft_nms_rescores_instead_of_dropping():
    # IoU 0.5 with the kept box: 0.8 * exp(-0.5^2 / (2 * 0.5)) = 0.8 * exp(-0.25).
    indices, scores, num_valid = nms.soft_nms_padded(HALF, HALF_SCORES, 3, 1.0, 0.05, 0.5)
    assert num_valid.numpy().tolist() == [2]
    np.testing.assert_array_equal(indices.numpy(), [[0, 1, 0]])
    np.testing.assert_allclose(scores.numpy(), [[0.9, 0.8 * math.exp(-0.25), -1.0]], rtol=1e-5)


def test_sorted_nms_skips_placeholders_and_keeps_input_order():
    # Sorted input; the all-zero box is a placeholder (e.g. filtered by score) and never kept.
    boxes = tf.constant(
        [
            [
                [0.0, 0.0, 10.0, 10.0],
                [0.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 10.0, 11.0],
                [5.0, 20.0, 9.0, 30.0],
            ]
        ]
    )
    scores = tf.constant([[0.9, -1.0, 0.8, 0.7]])
    out_scores, out_boxes = nms.sorted_non_max_suppression_padded(scores, boxes, 4, 0.5)
    np.testing.assert_allclose(out_scores.numpy(), [[0.9, 0.7, 0.0, 0.0]])
    np.testing.assert_allclose(out_boxes.numpy()[0, 1], [5.0, 20.0, 9.0, 30.0])
    np.testing.assert_array_equal(out_boxes.numpy()[0, 2:], 0.0)
    # Model Garden's convention: IoU == threshold suppresses.
    out_scores, _ = nms.sorted_non_max_suppression_padded(HALF_SCORES, HALF, 2, 0.5)
    np.testing.assert_allclose(out_scores.numpy(), [[0.9, 0.0]])
