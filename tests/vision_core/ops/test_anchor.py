"""Tests for vision_core.ops.anchor: anchor geometry and the anchor labeler on crafted boxes."""

import math

import numpy as np
import pytest
import tensorflow as tf

from vision_core.ops import anchor


def test_single_anchor_per_location_by_hand():
    # Level 3 on 64x64: an 8x8 grid with stride 8, centers at 4 + 8i; side = 4 * 2^3 = 32.
    boxes = anchor.Anchor(3, 3, 1, [1.0], 4.0, [64, 64]).multilevel_boxes
    assert list(boxes) == ["3"]
    level = boxes["3"].numpy()
    assert level.shape == (8, 8, 4)
    np.testing.assert_allclose(level[0, 0], [4 - 16, 4 - 16, 4 + 16, 4 + 16])
    # Row 2, column 5: center (20, 44).
    np.testing.assert_allclose(level[2, 5], [20 - 16, 44 - 16, 20 + 16, 44 + 16])


def test_scales_and_aspect_ratios_layout_by_hand():
    # Level 4 on 64x64: 4x4 grid, stride 16, first center (8, 8); base side 4 * 16 = 64.
    # Order along the last axis: scale 0 (ratios 0.5, 2.0), then scale 1 (side 64 * 2^0.5).
    a = anchor.Anchor(4, 4, 2, [0.5, 2.0], 4.0, [64, 64])
    assert a.anchors_per_location == 4
    level = a.multilevel_boxes["4"].numpy()
    assert level.shape == (4, 4, 16)

    def expected(side, ratio, cy=8.0, cx=8.0):
        half_w = side * math.sqrt(ratio) / 2  # ratio = width / height
        half_h = side / math.sqrt(ratio) / 2
        return [cy - half_h, cx - half_w, cy + half_h, cx + half_w]

    side_1 = 64 * 2**0.5
    np.testing.assert_allclose(level[0, 0, 0:4], expected(64, 0.5), rtol=1e-5)
    np.testing.assert_allclose(level[0, 0, 4:8], expected(64, 2.0), rtol=1e-5)
    np.testing.assert_allclose(level[0, 0, 8:12], expected(side_1, 0.5), rtol=1e-5)
    np.testing.assert_allclose(level[0, 0, 12:16], expected(side_1, 2.0), rtol=1e-5)


def test_image_size_not_a_multiple_of_the_stride():
    # 100 x 150 at level 3: grid ceil(12.5) x ceil(18.75) = 13 x 19; strides 100/13 and 150/19,
    # so the grid spans the whole image and the first center is half a stride in.
    level = anchor.Anchor(3, 3, 1, [1.0], 4.0, [100, 150]).multilevel_boxes["3"].numpy()
    assert level.shape == (13, 19, 4)
    cy, cx = 50 / 13, 75 / 19
    np.testing.assert_allclose(level[0, 0], [cy - 16, cx - 16, cy + 16, cx + 16], rtol=1e-5)
    last_cy, last_cx = 100 - 50 / 13, 150 - 75 / 19
    np.testing.assert_allclose(
        level[-1, -1], [last_cy - 16, last_cx - 16, last_cy + 16, last_cx + 16], rtol=1e-5
    )


def test_levels_tensor_image_size_and_generator_agree():
    expected = anchor.Anchor(3, 5, 3, [0.5, 1.0, 2.0], 4.0, [128, 96]).multilevel_boxes
    assert [v.shape.as_list() for v in expected.values()] == [
        [16, 12, 36],
        [8, 6, 36],
        [4, 3, 36],
    ]
    generator = anchor.build_anchor_generator(3, 5, 3, [0.5, 1.0, 2.0], 4.0)
    from_tensor = generator(tf.constant([128, 96]))
    for level, boxes in expected.items():
        np.testing.assert_allclose(from_tensor[level].numpy(), boxes.numpy(), rtol=1e-6)


def test_invalid_arguments_name_the_argument():
    with pytest.raises(ValueError, match="min_level"):
        anchor.Anchor(5, 3, 1, [1.0], 4.0, [64, 64])
    with pytest.raises(ValueError, match="unmatched_threshold"):
        anchor.AnchorLabeler(match_threshold=0.4, unmatched_threshold=0.5)
    with pytest.raises(ValueError, match="box_coder_weights"):
        anchor.AnchorLabeler(box_coder_weights=[1.0, 1.0])


# Four anchors: level 5 on 64x64 with one 32x32 anchor per cell (anchor_size 1, stride 32):
# A0 [0, 0, 32, 32], A1 [0, 32, 32, 64], A2 [32, 0, 64, 32], A3 [32, 32, 64, 64].
ANCHORS = anchor.Anchor(5, 5, 1, [1.0], 1.0, [64, 64]).multilevel_boxes
# G0 equals A2 (IoU 1).
# G1 [0, 4, 32, 64] (area 1920): with A1 intersection 1024, union 1920 -> IoU 0.533 (positive);
#   with A0 intersection 32 * 28 = 896, union 1024 + 1920 - 896 = 2048 -> IoU 0.4375, between
#   the thresholds 0.4 and 0.5, so A0 is ignored.
# G2 [40, 40, 48, 48] lies inside A3: IoU 64 / 1024 = 0.0625, below both thresholds, but A3 is
#   G2's best anchor, so it is force-matched (positive).
# The last row is -1 padding and must match nothing.
GT_BOXES = tf.constant(
    [
        [32.0, 0.0, 64.0, 32.0],
        [0.0, 4.0, 32.0, 64.0],
        [40.0, 40.0, 48.0, 48.0],
        [-1.0, -1.0, -1.0, -1.0],
    ]
)
GT_LABELS = tf.constant([[3], [5], [7], [-1]])
# Box targets (dy, dx, dh, dw):
# A1 (center (16, 48), 32 x 32) -> G1 (center (16, 34), 32 x 60):
#   (0, (34 - 48) / 32, log(32 / 32), log(60 / 32)).
# A2 -> G0: all zero.
# A3 (center (48, 48)) -> G2 (center (44, 44), 8 x 8): (-4/32, -4/32, log(8/32), log(8/32)).
A1_TARGET = [0.0, -14.0 / 32.0, 0.0, math.log(60.0 / 32.0)]
A3_TARGET = [-0.125, -0.125, math.log(0.25), math.log(0.25)]


