"""Tests for vision_core.evaluation.segmentation_metrics.

IoU figures are checked against values computed by hand and against an independent numpy
confusion-matrix implementation written here.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.evaluation import segmentation_metrics as sm

# 3 classes on a 4x4 image.
GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 2], [2, 2, 2, 2]])
# By hand: class 0: TP 3, FP 1 (2,2), FN 1 (0,1) -> 3/5; class 1: TP 4, FP 1 -> 4/5;
# class 2: TP 7, FN 1 -> 7/8.
HAND_IOU = [3 / 5, 4 / 5, 7 / 8]


def numpy_iou(gt, pred, num_classes, valid):
    cm = np.zeros([num_classes, num_classes])
    for g, p in zip(gt[valid], pred[valid]):
        cm[g, p] += 1
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0)
    return iou, iou[union > 0].mean()


def one_hot_logits(pred, num_classes=3):
    return tf.constant(np.eye(num_classes)[pred][None] * 4.0, tf.float32)


def labels_dict(gt, valid=None):
    gt = np.asarray(gt)
    valid = np.ones_like(gt, bool) if valid is None else valid
    return {
        "masks": tf.constant(gt[None, ..., None], tf.float32),
        "valid_masks": tf.constant(valid[None, ..., None]),
        "image_info": tf.constant([[[4, 4], [4, 4], [1, 1], [0, 0]]], tf.float32),
    }


def test_numpy_reference_agrees_with_hand_values():
    iou, miou = numpy_iou(GT, PRED, 3, np.ones_like(GT, bool))
    np.testing.assert_allclose(iou, HAND_IOU)
    assert miou == pytest.approx(np.mean(HAND_IOU))


def test_mean_and_per_class_iou_by_hand():
    mean_iou = sm.MeanIoU(num_classes=3)
    per_class = sm.PerClassIoU(num_classes=3)
    mean_iou.update_state(labels_dict(GT), one_hot_logits(PRED))
    per_class.update_state(labels_dict(GT), {"logits": one_hot_logits(PRED)})
    np.testing.assert_allclose(per_class.result().numpy(), HAND_IOU, rtol=1e-6)
    assert float(mean_iou.result()) == pytest.approx(np.mean(HAND_IOU), rel=1e-6)


def test_invalid_pixels_are_excluded():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, [6, 6])
    pred = rng.integers(0, 3, [6, 6])
    valid = rng.random([6, 6]) > 0.3
    gt_with_ignore = np.where(valid, gt, 255)
    expected_iou, expected_mean = numpy_iou(gt, pred, 3, valid)

    per_class = sm.PerClassIoU(num_classes=3)
    per_class.update_state(labels_dict(gt_with_ignore, valid), one_hot_logits(pred))
    np.testing.assert_allclose(per_class.result().numpy(), expected_iou, rtol=1e-6)

    tutorial = sm.SegmentationMetrics(num_classes=3, ignore_label=255)
    tutorial.update_state(tf.constant(gt_with_ignore[None]), one_hot_logits(pred))
    assert float(tutorial.result()) == pytest.approx(expected_mean, rel=1e-6)
    np.testing.assert_allclose(tutorial.per_class_iou().numpy(), expected_iou, rtol=1e-6)


def test_tutorial_metric_with_ignore_minus_one_uses_valid_masks():
    # Parser pads with 255 and marks it invalid; the tutorial metric ignores -1.
    gt = GT.copy()
    gt[3, :] = 255
    valid = gt != 255
    pred = PRED.copy()
    pred[3, :] = 1  # would hurt classes 1 and 2 if counted
    metric = sm.SegmentationMetrics(num_classes=3, ignore_label=-1)
    metric.update_state(labels_dict(gt, valid), {"logits": one_hot_logits(pred)})
    expected_iou, expected_mean = numpy_iou(GT, PRED, 3, valid)
    assert float(metric.result()) == pytest.approx(expected_mean, rel=1e-6)
    np.testing.assert_allclose(metric.per_class_iou().numpy(), expected_iou, rtol=1e-6)


def test_predictions_are_resized_to_the_groundtruth():
    # 2x2 logits upsampled (bilinear) to the 4x4 groundtruth of 2x2 blocks: perfect match.
    gt = np.kron(np.array([[0, 1], [2, 0]]), np.ones((2, 2), int))
    metric = sm.MeanIoU(num_classes=3)
    metric.update_state(labels_dict(gt), one_hot_logits(np.array([[0, 1], [2, 0]])))
    assert float(metric.result()) == pytest.approx(1.0)


def test_rescale_predictions_maps_back_to_original_pixels():
    # A 4x6 original image was scaled 2x into an 8x12 area of a 16x16 input canvas.
    original = np.array(
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [1, 1, 1, 2, 2, 0], [1, 1, 1, 2, 2, 0]]
    )
    canvas = np.zeros([16, 16], int)
    canvas[:8, :12] = np.kron(original, np.ones((2, 2), int))
    canvas[8:, :] = 2  # padding predictions must not count
    # Groundtruth kept at full resolution, padded to 5x7 (extra row/col invalid).
    gt = np.full([5, 7], 255)
    gt[:4, :6] = original
    labels = {
        "masks": tf.constant(gt[None, ..., None], tf.float32),
        "valid_masks": tf.constant((gt != 255)[None, ..., None]),
        "image_info": tf.constant([[[4, 6], [16, 16], [2, 2], [0, 0]]], tf.float32),
    }
    metric = sm.PerClassIoU(num_classes=3, rescale_predictions=True)
    metric.update_state(labels, one_hot_logits(canvas))
    np.testing.assert_allclose(metric.result().numpy(), [1.0, 1.0, 1.0], rtol=1e-6)
    # Without rescaling the padding is squeezed into the image and the score drops.
    plain = sm.PerClassIoU(num_classes=3)
    plain.update_state(labels, one_hot_logits(canvas))
    assert plain.result().numpy().mean() < 0.9


def test_boundary_f_score_by_hand():
    gt = np.zeros([8, 8], int)
    gt[:, 4:] = 1  # gt boundary columns 3 and 4
    pred = np.zeros([8, 8], int)
    pred[:, 5:] = 1  # predicted boundary columns 4 and 5

    def score(tolerance, prediction):
        metric = sm.SegmentationMetrics(num_classes=2, boundary_tolerance=tolerance)
        metric.update_state(tf.constant(gt[None]), one_hot_logits(prediction, 2))
        return float(metric.boundary_f_score())

    # Tolerance 0: column 4 matches on both sides -> precision = recall = 8/16.
    assert score(0, pred) == pytest.approx(0.5)
    assert score(1, pred) == pytest.approx(1.0)
    far = np.zeros([8, 8], int)
    far[:, 7:] = 1  # boundary columns 6, 7: more than one pixel from 3, 4
    assert score(1, far) == pytest.approx(0.0)
    # No boundary predicted while the truth has one: F = 0; neither has one: F = 1.
    assert score(2, np.zeros([8, 8], int)) == pytest.approx(0.0)
    metric = sm.SegmentationMetrics(num_classes=2)
    metric.update_state(tf.zeros([1, 8, 8]), one_hot_logits(np.zeros([8, 8], int), 2))
    assert float(metric.boundary_f_score()) == pytest.approx(1.0)


def test_class_boundaries_ignore_invalid_pixels():
    labels = tf.constant([[[0, 0, 1], [0, 0, 1]]])
    valid = tf.constant([[[True, True, False], [True, True, False]]])
    assert not sm.class_boundaries(labels, valid).numpy().any()
    expected = [[[False, True, True], [False, True, True]]]
    got = sm.class_boundaries(labels, tf.ones_like(valid))
    np.testing.assert_array_equal(got.numpy(), expected)


def test_segmentation_metrics_accumulates_resets_and_round_trips():
    metric = sm.SegmentationMetrics(num_classes=3, ignore_label=-1)
    metric.update_state(labels_dict(GT), one_hot_logits(PRED))
    metric.update_state(labels_dict(GT), one_hot_logits(GT))
    cm_gt = np.concatenate([GT.ravel(), GT.ravel()])
    cm_pred = np.concatenate([PRED.ravel(), GT.ravel()])
    expected_iou, expected_mean = numpy_iou(cm_gt, cm_pred, 3, np.ones_like(cm_gt, bool))
    assert float(metric.result()) == pytest.approx(expected_mean, rel=1e-6)
    assert float(metric.pixel_accuracy()) == pytest.approx((14 + 16) / 32)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    clone = tf_keras.metrics.deserialize(tf_keras.metrics.serialize(metric))
    assert isinstance(clone, sm.SegmentationMetrics)
    assert clone.get_config() == metric.get_config()
    mg_clone = sm.PerClassIoU.from_config(sm.PerClassIoU(3, True, name="iou").get_config())
    assert mg_clone.name == "iou"


def test_segmentation_metrics_in_graph_mode():
    metric = sm.SegmentationMetrics(num_classes=3)

    @tf.function
    def step(masks, logits):
        metric.update_state(masks, logits)

    step(tf.constant(GT[None, ..., None]), one_hot_logits(PRED))
    assert float(metric.result()) == pytest.approx(np.mean(HAND_IOU), rel=1e-6)
