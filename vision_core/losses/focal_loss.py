"""Sigmoid focal loss as a Keras loss (Model Garden's `official.vision.losses.focal_loss`).

Focal loss (Lin et al., https://arxiv.org/abs/1708.02002) scales the per-class sigmoid
cross-entropy by (1 - p_t)^gamma, where p_t is the predicted probability of the true label, so
the many easy background anchors stop dominating, and weights positives by alpha and negatives
by 1 - alpha.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras


def sigmoid_focal_loss(
    logits: tf.Tensor, targets: tf.Tensor, alpha: float, gamma: float
) -> tf.Tensor:
    """Element-wise focal loss, the same shape as `logits`.

    Args:
      logits: float logits [..., num_classes].
      targets: float {0, 1} targets of the same shape (an entry equal to 1 is positive).
      alpha: weight of positive entries; negatives get 1 - alpha.
      gamma: focusing exponent; 0 gives alpha-weighted cross-entropy.
    """
    positive = tf.equal(targets, 1.0)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    probs = tf.sigmoid(logits)
    p_t = tf.where(positive, probs, 1.0 - probs)
    loss = tf.pow(1.0 - p_t, gamma) * cross_entropy
    return tf.where(positive, alpha * loss, (1.0 - alpha) * loss)


class FocalLoss(tf_keras.losses.Loss):
    """Focal loss on matching-shape targets and logits, e.g. [batch, anchors, classes].

    `call` returns the element-wise loss; the Keras reduction (and `sample_weight`, which
    broadcasts over the class axis when it has one dimension less) does the rest. RetinaNet
    uses `reduction=SUM` with per-anchor weights divided by the number of positives.
    """

    def __init__(
        self,
        alpha: float,
        gamma: float,
        reduction: str = tf_keras.losses.Reduction.AUTO,
        name: str | None = None,
    ):
        """Initializes the loss.

        Args:
          alpha: weight of positive entries (negatives get 1 - alpha); RetinaNet uses 0.25.
          gamma: focusing exponent; RetinaNet in Model Garden uses 1.5.
          reduction: a `tf_keras.losses.Reduction`.
          name: optional loss name.
        """
        self._alpha = alpha
        self._gamma = gamma
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        with tf.name_scope("focal_loss"):
            return sigmoid_focal_loss(
                tf.cast(y_pred, tf.float32),
                tf.cast(y_true, tf.float32),
                self._alpha,
                self._gamma,
            )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self._alpha, "gamma": self._gamma}