def _label(labeler, **kwargs):
    cls_t, box_t, att_t, cls_w, box_w = labeler.label_anchors(
        ANCHORS, kwargs.pop("boxes", GT_BOXES), kwargs.pop("labels", GT_LABELS), **kwargs
    )
    return (
        cls_t["5"].numpy().reshape(-1),
        box_t["5"].numpy().reshape(-1, 4),
        att_t,
        cls_w.numpy(),
        box_w.numpy(),
    )


def test_labeler_positive_ignored_forced_and_padding():
    labeler = anchor.AnchorLabeler(match_threshold=0.5, unmatched_threshold=0.4)
    cls_t, box_t, _, cls_w, box_w = _label(labeler)
    np.testing.assert_array_equal(cls_t, [-1, 5, 3, 7])
    np.testing.assert_array_equal(cls_w, [0.0, 1.0, 1.0, 1.0])  # A0 ignored
    np.testing.assert_array_equal(box_w, [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(box_t[1], A1_TARGET, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(box_t[2], [0.0, 0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(box_t[3], A3_TARGET, rtol=1e-5)
    np.testing.assert_array_equal(box_t[0], 0.0)  # no target where not positive


def test_labeler_output_shapes_per_level():
    anchors = anchor.Anchor(3, 4, 3, [0.5, 1.0, 2.0], 4.0, [64, 64]).multilevel_boxes
    cls_t, box_t, _, cls_w, box_w = anchor.AnchorLabeler().label_anchors(
        anchors, GT_BOXES, GT_LABELS
    )
    assert cls_t["3"].shape == (8, 8, 9) and cls_t["4"].shape == (4, 4, 9)
    assert box_t["3"].shape == (8, 8, 36) and box_t["4"].shape == (4, 4, 36)
    assert cls_w.shape == (8 * 8 * 9 + 4 * 4 * 9,) and box_w.shape == cls_w.shape


def test_labeler_equal_thresholds_have_no_ignored_band():
    # With the default 0.5 / 0.5, A0's IoU 0.4375 is simply negative.
    cls_t, _, _, cls_w, box_w = _label(anchor.AnchorLabeler())
    np.testing.assert_array_equal(cls_t, [-1, 5, 3, 7])
    np.testing.assert_array_equal(cls_w, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(box_w, [0.0, 1.0, 1.0, 1.0])


def test_labeler_box_coder_weights_gt_weights_and_attributes():
    labeler = anchor.AnchorLabeler(0.5, 0.4, box_coder_weights=[10.0, 10.0, 5.0, 5.0])
    attributes = {"depth": tf.constant([[1.0], [2.0], [3.0], [0.0]])}
    cls_t, box_t, att_t, cls_w, box_w = _label(
        labeler, gt_attributes=attributes, gt_weights=tf.constant([1.0, 0.5, 2.0, 1.0])
    )
    weighted = [A1_TARGET[0] * 10, A1_TARGET[1] * 10, A1_TARGET[2] * 5, A1_TARGET[3] * 5]
    np.testing.assert_allclose(box_t[1], weighted, rtol=1e-5, atol=1e-6)
    # Weights of the matched boxes: A1 <- G1 (0.5), A2 <- G0 (1.0), A3 <- G2 (2.0).
    np.testing.assert_allclose(box_w, [0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(cls_w, [0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(att_t["depth"]["5"].numpy().reshape(-1), [0.0, 2.0, 1.0, 3.0])


def test_labeler_without_groundtruth_makes_every_anchor_negative():
    cls_t, box_t, _, cls_w, box_w = _label(
        anchor.AnchorLabeler(),
        boxes=tf.zeros([0, 4]),
        labels=tf.zeros([0, 1], tf.int64),
    )
    np.testing.assert_array_equal(cls_t, [-1, -1, -1, -1])
    np.testing.assert_array_equal(cls_w, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(box_w, [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(box_t, 0.0)


def test_labeler_runs_inside_tf_data():
    labeler = anchor.AnchorLabeler(0.5, 0.4)

    def label(boxes, labels):
        cls_t, _, _, cls_w, _ = labeler.label_anchors(ANCHORS, boxes, labels)
        return cls_t["5"], cls_w

    dataset = tf.data.Dataset.from_tensors((GT_BOXES, GT_LABELS)).map(label)
    cls_t, cls_w = next(iter(dataset))
    np.testing.assert_array_equal(cls_t.numpy().reshape(-1), [-1, 5, 3, 7])
    np.testing.assert_array_equal(cls_w.numpy(), [0.0, 1.0, 1.0, 1.0])
