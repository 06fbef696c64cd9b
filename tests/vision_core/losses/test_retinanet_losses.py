"""Tests for vision_core.losses.retinanet_losses against hand-computed values."""

import math

import numpy as np
import tensorflow as tf

from vision_core.losses import retinanet_losses

# Focal loss (alpha 0.25, gamma 1.5) of a zero logit: 0.5^1.5 * log 2 times 0.25 for a
# positive entry and 0.75 for a negative one.
POS = 0.25 * 0.5**1.5 * math.log(2.0)
NEG = 0.75 * 0.5**1.5 * math.log(2.0)


def _tiny_batch():
    # One level, 1x1 grid, 2 anchors, 3 classes (0 = background), batch 1.
    # Anchor 0 is positive for class 1; anchor 1 is negative.
    cls_outputs = {"3": tf.zeros([1, 1, 1, 2 * 3])}
    # Anchor 0 codes (0.05, 0.2, 0, 0) against a zero target; anchor 1's codes carry no loss.
    box_outputs = {"3": tf.constant([[[[0.05, 0.2, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0]]]])}
    labels = {
        "cls_targets": {"3": tf.constant([[[[1, -1]]]])},
        "box_targets": {"3": tf.zeros([1, 1, 1, 8])},
        "cls_weights": tf.constant([[1.0, 1.0]]),
        "box_weights": tf.constant([[1.0, 0.0]]),
    }
    return cls_outputs, box_outputs, labels


def test_retinanet_loss_by_hand():
    cls_outputs, box_outputs, labels = _tiny_batch()
    total, cls_loss, box_loss = retinanet_losses.retinanet_loss(
        cls_outputs, box_outputs, labels, num_classes=3
    )
    # num_positives + 1 = 2.
    # Classification: one positive entry (anchor 0, class 1) and five negative entries.
    expected_cls = (POS + 5 * NEG) / 2.0
    # Huber, delta 0.1: 0.5 * 0.05^2 = 0.00125 (quadratic); 0.1 * (0.2 - 0.5 * 0.1) = 0.015
    # (linear); zeros for the rest; mean over 4 codes, divided by 2.
    expected_box = (0.00125 + 0.015) / 4.0 / 2.0
    np.testing.assert_allclose(cls_loss.numpy(), expected_cls, rtol=1e-5)
    np.testing.assert_allclose(box_loss.numpy(), expected_box, rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), expected_cls + 50.0 * expected_box, rtol=1e-5)


def test_ignored_anchor_carries_no_classification_loss():
    cls_outputs, box_outputs, labels = _tiny_batch()
    labels["cls_weights"] = tf.constant([[1.0, 0.0]])  # anchor 1 ignored
    _, cls_loss, _ = retinanet_losses.retinanet_loss(cls_outputs, box_outputs, labels, 3)
    np.testing.assert_allclose(cls_loss.numpy(), (POS + 2 * NEG) / 2.0, rtol=1e-5)


def test_per_level_keras_losses_flatten_levels_in_order():
    cls_outputs, box_outputs, labels = _tiny_batch()
    focal = retinanet_losses.FocalLoss(0.25, 1.5, num_classes=3, reduction="none")
    per_entry = focal(labels["cls_targets"], cls_outputs).numpy()
    assert per_entry.shape == (1, 2, 3)
    np.testing.assert_allclose(per_entry[0], [[NEG, POS, NEG], [NEG, NEG, NEG]], rtol=1e-5)
    box = retinanet_losses.RetinanetBoxLoss(delta=0.1, reduction="none")
    per_anchor = box(labels["box_targets"], box_outputs).numpy()
    assert per_anchor.shape == (1, 2)
    np.testing.assert_allclose(per_anchor[0, 0], (0.00125 + 0.015) / 4.0, rtol=1e-5)
    assert retinanet_losses.FocalLoss(0.25, 1.5, 3).get_config()["num_classes"] == 3
    assert retinanet_losses.RetinanetBoxLoss(0.1).get_config()["delta"] == 0.1
