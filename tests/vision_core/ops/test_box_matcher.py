"""Tests for the matching helpers behind the anchor labeler: IoU similarity, box matcher and
target gather."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.ops.box_matcher import BoxMatcher
from vision_core.ops.iou_similarity import IouSimilarity
from vision_core.ops.target_gather import TargetGather


def test_iou_similarity_by_hand_and_masks():
    # [0, 0, 10, 10] vs [5, 5, 15, 15]: 25 / 175; a degenerate box that does not intersect
    # gives exactly 0.
    rows = tf.constant([[0.0, 0.0, 10.0, 10.0], [3.0, 3.0, 3.0, 3.0]])
    cols = tf.constant([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]])
    iou = IouSimilarity()(rows, cols).numpy()
    np.testing.assert_allclose(iou, [[25.0 / 175.0, 0.0], [0.0, 0.0]], rtol=1e-6)
    masked = IouSimilarity()(rows, cols, boxes_2_masks=tf.constant([[False], [True]])).numpy()
    np.testing.assert_array_equal(masked[:, 1], [-1.0, -1.0])
    batched = IouSimilarity()(rows[None], cols[None]).numpy()
    np.testing.assert_allclose(batched[0], iou)
    with pytest.raises(ValueError, match="unbatched"):
        IouSimilarity()(rows, cols[None])


def test_box_matcher_bands_and_force_match_ties():
    matcher = BoxMatcher([0.4, 0.5], [-1, -2, 1], force_match_for_each_col=True)
    # Rows are anchors, columns groundtruth. Row 0 best 0.6 (positive), row 1 best 0.45
    # (ignored), row 2 best 0.3 (negative) but it is the best row of both columns 1 and 2, so
    # it is force-matched to the lower column, 1. Column 3 is masked padding (-1) and is not
    # force-matched.
    similarity = tf.constant(
        [
            [0.6, 0.1, 0.0, -1.0],
            [0.45, 0.2, 0.1, -1.0],
            [0.0, 0.3, 0.3, -1.0],
        ]
    )
    matched, indicators = matcher(similarity)
    np.testing.assert_array_equal(indicators.numpy(), [1, -2, 1])
    np.testing.assert_array_equal(matched.numpy(), [0, 0, 1])
    empty_matched, empty_indicators = matcher(tf.zeros([3, 0]))
    np.testing.assert_array_equal(empty_matched.numpy(), [0, 0, 0])
    np.testing.assert_array_equal(empty_indicators.numpy(), [-1, -1, -1])


def test_box_matcher_validates_arguments():
    with pytest.raises(ValueError, match="sorted"):
        BoxMatcher([0.5, 0.4], [-1, -2, 1])
    with pytest.raises(ValueError, match="indicators"):
        BoxMatcher([0.4, 0.5], [-1, 1])


def test_target_gather_unbatched_batched_and_empty():
    labels = tf.constant([[3], [5]])
    indices = tf.constant([1, 0, 1])
    mask = tf.constant([[False], [True], [False]])
    np.testing.assert_array_equal(
        TargetGather()(labels, indices, mask, -1).numpy(), [[5], [-1], [5]]
    )
    batched = TargetGather()(tf.constant([[[1.0], [2.0]], [[3.0], [4.0]]]), tf.constant([[1], [0]]))
    np.testing.assert_array_equal(batched.numpy(), [[[2.0]], [[3.0]]])
    empty = TargetGather()(tf.zeros([0, 4]), tf.zeros([3], tf.int32), None, 7.0)
    np.testing.assert_array_equal(empty.numpy(), np.full([3, 4], 7.0))
