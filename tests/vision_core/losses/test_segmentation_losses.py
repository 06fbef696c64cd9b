"""Tests for vision_core.losses.segmentation_losses against hand-computed values.

The 2x2 example: logits [0, ln 3] give softmax (1/4, 3/4), [ln 3, 0] give (3/4, 1/4) and [0, 0]
give (1/2, 1/2). Labels are [[0, 1], [1, ignore]].
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.losses import segmentation_losses as sl

LN3 = math.log(3.0)
LOGITS = tf.constant([[[[0.0, LN3], [LN3, 0.0]], [[0.0, 0.0], [5.0, -5.0]]]])  # [1, 2, 2, 2]


def _labels(ignore):
    return tf.constant([[[[0], [1]], [[1], [ignore]]]], tf.float32)


def _mg(**kwargs):
    args = dict(
        label_smoothing=0.0, class_weights=[], ignore_label=255, use_groundtruth_dimension=True
    )
    args.update(kwargs)
    return sl.SegmentationLoss(**args)


def test_plain_cross_entropy_by_hand():
    # Pixel losses ln 4, ln 4, ln 2 over 3 valid pixels.
    expected = (2 * math.log(4) + math.log(2)) / 3
    got = float(_mg()(LOGITS, _labels(255)))
    assert got == pytest.approx(expected * 3 / (3 + sl.EPSILON), rel=1e-6)


def test_label_smoothing_and_class_weights_by_hand():
    # Smoothed targets 0.95 / 0.05; a pixel weighs class_weights[its label] = 1 or 2.
    l_a = -(0.95 * math.log(0.25) + 0.05 * math.log(0.75))  # label 0, weight 1
    l_b = l_a  # label 1 with p = (3/4, 1/4): same numbers, weight 2
    l_c = math.log(2)  # uniform prediction, weight 2
    expected = (1 * l_a + 2 * l_b + 2 * l_c) / (3 + sl.EPSILON)
    loss = _mg(label_smoothing=0.1, class_weights=[1.0, 2.0])
    assert float(loss(LOGITS, _labels(255))) == pytest.approx(expected, rel=1e-6)


def test_ignored_pixels_contribute_nothing():
    base = float(_mg()(LOGITS, _labels(255)))
    # Change the logits at the ignored pixel only: the loss must not move.
    changed = LOGITS.numpy()
    changed[0, 1, 1] = [-9.0, 9.0]
    assert float(_mg()(tf.constant(changed), _labels(255))) == pytest.approx(base, rel=1e-7)


def test_top_k_percent_pixels_keeps_hardest():
    logits = tf.constant([[[[0.0, 0.0], [0.0, LN3]], [[LN3, 0.0], [3.0, 0.0]]]])
    labels = tf.zeros([1, 2, 2, 1])
    # Per-pixel losses: ln 2, ln 4, ln(4/3), -log softmax(3,0)[0] = log(1 + e^-3).
    losses = sorted([math.log(2), math.log(4), math.log(4 / 3), math.log(1 + math.exp(-3))])
    got = float(_mg(top_k_percent_pixels=0.5)(logits, labels))
    assert got == pytest.approx((losses[-1] + losses[-2]) / (2 + sl.EPSILON), rel=1e-6)


def test_resizing_direction():
    logits = tf.constant([[[[0.0, LN3]]]])  # 1x1 logits
    labels = tf.zeros([1, 2, 2, 1])
    # Logits upsampled to 2x2: every pixel has loss ln 4.
    assert float(_mg()(logits, labels)) == pytest.approx(math.log(4), rel=1e-5)
    # Labels downsampled to 1x1: one pixel with loss ln 4.
    got = float(_mg(use_groundtruth_dimension=False)(logits, labels))
    assert got == pytest.approx(math.log(4), rel=1e-5)


def test_binary_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=[1, 2, 2, 3]).astype(np.float32)
    labels = np.array([[[[0], [2]], [[1], [255]]]], np.float32)
    loss = _mg(use_binary_cross_entropy=True)(tf.constant(logits), tf.constant(labels))
    targets = np.zeros([1, 2, 2, 3])
    for (y, x), c in np.ndenumerate(labels[0, :, :, 0]):
        if c != 255:
            targets[0, y, x, int(c)] = 1
    ce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    valid = (labels[..., 0] != 255)[..., None]
    expected = (ce * valid).sum() / (valid.sum() * 3 + sl.EPSILON)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_class_weight_length_is_checked():
    with pytest.raises(ValueError, match="class_weights"):
        _mg(class_weights=[1.0, 2.0, 3.0])(LOGITS, _labels(255))


def test_keras_loss_matches_model_garden_loss_on_dicts():
    # The tutorial passes ignore_label=-1 while the data pads with 255 and marks it invalid.
    labels = {
        "masks": _labels(255),
        "valid_masks": tf.not_equal(_labels(255), 255),
        "image_info": tf.zeros([1, 4, 2]),
    }
    keras_loss = sl.SegmentationLosses(
        loss_type="softmax_cross_entropy",
        ignore_label=-1,
        label_smoothing=0.1,
        class_weights=[1.0, 2.0],
    )
    reference = _mg(label_smoothing=0.1, class_weights=[1.0, 2.0])(LOGITS, _labels(255))
    assert float(keras_loss(labels, {"logits": LOGITS})) == pytest.approx(float(reference), 1e-6)
    # Tensor forms: masks [B, H, W] with the ignore label itself, logits tensor.
    tensor_form = sl.SegmentationLosses(ignore_label=-1, label_smoothing=0.1, class_weights=[1, 2])
    assert float(tensor_form(_labels(-1)[..., 0], LOGITS)) == pytest.approx(
        float(reference), rel=1e-6
    )


def test_keras_top_k_matches_model_garden():
    logits = tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 2])
    labels = tf.random.stateless_uniform([2, 4, 4, 1], seed=[3, 4], maxval=3, dtype=tf.int32)
    mg = _mg(top_k_percent_pixels=0.25)(logits, labels)
    keras = sl.SegmentationLosses(top_k_percent_pixels=0.25)(labels, logits)
    assert float(keras) == pytest.approx(float(mg), rel=1e-6)


def test_focal_loss_by_hand():
    labels = tf.constant([[[[0], [1]], [[1], [-1]]]])
    loss = sl.SegmentationLosses("focal", ignore_label=-1, gamma=2.0, alpha=0.25)
    # p_t = 1/4, 1/4, 1/2 on the three valid pixels.
    terms = [0.25 * (1 - p) ** 2 * -math.log(p) for p in (0.25, 0.25, 0.5)]
    expected = sum(terms) / (3 + sl.EPSILON)
    assert float(loss(labels, LOGITS)) == pytest.approx(expected, rel=1e-6)


def test_dice_loss_by_hand():
    labels = tf.constant([[[[0], [1]], [[1], [-1]]]])
    # Valid pixels' probabilities: (1/4, 3/4), (3/4, 1/4), (1/2, 1/2).
    inter0, sum_p0, sum_t0 = 0.25, 0.25 + 0.75 + 0.5, 1
    inter1, sum_p1, sum_t1 = 0.25 + 0.5, 0.75 + 0.25 + 0.5, 2
    dice0 = (2 * inter0 + 1) / (sum_p0 + sum_t0 + 1)
    dice1 = (2 * inter1 + 1) / (sum_p1 + sum_t1 + 1)
    loss = sl.SegmentationLosses("dice", ignore_label=-1)
    assert float(loss(labels, LOGITS)) == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)


def test_keras_loss_has_gradients_and_round_trips():
    loss = sl.SegmentationLosses("focal", ignore_label=-1, class_weights=[1.0, 3.0], gamma=1.5)
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        value = loss(_labels(-1), {"logits": logits})
    grad = tape.gradient(value, logits).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0, 1, 1], 0.0)  # ignored pixel
    clone = tf_keras.losses.deserialize(tf_keras.losses.serialize(loss))
    assert isinstance(clone, sl.SegmentationLosses)
    assert clone.get_config() == loss.get_config()


def test_keras_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="loss_type"):
        sl.SegmentationLosses("lovasz")
    with pytest.raises(ValueError, match="top_k_percent_pixels"):
        sl.SegmentationLosses("dice", top_k_percent_pixels=0.5)
    with pytest.raises(ValueError, match="'logits'"):
        sl.SegmentationLosses()(_labels(255), {"scores": LOGITS})


def test_mask_scoring_loss_is_zero_for_exact_scores():
    labels = tf.constant([[[[0], [1]], [[1], [1]]]], tf.float32)
    logits = tf.constant([[[[5.0, 0.0], [0.0, 5.0]], [[0.0, 5.0], [5.0, 0.0]]]])
    # Prediction [[0,1],[1,0]] vs truth [[0,1],[1,1]]: IoU class 0 = 1/2, class 1 = 2/3.
    scores = sl.get_actual_mask_scores(logits, labels, ignore_label=255)
    np.testing.assert_allclose(scores.numpy(), [[0.5, 2 / 3]], rtol=1e-5)
    assert float(sl.MaskScoringLoss(255)(scores, logits, labels)) == pytest.approx(0.0)
