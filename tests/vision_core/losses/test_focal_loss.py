"""Tests for vision_core.losses.focal_loss against hand-computed values."""

import math

import numpy as np
import tensorflow as tf
import tf_keras

from vision_core.losses import focal_loss


def _by_hand(logit: float, target: float, alpha: float, gamma: float) -> float:
    # p = sigmoid(logit); cross-entropy = -log(p_t) with p_t = p for a positive, 1 - p for a
    # negative; loss = weight * (1 - p_t)^gamma * cross-entropy, weight alpha or 1 - alpha.
    p = 1.0 / (1.0 + math.exp(-logit))
    p_t = p if target == 1.0 else 1.0 - p
    weight = alpha if target == 1.0 else 1.0 - alpha
    return weight * (1.0 - p_t) ** gamma * -math.log(p_t)


def test_elementwise_values_by_hand():
    # logit 0, positive: 0.25 * 0.5^1.5 * log 2 = 0.0612656...
    # logit 0, negative: 0.75 * 0.5^1.5 * log 2 = 0.1837969...
    # logit 2, negative: p = 0.880797, 0.75 * 0.880797^1.5 * 2.126928 = 1.3186...
    logits = tf.constant([[0.0, 0.0, 2.0, -3.0]])
    targets = tf.constant([[1.0, 0.0, 0.0, 1.0]])
    loss = focal_loss.FocalLoss(alpha=0.25, gamma=1.5, reduction="none")(targets, logits)
    expected = [
        _by_hand(0.0, 1.0, 0.25, 1.5),
        _by_hand(0.0, 0.0, 0.25, 1.5),
        _by_hand(2.0, 0.0, 0.25, 1.5),
        _by_hand(-3.0, 1.0, 0.25, 1.5),
    ]
    np.testing.assert_allclose(expected[:2], [0.0612656, 0.1837969], rtol=1e-5)
    np.testing.assert_allclose(loss.numpy()[0], expected, rtol=1e-5)


def test_gamma_zero_is_alpha_weighted_cross_entropy():
    logits = tf.constant([[0.3, -1.2]])
    targets = tf.constant([[1.0, 0.0]])
    loss = focal_loss.FocalLoss(alpha=0.25, gamma=0.0, reduction="none")(targets, logits)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits).numpy()[0]
    np.testing.assert_allclose(loss.numpy()[0], [0.25 * bce[0], 0.75 * bce[1]], rtol=1e-6)


def test_sum_reduction_with_per_anchor_weights():
    # [batch 1, 2 anchors, 2 classes]; anchor 1 has weight 0 and contributes nothing.
    logits = tf.zeros([1, 2, 2])
    targets = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    loss_fn = focal_loss.FocalLoss(0.25, 1.5, reduction=tf_keras.losses.Reduction.SUM)
    total = loss_fn(targets, logits, sample_weight=tf.constant([[2.0, 0.0]]))
    expected = 2.0 * (_by_hand(0.0, 1.0, 0.25, 1.5) + _by_hand(0.0, 0.0, 0.25, 1.5))
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-5)


def test_config_round_trip():
    loss_fn = focal_loss.FocalLoss(0.3, 2.0, name="cls")
    config = loss_fn.get_config()
    assert config["alpha"] == 0.3 and config["gamma"] == 2.0 and config["name"] == "cls"
    again = focal_loss.FocalLoss.from_config(config)
    assert again.get_config() == config
